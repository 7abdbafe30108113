//! Ledger readings from the agent's own per-port nftables counters, for engines that count
//! nothing themselves but give every user a port (the HTTP/SOCKS5 proxy on shoes; SPEC §2.6:
//! "per-user-port proxies: nft counters"). Pure: the caller reads the kernel.
//!
//! nft counters are read *with* reset (every table replacement resets them too), so what the
//! agent holds per port is bytes since the last drain, not a cumulative counter. The ledger wants
//! cumulative readings against its baselines, so a user's reading is their baseline plus what
//! was drained: the ledger then counts exactly the drained bytes.
//!
//! A service the ledger has never read (a new service, a new ledger) would have its first
//! reading adopted as a baseline and counted as nothing, which for drained bytes means lost. So
//! for such a service every user reads as zero and nothing is drained: the bytes wait in the
//! pending map for the next reading, which counts them.
//!
//! What can still be lost: bytes drained into memory when the agent dies before the ledger
//! record is on disk (at most one usage interval; the kernel keeps counting meanwhile). A port
//! freed by one user and given to another before the next reading carries the first user's
//! last bytes to the second.

use std::collections::BTreeMap;

use vpn_shared::model::DesiredState;

use super::delta::{Base, Baselines, Count, Reading};
use crate::firewall::Count as NftCount;
use crate::firewall::counters::{Direction, counter_name};

/// Bytes per named counter (`port_3129_up`, …) read from the kernel and not yet in the ledger.
pub type Pending = BTreeMap<String, NftCount>;

/// Adds a read-and-reset of the kernel's counters to what is pending.
pub fn accumulate(pending: &mut Pending, read: BTreeMap<String, NftCount>) {
    for (name, c) in read {
        let p = pending.entry(name).or_default();
        p.packets = p.packets.saturating_add(c.packets);
        p.bytes = p.bytes.saturating_add(c.bytes);
    }
}

/// The readings of `services` (by name) from their users' ports, draining what they count from
/// `pending`.
pub fn readings(
    state: &DesiredState,
    services: &[String],
    baselines: &Baselines,
    pending: &mut Pending,
) -> Vec<Reading> {
    let mut out = Vec::with_capacity(services.len());
    for service in services {
        let base = baselines.services.get(service);
        let watched = base.is_some_and(|b| b.watched);
        let mut users = Vec::new();
        for (user, cred) in state.users_of(service) {
            if !watched {
                users.push((user.id.clone(), Count::Directional { up: 0, down: 0 }));
                continue;
            }
            let port = cred.port();
            let mut take = |d| {
                pending
                    .remove(&counter_name(port, d))
                    .map_or(0, |c| c.bytes)
            };
            let (up, down) = (take(Direction::Up), take(Direction::Down));
            let known = base.and_then(|b| b.users.get(&user.id)).copied();
            let (bu, bd) = match known {
                Some(Base::Known(Count::Directional { up, down })) => (up, down),
                _ => (0, 0),
            };
            users.push((
                user.id.clone(),
                Count::Directional {
                    up: bu.saturating_add(up),
                    down: bd.saturating_add(down),
                },
            ));
        }
        out.push(Reading {
            service: service.clone(),
            uptime: None,
            users,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use vpn_shared::model::{
        Bandwidth, Credential, Protocol, ProxyKind, ProxyOptions, ServiceOptions, ServiceSpec,
        UserSpec,
    };

    use super::super::delta::Now;
    use super::*;

    fn state(users: &[(&str, u16)]) -> DesiredState {
        let mut s = DesiredState::default();
        s.services.insert(
            "proxy".into(),
            ServiceSpec {
                name: "proxy".into(),
                protocol: Protocol::Proxy,
                port: 3128,
                image: None,
                options: ServiceOptions::Proxy(ProxyOptions {
                    kind: ProxyKind::Both,
                }),
                bandwidth: Bandwidth::default(),
                new_conn_rate: None,
            },
        );
        for (name, port) in users {
            s.users.insert(
                (*name).into(),
                UserSpec {
                    name: (*name).into(),
                    id: format!("id-{name}"),
                    credentials: vec![Credential::Proxy {
                        service: "proxy".into(),
                        port: *port,
                        username: (*name).into(),
                        password: "pw".into(),
                    }],
                    bandwidth: Bandwidth::default(),
                },
            );
        }
        s
    }

    fn read(port: u16, up: u64, down: u64) -> BTreeMap<String, NftCount> {
        BTreeMap::from([
            (
                counter_name(port, Direction::Up),
                NftCount {
                    packets: 1,
                    bytes: up,
                },
            ),
            (
                counter_name(port, Direction::Down),
                NftCount {
                    packets: 1,
                    bytes: down,
                },
            ),
        ])
    }

    /// Runs one reading through the real ledger rules; returns what was counted per user id.
    fn step(
        s: &DesiredState,
        baselines: &mut Baselines,
        pending: &mut Pending,
        t: u64,
    ) -> BTreeMap<String, Count> {
        let services = vec!["proxy".to_string()];
        let r = readings(s, &services, baselines, pending);
        let now = Now {
            unix_ms: i64::try_from(t * 10_000).unwrap_or(0),
            mono: Duration::from_secs(t * 10),
        };
        let keys: BTreeSet<String> = s.users.values().map(|u| u.id.clone()).collect();
        let obs = baselines.observe(&r, &BTreeSet::from(["proxy".to_string()]), &keys, now);
        baselines.apply(&obs.changes, Some(now.mono));
        obs.deltas
            .into_iter()
            .map(|d| (d.user, d.counted))
            .collect()
    }

    #[test]
    fn drained_bytes_are_counted_once_and_a_new_service_loses_nothing() {
        let s = state(&[("alice", 3129), ("bob", 3130)]);
        let mut baselines = Baselines::default();
        let mut pending = Pending::new();
        accumulate(&mut pending, read(3129, 100, 1000));
        // First reading of a service the ledger never read: nothing counted, nothing drained.
        assert!(step(&s, &mut baselines, &mut pending, 1).is_empty());
        assert_eq!(pending.len(), 2);
        accumulate(&mut pending, read(3129, 5, 50));
        accumulate(&mut pending, read(3130, 7, 70));
        let counted = step(&s, &mut baselines, &mut pending, 2);
        assert_eq!(
            counted["id-alice"],
            Count::Directional {
                up: 105,
                down: 1050
            }
        );
        assert_eq!(counted["id-bob"], Count::Directional { up: 7, down: 70 });
        assert!(pending.is_empty());
        // Nothing new: nothing counted again.
        assert!(step(&s, &mut baselines, &mut pending, 3).is_empty());
        accumulate(&mut pending, read(3130, 1, 2));
        let counted = step(&s, &mut baselines, &mut pending, 4);
        assert_eq!(counted.len(), 1);
        assert_eq!(counted["id-bob"], Count::Directional { up: 1, down: 2 });
    }

    #[test]
    fn a_user_added_later_counts_from_their_first_bytes() {
        let mut baselines = Baselines::default();
        let mut pending = Pending::new();
        step(&state(&[("alice", 3129)]), &mut baselines, &mut pending, 1);
        let s = state(&[("alice", 3129), ("carol", 3131)]);
        accumulate(&mut pending, read(3131, 9, 90));
        let counted = step(&s, &mut baselines, &mut pending, 2);
        assert_eq!(counted["id-carol"], Count::Directional { up: 9, down: 90 });
    }
}
