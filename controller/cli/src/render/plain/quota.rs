//! Users with their quotas in the `plain` format: today's `users` record with the quota
//! appended, the same line for `users list` and `users show`.

use vpn_shared::proto::admin::UserDetail;

use super::{opt, user as user_info};

/// The `users` record, then: bytes used this period, data limit (bytes), reset period
/// (`none`, `day`, `week`, `month`, `year`), period start, next reset, expiry, on-hold duration
/// (seconds), on-hold timeout, first use (unix seconds), reason. Absent values are `-`; the
/// reason is last because it is free text.
pub fn user(d: &UserDetail) -> Vec<String> {
    let q = &d.quota;
    let mut rec = user_info(&d.user);
    rec.extend([
        q.used.to_string(),
        opt(q.data_limit),
        q.reset.as_str().into(),
        opt(q.period_start),
        opt(q.next_reset),
        opt(q.expires_at),
        opt(q.on_hold.map(|h| h.duration)),
        opt(q.on_hold.and_then(|h| h.timeout_at)),
        opt(q.first_use),
        opt(q.reason.as_deref()),
    ]);
    rec
}
