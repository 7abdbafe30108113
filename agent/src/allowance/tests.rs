use proptest::prelude::*;
use vpn_shared::model::UserSpec;
use vpn_shared::proto::Allowance;

use super::*;

const E: u64 = 7;

fn entry(seq: u64, user: &str, bytes: u64) -> UsageEntry {
    UsageEntry {
        seq,
        user: user.into(),
        service: "ss".into(),
        up: 0,
        down: 0,
        undirected: bytes,
        from: 0,
        to: 0,
    }
}

fn limited(user: &str, remaining: u64) -> Allowance {
    Allowance {
        user: user.into(),
        remaining: Some(remaining),
        expires_at: None,
    }
}

fn msg(epoch: u64, up_to: u64, complete: bool, users: Vec<Allowance>) -> Allowances {
    Allowances {
        epoch,
        up_to,
        complete,
        users,
    }
}

/// A book of `(epoch, base)` holding `users` as the controller sent them.
fn book(epoch: u64, base: u64, users: Vec<Allowance>) -> AllowanceBook {
    let mut b = AllowanceBook::default();
    b.receive(&msg(epoch, base, true, users), &[], epoch);
    b
}

fn remaining(b: &AllowanceBook, user: &str) -> Option<u64> {
    b.users.get(user).and_then(|f| f.remaining)
}

fn spent(b: &AllowanceBook, ledger: &[UsageEntry], epoch: u64, user: &str) -> u64 {
    b.spent(ledger, epoch).get(user).copied().unwrap_or(0)
}

/// What the user may still use as the book sees it against `ledger`.
fn left(b: &AllowanceBook, ledger: &[UsageEntry], epoch: u64, user: &str) -> i128 {
    i128::from(remaining(b, user).unwrap_or(0)) - i128::from(spent(b, ledger, epoch, user))
}

fn user(name: &str, id: &str) -> UserSpec {
    UserSpec {
        name: name.into(),
        id: id.into(),
        credentials: vec![],
        bandwidth: Default::default(),
    }
}

fn desired(users: &[(&str, &str)]) -> TrackedState {
    TrackedState::new(DesiredState {
        generation: 3,
        users: users
            .iter()
            .map(|(name, id)| ((*name).to_owned(), user(name, id)))
            .collect(),
        ..Default::default()
    })
}

#[test]
fn an_ack_folds_the_entries_the_figures_did_not_count_and_moves_the_base() {
    let mut b = book(E, 1, vec![limited("alice", 1000)]);
    let mut ledger = vec![
        entry(1, "alice", 100), // counted by the figures already
        entry(2, "alice", 200),
        entry(3, "bob", 50), // not limited
        entry(4, "alice", 30),
    ];
    assert_eq!(left(&b, &ledger, E, "alice"), 1000 - 230);

    assert!(b.on_ack(E, 3, &ledger[..3]));
    ledger.drain(..3);
    assert_eq!(remaining(&b, "alice"), Some(800));
    assert_eq!((b.epoch, b.base), (E, 3));
    assert_eq!(spent(&b, &ledger, E, "alice"), 30);
    assert_eq!(left(&b, &ledger, E, "alice"), 1000 - 230);

    // An old ack again (a resend): nothing moves back, nothing folds twice.
    assert!(!b.on_ack(E, 2, &[]));
    assert_eq!((b.epoch, b.base, remaining(&b, "alice")), (E, 3, Some(800)));
}

#[test]
fn an_ack_of_a_new_ledger_epoch_folds_all_it_drops() {
    // The figures count the old ledger (epoch 7) up to 50; a new ledger began at 1.
    let mut b = book(E, 50, vec![limited("alice", 1000)]);
    let mut ledger = vec![entry(1, "alice", 100), entry(2, "alice", 100)];
    assert_eq!(spent(&b, &ledger, 8, "alice"), 200);

    assert!(b.on_ack(8, 1, &ledger[..1]));
    ledger.drain(..1);
    assert_eq!((b.epoch, b.base), (8, 1));
    assert_eq!(remaining(&b, "alice"), Some(900));
    assert_eq!(left(&b, &ledger, 8, "alice"), 800);
}

#[test]
fn a_partial_message_re_bases_the_users_it_does_not_list() {
    let mut b = book(E, 1, vec![limited("alice", 1000), limited("bob", 1000)]);
    let ledger = vec![
        entry(2, "alice", 100),
        entry(3, "bob", 100),
        entry(4, "alice", 50),
    ];
    assert_eq!(left(&b, &ledger, E, "alice"), 850);

    // The controller counted up to 3 and says only what changed for bob.
    b.receive(&msg(E, 3, false, vec![limited("bob", 500)]), &ledger, E);
    assert_eq!((b.epoch, b.base), (E, 3));
    assert_eq!(remaining(&b, "alice"), Some(900));
    assert_eq!(left(&b, &ledger, E, "alice"), 850);
    assert_eq!(left(&b, &ledger, E, "bob"), 500);
}

#[test]
fn a_partial_message_older_than_the_book_errs_on_the_side_of_cutting_off() {
    let mut b = book(E, 4, vec![limited("alice", 1000)]);
    let ledger = vec![entry(3, "alice", 100), entry(4, "alice", 50)];
    assert_eq!(left(&b, &ledger, E, "alice"), 1000);
    // Entries 3 and 4 are in alice's figures; the message does not count them, and they
    // cannot be taken out of a figure again: they are subtracted once more.
    b.receive(&msg(E, 2, false, vec![]), &ledger, E);
    assert_eq!(left(&b, &ledger, E, "alice"), 850);
}

#[test]
fn a_complete_message_replaces_every_user() {
    let mut b = book(E, 1, vec![limited("alice", 1), limited("bob", 2)]);
    let ledger = [entry(2, "carol", 10)];
    b.receive(&msg(E, 1, true, vec![limited("carol", 100)]), &ledger, E);
    assert_eq!(b.users.keys().collect::<Vec<_>>(), ["carol"]);
    assert_eq!(left(&b, &ledger, E, "carol"), 90);
}

#[test]
fn a_user_with_neither_limit_is_not_limited() {
    let mut b = book(E, 1, vec![limited("alice", 0)]);
    assert_eq!(b.blocked(&[], E, 0).len(), 1);
    let unlimited = Allowance {
        user: "alice".into(),
        remaining: None,
        expires_at: None,
    };
    b.receive(&msg(E, 1, false, vec![unlimited]), &[], E);
    assert!(b.users.is_empty());
    assert!(b.blocked(&[], E, 0).is_empty());
}

#[test]
fn remaining_zero_blocks_at_once_and_used_up_blocks_at_the_last_byte() {
    let b = book(E, 1, vec![limited("alice", 0), limited("bob", 100)]);
    let mut ledger = vec![entry(2, "bob", 99)];
    let blocked = b.blocked(&ledger, E, 0);
    assert_eq!(blocked.get("alice"), Some(&CutOffCause::DataUsedUp));
    assert_eq!(blocked.get("bob"), None);
    ledger.push(entry(3, "bob", 1));
    assert_eq!(
        b.blocked(&ledger, E, 0).get("bob"),
        Some(&CutOffCause::DataUsedUp)
    );
}

#[test]
fn expiry_blocks_from_its_second_on_and_wins_over_data() {
    let b = book(
        E,
        0,
        vec![
            Allowance {
                user: "alice".into(),
                remaining: None,
                expires_at: Some(100),
            },
            Allowance {
                user: "bob".into(),
                remaining: Some(0),
                expires_at: Some(100),
            },
        ],
    );
    let at_99 = b.blocked(&[], E, 99);
    assert_eq!(at_99.get("alice"), None);
    assert_eq!(at_99.get("bob"), Some(&CutOffCause::DataUsedUp));
    let at_100 = b.blocked(&[], E, 100);
    assert_eq!(at_100.get("alice"), Some(&CutOffCause::Expired));
    assert_eq!(at_100.get("bob"), Some(&CutOffCause::Expired));
}

#[test]
fn bytes_given_back_or_a_later_expiry_bring_the_user_back() {
    let state = desired(&[("alice", "a"), ("bob", "b")]);
    let mut f = Enforcer::new(book(
        E,
        1,
        vec![
            limited("a", 100),
            Allowance {
                user: "b".into(),
                remaining: None,
                expires_at: Some(50),
            },
        ],
    ));
    let ledger = vec![entry(2, "a", 150)];
    assert!(!f.would_cut_off(&state, &ledger[..0], E, 49));
    assert!(f.would_cut_off(&state, &ledger, E, 49));
    let t = f.update(&state, &ledger, E, 60);
    assert!(!f.would_cut_off(&state, &ledger, E, 60), "already cut off");
    let cut: Vec<_> = t
        .cut_off
        .iter()
        .map(|n| (n.user.as_str(), n.cause))
        .collect();
    assert_eq!(
        cut,
        [("a", CutOffCause::DataUsedUp), ("b", CutOffCause::Expired)]
    );
    assert_eq!(
        (t.cut_off[0].remaining, t.cut_off[0].spent),
        (Some(100), 150)
    );
    assert_eq!(f.effective(&state).users.len(), 0);
    // Nothing changed: no transition.
    assert!(f.update(&state, &ledger, E, 61).is_empty());

    // A reset of alice's period and a new expiry for bob.
    let back = msg(
        E,
        1,
        false,
        vec![
            limited("a", 1000),
            Allowance {
                user: "b".into(),
                remaining: None,
                expires_at: Some(1000),
            },
        ],
    );
    f.book.receive(&back, &ledger, E);
    let t = f.update(&state, &ledger, E, 62);
    assert!(t.cut_off.is_empty());
    assert_eq!(t.restored, ["a", "b"]);
    assert_eq!(*f.effective(&state), *state.state());
    assert!(f.blocked().is_empty());
}

#[test]
fn only_users_of_the_desired_state_are_cut_off_and_each_is_reported_until_heard() {
    let mut f = Enforcer::new(book(E, 0, vec![limited("a", 0), limited("gone", 0)]));
    let state = desired(&[("alice", "a"), ("bob", "b")]);
    let t = f.update(&state, &[], E, 10);
    assert_eq!(t.cut_off.len(), 1);
    assert_eq!(f.blocked().keys().collect::<Vec<_>>(), ["a"]);
    let sent = f.unreported();
    assert_eq!(
        sent,
        [CutOff {
            user: "a".into(),
            cause: CutOffCause::DataUsedUp,
            at: 10
        }]
    );
    // Still queued until the controller heard of it; then gone.
    assert_eq!(f.unreported(), sent);
    f.reported(&sent);
    assert!(f.unreported().is_empty());

    // Alice leaves the desired state: not "restored", just gone.
    let t = f.update(&desired(&[("bob", "b")]), &[], E, 11);
    assert!(t.is_empty(), "{t:?}");
    assert!(f.blocked().is_empty());
}

#[test]
fn a_restart_reports_the_users_still_cut_off() {
    let b = book(E, 0, vec![limited("a", 0)]);
    let restored: AllowanceBook = postcard::from_bytes(&postcard::to_stdvec(&b).unwrap()).unwrap();
    assert_eq!(restored, b);
    // A fresh enforcer over the saved book: the cut-off is new to it, so it is queued again.
    let mut f = Enforcer::new(restored);
    f.update(&desired(&[("alice", "a")]), &[], E, 5);
    assert_eq!(f.unreported().len(), 1);
}

#[test]
fn the_effective_state_leaves_out_users_cut_off_by_id() {
    let state = desired(&[("alice", "a"), ("bob", "b")]);
    let none = BTreeMap::new();
    assert!(matches!(effective(state.state(), &none), Cow::Borrowed(_)));
    let other: BTreeMap<String, CutOffCause> = [("x".to_owned(), CutOffCause::Expired)].into();
    assert!(matches!(effective(state.state(), &other), Cow::Borrowed(_)));

    let blocked: BTreeMap<String, CutOffCause> = [("a".to_owned(), CutOffCause::Expired)].into();
    let eff = effective(state.state(), &blocked);
    assert_eq!(eff.users.keys().collect::<Vec<_>>(), ["bob"]);
    assert_eq!(eff.generation, state.generation());

    // The enforcer's cache follows the desired state it was made from, and a state it has
    // not seen yet is still computed without the user.
    let mut f = Enforcer::new(book(E, 0, vec![limited("a", 0)]));
    f.update(&state, &[], E, 0);
    assert!(matches!(f.effective(&state), Cow::Borrowed(_)));
    let mut next = state.clone();
    next.apply_delta(
        3,
        4,
        &[vpn_shared::model::Change::UpsertUser(user("carol", "c"))],
    )
    .unwrap();
    let eff = f.effective(&next);
    assert_eq!(eff.users.keys().collect::<Vec<_>>(), ["bob", "carol"]);
}

// --- The model: a controller counting over all hosts, and this host's ledger. ---

const USERS: [&str; 3] = ["u0", "u1", "u2"];

#[derive(Debug, Clone)]
enum Op {
    /// Bytes measured on this host: a ledger entry.
    Traffic { user: usize, bytes: u64 },
    /// The controller stores the next `n` entries it has not stored (in order).
    Ingest { n: usize },
    /// Its ack of what it stored reaches the agent.
    Ack,
    /// It sends allowances: all users (`complete`) or those in `mask`.
    Send { complete: bool, mask: u8 },
    /// Traffic of the user on another host.
    Elsewhere { user: usize, bytes: u64 },
    /// A new limit (raised, lowered, none).
    Limit { user: usize, limit: Option<u64> },
    /// A new period: the controller's count starts again.
    Reset { user: usize },
    /// A new ledger (the old one was damaged); see [`Model::new_epoch`].
    NewEpoch,
    /// The agent restarts: the book comes back as last saved (the session saves it after a
    /// message and after an ack that changed a figure).
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 1..400u64).prop_map(|(user, bytes)| Op::Traffic { user, bytes }),
        3 => (0..4usize).prop_map(|n| Op::Ingest { n }),
        3 => Just(Op::Ack),
        3 => (any::<bool>(), any::<u8>()).prop_map(|(complete, mask)| Op::Send { complete, mask }),
        1 => (0..3usize, 1..400u64).prop_map(|(user, bytes)| Op::Elsewhere { user, bytes }),
        1 => (0..3usize, proptest::option::of(0..3000u64)).prop_map(|(user, limit)| Op::Limit { user, limit }),
        1 => (0..3usize).prop_map(|user| Op::Reset { user }),
        1 => Just(Op::NewEpoch),
        1 => Just(Op::Restart),
    ]
}

/// What the agent was last told about a user: what was left (not clamped at 0) and what of
/// this host the controller had stored then (highest seq per epoch).
type Told = (i128, BTreeMap<u64, u64>);

struct Model {
    // This host's ledger.
    epoch: u64,
    next_seq: u64,
    ledger: Vec<UsageEntry>,
    acked: u64,
    /// Every entry that counts anywhere, with its epoch.
    history: Vec<(u64, UsageEntry)>,
    // The controller.
    stored: BTreeMap<u64, u64>,
    last_epoch: u64,
    used: [u64; 3],
    limit: [Option<u64>; 3],
    told: [Option<Told>; 3],
    // The agent.
    book: AllowanceBook,
    saved: Vec<u8>,
}

impl Model {
    fn new() -> Model {
        Model {
            epoch: 1,
            next_seq: 1,
            ledger: Vec::new(),
            acked: 0,
            history: Vec::new(),
            stored: BTreeMap::new(),
            last_epoch: 0,
            used: [0; 3],
            limit: [Some(1000), Some(2000), None],
            told: [None, None, None],
            book: AllowanceBook::default(),
            saved: postcard::to_stdvec(&AllowanceBook::default()).unwrap(),
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Traffic { user, bytes } => {
                let e = entry(self.next_seq, USERS[user], bytes);
                self.next_seq += 1;
                self.history.push((self.epoch, e.clone()));
                self.ledger.push(e);
            }
            Op::Ingest { n } => {
                let mark = self.stored.get(&self.epoch).copied().unwrap_or(0);
                let new: Vec<UsageEntry> = self
                    .ledger
                    .iter()
                    .filter(|e| e.seq > mark)
                    .take(n)
                    .cloned()
                    .collect();
                for e in new {
                    self.used[USERS.iter().position(|u| *u == e.user).unwrap()] += e.total();
                    self.stored.insert(self.epoch, e.seq);
                    self.last_epoch = self.epoch;
                }
            }
            Op::Ack => {
                let Some(&up_to) = self.stored.get(&self.epoch) else {
                    return;
                };
                let dropped: Vec<UsageEntry> = self
                    .ledger
                    .iter()
                    .filter(|e| e.seq <= up_to)
                    .cloned()
                    .collect();
                if self.book.on_ack(self.epoch, up_to, &dropped) {
                    self.save();
                }
                self.ledger.retain(|e| e.seq > up_to);
                self.acked = self.acked.max(up_to);
            }
            Op::Send { complete, mask } => self.send(complete, mask),
            Op::Elsewhere { user, bytes } => self.used[user] += bytes,
            Op::Limit { user, limit } => self.limit[user] = limit,
            Op::Reset { user } => self.used[user] = 0,
            Op::NewEpoch => self.new_epoch(),
            Op::Restart => self.book = postcard::from_bytes(&self.saved).unwrap(),
        }
    }

    fn save(&mut self) {
        self.saved = postcard::to_stdvec(&self.book).unwrap();
    }

    fn send(&mut self, complete: bool, mask: u8) {
        let listed: Vec<usize> = (0..3)
            .filter(|&u| {
                if complete {
                    self.limit[u].is_some()
                } else {
                    mask & (1 << u) != 0
                }
            })
            .collect();
        let users = listed
            .iter()
            .map(|&u| Allowance {
                user: USERS[u].into(),
                remaining: self.limit[u].map(|l| l.saturating_sub(self.used[u])),
                expires_at: None,
            })
            .collect();
        let up_to = self.stored.get(&self.last_epoch).copied().unwrap_or(0);
        let m = msg(self.last_epoch, up_to, complete, users);
        for u in 0..3 {
            if listed.contains(&u) || complete {
                self.told[u] = self.limit[u].filter(|_| listed.contains(&u)).map(|l| {
                    (
                        i128::from(l) - i128::from(self.used[u]),
                        self.stored.clone(),
                    )
                });
            }
        }
        self.book.receive(&m, &self.ledger, self.epoch);
        self.save();
    }

    /// The ledger is replaced by a new one. Its unacked entries are lost to everyone, which
    /// is the truth only when the controller had not stored any of them: otherwise the
    /// controller counts bytes the agent can no longer see until the next allowance, a loss
    /// the agent cannot know of. So only then.
    fn new_epoch(&mut self) {
        let mark = self.stored.get(&self.epoch).copied().unwrap_or(0);
        if mark > self.acked {
            return;
        }
        let (epoch, lost): (u64, BTreeSet<u64>) =
            (self.epoch, self.ledger.iter().map(|e| e.seq).collect());
        self.history
            .retain(|(ep, e)| !(*ep == epoch && lost.contains(&e.seq)));
        self.ledger.clear();
        self.epoch += 1;
        self.next_seq = 1;
        self.acked = 0;
    }

    /// What `user` may really still use, as of what the agent was told: the figure then, less
    /// every byte of this host the controller had not stored then.
    fn truth(&self, u: usize) -> Option<i128> {
        let (left, stored) = self.told[u].as_ref()?;
        let since: u64 = self
            .history
            .iter()
            .filter(|(ep, e)| e.user == USERS[u] && e.seq > stored.get(ep).copied().unwrap_or(0))
            .map(|(_, e)| e.total())
            .sum();
        Some(left - i128::from(since))
    }
}

proptest! {
    /// For any story of traffic, stores, acks (late, lost, repeated), allowance messages (all
    /// users or some), traffic elsewhere, new limits and periods, a new ledger and restarts,
    /// the agent's view of what each user has left equals the controller's figure less this
    /// host's bytes the figure did not include, and it cuts off exactly when that runs out.
    #[test]
    fn spent_and_remaining_never_drift_from_the_truth(ops in proptest::collection::vec(op(), 0..80)) {
        let mut m = Model::new();
        for (i, op) in ops.iter().enumerate() {
            m.step(op);
            let blocked = m.book.blocked(&m.ledger, m.epoch, 0);
            for (u, name) in USERS.iter().enumerate() {
                let Some(truth) = m.truth(u) else {
                    prop_assert!(!blocked.contains_key(*name), "step {}: {} blocked without a limit", i, name);
                    continue;
                };
                let agent = left(&m.book, &m.ledger, m.epoch, name);
                if truth > 0 {
                    prop_assert_eq!(agent, truth, "step {}: {} ({:?})", i, name, op);
                } else {
                    prop_assert!(agent <= 0, "step {}: {} has {} left, truly {}", i, name, agent, truth);
                }
                prop_assert_eq!(blocked.contains_key(*name), truth <= 0, "step {}: {}", i, name);
            }
        }
    }
}
