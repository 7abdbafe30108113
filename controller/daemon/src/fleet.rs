//! The live fleet: which agents are connected, the deltas queued for each and the acks they
//! returned. The store holds what *should* be; this holds who is *listening*.
//!
//! Ordering: every mutation runs under [`Fleet::change_lock`] from the store transaction until
//! its pushes are queued, and a connecting session reads its full state and registers under the
//! same lock. So a session sees each generation exactly once: either inside its full state or as
//! a queued push after it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vpn_shared::proto::ResourceResult;
use vpn_shared::proto::admin::{HostApply, HostApplyState};

use crate::store::HostPush;

/// What a host last acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckState {
    pub generation: u64,
    pub results: Vec<ResourceResult>,
}

/// What a session task is told by the rest of the controller.
#[derive(Debug)]
pub enum SessionCommand {
    Push(HostPush),
    /// The host was removed: refuse and close.
    Revoke,
    /// A newer session of the same host registered: close quietly.
    Replaced,
}

struct Link {
    /// Distinguishes a reconnected session from the one it replaced.
    session: u64,
    /// Queue to the session task; unbounded because pushes are produced under the change lock
    /// and must never wait on a slow agent.
    tx: mpsc::UnboundedSender<SessionCommand>,
    acked: watch::Receiver<AckState>,
    /// Missing host features the agent reported.
    health: Vec<String>,
}

#[derive(Default)]
pub struct Fleet {
    links: Mutex<HashMap<String, Link>>,
    next_session: AtomicU64,
    /// Serializes mutations with session registration (see the module docs).
    pub change_lock: tokio::sync::Mutex<()>,
}

/// Handed to a session when it registers.
pub struct Registration {
    pub session: u64,
    pub rx: mpsc::UnboundedReceiver<SessionCommand>,
    pub acked: watch::Sender<AckState>,
}

impl Fleet {
    /// Registers a session for `host_id`, replacing (and revoking) any older one.
    /// Call with `change_lock` held.
    pub fn register(&self, host_id: &str, applied: AckState) -> Registration {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ack_tx, ack_rx) = watch::channel(applied);
        let old = self.lock().insert(
            host_id.to_string(),
            Link {
                session,
                tx,
                acked: ack_rx,
                health: Vec::new(),
            },
        );
        if let Some(old) = old {
            let _ = old.tx.send(SessionCommand::Replaced);
        }
        Registration {
            session,
            rx,
            acked: ack_tx,
        }
    }

    /// Forgets a session if it is still the current one for the host.
    pub fn unregister(&self, host_id: &str, session: u64) {
        let mut links = self.lock();
        if links.get(host_id).is_some_and(|l| l.session == session) {
            links.remove(host_id);
        }
    }

    /// Records what the host's agent reported about its features.
    pub fn set_health(&self, host_id: &str, session: u64, missing: Vec<String>) {
        if let Some(link) = self.lock().get_mut(host_id)
            && link.session == session
        {
            link.health = missing;
        }
    }

    /// Missing features of an online host (empty when offline).
    pub fn health(&self, host_id: &str) -> Vec<String> {
        self.lock()
            .get(host_id)
            .map(|l| l.health.clone())
            .unwrap_or_default()
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
            if let Some(link) = links.get(&push.host_id) {
                let _ = link.tx.send(SessionCommand::Push(push.clone()));
            }
        }
    }

    /// Closes a removed host's session at once.
    pub fn revoke(&self, host_id: &str) {
        if let Some(link) = self.lock().remove(host_id) {
            let _ = link.tx.send(SessionCommand::Revoke);
        }
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
