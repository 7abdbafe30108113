//! The agent's opt-in `/metrics` endpoint as a scraper sees it: started on a loopback port,
//! scraped over plain TCP, parsed by the strict reader of the Prometheus text format (0.0.4) in
//! `vpn_e2e::prom`, and
//! the counters move as the agent records an apply with a failing service, a reconcile that
//! repaired a container, a report sent, and users cut off by the agent.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpn_agent::metrics::{self, Metrics};
use vpn_e2e::prom::Exposition;
use vpn_shared::proto::{Repair, ResourceResult};

async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// A sample's value; a missing sample fails the test with its name.
fn get(m: &Exposition, name: &str, label: Option<(&str, &str)>) -> f64 {
    let labels: Vec<(&str, &str)> = label.into_iter().collect();
    m.value(name, &labels)
        .unwrap_or_else(|| panic!("{name} {label:?} missing"))
}

/// Parses strictly (the parser the controller's tests and the e2e stories use too).
fn parse(text: &str) -> Exposition {
    Exposition::parse(text).unwrap_or_else(|e| panic!("not valid text exposition: {e}"))
}

#[tokio::test]
async fn the_metrics_endpoint_parses_and_its_counters_move() {
    let m = Metrics::new();
    let (addr, _task) = metrics::serve("127.0.0.1:0".parse().unwrap(), &m)
        .await
        .unwrap();

    let (head, body) = scrape(addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let before = parse(&body);
    assert_eq!(get(&before, "vpn_agent_applies_total", None), 0.0);
    let failures = ("kind", "service");
    assert_eq!(
        get(&before, "vpn_agent_apply_failures_total", Some(failures)),
        0.0,
        "kinds are present before the first failure"
    );
    assert_eq!(get(&before, "vpn_agent_users_cut_off", None), 0.0);

    // An apply whose service cannot run, a reconcile that recreated the container, a report.
    m.applied(
        Duration::from_millis(120),
        &[
            ResourceResult::error("service/ss", "no such image: vpn-fleet/missing:local"),
            ResourceResult::ok("host/state"),
        ],
    );
    let repair = Repair {
        resource: "service/ss".into(),
        action: "container vpn-h1-ss was missing; created".into(),
        at: 1,
    };
    m.reconciled(&[ResourceResult::ok("service/ss")], &[repair]);
    m.report_sent();
    m.users_cut_off(2);

    let (_, body) = scrape(addr).await;
    let after = parse(&body);
    assert_eq!(get(&after, "vpn_agent_applies_total", None), 1.0);
    assert_eq!(
        get(&after, "vpn_agent_apply_failures_total", Some(failures)),
        1.0
    );
    assert_eq!(
        get(&after, "vpn_agent_apply_duration_seconds_count", None),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "vpn_agent_apply_duration_seconds_bucket",
            Some(("le", "0.25"))
        ),
        1.0
    );
    assert_eq!(get(&after, "vpn_agent_reconcile_runs_total", None), 1.0);
    assert_eq!(
        get(
            &after,
            "vpn_agent_reconcile_repairs_total",
            Some(("kind", "service"))
        ),
        1.0
    );
    // The reconcile found the service working again.
    assert_eq!(
        get(
            &after,
            "vpn_agent_failing_resources",
            Some(("kind", "service"))
        ),
        0.0
    );
    assert_eq!(get(&after, "vpn_agent_reports_sent_total", None), 1.0);
    assert_eq!(get(&after, "vpn_agent_users_cut_off", None), 2.0);

    // Anything but /metrics is a 404.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
}
