//! Acceptance stories of the foundation: a real controller, real agents each in its own
//! simulated host (network namespace), Shadowsocks deployed by the product in Docker, and the
//! real `sslocal` client using the exact links `vpn users link` printed.
//!
//! Every story needs root, Docker, the local images and the workspace's binaries; without them it
//! fails with a message naming what is missing (`deploy/scripts/setup.sh`, then
//! `cargo build --workspace --bins`). Stories run one at a time (`.config/nextest.toml`).

use std::time::{Duration, Instant};

use vpn_e2e::Fleet;
use vpn_e2e::client::{SsLocal, assert_refused_by, assert_transfers_intact};
use vpn_e2e::proc::tail;
use vpn_e2e::wait_until;

/// The port `services deploy` is given (users may get ports of their own next to it).
const SS_PORT: u16 = 20000;
/// Suspension must cut new connections within this bound (the acceptance bar).
const SUSPEND_BOUND: Duration = Duration::from_secs(5);
/// Agents must be back online and acked within this bound after the controller returns.
const RECONNECT_BOUND: Duration = Duration::from_secs(30);

fn add_user(fleet: &Fleet, name: &str) {
    fleet.vpn_ok(&["users", "add", name, "--all-servers"]);
}

/// Host `i`'s server listens on the namespace's loopback as well as on its own address, yet
/// through `client` only the host's address works: the VPN server refuses `127.0.0.1` (its ACL),
/// and the host server never sees a request from loopback.
fn assert_loopback_refused(fleet: &Fleet, i: usize, client: &SsLocal) {
    assert_eq!(client.target, fleet.agents[i].host.ip.to_string());
    let page = client.get("/");
    assert!(
        page.is_ok(),
        "http://{}:8000/ through {}: {page:?}",
        client.target,
        client.link
    );
    let loopback = client.get_from("127.0.0.1", "/", Duration::from_secs(3));
    assert!(
        loopback.is_err(),
        "http://127.0.0.1:8000/ of host {i} was served through {}: the tunnel reaches the host's \
         loopback",
        client.link
    );
    let log = tail(&fleet.log(&format!("hostserver-{i}")), 500);
    assert!(
        !log.contains("127.0.0.1 - -"),
        "host server {i} answered a request from loopback:\n{log}"
    );
}

/// Story (a): three hosts, Shadowsocks everywhere, alice added; every link she is given takes a
/// real client to that very host (the payload only that host's namespace serves, byte for byte),
/// and none lets her reach that host's own loopback.
#[test]
fn every_link_of_a_new_user_reaches_its_own_host() {
    let fleet = Fleet::start(3);
    fleet.deploy_shadowsocks(SS_PORT);
    add_user(&fleet, "alice");
    fleet.wait_converged(RECONNECT_BOUND);

    for (i, client) in fleet.ss_clients("alice") {
        fleet.assert_payload_through(i, &client);
        assert_loopback_refused(&fleet, i, &client);
    }
}

/// Story (b): suspending alice stops her new connections on every host within 5 s and resuming
/// her brings them back, while bob's long download, started before, runs on untouched.
#[test]
fn suspend_cuts_only_the_suspended_user_and_resume_restores_her() {
    const DRIP_SECS: u64 = 30;
    let fleet = Fleet::start(3);
    fleet.deploy_shadowsocks(SS_PORT);
    add_user(&fleet, "alice");
    add_user(&fleet, "bob");
    fleet.wait_converged(RECONNECT_BOUND);

    let alice = fleet.ss_clients("alice");
    let bob = fleet.ss_clients("bob");
    for (i, c) in alice.iter().chain(bob.iter()) {
        fleet.assert_payload_through(*i, c);
    }

    // Bob starts a long download on every host and it is flowing before anything changes.
    let transfers: Vec<_> = bob.iter().map(|(_, c)| c.start_drip(DRIP_SECS)).collect();
    wait_until(
        Duration::from_secs(10),
        "bob's downloads are flowing",
        || transfers.iter().all(|t| t.received() > 0),
    );

    fleet.vpn_ok(&["users", "suspend", "alice"]);
    let deadline = Instant::now() + SUSPEND_BOUND;
    for (i, c) in &alice {
        let took = assert_refused_by(c, deadline, &format!("alice suspended, host {i}"));
        println!("host {i}: alice refused {took:?} after checking began");
    }
    // Still refused on a second try (not a transient hiccup), and bob is unaffected.
    for (i, c) in &alice {
        assert!(
            c.probe().is_err(),
            "suspended alice got through on host {i}"
        );
    }
    for (i, c) in &bob {
        assert!(
            c.probe().is_ok(),
            "bob's new connections fail on host {i} while alice is suspended"
        );
    }

    fleet.vpn_ok(&["users", "resume", "alice"]);
    for (i, c) in &alice {
        fleet.assert_payload_through(*i, c);
    }

    assert_transfers_intact(transfers, "bob");
}

/// Story (c): with the controller down, clients keep working; an agent that crashes comes back
/// as it was, and one whose host "rebooted" (containers gone) rebuilds them from its own state,
/// both without the controller. When the controller returns, every agent reconnects and acks.
#[test]
fn data_plane_survives_controller_outage_and_agent_restarts() {
    let mut fleet = Fleet::start(3);
    fleet.deploy_shadowsocks(SS_PORT);
    add_user(&fleet, "alice");
    fleet.wait_converged(RECONNECT_BOUND);
    let alice = fleet.ss_clients("alice");
    for (i, c) in &alice {
        fleet.assert_payload_through(*i, c);
    }

    fleet.stop_controller();
    for (i, c) in &alice {
        let body = c.fetch_payload().unwrap_or_else(|e| {
            panic!("host {i} stopped serving alice once the controller stopped: {e:#}")
        });
        assert!(
            body == fleet.agents[*i].server.payload,
            "host {i}: payload differs"
        );
    }

    // Host 1: the agent crashes and restarts; its containers were never touched.
    fleet.kill_agent(1);
    fleet.start_agent(1);
    // Host 2: the host "reboots": the agent dies and its containers are lost with it.
    fleet.kill_agent(2);
    fleet.remove_agent_containers(2);
    assert!(
        fleet.agent_containers(2).is_empty(),
        "host 2 still has containers"
    );
    fleet.start_agent(2);

    for (i, c) in &alice {
        fleet.assert_payload_through(*i, c);
    }
    assert!(
        !fleet.agent_containers(2).is_empty(),
        "host 2 serves again but the agent created no container?"
    );
    // Give the agents time to fail a few reconnects (backoff ≤ 2 s); they must stay up and serve.
    std::thread::sleep(Duration::from_secs(5));
    for i in 0..fleet.agents.len() {
        assert!(
            fleet.agent_running(i),
            "agent {i} exited while the controller was down"
        );
    }
    for (i, c) in &alice {
        fleet.assert_payload_through(*i, c);
    }

    fleet.start_controller();
    let took = fleet.wait_converged(RECONNECT_BOUND);
    println!("all agents online and acked {took:?} after the controller came back");

    // The control path is live again: a new user reaches every host.
    add_user(&fleet, "carol");
    for (i, c) in fleet.ss_clients("carol") {
        fleet.assert_payload_through(i, &c);
    }
}

/// Words a refusal is expected to be logged with (by the agent or the controller).
const REFUSAL_WORDS: &[&str] = &[
    "refus",
    "revok",
    "denied",
    "unauthori",
    "forbidden",
    "reject",
    "not enrolled",
    "unknown host",
];

fn mentions_refusal(text: &str) -> bool {
    let lower = text.to_lowercase();
    REFUSAL_WORDS.iter().any(|w| lower.contains(w))
}

/// Story (d): a join token works once and not after it expires; a removed server is cut off,
/// refused when it tries again, and gone from `servers list`.
#[test]
fn reused_and_expired_tokens_and_removed_servers_are_refused() {
    let mut fleet = Fleet::start(1);

    // host-1 enrolls with a fresh token...
    let h1 = fleet.add_host();
    let join = fleet.new_join_string("host-1", None);
    let out = fleet.join_agent(h1, &join);
    assert!(
        out.status.success(),
        "first use of a token refused: {out:?}"
    );
    fleet.start_agent(h1);
    wait_until(Duration::from_secs(30), "host-1 is online", || {
        fleet
            .servers()
            .is_ok_and(|rows| rows.iter().any(|r| r.name == "host-1" && r.online))
    });
    let host1_id = fleet
        .servers()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "host-1")
        .and_then(|r| r.host_id)
        .expect("host-1 has a host id once enrolled");
    fleet.agents[h1].host_id = Some(host1_id.clone());

    // ...and the same token, used again from another host, is refused.
    let h2 = fleet.add_host();
    let out = fleet.join_agent(h2, &join);
    assert!(!out.status.success(), "a reused join token was accepted");
    assert!(
        !String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "refused join of a reused token gave no reason on stderr"
    );
    println!(
        "reused token: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );

    // A token that has expired is refused.
    let late = fleet.new_join_string("late", Some("1s"));
    std::thread::sleep(Duration::from_secs(2));
    let out = fleet.join_agent_into(h2, &late, &fleet.dir().join("agent-expired"));
    assert!(!out.status.success(), "an expired join token was accepted");
    assert!(
        !String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "refused join of an expired token gave no reason on stderr"
    );
    println!(
        "expired token: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let rows = fleet.servers().unwrap();
    assert!(
        !rows.iter().any(|r| r.name == "late" && r.online),
        "the server of an expired token is online: {rows:#?}"
    );

    // Removing host-1 disconnects it, and it is gone from the list.
    fleet.vpn_ok(&["servers", "remove", "host-1"]);
    wait_until(
        Duration::from_secs(10),
        "host-1 is gone from servers list",
        || {
            fleet.servers().is_ok_and(|rows| {
                !rows
                    .iter()
                    .any(|r| r.name == "host-1" || r.host_id.as_deref() == Some(&host1_id))
            })
        },
    );
    // Restarted, its agent tries again with its (revoked) certificate and is refused.
    fleet.kill_agent(h1);
    fleet.start_agent(h1);
    std::thread::sleep(Duration::from_secs(6));
    let rows = fleet.servers().unwrap();
    assert!(
        !rows.iter().any(|r| r.host_id.as_deref() == Some(&host1_id)),
        "the removed host came back: {rows:#?}"
    );
    let logs = fleet.product_logs();
    assert!(
        logs.lines()
            .any(|l| mentions_refusal(l) && (l.contains(&host1_id) || l.contains("host-1")))
            || mentions_refusal(&fleet.agent_log_since_start(h1)),
        "no log line tells that the removed host {host1_id} was refused (looked for {REFUSAL_WORDS:?})"
    );
    // The rest of the fleet is untouched.
    assert!(
        rows.iter().any(|r| r.name == "host-0" && r.converged()),
        "host-0 suffered from another host's removal: {rows:#?}"
    );
}
