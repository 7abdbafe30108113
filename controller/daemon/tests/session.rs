//! Agent session stories at the protocol level (SPEC §2.2, §4 item 5): a real controller on
//! 127.0.0.1 and a test agent that sends broken frames, acks late, acks wrong, or asks for a
//! resync, and checks every state it receives against the digest the controller claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    AgentIdentity, AgentSession, Inbound, TestController, add_user, admin_request, applied,
    apply_delta_parts as apply, assert_closed_with, bounded, deploy_shadowsocks, hello,
};
use vpn_controller::config::FileConfig;
use vpn_shared::model::{Change, DesiredState, Digest};
use vpn_shared::proto::admin::{AdminRequest, AdminResponse, HostApplyState};
use vpn_shared::proto::frame::{MAX_FRAME, encode, read_frame, write_frame};
use vpn_shared::proto::{AgentMsg, ControllerMsg, close};

/// The byte streams a broken or hostile agent might send, each of which must end its session
/// with a protocol error. `finish` ends the stream after the bytes.
fn bad_frames() -> Vec<(&'static str, Vec<u8>, bool)> {
    let resync = encode(&AgentMsg::ResyncRequest {
        reason: "x".repeat(64),
    })
    .unwrap();
    let mut trailing = encode(&AgentMsg::KeepAlive).unwrap();
    trailing.push(0);
    trailing[3] += 1; // the length now covers one byte after the message
    let garbage_body = [&8u32.to_be_bytes()[..], &[0xff; 8]].concat();
    vec![
        ("undecodable body", garbage_body, false),
        ("trailing bytes after a message", trailing, false),
        (
            "half a frame, then end of stream",
            resync[..resync.len() / 2].to_vec(),
            true,
        ),
        ("half a length prefix, then end of stream", vec![0, 0], true),
        ("length 0xFFFF_FFFF", u32::MAX.to_be_bytes().to_vec(), false),
        (
            "length of 16 MiB + 1",
            ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec(),
            false,
        ),
    ]
}

async fn send_raw(session: &mut AgentSession, bytes: &[u8], finish: bool) {
    session.send.write_all(bytes).await.unwrap();
    if finish {
        session.send.finish().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_oversized_frames_close_the_session_with_a_protocol_error() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        let panics_before = common::worker_panics();

        for (what, bytes, finish) in bad_frames() {
            // Instead of the hello.
            let mut session = AgentSession::open(&tc, &host).await.unwrap();
            send_raw(&mut session, &bytes, finish).await;
            let seen = session.drain().await;
            assert!(seen.is_empty(), "{what} before hello: got {seen:?}");
            assert_closed_with(
                &session.conn,
                close::PROTOCOL,
                &format!("{what} before hello"),
            )
            .await;

            // In the middle of a synced session.
            let (mut session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
            send_raw(&mut session, &bytes, finish).await;
            assert_closed_with(
                &session.conn,
                close::PROTOCOL,
                &format!("{what} mid-session"),
            )
            .await;
        }

        // A well-formed frame that has no place in a running session.
        let (mut session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
        session.send(&hello(&host.host_id)).await.unwrap();
        assert_closed_with(&session.conn, close::PROTOCOL, "a second hello").await;

        // The controller is still there for everyone else.
        let answer = admin_request(&admin, &AdminRequest::ServersList).await;
        let Ok(AdminResponse::Servers(servers)) = answer else {
            panic!("servers list after the abuse: {answer:?}");
        };
        assert_eq!(servers.len(), 1);
        let (mut session, state, digest) = AgentSession::start(&tc, &host).await.unwrap();
        session.ack(state.generation, digest).await.unwrap();
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        let ControllerMsg::Delta { .. } = session.recv().await.unwrap() else {
            panic!("a good session after the abuse did not get its delta");
        };
        assert_eq!(
            common::worker_panics(),
            panics_before,
            "a task panicked while handling bad frames"
        );
        tc.stop().await;
    })
    .await;
}

fn upserts(changes: &[Change]) -> Vec<&str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::UpsertUser(u) => Some(u.name.as_str()),
            _ => None,
        })
        .collect()
}

/// The generation the controller last recorded as acked by `name`.
async fn acked_generation(admin: &quinn::Connection, name: &str) -> Option<u64> {
    match admin_request(admin, &AdminRequest::ServersList).await {
        Ok(AdminResponse::Servers(servers)) => servers
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.acked_generation),
        other => panic!("servers list: {other:?}"),
    }
}

const ACK_TIMEOUT: Duration = Duration::from_secs(2);

async fn start_synced(tc: &TestController, host: &AgentIdentity) -> (AgentSession, DesiredState) {
    let (session, state, digest) = AgentSession::start(tc, host).await.unwrap();
    assert_eq!(
        state.digest(),
        digest,
        "the full state's digest does not match its content"
    );
    (session, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_gets_its_full_state_then_deltas_and_admins_wait_for_its_acks() {
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            ack_timeout: Some("2s".into()),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        applied(&admin, &add_user("alice", false)).await;

        // Connect: the full state, as the store has it.
        let (mut session, mut state) = start_synced(&tc, &host).await;
        let g = state.generation;
        assert!(state.services.contains_key("shadowsocks"), "{state:?}");
        assert!(state.users.contains_key("alice"), "{state:?}");
        session.ack(g, state.digest()).await.unwrap();

        // A waiting add completes only once the agent acked the delta it caused.
        let request = {
            let admin = admin.clone();
            tokio::spawn(async move { admin_request(&admin, &add_user("bob", true)).await })
        };
        let (base, digest, changes) = apply(&mut state, session.recv().await.unwrap());
        assert_eq!(base, g, "the delta names the acked generation as its base");
        assert_eq!(state.generation, g + 1);
        assert_eq!(upserts(&changes), ["bob"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !request.is_finished(),
            "the add returned before the agent acked"
        );
        session.ack(g + 1, digest).await.unwrap();
        let answer = request.await.unwrap();
        let Ok(AdminResponse::Applied(done)) = answer else {
            panic!("users add: {answer:?}");
        };
        assert_eq!(done.hosts.len(), 1, "{done:?}");
        assert_eq!(done.hosts[0].server, "edge-1");
        assert_eq!(done.hosts[0].generation, g + 1);
        assert_eq!(done.hosts[0].state, HostApplyState::Applied);
        assert_eq!(acked_generation(&admin, "edge-1").await, Some(g + 1));

        // The same add, never acked: pending after the ack timeout, not an error, not a hang.
        let started = Instant::now();
        let request = {
            let admin = admin.clone();
            tokio::spawn(async move { admin_request(&admin, &add_user("carol", true)).await })
        };
        let (_, _, changes) = apply(&mut state, session.recv().await.unwrap());
        assert_eq!(upserts(&changes), ["carol"]);
        let answer = request.await.unwrap();
        let Ok(AdminResponse::Applied(done)) = answer else {
            panic!("users add: {answer:?}");
        };
        assert_eq!(done.hosts[0].state, HostApplyState::Pending, "{done:?}");
        let waited = started.elapsed();
        assert!(
            waited >= ACK_TIMEOUT - Duration::from_millis(100),
            "pending after {waited:?}, before the ack timeout"
        );

        // The agent asks for a resync: the full state again, equal to what the deltas built.
        session
            .send(&AgentMsg::ResyncRequest {
                reason: "test: lost track".into(),
            })
            .await
            .unwrap();
        let (again, digest) = session.full_state().await.unwrap();
        assert_eq!(
            again, state,
            "full state after resync differs from the deltas applied"
        );
        assert_eq!(digest, state.digest());

        // An ack whose digest does not match what was sent: the controller resends it all.
        session
            .ack(state.generation, Digest([0xab; 32]))
            .await
            .unwrap();
        let (again, digest) = session.full_state().await.unwrap();
        assert_eq!(again, state);
        assert_eq!(digest, state.digest());

        // A correct ack settles it: nothing more is sent.
        session.ack(state.generation, digest).await.unwrap();
        let extra = session.next(Duration::from_millis(300)).await;
        assert!(extra.is_none(), "unexpected after a good ack: {extra:?}");
        assert_eq!(acked_generation(&admin, "edge-1").await, Some(g + 2));
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_with_the_wrong_digest_does_not_count_as_applied() {
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            ack_timeout: Some("3s".into()),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        let (mut session, mut state) = start_synced(&tc, &host).await;
        session.ack(state.generation, state.digest()).await.unwrap();

        let request = {
            let admin = admin.clone();
            tokio::spawn(async move { admin_request(&admin, &add_user("dave", true)).await })
        };
        let (_, digest, _) = apply(&mut state, session.recv().await.unwrap());
        // The agent claims the generation but applied something else.
        session
            .ack(state.generation, Digest([0xab; 32]))
            .await
            .unwrap();
        let (again, _) = session.full_state().await.unwrap();
        assert_eq!(again, state);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let early = request.is_finished();

        // Once it acks the resent state with the right digest, the change is applied.
        session.ack(state.generation, digest).await.unwrap();
        let answer = request.await.unwrap();
        let Ok(AdminResponse::Applied(done)) = answer else {
            panic!("users add: {answer:?}");
        };
        assert_eq!(done.hosts[0].state, HostApplyState::Applied, "{done:?}");
        assert!(
            !early,
            "a waiting add reported its host as applied on an ack whose digest did not match"
        );
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_for_a_generation_never_sent_does_not_satisfy_waits() {
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            ack_timeout: Some("2s".into()),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        let (mut session, mut state) = start_synced(&tc, &host).await;
        session.ack(state.generation, state.digest()).await.unwrap();

        let request = {
            let admin = admin.clone();
            tokio::spawn(async move { admin_request(&admin, &add_user("erin", true)).await })
        };
        apply(&mut state, session.recv().await.unwrap());
        // A buggy agent acks far ahead of anything it was sent.
        let claimed = state.generation + 1000;
        session.ack(claimed, state.digest()).await.unwrap();
        let answer = request.await.unwrap();
        let Ok(AdminResponse::Applied(done)) = answer else {
            panic!("users add: {answer:?}");
        };
        let recorded = acked_generation(&admin, "edge-1").await;
        assert_ne!(
            done.hosts[0].state,
            HostApplyState::Applied,
            "an ack for generation {claimed}, never sent (the host is at {}), reported the \
             change as applied",
            state.generation
        );
        assert!(
            recorded.is_none_or(|g| g <= state.generation),
            "the store recorded acked generation {recorded:?} beyond the desired {}",
            state.generation
        );
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_agent_replaces_its_old_session_quietly() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        let (mut old, _) = start_synced(&tc, &host).await;
        let (mut new, mut state) = start_synced(&tc, &host).await;

        // The old session ends without being told the host was removed.
        let seen = old.drain().await;
        assert!(seen.is_empty(), "the replaced session got {seen:?}");
        assert_closed_with(&old.conn, close::SHUTDOWN, "replaced session").await;

        // The new one carries on.
        applied(&admin, &add_user("frank", false)).await;
        let (_, _, changes) = apply(&mut state, new.recv().await.unwrap());
        assert_eq!(upserts(&changes), ["frank"]);
        let answer = admin_request(&admin, &AdminRequest::ServersList).await;
        let Ok(AdminResponse::Servers(servers)) = answer else {
            panic!("servers list: {answer:?}");
        };
        assert!(servers[0].online, "{servers:?}");
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_user_adds_reaches_the_agent_as_a_few_coalesced_deltas() {
    const USERS: usize = 200;
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        let (mut session, mut state) = start_synced(&tc, &host).await;
        let g0 = state.generation;

        let adds = (0..USERS).map(|i| {
            let admin = admin.clone();
            tokio::spawn(async move {
                admin_request(&admin, &add_user(&format!("u{i:03}"), false)).await
            })
        });
        let adds: Vec<_> = adds.collect();

        let mut deltas = 0;
        let mut last_digest = state.digest();
        while state.generation < g0 + USERS as u64 {
            let msg = match session.next(common::STEP).await {
                Some(Inbound::Msg(msg)) => msg,
                other => panic!(
                    "stream gave {other:?} at generation {} of {}",
                    state.generation,
                    g0 + USERS as u64
                ),
            };
            let (_, digest, _) = apply(&mut state, msg);
            last_digest = digest;
            deltas += 1;
        }
        for add in adds {
            let answer = add.await.unwrap();
            let Ok(AdminResponse::Applied(done)) = answer else {
                panic!("users add: {answer:?}");
            };
            assert_eq!(done.hosts.len(), 1);
            assert_eq!(done.hosts[0].state, HostApplyState::NotWaited);
        }

        // One delta per coalescing window (20 ms) while the burst lasts: about a dozen on an
        // idle machine, a few dozen on a loaded one. One per add would mean no coalescing.
        eprintln!("{USERS} user adds arrived as {deltas} deltas");
        assert!(
            deltas <= USERS / 2,
            "{USERS} adds arrived as {deltas} deltas: not coalesced"
        );
        assert_eq!(state.generation, g0 + USERS as u64);
        assert_eq!(state.digest(), last_digest);
        assert_eq!(state.users.len(), USERS);
        assert!((0..USERS).all(|i| state.users.contains_key(&format!("u{i:03}"))));

        // And what the deltas built is what a fresh full state says.
        session
            .send(&AgentMsg::ResyncRequest {
                reason: "test: compare".into(),
            })
            .await
            .unwrap();
        let (full, digest) = session.full_state().await.unwrap();
        assert_eq!(full, state);
        assert_eq!(digest, last_digest);
        tc.stop().await;
    })
    .await;
}

/// A peer with a genuine agent certificate says hello, reads the welcome, then stops reading and
/// closes while its (large) first full state is still being written. The host must go offline:
/// a failed first send used to skip the unregister, leaving it "online" with no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_during_its_first_full_state_goes_offline() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        // About 3 MB of state: more than the peer's stream window, so the write must wait for
        // a reader that never comes.
        common::insert_block_rules(&tc, 200_000, false).await;

        let config = tc.client_config(&host.cert_pem, &host.key_pem, vpn_shared::proto::ALPN_AGENT);
        let conn = tc.connect(config).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_frame(&mut send, &hello(&host.host_id)).await.unwrap();
        let welcome = tokio::time::timeout(
            common::STEP,
            read_frame::<_, ControllerMsg>(&mut recv, MAX_FRAME),
        )
        .await
        .expect("welcome in time")
        .unwrap();
        assert!(
            matches!(welcome, Some(ControllerMsg::Welcome { .. })),
            "{welcome:?}"
        );
        common::wait_for_server(&admin, "edge-1", common::STEP, "registered", |s| s.online).await;
        conn.close(0u32.into(), b"gone");

        let seen = common::wait_for_server(
            &admin,
            "edge-1",
            common::STEP,
            "a host whose only session is gone must be offline",
            |s| !s.online,
        )
        .await;
        assert!(seen.last_seen.is_some(), "{seen:?}");
        tc.stop().await;
    })
    .await;
}

/// A block list whose encoding alone exceeds one frame (16 MiB) still reaches the agent: it is
/// split across the full state's chunks like the users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_list_larger_than_one_frame_arrives_in_chunks() {
    const RULES: u32 = 400_000; // 400,000 × 43 bytes ≈ 17.2 MB
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        common::insert_block_rules(&tc, RULES, true).await;

        let (mut session, state, digest) = AgentSession::start(&tc, &host).await.unwrap();
        assert_eq!(state.firewall.blocked.len(), RULES as usize);
        assert_eq!(
            state.digest(),
            digest,
            "the chunks rebuild the state the digest names"
        );
        session.ack(state.generation, digest).await.unwrap();
        common::wait_for_server(&admin, "edge-1", common::STEP, "acked", |s| {
            s.acked_generation == Some(state.generation)
        })
        .await;
        tc.stop().await;
    })
    .await;
}

/// An agent reporting a flood of health lines, each huge: what the controller keeps (and shows
/// in `servers show`) is bounded in count and length, and says how much was left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_health_lines_is_kept_bounded() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        let (mut session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
        let missing: Vec<String> = (0..2_000)
            .map(|i| format!("{i}: {}", "x".repeat(4_000)))
            .collect();
        session
            .send(&AgentMsg::Health(vpn_shared::proto::HostHealth { missing }))
            .await
            .unwrap();
        let server =
            common::wait_for_server(&admin, "edge-1", common::STEP, "health reported", |s| {
                !s.health.is_empty()
            })
            .await;
        assert!(
            server.health.len() <= 33,
            "{} health lines kept",
            server.health.len()
        );
        let longest = server
            .health
            .iter()
            .map(|l| l.len())
            .max()
            .unwrap_or_default();
        assert!(longest <= 300, "a health line of {longest} bytes kept");
        assert!(
            server.health.last().is_some_and(|l| l.contains("more")),
            "the cut is not said: {:?}",
            server.health.last()
        );
        tc.stop().await;
    })
    .await;
}

/// An agent sends its health on every connect: the controller logs (and counts) a host's health
/// only when it changed, not on every report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_health_is_logged_once_per_change() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        let health = |lines: &[&str]| {
            AgentMsg::Health(vpn_shared::proto::HostHealth {
                missing: lines.iter().map(|l| l.to_string()).collect(),
            })
        };
        let changes = || {
            tc.ctl
                .metrics
                .events()
                .get("health_changed")
                .copied()
                .unwrap_or_default()
        };
        let wait_changes = |n: u64| async move {
            let deadline = tokio::time::Instant::now() + common::STEP;
            while changes() < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} changes, expected {n}",
                    changes()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let report = health(&["cls_u32 missing: disables limits"]);
        for _ in 0..3 {
            let (mut session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
            for _ in 0..10 {
                session.send(&report).await.unwrap();
            }
            // A different report, then the first one again: two changes per session.
            session.send(&health(&["marker"])).await.unwrap();
            session.send(&report).await.unwrap();
            common::wait_for_server(&admin, "edge-1", common::STEP, "report kept", |s| {
                s.health == ["cls_u32 missing: disables limits"]
            })
            .await;
        }
        // First report, then each switch to and from the marker: 1 + 3 × 2. The 30 repeats of
        // the same report, within and across sessions, logged nothing.
        wait_changes(7).await;
        assert_eq!(changes(), 7);
        tc.stop().await;
    })
    .await;
}

/// A peer that stopped reading stalls its session: every change for it then queues up. Past
/// `max_queued_changes` the backlog is replaced by one full resync, so what the controller holds
/// for that host stays bounded; when the peer reads again it catches up with a full state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_costs_a_bounded_backlog_then_one_resync() {
    const LIMIT: usize = 20;
    const ADDS: usize = 60;
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            max_queued_changes: Some(LIMIT),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        // A full state larger than the peer's stream window: the session's first send blocks
        // on a peer that does not read, which is what a stalled agent looks like.
        common::insert_block_rules(&tc, 200_000, false).await;
        let mut session = AgentSession::open_paused(&tc, &host).await.unwrap();
        session.send(&hello(&host.host_id)).await.unwrap();
        common::wait_for_server(&admin, "edge-1", common::STEP, "registered", |s| s.online).await;

        let mut most = 0;
        for i in 0..ADDS {
            applied(&admin, &add_user(&format!("u{i:02}"), false)).await;
            let queued = tc.ctl.fleet.queued(&host.host_id).expect("still online");
            most = most.max(queued);
        }
        assert!(
            most <= LIMIT,
            "{most} changes queued for a stalled agent, bound {LIMIT}"
        );

        // Reading again: the welcome, the first full state, then one more full state (the
        // resync) that already holds every user added meanwhile.
        session.resume_reading();
        let Ok(ControllerMsg::Welcome { .. }) = session.recv().await else {
            panic!("no welcome");
        };
        let (first, _) = session.full_state().await.unwrap();
        assert!(
            first.users.len() < ADDS,
            "the first state was read before the adds"
        );
        let (caught_up, digest) = session.full_state().await.unwrap();
        assert_eq!(
            caught_up.users.len(),
            ADDS,
            "the resync covers every dropped push"
        );
        assert_eq!(caught_up.digest(), digest);
        session.ack(caught_up.generation, digest).await.unwrap();
        common::wait_for_server(&admin, "edge-1", common::STEP, "caught up", |s| {
            s.acked_generation == Some(s.desired_generation)
        })
        .await;
        tc.stop().await;
    })
    .await;
}

/// An agent that applied a state but could not save it says so in its ack (`host/state`): the
/// host shows it (`servers show` → "Last apply"), and a waiting change reports it as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsaved_state_in_the_ack_shows_on_the_host() {
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            ack_timeout: Some("3s".into()),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        let (mut session, mut state) = start_synced(&tc, &host).await;
        session.ack(state.generation, state.digest()).await.unwrap();

        let request = {
            let admin = admin.clone();
            tokio::spawn(async move { admin_request(&admin, &add_user("gina", true)).await })
        };
        let (_, digest, _) = apply(&mut state, session.recv().await.unwrap());
        let unsaved = "applied but not saved, a restart would re-apply an older state: \
                       cannot write /data/state/desired.bin: Read-only file system";
        session
            .send(&AgentMsg::Ack(vpn_shared::proto::Ack {
                generation: state.generation,
                digest,
                results: vec![
                    vpn_shared::proto::ResourceResult::ok("service/shadowsocks"),
                    vpn_shared::proto::ResourceResult::error("host/state", unsaved),
                ],
            }))
            .await
            .unwrap();
        let answer = request.await.unwrap();
        let Ok(AdminResponse::Applied(done)) = answer else {
            panic!("users add: {answer:?}");
        };
        let HostApplyState::Failed(failures) = &done.hosts[0].state else {
            panic!("an unsaved state reported as {:?}", done.hosts[0].state);
        };
        assert_eq!(failures, &[format!("host/state: {unsaved}")]);

        let server = common::wait_for_server(&admin, "edge-1", common::STEP, "acked", |s| {
            s.acked_generation == Some(state.generation)
        })
        .await;
        assert_eq!(
            server.health,
            [format!("last apply: host/state: {unsaved}")],
            "the host does not show its unsaved state"
        );

        // A later good ack clears it.
        session.ack(state.generation, digest).await.unwrap();
        common::wait_for_server(&admin, "edge-1", common::STEP, "cleared", |s| {
            s.health.is_empty()
        })
        .await;
        tc.stop().await;
    })
    .await;
}
