//! Traffic accounting that loses nothing (SPEC §2.6, §4 item 3): real `sslocal` clients move
//! known numbers of bytes through a host's Shadowsocks server; the controller's usage for that
//! user and host (`vpn users usage -o json`) must equal, to the byte, what the host's own engine
//! counted (ssmanager's `ping`, asked by the test itself over the manager socket) — through a
//! partition of the host, an agent SIGKILLed mid-transfer and a controller SIGKILLed during
//! ingest.
//!
//! Needs what every fleet story needs (root, Docker, the local images, `sslocal`, the
//! workspace's binaries); without them it fails naming what is missing.

use std::time::{Duration, Instant};

use vpn_agent::drivers::shadowsocks::manager::ManagerClient;
use vpn_agent::drivers::shadowsocks::socket_path;
use vpn_e2e::client::SsLocal;
use vpn_e2e::wait::poll_until;
use vpn_e2e::{Fleet, wait_until};

const SS_PORT: u16 = 20000;
/// Counters are read this often in these stories (the default is 10 s).
const USAGE_INTERVAL: &str = "1s";
/// How long usage may take to reach the controller once traffic stopped: a read, a report and
/// a commit, with room for a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(60);
/// One bulk transfer's size.
const TRANSFER: usize = 8 << 20;

fn fleet(n: usize) -> Fleet {
    let fleet = Fleet::start_with(n, &["--usage-interval", USAGE_INTERVAL]);
    fleet.deploy_shadowsocks(SS_PORT);
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(CONVERGE);
    fleet
}

/// alice's link to host `i` and an `sslocal` on it, checked to carry the host's payload.
fn client(fleet: &Fleet, i: usize) -> (SsLocal, u16) {
    let ip = fleet.agents[i].host.ip.to_string();
    let link = fleet
        .links("alice")
        .into_iter()
        .find(|l| vpn_e2e::fleet::link_host(l).as_deref() == Some(ip.as_str()))
        .unwrap_or_else(|| panic!("alice has no link to host {i}"));
    let port = link
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split(['#', '/', '?']).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {link}"));
    let c = fleet.sslocal(&link);
    fleet.assert_payload_through(i, &c);
    (c, port)
}

/// What host `i`'s ssmanager counted on `port` (tx + rx since the port was added), asked over
/// its manager socket as the agent does.
fn engine_bytes(fleet: &Fleet, i: usize, port: u16) -> u64 {
    let run_dir = fleet.agents[i].data_dir.join("run").join("shadowsocks");
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let c = ManagerClient::bind(&run_dir, &socket_path(&run_dir), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("manager socket of host {i}: {e}"));
        let stats = c
            .stats()
            .await
            .unwrap_or_else(|e| panic!("ping host {i}'s ssmanager: {e}"));
        stats.get(&port).copied().unwrap_or(0)
    })
}

/// Waits until the controller's figure for host `i` equals the engine's and stays so; returns it.
fn assert_exact(fleet: &Fleet, i: usize, port: u16, what: &str) -> u64 {
    let server = fleet.agents[i].name.clone();
    let (mut engine, mut seen) = (0, 0);
    let ok = poll_until(SETTLE, || {
        engine = engine_bytes(fleet, i, port);
        seen = fleet.recorded_usage("alice", &server);
        engine > 0 && seen == engine
    });
    assert!(
        ok.is_some(),
        "{what}: the controller recorded {seen} bytes for alice on {server}, the engine counted \
         {engine} (difference {})",
        seen as i128 - engine as i128
    );
    // And not more later (a replayed batch must change nothing).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        fleet.recorded_usage("alice", &server),
        engine_bytes(fleet, i, port),
        "{what}: figures moved apart after settling"
    );
    engine
}

fn download(c: &SsLocal, bytes: usize) {
    let report = c
        .start_bulk_download(bytes, Duration::from_secs(120))
        .wait();
    assert!(report.intact, "download through {}: {report:?}", c.link);
}

/// A known transfer is recorded exactly as the host's engine counted it, and within the
/// protocol's overhead of the payload.
#[test]
fn usage_equals_the_hosts_own_counters_and_the_payload_within_overhead() {
    let fleet = fleet(1);
    let (c, port) = client(&fleet, 0);
    let before = assert_exact(&fleet, 0, port, "after the first page");
    download(&c, TRANSFER);
    let after = assert_exact(&fleet, 0, port, "after an 8 MiB download");
    println!("usage: {before} bytes after the first page, {after} after the download, to the byte");
    let moved = after - before;
    let overhead = moved as f64 / TRANSFER as f64 - 1.0;
    println!(
        "usage: {moved} bytes counted for an {TRANSFER}-byte payload: {:.3} % overhead",
        overhead * 100.0
    );
    // Shadowsocks AEAD: 2+16+16 bytes per chunk of at most 16 KiB, a salt per direction, the
    // request and HTTP headers — well under 1 % plus a few KiB.
    assert!(
        moved >= TRANSFER as u64 && moved <= TRANSFER as u64 + TRANSFER as u64 / 100 + 16_384,
        "{moved} bytes counted for an {TRANSFER}-byte payload"
    );
}

/// (a) The host is cut off while a transfer runs: it shows offline; after healing, the usage
/// equals the engine's counter — nothing lost while it could not report, nothing doubled.
#[test]
fn a_partitioned_host_reports_every_byte_after_healing() {
    let fleet = fleet(1);
    let (c, port) = client(&fleet, 0);
    let transfer = c.start_bulk_download(64 << 20, Duration::from_secs(120));
    wait_until(Duration::from_secs(20), "the transfer flows", || {
        transfer.received() > 1 << 20
    });
    let cut = fleet.agents[0]
        .host
        .partition()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _ = transfer.stop();
    wait_until(Duration::from_secs(40), "host-0 shows offline", || {
        fleet
            .servers()
            .unwrap_or_default()
            .iter()
            .any(|r| r.name == "host-0" && !r.online)
    });
    cut.heal().unwrap_or_else(|e| panic!("{e:#}"));
    fleet.wait_converged(CONVERGE);
    let n = assert_exact(&fleet, 0, port, "after a partition");
    println!("usage: after a partition: {n} bytes, controller and engine agree");
}

/// (b) The agent is SIGKILLed again and again while bytes flow and reports are in flight, then
/// started again: the totals stay exact.
#[test]
fn an_agent_killed_mid_report_neither_loses_nor_doubles() {
    let mut fleet = fleet(1);
    let (c, port) = client(&fleet, 0);
    for round in 0..3 {
        let transfer = c.start_bulk_download(TRANSFER, Duration::from_secs(120));
        // Counters are read every second: kill somewhere between a read and its ack.
        std::thread::sleep(Duration::from_millis(1_300 + 400 * round));
        fleet.kill_agent(0);
        let report = transfer.wait();
        assert!(
            report.intact,
            "the data plane does not need the agent: {report:?}"
        );
        fleet.start_agent(0);
        fleet.wait_converged(CONVERGE);
    }
    let n = assert_exact(&fleet, 0, port, "after three agent kills");
    println!("usage: after three agent kills: {n} bytes, controller and engine agree");
}

/// (c) The controller is SIGKILLed while agents report, then started again: the totals stay
/// exact (an ingest is one transaction, acked only after its commit).
#[test]
fn a_controller_killed_during_ingest_neither_loses_nor_doubles() {
    let mut fleet = fleet(2);
    let clients: Vec<(SsLocal, u16)> = (0..2).map(|i| client(&fleet, i)).collect();
    let start = Instant::now();
    for round in 0..3 {
        let transfers: Vec<_> = clients
            .iter()
            .map(|(c, _)| c.start_bulk_download(TRANSFER, Duration::from_secs(120)))
            .collect();
        std::thread::sleep(Duration::from_millis(1_100 + 300 * round));
        fleet.kill_controller();
        for t in transfers {
            let report = t.wait();
            assert!(
                report.intact,
                "the data plane does not need the controller: {report:?}"
            );
        }
        fleet.start_controller();
        fleet.wait_converged(CONVERGE);
    }
    for (i, (_, port)) in clients.iter().enumerate() {
        let n = assert_exact(&fleet, i, *port, "after three controller kills");
        println!(
            "usage: after three controller kills: host-{i} {n} bytes, controller and engine agree"
        );
    }
    println!("usage: controller-kill story took {:?}", start.elapsed());
}
