//! Host health (SPEC §2.8): each host's failing resources with first and last seen, and a
//! bounded list of recent events (`failing`, `recovered`, `repaired`, `online`, `offline`).
//!
//! Every ack carries the host's whole result set and every report its failing resources (a
//! resource absent from either is not failing), so recording one replaces what was known: a
//! resource that was failing and is now ok or absent has recovered. What to
//! write is decided by the pure [`plan`]; thousands of hosts reporting every 10 s with nothing
//! new cost a read each and a write only once a minute per host ([`TOUCH_EVERY`]).

use std::collections::{BTreeMap, HashMap};

use sqlx::SqliteConnection;
use vpn_shared::proto::admin::{FailingResource, HostEvent};
use vpn_shared::proto::{Outcome, Repair, ResourceResult};

use super::Store;
use super::error::Result;

/// Unchanged failures get their `last_seen` written at most this often (seconds).
pub const TOUCH_EVERY: i64 = 60;
/// Events kept per host; older ones are deleted as new ones arrive.
pub const EVENTS_KEPT: i64 = 100;
/// Events of one kind written for one update; the rest are summed up in one more event, so a
/// full state whose 2,000 users all fail writes 21 events, not 2,000.
pub const EVENTS_PER_UPDATE: usize = 20;
/// Longest resource name and message kept, in bytes (an agent's text is external input).
pub const MAX_RESOURCE: usize = 200;
pub const MAX_MESSAGE: usize = 1_000;

/// What happened to a host, as recorded in its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Failing,
    Recovered,
    Repaired,
    Online,
    Offline,
    /// The agent cut a user off by itself (an allowance ran out, SPEC §2.6).
    Enforced,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failing => "failing",
            EventKind::Recovered => "recovered",
            EventKind::Repaired => "repaired",
            EventKind::Online => "online",
            EventKind::Offline => "offline",
            EventKind::Enforced => "enforced",
        }
    }
}

/// One event to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub resource: Option<String>,
    pub message: String,
}

/// What recording a result set changed, for the session's state transitions and webhooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthUpdate {
    /// Resources failing after the update.
    pub failing: u32,
    /// Failures that were not failing before.
    pub new_failures: Vec<FailingResource>,
    /// Resources that were failing and no longer are.
    pub recovered: Vec<String>,
    /// Whether anything was written.
    pub written: bool,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Write at all; when false everything else is empty.
    pub write: bool,
    /// Rows to insert or whose message changed (`first_seen` kept for a known failure).
    pub upsert: Vec<FailingResource>,
    /// Resources no longer failing.
    pub remove: Vec<String>,
    pub events: Vec<NewEvent>,
    /// Every failing resource after the update, sorted.
    pub failing: Vec<FailingResource>,
    pub new_failures: Vec<FailingResource>,
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [cut]", &text[..end])
}

/// Whether recording costs a write: always when something changed, else only when the
/// failures' `last_seen` is [`TOUCH_EVERY`] old (nothing failing: nothing to touch).
pub fn needs_write(changed: bool, last_written: Option<i64>, now: i64) -> bool {
    changed || last_written.is_some_and(|t| now - t >= TOUCH_EVERY)
}

/// Decides what recording `results` (the host's complete set) over `current` writes at `now`.
pub fn plan(current: &[FailingResource], results: &[ResourceResult], now: i64) -> Plan {
    // The last result of a resource wins; names and messages are bounded before comparing.
    let mut reported: BTreeMap<String, Option<String>> = BTreeMap::new();
    for r in results {
        let message = match &r.outcome {
            Outcome::Ok => None,
            Outcome::Error(m) => Some(cut(m, MAX_MESSAGE)),
        };
        reported.insert(cut(&r.resource, MAX_RESOURCE), message);
    }
    let known: HashMap<&str, &FailingResource> =
        current.iter().map(|f| (f.resource.as_str(), f)).collect();
    let mut p = Plan::default();
    for (resource, message) in &reported {
        let Some(message) = message else { continue };
        let row = |first_seen| FailingResource {
            resource: resource.clone(),
            message: message.clone(),
            first_seen,
            last_seen: now,
        };
        match known.get(resource.as_str()) {
            Some(old) if old.message == *message => p.failing.push(row(old.first_seen)),
            Some(old) => {
                p.upsert.push(row(old.first_seen));
                p.failing.push(row(old.first_seen));
            }
            None => {
                p.upsert.push(row(now));
                p.new_failures.push(row(now));
                p.failing.push(row(now));
            }
        }
    }
    for old in current {
        match reported.get(&old.resource) {
            Some(Some(_)) => {}
            Some(None) => p.remove.push(old.resource.clone()),
            None => p.remove.push(old.resource.clone()),
        }
    }
    let changed = !p.upsert.is_empty() || !p.remove.is_empty();
    let last_written = current.iter().map(|f| f.last_seen).max();
    if !needs_write(changed, last_written, now) {
        return Plan {
            failing: current.to_vec(),
            ..Plan::default()
        };
    }
    p.write = true;
    let failing_events = p.new_failures.iter().map(|f| NewEvent {
        kind: EventKind::Failing,
        resource: Some(f.resource.clone()),
        message: f.message.clone(),
    });
    p.events.extend(bounded_events(
        failing_events,
        EventKind::Failing,
        "resources failing",
    ));
    let recovered_events = p.remove.iter().map(|resource| NewEvent {
        kind: EventKind::Recovered,
        resource: Some(resource.clone()),
        message: match reported.get(resource) {
            Some(None) => "ok again".into(),
            _ => "no longer reported".into(),
        },
    });
    p.events.extend(bounded_events(
        recovered_events,
        EventKind::Recovered,
        "resources recovered",
    ));
    p
}

/// At most [`EVENTS_PER_UPDATE`] events, then one saying how many more there were.
fn bounded_events(
    events: impl ExactSizeIterator<Item = NewEvent>,
    kind: EventKind,
    what: &str,
) -> Vec<NewEvent> {
    let extra = events.len().saturating_sub(EVENTS_PER_UPDATE);
    let mut out: Vec<NewEvent> = events.take(EVENTS_PER_UPDATE).collect();
    if extra > 0 {
        out.push(NewEvent {
            kind,
            resource: None,
            message: format!("and {extra} more {what}"),
        });
    }
    out
}

type FailingTuple = (String, String, i64, i64);

fn failing_row((resource, message, first_seen, last_seen): FailingTuple) -> FailingResource {
    FailingResource {
        resource,
        message,
        first_seen,
        last_seen,
    }
}

async fn failing_of(conn: &mut SqliteConnection, host_id: &str) -> Result<Vec<FailingResource>> {
    let rows: Vec<FailingTuple> = sqlx::query_as(
        "SELECT resource, message, first_seen, last_seen FROM host_failing \
         WHERE host_id = ?1 ORDER BY resource",
    )
    .bind(host_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(failing_row).collect())
}

async fn insert_events(
    conn: &mut SqliteConnection,
    host_id: &str,
    events: &[NewEvent],
    now: i64,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    for e in events {
        sqlx::query(
            "INSERT INTO host_events (host_id, at, kind, resource, message) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(host_id)
        .bind(now)
        .bind(e.kind.as_str())
        .bind(e.resource.as_deref().map(|r| cut(r, MAX_RESOURCE)))
        .bind(cut(&e.message, MAX_MESSAGE))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "DELETE FROM host_events WHERE host_id = ?1 AND id <= \
         (SELECT id FROM host_events WHERE host_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )
    .bind(host_id)
    .bind(EVENTS_KEPT)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records a host's complete result set (from an ack or a report) at `now`: new failures
    /// and recoveries become events; an unchanged set writes nothing unless its `last_seen`
    /// is a minute old.
    pub async fn record_results(
        &self,
        host_id: &str,
        results: &[ResourceResult],
        now: i64,
    ) -> Result<HealthUpdate> {
        // Read first without the writer lock: most reports change nothing.
        let mut conn = self.pool.acquire().await?;
        let current = failing_of(&mut conn, host_id).await?;
        drop(conn);
        let p = plan(&current, results, now);
        if !p.write {
            return Ok(HealthUpdate {
                failing: p.failing.len() as u32,
                ..HealthUpdate::default()
            });
        }
        // Decide again inside the transaction, from what it reads.
        let mut w = self.write().await?;
        let current = failing_of(&mut w.tx, host_id).await?;
        let p = plan(&current, results, now);
        if p.write {
            for resource in &p.remove {
                sqlx::query("DELETE FROM host_failing WHERE host_id = ?1 AND resource = ?2")
                    .bind(host_id)
                    .bind(resource)
                    .execute(&mut *w.tx)
                    .await?;
            }
            for f in &p.upsert {
                sqlx::query(
                    "INSERT INTO host_failing (host_id, resource, message, first_seen, last_seen) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (host_id, resource) \
                     DO UPDATE SET message = excluded.message, last_seen = excluded.last_seen",
                )
                .bind(host_id)
                .bind(&f.resource)
                .bind(&f.message)
                .bind(f.first_seen)
                .bind(f.last_seen)
                .execute(&mut *w.tx)
                .await?;
            }
            sqlx::query("UPDATE host_failing SET last_seen = ?2 WHERE host_id = ?1")
                .bind(host_id)
                .bind(now)
                .execute(&mut *w.tx)
                .await?;
            insert_events(&mut w.tx, host_id, &p.events, now).await?;
            w.commit().await?;
        }
        Ok(HealthUpdate {
            failing: p.failing.len() as u32,
            written: p.write,
            recovered: p.remove,
            new_failures: p.new_failures,
        })
    }

    /// Records what a host's reconciles repaired as `repaired` events (bounded per call).
    pub async fn record_repairs(&self, host_id: &str, repairs: &[Repair], now: i64) -> Result<()> {
        if repairs.is_empty() {
            return Ok(());
        }
        let events = bounded_events(
            repairs.iter().map(|r| NewEvent {
                kind: EventKind::Repaired,
                resource: Some(r.resource.clone()),
                message: r.action.clone(),
            }),
            EventKind::Repaired,
            "repairs",
        );
        let mut w = self.write().await?;
        insert_events(&mut w.tx, host_id, &events, now).await?;
        w.commit().await
    }

    /// Records one event without a resource (`online`, `offline`).
    pub async fn record_host_event(
        &self,
        host_id: &str,
        kind: EventKind,
        message: &str,
        now: i64,
    ) -> Result<()> {
        let event = NewEvent {
            kind,
            resource: None,
            message: message.to_string(),
        };
        let mut w = self.write().await?;
        insert_events(&mut w.tx, host_id, &[event], now).await?;
        w.commit().await
    }

    /// A host's failing resources, by resource name (kept while it is offline).
    pub async fn failing(&self, host_id: &str) -> Result<Vec<FailingResource>> {
        let mut conn = self.pool.acquire().await?;
        failing_of(&mut conn, host_id).await
    }

    /// Every host's failing resources, at most `per_host` each (by resource name), by host id.
    pub async fn failing_all(
        &self,
        per_host: u32,
    ) -> Result<HashMap<String, Vec<FailingResource>>> {
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT host_id, resource, message, first_seen, last_seen FROM \
             (SELECT *, row_number() OVER (PARTITION BY host_id ORDER BY resource) AS n \
              FROM host_failing) WHERE n <= ?1 ORDER BY host_id, resource",
        )
        .bind(per_host)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<FailingResource>> = HashMap::new();
        for (host, resource, message, first_seen, last_seen) in rows {
            out.entry(host).or_default().push(FailingResource {
                resource,
                message,
                first_seen,
                last_seen,
            });
        }
        Ok(out)
    }

    /// The failing resources of one service on every host: `service/<name>` and its users
    /// (`user/…@<name>`), by host id.
    pub async fn failing_of_service(
        &self,
        service: &str,
    ) -> Result<HashMap<String, Vec<FailingResource>>> {
        let suffix = format!("@{service}");
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT host_id, resource, message, first_seen, last_seen FROM host_failing \
             WHERE resource = ?1 OR (substr(resource, 1, 5) = 'user/' \
                                     AND substr(resource, -length(?2)) = ?2) \
             ORDER BY host_id, resource",
        )
        .bind(format!("service/{service}"))
        .bind(&suffix)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<FailingResource>> = HashMap::new();
        for (host, resource, message, first_seen, last_seen) in rows {
            out.entry(host).or_default().push(FailingResource {
                resource,
                message,
                first_seen,
                last_seen,
            });
        }
        Ok(out)
    }

    /// How many resources fail on each host that has any (counted by SQLite).
    pub async fn failing_counts(&self) -> Result<HashMap<String, u32>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT host_id, COUNT(*) FROM host_failing GROUP BY host_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(h, n)| (h, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect())
    }

    /// The fleet's events after the one numbered `after` (0: from the newest `limit`), oldest
    /// first, each with its number and its host's name: what a subscription sends.
    pub async fn fleet_events(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String, HostEvent)>> {
        const COLUMNS: &str = "SELECT e.id, h.name, e.at, e.kind, e.resource, e.message \
            FROM host_events e JOIN hosts h ON h.id = e.host_id";
        let newest = after == 0;
        let sql = if newest {
            format!("{COLUMNS} ORDER BY e.id DESC LIMIT ?2")
        } else {
            format!("{COLUMNS} WHERE e.id > ?1 ORDER BY e.id LIMIT ?2")
        };
        let mut rows: Vec<(i64, String, i64, String, Option<String>, String)> =
            sqlx::query_as(&sql)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        if newest {
            rows.reverse();
        }
        Ok(rows
            .into_iter()
            .map(|(id, host, at, kind, resource, message)| {
                let event = HostEvent {
                    at,
                    kind,
                    resource,
                    message,
                };
                (id, host, event)
            })
            .collect())
    }

    /// A host's newest `limit` events, newest first.
    pub async fn host_events(&self, host_id: &str, limit: u32) -> Result<Vec<HostEvent>> {
        let rows: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
            "SELECT at, kind, resource, message FROM host_events WHERE host_id = ?1 \
             ORDER BY id DESC LIMIT ?2",
        )
        .bind(host_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(at, kind, resource, message)| HostEvent {
                at,
                kind,
                resource,
                message,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(resource: &str, message: &str, first: i64, last: i64) -> FailingResource {
        FailingResource {
            resource: resource.into(),
            message: message.into(),
            first_seen: first,
            last_seen: last,
        }
    }

    #[test]
    fn a_new_failure_is_written_with_an_event() {
        let p = plan(&[], &[ResourceResult::error("service/ss", "no image")], 100);
        assert!(p.write);
        assert_eq!(p.upsert, vec![failing("service/ss", "no image", 100, 100)]);
        assert_eq!(p.new_failures.len(), 1);
        assert_eq!(p.events[0].kind, EventKind::Failing);
        assert_eq!(p.events[0].resource.as_deref(), Some("service/ss"));
    }

    #[test]
    fn an_unchanged_failure_is_touched_once_a_minute_and_keeps_first_seen() {
        let current = [failing("service/ss", "no image", 10, 100)];
        let same = [ResourceResult::error("service/ss", "no image")];
        let quiet = plan(&current, &same, 100 + TOUCH_EVERY - 1);
        assert!(!quiet.write, "nothing changed within a minute: no write");
        assert_eq!(quiet.failing, current.to_vec());
        let touched = plan(&current, &same, 100 + TOUCH_EVERY);
        assert!(touched.write);
        assert!(touched.upsert.is_empty() && touched.events.is_empty());
        assert_eq!(touched.failing[0].first_seen, 10);
        assert_eq!(touched.failing[0].last_seen, 100 + TOUCH_EVERY);
    }

    #[test]
    fn a_changed_message_is_written_at_once_without_an_event() {
        let current = [failing("service/ss", "no image", 10, 100)];
        let p = plan(
            &current,
            &[ResourceResult::error("service/ss", "port taken")],
            101,
        );
        assert!(p.write);
        assert_eq!(p.upsert, vec![failing("service/ss", "port taken", 10, 101)]);
        assert!(p.events.is_empty() && p.new_failures.is_empty());
    }

    #[test]
    fn ok_or_absent_resources_recover() {
        let current = [
            failing("service/ss", "no image", 10, 100),
            failing("user/a@ss", "x", 10, 100),
        ];
        let p = plan(&current, &[ResourceResult::ok("service/ss")], 101);
        assert!(p.write);
        assert_eq!(p.remove, vec!["service/ss".to_string(), "user/a@ss".into()]);
        let messages: Vec<_> = p.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, vec!["ok again", "no longer reported"]);
        assert!(p.failing.is_empty());
    }

    #[test]
    fn nothing_failing_before_or_after_writes_nothing() {
        let p = plan(&[], &[ResourceResult::ok("service/ss")], 1_000_000);
        assert!(!p.write);
        assert!(!needs_write(false, None, i64::MAX));
        assert!(needs_write(true, None, 0));
    }

    #[test]
    fn a_burst_of_failures_writes_a_bounded_number_of_events() {
        let results: Vec<_> = (0..2_000)
            .map(|i| ResourceResult::error(format!("user/u{i}@ss"), "down"))
            .collect();
        let p = plan(&[], &results, 5);
        assert_eq!(p.failing.len(), 2_000);
        assert_eq!(p.events.len(), EVENTS_PER_UPDATE + 1);
        assert_eq!(
            p.events.last().map(|e| e.message.as_str()),
            Some("and 1980 more resources failing")
        );
    }

    #[test]
    fn long_agent_text_is_cut() {
        let long = "é".repeat(MAX_MESSAGE);
        let p = plan(&[], &[ResourceResult::error("service/ss", long)], 1);
        assert!(p.failing[0].message.len() <= MAX_MESSAGE + " [cut]".len());
        assert!(p.failing[0].message.ends_with(" [cut]"));
    }
}
