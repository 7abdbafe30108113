//! The traffic ledger (SPEC §2.6): engine counters become entries that are on disk before
//! anything else happens, and leave only when the controller acked them.
//!
//! # Layout
//! - [`delta`]: the pure core: baselines, engine restarts, the agent's own resets, the
//!   first-reading rule.
//! - [`backlog`]: the unacked entries, batches, and the merge rule that bounds them.
//! - [`store`]: the files (framed records, torn tails, the `sent` mark, atomic compaction).
//! - [`Ledger`] (here): the three together; what the session calls.
//! - [`ports`]: readings from the agent's per-port nft counters, for engines without counters.
//!
//! One reading is one record holding its entries *and* the baseline changes they come with,
//! fsynced before the baselines move in memory: "entry written" and "baseline moved" are one
//! step, so a crash never counts bytes twice (or loses them). A write that fails (a full disk)
//! moves nothing: the next reading counts the same bytes again, once. The failure is the
//! `host/ledger` resource's error, logged once per change, and never a crash.

pub mod backlog;
pub mod delta;
pub mod ports;
pub mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::{debug, error, info, warn};
use vpn_shared::model::DesiredState;
use vpn_shared::proto::{ResourceResult, UsageEntry, UsageReport};

use crate::apply::ApplyReport;
use crate::drivers::Counters;

use self::backlog::Backlog;
use self::delta::{Baselines, Change, Count, Now, Reading, Reset};
use self::store::{AppendFile, Record, Snapshot};

/// The resource the ledger's health is reported under.
pub const LEDGER_RESOURCE: &str = "host/ledger";
/// Entries per `Usage` frame.
pub const MAX_BATCH: usize = 2_000;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file operation failed (a full disk is `No space left on device`).
    #[error("ledger {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// The file does not start with a whole snapshot; it is moved aside.
    #[error("ledger {0} is not a ledger or its snapshot is damaged")]
    Unusable(PathBuf),
    /// A record could not be encoded.
    #[error("ledger record not encoded: {0}")]
    Encode(String),
    /// A record larger than the format allows.
    #[error("ledger record of {0} bytes is too large")]
    TooLarge(usize),
    /// The random epoch could not be made.
    #[error("no randomness for the ledger's epoch")]
    Random,
}

/// When the ledger rewrites and merges itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unacked entries past which never-sent entries merge.
    pub max_entries: usize,
    /// File size past which never-sent entries merge (after a compaction did not help).
    pub max_bytes: u64,
    /// Acked entries after which the file is rewritten without them.
    pub compact_acked: usize,
    /// Growth over the last snapshot after which the file is rewritten (baseline changes).
    pub compact_growth: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 100_000,
            max_bytes: 64 << 20,
            compact_acked: 10_000,
            compact_growth: 8 << 20,
        }
    }
}

/// What one [`Ledger::record`] added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub entries: usize,
    pub bytes: u64,
}

/// The ledger of one host: the files, the baselines, the unacked entries.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    file: AppendFile,
    epoch: u64,
    next_seq: u64,
    acked_up_to: u64,
    /// The highest seq ever handed to a session (persisted in `sent` before it is sent).
    sent_up_to: u64,
    baselines: Baselines,
    backlog: Backlog,
    /// Resets whose record could not be written yet; they go with the next record.
    pending_resets: BTreeSet<Reset>,
    limits: Limits,
    snapshot_len: u64,
    acked_since_snapshot: usize,
    /// The last write failure, until a write succeeds again.
    failure: Option<String>,
    /// Whether "over the bound, nothing to merge" was logged since the backlog was last small.
    warned_full: bool,
}

impl Ledger {
    /// Opens `<data_dir>/ledger/`, recovering what is there or creating a new ledger (new
    /// random epoch). A damaged file is moved aside and a new ledger begins.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Ledger, LedgerError> {
        let dir = data_dir.join("ledger");
        vpn_shared::fsutil::create_private_dir(&dir).map_err(|source| LedgerError::Io {
            path: dir.clone(),
            op: "creating the directory",
            source,
        })?;
        match store::recover(&dir) {
            Ok(Some(rec)) => Self::from_recovered(dir, rec, limits),
            Ok(None) => Self::create(dir, limits),
            Err(LedgerError::Unusable(path)) => {
                let aside = path.with_extension(format!("bin.damaged-{}", unix_now()));
                error!(path = %path.display(), aside = %aside.display(), "ledger damaged; moved aside, a new ledger begins");
                std::fs::rename(&path, &aside).map_err(|source| LedgerError::Io {
                    path: path.clone(),
                    op: "moving a damaged ledger aside",
                    source,
                })?;
                Self::create(dir, limits)
            }
            Err(e) => Err(e),
        }
    }

    fn create(dir: PathBuf, limits: Limits) -> Result<Ledger, LedgerError> {
        let epoch = random_epoch()?;
        let snapshot = Snapshot {
            epoch,
            next_seq: 1,
            acked_up_to: 0,
            baselines: Baselines::default(),
            entries: Vec::new(),
        };
        store::write_sent(&dir, epoch, 0)?;
        let len = store::write_snapshot(&dir, &snapshot)?;
        info!(epoch, dir = %dir.display(), "new traffic ledger");
        Self::assemble(dir, snapshot, Vec::new(), len, 0, limits)
    }

    fn from_recovered(
        dir: PathBuf,
        rec: store::Recovered,
        limits: Limits,
    ) -> Result<Ledger, LedgerError> {
        if rec.torn_bytes > 0 {
            warn!(dir = %dir.display(), bytes = rec.torn_bytes, "ledger had a torn tail record; ignored");
        }
        let sent = store::read_sent(&dir, rec.snapshot.epoch);
        Self::assemble(
            dir,
            rec.snapshot,
            rec.records,
            rec.good_len,
            sent.unwrap_or(u64::MAX),
            limits,
        )
    }

    fn assemble(
        dir: PathBuf,
        snapshot: Snapshot,
        records: Vec<Record>,
        good_len: u64,
        sent_up_to: u64,
        limits: Limits,
    ) -> Result<Ledger, LedgerError> {
        let file = AppendFile::open(&dir, good_len)?;
        let mut ledger = Ledger {
            dir,
            file,
            epoch: snapshot.epoch,
            next_seq: snapshot.next_seq,
            acked_up_to: snapshot.acked_up_to,
            sent_up_to: 0,
            baselines: snapshot.baselines,
            backlog: Backlog {
                entries: snapshot.entries.into(),
            },
            pending_resets: BTreeSet::new(),
            limits,
            snapshot_len: good_len,
            acked_since_snapshot: 0,
            failure: None,
            warned_full: false,
        };
        for record in records {
            ledger.replay(record);
        }
        // A missing or damaged `sent` mark: every entry may have been sent.
        ledger.sent_up_to = sent_up_to.min(ledger.next_seq.saturating_sub(1));
        debug!(
            epoch = ledger.epoch,
            next_seq = ledger.next_seq,
            backlog = ledger.backlog.len(),
            sent_up_to = ledger.sent_up_to,
            "ledger opened"
        );
        Ok(ledger)
    }

    fn replay(&mut self, record: Record) {
        match record {
            Record::Snapshot(_) => {}
            Record::Append { entries, changes } => {
                if let Some(last) = entries.last() {
                    self.next_seq = self.next_seq.max(last.seq + 1);
                }
                self.backlog
                    .entries
                    .extend(entries.into_iter().filter(|e| e.seq > self.acked_up_to));
                self.baselines.apply(&changes, None);
            }
            Record::Acked { up_to } => {
                self.acked_up_to = self.acked_up_to.max(up_to);
                self.backlog.ack(up_to);
            }
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Unacked entries.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &UsageEntry> {
        self.backlog.entries.iter()
    }

    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// Bytes of `ledger.bin`.
    pub fn file_len(&self) -> u64 {
        self.file.bytes()
    }

    /// `host/ledger`: an error while the last write failed.
    pub fn result(&self) -> ResourceResult {
        match &self.failure {
            None => ResourceResult::ok(LEDGER_RESOURCE),
            Some(e) => ResourceResult::error(LEDGER_RESOURCE, e.as_str()),
        }
    }

    /// Adds the counters of one round of readings: entries for what they counted, and the
    /// baselines they move, in one fsynced record. On `Err` nothing moved.
    pub fn record(
        &mut self,
        readings: &[Reading],
        state_services: &BTreeSet<String>,
        state_users: &BTreeSet<String>,
        now: Now,
    ) -> Result<Appended, LedgerError> {
        let mut base = self.baselines.clone();
        let mut changes = base.resets(&self.pending_resets, now);
        base.apply(&changes, Some(now.mono));
        let obs = base.observe(readings, state_services, state_users, now);
        for service in &obs.restarted {
            info!(%service, "engine restarted since the last reading; its counters start anew");
        }
        changes.extend(obs.changes.iter().cloned());
        let mut seq = self.next_seq;
        let entries: Vec<UsageEntry> = obs
            .deltas
            .iter()
            .map(|d| {
                let (up, down, undirected) = match d.counted {
                    Count::Directional { up, down } => (up, down, 0),
                    Count::Total(t) => (0, 0, t),
                };
                let e = UsageEntry {
                    seq,
                    user: d.user.clone(),
                    service: d.service.clone(),
                    up,
                    down,
                    undirected,
                    from: d.from_ms.div_euclid(1000),
                    to: d.to_ms.div_euclid(1000),
                };
                seq += 1;
                e
            })
            .collect();
        let only_reads = changes.iter().all(|c| matches!(c, Change::Read { .. }));
        if !(entries.is_empty() && only_reads) {
            let record = Record::Append {
                entries: entries.clone(),
                changes: changes.clone(),
            };
            self.write(&record)?;
        }
        // On disk (or nothing worth writing: only the reading clocks, see delta::Change::Read).
        base.apply(&obs.changes, Some(now.mono));
        self.baselines = base;
        self.pending_resets.clear();
        self.next_seq = seq;
        let appended = Appended {
            entries: entries.len(),
            bytes: entries.iter().map(UsageEntry::total).sum(),
        };
        self.backlog.entries.extend(entries);
        self.maintain();
        Ok(appended)
    }

    /// Records counters the agent itself restarted (from the applier), at once: their
    /// baselines drop to zero before anything else reads them. Kept for the next record if
    /// the disk refuses this one.
    pub fn reset(&mut self, resets: BTreeSet<Reset>, now: Now) {
        if resets.is_empty() {
            return;
        }
        let changes = self.baselines.resets(&resets, now);
        let record = Record::Append {
            entries: Vec::new(),
            changes: changes.clone(),
        };
        match self.write(&record) {
            Ok(()) => self.baselines.apply(&changes, Some(now.mono)),
            Err(_) => self.pending_resets.extend(resets),
        }
    }

    /// The next `Usage` frame: the oldest unacked entries. Their seqs are marked sent on disk
    /// first, so no later merge touches them; `None` when there is nothing to send or the mark
    /// cannot be written.
    pub fn next_batch(&mut self, max: usize) -> Option<UsageReport> {
        let entries = self.backlog.batch(max);
        let last = entries.last()?.seq;
        if last > self.sent_up_to {
            if let Err(e) = store::write_sent(&self.dir, self.epoch, last) {
                self.failed(&e);
                return None;
            }
            self.sent_up_to = last;
        }
        Some(UsageReport {
            epoch: self.epoch,
            entries,
        })
    }

    /// The controller stored every entry of `epoch` up to `up_to`. Another epoch's ack (an old
    /// ledger's) changes nothing. Returns how many entries were dropped.
    pub fn ack(&mut self, epoch: u64, up_to: u64) -> usize {
        if epoch != self.epoch {
            debug!(
                epoch,
                ours = self.epoch,
                "usage ack of another ledger ignored"
            );
            return 0;
        }
        let dropped = self.backlog.ack(up_to);
        if up_to <= self.acked_up_to {
            return dropped;
        }
        self.acked_up_to = up_to;
        self.acked_since_snapshot += dropped;
        // Best effort: a lost ack record only means entries the controller ignores are resent.
        if let Err(e) = self.write(&Record::Acked { up_to }) {
            debug!(error = %e, "ack not recorded");
        }
        self.maintain();
        dropped
    }

    fn write(&mut self, record: &Record) -> Result<(), LedgerError> {
        let result = store::frame(record).and_then(|f| self.file.append(&f));
        match &result {
            Ok(()) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn failed(&mut self, e: &LedgerError) {
        let msg = e.to_string();
        if self.failure.as_deref() != Some(msg.as_str()) {
            error!(error = %msg, "ledger write failed; counters stay unmoved and are counted on the next write");
        }
        self.failure = Some(msg);
    }

    fn succeeded(&mut self) {
        if self.failure.take().is_some() {
            info!("ledger writable again");
        }
    }

    fn snapshot(&self, backlog: &Backlog) -> Snapshot {
        Snapshot {
            epoch: self.epoch,
            next_seq: self.next_seq,
            acked_up_to: self.acked_up_to,
            baselines: self.baselines.clone(),
            entries: backlog.entries.iter().cloned().collect(),
        }
    }

    /// Rewrites the file with `backlog` as its entries; the in-memory backlog becomes it only
    /// once the new file is durable.
    fn compact_to(&mut self, backlog: Backlog) -> Result<(), LedgerError> {
        let snapshot = self.snapshot(&backlog);
        let len = store::write_snapshot(&self.dir, &snapshot)?;
        self.file = AppendFile::open(&self.dir, len)?;
        self.backlog = backlog;
        self.snapshot_len = len;
        self.acked_since_snapshot = 0;
        debug!(
            bytes = len,
            entries = self.backlog.len(),
            "ledger compacted"
        );
        Ok(())
    }

    /// Compaction when enough was acked or the file grew, then the merge when over the bound.
    fn maintain(&mut self) {
        let grown = self.file.bytes() > self.snapshot_len + self.limits.compact_growth;
        if self.acked_since_snapshot >= self.limits.compact_acked || grown {
            let backlog = self.backlog.clone();
            if let Err(e) = self.compact_to(backlog) {
                self.failed(&e);
                return;
            }
        }
        let over = self.backlog.len() > self.limits.max_entries
            || self.file.bytes() > self.limits.max_bytes;
        if !over {
            self.warned_full = false;
            return;
        }
        match self.backlog.merged(self.sent_up_to) {
            Some(merged) => {
                let before = self.backlog.len();
                match self.compact_to(merged) {
                    Ok(()) => info!(
                        before,
                        after = self.backlog.len(),
                        "ledger over its bound: old unsent entries merged per user and service"
                    ),
                    Err(e) => self.failed(&e),
                }
            }
            None if !self.warned_full => {
                self.warned_full = true;
                warn!(
                    backlog = self.backlog.len(),
                    "ledger over its bound with nothing left to merge (sent entries wait for their ack)"
                );
            }
            None => {}
        }
    }
}

/// A driver's reading keyed by user id (drivers name users; ids outlive a rename). Users the
/// state does not hold are left out.
pub fn reading(state: &DesiredState, service: &str, counters: Counters) -> Reading {
    Reading {
        service: service.to_owned(),
        uptime: counters.uptime,
        users: counters
            .users
            .into_iter()
            .filter_map(|u| {
                let id = state.users.get(&u.user)?.id.clone();
                Some((id, Count::from(u.bytes)))
            })
            .collect(),
    }
}

/// The counters an apply or reconcile restarted from zero, keyed by user id.
pub fn resets(state: &DesiredState, report: &ApplyReport) -> BTreeSet<Reset> {
    let services = report
        .restarted_services
        .iter()
        .map(|s| Reset::Service(s.clone()));
    let users = report
        .restarted_counters
        .iter()
        .filter_map(|(service, name)| {
            Some(Reset::User {
                service: service.clone(),
                user: state.users.get(name)?.id.clone(),
            })
        });
    services.chain(users).collect()
}

/// The services and user ids of `state`: baselines of anything else go.
pub fn state_keys(state: &DesiredState) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        state.services.keys().cloned().collect(),
        state.users.values().map(|u| u.id.clone()).collect(),
    )
}

fn random_epoch() -> Result<u64, LedgerError> {
    let bytes: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
        .map_err(|_| LedgerError::Random)?
        .expose();
    Ok(u64::from_le_bytes(bytes))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
