//! The live fleet: which agents are connected, the deltas queued for each and the acks they
//! returned. The store holds what *should* be; this holds who is *listening*.
//!
//! Ordering: every mutation runs under [`Fleet::change_lock`] from the store transaction until
//! its pushes are queued, and a connecting session reads its full state and registers under the
//! same lock. So a session sees each generation exactly once: either inside its full state or as
//! a queued push after it (or, when its backlog overflowed, inside the full state of the resync
//! that replaced the backlog: see [`crate::backlog`]).
//!
//! Each link also holds what its agent last reported about itself ([`HostVitals`]): in memory
//! only, like the feature health, because it describes the live session. What must outlive a
//! session (failing resources, events) is in the store (`store::health`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;
use vpn_shared::proto::admin::{HostApply, HostApplyState, HostVitals, LAST_APPLY};
use vpn_shared::proto::{Outcome, ResourceResult};

use crate::backlog::{Backlog, Next, Queued};
use crate::store::HostPush;
use crate::webhooks::Webhooks;

/// What a host last acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckState {
    pub generation: u64,
    pub results: Vec<ResourceResult>,
}

struct Link {
    /// Distinguishes a reconnected session from the one it replaced.
    session: u64,
    /// Pushes and commands for the session task. Never blocks: pushes are produced under the
    /// change lock and must never wait on a slow agent; bounded by turning an overflowing
    /// backlog into one resync (see [`crate::backlog`]).
    backlog: Arc<Backlog>,
    acked: watch::Receiver<AckState>,
    /// Missing host features the agent reported, already bounded.
    health: Vec<String>,
    /// The agent's last report in this session.
    vitals: Option<HostVitals>,
}

pub struct Fleet {
    links: Mutex<HashMap<String, Link>>,
    /// The health each host last reported, kept across its sessions so that only a change is
    /// logged (an agent re-sends its health on every connect).
    reported: Mutex<HashMap<String, Vec<String>>>,
    next_session: AtomicU64,
    /// Queued changes per session beyond which its backlog becomes one resync.
    backlog_limit: usize,
    /// Serializes mutations with session registration (see the module docs).
    pub change_lock: tokio::sync::Mutex<()>,
    /// The webhook queues and workers, started on first use by [`crate::webhooks::hub`]
    /// (they need the controller, which owns this fleet).
    pub webhooks: OnceLock<Webhooks>,
}

/// Handed to a session when it registers.
pub struct Registration {
    pub session: u64,
    pub backlog: Arc<Backlog>,
    pub acked: watch::Sender<AckState>,
    /// An older session of the same host was replaced: the host never went offline.
    pub replaced: bool,
}

/// Most containers kept per host's vitals.
pub const MAX_CONTAINERS: usize = 1_000;

/// How a host's health moved with one result set: the failing count before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// 0 → N: an online host degraded.
    Degraded,
    /// N → 0.
    Recovered,
}

/// The transition, if any, from `before` to `after` failing resources.
pub fn transition(before: u32, after: u32) -> Option<Transition> {
    match (before, after) {
        (0, 1..) => Some(Transition::Degraded),
        (1.., 0) => Some(Transition::Recovered),
        _ => None,
    }
}

/// Most health lines kept per host; the rest are summarised in one more line.
pub const MAX_HEALTH_LINES: usize = 32;
/// Longest health line kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_HEALTH_LINE: usize = 240;

/// Bounds what an agent reported as missing: at most [`MAX_HEALTH_LINES`] lines of at most
/// [`MAX_HEALTH_LINE`] bytes, plus a line saying how many were left out. An agent cannot make
/// the controller hold (or log, or show) more than that.
pub fn bound_health(mut missing: Vec<String>) -> Vec<String> {
    let extra = missing.len().saturating_sub(MAX_HEALTH_LINES);
    missing.truncate(MAX_HEALTH_LINES);
    for line in &mut missing {
        if line.len() > MAX_HEALTH_LINE {
            let mut cut = MAX_HEALTH_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [cut]");
        }
    }
    if extra > 0 {
        missing.push(format!("... and {extra} more not kept"));
    }
    missing
}

impl Fleet {
    /// An empty fleet whose session backlogs hold at most `backlog_limit` queued changes.
    pub fn new(backlog_limit: usize) -> Fleet {
        Fleet {
            links: Mutex::default(),
            reported: Mutex::default(),
            next_session: AtomicU64::new(0),
            backlog_limit,
            change_lock: tokio::sync::Mutex::new(()),
            webhooks: OnceLock::new(),
        }
    }

    /// Registers a session for `host_id`, replacing (and revoking) any older one.
    /// Call with `change_lock` held.
    pub fn register(&self, host_id: &str, applied: AckState) -> Registration {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let backlog = Arc::new(Backlog::new(self.backlog_limit));
        let (ack_tx, ack_rx) = watch::channel(applied);
        let old = self.lock().insert(
            host_id.to_string(),
            Link {
                session,
                backlog: backlog.clone(),
                acked: ack_rx,
                health: Vec::new(),
                vitals: None,
            },
        );
        let replaced = old.is_some();
        if let Some(old) = old {
            old.backlog.end(Next::Replaced);
        }
        Registration {
            session,
            backlog,
            acked: ack_tx,
            replaced,
        }
    }

    /// Forgets a session if it is still the current one for the host. True when it was: the
    /// host is offline now (false for a session replaced or revoked before it ended).
    pub fn unregister(&self, host_id: &str, session: u64) -> bool {
        let mut links = self.lock();
        if links.get(host_id).is_some_and(|l| l.session == session) {
            links.remove(host_id);
            return true;
        }
        false
    }

    /// Keeps what a session's agent reported last (containers bounded by [`MAX_CONTAINERS`]).
    pub fn set_vitals(&self, host_id: &str, session: u64, mut vitals: HostVitals) {
        vitals.containers.truncate(MAX_CONTAINERS);
        if let Some(link) = self
            .lock()
            .get_mut(host_id)
            .filter(|l| l.session == session)
        {
            link.vitals = Some(vitals);
        }
    }

    /// An online host's last vitals.
    pub fn vitals(&self, host_id: &str) -> Option<HostVitals> {
        self.lock().get(host_id).and_then(|l| l.vitals.clone())
    }

    /// Records what the host's agent reported about its features (bounded by
    /// [`bound_health`] first). Returns the bounded lines if they differ from what this host
    /// reported last, in this session or an earlier one: the caller logs only a change.
    pub fn set_health(
        &self,
        host_id: &str,
        session: u64,
        missing: Vec<String>,
    ) -> Option<Vec<String>> {
        let missing = bound_health(missing);
        {
            let mut links = self.lock();
            let link = links.get_mut(host_id).filter(|l| l.session == session)?;
            link.health = missing.clone();
        }
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let previous = reported.insert(host_id.to_string(), missing.clone());
        (previous.as_ref() != Some(&missing)).then_some(missing)
    }

    /// Missing features of an online host (empty when offline).
    pub fn health(&self, host_id: &str) -> Vec<String> {
        self.lock()
            .get(host_id)
            .map(|l| l.health.clone())
            .unwrap_or_default()
    }

    /// What went wrong on an online host in the apply it last acked, for `servers show`: each
    /// failed host-wide resource (`host/state`, say: the agent could not persist the state, so
    /// a restart would re-apply an older one) in full, and a count of the other failures.
    pub fn ack_problems(&self, host_id: &str) -> Vec<String> {
        let links = self.lock();
        let Some(link) = links.get(host_id) else {
            return Vec::new();
        };
        let acked = link.acked.borrow();
        let mut problems = Vec::new();
        let mut others = 0usize;
        for r in &acked.results {
            let Outcome::Error(message) = &r.outcome else {
                continue;
            };
            if r.resource.starts_with("host/") && problems.len() < MAX_HEALTH_LINES {
                problems.push(format!("{LAST_APPLY}{}: {message}", r.resource));
            } else {
                others += 1;
            }
        }
        if others > 0 {
            problems.push(format!(
                "{LAST_APPLY}{others} other resource(s) failed (see `--wait` or the agent's log)"
            ));
        }
        bound_health(problems)
    }

    /// How many changes are queued for a host's session (its backlog's weight); `None` when
    /// the host is offline.
    pub fn queued(&self, host_id: &str) -> Option<usize> {
        self.lock().get(host_id).map(|l| l.backlog.weight())
    }

    pub fn is_online(&self, host_id: &str) -> bool {
        self.lock().contains_key(host_id)
    }

    pub fn online_count(&self) -> usize {
        self.lock().len()
    }

    /// Queues pushes to the connected hosts; offline hosts get their state on reconnect.
    /// Call with `change_lock` held.
    pub fn dispatch(&self, pushes: &[HostPush]) {
        let links = self.lock();
        for push in pushes {
            let Some(link) = links.get(&push.host_id) else {
                continue;
            };
            if let Queued::Overflowed { dropped } = link.backlog.push(push.clone()) {
                warn!(
                    host_id = %push.host_id,
                    dropped,
                    limit = self.backlog_limit,
                    "agent is behind: its push backlog was replaced by one full resync"
                );
            }
        }
    }

    /// Closes a removed host's session at once.
    pub fn revoke(&self, host_id: &str) {
        if let Some(link) = self.lock().remove(host_id) {
            link.backlog.end(Next::Revoke);
        }
        self.reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host_id);
    }

    /// Waits until every online host named in `pushes` acked its generation, or `timeout`.
    /// `names` maps host ids to names for the report.
    pub async fn wait_for_acks(
        &self,
        pushes: &[HostPush],
        names: &HashMap<String, String>,
        timeout: Duration,
    ) -> Vec<HostApply> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waits = Vec::new();
        for push in pushes {
            let acked = self.lock().get(&push.host_id).map(|l| l.acked.clone());
            let name = names
                .get(&push.host_id)
                .cloned()
                .unwrap_or_else(|| push.host_id.clone());
            waits.push(wait_one(name, push.generation, acked, deadline));
        }
        futures_util::future::join_all(waits).await
    }

    /// The generation an online host last acked.
    pub fn acked_generation(&self, host_id: &str) -> Option<u64> {
        self.lock()
            .get(host_id)
            .map(|l| l.acked.borrow().generation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        // A panic while holding this map cannot leave it inconsistent (single inserts/removes).
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The report for pushes that were not waited for.
pub fn not_waited(pushes: &[HostPush], names: &HashMap<String, String>) -> Vec<HostApply> {
    pushes
        .iter()
        .map(|p| HostApply {
            server: names.get(&p.host_id).cloned().unwrap_or_default(),
            generation: p.generation,
            state: HostApplyState::NotWaited,
        })
        .collect()
}

async fn wait_one(
    server: String,
    generation: u64,
    acked: Option<watch::Receiver<AckState>>,
    deadline: tokio::time::Instant,
) -> HostApply {
    let pending = |server| HostApply {
        server,
        generation,
        state: HostApplyState::Pending,
    };
    let Some(mut acked) = acked else {
        return pending(server);
    };
    let reached = tokio::time::timeout_at(deadline, acked.wait_for(|a| a.generation >= generation))
        .await
        .ok()
        .and_then(|r| r.ok().map(|a| a.clone()));
    let Some(ack) = reached else {
        return pending(server);
    };
    let failed: Vec<String> = ack
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            vpn_shared::proto::Outcome::Error(m) => Some(format!("{}: {m}", r.resource)),
            vpn_shared::proto::Outcome::Ok => None,
        })
        .collect();
    HostApply {
        server,
        generation,
        state: if failed.is_empty() {
            HostApplyState::Applied
        } else {
            HostApplyState::Failed(failed)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crossing_zero_is_a_transition() {
        assert_eq!(transition(0, 3), Some(Transition::Degraded));
        assert_eq!(transition(3, 0), Some(Transition::Recovered));
        assert_eq!(transition(3, 5), None);
        assert_eq!(transition(0, 0), None);
    }
}
