//! Pure functions that turn loaded rows into what hosts run: `UserSpec`s, full desired states and
//! the per-host pushes of a mutation. No IO here, so the consistency of full states and deltas is
//! decided in one place and unit-tested without a database.

use std::collections::{BTreeMap, HashMap, HashSet};

use vpn_shared::model::{
    Bandwidth, Change, Credential, DesiredState, FirewallSpec, Protocol, ServiceSpec, UserSpec,
};

use super::HostPush;

/// Which hosts a service or user is on: every host (including later ones) or a set of host ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    All,
    Hosts(HashSet<String>),
}

impl Placement {
    pub(crate) fn contains(&self, host_id: &str) -> bool {
        match self {
            Placement::All => true,
            Placement::Hosts(ids) => ids.contains(host_id),
        }
    }
}

/// A user's credential as loaded for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldCredential {
    pub service: String,
    pub protocol: Protocol,
    pub port: u16,
    pub secret: String,
}

/// The credential as the host's driver needs it; `user` is the holder's name (a proxy's user
/// name). `None` for protocols whose credential is per host (WireGuard), which the caller looks
/// up for the host instead.
pub(crate) fn credential(c: &HeldCredential, user: &str) -> Option<Credential> {
    Some(match c.protocol {
        Protocol::Shadowsocks => Credential::Shadowsocks {
            service: c.service.clone(),
            port: c.port,
            password: c.secret.clone(),
        },
        Protocol::Vless => Credential::Vless {
            service: c.service.clone(),
            port: c.port,
            uuid: c.secret.clone(),
        },
        Protocol::Proxy => Credential::Proxy {
            service: c.service.clone(),
            port: c.port,
            username: user.to_owned(),
            password: c.secret.clone(),
        },
        Protocol::Wireguard => return None,
    })
}

/// A host's own credential of a user for a service (`(user id, held) → credential`), where
/// [`credential`] has none.
pub(crate) type PerHost<'a> = &'a dyn Fn(&str, &HeldCredential) -> Option<Credential>;

/// No per-host credentials: tests and callers on hosts without such services.
#[cfg(test)]
pub(crate) fn no_per_host(_: &str, _: &HeldCredential) -> Option<Credential> {
    None
}

/// A user's spec on one host: only the credentials of services placed on that host, sorted by
/// service name so the digest is the same whichever path (full state or delta) built it.
/// A per-host credential the host lacks (a peer not made yet) is left out.
pub(crate) fn user_spec(
    user: &UserKey<'_>,
    held: &[HeldCredential],
    service_on_host: impl Fn(&str) -> bool,
    per_host: PerHost<'_>,
) -> UserSpec {
    let mut on_host: Vec<&HeldCredential> = held
        .iter()
        .filter(|c| service_on_host(&c.service))
        .collect();
    on_host.sort_by(|a, b| a.service.cmp(&b.service));
    UserSpec {
        name: user.name.to_owned(),
        id: user.id.to_owned(),
        credentials: on_host
            .into_iter()
            .filter_map(|c| credential(c, user.name).or_else(|| per_host(user.id, c)))
            .collect(),
        bandwidth: user.bandwidth,
    }
}

/// What a user's spec takes besides its credentials.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserKey<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub bandwidth: Bandwidth,
}

/// An active user placed on a host, with every credential it holds (on any service).
#[derive(Debug, Clone)]
pub(crate) struct ActiveUser {
    pub id: String,
    pub name: String,
    pub bandwidth: Bandwidth,
    pub held: Vec<HeldCredential>,
}

impl ActiveUser {
    pub(crate) fn key(&self) -> UserKey<'_> {
        UserKey {
            id: &self.id,
            name: &self.name,
            bandwidth: self.bandwidth,
        }
    }
}

/// A host's full desired state from its services, its active users and its firewall policy.
pub(crate) fn desired_state(
    generation: u64,
    services: Vec<ServiceSpec>,
    users: &[ActiveUser],
    firewall: FirewallSpec,
    per_host: PerHost<'_>,
) -> DesiredState {
    let names: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let users = users
        .iter()
        .map(|u| {
            let spec = user_spec(&u.key(), &u.held, |s| names.contains(s), per_host);
            (u.name.clone(), spec)
        })
        .collect();
    let services: BTreeMap<String, ServiceSpec> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    DesiredState {
        generation,
        services,
        users,
        firewall,
    }
}

/// A host's firewall policy: the fleet-wide targets and its own, sorted and deduplicated, so
/// the full state and every delta carry the same list (and digest).
pub(crate) fn firewall_spec<'a>(
    fleet: impl IntoIterator<Item = &'a String>,
    own: impl IntoIterator<Item = &'a String>,
) -> FirewallSpec {
    let mut blocked: Vec<String> = fleet.into_iter().chain(own).cloned().collect();
    blocked.sort();
    blocked.dedup();
    FirewallSpec { blocked }
}

/// The pushes of one mutation: `bumped` holds each changed host with its new generation, and
/// `changes` says what changed on it. Sorted by host id so callers and tests see a stable order.
pub(crate) fn pushes(
    mut bumped: Vec<(String, u64)>,
    mut changes: impl FnMut(&str) -> Vec<Change>,
) -> Vec<HostPush> {
    bumped.sort();
    bumped
        .into_iter()
        .map(|(host_id, generation)| HostPush {
            changes: changes(&host_id),
            step: Default::default(),
            full: false,
            base_generation: generation.saturating_sub(1),
            generation,
            host_id,
        })
        .collect()
}

/// Groups loaded `(user id, credential)` pairs by user.
pub(crate) fn group_held(
    rows: impl IntoIterator<Item = (String, HeldCredential)>,
) -> HashMap<String, Vec<HeldCredential>> {
    let mut by_user: HashMap<String, Vec<HeldCredential>> = HashMap::new();
    for (user, cred) in rows {
        by_user.entry(user).or_default().push(cred);
    }
    by_user
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(service: &str, port: u16) -> HeldCredential {
        HeldCredential {
            service: service.into(),
            protocol: Protocol::Shadowsocks,
            port,
            secret: format!("pw-{service}"),
        }
    }

    #[test]
    fn a_user_spec_holds_only_this_hosts_services_in_name_order() {
        let creds = [held("b", 2), held("c", 3), held("a", 1)];
        let bandwidth = Bandwidth {
            down_bps: Some(8_000_000),
            up_bps: None,
        };
        let key = UserKey {
            id: "id",
            name: "alice",
            bandwidth,
        };
        let spec = user_spec(&key, &creds, |s| s != "c", &no_per_host);
        let services: Vec<&str> = spec.credentials.iter().map(|c| c.service()).collect();
        assert_eq!(services, ["a", "b"]);
        assert_eq!(spec.bandwidth, bandwidth);
    }

    #[test]
    fn a_firewall_spec_merges_fleet_and_host_rules_sorted_once_each() {
        let fleet = ["203.0.113.0/24".to_owned(), "10.0.0.0/8".to_owned()];
        let own = ["2001:db8::/32".to_owned(), "10.0.0.0/8".to_owned()];
        let spec = firewall_spec(&fleet, &own);
        assert_eq!(
            spec.blocked,
            ["10.0.0.0/8", "2001:db8::/32", "203.0.113.0/24"]
        );
        assert_eq!(firewall_spec(&[], &[]), FirewallSpec::default());
    }

    #[test]
    fn pushes_step_each_host_by_one_in_host_order() {
        let bumped = vec![("h2".to_owned(), 5), ("h1".to_owned(), 1)];
        let p = pushes(bumped, |h| vec![Change::RemoveUser { name: h.into() }]);
        assert_eq!(p[0].host_id, "h1");
        assert_eq!((p[0].base_generation, p[0].generation), (0, 1));
        assert_eq!((p[1].base_generation, p[1].generation), (4, 5));
        assert_eq!(p[1].changes, [Change::RemoveUser { name: "h2".into() }]);
    }

    #[test]
    fn a_full_state_keeps_users_without_credentials_on_the_host() {
        let users = [ActiveUser {
            id: "id".into(),
            name: "bob".into(),
            bandwidth: Bandwidth::default(),
            held: vec![held("elsewhere", 9)],
        }];
        let state = desired_state(3, vec![], &users, FirewallSpec::default(), &no_per_host);
        assert_eq!(state.generation, 3);
        assert!(state.users["bob"].credentials.is_empty());
    }
}
