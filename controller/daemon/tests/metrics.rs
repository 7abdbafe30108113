//! `/metrics` as an operator's Prometheus sees it: a real controller on 127.0.0.1 with the
//! listener on port 0 (found through `metrics.addr`), scraped over TCP, every scrape parsed
//! strictly as Prometheus text exposition, and the series checked to move as the test acts —
//! hosts coming online, a refused peer, a user added with an agent connected and acking, an
//! ack that reports failures. Also: 50 bad handshakes are counted exactly but logged a few
//! times only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{AgentSession, STEP, TestController, add_user, applied, bounded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpn_controller::config::FileConfig;
use vpn_controller::server::metrics_addr_file;
use vpn_e2e::prom::Exposition;
use vpn_shared::model::Digest;
use vpn_shared::pki::{Ca, Identity};
use vpn_shared::proto::{ALPN_ADMIN, Ack, AgentMsg, ControllerMsg, ResourceResult};

const HOUR: Duration = Duration::from_secs(3600);

fn with_metrics() -> FileConfig {
    FileConfig {
        metrics_listen: Some("127.0.0.1:0".into()),
        ..FileConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_unless_configured() {
    bounded(async {
        let tc = TestController::start().await;
        assert_eq!(tc.ctl.metrics_addr, None);
        assert!(!metrics_addr_file(&tc.data_dir).exists());
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_as_the_fleet_lives() {
    bounded(async {
        let tc = TestController::start_with(with_metrics()).await;
        // The address a script would read, and the one the controller reports, agree.
        let addr = read_addr_file(&tc).await;
        assert_eq!(Some(addr), tc.ctl.metrics_addr);
        assert!(addr.ip().is_loopback());

        // A fresh controller: every host state present at zero, nothing refused yet.
        let m = scrape(addr).await;
        for state in ["online", "offline", "pending"] {
            assert_eq!(
                m.value("vpn_controller_hosts", &[("state", state)]),
                Some(0.0)
            );
        }
        assert_eq!(m.value("vpn_controller_agent_sessions", &[]), Some(0.0));
        assert_eq!(m.value("vpn_controller_pushes_total", &[]), Some(0.0));
        assert_eq!(
            m.kind("vpn_controller_ack_latency_seconds"),
            Some("histogram")
        );
        // A labelled family appears with its first series.
        assert_eq!(m.kind("vpn_controller_refusals_total"), None);

        // One host enrolled and connected, one enrolled and away, one never enrolled.
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        let _away = tc.enroll_agent(&admin, "edge-2").await;
        tc.add_server(&admin, "edge-3", 600).await;
        let (mut session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
        let m = scrape(addr).await;
        assert_eq!(
            m.value("vpn_controller_hosts", &[("state", "online")]),
            Some(1.0)
        );
        assert_eq!(
            m.value("vpn_controller_hosts", &[("state", "offline")]),
            Some(1.0)
        );
        assert_eq!(
            m.value("vpn_controller_hosts", &[("state", "pending")]),
            Some(1.0)
        );
        assert_eq!(m.value("vpn_controller_agent_sessions", &[]), Some(1.0));
        assert!(
            m.value(
                "vpn_controller_store_duration_seconds_count",
                &[("op", "write")]
            ) > Some(0.0)
        );
        assert!(
            m.value(
                "vpn_controller_store_duration_seconds_count",
                &[("op", "read")]
            ) > Some(0.0)
        );
        let ok = |kind| {
            (
                "vpn_controller_admin_requests_total",
                [("kind", kind), ("result", "ok")],
            )
        };
        let (name, labels) = ok("servers_add");
        assert_eq!(m.value(name, &labels), Some(3.0));

        // A peer holding a certificate from another CA is refused in the handshake.
        let refused_before = m.value("vpn_controller_refusals_total", &[("reason", "handshake")]);
        let rogue = Ca::generate("vpn-fleet controller CA").unwrap();
        let (cert, key) = rogue
            .issue(&Identity::Admin("admin".into()), &[], HOUR)
            .unwrap();
        let _ = tc
            .connect(tc.client_config(&cert.cert_pem, &key, ALPN_ADMIN))
            .await;
        tc.expect_refusals("handshake", 1).await;
        let m = scrape(addr).await;
        assert_eq!(refused_before, None, "no series before the first refusal");
        assert_eq!(m.kind("vpn_controller_refusals_total"), Some("counter"));
        assert_eq!(
            m.value("vpn_controller_refusals_total", &[("reason", "handshake")]),
            Some(1.0)
        );

        // `users add alice --all-servers` with the agent connected: one push, and once the agent
        // acks, one ack latency sample.
        let added = applied(&admin, &add_user("alice", false)).await;
        assert_eq!(added.hosts.len(), 3, "pushes for every host: {added:?}");
        let (generation, digest) = next_delta(&mut session).await;
        let m = scrape(addr).await;
        assert_eq!(
            m.value("vpn_controller_pushes_total", &[]),
            Some(1.0),
            "only the online host"
        );
        assert_eq!(
            m.value("vpn_controller_ack_latency_seconds_count", &[]),
            Some(0.0)
        );
        session.ack(generation, digest).await.unwrap();
        let m = scrape_until(addr, "an ack latency sample", |m| {
            m.value("vpn_controller_ack_latency_seconds_count", &[]) == Some(1.0)
        })
        .await;
        let latency = m
            .value("vpn_controller_ack_latency_seconds_sum", &[])
            .unwrap();
        assert!(
            (0.0..STEP.as_secs_f64()).contains(&latency),
            "latency {latency}"
        );
        assert_eq!(
            m.value("vpn_controller_apply_failures_total", &[("kind", "user")]),
            None
        );

        // The next change fails on the host: the ack names a user and a service that failed.
        applied(&admin, &add_user("bob", false)).await;
        let (generation, digest) = next_delta(&mut session).await;
        let results = vec![
            ResourceResult::ok("user/alice@ss"),
            ResourceResult::error("user/bob@ss", "no free port"),
            ResourceResult::error("service/ss", "image not found"),
        ];
        session
            .send(&AgentMsg::Ack(Ack {
                generation,
                digest,
                results,
            }))
            .await
            .unwrap();
        let m = scrape_until(addr, "apply failures counted", |m| {
            m.value(
                "vpn_controller_apply_failures_total",
                &[("kind", "service")],
            ) == Some(1.0)
        })
        .await;
        assert_eq!(
            m.value("vpn_controller_apply_failures_total", &[("kind", "user")]),
            Some(1.0)
        );
        assert_eq!(m.value("vpn_controller_pushes_total", &[]), Some(2.0));
        assert_eq!(
            m.value("vpn_controller_ack_latency_seconds_count", &[]),
            Some(2.0)
        );
        let (name, labels) = ok("users_add");
        assert_eq!(m.value(name, &labels), Some(2.0));
        assert_eq!(
            m.value(
                "vpn_controller_admin_request_duration_seconds_count",
                &[("kind", "users_add")]
            ),
            Some(2.0)
        );

        // The agent leaves: the host is offline at the next scrape.
        drop(session);
        scrape_until(addr, "the host offline", |m| {
            m.value("vpn_controller_hosts", &[("state", "online")]) == Some(0.0)
                && m.value("vpn_controller_agent_sessions", &[]) == Some(0.0)
        })
        .await;

        // Shutdown stops the listener and removes the address file.
        let data_dir = tc.data_dir.clone();
        tc.stop().await;
        assert!(
            !metrics_addr_file(&data_dir).exists(),
            "metrics.addr left behind"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening"
        );
    })
    .await;
}

/// Captures the log lines of everything that runs on this thread (a current-thread runtime
/// runs the controller's tasks here too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_bad_handshakes_are_counted_exactly_and_logged_a_few_times() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _scope = tracing::subscriber::set_default(subscriber);
    bounded(async {
        let tc = TestController::start_with(with_metrics()).await;
        let addr = read_addr_file(&tc).await;
        let started = Instant::now();
        // Foreign-CA certificates and an ALPN the controller does not speak: nobody here holds
        // a credential the controller issued.
        let rogue = Ca::generate("vpn-fleet controller CA").unwrap();
        let (cert, key) = rogue
            .issue(&Identity::Admin("admin".into()), &[], HOUR)
            .unwrap();
        for i in 0..50 {
            let config = if i % 5 == 0 {
                tc.anonymous_config(b"vpn-nonsense/9")
            } else {
                tc.client_config(&cert.cert_pem, &key, ALPN_ADMIN)
            };
            if let Ok(conn) = tc.connect(config).await {
                // TLS 1.3 may finish the client's side first; the server's verdict follows.
                let _ = tokio::time::timeout(STEP, conn.closed()).await;
            }
        }
        tc.expect_refusals("handshake", 50).await;
        let elapsed = started.elapsed();
        let m = scrape(addr).await;
        assert_eq!(
            m.value("vpn_controller_refusals_total", &[("reason", "handshake")]),
            Some(50.0),
            "the counter keeps the exact number"
        );
        tc.stop().await;

        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("handshake failed"))
            .collect();
        // One line per 10 s window at most: this loop takes a second or so, but a loaded
        // machine may stretch it over more windows.
        let windows = 1 + elapsed.as_secs() as usize / 10;
        assert!(
            !lines.is_empty() && lines.len() <= windows + 1,
            "{} lines in {elapsed:?} for 50 refusals:\n{}",
            lines.len(),
            lines.join("\n")
        );
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
        assert!(lines[0].contains("more_since_last_line=0"), "{}", lines[0]);
    })
    .await;
}

/// Waits for the controller's next delta and answers what an agent applying it would.
async fn next_delta(session: &mut AgentSession) -> (u64, Digest) {
    loop {
        match session.recv().await.unwrap() {
            ControllerMsg::Delta {
                generation, digest, ..
            } => return (generation, digest),
            ControllerMsg::FullState(_) => panic!("expected a delta, not a resync"),
            _ => {}
        }
    }
}

/// `<data_dir>/metrics.addr`, which the controller writes once it serves `/metrics`.
async fn read_addr_file(tc: &TestController) -> SocketAddr {
    let path = metrics_addr_file(&tc.data_dir);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "metrics.addr mode");
            return text.trim().parse().expect("metrics.addr holds an address");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /metrics`, as Prometheus does it, parsed strictly.
async fn scrape(addr: SocketAddr) -> Exposition {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain;version=0.0.4\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut raw))
        .await
        .expect("scrape answered within a step")
        .expect("read the scrape");
    let raw = String::from_utf8(raw).expect("UTF-8 exposition");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    Exposition::parse(body).unwrap_or_else(|e| panic!("not valid text exposition: {e}\n{body}"))
}

async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    ok: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let m = scrape(addr).await;
        if ok(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for {what}; last scrape: {:?}",
            m.samples
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
