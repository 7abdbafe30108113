//! A Shadowsocks service past 1,000 users through the whole product (issue 10): a real
//! controller whose store already holds 999 users (seeded in SQL: the figure wanted is the
//! range, not 999 adds), a real agent in its own simulated host, `vpn services deploy
//! shadowsocks --port P --ports 20000`, then users added with the CLI until one gets a port in
//! the range's second block of 1,000, which the agent serves from a second `ssmanager`. Real
//! `sslocal` clients use the very links `vpn users link` printed, on both sides of the block
//! boundary; removing the second block's only user takes that manager away while the first
//! block's user keeps being served.
//!
//! Needs root, Docker, the local images and the workspace's binaries, like every fleet story.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vpn_e2e::Fleet;
use vpn_e2e::wait::poll_until;

/// The service's first port; its range is `PORT ..= PORT + 19999`.
const PORT: u16 = 20000;
const SEEDED: usize = 999;
const CONVERGED: Duration = Duration::from_secs(60);

/// `n` active users on every server, straight into the controller's store (with their quota
/// rows, as `users add` makes them).
fn seed(db: &Path, n: usize) {
    let statements = [
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO users (id, name, status, all_servers, created_at, updated_at) \
             SELECT printf('%08x-0000-4000-8000-%012x', i, i), printf('seed%04d', i), \
             'active', 1, 1700000000, 1700000000 FROM n",
            last = n - 1
        ),
        "INSERT INTO user_quota (user_id) SELECT id FROM users".to_string(),
    ];
    vpn_e2e::seed::run_sql(db, &statements);
}

/// The names of the running containers whose name contains `part`.
fn containers_named(part: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.contains(part))
        .map(str::to_owned)
        .collect()
}

/// The port of `user`'s only `ss://` link (`…@HOST:PORT#…`).
fn link_port(fleet: &Fleet, user: &str) -> u16 {
    let links = fleet.ss_links_per_host(user);
    let [(_, link)] = links.as_slice() else {
        panic!("{user}: one host, one link: {links:?}");
    };
    let (_, rest) = link.rsplit_once('@').unwrap();
    let hostport = rest.split(['#', '/', '?']).next().unwrap();
    let (_, port) = hostport.rsplit_once(':').unwrap();
    port.parse().unwrap()
}

#[test]
fn users_past_the_first_thousand_ports_are_served_by_a_second_manager() {
    let mut fleet = Fleet::start(1);
    fleet.stop_controller();
    seed(&fleet.controller_dir().join("controller.db"), SEEDED);
    fleet.start_controller();
    fleet.wait_converged(CONVERGED);

    let out = fleet.vpn_ok(&[
        "services",
        "deploy",
        "shadowsocks",
        "--port",
        &PORT.to_string(),
        "--ports",
        "20000",
        "--all-servers",
    ]);
    assert!(out.contains("(ports 20000-39999)"), "{out}");
    for user in ["alice", "bob"] {
        fleet.vpn_ok(&["users", "add", user, "--all-servers"]);
    }
    fleet.wait_converged(CONVERGED);
    assert_eq!(
        link_port(&fleet, "alice"),
        PORT + 999,
        "the first block's last port"
    );
    assert_eq!(
        link_port(&fleet, "bob"),
        PORT + 1000,
        "the second block's first port"
    );
    let second = containers_named(".ports-21000-21999");
    assert_eq!(
        second.len(),
        1,
        "one manager for the second block: {second:?}"
    );

    let alice = fleet.ss_clients("alice");
    let bob = fleet.ss_clients("bob");
    fleet.assert_payload_through(0, &alice[0].1);
    fleet.assert_payload_through(0, &bob[0].1);

    // Bob goes: the second block's manager goes with him; alice is still served.
    fleet.vpn_ok(&["users", "remove", "bob"]);
    fleet.wait_converged(CONVERGED);
    let gone = poll_until(Duration::from_secs(20), || {
        containers_named(".ports-21000-21999").is_empty()
    });
    assert!(
        gone.is_some(),
        "the second block's manager outlived its last user"
    );
    assert!(
        bob[0]
            .1
            .get_within("/payload", Duration::from_secs(3))
            .is_err(),
        "a removed user's link still works"
    );
    fleet.assert_payload_through(0, &alice[0].1);
}
