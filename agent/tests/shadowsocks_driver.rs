//! End to end against the real Docker engine: the `Applier` runs the locally built ssmanager
//! image with host networking on ports 39xxx, and real `sslocal` clients carry traffic to an echo
//! server on an address of a veth pair the test adds (198.18.0.0/15, removed on drop). Checks
//! that the tunnel refuses the host's loopback (an echo server on 127.0.0.1 never sees a
//! connection), hot user changes (another user's open connection survives), idempotent
//! re-apply, users coming back after a container restart, and that stale removal spares another
//! host's containers. Needs Docker and CAP_NET_ADMIN; fails (does not skip) without them.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::timeout;
use vpn_agent::apply::docker::{Docker, EnsureOutcome};
use vpn_agent::apply::{Applier, ApplyReport};
use vpn_agent::drivers::shadowsocks::{manager::ManagerClient, socket_path};
use vpn_shared::model::*;
use vpn_shared::proto::Outcome;

use support::*;

const SERVICE: &str = "ss-it";

fn state(base: u16, users: &[(&str, u16, &str)]) -> DesiredState {
    support::state(SERVICE, base, users)
}

fn assert_all_ok(report: &ApplyReport, expected: usize) {
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::Ok, "{}", r.resource);
    }
    assert_eq!(report.results.len(), expected, "{:?}", report.results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowsocks_users_change_hot_through_the_applier() {
    // Shown for a failing test or with --nocapture.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("vpn_agent=debug")
        .try_init();
    let docker = Docker::connect().await.unwrap_or_else(|e| {
        panic!("this test needs the local Docker engine (/var/run/docker.sock): {e}")
    });
    ensure_image(&docker).await;
    let (host, other_host) = (
        format!("it{}a", std::process::id()),
        format!("it{}b", std::process::id()),
    );
    let _cleanup = Cleanup(vec![host.clone(), other_host.clone()]);
    let veth = Veth::add();
    timeout(
        Duration::from_secs(60),
        story(docker, host, other_host, veth.ip),
    )
    .await
    .expect("story took over 60 s");
}

async fn story(docker: Docker, host: String, other_host: String, local_ip: Ipv4Addr) {
    let dir = tempfile::tempdir().unwrap();
    let applier = Applier::new(docker.clone(), &host, dir.path(), "host");
    let other = Applier::new(
        docker.clone(),
        &other_host,
        &dir.path().join("other"),
        "host",
    );
    let (echo, _) = echo_server(local_ip).await;
    let (loopback_echo, loopback_accepted) = echo_server(Ipv4Addr::LOCALHOST).await;
    let base = free_port_pair();
    let (pa, pb) = (base, base + 1);
    let full = state(base, &[("alice", pa, "pw-alice"), ("bob", pb, "pw-bob")]);
    let without_alice = state(base, &[("bob", pb, "pw-bob")]);

    // Another agent on the same engine: its container must survive our stale removal.
    assert_all_ok(&other.apply_report(&state(base, &[])).await, 1);

    let r = applier.apply_report(&full).await;
    assert_all_ok(&r, 3);
    assert_eq!(r.containers[SERVICE], EnsureOutcome::Created);
    assert_eq!((r.adds, r.removes), (2, 0));

    let (_sa, socks_a) = sslocal(pa, "pw-alice").await;
    let (_sb, socks_b) = sslocal(pb, "pw-bob").await;
    let payload: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut a1 = socks_connect(socks_a, echo).await.unwrap();
    assert_eq!(
        roundtrip(&mut a1, &payload).await.unwrap(),
        payload,
        "alice's bytes"
    );
    let mut b1 = socks_connect(socks_b, echo).await.unwrap();
    assert_eq!(roundtrip(&mut b1, b"b-1").await.unwrap(), b"b-1");

    // The host's loopback is refused by the ACL: sslocal may answer the CONNECT, but the server
    // drops the relay before dialling, so the loopback echo server never sees a connection.
    let to_loopback = match socks_connect(socks_a, loopback_echo).await {
        Ok(mut s) => roundtrip(&mut s, b"loopback").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        to_loopback.is_err(),
        "the tunnel relayed to the host's 127.0.0.1"
    );
    assert_eq!(loopback_accepted.load(Ordering::SeqCst), 0);

    // Remove alice: only her port closes, bob's open connection carries on.
    let r = applier.apply_report(&without_alice).await;
    assert_all_ok(&r, 2);
    assert_eq!(
        (r.containers[SERVICE], r.adds, r.removes),
        (EnsureOutcome::Unchanged, 0, 1)
    );
    // ssmanager alone leaves accepted connections open; the applier ends them (`ss -K`).
    let after = roundtrip(&mut a1, b"a-after").await;
    assert!(
        after.is_err(),
        "alice's open connection survived her removal: {after:?}"
    );
    let new_a = match socks_connect(socks_a, echo).await {
        Ok(mut s) => roundtrip(&mut s, b"a-new").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        new_a.is_err(),
        "a new connection of a removed user must fail"
    );
    assert_eq!(roundtrip(&mut b1, b"b-2").await.unwrap(), b"b-2");

    // Re-add alice: her new connections work, bob's connection still does.
    let r = applier.apply_report(&full).await;
    assert_all_ok(&r, 3);
    assert_eq!(
        (r.containers[SERVICE], r.adds, r.removes),
        (EnsureOutcome::Unchanged, 1, 0)
    );
    let mut a2 = socks_connect(socks_a, echo).await.unwrap();
    assert_eq!(roundtrip(&mut a2, &payload).await.unwrap(), payload);
    assert_eq!(roundtrip(&mut b1, b"b-3").await.unwrap(), b"b-3");

    // Same state again: nothing recreated, no manager call, counters keep counting.
    let name = applier.container_name(SERVICE);
    let id_before = docker.list_managed(&host).await.unwrap();
    let run_dir = applier.run_dir(SERVICE);
    let client =
        ManagerClient::bind(&run_dir, &socket_path(&run_dir), Duration::from_secs(2)).unwrap();
    let stats_before = client.stats().await.unwrap();
    let r = applier.apply_report(&full).await;
    assert_all_ok(&r, 3);
    assert_eq!(
        (r.containers[SERVICE], r.adds, r.removes),
        (EnsureOutcome::Unchanged, 0, 0)
    );
    assert_eq!(docker.list_managed(&host).await.unwrap(), id_before);
    let stats_after = client.stats().await.unwrap();
    assert!(
        stats_after[&pb] >= stats_before[&pb] && stats_before[&pb] > 0,
        "{stats_after:?}"
    );
    assert_eq!(roundtrip(&mut b1, b"b-4").await.unwrap(), b"b-4");

    // Docker restarts the container: a fresh ssmanager has no ports until reconcile_users.
    let out = Command::new("docker")
        .args(["restart", "-t", "1", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = applier.reconcile_users(&full).await;
    assert!(
        results.iter().all(|r| r.outcome == Outcome::Ok),
        "{results:?}"
    );
    let mut ports: Vec<u16> = client
        .list()
        .await
        .unwrap()
        .iter()
        .map(|l| l.port)
        .collect();
    ports.sort();
    assert_eq!(ports, vec![pa, pb]);
    let mut a3 = socks_connect(socks_a, echo).await.unwrap();
    assert_eq!(roundtrip(&mut a3, b"a-3").await.unwrap(), b"a-3");
    drop(client);

    // A stopped container is started again, and its fresh manager gets every user back.
    let out = Command::new("docker")
        .args(["stop", "-t", "1", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = applier.apply_report(&full).await;
    assert_all_ok(&r, 3);
    assert_eq!((r.containers[SERVICE], r.adds), (EnsureOutcome::Started, 2));

    // A spec change (here the method) recreates the container; users are added to the new one.
    let mut changed = full.clone();
    if let Some(s) = changed.services.get_mut(SERVICE) {
        s.options = ServiceOptions::Shadowsocks {
            method: "aes-256-gcm".into(),
        };
    }
    let r = applier.apply_report(&changed).await;
    assert_all_ok(&r, 3);
    assert_eq!(
        (r.containers[SERVICE], r.adds),
        (EnsureOutcome::Recreated, 2)
    );

    // An empty state removes our container only.
    let r = applier.apply_report(&DesiredState::default()).await;
    assert_eq!(r.removed, vec![name]);
    assert!(docker.list_managed(&host).await.unwrap().is_empty());
    assert_eq!(docker.list_managed(&other_host).await.unwrap().len(), 1);
}
