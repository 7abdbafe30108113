//! Pure functions that turn loaded rows into what hosts run: `UserSpec`s, full desired states and
//! the per-host pushes of a mutation. No IO here, so the consistency of full states and deltas is
//! decided in one place and unit-tested without a database.

use std::collections::{BTreeMap, HashMap, HashSet};

use vpn_shared::model::{Change, Credential, DesiredState, Protocol, ServiceSpec, UserSpec};

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

/// The credential as the host's driver needs it.
pub(crate) fn credential(c: &HeldCredential) -> Credential {
    match c.protocol {
        Protocol::Shadowsocks => Credential::Shadowsocks {
            service: c.service.clone(),
            port: c.port,
            password: c.secret.clone(),
        },
    }
}

/// A user's spec on one host: only the credentials of services placed on that host, sorted by
/// service name so the digest is the same whichever path (full state or delta) built it.
pub(crate) fn user_spec(
    id: &str,
    name: &str,
    held: &[HeldCredential],
    service_on_host: impl Fn(&str) -> bool,
) -> UserSpec {
    let mut on_host: Vec<&HeldCredential> = held
        .iter()
        .filter(|c| service_on_host(&c.service))
        .collect();
    on_host.sort_by(|a, b| a.service.cmp(&b.service));
    UserSpec {
        name: name.to_owned(),
        id: id.to_owned(),
        credentials: on_host.into_iter().map(credential).collect(),
        bandwidth: Default::default(),
    }
}

/// An active user placed on a host, with every credential it holds (on any service).
#[derive(Debug, Clone)]
pub(crate) struct ActiveUser {
    pub id: String,
    pub name: String,
    pub held: Vec<HeldCredential>,
}

/// A host's full desired state from its services and its active users.
pub(crate) fn desired_state(
    generation: u64,
    services: Vec<ServiceSpec>,
    users: &[ActiveUser],
) -> DesiredState {
    let names: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let users = users
        .iter()
        .map(|u| {
            let spec = user_spec(&u.id, &u.name, &u.held, |s| names.contains(s));
            (u.name.clone(), spec)
        })
        .collect();
    let services: BTreeMap<String, ServiceSpec> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    DesiredState {
        generation,
        services,
        users,
        firewall: Default::default(),
    }
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
        let spec = user_spec("id", "alice", &creds, |s| s != "c");
        let services: Vec<&str> = spec.credentials.iter().map(|c| c.service()).collect();
        assert_eq!(services, ["a", "b"]);
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
            held: vec![held("elsewhere", 9)],
        }];
        let state = desired_state(3, vec![], &users);
        assert_eq!(state.generation, 3);
        assert!(state.users["bob"].credentials.is_empty());
    }
}
