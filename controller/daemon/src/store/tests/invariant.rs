//! The invariant the agent protocol rests on: for every host, applying a mutation's pushes to the
//! host's previous desired state gives exactly its new desired state (same generation, same
//! digest), and hosts without a push keep their state and generation.

use std::collections::BTreeMap;

use vpn_shared::model::{Bandwidth, Change, DesiredState};

use super::{host, named, ss, store, user};
use crate::store::{EditUserFields, HostPush, QuotaEditFields, Servers, Store, UserStatus};

fn limit(bps: Option<u64>) -> EditUserFields {
    EditUserFields {
        bandwidth: Some(Bandwidth {
            down_bps: bps,
            up_bps: bps.map(|b| b / 2),
        }),
        ..Default::default()
    }
}

/// What each tracked host would hold if it had applied every push so far.
struct Fleet {
    store: Store,
    held: BTreeMap<String, DesiredState>,
    names: BTreeMap<String, String>,
}

impl Fleet {
    async fn add_host(&mut self, name: &str, n: u8) {
        let h = host(&self.store, name, n).await;
        let state = self.store.desired_state(&h.id).await.unwrap();
        assert_eq!(state.generation, 0);
        self.names.insert(name.to_owned(), h.id.clone());
        self.held.insert(h.id, state);
    }

    async fn remove_host(&mut self, name: &str) {
        self.store.remove_host(name, 0).await.unwrap();
        let id = self.names.remove(name).unwrap();
        self.held.remove(&id);
    }

    /// Applies pushes, checks every host against the store and returns the pushed host names.
    async fn apply(&mut self, pushes: &[HostPush]) -> Vec<String> {
        let mut pushed = Vec::new();
        for p in pushes {
            let state = self
                .held
                .get_mut(&p.host_id)
                .expect("push to an unknown host");
            let before = state.digest();
            assert_eq!(p.generation, p.base_generation + 1);
            if p.full {
                // Sent as a full state: the host gets what the store holds now.
                *state = self.store.desired_state(&p.host_id).await.unwrap();
                pushed.push(self.name_of(&p.host_id));
                continue;
            }
            state
                .apply_delta(p.base_generation, p.generation, &p.changes)
                .unwrap();
            assert_ne!(state.digest(), before, "a push that changes nothing: {p:?}");
            // What a session keeps instead of the state: the digest moved by the push's step.
            assert_eq!(before ^ p.step, state.digest(), "the step of {p:?}");
            pushed.push(self.name_of(&p.host_id));
        }
        for (id, held) in &self.held {
            let want = self.store.desired_state(id).await.unwrap();
            assert_eq!(
                held.generation,
                want.generation,
                "host {}",
                self.name_of(id)
            );
            assert_eq!(held.digest(), want.digest(), "host {}", self.name_of(id));
            assert_eq!(held, &want);
        }
        pushed.sort();
        pushed
    }

    fn name_of(&self, id: &str) -> String {
        let found = self.names.iter().find(|(_, v)| v.as_str() == id);
        found.map(|(k, _)| k.clone()).unwrap_or_default()
    }

    fn users_on(&self, name: &str) -> Vec<String> {
        let state = &self.held[&self.names[name]];
        state.users.keys().cloned().collect()
    }
}

#[tokio::test]
async fn deltas_rebuild_the_full_state_of_every_host() {
    let (_dir, store) = store().await;
    let mut f = Fleet {
        store,
        held: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        f.add_host(name, i as u8).await;
    }
    let s = &f.store;
    let m = s
        .deploy_service(ss("ss1", 10000, 100, Servers::All), 0)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c"]);

    let s = &f.store;
    let m = s.add_user(user("alice", Servers::All), 1).await.unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c"]);
    let m = f
        .store
        .add_user(user("bob", named(&["a"])), 1)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a"]);
    let m = f
        .store
        .add_user(user("carol", named(&["b", "c", "b"])), 1)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["b", "c"]);
    let m = f
        .store
        .add_user(user("dave", Servers::All), 1)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c"]);
    let m = f
        .store
        .add_user(user("nobody", named(&[])), 1)
        .await
        .unwrap();
    assert!(f.apply(&m.pushes).await.is_empty());

    // A second service on one host: that host gets it plus its users' grown specs.
    let m = f
        .store
        .deploy_service(ss("ss2", 20000, 50, named(&["b"])), 2)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["b"]);
    let upserts = m.pushes[0]
        .changes
        .iter()
        .filter(|c| matches!(c, Change::UpsertUser(_)));
    assert_eq!(upserts.count(), 3, "alice, carol and dave are on b");

    let m = f
        .store
        .set_user_status("alice", UserStatus::Suspended, 3)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c"]);
    let m = f
        .store
        .add_user(user("erin", named(&["c"])), 3)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["c"]);

    // A host added later gets the all-servers service and users in its first full state.
    f.add_host("d", 9).await;
    assert_eq!(f.users_on("d"), ["dave"]);
    let m = f
        .store
        .set_user_status("alice", UserStatus::Active, 4)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c", "d"]);
    let m = f.store.remove_user("carol").await.unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["b", "c"]);
    let m = f
        .store
        .deploy_service(ss("ss3", 30000, 10, named(&["a", "d"])), 5)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "d"]);

    // Removing the service everyone had leaves users in place with fewer credentials.
    let m = f.store.remove_service("ss1").await.unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c", "d"]);
    assert_eq!(f.users_on("c"), ["alice", "dave", "erin"]);

    // An expiry in the past takes dave off every host; moves between inactive statuses and
    // removing an inactive user reach no host.
    let expire = QuotaEditFields {
        expires_at: Some(Some(0)),
        ..QuotaEditFields::default()
    };
    let m = f
        .store
        .edit_user_with("dave", Default::default(), expire, 6)
        .await
        .unwrap();
    assert_eq!(m.value.status, UserStatus::Expired);
    assert_eq!(f.apply(&m.pushes).await, ["a", "b", "c", "d"]);
    let zero = QuotaEditFields {
        data_limit: Some(Some(0)),
        ..QuotaEditFields::default()
    };
    let m = f
        .store
        .edit_user_with("dave", Default::default(), zero, 6)
        .await
        .unwrap();
    assert_eq!(m.value.status, UserStatus::Expired);
    assert!(f.apply(&m.pushes).await.is_empty());
    let m = f
        .store
        .set_user_status("dave", UserStatus::Suspended, 6)
        .await
        .unwrap();
    assert!(f.apply(&m.pushes).await.is_empty());
    let m = f.store.remove_user("dave").await.unwrap();
    assert!(f.apply(&m.pushes).await.is_empty());

    // A removed host takes its explicit placements with it; the others are untouched.
    f.remove_host("b").await;
    assert!(f.apply(&[]).await.is_empty());
    let m = f.store.remove_service("ss2").await.unwrap();
    assert!(f.apply(&m.pushes).await.is_empty(), "ss2 was only on b");
    let m = f
        .store
        .add_user(user("frank", named(&["c", "d"])), 7)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["c", "d"]);
    let m = f.store.remove_user("bob").await.unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a"]);
    let m = f
        .store
        .deploy_service(ss("ss4", 40000, 10, Servers::All), 8)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["a", "c", "d"]);
    assert_eq!(f.users_on("d"), ["alice", "frank"]);
    let frank = &f.held[&f.names["d"]].users["frank"];
    let services: Vec<&str> = frank.credentials.iter().map(|c| c.service()).collect();
    assert_eq!(services, ["ss3", "ss4"]);

    // Limits: a user's reaches its hosts, a service's the service's hosts.
    let m = f.store.edit_user("frank", limit(Some(8_000_000)), 9).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["c", "d"]);
    let m = f.store.edit_user("frank", limit(Some(8_000_000)), 9).await;
    assert!(f.apply(&m.unwrap().pushes).await.is_empty(), "unchanged");
    let m = f.store.edit_user("frank", limit(None), 9).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["c", "d"]);
    let m = f.store.edit_user("alice", limit(Some(1_000)), 9).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["a", "c", "d"]);
    let cap = Bandwidth {
        down_bps: Some(100_000_000),
        up_bps: None,
    };
    let m = f.store.edit_service("ss3", Some(cap), Some(Some(10))).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["a", "d"]);

    // Firewall: per-host and fleet-wide rules, overlapping, added and removed.
    let m = f.store.block("192.0.2.1", &named(&["c"]), 9).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["c"]);
    let m = f.store.block("192.0.2.1", &Servers::All, 9).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["a", "d"]);
    let m = f
        .store
        .block("198.51.100.0/24", &named(&["a", "d"]), 9)
        .await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["a", "d"]);
    f.add_host("e", 10).await;
    assert_eq!(f.held[&f.names["e"]].firewall.blocked, ["192.0.2.1/32"]);
    let m = f.store.unblock("192.0.2.1/32", &named(&["c"])).await;
    assert!(
        f.apply(&m.unwrap().pushes).await.is_empty(),
        "still fleet-wide"
    );
    let m = f.store.block("192.0.2.1/32", &named(&["c"]), 9).await;
    assert!(f.apply(&m.unwrap().pushes).await.is_empty());
    let m = f.store.unblock("192.0.2.1", &Servers::All).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["a", "d", "e"]);
    assert_eq!(f.held[&f.names["c"]].firewall.blocked, ["192.0.2.1/32"]);
    f.remove_host("c").await;
    let m = f.store.unblock("198.51.100.0/24", &named(&["d"])).await;
    assert_eq!(f.apply(&m.unwrap().pushes).await, ["d"]);
}

/// A small deterministic generator (xorshift), so failures replay without a proptest dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// All, or a random subset of the current hosts, now and then with an unknown one.
    fn servers(&mut self, f: &Fleet) -> Servers {
        if self.below(3) == 0 {
            return Servers::All;
        }
        let mut picked: Vec<&str> = f.names.keys().map(String::as_str).collect();
        picked.retain(|_| self.below(2) == 0);
        if self.below(10) == 0 {
            picked.push("ghost");
        }
        named(&picked)
    }
}

#[tokio::test]
async fn random_mutations_keep_deltas_and_full_states_equal() {
    const HOSTS: [&str; 4] = ["h0", "h1", "h2", "h3"];
    const USERS: [&str; 10] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];
    const STATUSES: [UserStatus; 3] = [
        UserStatus::Active,
        UserStatus::Suspended,
        UserStatus::Limited,
    ];
    for seed in [1u64, 7, 42, 2024] {
        let (_dir, store) = store().await;
        let mut f = Fleet {
            store,
            held: BTreeMap::new(),
            names: BTreeMap::new(),
        };
        let mut rng = Rng(seed);
        let mut tokens = 0u8;
        for name in &HOSTS[..3] {
            tokens += 1;
            f.add_host(name, tokens).await;
        }
        let (mut pushed, mut refused, mut firewall_pushed) = (0, 0, 0);
        for _ in 0..300 {
            let pushes = match rng.below(14) {
                0 => {
                    let name = HOSTS[rng.below(HOSTS.len())];
                    if f.names.contains_key(name) {
                        f.remove_host(name).await;
                    } else {
                        tokens += 1;
                        f.add_host(name, tokens).await;
                    }
                    Ok(Vec::new())
                }
                1..=6 => {
                    let name = USERS[rng.below(USERS.len())];
                    let exists = f.store.user(name).await.unwrap().is_some();
                    match rng.below(6) {
                        _ if !exists => {
                            let new = user(name, rng.servers(&f));
                            f.store.add_user(new, 1).await.map(|m| m.pushes)
                        }
                        0 => f.store.remove_user(name).await.map(|m| m.pushes),
                        1 => {
                            let dup = user(name, Servers::All);
                            f.store.add_user(dup, 1).await.map(|m| m.pushes)
                        }
                        2 => {
                            let rate = [None, Some(1_000_000), Some(2_000_000)][rng.below(3)];
                            let m = f.store.edit_user(name, limit(rate), 2).await;
                            m.map(|m| m.pushes)
                        }
                        _ => {
                            let status = STATUSES[rng.below(STATUSES.len())];
                            let m = f.store.set_user_status(name, status, 2).await;
                            m.map(|m| m.pushes)
                        }
                    }
                }
                7..=9 => {
                    let i = rng.below(3);
                    let name = format!("s{i}");
                    if f.store.service(&name).await.unwrap().is_some() {
                        if rng.below(2) == 0 {
                            f.store.remove_service(&name).await.map(|m| m.pushes)
                        } else {
                            let rate = [None, Some(5), Some(9)][rng.below(3)];
                            let m = f.store.edit_service(&name, None, Some(rate)).await;
                            m.map(|m| m.pushes)
                        }
                    } else {
                        // Eight ports for up to ten users: some deploys and adds run out and
                        // must leave everything as it was.
                        let port = 10_000 + 100 * i as u16;
                        let new = ss(&name, port, 8, rng.servers(&f));
                        f.store.deploy_service(new, 3).await.map(|m| m.pushes)
                    }
                }
                _ => {
                    // Few targets and overlapping scopes, so rules often cover each other.
                    let target = ["10.0.0.1", "10.0.0.2", "2001:db8::/48"][rng.below(3)];
                    let servers = rng.servers(&f);
                    if rng.below(2) == 0 {
                        f.store.block(target, &servers, 4).await.map(|m| m.pushes)
                    } else {
                        f.store.unblock(target, &servers).await.map(|m| m.pushes)
                    }
                }
            };
            // A refused mutation (duplicate, unknown, no ports left) must change no host.
            let pushes = pushes.unwrap_or_else(|_| {
                refused += 1;
                Vec::new()
            });
            pushed += pushes.len();
            let firewall = |c: &Change| matches!(c, Change::SetFirewall(_));
            firewall_pushed += pushes
                .iter()
                .filter(|p| p.changes.iter().any(firewall))
                .count();
            f.apply(&pushes).await;
        }
        eprintln!(
            "seed {seed}: {pushed} host pushes ({firewall_pushed} of the firewall), \
             {refused} refused mutations"
        );
        assert!(
            pushed > 50 && refused > 5 && firewall_pushed > 10,
            "the sequence exercises too little"
        );
    }
}

/// Pushes that name many existing users (their old specs read host by host, `store/digest.rs`)
/// and one that rewrites a whole host (sent as its full state) keep the invariant and the
/// digest steps, next to a host where the same service names few users.
#[tokio::test]
async fn a_deploy_to_many_users_steps_digests_and_a_whole_host_becomes_a_full_state() {
    let (_dir, store) = store().await;
    let mut f = Fleet {
        store,
        held: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    for (i, name) in ["few", "many", "huge"].into_iter().enumerate() {
        f.add_host(name, i as u8).await;
    }
    let m = f
        .store
        .deploy_service(ss("ss1", 10000, 5000, Servers::All), 0)
        .await
        .unwrap();
    f.apply(&m.pushes).await;
    for i in 0..40 {
        let m = f
            .store
            .add_user(user(&format!("u{i:02}"), named(&["many", "huge"])), 1)
            .await
            .unwrap();
        f.apply(&m.pushes).await;
    }
    let m = f
        .store
        .add_user(user("alone", named(&["few"])), 1)
        .await
        .unwrap();
    f.apply(&m.pushes).await;
    // More than 2,000 users on `huge` alone, written straight in SQL (2,100 adds would take
    // minutes with every step checked against whole renderings); hosts resync to them.
    for sql in [
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2099) \
         INSERT INTO users (id, name, status, all_servers, created_at, updated_at) \
         SELECT printf('bulk-%04d', i), printf('bulk%04d', i), 'active', 0, 0, 0 FROM n",
        "INSERT INTO user_servers (user_id, host_id) SELECT u.id, h.id FROM users u, hosts h \
         WHERE u.name LIKE 'bulk%' AND h.name = 'huge'",
        "INSERT INTO user_quota (user_id) SELECT id FROM users WHERE name LIKE 'bulk%'",
    ] {
        sqlx::query(sql).execute(&f.store.pool).await.unwrap();
    }
    for id in f.held.keys().cloned().collect::<Vec<_>>() {
        let now = f.store.desired_state(&id).await.unwrap();
        f.held.insert(id, now);
    }

    // A second service everywhere: `few` names one user, `many` 40 (read host by host), `huge`
    // 2,141 (a full state).
    let m = f
        .store
        .deploy_service(ss("ss2", 20000, 5000, Servers::All), 0)
        .await
        .unwrap();
    let by_host = |name: &str| {
        let id = &f.names[name];
        m.pushes.iter().find(|p| &p.host_id == id).unwrap().clone()
    };
    assert_eq!(by_host("few").changes.len(), 2);
    assert_eq!(by_host("many").changes.len(), 41);
    assert!(!by_host("many").full);
    let huge = by_host("huge");
    assert!(
        huge.full && huge.changes.is_empty(),
        "{} changes",
        huge.changes.len()
    );
    assert_eq!(f.apply(&m.pushes).await, ["few", "huge", "many"]);
    assert_eq!(f.users_on("huge").len(), 2_140);

    // Editing one of the 40 reads it user by user; removing the service reads whole hosts.
    let m = f
        .store
        .edit_user("u07", limit(Some(8_000_000)), 2)
        .await
        .unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["huge", "many"]);
    let m = f.store.remove_service("ss2").await.unwrap();
    assert_eq!(f.apply(&m.pushes).await, ["few", "huge", "many"]);
}
