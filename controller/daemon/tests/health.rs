//! Host health stories (SPEC §2.8) against a real controller and a test agent speaking the
//! real protocol: a service that cannot run degrades its host in every view until a clean
//! report, the failures outlive the session, vitals past a threshold become warnings and
//! doctor findings, and a replaced session does not look like a host going away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    AgentSession, TestController, add_user, applied, apply_delta, ask, bounded, deploy_shadowsocks,
    now_ms, report, server_detail, wait_for_detail,
};
use vpn_controller::config::FileConfig;
use vpn_shared::proto::admin::{
    AdminRequest, AdminResponse, CheckLevel, DoctorReport, HostApplyState, HostState,
    ServiceHostState,
};
use vpn_shared::proto::{Ack, AgentMsg, AgentReport, ContainerStatus, Repair, ResourceResult};

const NO_IMAGE: &str = "image ghcr.io/example/nope:1: not found (docker: No such image)";

fn broken(user: &str) -> Vec<ResourceResult> {
    vec![
        ResourceResult::error("service/shadowsocks", NO_IMAGE),
        ResourceResult::error(format!("user/{user}@shadowsocks"), "service not running"),
        ResourceResult::ok("host/firewall"),
    ]
}

async fn doctor(admin: &quinn::Connection) -> DoctorReport {
    ask(admin, AdminRequest::Doctor, |a| match a {
        AdminResponse::Doctor(d) => Some(d),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_run_degrades_its_host_everywhere_until_a_clean_report() {
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            ack_timeout: Some("5s".into()),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let edge1 = tc.enroll_agent(&admin, "edge-1").await;
        let edge2 = tc.enroll_agent(&admin, "edge-2").await;
        tc.add_server(&admin, "edge-3", 600).await; // never joins
        applied(&admin, &deploy_shadowsocks(20_000)).await;
        applied(&admin, &add_user("alice", false)).await;

        // edge-1's image does not exist; edge-2 runs fine.
        let (mut s1, mut st1, d1) = AgentSession::start(&tc, &edge1).await.unwrap();
        let (mut s2, mut st2, d2) = AgentSession::start(&tc, &edge2).await.unwrap();
        s1.send(&AgentMsg::Ack(Ack {
            generation: st1.generation,
            digest: d1,
            results: broken("alice"),
        }))
        .await
        .unwrap();
        s2.ack(st2.generation, d2).await.unwrap();

        let shown = wait_for_detail(&admin, "edge-1", "degraded", |d| {
            d.state == HostState::Degraded { failing: 2 }
        })
        .await;
        assert_eq!(shown.failing[0].resource, "service/shadowsocks");
        assert_eq!(shown.failing[0].message, NO_IMAGE);
        assert!(shown.failing[0].first_seen > 0);
        let kinds: Vec<_> = shown.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["failing", "failing", "online"], "newest first");

        let list = ask(&admin, AdminRequest::ServersListDetail, |a| match a {
            AdminResponse::ServersDetail(l) => Some(l),
            _ => None,
        })
        .await;
        let states: Vec<_> = list
            .iter()
            .map(|d| (d.server.name.as_str(), d.state.to_string()))
            .collect();
        assert_eq!(
            states,
            [
                ("edge-1", "degraded (2 failing)".to_string()),
                ("edge-2", "online".into()),
                ("edge-3", "pending".into())
            ]
        );
        assert!(
            list.iter().all(|d| d.events.is_empty()),
            "no events in lists"
        );
        assert_eq!(list[0].failing.len(), 2, "lists carry the failures too");

        let status = ask(&admin, AdminRequest::StatusDetail, |a| match a {
            AdminResponse::StatusDetail(s) => Some(s),
            _ => None,
        })
        .await;
        assert_eq!(
            (
                status.hosts_degraded,
                status.hosts_offline,
                status.failing_resources
            ),
            (1, 0, 2)
        );
        assert_eq!(status.status.hosts_online, 2);

        let service = ask(
            &admin,
            AdminRequest::ServicesShowDetail {
                name: "shadowsocks".into(),
            },
            |a| match a {
                AdminResponse::ServiceDetail(s) => Some(s),
                _ => None,
            },
        )
        .await;
        let per_host: Vec<_> = service
            .hosts
            .iter()
            .map(|h| (h.server.as_str(), h.state, h.failing.len()))
            .collect();
        assert_eq!(
            per_host,
            [
                ("edge-1", ServiceHostState::Failing, 2),
                ("edge-2", ServiceHostState::Ok, 0),
                ("edge-3", ServiceHostState::Pending, 0)
            ]
        );

        let report_now = doctor(&admin).await;
        assert!(!report_now.all_well());
        let resources = report_now
            .checks
            .iter()
            .find(|c| c.server.as_deref() == Some("edge-1") && c.check == "resources")
            .unwrap();
        assert_eq!(resources.level, CheckLevel::Fail);
        assert!(
            resources.detail.contains("service/shadowsocks: image"),
            "{resources:?}"
        );

        // A fleet-wide change still reports per host: edge-1 fails it, edge-2 applies it.
        let adding = {
            let admin = admin.clone();
            tokio::spawn(async move { common::admin_request(&admin, &add_user("bob", true)).await })
        };
        let g1 = apply_delta(&mut st1, s1.recv().await.unwrap());
        let g2 = apply_delta(&mut st2, s2.recv().await.unwrap());
        let mut results = broken("alice");
        results.push(ResourceResult::error(
            "user/bob@shadowsocks",
            "service not running",
        ));
        s1.send(&AgentMsg::Ack(Ack {
            generation: st1.generation,
            digest: g1,
            results,
        }))
        .await
        .unwrap();
        s2.ack(st2.generation, g2).await.unwrap();
        let Ok(AdminResponse::Applied(done)) = adding.await.unwrap() else {
            panic!("users add bob");
        };
        let mut hosts: Vec<_> = done
            .hosts
            .iter()
            .map(|h| (h.server.as_str(), &h.state))
            .collect();
        hosts.sort_by_key(|h| h.0);
        assert!(matches!(hosts[0], ("edge-1", HostApplyState::Failed(f)) if f.len() == 3));
        assert_eq!(hosts[1], ("edge-2", &HostApplyState::Applied));

        // The agent goes away: offline, but its failures are still known.
        s1.conn.close(0u32.into(), b"agent stopped");
        let offline = wait_for_detail(&admin, "edge-1", "offline", |d| {
            d.state == HostState::Offline && d.events.first().is_some_and(|e| e.kind == "offline")
        })
        .await;
        assert_eq!(
            offline.failing.len(),
            3,
            "last known failures stay while offline"
        );
        assert!(offline.vitals.is_none());

        // Back with the image fixed: the last known failures count until its first report,
        // which is clean and says what the reconcile repaired.
        let (mut s1, st1, _) = AgentSession::start(&tc, &edge1).await.unwrap();
        assert_eq!(
            server_detail(&admin, "edge-1").await.state,
            HostState::Degraded { failing: 3 }
        );
        s1.send(&AgentMsg::Report(AgentReport {
            sent_at_ms: now_ms(),
            generation: st1.generation,
            results: vec![
                ResourceResult::ok("service/shadowsocks"),
                ResourceResult::ok("user/alice@shadowsocks"),
                ResourceResult::ok("user/bob@shadowsocks"),
            ],
            repairs: vec![Repair {
                resource: "service/shadowsocks".into(),
                action: "container was missing; created".into(),
                at: 0,
            }],
            containers: vec![ContainerStatus {
                name: "vpn-shadowsocks".into(),
                resource: "service/shadowsocks".into(),
                running: true,
                restarts: 0,
            }],
            cert_not_after: Some(now_ms() / 1_000 + 29 * 86_400),
            disk_free_bytes: Some(20 << 30),
            ledger_backlog: None,
        }))
        .await
        .unwrap();
        let healthy = wait_for_detail(&admin, "edge-1", "recovered", |d| {
            d.state == HostState::Online && d.events.first().is_some_and(|e| e.kind == "repaired")
        })
        .await;
        assert!(healthy.failing.is_empty());
        assert!(healthy.warnings.is_empty(), "{:?}", healthy.warnings);
        let vitals = healthy.vitals.expect("vitals of the report");
        assert!(
            vitals.clock_skew_ms.abs() < 1_000,
            "loopback skew {vitals:?}"
        );
        assert_eq!(vitals.containers.len(), 1);
        let seen: Vec<_> = healthy
            .events
            .iter()
            .take(5)
            .map(|e| (e.kind.as_str(), e.resource.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            seen,
            [
                ("repaired", "service/shadowsocks"),
                ("recovered", "user/bob@shadowsocks"),
                ("recovered", "user/alice@shadowsocks"),
                ("recovered", "service/shadowsocks"),
                ("online", ""),
            ]
        );
        let status = ask(&admin, AdminRequest::StatusDetail, |a| match a {
            AdminResponse::StatusDetail(s) => Some(s),
            _ => None,
        })
        .await;
        assert_eq!((status.hosts_degraded, status.failing_resources), (0, 0));
        drop(s2);
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitals_past_their_thresholds_are_warnings_and_doctor_findings() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let edge = tc.enroll_agent(&admin, "edge-1").await;
        let (mut s, st, digest) = AgentSession::start(&tc, &edge).await.unwrap();
        s.ack(st.generation, digest).await.unwrap();
        let now = now_ms();
        s.send(&AgentMsg::Report(AgentReport {
            // The agent's clock runs 30 s ahead.
            sent_at_ms: now + 30_000,
            generation: st.generation,
            results: Vec::new(),
            repairs: Vec::new(),
            containers: vec![ContainerStatus {
                name: "vpn-ss".into(),
                resource: "service/ss".into(),
                running: false,
                restarts: 7,
            }],
            // Renewal should have happened days ago.
            cert_not_after: Some(now / 1_000 + 86_400),
            disk_free_bytes: Some(100 << 20),
            ledger_backlog: Some(50_000),
        }))
        .await
        .unwrap();
        let shown = wait_for_detail(&admin, "edge-1", "reported", |d| d.vitals.is_some()).await;
        let skew = shown.vitals.as_ref().unwrap().clock_skew_ms;
        assert!((29_000..=31_000).contains(&skew), "skew {skew}");
        let w = &shown.warnings;
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(
            w[0].starts_with("certificate expires in ") && w[0].ends_with("(renewal overdue?)"),
            "{w:?}"
        );
        assert!(w[1].starts_with("clock off by +"), "{w:?}");
        assert_eq!(w[2], "container vpn-ss (service/ss) is not running");
        assert_eq!(w[3], "disk: 100 MiB free in the agent's data directory");
        assert_eq!(w[4], "ledger: 50000 usage entries wait for the controller");
        assert_eq!(
            shown.state,
            HostState::Online,
            "warnings do not degrade a host"
        );

        let status = ask(&admin, AdminRequest::StatusDetail, |a| match a {
            AdminResponse::StatusDetail(s) => Some(s),
            _ => None,
        })
        .await;
        assert_eq!(status.hosts_warned, 1);

        let report = doctor(&admin).await;
        let level = |check: &str| {
            report
                .checks
                .iter()
                .find(|c| c.check == check)
                .map(|c| c.level)
                .unwrap()
        };
        assert_eq!(level("online"), CheckLevel::Ok);
        assert_eq!(level("acked"), CheckLevel::Ok);
        assert_eq!(level("resources"), CheckLevel::Ok);
        assert_eq!(level("certificate"), CheckLevel::Warn);
        assert_eq!(level("clock"), CheckLevel::Warn);
        assert_eq!(level("kernel"), CheckLevel::Ok);
        assert_eq!(level("containers"), CheckLevel::Fail);
        assert!(!report.all_well());
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_session_is_not_an_outage_and_an_empty_fleet_is_not_well() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let empty = doctor(&admin).await;
        assert_eq!(empty.checks.len(), 1);
        assert_eq!(empty.checks[0].server, None);
        assert_eq!(empty.checks[0].level, CheckLevel::Warn);

        let edge = tc.enroll_agent(&admin, "edge-1").await;
        let (old, _, _) = AgentSession::start(&tc, &edge).await.unwrap();
        let (new, st, digest) = AgentSession::start(&tc, &edge).await.unwrap();
        let mut new = new;
        new.ack(st.generation, digest).await.unwrap();
        common::closed(&old.conn).await;
        // Give a wrongly emitted offline event time to be written.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let shown = server_detail(&admin, "edge-1").await;
        let kinds: Vec<_> = shown.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["online"], "one connect, no offline/online pair");
        assert_eq!(shown.state, HostState::Online);

        // A report before any failure and with nothing failing writes no event.
        new.send(&report(
            now_ms(),
            st.generation,
            vec![ResourceResult::ok("host/firewall")],
        ))
        .await
        .unwrap();
        wait_for_detail(&admin, "edge-1", "reported", |d| d.vitals.is_some()).await;
        new.conn.close(0u32.into(), b"bye");
        let gone = wait_for_detail(&admin, "edge-1", "offline", |d| {
            d.state == HostState::Offline && !d.events.is_empty() && d.events[0].kind == "offline"
        })
        .await;
        assert_eq!(gone.events.len(), 2);
        tc.stop().await;
    })
    .await;
}
