//! Traffic accounting stories (SPEC §2.6) against a real controller and a test agent speaking
//! the real protocol over QUIC: a batch is acked only once it is stored, and `users usage`
//! shows it; a batch whose ack was lost comes again and changes nothing, even when the
//! controller restarted in between; a batch out of order is refused without harming the
//! control channel, and nothing of it is lost once the agent reconnects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    AgentIdentity, AgentSession, Inbound, STEP, TestController, add_user, applied, apply_delta,
    ask, bounded, close_code, deploy_shadowsocks,
};
use vpn_shared::proto::admin::{
    AdminRequest, AdminResponse, ErrorKind, UsageBy, UsageQuery, UsageRow, UserInfo,
};
use vpn_shared::proto::{AgentMsg, ControllerMsg, UsageEntry, UsageReport, close};

/// The agent's ledger identity in these stories.
const EPOCH: u64 = 0xfeed_beef_0000_0001;

fn entry(seq: u64, user: &str, up: u64, down: u64) -> UsageEntry {
    let to = common::now_ms() / 1_000;
    UsageEntry {
        seq,
        user: user.into(),
        service: "shadowsocks".into(),
        up,
        down,
        undirected: 0,
        from: to - 10,
        to,
    }
}

fn usage(entries: Vec<UsageEntry>) -> AgentMsg {
    AgentMsg::Usage(UsageReport {
        epoch: EPOCH,
        entries,
    })
}

async fn user_id(admin: &quinn::Connection, name: &str) -> String {
    let req = AdminRequest::UsersShow { name: name.into() };
    let info: UserInfo = ask(admin, req, |a| match a {
        AdminResponse::User(u) => Some(u),
        _ => None,
    })
    .await;
    info.id
}

async fn users_usage(admin: &quinn::Connection, user: Option<&str>, by: UsageBy) -> Vec<UsageRow> {
    let req = AdminRequest::UsersUsage(UsageQuery {
        user: user.map(String::from),
        since: None,
        by,
    });
    ask(admin, req, |a| match a {
        AdminResponse::Usage(u) => Some(u.rows),
        _ => None,
    })
    .await
}

/// The next `UsageAck` as `(epoch, up_to)`, skipping nothing: the session has nothing else to say.
async fn usage_ack(session: &mut AgentSession) -> (u64, u64) {
    match session.recv().await.unwrap() {
        ControllerMsg::UsageAck { epoch, up_to } => (epoch, up_to),
        other => panic!("expected a UsageAck, got {other:?}"),
    }
}

/// `(user, key, up, down, total)` of each row.
fn shown(rows: &[UsageRow]) -> Vec<(&str, Option<&str>, u64, u64, u64)> {
    rows.iter()
        .map(|r| (r.user.as_str(), r.key.as_deref(), r.up, r.down, r.total))
        .collect()
}

fn metric(tc: &TestController, line_start: &str) -> String {
    let text = vpn_shared::metrics_http::encode(tc.ctl.metrics.registry()).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_string()
}

/// A controller with one enrolled host running shadowsocks and the user alice.
async fn fleet() -> (TestController, quinn::Connection, AgentIdentity, String) {
    let tc = TestController::start().await;
    let admin = tc.admin().await;
    let edge = tc.enroll_agent(&admin, "edge-1").await;
    applied(&admin, &deploy_shadowsocks(20_000)).await;
    applied(&admin, &add_user("alice", false)).await;
    let alice = user_id(&admin, "alice").await;
    (tc, admin, edge, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acked_once_stored_and_its_replay_changes_nothing() {
    bounded(async {
        let (tc, admin, edge, alice) = fleet().await;
        let (mut agent, _, _) = AgentSession::start(&tc, &edge).await.unwrap();
        let batch = usage(vec![
            entry(1, &alice, 1_000, 50_000),
            entry(2, &alice, 200, 7_000),
        ]);
        agent.send(&batch).await.unwrap();
        assert_eq!(usage_ack(&mut agent).await, (EPOCH, 2));
        // The ack follows the commit: the totals are readable the moment it arrives.
        let rows = users_usage(&admin, Some("alice"), UsageBy::Server).await;
        assert_eq!(
            shown(&rows),
            [("alice", Some("edge-1"), 1_200, 57_000, 58_200)]
        );

        // The ack was lost on the way: the agent sends the batch again. Acked again, counted once.
        agent.send(&batch).await.unwrap();
        assert_eq!(usage_ack(&mut agent).await, (EPOCH, 2));
        let rows = users_usage(&admin, None, UsageBy::User).await;
        assert_eq!(shown(&rows), [("alice", None, 1_200, 57_000, 58_200)]);
        assert_eq!(
            metric(
                &tc,
                "vpn_controller_usage_entries_total{result=\"applied\"}"
            ),
            "vpn_controller_usage_entries_total{result=\"applied\"} 2"
        );
        assert_eq!(
            metric(
                &tc,
                "vpn_controller_usage_entries_total{result=\"duplicate\"}"
            ),
            "vpn_controller_usage_entries_total{result=\"duplicate\"} 2"
        );
        assert_eq!(
            metric(&tc, "vpn_controller_usage_bytes_total"),
            "vpn_controller_usage_bytes_total 58200"
        );
        assert_eq!(
            metric(&tc, "vpn_controller_usage_ingest_duration_seconds_count"),
            "vpn_controller_usage_ingest_duration_seconds_count 2"
        );

        // Per day, in UTC; an unknown name is an error naming it.
        let rows = users_usage(&admin, Some("alice"), UsageBy::Day).await;
        let today = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
        assert_eq!(rows[0].key.as_deref(), Some(&today[..10]));
        let req = AdminRequest::UsersUsage(UsageQuery {
            user: Some("mallory".into()),
            since: None,
            by: UsageBy::User,
        });
        let answer = common::admin_request(&admin, &req).await.unwrap();
        assert_eq!(
            answer,
            AdminResponse::Error {
                kind: ErrorKind::BadData,
                message: "user mallory not found".into()
            }
        );
        let next_year = common::now_ms() / 1_000 + 365 * 86_400;
        let req = AdminRequest::UsersUsage(UsageQuery {
            user: None,
            since: Some(next_year),
            by: UsageBy::User,
        });
        match common::admin_request(&admin, &req).await.unwrap() {
            AdminResponse::Error { kind, message } => {
                assert_eq!(kind, ErrorKind::BadData);
                assert!(message.starts_with("invalid --since: "), "{message}");
                assert!(message.ends_with(" is in the future"), "{message}");
            }
            other => panic!("a since in the future answered {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_before_the_ack_arrived_counts_the_replay_once() {
    bounded(async {
        let (tc, admin, edge, alice) = fleet().await;
        let (mut agent, _, _) = AgentSession::start(&tc, &edge).await.unwrap();
        agent
            .send(&usage(vec![
                entry(1, &alice, 10, 1_000),
                entry(2, &alice, 20, 2_000),
            ]))
            .await
            .unwrap();
        // The controller commits, and dies before its ack reaches the agent: the agent never
        // reads it and still holds both entries in its ledger.
        let deadline = tokio::time::Instant::now() + STEP;
        while tc
            .ctl
            .store
            .usage_watermark(&edge.host_id, EPOCH)
            .await
            .unwrap()
            != Some(2)
        {
            assert!(tokio::time::Instant::now() < deadline, "batch never stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(agent);
        drop(admin);
        let tc = tc.restart().await;

        // The agent reconnects and resends from its oldest unacked entry, plus a new one.
        let (mut agent, _, _) = AgentSession::start(&tc, &edge).await.unwrap();
        agent
            .send(&usage(vec![
                entry(1, &alice, 10, 1_000),
                entry(2, &alice, 20, 2_000),
                entry(3, &alice, 5, 500),
            ]))
            .await
            .unwrap();
        assert_eq!(usage_ack(&mut agent).await, (EPOCH, 3));
        let admin = tc.admin().await;
        let rows = users_usage(&admin, None, UsageBy::Service).await;
        assert_eq!(
            shown(&rows),
            [("alice", Some("shadowsocks"), 35, 3_500, 3_535)],
            "exact: nothing lost, nothing doubled"
        );
        assert_eq!(
            metric(
                &tc,
                "vpn_controller_usage_entries_total{result=\"duplicate\"}"
            ),
            "vpn_controller_usage_entries_total{result=\"duplicate\"} 2"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_out_of_order_is_refused_without_harming_the_session_and_nothing_is_lost() {
    bounded(async {
        let (tc, admin, edge, alice) = fleet().await;
        let (mut agent, mut state, _) = AgentSession::start(&tc, &edge).await.unwrap();
        agent
            .send(&usage(vec![
                entry(2, &alice, 100, 100),
                entry(1, &alice, 100, 100),
            ]))
            .await
            .unwrap();
        tc.expect_refusals("usage_batch", 1).await;
        // Nothing of it, and nothing after it in this session, is applied or acked: a later
        // batch applied first would make the refused one's entries look like replays.
        agent
            .send(&usage(vec![entry(3, &alice, 1, 1)]))
            .await
            .unwrap();
        // The control channel goes on: a change still arrives as a delta.
        applied(&admin, &add_user("bob", false)).await;
        let delta = agent.recv().await.unwrap();
        let digest = apply_delta(&mut state, delta);
        agent.ack(state.generation, digest).await.unwrap();
        assert!(
            agent.next(Duration::from_millis(300)).await.is_none(),
            "no usage ack after a refused batch"
        );
        assert_eq!(
            tc.ctl
                .store
                .usage_watermark(&edge.host_id, EPOCH)
                .await
                .unwrap(),
            None
        );
        assert!(users_usage(&admin, None, UsageBy::User).await.is_empty());

        // A fixed agent reconnects and resends its ledger in order: everything counts once.
        drop(agent);
        let (mut agent, _, _) = AgentSession::start(&tc, &edge).await.unwrap();
        agent
            .send(&usage(vec![
                entry(1, &alice, 100, 100),
                entry(2, &alice, 100, 100),
                entry(3, &alice, 1, 1),
            ]))
            .await
            .unwrap();
        assert_eq!(usage_ack(&mut agent).await, (EPOCH, 3));
        let rows = users_usage(&admin, Some("alice"), UsageBy::User).await;
        assert_eq!(shown(&rows), [("alice", None, 201, 201, 402)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_on_a_session_older_than_protocol_4_is_a_protocol_error() {
    bounded(async {
        let (tc, _admin, edge, alice) = fleet().await;
        let (mut agent, _, _) = AgentSession::start_as(&tc, &edge, 3).await.unwrap();
        agent
            .send(&usage(vec![entry(1, &alice, 1, 1)]))
            .await
            .unwrap();
        if let Some(Inbound::Msg(ControllerMsg::UsageAck { .. })) = agent.next(STEP).await {
            panic!("a protocol 3 session got a UsageAck");
        }
        let e = agent.closed().await;
        assert_eq!(close_code(&e), Some(close::PROTOCOL), "{e:?}");
        assert_eq!(
            tc.ctl
                .store
                .usage_watermark(&edge.host_id, EPOCH)
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_store_could_not_take_is_applied_before_the_next_one() {
    bounded(async {
        let (tc, admin, edge, alice) = fleet().await;
        let (mut agent, _, _) = AgentSession::start(&tc, &edge).await.unwrap();
        // The store breaks under the session (the watermark table goes away for a moment).
        let url = format!("sqlite://{}", tc.ctl.config.database_path.display());
        let side = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("ALTER TABLE usage_watermarks RENAME TO usage_watermarks_away")
            .execute(&side)
            .await
            .unwrap();
        agent
            .send(&usage(vec![entry(1, &alice, 10, 10)]))
            .await
            .unwrap();
        assert!(
            agent.next(Duration::from_millis(500)).await.is_none(),
            "nothing is acked while the store fails"
        );
        sqlx::query("ALTER TABLE usage_watermarks_away RENAME TO usage_watermarks")
            .execute(&side)
            .await
            .unwrap();
        side.close().await;
        // The next batch brings the kept one through first, in order.
        agent
            .send(&usage(vec![entry(2, &alice, 1, 1)]))
            .await
            .unwrap();
        assert_eq!(usage_ack(&mut agent).await, (EPOCH, 1));
        assert_eq!(usage_ack(&mut agent).await, (EPOCH, 2));
        let rows = users_usage(&admin, None, UsageBy::User).await;
        assert_eq!(shown(&rows), [("alice", None, 11, 11, 22)]);
    })
    .await;
}

/// Many agents reporting in the same instant (their batches queue behind one another and are
/// written in groups, `ingest.rs`): every batch is acked up to its own highest seq and the
/// totals are exact. The benchmark below is the same story at 1,000 × 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reporting_at_once_are_each_acked_and_counted_exactly() {
    many_agents_report_at_once(24, 200, 2, false).await;
}

/// The ingest bar through the real protocol: `USAGE_BENCH_HOSTS` (default 1,000) agent sessions
/// in this process, each sending a 1,000-entry batch per simulated 10 s period
/// (`USAGE_BENCH_PERIODS`, default 3) as fast as acks
/// come back; prints entries/s, ack latency (send to `UsageAck`) and how the batches were
/// grouped into transactions, checks exact totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints ingest figures through QUIC; run in release with --ignored --nocapture"]
async fn ingest_through_the_protocol_from_many_agents() {
    let hosts: usize = std::env::var("USAGE_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let periods: u64 = std::env::var("USAGE_BENCH_PERIODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    many_agents_report_at_once(hosts, 1_000, periods, true).await;
}

/// `hosts` enrolled agents, `users` users, each agent reporting every user once per period,
/// all at the same instant; `print`: the benchmark's figures.
#[allow(clippy::print_stdout)] // a benchmark prints its figures (SPEC §3); it asserts only exactness
async fn many_agents_report_at_once(hosts: usize, users_n: u64, periods: u64, print: bool) {
    let tc = TestController::start().await;
    let admin = tc.admin().await;
    let mut sessions = Vec::new();
    let started = std::time::Instant::now();
    for h in 0..hosts {
        let id = tc.enroll_agent(&admin, &format!("edge-{h:04}")).await;
        let (s, _, _) = AgentSession::start(&tc, &id).await.unwrap();
        sessions.push(s);
    }
    if print {
        println!(
            "{hosts} agents enrolled and connected in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    // Real users, each with its quota row; every other one with a monthly limit far above
    // what the run moves, so every batch updates every row and evaluates nobody. On no
    // server: their adds push nothing to the sessions.
    let mut users = Vec::new();
    for u in 0..users_n {
        let quota = vpn_controller::store::QuotaSettings {
            data_limit: (u % 2 == 0).then_some(1 << 40),
            reset: if u % 2 == 0 {
                vpn_controller::quota::Reset::Month
            } else {
                vpn_controller::quota::Reset::Never
            },
            ..Default::default()
        };
        let new = vpn_controller::store::NewUser {
            name: format!("bench-user-{u:04}"),
            email: None,
            note: None,
            servers: vpn_controller::store::Servers::Named(vec![]),
            protocols: None,
            bandwidth: Default::default(),
            quota,
        };
        let added = tc
            .ctl
            .store
            .add_user(new, common::now_ms() / 1_000)
            .await
            .unwrap();
        users.push(added.value.id);
    }
    let mut latencies = Vec::new();
    for period in 0..periods {
        let to = common::now_ms() / 1_000;
        let begun = std::time::Instant::now();
        let mut tasks = Vec::new();
        for (h, mut s) in sessions.drain(..).enumerate() {
            let entries: Vec<UsageEntry> = users
                .iter()
                .enumerate()
                .map(|(u, user)| UsageEntry {
                    seq: period * users_n + u as u64 + 1,
                    user: user.clone(),
                    service: "ss".into(),
                    up: 1,
                    down: 10,
                    undirected: 0,
                    from: to - 10,
                    to,
                })
                .collect();
            let msg = AgentMsg::Usage(UsageReport {
                epoch: h as u64 + 1,
                entries,
            });
            tasks.push(tokio::spawn(async move {
                let sent = std::time::Instant::now();
                s.send(&msg).await.unwrap();
                let (_, up_to) = usage_ack(&mut s).await;
                assert_eq!(up_to, (period + 1) * users_n);
                (s, sent.elapsed())
            }));
        }
        for t in tasks {
            let (s, latency) = t.await.unwrap();
            sessions.push(s);
            latencies.push(latency);
        }
        let wall = begun.elapsed();
        if print {
            println!(
                "period {period}: {} entries from {hosts} agents acked in {:.2} s = {:.0} entries/s \
                 ({:.0} % of 10 s)",
                hosts as u64 * users_n,
                wall.as_secs_f64(),
                (hosts as u64 * users_n) as f64 / wall.as_secs_f64(),
                wall.as_secs_f64() * 10.0,
            );
        }
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let groups = metric(&tc, "vpn_controller_usage_group_batches_count");
    let grouped = metric(&tc, "vpn_controller_usage_group_batches_sum");
    let write = metric(&tc, "vpn_controller_usage_ingest_duration_seconds_sum");
    if print {
        println!(
            "send-to-ack latency over {} batches: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
             store transactions: {groups}, {grouped}, {write}",
            latencies.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            at(1.0).as_secs_f64() * 1e3,
        );
    }
    let rows = users_usage(&admin, None, UsageBy::User).await;
    assert_eq!(rows.len(), users_n as usize);
    for r in &rows {
        assert_eq!(
            (r.up, r.down),
            (hosts as u64 * periods, 10 * hosts as u64 * periods)
        );
    }
    // The quota counters moved with the totals, once per entry.
    let quotas = tc.ctl.store.quotas().await.unwrap();
    for id in &users {
        assert_eq!(
            quotas[id].used,
            11 * hosts as u64 * periods,
            "quota counter of {id}"
        );
    }
    // Every batch was written exactly once, however they were grouped.
    assert_eq!(
        grouped,
        format!(
            "vpn_controller_usage_group_batches_sum {}",
            hosts as u64 * periods
        )
    );
}
