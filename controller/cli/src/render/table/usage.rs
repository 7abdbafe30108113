//! `users usage` in the `table` format: one row per user (and server, service or day), sizes in
//! IEC units right-aligned, a `(total)` row, and the moment counting started.
//!
//! `UNDIRECTED` holds bytes whose direction the engine does not report (Shadowsocks' ssmanager
//! gives one total per port), so `TOTAL` = `UP` + `DOWN` + `UNDIRECTED`; the controller sends
//! all four and this view shows them as sent.

use vpn_shared::proto::admin::{UsageBy, UsageInfo, UsageRow};
use vpn_shared::size;

use super::grid_aligned;
use crate::render::{Opts, timestamp};

/// The total row's label; parentheses cannot be in a user name, so it is never a user's.
const TOTAL: &str = "(total)";

pub fn usage(u: &UsageInfo, opts: &Opts) -> String {
    let since = match u.since {
        Some(t) => format!("since {}", timestamp(t)),
        None => "in all recorded traffic".to_owned(),
    };
    if u.rows.is_empty() {
        return match u.since {
            Some(t) => format!("no traffic recorded since {}\n", timestamp(t)),
            None => "no traffic recorded\n".to_owned(),
        };
    }
    let key = match u.by {
        UsageBy::User => None,
        UsageBy::Server => Some("SERVER"),
        UsageBy::Service => Some("SERVICE"),
        UsageBy::Day => Some("DAY"),
    };
    let mut header = vec!["USER"];
    header.extend(key);
    let first_size = header.len();
    header.extend(["UP", "DOWN", "UNDIRECTED", "TOTAL"]);

    let mut rows: Vec<Vec<String>> = u.rows.iter().map(|r| row(r, key.is_some())).collect();
    let sum = |f: fn(&UsageRow) -> u64| {
        let total: u128 = u.rows.iter().map(|r| u128::from(f(r))).sum();
        u64::try_from(total).unwrap_or(u64::MAX)
    };
    let mut total = vec![TOTAL.to_owned()];
    total.extend(key.map(|_| String::new()));
    total.extend(
        [
            sum(|r| r.up),
            sum(|r| r.down),
            sum(|r| r.undirected),
            sum(|r| r.total),
        ]
        .map(size::show),
    );
    rows.push(total);

    let right: Vec<usize> = (first_size..header.len()).collect();
    let mut out = grid_aligned(Some(&header), rows, &right);
    let users = distinct_users(&u.rows);
    let plural = if users == 1 { "" } else { "s" };
    out.push_str(&format!("{users} user{plural}, {since}\n"));
    if opts.hints && u.rows.iter().any(|r| r.undirected > 0) {
        out.push_str(
            "UNDIRECTED: bytes counted without a direction (Shadowsocks reports one total per \
             port)\n",
        );
    }
    out
}

fn row(r: &UsageRow, keyed: bool) -> Vec<String> {
    let mut row = vec![r.user.clone()];
    if keyed {
        row.push(r.key.clone().unwrap_or_else(|| "-".into()));
    }
    row.extend([r.up, r.down, r.undirected, r.total].map(size::show));
    row
}

fn distinct_users(rows: &[UsageRow]) -> usize {
    let users: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.user.as_str()).collect();
    users.len()
}
