//! Traffic accounting (SPEC §2.6): agents' ledger entries applied exactly once, and the totals
//! `users usage` reads.
//!
//! Exactly once rests on one rule: per host and ledger epoch the store keeps a watermark, the
//! highest seq applied, and [`Store::ingest_usage`] adds a batch's entries above it to the hourly
//! totals and moves it **in the same transaction**. A batch whose ack was lost comes again and
//! finds its seqs at or below the watermark: it changes nothing and is acked again. Because the
//! watermark is a single number, entries must be applied in seq order — which is why a batch
//! that is not strictly ascending is refused ([`check_batch`]) rather than partly applied, and
//! why the session applies nothing after a batch of its epoch failed (see `session.rs`).
//!
//! What a batch may hold is bounded ([`check_batch`], pure): a peer cannot make the controller
//! store an overflowing or negative count, or hold the writer lock for a giant transaction.

use std::collections::BTreeMap;

use serde_json::json;
use vpn_shared::proto::UsageReport;
use vpn_shared::proto::admin::{UsageBy, UsageRow};

use super::Store;
use super::error::{Result, StoreError};

/// Entries one batch may carry. The agent's batches are far smaller (one entry per user and
/// service with traffic per 10 s interval); this bounds one write transaction (about 1 s here).
pub const MAX_ENTRIES: usize = 100_000;
/// Bytes one entry may count in each direction (8 PiB): more is not traffic but a broken
/// counter, and it keeps every sum far from SQLite's signed 64-bit limit.
pub const MAX_ENTRY_BYTES: u64 = 1 << 53;
/// Longest user id and service name in an entry (ids are UUIDs, service names at most 32).
pub const MAX_ID: usize = 64;
/// Seconds per stored bucket.
pub const HOUR: i64 = 3_600;

/// Why a batch was refused as a whole. Nothing of a refused batch is applied: it is a broken
/// agent, not a broken store, and resending it will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// More entries than [`MAX_ENTRIES`].
    #[error("usage batch of {0} entries is over the limit of {MAX_ENTRIES}")]
    TooLarge(usize),
    /// A seq not above the one before it.
    #[error("usage entry seq {seq} follows seq {after}: entries must be strictly ascending")]
    NotAscending { after: u64, seq: u64 },
    /// A seq SQLite cannot store (past 2^63 - 1) or 0 (seqs start at 1).
    #[error("usage entry seq {0} is out of range")]
    Seq(u64),
    /// An interval that ends before it starts, or starts before 1970.
    #[error("usage entry seq {seq}: interval {from}..{to} is not a time span")]
    Interval { seq: u64, from: i64, to: i64 },
    /// A byte count over [`MAX_ENTRY_BYTES`], or a batch whose sum overflows.
    #[error("usage entry seq {seq}: {what} of {bytes} bytes is absurd (limit {MAX_ENTRY_BYTES})")]
    Bytes {
        seq: u64,
        what: &'static str,
        bytes: u64,
    },
    /// An empty or over-long user id or service name.
    #[error("usage entry seq {seq}: {what} {value:?} is empty or longer than {MAX_ID} bytes")]
    Name {
        seq: u64,
        what: &'static str,
        value: String,
    },
}

/// What ingesting one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// What to ack: every entry of this epoch with `seq <= up_to` is applied.
    pub up_to: u64,
    /// Entries added to the totals now.
    pub applied: usize,
    /// Entries at or below the watermark (applied before: a replay).
    pub skipped: usize,
    /// Bytes the applied entries added (up + down + undirected).
    pub bytes: u64,
    /// Distinct user ids among the applied entries that name no current user (removed while
    /// their bytes were in flight, most likely): their bytes are kept under that id.
    pub unknown_users: usize,
    /// Users whose status the batch changed (over the limit, a hold started).
    pub changes: Vec<super::StatusChange>,
    /// What those changes do to hosts' desired states.
    pub pushes: Vec<super::HostPush>,
}

/// Per user: the bytes of a batch counted from each possible period start, and its first use.
/// Entries count in the period that holds the end of their interval (never later than now),
/// so bytes of yesterday that arrive today (a partitioned host) do not count against today's
/// limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct UserBytes {
    /// Indexed by [`PERIODS`]: none (all), day, week, month, year.
    since: [u64; 5],
    first: Option<i64>,
}

const PERIODS: [crate::quota::Reset; 5] = [
    crate::quota::Reset::Never,
    crate::quota::Reset::Day,
    crate::quota::Reset::Week,
    crate::quota::Reset::Month,
    crate::quota::Reset::Year,
];

/// Also returns every user id the entries name, with traffic or not.
fn user_bytes<'a>(
    entries: impl Iterator<Item = &'a vpn_shared::proto::UsageEntry>,
    starts: &[Option<i64>; 5],
    now: i64,
) -> (
    BTreeMap<&'a str, UserBytes>,
    std::collections::BTreeSet<&'a str>,
) {
    let mut out: BTreeMap<&'a str, UserBytes> = BTreeMap::new();
    let mut users = std::collections::BTreeSet::new();
    for e in entries {
        users.insert(e.user.as_str());
        if e.total() == 0 {
            continue;
        }
        let b = out.entry(e.user.as_str()).or_default();
        let at = e.to.min(now);
        for (i, start) in starts.iter().enumerate() {
            if start.is_none_or(|s| at >= s) {
                b.since[i] = b.since[i].saturating_add(e.total());
            }
        }
        let from = e.from.min(now);
        b.first = Some(b.first.map_or(from, |f| f.min(from)));
    }
    (out, users)
}

/// Checks a batch before anything is read or written; see [`BatchError`].
pub fn check_batch(report: &UsageReport) -> Result<(), BatchError> {
    if report.entries.len() > MAX_ENTRIES {
        return Err(BatchError::TooLarge(report.entries.len()));
    }
    let mut previous: Option<u64> = None;
    for e in &report.entries {
        if e.seq == 0 || i64::try_from(e.seq).is_err() {
            return Err(BatchError::Seq(e.seq));
        }
        if let Some(after) = previous.filter(|p| e.seq <= *p) {
            return Err(BatchError::NotAscending { after, seq: e.seq });
        }
        previous = Some(e.seq);
        if e.from < 0 || e.to < e.from {
            return Err(BatchError::Interval {
                seq: e.seq,
                from: e.from,
                to: e.to,
            });
        }
        for (what, bytes) in [("up", e.up), ("down", e.down), ("undirected", e.undirected)] {
            if bytes > MAX_ENTRY_BYTES {
                return Err(BatchError::Bytes {
                    seq: e.seq,
                    what,
                    bytes,
                });
            }
        }
        for (what, value) in [("user", &e.user), ("service", &e.service)] {
            if value.is_empty() || value.len() > MAX_ID {
                return Err(BatchError::Name {
                    seq: e.seq,
                    what,
                    value: super::health::cut(value, MAX_ID),
                });
            }
        }
    }
    Ok(())
}

/// The hour an entry counts in: the end of its interval (when the bytes had been counted) on
/// the agent's clock, but never later than the controller's `now`, so a host whose clock runs
/// ahead cannot book traffic into the future.
pub fn hour_of(to: i64, now: i64) -> i64 {
    to.min(now).div_euclid(HOUR) * HOUR
}

/// Per (user, service, hour): the sums of one batch's applied entries, so a replayed backlog
/// of many intervals costs one row write per hour, not one per entry.
type Buckets<'a> = BTreeMap<(&'a str, &'a str, i64), [u64; 3]>;

fn buckets<'a>(
    entries: &'a [vpn_shared::proto::UsageEntry],
    now: i64,
) -> Result<Buckets<'a>, BatchError> {
    let mut out: Buckets<'a> = BTreeMap::new();
    for e in entries {
        let sums = out
            .entry((e.user.as_str(), e.service.as_str(), hour_of(e.to, now)))
            .or_default();
        for (i, (what, bytes)) in [("up", e.up), ("down", e.down), ("undirected", e.undirected)]
            .into_iter()
            .enumerate()
        {
            sums[i] = sums[i]
                .checked_add(bytes)
                .filter(|s| i64::try_from(*s).is_ok())
                .ok_or(BatchError::Bytes {
                    seq: e.seq,
                    what,
                    bytes,
                })?;
        }
    }
    Ok(out)
}

/// Inside a group's transaction: skips `report`'s entries at or below `host_id`'s watermark
/// for its epoch, adds the others to their hour rows and moves the watermark past them.
async fn apply_batch<'a>(
    conn: &mut sqlx::SqliteConnection,
    host_id: &str,
    report: &'a UsageReport,
    now: i64,
) -> Result<Applied<'a>> {
    // Stored bit for bit: a random u64 epoch past 2^63 reads back negative.
    let epoch = report.epoch as i64;
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT last_seq FROM usage_watermarks WHERE host_id = ?1 AND epoch = ?2",
    )
    .bind(host_id)
    .bind(epoch)
    .fetch_optional(&mut *conn)
    .await?;
    let watermark = match last {
        None => 0,
        Some(s) => u64::try_from(s).map_err(|_| StoreError::corrupt("usage watermark", s))?,
    };
    // Ascending (checked): the replayed entries are a prefix.
    let start = report.entries.partition_point(|e| e.seq <= watermark);
    let fresh = &report.entries[start..];
    let Some(highest) = fresh.last().map(|e| e.seq) else {
        return Ok(Applied {
            fresh,
            done: Ingested {
                up_to: watermark,
                skipped: report.entries.len(),
                ..Ingested::default()
            },
        });
    };
    let sums = buckets(fresh, now)?;
    let rows: Vec<_> = sums
        .iter()
        .map(|((user, service, hour), [up, down, undirected])| {
            json!([user, service, hour, up, down, undirected])
        })
        .collect();
    sqlx::query(
        "INSERT INTO usage_hours (user_id, host_id, service, hour, up, down, undirected) \
         SELECT value ->> 0, ?1, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                value ->> 5 \
         FROM json_each(?2) WHERE true \
         ON CONFLICT (host_id, hour, user_id, service) DO UPDATE SET \
           up = up + excluded.up, down = down + excluded.down, \
           undirected = undirected + excluded.undirected",
    )
    .bind(host_id)
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO usage_watermarks (host_id, epoch, last_seq, updated_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (host_id, epoch) \
         DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at",
    )
    .bind(host_id)
    .bind(epoch)
    .bind(i64::try_from(highest).map_err(|_| BatchError::Seq(highest))?)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let bytes = sums
        .values()
        .flat_map(|s| s.iter())
        .fold(0u64, |a, b| a.saturating_add(*b));
    Ok(Applied {
        fresh,
        done: Ingested {
            up_to: highest,
            applied: fresh.len(),
            skipped: start,
            bytes,
            ..Ingested::default()
        },
    })
}

/// What ingesting several hosts' batches in one transaction did ([`Store::ingest_usage_group`]).
#[derive(Debug, Default)]
pub struct GroupIngested {
    /// One per batch, in the order given: what to ack, or why nothing of that batch was
    /// applied ([`StoreError::Batch`] for a malformed batch, or the store's failure). The
    /// `changes` and `pushes` of each are empty: the group's are below.
    pub results: Vec<Result<Ingested>>,
    /// Users whose status the group changed (over the limit, a hold started).
    pub changes: Vec<super::StatusChange>,
    /// What those changes do to hosts' desired states.
    pub pushes: Vec<super::HostPush>,
}

/// One batch inside a group's transaction: its fresh entries and what to ack.
struct Applied<'a> {
    fresh: &'a [vpn_shared::proto::UsageEntry],
    done: Ingested,
}

impl Store {
    /// Applies one batch of `host_id`'s ledger entries exactly once, at the controller's
    /// `now`: entries at or below the (host, epoch) watermark are skipped, the others added to
    /// their hour rows, and the watermark moved to the batch's highest seq, in one
    /// transaction. Returns what to ack. A batch [`check_batch`] refuses is
    /// [`StoreError::Batch`] and changes nothing.
    pub async fn ingest_usage(
        &self,
        host_id: &str,
        report: &UsageReport,
        now: i64,
    ) -> Result<Ingested> {
        let mut group = self.ingest_usage_group(&[(host_id, report)], now).await;
        let mut done = group
            .results
            .pop()
            .unwrap_or_else(|| Ok(Ingested::default()))?;
        done.changes = group.changes;
        done.pushes = group.pushes;
        Ok(done)
    }

    /// Applies several hosts' batches (as [`Store::ingest_usage`] does one) in **one** write
    /// transaction: one commit, and one update of the quota counters of every user the group
    /// carries instead of one per batch — what lets a single writer keep up with a thousand
    /// hosts reporting at once (docs/benchmarks.md). Each batch keeps its own watermark, so
    /// exactly once is unchanged; two batches of one host and epoch apply in the order given.
    ///
    /// A malformed batch is refused alone. If the group's transaction fails (a host removed
    /// while its batch waited, say), nothing of it is written and each batch is tried again in
    /// a transaction of its own, so one host's failure never holds back the others' acks.
    pub async fn ingest_usage_group(
        &self,
        batches: &[(&str, &UsageReport)],
        now: i64,
    ) -> GroupIngested {
        let mut results: Vec<Option<Result<Ingested>>> = batches
            .iter()
            .map(|(_, report)| check_batch(report).err().map(|e| Err(e.into())))
            .collect();
        let accepted: Vec<usize> = (0..batches.len())
            .filter(|i| results[*i].is_none())
            .collect();
        let mut group = GroupIngested::default();
        let picked: Vec<_> = accepted.iter().map(|&i| batches[i]).collect();
        match self.ingest_checked(&picked, now).await {
            Ok((done, changes, pushes)) => {
                for (&i, d) in accepted.iter().zip(done) {
                    results[i] = Some(Ok(d));
                }
                group.changes = changes;
                group.pushes = pushes;
            }
            Err(e) if accepted.len() == 1 => results[accepted[0]] = Some(Err(e)),
            Err(e) => {
                tracing::warn!(batches = accepted.len(), error = %e, "usage group not written; applying its batches one by one");
                for &i in &accepted {
                    results[i] = Some(match self.ingest_checked(&[batches[i]], now).await {
                        Ok((mut done, changes, pushes)) => {
                            group.changes.extend(changes);
                            group.pushes.extend(pushes);
                            Ok(done.pop().unwrap_or_default())
                        }
                        Err(e) => Err(e),
                    });
                }
            }
        }
        group.results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Ok(Ingested::default())))
            .collect();
        group
    }

    /// The transaction of [`Store::ingest_usage_group`] for batches [`check_batch`] passed.
    async fn ingest_checked(
        &self,
        batches: &[(&str, &UsageReport)],
        now: i64,
    ) -> Result<(
        Vec<Ingested>,
        Vec<super::StatusChange>,
        Vec<super::HostPush>,
    )> {
        if batches.is_empty() {
            return Ok(Default::default());
        }
        let mut w = self.write().await?;
        let mut applied = Vec::with_capacity(batches.len());
        for (host_id, report) in batches {
            applied.push(apply_batch(&mut w.tx, host_id, report, now).await?);
        }
        let written: Vec<_> = applied.iter().filter(|a| !a.fresh.is_empty()).collect();
        if written.is_empty() {
            // Nothing new anywhere (replays): leave the transaction unwritten (dropping it
            // rolls back).
            return Ok((
                applied.into_iter().map(|a| a.done).collect(),
                vec![],
                vec![],
            ));
        }
        let fresh = written.iter().flat_map(|a| a.fresh.iter());
        let (unknown, changes, mut pushes) = self.count_quotas(&mut w.tx, fresh, now).await?;
        self.finish(w, &mut pushes).await?;
        let done = applied
            .into_iter()
            .map(|mut a| {
                let users: std::collections::BTreeSet<&str> =
                    a.fresh.iter().map(|e| e.user.as_str()).collect();
                a.done.unknown_users = users.iter().filter(|u| unknown.contains(**u)).count();
                a.done
            })
            .collect();
        Ok((done, changes, pushes))
    }

    /// Adds a group's fresh entries to their users' quota counters (rolling a stale period
    /// over), then evaluates the users it moved past their limit or whose hold it started.
    /// Inside the ingest's transaction: the counters move exactly when the watermarks do. Also
    /// returns the user ids that name no user (every user has a quota row, removed with it).
    ///
    /// Nothing is read back for the users the batch left within their limits: the ingesting
    /// agent folds its own acked entries into its figures (`agent/src/allowance.rs`), and the
    /// other hosts learn of these bytes from their next complete allowances. Reading every
    /// counted row back cost more than the rest of the ingest (docs/benchmarks.md).
    async fn count_quotas<'a>(
        &self,
        conn: &mut sqlx::SqliteConnection,
        fresh: impl Iterator<Item = &'a vpn_shared::proto::UsageEntry>,
        now: i64,
    ) -> Result<(
        std::collections::BTreeSet<String>,
        Vec<super::StatusChange>,
        Vec<super::HostPush>,
    )> {
        let offset = self.offset;
        let starts = PERIODS.map(|r| crate::quota::period_start(r, now, offset));
        let (per_user, users) = user_bytes(fresh, &starts, now);
        let users = json!(users).to_string();
        // Usually every entry of a batch ends in the current day, so each user's bytes are
        // the same from every period start: then one figure per user is enough (each `->>`
        // parses the row's JSON again; a third of the statement at 1,000 users).
        let uniform = per_user
            .values()
            .all(|b| b.since.iter().all(|&x| x == b.since[0]));
        let (rows, fields, added): (Vec<_>, _, _) = if uniform {
            let rows = per_user
                .iter()
                .map(|(id, b)| json!([id, b.since[0], b.first]))
                .collect();
            let fields = "value ->> 0 AS id, value ->> 1 AS n, value ->> 2 AS first";
            (rows, fields, "b.n")
        } else {
            let rows = per_user
                .iter()
                .map(|(id, b)| {
                    json!([
                        id, b.since[0], b.since[1], b.since[2], b.since[3], b.since[4], b.first
                    ])
                })
                .collect();
            let fields = "value ->> 0 AS id, value ->> 1 AS n, value ->> 2 AS d, \
                 value ->> 3 AS w, value ->> 4 AS m, value ->> 5 AS y, value ->> 6 AS first";
            let added = "CASE reset WHEN 'day' THEN b.d WHEN 'week' THEN b.w \
                 WHEN 'month' THEN b.m WHEN 'year' THEN b.y ELSE b.n END";
            (rows, fields, added)
        };
        let start = "CASE reset WHEN 'day' THEN ?2 WHEN 'week' THEN ?3 WHEN 'month' THEN ?4 \
                     WHEN 'year' THEN ?5 END";
        // One statement for the batch; the period a user's row counts is picked by its reset.
        // The batch is the outer loop and each user's row is found by its key: joining the
        // batch inside a subquery first let SQLite scan the JSON once per row of the table
        // (a quarter of the ingest's bar at 1,000 users, docs/benchmarks.md).
        let sql = format!(
            "UPDATE user_quota SET \
                 used = CASE WHEN period_start IS ({start}) THEN used ELSE 0 END + {added}, \
                 period_start = ({start}), first_use = coalesce(first_use, b.first) \
             FROM (SELECT {fields} FROM json_each(?1)) AS b \
             WHERE user_quota.user_id = b.id"
        );
        if !per_user.is_empty() {
            sqlx::query(&sql)
                .bind(serde_json::Value::Array(rows).to_string())
                .bind(starts[1])
                .bind(starts[2])
                .bind(starts[3])
                .bind(starts[4])
                .execute(&mut *conn)
                .await?;
        }
        // One row back: which ids have no user, and who the batch may have moved — over a
        // limit (of the period just written), or on hold without an expiry yet (its first
        // traffic starts the hold); usually nobody. (User ids are UUIDs: no commas; an id of
        // a removed user with a comma in it would only be miscounted in a log line.)
        let (unknown, due): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT group_concat(CASE WHEN q.user_id IS NULL THEN j.value END), \
                 group_concat(CASE WHEN (q.data_limit IS NOT NULL AND q.used >= q.data_limit) \
                     OR (q.on_hold_duration IS NOT NULL AND q.expires_at IS NULL) \
                     THEN q.user_id END) \
             FROM json_each(?1) AS j LEFT JOIN user_quota AS q ON q.user_id = j.value",
        )
        .bind(users)
        .fetch_one(&mut *conn)
        .await?;
        let mut changes = Vec::new();
        let mut pushes = Vec::new();
        for id in due.iter().flat_map(|d| d.split(',')) {
            let Some(user) = super::users::load_user_by_id(conn, id).await? else {
                continue;
            };
            let suspended = user.status == super::UserStatus::Suspended;
            let (to, p) = super::quota::evaluate_user(conn, &user, suspended, now, offset).await?;
            if to != user.status {
                changes.push(super::StatusChange {
                    user: user.name.clone(),
                    from: user.status,
                    to,
                });
            }
            pushes.extend(p);
        }
        let unknown = unknown
            .iter()
            .flat_map(|u| u.split(','))
            .map(str::to_owned)
            .collect();
        Ok((unknown, changes, pushes))
    }

    /// The highest seq applied for `host_id`'s ledger `epoch`, if any.
    pub async fn usage_watermark(&self, host_id: &str, epoch: u64) -> Result<Option<u64>> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq FROM usage_watermarks WHERE host_id = ?1 AND epoch = ?2",
        )
        .bind(host_id)
        .bind(epoch as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(last.and_then(|s| u64::try_from(s).ok()))
    }

    /// Totals per user (and server, service or UTC day, per `by`) from the hour holding
    /// `since` on, of one user id or all, summed in SQL. Rows are sorted by user name, then
    /// key. A removed user reads `NAME (removed)` (an id never known reads as the id), a
    /// removed server likewise.
    pub async fn usage_totals(
        &self,
        user_id: Option<&str>,
        since: Option<i64>,
        by: UsageBy,
    ) -> Result<Vec<UsageRow>> {
        let (group, shown, joins) = match by {
            UsageBy::User => ("NULL", "NULL", ""),
            UsageBy::Server => (
                "host_id",
                "COALESCE(h.name, rh.name || ' (removed)', t.k)",
                "LEFT JOIN hosts h ON h.id = t.k LEFT JOIN revoked_hosts rh ON rh.id = t.k",
            ),
            UsageBy::Service => ("service", "t.k", ""),
            UsageBy::Day => (
                "hour / 86400",
                "strftime('%Y-%m-%d', t.k * 86400, 'unixepoch')",
                "",
            ),
        };
        let only = if user_id.is_some() {
            "user_id = ?1 AND"
        } else {
            "?1 IS NULL AND"
        };
        let sql = format!(
            "WITH t AS (SELECT user_id, {group} AS k, SUM(up) AS up, SUM(down) AS down, \
                 SUM(undirected) AS und FROM usage_hours WHERE {only} hour >= ?2 \
                 GROUP BY user_id, k) \
             SELECT COALESCE(u.name, r.name || ' (removed)', t.user_id) AS name, {shown} AS key, \
                 t.up, t.down, t.und \
             FROM t LEFT JOIN users u ON u.id = t.user_id \
                 LEFT JOIN removed_users r ON r.id = t.user_id {joins} \
             ORDER BY name, key, t.user_id"
        );
        let since_hour = since.map_or(i64::MIN, |s| s.div_euclid(HOUR) * HOUR);
        let mut tx = self.read().await?;
        let rows: Vec<(String, Option<String>, i64, i64, i64)> = sqlx::query_as(&sql)
            .bind(user_id)
            .bind(since_hour)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let count = |n: i64| u64::try_from(n).map_err(|_| StoreError::corrupt("usage total", n));
        rows.into_iter()
            .map(|(user, key, up, down, und)| {
                let (up, down, undirected) = (count(up)?, count(down)?, count(und)?);
                Ok(UsageRow {
                    user,
                    key,
                    up,
                    down,
                    undirected,
                    total: up.saturating_add(down).saturating_add(undirected),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpn_shared::proto::UsageEntry;

    fn entry(seq: u64) -> UsageEntry {
        UsageEntry {
            seq,
            user: "u".into(),
            service: "ss".into(),
            up: 1,
            down: 2,
            undirected: 0,
            from: 100,
            to: 110,
        }
    }

    fn batch(entries: Vec<UsageEntry>) -> UsageReport {
        UsageReport { epoch: 7, entries }
    }

    #[test]
    fn a_well_formed_batch_passes() {
        assert_eq!(
            check_batch(&batch(vec![entry(1), entry(2), entry(9)])),
            Ok(())
        );
        assert_eq!(check_batch(&batch(Vec::new())), Ok(()));
    }

    #[test]
    fn each_malformed_entry_is_named() {
        let refused = |e: Vec<UsageEntry>| check_batch(&batch(e)).unwrap_err().to_string();
        assert_eq!(
            refused(vec![entry(2), entry(2)]),
            "usage entry seq 2 follows seq 2: entries must be strictly ascending"
        );
        assert!(refused(vec![entry(3), entry(1)]).contains("seq 1 follows seq 3"));
        assert!(refused(vec![entry(0)]).contains("seq 0 is out of range"));
        assert!(refused(vec![entry(u64::MAX)]).contains("out of range"));
        let mut backwards = entry(1);
        backwards.to = 99;
        assert_eq!(
            refused(vec![backwards]),
            "usage entry seq 1: interval 100..99 is not a time span"
        );
        let mut huge = entry(1);
        huge.undirected = MAX_ENTRY_BYTES + 1;
        assert!(refused(vec![huge]).contains("undirected of 9007199254740993 bytes is absurd"));
        let mut nameless = entry(1);
        nameless.user.clear();
        assert!(refused(vec![nameless]).contains("user \"\" is empty"));
        let mut long = entry(1);
        long.service = "s".repeat(MAX_ID + 1);
        assert!(refused(vec![long]).contains("service"));
        let many = batch((1..=MAX_ENTRIES as u64 + 1).map(entry).collect());
        assert_eq!(
            check_batch(&many),
            Err(BatchError::TooLarge(MAX_ENTRIES + 1))
        );
    }

    #[test]
    fn an_entry_counts_in_the_hour_its_interval_ends_never_in_the_future() {
        assert_eq!(hour_of(7_199, 10_000), 3_600);
        assert_eq!(hour_of(7_200, 10_000), 7_200);
        // An agent clock a day ahead books into the controller's current hour.
        assert_eq!(hour_of(10_000 + 86_400, 10_000), 7_200);
    }

    #[test]
    fn a_batch_whose_sums_overflow_is_refused() {
        let mut a = entry(1);
        let mut b = entry(2);
        a.up = MAX_ENTRY_BYTES;
        b.up = MAX_ENTRY_BYTES;
        // Two fit; 1,024 of them in one hour would pass 2^63.
        assert!(buckets(&[a.clone(), b], 200).is_ok());
        let many: Vec<_> = (1..=1_025)
            .map(|seq| UsageEntry { seq, ..a.clone() })
            .collect();
        assert!(matches!(
            buckets(&many, 200),
            Err(BatchError::Bytes { what: "up", .. })
        ));
    }
}
