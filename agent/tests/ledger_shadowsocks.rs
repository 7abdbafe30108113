//! The ledger against a real ssmanager (Docker, host networking, ports 39xxx): `sslocal`
//! clients move bytes through two users' ports to an echo server on a veth address; the
//! agent's ledger reads the manager's counters through the driver, is closed and opened again
//! in the middle (an agent restart), and sees one user's port re-added by a password change.
//! At the end, each user's entries add up to exactly what the engine itself counted — nothing
//! lost, nothing twice — and to at least the payload both ways. Needs Docker and CAP_NET_ADMIN;
//! fails (does not skip) without them.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::time::timeout;
use vpn_agent::apply::Applier;
use vpn_agent::apply::docker::Docker;
use vpn_agent::drivers::shadowsocks::{REQUEST_TIMEOUT, manager::ManagerClient, socket_path};
use vpn_agent::ledger::delta::Now;
use vpn_agent::ledger::{self, Ledger, Limits};
use vpn_shared::model::*;
use vpn_shared::proto::Outcome;

use support::*;

const SERVICE: &str = "ss-ledger";

fn state(base: u16, users: &[(&str, u16, &str)]) -> DesiredState {
    support::state(SERVICE, base, users)
}

/// What the agent does on its usage tick: read through the driver, record.
async fn read_usage(
    applier: &Applier,
    l: &mut Ledger,
    state: &DesiredState,
    clock: std::time::Instant,
) {
    let mut readings = Vec::new();
    for (service, read) in applier.read_counters(state).await {
        readings.push(ledger::reading(state, &service, read.unwrap()));
    }
    let (services, users) = ledger::state_keys(state);
    let now = Now {
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        mono: clock.elapsed(),
    };
    l.record(&readings, &services, &users, now).unwrap();
}

/// The engine's own per-port totals.
async fn engine(run_dir: &Path) -> BTreeMap<u16, u64> {
    let client = ManagerClient::bind(run_dir, &socket_path(run_dir), REQUEST_TIMEOUT).unwrap();
    client.stats().await.unwrap()
}

fn ledger_total(l: &Ledger, user: &str) -> u64 {
    l.entries()
        .filter(|e| e.user == user)
        .map(|e| {
            assert_eq!((e.up, e.down), (0, 0), "ssmanager counts without direction");
            e.undirected
        })
        .sum()
}

/// Opens one connection through `socks`, echoes `n` bytes and closes it. A port ssmanager has
/// just (re)opened may not accept for a moment on a busy machine: a refused connect moves no
/// byte through it, so it is tried again, for at most 10 s.
async fn transfer(socks: SocketAddr, echo: SocketAddr, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match socks_connect(socks, echo).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "the port does not accept yet; again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no connection through {socks} within 10 s: {e}"),
        }
    };
    let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    assert_eq!(roundtrip(&mut s, &payload).await.unwrap(), payload);
    drop(s);
    // Let the server side see the close before the counters are read.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_counts_exactly_what_ssmanager_counted_across_a_reopen_and_a_re_added_port() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("vpn_agent=debug")
        .try_init();
    let docker = Docker::connect().await.unwrap_or_else(|e| {
        panic!("this test needs the local Docker engine (/var/run/docker.sock): {e}")
    });
    ensure_image(&docker).await;
    let host = format!("lg{}", std::process::id());
    let _cleanup = Cleanup(vec![host.clone()]);
    let veth = Veth::add();
    timeout(Duration::from_secs(90), story(docker, host, veth.ip))
        .await
        .expect("story took over 90 s");
}

async fn story(docker: Docker, host: String, local_ip: Ipv4Addr) {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::time::Instant::now();
    let applier = Applier::new(docker, &host, dir.path(), "host");
    let run_dir = applier.run_dir(SERVICE);
    let (echo, _) = echo_server(local_ip).await;
    let base = free_port_pair();
    let (pa, pb) = (base, base + 1);
    let s1 = state(base, &[("alice", pa, "pw-a"), ("bob", pb, "pw-b")]);

    let mut l = Ledger::open(dir.path(), Limits::default()).unwrap();
    let applied = applier.apply_report(&s1).await;
    for r in &applied.results {
        assert_eq!(r.outcome, Outcome::Ok, "{}", r.resource);
    }
    // The agent created the container and opened both ports: both count from their first byte.
    let resets = ledger::resets(&s1, &applied);
    assert_eq!(resets.len(), 3, "{resets:?}");
    l.reset(
        resets,
        Now {
            unix_ms: 0,
            mono: clock.elapsed(),
        },
    );

    let (_sa, socks_a) = sslocal(pa, "pw-a").await;
    let (_sb, socks_b) = sslocal(pb, "pw-b").await;
    transfer(socks_a, echo, 100_000).await;
    transfer(socks_b, echo, 30_000).await;
    read_usage(&applier, &mut l, &s1, clock).await;
    let first = engine(&run_dir).await;
    assert_eq!(ledger_total(&l, "id-alice"), first[&pa]);
    assert_eq!(ledger_total(&l, "id-bob"), first[&pb]);

    // The agent restarts in the middle: the ledger comes back from disk with its baselines.
    let epoch = l.epoch();
    drop(l);
    let mut l = Ledger::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(l.epoch(), epoch);
    transfer(socks_a, echo, 50_000).await;
    read_usage(&applier, &mut l, &s1, clock).await;
    let before_readd = engine(&run_dir).await;
    assert_eq!(
        ledger_total(&l, "id-alice"),
        before_readd[&pa],
        "nothing doubled by the reopen"
    );

    // alice's password changes: her port is closed and re-added, and ssmanager counts it anew.
    let s2 = state(base, &[("alice", pa, "pw-a2"), ("bob", pb, "pw-b")]);
    let applied = applier.apply_report(&s2).await;
    let resets = ledger::resets(&s2, &applied);
    assert_eq!(
        resets.len(),
        1,
        "only alice's counter restarted: {resets:?}"
    );
    l.reset(
        resets,
        Now {
            unix_ms: 0,
            mono: clock.elapsed(),
        },
    );
    let (_sa2, socks_a2) = sslocal(pa, "pw-a2").await;
    transfer(socks_a2, echo, 200_000).await;
    transfer(socks_b, echo, 10_000).await;
    read_usage(&applier, &mut l, &s2, clock).await;
    let last = engine(&run_dir).await;
    assert!(
        last[&pa] < before_readd[&pa] + 200_000,
        "the re-added port counts from zero: {last:?}"
    );
    // Past the old counter: only the reset the applier reported makes this exact.
    assert!(last[&pa] > before_readd[&pa]);
    let alice = ledger_total(&l, "id-alice");
    assert_eq!(
        alice,
        before_readd[&pa] + last[&pa],
        "exact across the re-add"
    );
    assert_eq!(ledger_total(&l, "id-bob"), last[&pb]);
    // Echoed both ways, plus the protocol's overhead (salt, length and tag per chunk).
    let payload = 2 * (100_000 + 50_000 + 200_000);
    assert!(
        alice >= payload && alice < payload + payload / 10,
        "{alice} for {payload}"
    );

    // And once more from disk: the same entries, every seq once.
    let all: Vec<u64> = l.entries().map(|e| e.seq).collect();
    drop(l);
    let l = Ledger::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(l.entries().map(|e| e.seq).collect::<Vec<_>>(), all);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
}
