//! The digest step of each push: what a session needs to know the digest its agent must answer
//! with, without holding a copy of its host's state (issue 10: controller memory per host that
//! does not grow with the number of users).
//!
//! A host's digest is the XOR of its items' hashes (`vpn_shared::model::Digest`), so a push
//! moves it by `step` = the hashes of the items it replaces XOR those of the items it writes.
//! The items it replaces are read from the last committed state, on a connection of its own
//! (SQLite's WAL gives it the state as it was before the mutation's transaction): only the
//! items a push names, so a user added to 1,000 hosts costs one query, and an edit of one user
//! a handful. A push that removes a service changes every user holding it: that host's whole
//! old state is read. A push of more than [`FULL_STATE_ABOVE`] changes (a service deployed to a
//! host of thousands of users) is cheaper as a full state: it is marked `full` and its session
//! resends the state instead (`backlog.rs`).
//!
//! The new items come from the changes themselves, applied exactly as the agent applies them
//! (`DesiredState::apply_change`), so the step cannot disagree with what the agent computes.

use std::collections::{BTreeSet, HashMap};

use sqlx::SqliteConnection;
use vpn_shared::model::{Change, DesiredState, Digest};

use super::error::{Result, StoreError};
use super::rows::SERVING;
use super::state::{self, UserRender};
use super::wireguard::{self, Scope};
use super::{HostPush, services};

/// Above this many changes a push becomes a full state ([`HostPush::full`]).
pub(crate) const FULL_STATE_ABOVE: usize = 2_000;

/// Above this many existing users named by one mutation, their old specs are read host by
/// host (a few queries per host) rather than user by user (a few queries per user).
const USERS_ONE_BY_ONE: usize = 16;

/// What the pushes of one mutation name on one host.
#[derive(Debug, Default)]
struct Named {
    users: BTreeSet<String>,
    services: BTreeSet<String>,
    /// A service is removed: every user may change.
    whole: bool,
}

/// Sets `step` of every push (marking the large ones `full`), reading the items they replace
/// from `before`: a connection that sees the state as it was before the mutation.
pub(super) async fn steps(before: &mut SqliteConnection, pushes: &mut [HostPush]) -> Result<()> {
    for p in pushes.iter_mut() {
        if p.changes.len() > FULL_STATE_ABOVE {
            p.full = true;
            p.changes = Vec::new();
        }
    }
    let named = named(pushes);
    if named.is_empty() {
        return Ok(());
    }
    let mut states = old_items(before, &named).await?;
    for p in pushes.iter_mut().filter(|p| !p.full) {
        let state = states.entry(p.host_id.clone()).or_default();
        p.step = step(state, &p.changes);
    }
    Ok(())
}

/// The step of `changes` on `state` (holding at least every item they name), which moves on.
fn step(state: &mut DesiredState, changes: &[Change]) -> Digest {
    let before = state.digest();
    for c in changes {
        state.apply_change(c.clone());
    }
    before ^ state.digest()
}

/// What the pushes name, by host.
fn named(pushes: &[HostPush]) -> HashMap<String, Named> {
    let mut named: HashMap<String, Named> = HashMap::new();
    for p in pushes.iter().filter(|p| !p.full) {
        let n = named.entry(p.host_id.clone()).or_default();
        for c in &p.changes {
            match c {
                Change::UpsertUser(u) => {
                    n.users.insert(u.name.clone());
                }
                Change::RemoveUser { name } => {
                    n.users.insert(name.clone());
                }
                Change::UpsertService(s) => {
                    n.services.insert(s.name.clone());
                }
                Change::RemoveService { .. } => n.whole = true,
                // The policy is read for every host below.
                Change::SetFirewall(_) => {}
            }
        }
    }
    named
}

/// The named items of each host as `before` sees them, as partial states (a host's whole state
/// where a service is removed). Every host's firewall policy is included: one query for all.
async fn old_items(
    before: &mut SqliteConnection,
    named: &HashMap<String, Named>,
) -> Result<HashMap<String, DesiredState>> {
    let mut states: HashMap<String, DesiredState> = HashMap::new();
    for host in named.iter().filter(|(_, n)| n.whole).map(|(h, _)| h) {
        states.insert(host.clone(), state::render_host(before, host, None).await?);
    }
    let partial: Vec<(&String, &Named)> = named.iter().filter(|(_, n)| !n.whole).collect();
    if partial.is_empty() {
        return Ok(states);
    }
    let hosts: Vec<String> = partial.iter().map(|(h, _)| (*h).clone()).collect();
    let mut firewalls = super::firewall::host_specs(before, Some(&hosts)).await?;
    for host in &hosts {
        states.insert(
            host.clone(),
            DesiredState {
                firewall: firewalls.remove(host).unwrap_or_default(),
                ..DesiredState::default()
            },
        );
    }

    // Users: only those that exist and serve can be on a host at all.
    let names: BTreeSet<&String> = partial.iter().flat_map(|(_, n)| &n.users).collect();
    let serving = serving_users(before, &names).await?;
    if serving.len() > USERS_ONE_BY_ONE {
        for (host, n) in &partial {
            let only: Vec<String> = n
                .users
                .iter()
                .filter(|u| serving.contains_key(*u))
                .cloned()
                .collect();
            if only.is_empty() {
                continue;
            }
            let got = state::render_host(before, host, Some(&only)).await?;
            if let Some(s) = states.get_mut(*host) {
                s.users = got.users;
            }
        }
    } else {
        for (name, placed) in &serving {
            let user = UserRender::load(before, &placed.id, name).await?;
            for (host, n) in &partial {
                if n.users.contains(name)
                    && placed.on(host)
                    && let Some(s) = states.get_mut(*host)
                {
                    s.users.insert(name.clone(), user.spec(host));
                }
            }
        }
    }

    // Services: few per mutation, each on many hosts.
    let services: BTreeSet<&String> = partial.iter().flat_map(|(_, n)| &n.services).collect();
    let placements = if services.is_empty() {
        HashMap::new()
    } else {
        state::service_placements(before).await?
    };
    for name in services {
        let Some(row) = services::load_services(before, Some(name)).await?.pop() else {
            continue;
        };
        let interfaces = wireguard::interfaces(before, Scope::Service(name)).await?;
        let spec = row.spec();
        for (host, n) in &partial {
            let placed = placements.get(name).is_some_and(|p| p.contains(host));
            if n.services.contains(name)
                && placed
                && let Some(s) = states.get_mut(*host)
            {
                s.services
                    .insert(name.clone(), interfaces.host_spec(&spec, host));
            }
        }
    }
    Ok(states)
}

/// Where a serving user is placed.
struct Placed {
    id: String,
    all: bool,
    hosts: BTreeSet<String>,
}

impl Placed {
    fn on(&self, host: &str) -> bool {
        self.all || self.hosts.contains(host)
    }
}

/// Of `names`, the users that exist and serve, with their placement.
async fn serving_users(
    conn: &mut SqliteConnection,
    names: &BTreeSet<&String>,
) -> Result<HashMap<String, Placed>> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let json = serde_json::to_string(names).map_err(|e| StoreError::corrupt("user names", e))?;
    let rows: Vec<(String, String, bool)> = sqlx::query_as(&format!(
        "SELECT id, name, all_servers FROM users WHERE status IN {SERVING} \
         AND name IN (SELECT value FROM json_each(?1))"
    ))
    .bind(&json)
    .fetch_all(&mut *conn)
    .await?;
    let links: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT u.name, us.host_id FROM user_servers us JOIN users u ON u.id = us.user_id \
         WHERE u.status IN {SERVING} AND u.name IN (SELECT value FROM json_each(?1))"
    ))
    .bind(&json)
    .fetch_all(&mut *conn)
    .await?;
    let mut placed: HashMap<String, Placed> = rows
        .into_iter()
        .map(|(id, name, all)| {
            let p = Placed {
                id,
                all,
                hosts: BTreeSet::new(),
            };
            (name, p)
        })
        .collect();
    for (name, host) in links {
        if let Some(p) = placed.get_mut(&name) {
            p.hosts.insert(host);
        }
    }
    Ok(placed)
}

/// For the store's tests: checks that the steps of every host lead from its whole old state's
/// digest (`before`) to its whole new one's (`after`, the mutation's transaction).
#[cfg(test)]
pub(super) async fn verify(
    before: &mut SqliteConnection,
    after: &mut SqliteConnection,
    pushes: &[HostPush],
) {
    let mut by_host: HashMap<&str, (Digest, bool)> = HashMap::new();
    for p in pushes {
        let e = by_host.entry(&p.host_id).or_default();
        e.0 ^= p.step;
        e.1 |= p.full;
    }
    for (host, (step, full)) in by_host {
        if full {
            continue;
        }
        let old = state::render_host(before, host, None).await;
        let new = state::render_host(after, host, None).await;
        let (Ok(old), Ok(new)) = (old, new) else {
            panic!("rendering host {host} for the digest check failed");
        };
        assert_eq!(
            old.digest() ^ step,
            new.digest(),
            "host {host}: the steps do not lead from its old digest to its new one\nold: {old:?}\nnew: {new:?}\npushes: {pushes:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpn_shared::model::{Bandwidth, Credential, UserSpec};

    fn user(name: &str, password: &str) -> UserSpec {
        UserSpec {
            name: name.into(),
            id: format!("id-{name}"),
            credentials: vec![Credential::Shadowsocks {
                service: "ss".into(),
                port: 8388,
                password: password.into(),
            }],
            bandwidth: Bandwidth::default(),
        }
    }

    #[test]
    fn a_step_moves_a_whole_digest_as_the_agent_sees_it() {
        // The host holds alice and bob; the controller's partial state names only bob.
        let mut host = DesiredState::default();
        host.apply_change(Change::UpsertUser(user("alice", "a")));
        host.apply_change(Change::UpsertUser(user("bob", "b")));
        let mut partial = DesiredState::default();
        partial.apply_change(Change::UpsertUser(user("bob", "b")));

        let changes = [
            Change::UpsertUser(user("bob", "b2")),
            Change::UpsertUser(user("carol", "c")),
        ];
        let before = host.digest();
        let s = step(&mut partial, &changes);
        for c in &changes {
            host.apply_change(c.clone());
        }
        assert_eq!(before ^ s, host.digest());

        // A second push of the same mutation starts from where the first left the part.
        let more = [Change::RemoveUser { name: "bob".into() }];
        let before = host.digest();
        let s = step(&mut partial, &more);
        host.apply_change(more[0].clone());
        assert_eq!(before ^ s, host.digest());
    }
}
