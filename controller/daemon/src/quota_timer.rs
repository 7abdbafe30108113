//! The quota timer: statuses that change by time alone (SPEC §2.6) — a limited user's reset
//! brings them back, an expiry or a hold's timeout passes. The store knows each user's next
//! such moment (`user_quota.next_check`); this task sleeps until the earliest, at most a
//! minute (another controller process may have written an earlier one), and wakes early when
//! an operator changed a quota. The decisions are the store's and the pure core's; this is
//! only the clock.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use crate::server::{Controller, now};

/// Longest sleep between two looks at the store.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Pause after the store failed, before trying again.
const RETRY: Duration = Duration::from_secs(5);

/// Starts the timer; it ends when the controller is dropped.
pub fn start(ctl: &Arc<Controller>) {
    let changes = ctl.allowance_changes();
    tokio::spawn(run(Arc::downgrade(ctl), changes));
}

async fn run(ctl: Weak<Controller>, mut changes: tokio::sync::watch::Receiver<u64>) {
    loop {
        let wait = match ctl.upgrade() {
            None => return,
            Some(ctl) => match sweep(&ctl).await {
                Ok(next) => next.map_or(MAX_SLEEP, |at| {
                    Duration::from_secs(u64::try_from(at - now()).unwrap_or(0)).min(MAX_SLEEP)
                }),
                Err(e) => {
                    warn!(error = %e, "quota timer: cannot read the store; trying again");
                    RETRY
                }
            },
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Applies every check that is due; returns the next one.
async fn sweep(ctl: &Controller) -> Result<Option<i64>, crate::store::StoreError> {
    let due = ctl.store.next_quota_check().await?;
    if due.is_some_and(|at| at <= now()) {
        let _guard = ctl.fleet.change_lock.lock().await;
        let m = ctl.store.quota_sweep(now()).await?;
        for c in &m.value {
            info!(user = %c.user, from = %c.from, to = %c.to, "quota: status changed by time");
        }
        if !m.value.is_empty() {
            // Before the pushes: a user coming back must reach its hosts with its new
            // allowance, not be cut off again by the old one.
            ctl.allowances_changed();
            let names = m.value.iter().map(|c| c.user.clone()).collect();
            ctl.watch.publish(crate::subscribe::Touched::Users(names));
        }
        ctl.fleet.dispatch(&m.pushes);
    }
    ctl.store.next_quota_check().await
}
