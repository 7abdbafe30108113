//! Which tc classes a desired state needs: pure, no IO.
//!
//! A service gets a class when it has a cap or a limited user; a user gets a class under the
//! service when they have a limit of their own, or when the service is capped (their packets
//! must then be steered into the service's "rest" class so the cap covers them). A user without
//! a limit on an uncapped service gets nothing: unclassified traffic falls into the unlimited
//! default class.
//!
//! A user's limit applies per service they use on the host (a user with two services on one
//! host could use both at once): a class has one parent, and the service cap has to contain it.
//!
//! # Stable class ids
//!
//! `class replace` must touch the same class for the same user on every apply, also after an
//! agent restart, without a file to keep in sync with the kernel. Ids are therefore derived:
//! SHA-256 of a key naming the object (`user/<service>/<user id>`, with the stable user id so a
//! rename changes nothing) picks a home slot among the usable 16-bit minors, and collisions are
//! resolved by linear probing in a canonical order (by home slot, then key). The same set of
//! keys always gives the same ids; adding or removing one object can only move the few others
//! that share its probe cluster, and the renderer handles a moved id like any other change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ring::digest::{SHA256, digest};
use vpn_shared::model::{Bandwidth, Credential, DesiredState, ServiceOptions, ServiceSpec};

/// A class minor under the agent's root handle.
pub type ClassId = u16;

/// The first minor handed out; lower ones are fixed (root, default class).
pub const FIRST_ID: ClassId = 0x100;
/// One past the last minor handed out; `0xffe0..` are special in the tc handle space.
pub const END_ID: ClassId = 0xffe0;

/// Rates are raised to at least this (HTB cannot shape to zero).
pub const MIN_RATE_BPS: u64 = 8_000;

/// A direction as the host's interfaces see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Leaving the host through the egress interface.
    Egress,
    /// Arriving on the egress interface (shaped on its IFB device).
    Ingress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Egress, Direction::Ingress];
}

/// A rate limit per host direction, in bits per second; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    pub egress_bps: Option<u64>,
    pub ingress_bps: Option<u64>,
}

impl Rates {
    /// For matchers on the user's own connection (port, tunnel address): download leaves the
    /// host, upload arrives.
    pub fn from_user(bw: Bandwidth) -> Rates {
        Rates {
            egress_bps: bw.down_bps.map(clamp),
            ingress_bps: bw.up_bps.map(clamp),
        }
    }

    /// For [`Matcher::Mark`]: the mark sits on the proxy's *outbound* connection, where the
    /// user's upload leaves the host and their download arrives.
    pub fn from_user_outbound(bw: Bandwidth) -> Rates {
        Rates {
            egress_bps: bw.up_bps.map(clamp),
            ingress_bps: bw.down_bps.map(clamp),
        }
    }

    pub fn get(self, dir: Direction) -> Option<u64> {
        match dir {
            Direction::Egress => self.egress_bps,
            Direction::Ingress => self.ingress_bps,
        }
    }

    pub fn is_unlimited(self) -> bool {
        self.egress_bps.is_none() && self.ingress_bps.is_none()
    }
}

fn clamp(bps: u64) -> u64 {
    bps.max(MIN_RATE_BPS)
}

/// What identifies one user's packets on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Matcher {
    /// Protocols with a server port per user (Shadowsocks, proxies): the user's connections have
    /// that port as source on egress and as destination on ingress, TCP and UDP, IPv4 and IPv6.
    ServerPort { port: u16 },
    /// WireGuard: the user's tunnel address (destination on egress, source on ingress), on the
    /// WireGuard interface.
    TunnelAddr(IpAddr),
    /// Xray: the firewall mark of the user's outbound sockets (`sockopt.mark`); pair it with
    /// [`Rates::from_user_outbound`].
    Mark(u32),
}

/// Everything the host should shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShapingPlan {
    pub services: Vec<ServiceClass>,
    /// Objects that got no class id because all of them are taken (more than ~65,000 classes).
    pub unplaced: Vec<String>,
}

impl ShapingPlan {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Whether anything needs a class in `dir`.
    pub fn wants(&self, dir: Direction) -> bool {
        self.services
            .iter()
            .any(|s| s.cap.get(dir).is_some() || s.users.iter().any(|u| u.rates.get(dir).is_some()))
    }
}

/// One service's class and the users under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClass {
    pub service: String,
    pub id: ClassId,
    /// Where a capped service's users without a limit of their own go; `None` when uncapped.
    pub rest_id: Option<ClassId>,
    /// The cap on the whole service (unlimited directions use the link ceiling).
    pub cap: Rates,
    /// Sorted by user name.
    pub users: Vec<UserClass>,
}

/// One user's class under a service (or, without a limit of their own, only their filters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClass {
    pub user: String,
    /// The user's class minor, also the handle of the user's filters.
    pub id: ClassId,
    pub rates: Rates,
    pub matchers: Vec<Matcher>,
}

/// A class to be, before ids are known.
struct Pending {
    service: String,
    cap: Rates,
    users: BTreeMap<String, (String, Rates, Vec<Matcher>)>,
}

/// The shaping plan of a desired state.
pub fn plan(state: &DesiredState) -> ShapingPlan {
    plan_where(state, |_| true)
}

/// The shaping plan of the services `keep` selects: WireGuard services are shaped on their own
/// interface (where the tunnel's packets are plaintext), every other service on the egress one.
pub fn plan_where(state: &DesiredState, keep: impl Fn(&ServiceSpec) -> bool) -> ShapingPlan {
    let mut pending = Vec::new();
    for svc in state.services.values().filter(|s| keep(s)) {
        let per_port = svc.port_per_user();
        // On a WireGuard interface, egress is traffic to the user, as on a per-user port.
        let direct = per_port || matches!(svc.options, ServiceOptions::Wireguard(_));
        let cap = if direct {
            Rates::from_user(svc.bandwidth)
        } else {
            Rates::from_user_outbound(svc.bandwidth)
        };
        let mut users = BTreeMap::new();
        for (user, cred) in state.users_of(&svc.name) {
            let (rates, matchers) = match cred {
                Credential::Vless { uuid, .. } if !per_port => (
                    Rates::from_user_outbound(user.bandwidth),
                    vec![Matcher::Mark(crate::drivers::user_mark(uuid))],
                ),
                // Every WireGuard user shares the service port: the tunnel address names them.
                Credential::Wireguard { allowed_ips, .. } => (
                    Rates::from_user(user.bandwidth),
                    allowed_ips
                        .iter()
                        .filter_map(|ip| ip.split('/').next()?.parse().ok())
                        .map(Matcher::TunnelAddr)
                        .collect(),
                ),
                _ => (
                    Rates::from_user(user.bandwidth),
                    vec![Matcher::ServerPort { port: cred.port() }],
                ),
            };
            if rates.is_unlimited() && cap.is_unlimited() {
                continue;
            }
            let entry = users
                .entry(user.name.clone())
                .or_insert_with(|| (user.id.clone(), rates, Vec::new()));
            for matcher in matchers {
                if !entry.2.contains(&matcher) {
                    entry.2.push(matcher);
                }
            }
        }
        if cap.is_unlimited() && users.is_empty() {
            continue;
        }
        pending.push(Pending {
            service: svc.name.clone(),
            cap,
            users,
        });
    }

    let mut keys = Vec::new();
    for p in &pending {
        keys.push(service_key(&p.service));
        if !p.cap.is_unlimited() {
            keys.push(rest_key(&p.service));
        }
        for (uid, _, _) in p.users.values() {
            keys.push(user_key(&p.service, uid));
        }
    }
    let (ids, unplaced) = allocate(keys);

    let services = pending
        .into_iter()
        .filter_map(|p| {
            let id = *ids.get(&service_key(&p.service))?;
            let rest_id = ids.get(&rest_key(&p.service)).copied();
            if !p.cap.is_unlimited() && rest_id.is_none() {
                return None;
            }
            let users = p
                .users
                .into_iter()
                .filter_map(|(name, (uid, rates, matchers))| {
                    Some(UserClass {
                        id: *ids.get(&user_key(&p.service, &uid))?,
                        user: name,
                        rates,
                        matchers,
                    })
                })
                .collect();
            Some(ServiceClass {
                service: p.service,
                id,
                rest_id,
                cap: p.cap,
                users,
            })
        })
        .collect();
    ShapingPlan { services, unplaced }
}

fn service_key(service: &str) -> String {
    format!("service/{service}")
}

fn rest_key(service: &str) -> String {
    format!("rest/{service}")
}

fn user_key(service: &str, user_id: &str) -> String {
    format!("user/{service}/{user_id}")
}

/// Whether `id` may be handed out: in range, and not a multiple of 0x1000 (the low 12 bits are
/// the u32 filter node id, which must not be zero).
pub fn usable(id: ClassId) -> bool {
    (FIRST_ID..END_ID).contains(&id) && id & 0xfff != 0
}

fn next(id: ClassId) -> ClassId {
    let mut n = id;
    loop {
        n = if n + 1 >= END_ID { FIRST_ID } else { n + 1 };
        if usable(n) {
            return n;
        }
    }
}

/// The slot a key would like to have.
pub fn home(key: &str) -> ClassId {
    let h = digest(&SHA256, key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_ref()[..8]);
    let span = u64::from(END_ID - FIRST_ID);
    // The remainder is below `span`, so it fits.
    let id = FIRST_ID + (u64::from_be_bytes(b) % span) as u16;
    if usable(id) { id } else { next(id) }
}

/// Gives every key a distinct usable id: its home slot, or the next free one in a canonical
/// order. Keys beyond the capacity are returned as unplaced.
pub fn allocate(keys: Vec<String>) -> (BTreeMap<String, ClassId>, Vec<String>) {
    let capacity = (FIRST_ID..END_ID).filter(|&i| usable(i)).count();
    let mut order: Vec<(ClassId, String)> = keys
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|k| (home(&k), k))
        .collect();
    order.sort();
    let mut taken = vec![false; usize::from(END_ID)];
    let mut ids = BTreeMap::new();
    let mut unplaced = Vec::new();
    for (home, key) in order {
        if ids.len() >= capacity {
            unplaced.push(key);
            continue;
        }
        let mut id = home;
        while taken[usize::from(id)] {
            id = next(id);
        }
        taken[usize::from(id)] = true;
        ids.insert(key, id);
    }
    (ids, unplaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpn_shared::model::{Protocol, ServiceOptions, ServiceSpec, UserSpec};

    fn service(name: &str, bw: Bandwidth) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            protocol: Protocol::Shadowsocks,
            port: 8388,
            image: None,
            options: ServiceOptions::Shadowsocks {
                method: "chacha20-ietf-poly1305".into(),
            },
            bandwidth: bw,
            new_conn_rate: None,
        }
    }

    fn user(name: &str, service: &str, port: u16, bw: Bandwidth) -> UserSpec {
        UserSpec {
            name: name.into(),
            id: format!("id-{name}"),
            credentials: vec![Credential::Shadowsocks {
                service: service.into(),
                port,
                password: "pw".into(),
            }],
            bandwidth: bw,
        }
    }

    fn limit(down: u64, up: u64) -> Bandwidth {
        Bandwidth {
            down_bps: Some(down),
            up_bps: Some(up),
        }
    }

    fn state(services: Vec<ServiceSpec>, users: Vec<UserSpec>) -> DesiredState {
        DesiredState {
            generation: 1,
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn unlimited_users_of_uncapped_services_get_nothing() {
        let s = state(
            vec![service("ss", Bandwidth::default())],
            vec![user("bob", "ss", 9001, Bandwidth::default())],
        );
        assert!(plan(&s).is_empty());
    }

    #[test]
    fn a_limited_user_gets_a_class_with_a_port_matcher() {
        let s = state(
            vec![service("ss", Bandwidth::default())],
            vec![
                user("alice", "ss", 9000, limit(8_000_000, 4_000_000)),
                user("bob", "ss", 9001, Bandwidth::default()),
            ],
        );
        let p = plan(&s);
        assert_eq!(p.services.len(), 1);
        let svc = &p.services[0];
        assert_eq!(svc.rest_id, None);
        assert_eq!(svc.users.len(), 1);
        let alice = &svc.users[0];
        assert_eq!(alice.matchers, vec![Matcher::ServerPort { port: 9000 }]);
        assert_eq!(alice.rates.egress_bps, Some(8_000_000));
        assert_eq!(alice.rates.ingress_bps, Some(4_000_000));
        assert!(p.wants(Direction::Egress) && p.wants(Direction::Ingress));
    }

    #[test]
    fn a_capped_service_keeps_its_unlimited_users_for_the_rest_class() {
        let s = state(
            vec![service(
                "ss",
                Bandwidth {
                    down_bps: Some(100_000_000),
                    up_bps: None,
                },
            )],
            vec![user("bob", "ss", 9001, Bandwidth::default())],
        );
        let p = plan(&s);
        let svc = &p.services[0];
        assert!(svc.rest_id.is_some());
        assert_eq!(svc.users[0].rates, Rates::default());
        assert!(p.wants(Direction::Egress) && !p.wants(Direction::Ingress));
    }

    #[test]
    fn ids_do_not_depend_on_unrelated_users() {
        let base = vec![
            user("alice", "ss", 9000, limit(1_000_000, 1_000_000)),
            user("carol", "ss", 9002, limit(2_000_000, 2_000_000)),
        ];
        let a = plan(&state(
            vec![service("ss", Bandwidth::default())],
            base.clone(),
        ));
        let mut more = base;
        more.push(user("bob", "ss", 9001, limit(3_000_000, 3_000_000)));
        let b = plan(&state(vec![service("ss", Bandwidth::default())], more));
        let id = |p: &ShapingPlan, n: &str| {
            p.services[0]
                .users
                .iter()
                .find(|u| u.user == n)
                .map(|u| u.id)
        };
        assert_eq!(id(&a, "alice"), id(&b, "alice"));
        assert_eq!(id(&a, "carol"), id(&b, "carol"));
        assert_eq!(a.services[0].id, b.services[0].id);
    }

    #[test]
    fn allocation_is_collision_free_and_order_independent() {
        let keys: Vec<String> = (0..5000).map(|i| format!("user/ss/{i}")).collect();
        let (ids, unplaced) = allocate(keys.clone());
        assert!(unplaced.is_empty());
        let distinct: BTreeSet<_> = ids.values().collect();
        assert_eq!(distinct.len(), 5000);
        assert!(ids.values().all(|&i| usable(i)));
        let mut reversed = keys;
        reversed.reverse();
        assert_eq!(allocate(reversed).0, ids);
    }

    #[test]
    fn a_collision_moves_only_the_probe_cluster() {
        // Find two keys with the same home slot.
        let mut seen = BTreeMap::new();
        let (a, b) = (0..)
            .map(|i| format!("k{i}"))
            .find_map(|k| {
                let h = home(&k);
                seen.insert(h, k.clone()).map(|prev| (prev, k))
            })
            .unwrap();
        let (ids, _) = allocate(vec![a.clone(), b.clone()]);
        assert_ne!(ids[&a], ids[&b]);
        assert!(ids[&a] == home(&a) || ids[&b] == home(&b));
    }

    #[test]
    fn overflow_is_reported_not_panicked() {
        let capacity = (FIRST_ID..END_ID).filter(|&i| usable(i)).count();
        let keys: Vec<String> = (0..capacity + 3).map(|i| format!("k{i}")).collect();
        let (ids, unplaced) = allocate(keys);
        assert_eq!(ids.len(), capacity);
        assert_eq!(unplaced.len(), 3);
    }

    #[test]
    fn outbound_rates_swap_directions_and_tiny_rates_are_raised() {
        let r = Rates::from_user_outbound(limit(10, 20_000));
        assert_eq!(r.egress_bps, Some(20_000));
        assert_eq!(r.ingress_bps, Some(MIN_RATE_BPS));
    }

    #[test]
    fn wireguard_users_are_matched_by_tunnel_address_and_planned_apart() {
        let mut wg = service("wg", Bandwidth::default());
        wg.protocol = Protocol::Wireguard;
        wg.options = ServiceOptions::Wireguard(vpn_shared::model::WireguardOptions {
            subnet: "10.66.0.0/16".into(),
            ipv6_subnet: Some("fd66::/64".into()),
            dns: vec![],
            mtu: None,
            private_key: "k".into(),
        });
        let mut alice = user("alice", "ss", 9000, limit(8_000_000, 4_000_000));
        alice.credentials.push(Credential::Wireguard {
            service: "wg".into(),
            port: 51820,
            public_key: "K".into(),
            preshared_key: "P".into(),
            allowed_ips: vec!["10.66.0.2/32".into(), "fd66::2/128".into()],
        });
        let st = state(vec![service("ss", Bandwidth::default()), wg], vec![alice]);
        let tunnel = plan_where(&st, |s| s.name == "wg");
        assert_eq!(tunnel.services.len(), 1);
        let u = &tunnel.services[0].users[0];
        assert_eq!(
            u.matchers,
            [
                Matcher::TunnelAddr("10.66.0.2".parse().unwrap()),
                Matcher::TunnelAddr("fd66::2".parse().unwrap()),
            ]
        );
        assert_eq!(u.rates, Rates::from_user(limit(8_000_000, 4_000_000)));
        let egress = plan_where(&st, |s| s.name != "wg");
        assert_eq!(egress.services.len(), 1);
        assert_eq!(egress.services[0].service, "ss");
    }
}
