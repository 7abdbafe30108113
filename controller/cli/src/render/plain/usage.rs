//! `users usage` in the `plain` format: raw byte counts for scripts, no total line.

use vpn_shared::proto::admin::UsageRow;

/// user, key (server, service or day; `-` by user), up, down, undirected, total (bytes).
pub fn row(r: &UsageRow) -> Vec<String> {
    vec![
        r.user.clone(),
        r.key.clone().unwrap_or_else(|| "-".into()),
        r.up.to_string(),
        r.down.to_string(),
        r.undirected.to_string(),
        r.total.to_string(),
    ]
}
