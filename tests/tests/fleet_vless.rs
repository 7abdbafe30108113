//! Acceptance stories of VLESS + Reality on a fleet: a real controller, real agents each in its
//! own simulated host, the **shoes** engine deployed by the product in Docker (Xray cannot be
//! fetched here; its driver is covered by golden files and by `agent/tests/xray_api.rs` against
//! a real v2ray), and the real shoes client configured from the exact `vless://` links that
//! `vpn users link` printed. Reality borrows its handshakes from a TLS 1.3 server inside each
//! host (`localhost:8443`, the host server's TLS port).
//!
//! Needs root, Docker, the local images (`deploy/scripts/setup.sh`), the `shoes` binary and the
//! workspace's binaries; without them a story fails saying what is missing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vpn_e2e::Fleet;
use vpn_e2e::client::{LongTransfer, assert_rate_near, assert_transfers_intact};
use vpn_e2e::vless::ShoesClient;
use vpn_e2e::wait_until;

const VLESS_PORT: &str = "21000";
const SS_PORT: u16 = 20000;
/// Suspension must cut new connections within this bound (the acceptance bar).
const SUSPEND_BOUND: Duration = Duration::from_secs(5);
const RECONNECT_BOUND: Duration = Duration::from_secs(30);

fn deploy_vless(fleet: &Fleet) {
    fleet.vpn_ok(&[
        "services",
        "deploy",
        "vless",
        "--port",
        VLESS_PORT,
        "--engine",
        "shoes",
        "--sni",
        "localhost",
        "--dest",
        "localhost:8443",
        "--short-ids",
        "2",
        "--all-servers",
    ]);
}

/// `user`'s `vless://` links, one per host, with the host index.
fn vless_links(fleet: &Fleet, user: &str) -> Vec<(usize, String)> {
    let links = fleet
        .links(user)
        .into_iter()
        .filter(|l| l.starts_with("vless://"));
    fleet.one_per_host(links, &format!("{user}'s vless links"))
}

fn clients_for(fleet: &Fleet, user: &str) -> Vec<(usize, ShoesClient)> {
    vless_links(fleet, user)
        .into_iter()
        .map(|(i, link)| (i, fleet.shoes_client(&link)))
        .collect()
}

fn target(fleet: &Fleet, i: usize) -> SocketAddr {
    SocketAddr::from((fleet.agents[i].host.ip, fleet.agents[i].server.port))
}

/// Replaces the value of query parameter `key` in a link.
fn with_param(link: &str, key: &str, value: &str) -> String {
    let (head, fragment) = link.split_once('#').unwrap_or((link, ""));
    let Some((base, query)) = head.split_once('?') else {
        panic!("a vless link has a query: {link}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={value}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}#{fragment}", query.join("&"))
}

/// Waits until a new connection through `client` fails, at the latest by `deadline`.
fn assert_refused_by(client: &ShoesClient, to: SocketAddr, deadline: Instant, what: &str) {
    loop {
        if client.probe(to).is_err() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: new connections still work"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Story (a): every `vless://` link alice is given takes a real shoes client to that very host,
/// byte for byte; a wrong UUID, a wrong public key and a wrong short id are each refused; her
/// Shadowsocks link works beside it, and removing the VLESS service leaves Shadowsocks alone.
#[test]
fn every_vless_link_reaches_its_host_and_wrong_credentials_are_refused() {
    let fleet = Fleet::start(3);
    deploy_vless(&fleet);
    fleet.deploy_shadowsocks(SS_PORT);
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);

    let show = fleet.vpn_ok(&["services", "show", "vless", "-o", "json"]);
    assert!(
        !show.contains("private"),
        "services show leaks the private key:\n{show}"
    );
    let links = vless_links(&fleet, "alice");
    for (i, link) in &links {
        let client = fleet.shoes_client(link);
        fleet.assert_payload_through_vless(*i, &client);
        // The host's own loopback (where its server listens too) is refused through the tunnel.
        let port = fleet.agents[*i].server.port;
        let loopback = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            client.get(loopback, "/", Duration::from_secs(3)).is_err(),
            "host {i}'s loopback was served through {link}"
        );
    }

    let (i, link) = &links[0];
    let to = target(&fleet, *i);
    let other_uuid = "00000000-0000-4000-8000-000000000000";
    let uuid = link
        .trim_start_matches("vless://")
        .split('@')
        .next()
        .expect("a uuid");
    let wrong = [
        ("uuid", link.replacen(uuid, other_uuid, 1)),
        (
            "public key",
            with_param(link, "pbk", "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw"),
        ),
        ("short id", with_param(link, "sid", "0123456789abcdef")),
    ];
    for (what, bad) in wrong {
        let client = fleet.shoes_client(&bad);
        assert!(
            client.fetch_payload(to).is_err(),
            "a link with a wrong {what} got through host {i}: {bad}"
        );
    }

    // Both protocols' links for alice; removing VLESS leaves her Shadowsocks link working.
    let all = fleet.links("alice");
    assert_eq!(
        all.iter().filter(|l| l.starts_with("ss://")).count(),
        3,
        "{all:#?}"
    );
    fleet.vpn_ok(&["services", "remove", "vless"]);
    let left = fleet.links("alice");
    assert!(left.iter().all(|l| l.starts_with("ss://")), "{left:#?}");
    let ss_link = left.into_iter().next().expect("an ss link");
    let host = fleet.agent_for_link(&ss_link).index;
    fleet.assert_payload_through(host, &fleet.sslocal(&ss_link));
    let client = fleet.shoes_client(link);
    wait_until(
        Duration::from_secs(10),
        "the removed VLESS service stops serving",
        || client.probe(to).is_err(),
    );
}

/// Story (b): suspending alice stops her new VLESS connections on every host within 5 s while
/// bob's long download on the same service runs on; resuming her brings her back. Adding and
/// removing users never recreates another user's container.
#[test]
fn suspend_cuts_only_that_user_and_other_containers_stay_as_they_are() {
    const DRIP_SECS: u64 = 25;
    let fleet = Fleet::start(3);
    deploy_vless(&fleet);
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.vpn_ok(&["users", "add", "bob", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    let alice = clients_for(&fleet, "alice");
    let bob = clients_for(&fleet, "bob");
    for (i, c) in alice.iter().chain(bob.iter()) {
        fleet.assert_payload_through_vless(*i, c);
    }
    let before: Vec<BTreeSet<String>> = (0..3)
        .map(|i| fleet.agent_containers(i).into_iter().collect())
        .collect();

    let transfers: Vec<LongTransfer> = bob
        .iter()
        .map(|(i, c)| LongTransfer::start(c.addr, &fleet.agents[*i].host.ip.to_string(), DRIP_SECS))
        .collect();
    wait_until(
        Duration::from_secs(10),
        "bob's downloads are flowing",
        || transfers.iter().all(|t| t.received() > 0),
    );

    fleet.vpn_ok(&["users", "suspend", "alice"]);
    let deadline = Instant::now() + SUSPEND_BOUND;
    for (i, c) in &alice {
        assert_refused_by(
            c,
            target(&fleet, *i),
            deadline,
            &format!("alice suspended, host {i}"),
        );
    }
    for (i, c) in &bob {
        assert!(
            c.probe(target(&fleet, *i)).is_ok(),
            "bob refused on host {i} while alice is suspended"
        );
    }
    for (i, before) in before.iter().enumerate() {
        let now: BTreeSet<String> = fleet.agent_containers(i).into_iter().collect();
        assert!(
            now.is_subset(before),
            "host {i}: a container was created by a suspension"
        );
        assert_eq!(
            before.len() - now.len(),
            1,
            "host {i}: exactly alice's container goes"
        );
    }

    fleet.vpn_ok(&["users", "resume", "alice"]);
    for (i, c) in &alice {
        fleet.assert_payload_through_vless(*i, c);
    }
    fleet.vpn_ok(&["users", "add", "carol", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    for (i, before) in before.iter().enumerate() {
        let now: BTreeSet<String> = fleet.agent_containers(i).into_iter().collect();
        let kept = before.intersection(&now).count();
        assert_eq!(
            kept,
            before.len() - 1,
            "host {i}: only alice's container was replaced"
        );
        assert_eq!(
            now.len(),
            before.len() + 1,
            "host {i}: carol got one container"
        );
    }

    assert_transfers_intact(transfers, "bob");
}

/// Story (c): fail-static for VLESS: with the controller stopped, an agent restarted keeps
/// serving alice from its own saved state.
#[test]
fn vless_keeps_working_with_the_controller_down_and_the_agent_restarted() {
    let mut fleet = Fleet::start(1);
    deploy_vless(&fleet);
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    let (i, link) = vless_links(&fleet, "alice").remove(0);
    let client = fleet.shoes_client(&link);
    fleet.assert_payload_through_vless(i, &client);

    fleet.stop_controller();
    fleet.kill_agent(i);
    fleet.start_agent(i);
    fleet.assert_payload_through_vless(i, &client);
    fleet.remove_agent_containers(i);
    fleet.kill_agent(i);
    fleet.start_agent(i);
    fleet.assert_payload_through_vless(i, &client);
}

/// Story (d): a VLESS user limited to 8 mbit is measured within ±15 % through the real client
/// (the shoes engine gives her a port of her own, so the port matcher shapes her).
#[test]
fn a_vless_user_limited_to_8_mbit_measures_within_15_percent() {
    const LIMIT_BPS: f64 = 8_000_000.0;
    const BYTES: usize = 3_500_000;
    let fleet = Fleet::start(1);
    deploy_vless(&fleet);
    fleet.vpn_ok(&[
        "users",
        "add",
        "alice",
        "--all-servers",
        "--bandwidth",
        "8mbit",
    ]);
    fleet.wait_converged(RECONNECT_BOUND);
    let (i, link) = vless_links(&fleet, "alice").remove(0);
    let client = fleet.shoes_client(&link);
    fleet.assert_payload_through_vless(i, &client);
    let host = fleet.agents[i].host.ip.to_string();
    let report =
        vpn_e2e::client::BulkDownload::start(client.addr, &host, BYTES, Duration::from_secs(60))
            .wait();
    assert!(report.intact, "alice's download broke: {report:?}");
    assert_rate_near("vless alice", report.bits_per_sec(), LIMIT_BPS);
}
