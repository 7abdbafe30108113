//! Users with their quotas (SPEC §2.6) in the `table` format: `users list` adds how much each
//! user used of their limit, the reset period, the expiry and, last, the status with its
//! reason; `users show` adds one line per part of the quota.
//!
//! STATUS moves to the end because its reason (`limited: 1.0 MiB of 1 MiB used`) is as long
//! as it needs to be: placed second it would push every other column right. Today's columns
//! stay; the list is wider than 80 columns (about 90 before STATUS without bandwidth limits),
//! which `-o plain` or `users show` avoid.

use vpn_shared::proto::admin::{Reset, UserDetail, UserQuota};

use super::{USERS, fields, grid, user_fields, user_row};
use crate::render::{ago, bytes, limit, minute, span, timestamp, until};

/// `users list` from a controller with quotas.
pub fn users(v: &[UserDetail]) -> String {
    // Today's columns with the quota's after NAME and STATUS moved to the end.
    let quota = ["USED", "RESET", "EXPIRES"];
    let mut header = USERS.to_vec();
    let status_header = header.remove(1);
    header.splice(1..1, quota);
    header.push(status_header);
    let rows = v
        .iter()
        .map(|d| {
            let mut row = user_row(&d.user);
            row.remove(1);
            let q = &d.quota;
            row.splice(1..1, [used(q), reset(q.reset), expires_column(q)]);
            row.push(status(d));
            row
        })
        .collect();
    grid(Some(&header), rows)
}

/// `users show`: today's fields with the status's reason, and the quota before the times.
pub fn user(d: &UserDetail, now: i64) -> String {
    let q = &d.quota;
    let mut rows = user_fields(&d.user);
    if let Some(row) = rows.iter_mut().find(|(k, _)| *k == "Status") {
        row.1 = status(d);
    }
    let at = rows
        .iter()
        .position(|(k, _)| *k == "Created")
        .unwrap_or(rows.len());
    let moment = |t: Option<i64>| {
        t.map_or("-".into(), |t| {
            format!("{} ({})", timestamp(t), until(now, t))
        })
    };
    let quota = [
        ("Data used", used_of(q)),
        ("Reset", reset_field(q)),
        ("Period start", q.period_start.map_or("-".into(), timestamp)),
        ("Next reset", moment(q.next_reset)),
        ("Expires", expires_field(q, now)),
        ("On hold", on_hold(q, now)),
        (
            "First use",
            q.first_use.map_or("never".into(), |t| {
                format!("{} ({})", timestamp(t), ago(now, Some(t)))
            }),
        ),
    ];
    for (i, row) in quota.into_iter().enumerate() {
        rows.insert(at + i, row);
    }
    fields(rows)
}

/// The status, with the controller's reason when it gave one (`expired 2026-12-01 00:00 UTC`).
pub fn status(d: &UserDetail) -> String {
    let status = &d.user.status;
    match d.quota.reason.as_deref() {
        None | Some("") => status.clone(),
        Some(reason) if reason.starts_with(status.as_str()) => reason.to_owned(),
        Some(reason) => format!("{status}: {reason}"),
    }
}

/// `1.0 MiB / 1 MiB` with a limit, `1.0 MiB` without.
fn used(q: &UserQuota) -> String {
    match q.data_limit {
        Some(l) => format!("{} / {}", bytes(q.used), limit(l)),
        None => bytes(q.used),
    }
}

/// [`used`], saying what is counted when there is no limit.
fn used_of(q: &UserQuota) -> String {
    match q.data_limit {
        Some(_) => used(q),
        None => format!("{} (no data limit)", bytes(q.used)),
    }
}

fn reset(r: Reset) -> String {
    match r {
        Reset::Never => "-".into(),
        r => r.as_str().into(),
    }
}

fn reset_field(q: &UserQuota) -> String {
    match (q.reset, q.data_limit) {
        (Reset::Never, Some(_)) => "none (the limit is for the user's whole life)".into(),
        (Reset::Never, None) => "-".into(),
        (r, _) => r.as_str().into(),
    }
}

/// The expiry to the minute, `on hold 30d` until the hold's clock starts, `-` for never.
fn expires_column(q: &UserQuota) -> String {
    match (q.expires_at, q.on_hold) {
        (Some(t), _) => minute(t),
        (None, Some(hold)) => format!("on hold {}", span(hold.duration)),
        (None, None) => "-".into(),
    }
}

fn expires_field(q: &UserQuota, now: i64) -> String {
    match (q.expires_at, q.on_hold) {
        (Some(t), _) => format!("{} ({})", timestamp(t), until(now, t)),
        (None, Some(hold)) => format!("{} after first use", span(hold.duration)),
        (None, None) => "never".into(),
    }
}

/// The hold while it waits for first use (`-` once its clock started: the expiry says when).
fn on_hold(q: &UserQuota, now: i64) -> String {
    let Some(hold) = q.on_hold.filter(|_| q.expires_at.is_none()) else {
        return "-".into();
    };
    let duration = span(hold.duration);
    match hold.timeout_at {
        Some(t) => format!(
            "until first use or {} ({}), then {duration}",
            timestamp(t),
            until(now, t)
        ),
        None => format!("until first use, then {duration}"),
    }
}
