//! Counters every simulated agent adds to; the binary prints them, tests read them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the simulated fleet did so far. Each field is a running total except `connected`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions open now (welcomed, not yet ended).
    pub connected: AtomicU64,
    /// Connection attempts (the first of each agent included).
    pub dials: AtomicU64,
    /// Attempts that failed before a welcome (refused, timed out, handshake failed).
    pub dial_failures: AtomicU64,
    /// Sessions that ended after a welcome (the controller went away, a protocol error).
    pub sessions_lost: AtomicU64,
    /// Full states received complete and acked.
    pub full_states: AtomicU64,
    /// Deltas applied and acked.
    pub deltas: AtomicU64,
    /// Resyncs asked for (a gap or a digest mismatch).
    pub resyncs: AtomicU64,
    /// Acks sent (full states and deltas).
    pub acks: AtomicU64,
    /// Keep-alives sent.
    pub keep_alives: AtomicU64,
    /// Usage batches sent and acked, and the entries the acks covered.
    pub usage_sent: AtomicU64,
    pub usage_acked: AtomicU64,
    pub entries_acked: AtomicU64,
    /// Certificates renewed over the session, and renewals refused.
    pub renewed: AtomicU64,
    pub renew_failed: AtomicU64,
    /// Agents the controller refused (revoked): they stop.
    pub refused: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Relaxed);
        write!(
            f,
            "connected={} dials={} dial_failures={} sessions_lost={} full_states={} deltas={} \
             resyncs={} acks={} keep_alives={} usage_sent={} usage_acked={} entries_acked={} \
             renewed={} renew_failed={} refused={}",
            g(&self.connected),
            g(&self.dials),
            g(&self.dial_failures),
            g(&self.sessions_lost),
            g(&self.full_states),
            g(&self.deltas),
            g(&self.resyncs),
            g(&self.acks),
            g(&self.keep_alives),
            g(&self.usage_sent),
            g(&self.usage_acked),
            g(&self.entries_acked),
            g(&self.renewed),
            g(&self.renew_failed),
            g(&self.refused),
        )
    }
}
