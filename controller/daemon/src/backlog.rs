//! One session's backlog: the pushes queued for it and the commands that end it.
//!
//! Pushes are queued under the change lock, so queuing never waits on the agent. But an agent
//! that applies slowly (or a peer that stopped reading) must not make the controller keep every
//! change since: once the queued changes pass a bound, the whole backlog is replaced by one
//! full resync. That is safe for the same reason a resync drops queued pushes: the session
//! re-reads its full state under the change lock, after every push that was dropped was
//! produced (each was produced under that lock before the session took it), so the state covers
//! them all. Memory per host is then bounded by the limit, whatever happens to the fleet.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use vpn_shared::model::Change;

use crate::store::HostPush;

/// What the session should do next, most urgent first.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The host was removed: refuse and close.
    Revoke,
    /// A newer session of the same host registered: close quietly.
    Replaced,
    /// The backlog overflowed and was dropped: send the full state again.
    Resync,
    /// Pushes to send, oldest first.
    Pushes(Vec<HostPush>),
}

#[derive(Debug, Default)]
struct State {
    pushes: VecDeque<HostPush>,
    /// Sum of [`weight`] over `pushes`.
    weight: usize,
    resync: bool,
    end: Option<Next>,
}

/// A single-consumer queue that never blocks its producers.
#[derive(Debug)]
pub struct Backlog {
    state: Mutex<State>,
    /// Wakes the session; a wake-up with nobody waiting is kept for the next wait.
    wake: Notify,
    /// Queued changes (by [`weight`]) beyond which the backlog becomes one resync.
    limit: usize,
}

/// What a push costs to hold: one per change, a firewall change by its entries (a
/// `SetFirewall` carries the host's whole block list).
pub fn weight(push: &HostPush) -> usize {
    let changes: usize = push
        .changes
        .iter()
        .map(|c| match c {
            Change::SetFirewall(f) => f.blocked.len().max(1),
            _ => 1,
        })
        .sum();
    changes.max(1)
}

/// What [`Backlog::push`] did with a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Queued,
    /// The bound was passed: the backlog (this push included) was replaced by a resync.
    Overflowed {
        dropped: usize,
    },
    /// A resync is already due and will cover this push, or the session is ending.
    Covered,
    /// The push rewrites most of the host ([`HostPush::full`]): the backlog (this push
    /// included) was replaced by a resync, which sends less than the push would.
    FullState,
}

impl Backlog {
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a push. Call with the change lock held (see the module docs).
    pub fn push(&self, push: HostPush) -> Queued {
        let outcome = {
            let mut s = self.lock();
            if s.resync || s.end.is_some() {
                Queued::Covered
            } else if push.full {
                s.pushes.clear();
                s.weight = 0;
                s.resync = true;
                Queued::FullState
            } else {
                let w = weight(&push);
                if s.weight + w > self.limit {
                    let dropped = s.pushes.len() + 1;
                    s.pushes.clear();
                    s.weight = 0;
                    s.resync = true;
                    Queued::Overflowed { dropped }
                } else {
                    s.weight += w;
                    s.pushes.push_back(push);
                    Queued::Queued
                }
            }
        };
        self.wake.notify_one();
        outcome
    }

    /// Tells the session to end (`Next::Revoke` or `Next::Replaced`); pushes no longer matter.
    pub fn end(&self, why: Next) {
        {
            let mut s = self.lock();
            s.pushes.clear();
            s.weight = 0;
            s.end.get_or_insert(why);
        }
        self.wake.notify_one();
    }

    /// The next thing to do, if any, without waiting.
    pub fn take(&self) -> Option<Next> {
        let mut s = self.lock();
        if let Some(end) = s.end.take() {
            // Ending is final: keep answering it.
            s.end = Some(match end {
                Next::Revoke => Next::Revoke,
                _ => Next::Replaced,
            });
            return Some(end);
        }
        if std::mem::take(&mut s.resync) {
            return Some(Next::Resync);
        }
        if s.pushes.is_empty() {
            return None;
        }
        s.weight = 0;
        Some(Next::Pushes(s.pushes.drain(..).collect()))
    }

    /// Waits for the next thing to do.
    pub async fn next(&self) -> Next {
        loop {
            if let Some(next) = self.take() {
                return next;
            }
            self.wake.notified().await;
        }
    }

    /// Drops what a full state read now covers (queued pushes, a due resync). Call with the
    /// change lock held, right after reading the state. Returns why to end instead, if the
    /// session was revoked or replaced meanwhile.
    pub fn covered_by_full_state(&self) -> Option<Next> {
        let mut s = self.lock();
        s.pushes.clear();
        s.weight = 0;
        s.resync = false;
        s.end.as_ref().map(|e| match e {
            Next::Revoke => Next::Revoke,
            _ => Next::Replaced,
        })
    }

    /// The queued weight: what this session holds in memory for its agent.
    pub fn weight(&self) -> usize {
        self.lock().weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpn_shared::model::FirewallSpec;

    fn push(generation: u64, changes: usize) -> HostPush {
        HostPush {
            host_id: "h".into(),
            base_generation: generation - 1,
            generation,
            changes: (0..changes)
                .map(|i| Change::RemoveUser {
                    name: format!("u{i}"),
                })
                .collect(),
            step: Default::default(),
            full: false,
        }
    }

    #[test]
    fn pushes_come_out_in_order_and_together() {
        let b = Backlog::new(100);
        assert_eq!(b.push(push(1, 2)), Queued::Queued);
        assert_eq!(b.push(push(2, 3)), Queued::Queued);
        assert_eq!(b.weight(), 5);
        let Some(Next::Pushes(got)) = b.take() else {
            panic!("pushes expected");
        };
        assert_eq!(got.iter().map(|p| p.generation).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((b.take(), b.weight()), (None, 0));
    }

    #[test]
    fn past_the_bound_the_backlog_becomes_one_resync() {
        let b = Backlog::new(10);
        for g in 1..=5 {
            assert_eq!(b.push(push(g, 2)), Queued::Queued);
        }
        assert_eq!(b.push(push(6, 1)), Queued::Overflowed { dropped: 6 });
        assert_eq!(b.weight(), 0);
        // Later pushes are covered by the resync's state read.
        for g in 7..100 {
            assert_eq!(b.push(push(g, 5)), Queued::Covered);
            assert_eq!(b.weight(), 0);
        }
        assert_eq!(b.take(), Some(Next::Resync));
        assert_eq!(b.take(), None);
        // After the resync, pushes queue again.
        assert_eq!(b.push(push(100, 1)), Queued::Queued);
        assert!(matches!(b.take(), Some(Next::Pushes(p)) if p.len() == 1));
    }

    #[test]
    fn a_block_list_weighs_its_entries() {
        let fw = HostPush {
            host_id: "h".into(),
            base_generation: 0,
            generation: 1,
            changes: vec![Change::SetFirewall(FirewallSpec {
                blocked: (0..50).map(|i| format!("10.0.0.{i}/32")).collect(),
            })],
            step: Default::default(),
            full: false,
        };
        assert_eq!(weight(&fw), 50);
        let b = Backlog::new(40);
        assert_eq!(b.push(fw), Queued::Overflowed { dropped: 1 });
    }

    #[test]
    fn a_push_that_rewrites_the_host_becomes_a_resync() {
        let b = Backlog::new(100);
        assert_eq!(b.push(push(1, 2)), Queued::Queued);
        let whole = HostPush {
            full: true,
            ..push(2, 0)
        };
        assert_eq!(b.push(whole), Queued::FullState);
        assert_eq!(b.push(push(3, 1)), Queued::Covered);
        assert_eq!((b.take(), b.weight()), (Some(Next::Resync), 0));
    }

    #[test]
    fn an_end_wins_over_everything_and_stays() {
        let b = Backlog::new(10);
        b.push(push(1, 1));
        b.end(Next::Revoke);
        assert_eq!(b.push(push(2, 1)), Queued::Covered);
        assert_eq!(b.take(), Some(Next::Revoke));
        assert_eq!(b.take(), Some(Next::Revoke));
        assert_eq!(b.covered_by_full_state(), Some(Next::Revoke));
    }

    #[test]
    fn a_full_state_read_covers_the_backlog() {
        let b = Backlog::new(3);
        b.push(push(1, 2));
        b.push(push(2, 2));
        assert_eq!(b.covered_by_full_state(), None);
        assert_eq!((b.take(), b.weight()), (None, 0));
    }
}
