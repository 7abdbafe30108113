//! Group commit of agents' usage batches (SPEC §2.6, §3): sessions that report at the same
//! moment share one store transaction.
//!
//! SQLite has one writer. A thousand agents that report in the same second would each wait for
//! their own transaction, and each transaction would update the quota counters of the same
//! users again. Here a session queues its batch and either finds it applied by another session
//! or takes the turn: it drains the queue (up to [`MAX_GROUP_BATCHES`] batches or
//! [`MAX_GROUP_ENTRIES`] entries, so the writer lock is never held for long against admin
//! writes) and applies all of it with [`Store::ingest_usage_group`]. Nothing waits for a
//! group to fill: an idle controller applies a lone batch at once, and groups only form while
//! a transaction is running, from the batches that queued behind it.
//!
//! Exactly once is the store's (a watermark per host and epoch, moved in the same transaction),
//! so grouping changes no count. The group runs in a task of its own, holding the turn until
//! it is done: a session that ends while its group is being written cancels nothing, and its
//! batch is acked by nobody — its agent resends it, and the watermark makes it a replay.
//!
//! [`Store::ingest_usage_group`]: crate::store::Store::ingest_usage_group

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{debug, info};
use vpn_shared::proto::UsageReport;

use crate::server::{Controller, now};
use crate::store::{Ingested, StoreError};
use crate::subscribe::Touched;

/// Batches one transaction may carry.
pub const MAX_GROUP_BATCHES: usize = 64;
/// Entries one transaction may carry (beyond one batch): about 0.2 s of writing here, so an
/// operator's `users add` queued behind a group waits at most about that.
pub const MAX_GROUP_ENTRIES: usize = 40_000;

/// A session's batch waiting for its group.
struct Job {
    host_id: String,
    report: Arc<UsageReport>,
    reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

/// The queue of batches and the turn to write them; one per controller.
#[derive(Default)]
pub struct Ingest {
    queue: std::sync::Mutex<VecDeque<Job>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Ingest {
    /// Takes the next group off the queue: at least one batch when any waits, then as many as
    /// fit the limits.
    fn take(&self) -> Vec<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut group: Vec<Job> = Vec::new();
        let mut entries = 0;
        while let Some(next) = queue.front() {
            let n = next.report.entries.len();
            if !group.is_empty()
                && (group.len() >= MAX_GROUP_BATCHES || entries + n > MAX_GROUP_ENTRIES)
            {
                break;
            }
            entries += n;
            group.extend(queue.pop_front());
        }
        group
    }
}

/// Applies `report` of `host_id`, grouped with whatever other sessions queued meanwhile.
/// Returns what to ack, as [`Store::ingest_usage`](crate::store::Store::ingest_usage) does; the
/// group's status changes are already dispatched to the fleet.
pub async fn apply(
    ctl: &Arc<Controller>,
    host_id: &str,
    report: Arc<UsageReport>,
) -> Result<Ingested, StoreError> {
    let (reply, mut done) = oneshot::channel();
    ctl.ingest
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push_back(Job {
            host_id: host_id.to_owned(),
            report,
            reply,
        });
    loop {
        tokio::select! {
            biased;
            result = &mut done => {
                return result.unwrap_or_else(|_| Err(StoreError::Abandoned));
            }
            turn = ctl.ingest.turn.clone().lock_owned() => {
                let group = ctl.ingest.take();
                if group.is_empty() {
                    // Ours was in the group that just ended: its reply is waiting.
                    continue;
                }
                let ctl = ctl.clone();
                let written = tokio::spawn(async move {
                    write_group(&ctl, group).await;
                    drop(turn);
                });
                // A panic in the group drops its replies: every session sees `Abandoned`.
                let _ = written.await;
            }
        }
    }
}

/// Writes one group under the fleet's change lock (its status changes must reach the fleet in
/// generation order with every other change) and answers each session.
async fn write_group(ctl: &Controller, group: Vec<Job>) {
    let started = Instant::now();
    let batches: Vec<(&str, &UsageReport)> = group
        .iter()
        .map(|j| (j.host_id.as_str(), j.report.as_ref()))
        .collect();
    let entries: usize = batches.iter().map(|(_, r)| r.entries.len()).sum();
    let results = {
        let _guard = ctl.fleet.change_lock.lock().await;
        let done = ctl.store.ingest_usage_group(&batches, now()).await;
        for c in &done.changes {
            info!(user = %c.user, from = %c.from, to = %c.to, "quota: status changed by usage");
        }
        if !done.changes.is_empty() {
            // A started hold gives the user an expiry every host must know.
            ctl.allowances_changed();
            ctl.fleet.dispatch(&done.pushes);
            let names = done.changes.iter().map(|c| c.user.clone()).collect();
            ctl.watch.publish(Touched::Users(names));
        }
        done.results
    };
    let took = started.elapsed();
    debug!(
        batches = group.len(),
        entries,
        took_ms = took.as_millis() as u64,
        "usage group written"
    );
    ctl.metrics.usage_group(group.len(), took);
    for (job, result) in group.into_iter().zip(results) {
        if let Ok(done) = &result {
            ctl.metrics.usage_ingested(done);
            // What the host moved, for the live rates of `vpn tui` (replays count nothing).
            if done.applied > 0 {
                let (rx, tx) = job.report.entries.iter().fold((0u64, 0u64), |(rx, tx), e| {
                    let rx = rx.saturating_add(e.up).saturating_add(e.undirected);
                    (rx, tx.saturating_add(e.down))
                });
                ctl.watch.publish(Touched::Usage {
                    host_id: job.host_id.clone(),
                    rx,
                    tx,
                });
            }
        }
        // A session that ended meanwhile does not read its reply; its agent resends.
        let _ = job.reply.send(result);
    }
}
