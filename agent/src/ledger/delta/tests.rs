use super::*;
use proptest::prelude::*;

fn now(secs: u64) -> Now {
    Now {
        unix_ms: i64::try_from(secs * 1000).unwrap(),
        mono: Duration::from_secs(secs),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn total(service: &str, users: &[(&str, u64)]) -> Reading {
    Reading {
        service: service.into(),
        uptime: None,
        users: users
            .iter()
            .map(|(u, t)| ((*u).to_owned(), Count::Total(*t)))
            .collect(),
    }
}

/// One reading observed and applied, as the ledger does once its record is on disk.
fn step(b: &mut Baselines, r: &Reading, users: &[&str], at: Now) -> Observation {
    let obs = b.observe(
        std::slice::from_ref(r),
        &set(&[r.service.as_str()]),
        &set(users),
        at,
    );
    b.apply(&obs.changes, Some(at.mono));
    obs
}

fn counted_of(obs: &Observation) -> Vec<(String, u64)> {
    obs.deltas
        .iter()
        .map(|d| (d.user.clone(), d.counted.total()))
        .collect()
}

#[test]
fn a_counter_that_goes_on_counts_its_growth_and_one_that_went_back_counts_whole() {
    assert_eq!(
        counted(
            Some(Base::Known(Count::Total(100))),
            true,
            Count::Total(150)
        ),
        Count::Total(50)
    );
    // ssmanager re-added the port: 30 bytes since, the 100 before are gone with the old port.
    assert_eq!(
        counted(Some(Base::Known(Count::Total(100))), true, Count::Total(30)),
        Count::Total(30)
    );
    // One direction back is the whole counter restarting: never a negative delta.
    let base = Some(Base::Known(Count::Directional { up: 10, down: 500 }));
    assert_eq!(
        counted(base, true, Count::Directional { up: 20, down: 5 }),
        Count::Directional { up: 20, down: 5 }
    );
    assert_eq!(
        counted(Some(Base::Zero), false, Count::Total(7)),
        Count::Total(7)
    );
    // Another kind than the baseline's is adopted, not counted.
    assert_eq!(
        counted(base, true, Count::Total(9_999)),
        Count::Total(0),
        "a source change must not count an engine's whole history"
    );
}

#[test]
fn first_readings_count_whole_only_where_the_ledger_watched_the_engine() {
    let mut b = Baselines::default();
    // A new ledger beside an engine that has run for a while: adopt, count nothing.
    let obs = step(
        &mut b,
        &total("ss", &[("alice", 5_000)]),
        &["alice"],
        now(10),
    );
    assert!(obs.deltas.is_empty(), "{obs:?}");
    // Watched from now on: bob's port appears after this reading, all of it is his traffic.
    let obs = step(
        &mut b,
        &total("ss", &[("alice", 5_100), ("bob", 40)]),
        &["alice", "bob"],
        now(20),
    );
    assert_eq!(
        counted_of(&obs),
        [("alice".into(), 100), ("bob".into(), 40)]
    );
    assert_eq!(obs.deltas[0].from_ms, 10_000);
    assert_eq!(obs.deltas[0].to_ms, 20_000);

    // A service whose container the agent itself created counts from zero at once.
    let mut fresh = Baselines::default();
    let changes = fresh.resets(&[Reset::Service("ss".into())].into(), now(0));
    fresh.apply(&changes, Some(now(0).mono));
    let obs = step(
        &mut fresh,
        &total("ss", &[("alice", 70)]),
        &["alice"],
        now(10),
    );
    assert_eq!(counted_of(&obs), [("alice".into(), 70)]);
}

#[test]
fn a_port_the_agent_re_added_counts_from_zero_even_when_it_is_already_past_the_old_baseline() {
    let mut b = Baselines::default();
    step(&mut b, &total("ss", &[("alice", 0)]), &["alice"], now(0));
    step(
        &mut b,
        &total("ss", &[("alice", 1_000)]),
        &["alice"],
        now(10),
    );
    // The password changed: the applier closed and re-added the port (ssmanager counts anew).
    let reset = [Reset::User {
        service: "ss".into(),
        user: "alice".into(),
    }];
    let changes = b.resets(&reset.into(), now(12));
    b.apply(&changes, Some(now(12).mono));
    // 1,500 bytes since the re-add: past the old 1,000, so only the reset tells the truth.
    let obs = step(
        &mut b,
        &total("ss", &[("alice", 1_500)]),
        &["alice"],
        now(20),
    );
    assert_eq!(counted_of(&obs), [("alice".into(), 1_500)]);
}

#[test]
fn an_engine_restart_is_told_by_its_uptime() {
    let xray = |uptime: u64, up: u64, down: u64| Reading {
        service: "vl".into(),
        uptime: Some(Duration::from_secs(uptime)),
        users: vec![("alice".into(), Count::Directional { up, down })],
    };
    let mut b = Baselines::default();
    step(&mut b, &xray(100, 10, 10), &["alice"], now(1_000));
    let obs = step(&mut b, &xray(110, 20, 30), &["alice"], now(1_010));
    assert_eq!(counted_of(&obs), [("alice".into(), 30)]);
    assert!(obs.restarted.is_empty());
    // Xray restarted 5 s ago (uptime 5 < 60 s since the last reading): alice's 50/60 were all
    // counted by the new engine, though both are above the old baseline.
    let obs = step(&mut b, &xray(5, 50, 60), &["alice"], now(1_070));
    assert_eq!(obs.restarted, ["vl"]);
    assert_eq!(
        obs.deltas[0].counted,
        Count::Directional { up: 50, down: 60 }
    );
    // After an agent restart the wall clock stands in for the monotonic one.
    let mut reopened: Baselines =
        postcard::from_bytes(&postcard::to_allocvec(&b).unwrap()).unwrap();
    assert_eq!(reopened.services["vl"].read_mono, None);
    let obs = step(&mut reopened, &xray(65, 55, 60), &["alice"], now(1_130));
    assert_eq!(counted_of(&obs), [("alice".into(), 5)]);
}

#[test]
fn baselines_outlive_a_missing_reading_but_not_the_user_or_the_service() {
    let mut b = Baselines::default();
    step(
        &mut b,
        &total("ss", &[("alice", 10), ("bob", 10)]),
        &["alice", "bob"],
        now(0),
    );
    // bob is missing from one reading (Xray keeps a removed user's counter and continues it).
    step(
        &mut b,
        &total("ss", &[("alice", 20)]),
        &["alice", "bob"],
        now(10),
    );
    let obs = step(
        &mut b,
        &total("ss", &[("alice", 20), ("bob", 25)]),
        &["alice", "bob"],
        now(20),
    );
    assert_eq!(
        counted_of(&obs),
        [("bob".into(), 15)],
        "not 25: no double count"
    );
    // bob is deleted from the host; his id never comes back.
    step(&mut b, &total("ss", &[("alice", 20)]), &["alice"], now(30));
    assert!(!b.services["ss"].users.contains_key("bob"));
    let obs = b.observe(&[], &set(&[]), &set(&["alice"]), now(40));
    b.apply(&obs.changes, None);
    assert!(b.services.is_empty(), "the service left the state");
}

#[test]
fn a_closed_port_is_forgotten_and_an_agent_reset_before_any_reading_counts_whole() {
    let mut b = Baselines::default();
    let add = Reset::User {
        service: "ss".into(),
        user: "carol".into(),
    };
    let changes = b.resets(&[add].into(), now(0));
    b.apply(&changes, None);
    // The ledger never read `ss` (others adopt), but carol's port is the agent's own and new.
    let obs = step(
        &mut b,
        &total("ss", &[("alice", 900), ("carol", 30)]),
        &["alice", "carol"],
        now(10),
    );
    assert_eq!(counted_of(&obs), [("carol".into(), 30)]);
    let forget = Reset::Forget {
        service: "ss".into(),
        user: "carol".into(),
    };
    let changes = b.resets(&[forget].into(), now(11));
    b.apply(&changes, None);
    assert!(!b.services["ss"].users.contains_key("carol"));
}

/// What happens to the engine between two readings of the property below.
#[derive(Debug, Clone)]
enum Op {
    /// `n` bytes through the user's counter (split up/down by `up_share`).
    Traffic { user: usize, n: u64, up_share: u8 },
    /// The agent re-added the user's port (ssmanager) and says so.
    Readd { user: usize },
    /// The engine restarted: Xray tells by its uptime, ssmanager's container was recreated by
    /// the agent (a declared service reset).
    Restart,
    /// The engine restarted one counter without anyone saying so; the reading after it is
    /// below the last one (the only way such a reset can be seen).
    Silent { user: usize, keep_per_mille: u16 },
    /// A reading, with one user missing from it.
    Read { missing: Option<usize> },
    /// The agent restarted: the baselines come back from disk without the monotonic clock.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..1_000_000u64, any::<u8>())
            .prop_map(|(user, n, up_share)| Op::Traffic { user, n, up_share }),
        1 => (0..3usize).prop_map(|user| Op::Readd { user }),
        1 => Just(Op::Restart),
        1 => (0..3usize, 0..1000u16).prop_map(|(user, keep_per_mille)| Op::Silent { user, keep_per_mille }),
        4 => proptest::option::of(0..3usize).prop_map(|missing| Op::Read { missing }),
        1 => Just(Op::Reopen),
    ]
}

/// The engine's counters and what each holds that no reading has seen yet.
struct Engine {
    counters: [(u64, u64); 3],
    unseen: [u64; 3],
    /// What the last reading that saw each user read.
    last_read: [(u64, u64); 3],
    started_s: u64,
    /// Reset without notice and not read since: more traffic could lift the counter back over
    /// its baseline, where no one can tell the reset (so the history leaves it alone).
    silent: [bool; 3],
}

const USERS: [&str; 3] = ["u0", "u1", "u2"];

fn run(ops: &[Op], directional: bool) -> (u64, u64) {
    let service = "svc";
    let mut b = Baselines::default();
    let mut clock = 0u64;
    let mut e = Engine {
        counters: [(0, 0); 3],
        unseen: [0; 3],
        last_read: [(0, 0); 3],
        started_s: 0,
        silent: [false; 3],
    };
    // The agent created the container: the ledger watches it from its first byte.
    let changes = b.resets(&[Reset::Service(service.into())].into(), now(0));
    b.apply(&changes, Some(now(0).mono));
    let (mut real, mut ledger) = (0u64, 0u64);
    for op in ops {
        // Readings and events are at least 3 s apart (see RESTART_SLACK).
        clock += 5;
        match *op {
            Op::Traffic { user, n, up_share } => {
                if e.silent[user] {
                    continue;
                }
                let up = n * u64::from(up_share) / 255;
                e.counters[user].0 += up;
                e.counters[user].1 += n - up;
                e.unseen[user] += n;
            }
            Op::Readd { user } => {
                e.counters[user] = (0, 0);
                e.unseen[user] = 0;
                e.silent[user] = false;
                let reset = Reset::User {
                    service: service.into(),
                    user: USERS[user].into(),
                };
                let changes = b.resets(&[reset].into(), now(clock));
                b.apply(&changes, Some(now(clock).mono));
            }
            Op::Restart => {
                e.counters = [(0, 0); 3];
                e.unseen = [0; 3];
                e.started_s = clock;
                e.silent = [false; 3];
                if !directional {
                    let reset = Reset::Service(service.into());
                    let changes = b.resets(&[reset].into(), now(clock));
                    b.apply(&changes, Some(now(clock).mono));
                }
            }
            Op::Silent {
                user,
                keep_per_mille,
            } => {
                let (up, down) = e.last_read[user];
                // Below the last reading in the direction(s) the baseline compares.
                let below = |v: u64| v * u64::from(keep_per_mille) / 1000;
                let after = if directional {
                    if up == 0 {
                        continue;
                    }
                    (below(up), down)
                } else {
                    let t = up + down;
                    if t == 0 {
                        continue;
                    }
                    (below(t), 0)
                };
                e.counters[user] = after;
                e.unseen[user] = after.0 + after.1;
                e.silent[user] = true;
            }
            Op::Read { missing } => {
                let users = (0..3)
                    .filter(|u| Some(*u) != missing)
                    .map(|u| {
                        let (up, down) = e.counters[u];
                        let c = if directional {
                            Count::Directional { up, down }
                        } else {
                            Count::Total(up + down)
                        };
                        (USERS[u].to_owned(), c)
                    })
                    .collect();
                let reading = Reading {
                    service: service.into(),
                    uptime: directional.then(|| Duration::from_secs(clock - e.started_s)),
                    users,
                };
                let obs = step(&mut b, &reading, &USERS, now(clock));
                for u in (0..3).filter(|u| Some(*u) != missing) {
                    real += e.unseen[u];
                    e.unseen[u] = 0;
                    e.silent[u] = false;
                    e.last_read[u] = e.counters[u];
                    if !directional {
                        e.last_read[u] = (e.counters[u].0 + e.counters[u].1, 0);
                    }
                }
                ledger += obs.deltas.iter().map(|d| d.counted.total()).sum::<u64>();
            }
            Op::Reopen => {
                b = postcard::from_bytes(&postcard::to_allocvec(&b).unwrap()).unwrap();
            }
        }
    }
    (real, ledger)
}

proptest! {
    /// For any history of traffic, re-added ports, engine restarts, unannounced resets,
    /// readings with a user missing and agent restarts, the deltas add up to exactly the bytes
    /// the engine counted and a reading saw: nothing negative, nothing twice.
    #[test]
    fn deltas_sum_to_the_bytes_really_counted(ops in proptest::collection::vec(op(), 0..60)) {
        for directional in [true, false] {
            let (real, ledger) = run(&ops, directional);
            prop_assert_eq!(real, ledger, "directional: {}", directional);
        }
    }
}
