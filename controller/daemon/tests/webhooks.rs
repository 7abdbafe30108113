//! Webhook stories with a real HTTP receiver on loopback: a degraded host is announced with a
//! signature the receiver verifies and its recovery follows; a receiver that is down or stalls
//! never delays a change, and its deliveries are retried a bounded number of times; a
//! certificate near expiry is announced once per certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    AgentSession, Receiver, TestController, add_user, admin_request, apply_delta, bounded,
    deploy_shadowsocks, events, expect_events, now_ms, report, signature_verifies, webhook,
};
use vpn_controller::config::FileConfig;
use vpn_shared::proto::admin::{AdminResponse, HostApplyState};
use vpn_shared::proto::{Ack, AgentMsg, AgentReport, ResourceResult};

const SECRET: &str = "s3cret-for-the-receiver-only";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_host_is_announced_signed_and_its_recovery_follows() {
    bounded(async {
        let mut receiver = Receiver::start(200, Duration::ZERO).await;
        let tc = TestController::start_with(FileConfig {
            webhooks: vec![webhook(
                &receiver.url,
                &["host_degraded", "host_recovered", "host_offline"],
                SECRET,
            )],
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let edge = tc.enroll_agent(&admin, "edge-1").await;
        common::applied(&admin, &deploy_shadowsocks(20_000)).await;
        let (mut s, st, digest) = AgentSession::start(&tc, &edge).await.unwrap();
        s.send(&AgentMsg::Ack(Ack {
            generation: st.generation,
            digest,
            results: vec![ResourceResult::error(
                "service/shadowsocks",
                "image ghcr.io/example/nope:1: not found",
            )],
        }))
        .await
        .unwrap();

        let hit = receiver.next().await;
        assert!(signature_verifies(&hit, SECRET), "signature of {hit:?}");
        assert!(!signature_verifies(&hit, "another-secret-altogether"));
        assert_eq!(hit.header("x-vpn-event"), "host_degraded");
        assert_eq!(hit.header("content-type"), "application/json");
        let body = hit.json();
        assert_eq!(body["event"], "host_degraded");
        assert_eq!(body["host"]["name"], "edge-1");
        assert_eq!(body["host"]["id"], edge.host_id.as_str());
        assert_eq!(body["detail"]["failing"], 1);
        assert_eq!(
            body["detail"]["resources"][0]["resource"],
            "service/shadowsocks"
        );
        assert_eq!(body["delivery"], hit.header("x-vpn-delivery"));
        assert!(body["at"].as_i64().unwrap() > 0);

        // Still failing: no second degraded event. Then a clean report: recovered.
        s.send(&report(
            now_ms(),
            st.generation,
            vec![ResourceResult::error(
                "service/shadowsocks",
                "still no image",
            )],
        ))
        .await
        .unwrap();
        s.send(&report(
            now_ms(),
            st.generation,
            vec![ResourceResult::ok("service/shadowsocks")],
        ))
        .await
        .unwrap();
        let hit = receiver.next().await;
        assert_eq!(
            hit.header("x-vpn-event"),
            "host_recovered",
            "{:?}",
            hit.json()
        );
        assert!(signature_verifies(&hit, SECRET));
        assert_eq!(hit.json()["detail"]["recovered"][0], "service/shadowsocks");

        s.conn.close(0u32.into(), b"agent stopped");
        let hit = receiver.next().await;
        assert_eq!(hit.header("x-vpn-event"), "host_offline");
        expect_events(&tc, "webhook_delivered", 3, common::STEP).await;
        assert_eq!(events(&tc, "webhook_failed"), 0);
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_or_stalled_receiver_never_delays_a_change_and_its_retries_stop() {
    bounded(async {
        // Nothing listens on `down`'s port; `stalled` takes 30 s to answer, past the 5 s
        // request timeout.
        let down = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}/hook", l.local_addr().unwrap())
        };
        let mut stalled = Receiver::start(200, Duration::from_secs(30)).await;
        let quick = |url: &str, attempts| vpn_controller::config::FileWebhook {
            attempts: Some(attempts),
            retry_backoff: Some("50ms".into()),
            ..webhook(url, &["host_online"], SECRET)
        };
        let tc = TestController::start_with(FileConfig {
            ack_timeout: Some("10s".into()),
            webhooks: vec![quick(&down, 3), quick(&stalled.url, 2)],
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let edge = tc.enroll_agent(&admin, "edge-1").await;
        let (mut s, mut st, digest) = AgentSession::start(&tc, &edge).await.unwrap();
        s.ack(st.generation, digest).await.unwrap();
        // The online event is on its way to both receivers, one of them stuck in it.
        let first = stalled.next().await;
        assert_eq!(first.header("x-vpn-event"), "host_online");

        let started = Instant::now();
        let adding = {
            let admin = admin.clone();
            tokio::spawn(async move { admin_request(&admin, &add_user("alice", true)).await })
        };
        let d = apply_delta(&mut st, s.recv().await.unwrap());
        s.ack(st.generation, d).await.unwrap();
        let answer = adding.await.unwrap();
        let took = started.elapsed();
        let Ok(AdminResponse::Applied(done)) = answer else {
            panic!("users add: {answer:?}");
        };
        assert_eq!(done.hosts[0].state, HostApplyState::Applied);
        assert!(
            took < Duration::from_secs(5),
            "users add took {took:?} while a receiver stalls for 30 s"
        );

        // `down`: 3 attempts refused, then given up. `stalled`: 2 timed-out attempts.
        expect_events(&tc, "webhook_gave_up", 2, Duration::from_secs(20)).await;
        assert_eq!(events(&tc, "webhook_failed"), 5);
        assert_eq!(events(&tc, "webhook_delivered"), 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stalled.received(), 2, "two attempts, then the retries stop");
        assert_eq!(events(&tc, "webhook_failed"), 5, "nothing after giving up");
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_expiry_is_announced_once_per_certificate() {
    bounded(async {
        let mut receiver = Receiver::start(200, Duration::ZERO).await;
        let tc = TestController::start_with(FileConfig {
            webhooks: vec![webhook(&receiver.url, &["cert_expiring"], SECRET)],
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let edge = tc.enroll_agent(&admin, "edge-1").await;
        let (mut s, st, _) = AgentSession::start(&tc, &edge).await.unwrap();
        let now = now_ms() / 1_000;
        let with_cert = |not_after| {
            AgentMsg::Report(AgentReport {
                sent_at_ms: now_ms(),
                generation: st.generation,
                cert_not_after: Some(not_after),
                ..Default::default()
            })
        };
        for _ in 0..3 {
            s.send(&with_cert(now + 3_600)).await.unwrap();
        }
        let hit = receiver.next().await;
        assert!(signature_verifies(&hit, SECRET));
        assert_eq!(hit.json()["detail"]["not_after"], now + 3_600);
        // Another certificate, near expiry too: announced again.
        s.send(&with_cert(now + 7_200)).await.unwrap();
        let hit = receiver.next().await;
        assert_eq!(hit.json()["detail"]["not_after"], now + 7_200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received(), 2, "once per certificate");
        // A fresh 30-day certificate (the one enrollment issued) is not worth a word.
        s.send(&with_cert(now + 30 * 86_400)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received(), 2);
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_events_instead_of_slowing_the_session() {
    bounded(async {
        let stalled = Receiver::start(200, Duration::from_secs(30)).await;
        let tc = TestController::start_with(FileConfig {
            webhooks: vec![vpn_controller::config::FileWebhook {
                attempts: Some(1),
                ..webhook(&stalled.url, &["host_degraded", "host_recovered"], SECRET)
            }],
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let edge = tc.enroll_agent(&admin, "edge-1").await;
        let (mut s, st, _) = AgentSession::start(&tc, &edge).await.unwrap();
        // 300 moves across zero failures while the receiver holds the first one: the queue
        // (256) fills, the rest is dropped and counted.
        let flaps = 300;
        for i in 0..flaps {
            let outcome = if i % 2 == 0 {
                ResourceResult::error("service/ss", "flapping")
            } else {
                ResourceResult::ok("service/ss")
            };
            s.send(&report(now_ms(), st.generation, vec![outcome]))
                .await
                .unwrap();
        }
        s.send(&report(now_ms() + 1, st.generation, Vec::new()))
            .await
            .unwrap();
        let last = common::wait_for_detail(&admin, "edge-1", "all reports read", |d| {
            d.vitals.is_some() && events(&tc, "host_recovered") == flaps / 2
        })
        .await;
        assert!(last.failing.is_empty());
        let dropped = events(&tc, "webhook_dropped");
        assert!(
            dropped >= flaps - 257 - 1,
            "dropped {dropped} of {flaps}: {:?}",
            tc.ctl.metrics.events()
        );
        tc.stop().await;
    })
    .await;
}
