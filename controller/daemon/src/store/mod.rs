//! The controller's store: hosts, enrollment tokens, services, users and their credentials, and
//! the firewall's block lists, each host's health and the fleet's traffic in one SQLite file (WAL, foreign keys on), with the schema embedded as migrations.
//!
//! Besides keeping rows, the store decides what each host must run: [`Store::desired_state`]
//! renders a host's full state, and every mutation returns a [`Mutation`] whose [`HostPush`]es say
//! which hosts changed, their new generations and the changes, computed in the same transaction
//! as the write so a generation always names exactly one state. A single user change touches only
//! that user's hosts — never hosts × users (SPEC §2.2).
//!
//! # Layout
//! - [`error`](StoreError): what can go wrong, naming the thing.
//! - `rows`: the public row and input types.
//! - `validate`: operator-input checks, before anything is written.
//! - `render`: pure rows → `UserSpec` / `DesiredState` / pushes.
//! - `hosts`, `services`, `users`: the SQL of each noun; `state`: loaders shared by them and the
//!   desired state; `ports`: per-user port allocation and secrets; `firewall`: block lists and
//!   each host's firewall policy; `health`: failing resources and recent events per host;
//!   `usage`: agents' traffic ledger entries applied exactly once, and the usage totals;
//!   `quota`: each user's limits and counter, and the status changes they cause;
//!   `wireguard`: interface keys per host and service, peers (keys and tunnel address) per user
//!   per host; `counts`: the numbers `servers list` and `status` show, aggregated in SQL.
//!
//! Time is always the caller's `now` (unix seconds): the store never reads a clock.

mod counts;
mod digest;
mod error;
mod firewall;
pub mod health;
mod hosts;
mod ports;
pub mod quota;
mod render;
mod rows;
mod services;
mod state;
pub mod usage;
mod users;
pub(crate) mod validate;
pub mod wireguard;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};
use vpn_shared::model::{Change, Digest};

pub use counts::UserTotals;
pub use error::{Result, StoreError, TokenRefusal};
pub use health::{EventKind, HealthUpdate};
pub use hosts::{EnrolledCert, JoinToken, Spent};
pub use quota::{QuotaState, StatusChange};
pub use rows::{
    CredentialRow, DEFAULT_PORT_SPAN, EditUserFields, FirewallRuleRow, HostRow, NewService,
    NewUser, QuotaEditFields, QuotaSettings, Servers, ServiceRow, UserDetail, UserRow, UserStatus,
};
pub use usage::{BatchError, Ingested};
pub use wireguard::WireguardClient;

/// How long a connection waits for SQLite's write lock held by another process (a backup, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of the database file SQLite reads through a memory map (the rest with `read`):
/// address space, not memory.
const MMAP_BYTES: u64 = 1 << 30;

/// Connections in the pool: WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 4;

/// The controller's database.
pub struct Store {
    pool: SqlitePool,
    /// Serializes this process's write transactions. SQLite admits one writer at a time anyway;
    /// queueing here is fair and wakes at once, where SQLite's busy handler sleeps and polls.
    writer: Mutex<()>,
    /// Source of credential secrets.
    rng: SystemRandom,
    /// `vpn_controller_store_duration_seconds{op}`: every transaction, timed where it starts and
    /// ends (here); the controller registers it with its other metrics.
    latency: prometheus::HistogramVec,
    /// The time zone of reset periods (`[quotas] time_zone`, default UTC).
    offset: time::UtcOffset,
}

/// The result of a mutation and what it changed on each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation<T> {
    pub value: T,
    /// One entry per host whose desired state changed, sorted by host id.
    pub pushes: Vec<HostPush>,
}

/// The delta one host needs after a mutation: applying `changes` to its state at
/// `base_generation` gives exactly its desired state at `generation` (always `base + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPush {
    pub host_id: String,
    pub base_generation: u64,
    pub generation: u64,
    pub changes: Vec<Change>,
    /// The host's digest at `generation` is its digest at `base_generation` `^ step`: what a
    /// session keeps instead of a copy of its host's state ([`digest`]).
    pub step: Digest,
    /// The push rewrites most of the host (a service deployed to thousands of users): the
    /// session sends its full state instead, and `changes` is left empty ([`digest::steps`]).
    pub full: bool,
}

/// A write transaction together with this process's writer lock. The transaction is declared
/// first so that, when dropped uncommitted, it rolls back before the lock is released.
struct Write<'a> {
    tx: Transaction<'a, Sqlite>,
    _lock: MutexGuard<'a, ()>,
    _timer: Timer,
}

/// A read transaction, timed (see [`Store::read`]); used like the transaction it holds.
struct Read<'a> {
    tx: Transaction<'a, Sqlite>,
    _timer: Timer,
}

/// Observes the time since it was made into its histogram when dropped: a transaction is
/// timed until it commits or rolls back, on every path out.
struct Timer {
    histogram: prometheus::Histogram,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Store {
    /// Opens (creating it, mode 0600, if missing) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Store> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL survives a killed process (SPEC §4 item 1); only an OS crash
            // can lose the last commits, and it costs no fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // A list of 100,000 users pages through tens of MiB: with SQLite's 2 MiB cache per
            // connection every listing read them again, a system call per page (issue 10).
            // Mapped, the pages are read from the OS's cache, one copy for all connections (a
            // bigger cache per connection would hold one copy each). The price: an I/O error
            // on the file is a signal instead of an error.
            .pragma("mmap_size", MMAP_BYTES.to_string())
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            writer: Mutex::new(()),
            rng: SystemRandom::new(),
            latency: latency_histogram(),
            offset: time::UtcOffset::UTC,
        })
    }

    /// Counts reset periods in `offset` instead of UTC.
    pub fn with_time_zone(mut self, offset: time::UtcOffset) -> Store {
        self.offset = offset;
        self
    }

    /// The store's latency histogram, for the controller's metrics registry.
    pub fn latency(&self) -> &prometheus::HistogramVec {
        &self.latency
    }

    fn timer(&self, op: &str) -> Timer {
        Timer {
            histogram: self.latency.with_label_values(&[op]),
            started: Instant::now(),
        }
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes SQLite's write lock up front, so a
    /// transaction that reads before it writes can never fail to upgrade its lock.
    ///
    /// Timed as `write` from the request for this process's writer lock to commit or rollback,
    /// and as `write_lock` until that lock was had: the wait for other writers.
    async fn write(&self) -> Result<Write<'_>> {
        let timer = self.timer("write");
        let waiting = self.timer("write_lock");
        let lock = self.writer.lock().await;
        drop(waiting);
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Write {
            tx,
            _lock: lock,
            _timer: timer,
        })
    }

    /// Starts a read transaction: one consistent snapshot across several queries. Timed as
    /// `read` until it ends.
    async fn read(&self) -> Result<Read<'_>> {
        let timer = self.timer("read");
        Ok(Read {
            tx: self.pool.begin().await?,
            _timer: timer,
        })
    }
}

impl Store {
    /// Commits a mutation's write once its pushes have their digest steps, read against the
    /// state as it was before it (`digest.rs`).
    async fn finish(&self, w: Write<'_>, pushes: &mut [HostPush]) -> Result<()> {
        // Every store test checks each step against whole renderings (`digest::verify`).
        #[cfg(test)]
        let mut w = w;
        if !pushes.is_empty() {
            let mut before = self.read().await?;
            digest::steps(&mut before, pushes).await?;
            #[cfg(test)]
            digest::verify(&mut before, &mut w.tx, pushes).await;
            before.commit().await?;
        }
        w.commit().await
    }
}

impl Write<'_> {
    async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Read<'_> {
    async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for Read<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Read<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// Buckets from half a millisecond (a point read) to seconds (a 100,000-user full state, or a
/// write lock held by a backup).
const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[allow(clippy::expect_used)] // a constant definition: an invalid one fails every store test
fn latency_histogram() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "vpn_controller_store_duration_seconds",
            "Store transactions by operation (read, write: whole transactions; write_lock: the \
             wait for this process's writer lock).",
        )
        .buckets(STORE_BUCKETS.to_vec()),
        &["op"],
    )
    .expect("store latency histogram definition")
}

/// Creates the database file readable by its owner only; SQLite gives the WAL and shared-memory
/// files the same mode. An existing file is left as it is.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Converts a generation for storage; SQLite integers are signed.
fn generation_to_db(generation: u64) -> Result<i64> {
    i64::try_from(generation)
        .map_err(|_| StoreError::invalid("generation", format!("{generation} is out of range")))
}
