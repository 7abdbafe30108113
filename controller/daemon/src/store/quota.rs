//! Quotas and time in the store (SPEC §2.6): each user's `user_quota` row, the status the pure
//! core ([`crate::quota`]) decides from it, and what follows from a status change — leaving or
//! re-entering every host's desired state, in the same transaction as the change.
//!
//! Every path that can change a user's status goes through [`evaluate_user`]: an ingest that
//! moved the user's counter past its limit or started its hold, the timer at `next_check`, an
//! operator's add, edit or resume. It reads the row, rolls the period over if it is stale,
//! asks the core, and writes back the status, the expiry a hold started, the rolled counter and
//! the next moment to look again.

use sqlx::SqliteConnection;
use time::UtcOffset;
use vpn_shared::proto::Allowance;

use super::error::{Result, StoreError};
use super::rows::{QuotaSettings, UserRow, UserStatus};
use super::{HostPush, Mutation, Store, state};
use crate::quota::{self, Facts, Limits, OnHold, Reset, Status};

/// A user's `user_quota` row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaState {
    pub settings: QuotaSettings,
    /// Start of the period `used` counts, as last written (see [`QuotaState::used_at`]).
    pub period_start: Option<i64>,
    pub used: u64,
    pub first_use: Option<i64>,
    pub next_check: Option<i64>,
}

/// A `user_quota` row as SQLite hands it over: `user_id` then [`QUOTA_COLUMNS`] (select
/// `user_id` with them; [`load`] selects it too).
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct QuotaRecord {
    user_id: String,
    data_limit: Option<i64>,
    reset: String,
    period_start: Option<i64>,
    used: i64,
    first_use: Option<i64>,
    expires_at: Option<i64>,
    on_hold_duration: Option<i64>,
    on_hold_timeout_at: Option<i64>,
    next_check: Option<i64>,
}

pub(super) const QUOTA_COLUMNS: &str = "data_limit, reset, period_start, used, first_use, \
    expires_at, on_hold_duration, on_hold_timeout_at, next_check";

impl QuotaRecord {
    /// The user id and the checked state (a value no write produces is a corrupt store).
    pub(super) fn split(self) -> Result<(String, QuotaState)> {
        let reset = Reset::parse(&self.reset)
            .ok_or_else(|| StoreError::corrupt("quota reset", &self.reset))?;
        let data_limit = self
            .data_limit
            .map(|l| u64::try_from(l).map_err(|_| StoreError::corrupt("data limit", l)))
            .transpose()?;
        let used =
            u64::try_from(self.used).map_err(|_| StoreError::corrupt("quota used", self.used))?;
        let state = QuotaState {
            settings: QuotaSettings {
                data_limit,
                reset,
                expires_at: self.expires_at,
                on_hold: self.on_hold_duration.map(|duration| OnHold {
                    duration,
                    timeout_at: self.on_hold_timeout_at,
                }),
            },
            period_start: self.period_start,
            used,
            first_use: self.first_use,
            next_check: self.next_check,
        };
        Ok((self.user_id, state))
    }
}

impl QuotaState {
    /// Bytes used in the period that holds `now`: the stored count if it is of that period,
    /// else nothing yet (the period rolled over since the last write).
    pub fn used_at(&self, now: i64, offset: UtcOffset) -> u64 {
        if self.period_start == quota::period_start(self.settings.reset, now, offset) {
            self.used
        } else {
            0
        }
    }

    /// What the core needs, at `now`.
    pub fn facts(&self, suspended: bool, now: i64, offset: UtcOffset) -> Facts {
        Facts {
            limits: self.settings.limits(),
            suspended,
            used: self.used_at(now, offset),
            first_use: self.first_use,
        }
    }

    /// What an agent may still let this user use, if anything limits them.
    pub fn allowance(&self, user_id: &str, now: i64, offset: UtcOffset) -> Option<Allowance> {
        let remaining = self
            .settings
            .data_limit
            .map(|l| l.saturating_sub(self.used_at(now, offset)));
        let expires_at = self.settings.expires_at;
        (remaining.is_some() || expires_at.is_some()).then(|| Allowance {
            user: user_id.to_owned(),
            remaining,
            expires_at,
        })
    }
}

impl QuotaSettings {
    pub fn limits(&self) -> Limits {
        Limits {
            data_limit: self.data_limit,
            reset: Some(self.reset),
            expires_at: self.expires_at,
            on_hold: self.on_hold,
        }
    }
}

/// The stored status of a verdict.
pub fn status_of(status: Status) -> UserStatus {
    match status {
        Status::Active => UserStatus::Active,
        Status::Suspended => UserStatus::Suspended,
        Status::Limited => UserStatus::Limited,
        Status::Expired => UserStatus::Expired,
        Status::OnHold => UserStatus::OnHold,
    }
}

fn to_db(bytes: u64, field: &'static str) -> Result<i64> {
    i64::try_from(bytes).map_err(|_| StoreError::Invalid {
        field,
        reason: format!("{bytes} bytes is more than the store can hold"),
    })
}

pub(super) async fn load(conn: &mut SqliteConnection, user_id: &str) -> Result<QuotaState> {
    let sql = format!("SELECT user_id, {QUOTA_COLUMNS} FROM user_quota WHERE user_id = ?1");
    let raw: Option<QuotaRecord> = sqlx::query_as(&sql)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    match raw {
        Some(raw) => Ok(raw.split()?.1),
        // Every user gets a row when added (and existing users by the migration).
        None => Err(StoreError::corrupt(
            "user quota",
            format!("no row for {user_id}"),
        )),
    }
}

/// Writes a new user's row (counting nothing yet).
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    user_id: &str,
    q: &QuotaSettings,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_quota (user_id, data_limit, reset, expires_at, on_hold_duration, \
         on_hold_timeout_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(user_id)
    .bind(q.data_limit.map(|l| to_db(l, "data-limit")).transpose()?)
    .bind(q.reset.as_str())
    .bind(q.expires_at)
    .bind(q.on_hold.map(|h| h.duration))
    .bind(q.on_hold.and_then(|h| h.timeout_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces a user's settings. A changed reset period counts the new period again from the
/// hourly totals (so `--reset month` on a user who used 40 GiB this month starts at 40 GiB);
/// putting a user on hold again forgets its first use and its expiry.
pub(super) async fn replace_settings(
    conn: &mut SqliteConnection,
    user_id: &str,
    old: &QuotaState,
    new: &QuotaSettings,
    now: i64,
    offset: UtcOffset,
) -> Result<()> {
    let rehold = new.on_hold.is_some() && new.on_hold != old.settings.on_hold;
    sqlx::query(
        "UPDATE user_quota SET data_limit = ?2, reset = ?3, expires_at = ?4, \
         on_hold_duration = ?5, on_hold_timeout_at = ?6, \
         first_use = CASE WHEN ?7 THEN NULL ELSE first_use END WHERE user_id = ?1",
    )
    .bind(user_id)
    .bind(new.data_limit.map(|l| to_db(l, "data-limit")).transpose()?)
    .bind(new.reset.as_str())
    .bind(new.expires_at)
    .bind(new.on_hold.map(|h| h.duration))
    .bind(new.on_hold.and_then(|h| h.timeout_at))
    .bind(rehold)
    .execute(&mut *conn)
    .await?;
    if new.reset != old.settings.reset {
        let start = quota::period_start(new.reset, now, offset);
        // Hours are the finest record: the period's first hour counts whole.
        let from = start.map_or(i64::MIN, |s| {
            s.div_euclid(super::usage::HOUR) * super::usage::HOUR
        });
        let used: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(up + down + undirected), 0) FROM usage_hours \
             WHERE hour >= ?2 AND user_id = ?1",
        )
        .bind(user_id)
        .bind(from)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query("UPDATE user_quota SET used = ?2, period_start = ?3 WHERE user_id = ?1")
            .bind(user_id)
            .bind(used)
            .bind(start)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Decides `user`'s status at `now` and writes what follows: the status (leaving or entering
/// its hosts' desired states), the expiry a hold started, the period rolled over, the next
/// check. Returns the new status and the pushes.
///
/// `suspended` is the operator's switch: the stored status's for most callers, set or cleared
/// by `users suspend|resume`.
pub(super) async fn evaluate_user(
    conn: &mut SqliteConnection,
    user: &UserRow,
    suspended: bool,
    now: i64,
    offset: UtcOffset,
) -> Result<(UserStatus, Vec<HostPush>)> {
    let q = load(conn, &user.id).await?;
    let verdict = quota::evaluate(&q.facts(suspended, now, offset), now, offset);
    let status = status_of(verdict.status);
    let start = quota::period_start(q.settings.reset, now, offset);
    sqlx::query(
        "UPDATE user_quota SET expires_at = coalesce(expires_at, ?2), \
         used = CASE WHEN period_start IS ?3 THEN used ELSE 0 END, period_start = ?3, \
         next_check = ?4 WHERE user_id = ?1",
    )
    .bind(&user.id)
    .bind(verdict.starts_expiry)
    .bind(start)
    .bind(verdict.next_change)
    .execute(&mut *conn)
    .await?;
    if status == user.status {
        return Ok((status, Vec::new()));
    }
    sqlx::query("UPDATE users SET status = ?1, updated_at = ?2 WHERE id = ?3")
        .bind(status.as_str())
        .bind(now)
        .bind(&user.id)
        .execute(&mut *conn)
        .await?;
    let pushes = if user.status.serves() != status.serves() {
        let all = matches!(user.servers, super::Servers::All);
        state::push_user(conn, &user.id, &user.name, all, status.serves()).await?
    } else {
        Vec::new()
    };
    tracing::info!(user = %user.name, from = %user.status, to = %status, reason = ?verdict.reason, "user status changed by its quota");
    Ok((status, pushes))
}

/// A status the timer or an ingest changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub user: String,
    pub from: UserStatus,
    pub to: UserStatus,
}

impl Store {
    /// Re-evaluates every user whose `next_check` has come (a limited user's reset, an expiry,
    /// a hold's timeout), at `now`.
    pub async fn quota_sweep(&self, now: i64) -> Result<Mutation<Vec<StatusChange>>> {
        let offset = self.offset;
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT user_id FROM user_quota WHERE next_check <= ?1 ORDER BY next_check",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        let mut changes = Vec::new();
        let mut pushes = Vec::new();
        for id in due {
            let Some(user) = super::users::load_user_by_id(conn, &id).await? else {
                continue;
            };
            let suspended = user.status == UserStatus::Suspended;
            let (to, p) = evaluate_user(conn, &user, suspended, now, offset).await?;
            if to != user.status {
                changes.push(StatusChange {
                    user: user.name.clone(),
                    from: user.status,
                    to,
                });
            }
            pushes.extend(p);
        }
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: changes,
            // Several users may touch one host: its pushes follow each other, in order.
            pushes,
        })
    }

    /// The earliest `next_check` of any user: when [`Store::quota_sweep`] has work.
    pub async fn next_quota_check(&self) -> Result<Option<i64>> {
        let next: Option<i64> = sqlx::query_scalar("SELECT min(next_check) FROM user_quota")
            .fetch_one(&self.pool)
            .await?;
        Ok(next)
    }

    /// Every allowance of the users in `host_id`'s desired state, with the host's ledger
    /// watermark the figures include: `(epoch, up_to, allowances)`. The watermark is that of
    /// the host's most recently written ledger epoch (`(0, 0)` before any).
    pub async fn host_allowances(
        &self,
        host_id: &str,
        now: i64,
    ) -> Result<(u64, u64, Vec<Allowance>)> {
        let mut tx = self.read().await?;
        let mark: Option<(i64, i64)> = sqlx::query_as(
            "SELECT epoch, last_seq FROM usage_watermarks WHERE host_id = ?1 \
             ORDER BY updated_at DESC, last_seq DESC LIMIT 1",
        )
        .bind(host_id)
        .fetch_optional(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT q.user_id, {} FROM user_quota q JOIN users u ON u.id = q.user_id \
             WHERE u.status IN {} AND (q.data_limit IS NOT NULL OR q.expires_at IS NOT NULL) \
             AND (u.all_servers OR u.id IN (SELECT user_id FROM user_servers WHERE host_id = ?1)) \
             ORDER BY q.user_id",
            QUOTA_COLUMNS
                .split(", ")
                .map(|c| format!("q.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            super::rows::SERVING
        );
        let rows: Vec<QuotaRecord> = sqlx::query_as(&sql)
            .bind(host_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, q) = row.split()?;
            out.extend(q.allowance(&id, now, self.offset));
        }
        let (epoch, up_to) = mark.map_or((0, 0), |(e, s)| (e as u64, s.max(0) as u64));
        Ok((epoch, up_to, out))
    }

    /// Every user's quota row, by user id.
    pub async fn quotas(&self) -> Result<std::collections::HashMap<String, QuotaState>> {
        let mut tx = self.read().await?;
        let sql = format!("SELECT user_id, {QUOTA_COLUMNS} FROM user_quota");
        let rows: Vec<QuotaRecord> = sqlx::query_as(&sql).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter().map(QuotaRecord::split).collect()
    }

    /// One user's quota row.
    pub async fn quota(&self, user_id: &str) -> Result<QuotaState> {
        let mut tx = self.read().await?;
        let q = load(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(q)
    }

    /// The time zone reset periods are counted in.
    pub fn time_zone(&self) -> UtcOffset {
        self.offset
    }
}
