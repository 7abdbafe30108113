//! The pure delta core: engine counters in, counted bytes and baseline changes out. No IO and
//! no clock of its own (the caller passes [`Now`]), so every rule below is unit- and
//! property-tested.
//!
//! # The rules (SPEC §2.6)
//!
//! Per (service, user id) the ledger keeps a [`Base`]line: what the engine's counter read the
//! last time its bytes went into the ledger. A reading `r` against baseline `b`:
//!
//! 1. `r ≥ b` (every direction): the counter went on; `r − b` was counted.
//! 2. `r < b` in any direction: the counter started again (a re-added port, a restarted engine,
//!    a wrap). `r` was counted since then; what the old counter held after the last read is
//!    gone with it. Never negative.
//! 3. The engine's uptime is smaller than the time since the last read (less [`RESTART_SLACK`]),
//!    or smaller than the uptime of the last read: the engine restarted, every counter of the
//!    service started from zero, so each reading counts whole (also when it is already larger
//!    than its old baseline, which rule 2 alone would miss).
//! 4. The agent itself restarted a counter since the last read (it (re)added an ssmanager port,
//!    or (re)created the service's container): [`Reset`]s, applied as soon as the applier
//!    reports them. The counter's baseline becomes [`Base::Zero`]: its next reading counts whole.
//!
//! **First reading** of a user with no baseline:
//!
//! - in a service this ledger has *watched* (read before, or whose container the agent itself
//!   created): baseline zero. The engine instance is the one read last time and this counter was
//!   not in that reading, so everything it holds was counted after it (a new user, a port added,
//!   a user with no traffic until now);
//! - in a service the ledger has never watched (a new ledger beside engines that already run: a
//!   first start after an upgrade, or a ledger lost and made again): the reading is *adopted* as
//!   the baseline and counts nothing. Those bytes were counted before this ledger existed, and
//!   whether anything else ever reported them is unknown: undercounting once is the price of
//!   never counting twice.
//!
//! A reading of another kind than its baseline (directional against total: a driver changed its
//! source) is adopted too.
//!
//! **Disappearing:** a user missing from a reading keeps its baseline while the engine lives:
//! Xray keeps a removed user's counter in memory and continues it when the user is added back,
//! so a dropped baseline would count that old total again. A baseline goes when the engine
//! restarts (rule 3), when the agent closes the user's port (a [`Reset::Forget`]: ssmanager
//! drops the port's counter), when the user id leaves the host's state entirely (ids are UUIDs:
//! a deleted user never comes back), and with its service when the service leaves the state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drivers::Bytes;

/// Uptime is whole seconds and the reading took a round trip.
pub const RESTART_SLACK: Duration = Duration::from_secs(2);

/// A counter's value, as the engine gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Count {
    /// `up` from the user, `down` to the user.
    Directional { up: u64, down: u64 },
    /// Both directions together (ssmanager).
    Total(u64),
}

impl Count {
    fn zero_like(self) -> Count {
        match self {
            Count::Directional { .. } => Count::Directional { up: 0, down: 0 },
            Count::Total(_) => Count::Total(0),
        }
    }

    pub fn total(self) -> u64 {
        match self {
            Count::Directional { up, down } => up.saturating_add(down),
            Count::Total(t) => t,
        }
    }

    pub fn is_zero(self) -> bool {
        self.total() == 0
    }
}

impl From<Bytes> for Count {
    fn from(b: Bytes) -> Count {
        match b {
            Bytes::Directional { up, down } => Count::Directional { up, down },
            Bytes::Total(t) => Count::Total(t),
        }
    }
}

/// Where a counter's bytes are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    /// The value of the last reading that went into the ledger.
    Known(Count),
    /// The counter started again from zero (the agent restarted it); any kind.
    Zero,
}

/// What the ledger knows of one service's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBase {
    /// Read before by this ledger, or its container created by the agent: a counter missing
    /// from the baselines was born after the last reading and counts from zero.
    pub watched: bool,
    /// The engine's uptime at the last reading, seconds, when the engine tells.
    pub uptime_s: Option<u64>,
    /// Agent wall clock of the last reading, Unix milliseconds: an entry's `from`.
    pub read_at_ms: i64,
    pub users: BTreeMap<String, Base>,
    /// Monotonic time of the last reading in this process (not persisted: after an agent
    /// restart the wall clock stands in).
    #[serde(skip)]
    pub read_mono: Option<Duration>,
}

/// The clock of one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub unix_ms: i64,
    /// Monotonic, from any origin fixed for the process.
    pub mono: Duration,
}

/// One service's counters, as read, keyed by user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub service: String,
    pub uptime: Option<Duration>,
    pub users: Vec<(String, Count)>,
}

/// A counter the agent itself restarted or ended, from what the applier did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reset {
    /// The service's container was created, recreated or started: every counter is new.
    Service(String),
    /// The user's counter starts again from zero (a port (re)added).
    User { service: String, user: String },
    /// The user's counter is gone (a port closed).
    Forget { service: String, user: String },
}

/// One baseline change; a record on disk carries the changes of its reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A service's last reading: uptime and clock.
    Read {
        service: String,
        uptime_s: Option<u64>,
        at_ms: i64,
    },
    User {
        service: String,
        user: String,
        base: Option<Base>,
    },
    /// Every counter of the service is new (its baselines go; it is watched).
    ResetService { service: String, at_ms: i64 },
    /// The service left the state.
    DropService { service: String },
}

/// Bytes one user moved through one service between two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub service: String,
    pub user: String,
    pub counted: Count,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What one round of readings gives: the ledger writes `deltas` and `changes` in one record,
/// then [`Baselines::apply`]s the changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub deltas: Vec<Delta>,
    pub changes: Vec<Change>,
    /// Services whose engine restarted since the last reading (for the log).
    pub restarted: Vec<String>,
}

/// Every service's baselines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baselines {
    pub services: BTreeMap<String, ServiceBase>,
}

impl Baselines {
    /// The deltas and baseline changes of `readings`. Services of the state that were not read
    /// (their engine did not answer) keep their baselines; `state_services` and `state_users`
    /// (ids) are what the host's state holds, so baselines of anything else go.
    pub fn observe(
        &self,
        readings: &[Reading],
        state_services: &BTreeSet<String>,
        state_users: &BTreeSet<String>,
        now: Now,
    ) -> Observation {
        let mut obs = Observation::default();
        for reading in readings {
            self.observe_one(reading, now, &mut obs);
        }
        for (name, service) in &self.services {
            if !state_services.contains(name) {
                obs.changes.push(Change::DropService {
                    service: name.clone(),
                });
                continue;
            }
            for user in service.users.keys().filter(|u| !state_users.contains(*u)) {
                obs.changes.push(Change::User {
                    service: name.clone(),
                    user: user.clone(),
                    base: None,
                });
            }
        }
        obs
    }

    fn observe_one(&self, reading: &Reading, now: Now, obs: &mut Observation) {
        let prev = self.services.get(&reading.service);
        let restarted = prev.is_some_and(|p| engine_restarted(p, reading.uptime, now));
        if restarted {
            obs.restarted.push(reading.service.clone());
            obs.changes.push(Change::ResetService {
                service: reading.service.clone(),
                at_ms: now.unix_ms,
            });
        }
        let watched = prev.is_some_and(|p| p.watched) || restarted;
        let from_ms = prev.map_or(now.unix_ms, |p| p.read_at_ms);
        for (user, r) in &reading.users {
            let base = if restarted {
                None
            } else {
                prev.and_then(|p| p.users.get(user)).copied()
            };
            let counted = counted(base, watched, *r);
            if !counted.is_zero() {
                obs.deltas.push(Delta {
                    service: reading.service.clone(),
                    user: user.clone(),
                    counted,
                    from_ms,
                    to_ms: now.unix_ms,
                });
            }
            if base != Some(Base::Known(*r)) {
                obs.changes.push(Change::User {
                    service: reading.service.clone(),
                    user: user.clone(),
                    base: Some(Base::Known(*r)),
                });
            }
        }
        obs.changes.push(Change::Read {
            service: reading.service.clone(),
            uptime_s: reading.uptime.map(|u| u.as_secs()),
            at_ms: now.unix_ms,
        });
    }

    /// The changes that record the agent's own counter resets.
    pub fn resets(&self, resets: &BTreeSet<Reset>, now: Now) -> Vec<Change> {
        resets
            .iter()
            .map(|r| match r {
                Reset::Service(service) => Change::ResetService {
                    service: service.clone(),
                    at_ms: now.unix_ms,
                },
                Reset::User { service, user } => Change::User {
                    service: service.clone(),
                    user: user.clone(),
                    base: Some(Base::Zero),
                },
                Reset::Forget { service, user } => Change::User {
                    service: service.clone(),
                    user: user.clone(),
                    base: None,
                },
            })
            .collect()
    }

    /// Moves the baselines; called once the record carrying `changes` is on disk.
    pub fn apply(&mut self, changes: &[Change], now_mono: Option<Duration>) {
        for change in changes {
            match change {
                Change::Read {
                    service,
                    uptime_s,
                    at_ms,
                } => {
                    let s = self.services.entry(service.clone()).or_default();
                    s.watched = true;
                    s.uptime_s = *uptime_s;
                    s.read_at_ms = *at_ms;
                    s.read_mono = now_mono;
                }
                Change::User {
                    service,
                    user,
                    base,
                } => {
                    let s = self.services.entry(service.clone()).or_default();
                    match base {
                        Some(b) => {
                            s.users.insert(user.clone(), *b);
                        }
                        None => {
                            s.users.remove(user);
                        }
                    }
                }
                Change::ResetService { service, at_ms } => {
                    let s = self.services.entry(service.clone()).or_default();
                    s.users.clear();
                    s.watched = true;
                    // The old uptime belongs to the engine that is gone.
                    s.uptime_s = None;
                    if s.read_at_ms == 0 {
                        s.read_at_ms = *at_ms;
                    }
                }
                Change::DropService { service } => {
                    self.services.remove(service);
                }
            }
        }
    }
}

/// Rule 3: the engine's uptime says it started after the last reading.
fn engine_restarted(prev: &ServiceBase, uptime: Option<Duration>, now: Now) -> bool {
    let (Some(last), Some(up)) = (prev.uptime_s, uptime) else {
        return false;
    };
    let elapsed = match prev.read_mono {
        Some(m) => now.mono.saturating_sub(m),
        None => Duration::from_millis(
            u64::try_from(now.unix_ms.saturating_sub(prev.read_at_ms)).unwrap_or(0),
        ),
    };
    up < Duration::from_secs(last) || up + RESTART_SLACK < elapsed
}

/// Rules 1, 2 and the first-reading rule for one counter.
pub fn counted(base: Option<Base>, watched: bool, r: Count) -> Count {
    match base {
        Some(Base::Zero) => r,
        Some(Base::Known(b)) => match (b, r) {
            (Count::Total(b), Count::Total(t)) => Count::Total(if t >= b { t - b } else { t }),
            (Count::Directional { up: bu, down: bd }, Count::Directional { up, down }) => {
                if up >= bu && down >= bd {
                    Count::Directional {
                        up: up - bu,
                        down: down - bd,
                    }
                } else {
                    r
                }
            }
            _ => r.zero_like(),
        },
        None if watched => r,
        None => r.zero_like(),
    }
}

#[cfg(test)]
mod tests;
