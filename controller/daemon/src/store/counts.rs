//! Counts the admin views show (`servers list`, `status`), aggregated in SQL: a view of 5,000
//! hosts or 100,000 users reads a few numbers, never every user row.

use std::collections::HashMap;

use super::Store;
use super::error::Result;

/// How many users there are, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserTotals {
    pub total: u64,
    /// Status `active` (`on_hold`, `suspended`, `limited` and `expired` are not).
    pub active: u64,
}

impl Store {
    /// Every user, and the active ones, in one aggregate query.
    pub async fn user_totals(&self) -> Result<UserTotals> {
        let mut tx = self.read().await?;
        let (total, active): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(status = 'active'), 0) FROM users")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(UserTotals {
            total: u64::try_from(total).unwrap_or_default(),
            active: u64::try_from(active).unwrap_or_default(),
        })
    }

    /// Active users placed on each host (by host id, every host present): those placed on all
    /// hosts plus the host's named ones, in one aggregate query.
    pub async fn active_users_per_host(&self) -> Result<HashMap<String, u64>> {
        let mut tx = self.read().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT h.id, \
               (SELECT COUNT(*) FROM users WHERE all_servers AND status = 'active') \
               + COALESCE(n.users, 0) \
             FROM hosts h LEFT JOIN \
               (SELECT us.host_id, COUNT(*) AS users FROM user_servers us \
                JOIN users u ON u.id = us.user_id \
                WHERE u.status = 'active' AND NOT u.all_servers GROUP BY us.host_id) n \
             ON n.host_id = h.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (id, u64::try_from(n).unwrap_or_default()))
            .collect())
    }
}
