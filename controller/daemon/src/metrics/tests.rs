//! The registry's series as a scraper reads them, and the pure parts behind them.

use super::*;

fn exposition(m: &Metrics) -> String {
    vpn_shared::metrics_http::encode(m.registry()).expect("encode")
}

#[test]
fn refusals_and_events_are_readable_back_and_exposed_by_reason() {
    let m = Metrics::new();
    m.refused("handshake");
    m.refused("handshake");
    assert_eq!(m.refused_quietly("unknown_alpn"), Some(0));
    assert_eq!(m.refused_quietly("unknown_alpn"), None, "held back");
    m.event("health_changed");
    assert_eq!(m.refusals().get("handshake"), Some(&2));
    assert_eq!(
        m.refusals().get("unknown_alpn"),
        Some(&2),
        "held back is still counted"
    );
    assert_eq!(m.events().get("health_changed"), Some(&1));
    let text = exposition(&m);
    assert!(
        text.contains("vpn_controller_refusals_total{reason=\"handshake\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("vpn_controller_refusals_total{reason=\"unknown_alpn\"} 2\n"));
    assert!(text.contains("vpn_controller_events_total{event=\"health_changed\"} 1\n"));
    assert!(text.contains("vpn_controller_build_info{version=\""));
}

#[test]
fn every_host_state_is_exposed_even_at_zero() {
    let m = Metrics::new();
    m.set_hosts(["online", "online", "pending", "not-a-state"]);
    let text = exposition(&m);
    assert!(
        text.contains("vpn_controller_hosts{state=\"online\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("vpn_controller_hosts{state=\"pending\"} 1\n"));
    assert!(text.contains("vpn_controller_hosts{state=\"offline\"} 0\n"));
    assert!(!text.contains("not-a-state"));
    // A later scrape replaces the counts; it does not add to them.
    m.set_hosts(["offline"]);
    let text = exposition(&m);
    assert!(
        text.contains("vpn_controller_hosts{state=\"online\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("vpn_controller_hosts{state=\"offline\"} 1\n"));
}

#[test]
fn host_states_follow_enrollment_and_the_session() {
    let host = |enrolled_at| HostRow {
        id: "h".into(),
        name: "edge-1".into(),
        created_at: 0,
        enrolled_at,
        cert_serial: None,
        cert_not_after: None,
        generation: 0,
        agent_version: None,
        address: None,
        last_seen: None,
        acked_generation: None,
        acked_digest: None,
    };
    assert_eq!(host_state(&host(None), false, 0), "pending");
    assert_eq!(host_state(&host(Some(1)), false, 2), "offline");
    assert_eq!(host_state(&host(Some(1)), true, 0), "online");
    assert_eq!(host_state(&host(Some(1)), true, 2), "degraded");
}

#[test]
fn an_ack_covers_every_change_up_to_its_generation() {
    let t0 = Instant::now();
    let mut clock = AckClock::default();
    clock.sent(5, t0);
    clock.sent(6, t0 + Duration::from_millis(10));
    clock.sent(7, t0 + Duration::from_millis(20));
    // An ack of an older generation (the full state the session started with) covers nothing.
    assert!(clock.acked(4, t0 + Duration::from_millis(30)).is_empty());
    assert_eq!(
        clock.acked(6, t0 + Duration::from_millis(50)),
        vec![Duration::from_millis(50), Duration::from_millis(40)]
    );
    assert_eq!(
        clock.acked(9, t0 + Duration::from_millis(60)),
        vec![Duration::from_millis(40)]
    );
    assert!(
        clock.acked(9, t0 + Duration::from_millis(70)).is_empty(),
        "counted once"
    );
}

#[test]
fn an_agent_that_never_acks_costs_a_bounded_clock() {
    let t0 = Instant::now();
    let mut clock = AckClock::default();
    for g in 0..(MAX_PENDING_ACKS as u64 * 3) {
        clock.sent(g, t0);
    }
    assert_eq!(clock.sent.len(), MAX_PENDING_ACKS);
    assert_eq!(clock.acked(u64::MAX, t0).len(), MAX_PENDING_ACKS);
}

#[test]
fn apply_failures_are_counted_by_a_fixed_set_of_kinds() {
    let m = Metrics::new();
    let mut clock = AckClock::default();
    m.pushed(&mut clock, 3, Instant::now());
    let results = [
        ResourceResult::error("service/ss", "image not found"),
        ResourceResult::error("service/vless", "port in use"),
        ResourceResult::ok("user/alice"),
        ResourceResult::error("user/bob", "no port"),
        ResourceResult::error("host/state", "disk full"),
        ResourceResult::error("an agent's invention {\"x\"}", "?"),
    ];
    m.acked(&mut clock, 3, &results);
    let text = exposition(&m);
    for line in [
        "vpn_controller_apply_failures_total{kind=\"service\"} 2\n",
        "vpn_controller_apply_failures_total{kind=\"user\"} 1\n",
        "vpn_controller_apply_failures_total{kind=\"host\"} 1\n",
        "vpn_controller_apply_failures_total{kind=\"other\"} 1\n",
        "vpn_controller_pushes_total 1\n",
        "vpn_controller_ack_latency_seconds_count 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("invention"));
}

#[test]
fn admin_requests_are_counted_and_timed_by_kind() {
    let m = Metrics::new();
    m.admin_request(&AdminRequest::UsersList).done(true);
    m.admin_request(&AdminRequest::UsersList).done(false);
    m.admin_request(&AdminRequest::Status).done(true);
    let text = exposition(&m);
    for line in [
        "vpn_controller_admin_requests_total{kind=\"users_list\",result=\"ok\"} 1\n",
        "vpn_controller_admin_requests_total{kind=\"users_list\",result=\"error\"} 1\n",
        "vpn_controller_admin_requests_total{kind=\"status\",result=\"ok\"} 1\n",
        "vpn_controller_admin_request_duration_seconds_count{kind=\"users_list\"} 2\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
