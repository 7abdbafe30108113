//! Acceptance stories of per-user bandwidth limits and the managed firewall (issue 3, SPEC §2.5):
//! a real controller and agents, Shadowsocks deployed by the product, the real `sslocal` using
//! the exact links `vpn users link` printed, and the agent's own `tc` and `nft` state inside each
//! simulated host's network namespace.
//!
//! Throughput is measured by the client as HTTP body bytes per second (goodput) and compared
//! with the configured rate, which `tc` applies to whole frames. The goodput of a TCP flow is
//! therefore a few percent below the rate by construction: per 1448-byte segment the shaper
//! also counts the Ethernet (14), IP (20) and TCP-with-timestamps (32) headers, 1448/1514 ≈
//! 95.6 %, and the Shadowsocks AEAD framing adds 34 bytes per chunk of up to 16 KiB (≈ 0.2 %).
//! The expected goodput of an 8 mbit limit is thus ≈ 7.6 Mbit/s; the ±15 % bar of the issue is
//! asserted against the configured rate itself, not against that corrected figure. Every figure
//! is printed (`--success-output immediate` shows it on a passing run) for docs/benchmarks.md.
//!
//! The client runs in this machine's root namespace and reaches the hosts through the fleet's
//! Docker bridge, so the hosts see its connections coming from the bridge's gateway address:
//! that is the address the firewall story blocks.
//!
//! Needs root, Docker, the local images and the workspace's binaries; without them every story
//! fails naming what is missing (`deploy/scripts/setup.sh`, then `cargo build --workspace
//! --bins`). Stories run one at a time (`.config/nextest.toml`).

#![allow(
    clippy::print_stdout,
    reason = "the measured figures and timings are the stories' report, printed by helpers too"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use vpn_e2e::Fleet;
use vpn_e2e::client::{BulkDownload, SsLocal};
use vpn_e2e::wait::poll_until;
use vpn_e2e::wait_until;

/// The port `services deploy` is given (users get ports of their own next to it).
const SS_PORT: u16 = 20000;
/// Agents must be online and acked within this bound.
const CONVERGE_BOUND: Duration = Duration::from_secs(30);

// ---- bandwidth ---------------------------------------------------------------------------------

/// Alice's first limit and the one she is changed to (bit/s, as `8mbit` / `16mbit` parse).
const LIMIT_BPS: f64 = 8_000_000.0;
const RAISED_BPS: f64 = 16_000_000.0;
/// The accuracy bar: measured within ±15 % of the configured rate.
const TOLERANCE: f64 = 0.15;
/// "Well above" a limit: an unlimited flow must beat it by this factor.
const WELL_ABOVE: f64 = 3.0;
/// A fixed-size transfer of about 3.5 s at 8 mbit.
const MEASURED_BYTES: usize = 3_500_000;
/// Size of the open-ended downloads whose rate is sampled over windows (they are stopped).
const ENDLESS_BYTES: usize = 1 << 30;
/// Bound on any single measured transfer.
const TRANSFER_LIMIT: Duration = Duration::from_secs(60);
/// After a limit change is acked, the time given to the flow before a window is measured.
const RATE_SETTLE: Duration = Duration::from_secs(1);

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

/// Asserts `measured` is within [`TOLERANCE`] of `limit`, with `what` and the host's tc state in
/// the failure message.
fn assert_near(fleet: &Fleet, what: &str, measured: f64, limit: f64) {
    let err = (measured - limit) / limit;
    assert!(
        err.abs() <= TOLERANCE,
        "{what}: measured {:.2} Mbit/s, {:+.1} % off the {:.0} mbit limit (bar ±{:.0} %)\n{}",
        mbit(measured),
        err * 100.0,
        mbit(limit),
        TOLERANCE * 100.0,
        tc_state(fleet, 0)
    );
}

/// Asserts `measured` is more than [`WELL_ABOVE`] times `limit`.
fn assert_well_above(fleet: &Fleet, what: &str, measured: f64, limit: f64) {
    assert!(
        measured > WELL_ABOVE * limit,
        "{what}: measured {:.2} Mbit/s, not above {WELL_ABOVE}× {:.0} mbit\n{}",
        mbit(measured),
        mbit(limit),
        tc_state(fleet, 0)
    );
}

/// Prints one figure in the form docs/benchmarks.md quotes.
fn report(what: &str, measured: f64, limit: Option<f64>) {
    match limit {
        Some(l) => println!(
            "bandwidth: {what}: {:.2} Mbit/s ({:+.1} % of the {:.0} mbit limit)",
            mbit(measured),
            (measured - l) / l * 100.0,
            mbit(l)
        ),
        None => println!(
            "bandwidth: {what}: {:.2} Mbit/s (unlimited)",
            mbit(measured)
        ),
    }
}

/// Goodput of `download` over the next `window` (bit/s), sampled from its progress.
fn window_rate(download: &BulkDownload, window: Duration) -> f64 {
    let (t0, b0) = (Instant::now(), download.received());
    std::thread::sleep(window);
    let (t1, b1) = (Instant::now(), download.received());
    b1.saturating_sub(b0) as f64 * 8.0 / (t1 - t0).as_secs_f64()
}

/// Uploads [`MEASURED_BYTES`] through `client`; goodput in bit/s.
fn upload_rate(client: &SsLocal, what: &str) -> f64 {
    let took = client
        .upload(MEASURED_BYTES, TRANSFER_LIMIT)
        .unwrap_or_else(|e| panic!("{what}: upload failed: {e:#}"));
    MEASURED_BYTES as f64 * 8.0 / took.as_secs_f64()
}

/// What the agent of host `i` installed: `tc -s` of the egress interface and its IFB device.
fn tc_state(fleet: &Fleet, i: usize) -> String {
    let host = &fleet.agents[i].host;
    let mut out = String::new();
    for args in [
        &["-s", "class", "show", "dev", "eth0"][..],
        &["filter", "show", "dev", "eth0"],
        &["-s", "class", "show", "dev", "ifb-eth0"],
        &["filter", "show", "dev", "ifb-eth0"],
    ] {
        let o = host.command("tc").args(args).output();
        out.push_str(&format!("--- tc {} (host {i}) ---\n", args.join(" ")));
        match o {
            Ok(o) => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => out.push_str(&format!("cannot run tc: {e}\n")),
        }
    }
    out
}

/// The single link of `user` on a one-host fleet, started as a client that is known to work.
fn client_of(fleet: &Fleet, user: &str) -> SsLocal {
    let links = fleet.links(user);
    assert_eq!(links.len(), 1, "{user} should have one link: {links:#?}");
    let client = fleet.sslocal(&links[0]);
    fleet.assert_payload_through(0, &client);
    client
}

/// Story (a): alice is limited to 8 mbit in both directions and bob is not. Through the real
/// client, alice's download and upload measure within ±15 % of 8 mbit while bob, at the same
/// time, gets well above it; raising alice to 16 mbit takes effect on her running download, and
/// removing her limit gives her full speed again on that same download.
#[test]
fn a_limited_user_gets_her_rate_and_an_unlimited_one_does_not() {
    let fleet = Fleet::start(1);
    fleet.deploy_shadowsocks(SS_PORT);
    fleet.vpn_ok(&[
        "users",
        "add",
        "alice",
        "--all-servers",
        "--bandwidth",
        "8mbit",
    ]);
    fleet.vpn_ok(&["users", "add", "bob", "--all-servers"]);
    fleet.wait_converged(CONVERGE_BOUND);
    let alice = client_of(&fleet, "alice");
    let bob = client_of(&fleet, "bob");
    println!(
        "bandwidth: what the agent installed for alice:\n{}",
        tc_state(&fleet, 0)
    );

    // Download, both users at once: alice's fixed-size transfer, bob's window inside it.
    let alice_dl = alice.start_bulk_download(MEASURED_BYTES, TRANSFER_LIMIT);
    wait_until(Duration::from_secs(10), "alice's download flows", || {
        alice_dl.received() > 0 || alice_dl.is_finished()
    });
    let bob_dl = bob.start_bulk_download(ENDLESS_BYTES, TRANSFER_LIMIT);
    std::thread::sleep(Duration::from_millis(500));
    let bob_rate = window_rate(&bob_dl, Duration::from_secs(2));
    let alice_still_running = !alice_dl.is_finished();
    let bob_report = bob_dl.stop();
    let alice_report = alice_dl.wait();
    assert!(
        alice_report.intact && bob_report.intact,
        "downloads broke: alice {alice_report:?}, bob {bob_report:?}"
    );
    assert!(
        alice_still_running,
        "alice's download ended before bob's window did: not measured at the same time \
         (alice took {:?})",
        alice_report.elapsed
    );
    let alice_rate = alice_report.bits_per_sec();
    report(
        &format!(
            "alice download, {MEASURED_BYTES} bytes in {:.2} s",
            alice_report.elapsed.as_secs_f64()
        ),
        alice_rate,
        Some(LIMIT_BPS),
    );
    report("bob download at the same time, 2 s window", bob_rate, None);
    assert_near(&fleet, "alice's download", alice_rate, LIMIT_BPS);
    assert_well_above(&fleet, "bob's download beside alice's", bob_rate, LIMIT_BPS);

    // Upload.
    let alice_up = upload_rate(&alice, "alice");
    report(
        &format!("alice upload, {MEASURED_BYTES} bytes"),
        alice_up,
        Some(LIMIT_BPS),
    );
    let bob_up = upload_rate(&bob, "bob");
    report(&format!("bob upload, {MEASURED_BYTES} bytes"), bob_up, None);
    assert_near(&fleet, "alice's upload", alice_up, LIMIT_BPS);
    assert_well_above(&fleet, "bob's upload", bob_up, LIMIT_BPS);

    // One long download across two limit changes.
    let running = alice.start_bulk_download(ENDLESS_BYTES, TRANSFER_LIMIT * 2);
    std::thread::sleep(RATE_SETTLE);
    let before = window_rate(&running, Duration::from_secs(3));
    report(
        "alice running download before the change, 3 s window",
        before,
        Some(LIMIT_BPS),
    );
    assert_near(
        &fleet,
        "alice's running download at 8 mbit",
        before,
        LIMIT_BPS,
    );

    let asked = Instant::now();
    fleet.vpn_ok(&["users", "edit", "alice", "--bandwidth", "16mbit"]);
    println!(
        "bandwidth: `users edit alice --bandwidth 16mbit` acked in {:?}",
        asked.elapsed()
    );
    std::thread::sleep(RATE_SETTLE);
    let raised = window_rate(&running, Duration::from_secs(3));
    report(
        "alice same download after raising to 16mbit, 3 s window",
        raised,
        Some(RAISED_BPS),
    );
    assert_near(
        &fleet,
        "alice's running download raised to 16 mbit",
        raised,
        RAISED_BPS,
    );

    // While her download runs on: the upload's ACKs share her download class, as in real use.
    let raised_up = upload_rate(&alice, "alice at 16mbit");
    report(
        &format!("alice upload at 16mbit, {MEASURED_BYTES} bytes"),
        raised_up,
        Some(RAISED_BPS),
    );
    assert_near(
        &fleet,
        "alice's upload raised to 16 mbit",
        raised_up,
        RAISED_BPS,
    );

    fleet.vpn_ok(&["users", "edit", "alice", "--no-bandwidth"]);
    std::thread::sleep(RATE_SETTLE);
    let freed = window_rate(&running, Duration::from_secs(2));
    report(
        "alice same download after --no-bandwidth, 2 s window",
        freed,
        None,
    );
    let same = running.stop();
    assert!(
        same.intact && same.error.is_none(),
        "alice's download did not survive the limit changes: {same:?}"
    );
    assert_well_above(
        &fleet,
        "alice's download without a limit",
        freed,
        RAISED_BPS,
    );

    let free_up = upload_rate(&alice, "alice without a limit");
    report(
        &format!("alice upload without a limit, {MEASURED_BYTES} bytes"),
        free_up,
        None,
    );
    assert_well_above(
        &fleet,
        "alice's upload without a limit",
        free_up,
        RAISED_BPS,
    );
}

// ---- firewall ----------------------------------------------------------------------------------

/// A block must stop new connections to the targeted hosts within this bound of the CLI call.
const BLOCK_BOUND: Duration = Duration::from_secs(5);
/// Unblocking must let them through again within this bound.
const UNBLOCK_BOUND: Duration = Duration::from_secs(5);
/// A restarted agent must have re-applied its saved state within this bound.
const RESTART_BOUND: Duration = Duration::from_secs(30);
/// One connection attempt through a client: a tiny GET answers in milliseconds when the path is
/// open, and a dropped SYN leaves it hanging, so a short limit tells the two apart.
const PROBE_LIMIT: Duration = Duration::from_millis(1500);

/// `host I port P` of a client, for messages.
fn who(i: usize, client: &SsLocal) -> String {
    let hostport = client.link.split('#').next().unwrap_or_default();
    let port = hostport.rsplit(':').next().unwrap_or("?");
    format!("host {i} port {port}")
}

fn probe(client: &SsLocal) -> Result<(), String> {
    client
        .get_within("/", PROBE_LIMIT)
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// Runs `vpn ARGS` and returns, per client, when (after the call began) the first connection
/// attempt started that failed; panics if one still got through [`BLOCK_BOUND`] after the call.
/// Clients are probed side by side, so one host's hanging attempts do not delay another's
/// measurement. Each client is then checked to stay cut on a second attempt.
fn cut_by(fleet: &Fleet, args: &[&str], clients: &[(usize, &SsLocal)]) -> Vec<Duration> {
    let call = Instant::now();
    fleet.vpn_ok(args);
    let acked = call.elapsed();
    let cmd = args.join(" ");
    let outcomes: Vec<Result<Duration, String>> = std::thread::scope(|scope| {
        let probes: Vec<_> = clients
            .iter()
            .map(|(i, c)| {
                scope.spawn(move || {
                    let who = who(*i, c);
                    // Bounded: every turn is one attempt of at most PROBE_LIMIT, and the
                    // deadline ends the loop.
                    let at = loop {
                        let at = call.elapsed();
                        if probe(c).is_err() {
                            break at;
                        }
                        if call.elapsed() >= BLOCK_BOUND {
                            return Err(format!(
                                "{who} still accepts new connections {:?} after the call",
                                call.elapsed()
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    };
                    match probe(c) {
                        Err(_) => Ok(at),
                        Ok(()) => Err(format!("{who} let a second connection through")),
                    }
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|p| {
                p.join()
                    .unwrap_or_else(|_| Err("probe thread panicked".into()))
            })
            .collect()
    });
    clients
        .iter()
        .zip(outcomes)
        .map(|((i, c), outcome)| {
            let at = outcome.unwrap_or_else(|e| panic!("`vpn {cmd}`: {e}"));
            println!(
                "firewall: `vpn {cmd}` (acked in {acked:?}): {} refuses new connections \
                 from an attempt begun {at:?} after the call",
                who(*i, c)
            );
            at
        })
        .collect()
}

/// Runs `vpn ARGS` and waits (bounded by [`UNBLOCK_BOUND`]) until every client works again.
fn restored_by(fleet: &Fleet, args: &[&str], clients: &[(usize, &SsLocal)]) {
    let call = Instant::now();
    fleet.vpn_ok(args);
    for (i, c) in clients {
        let mut last = String::new();
        let ok = poll_until(UNBLOCK_BOUND.saturating_sub(call.elapsed()), || {
            probe(c).map_err(|e| last = e).is_ok()
        });
        assert!(
            ok.is_some(),
            "`vpn {}`: {} still refuses {:?} after the call: {last}",
            args.join(" "),
            who(*i, c),
            call.elapsed()
        );
        println!(
            "firewall: `vpn {}`: {} accepts connections again {:?} after the call",
            args.join(" "),
            who(*i, c),
            call.elapsed()
        );
    }
}

/// Asserts a new connection through every client works.
fn assert_open(clients: &[(usize, &SsLocal)], when: &str) {
    for (i, c) in clients {
        if let Err(e) = probe(c) {
            panic!("{when}: {} refuses although it should not: {e}", who(*i, c));
        }
    }
}

/// Asserts a new connection through every client fails.
fn assert_cut(clients: &[(usize, &SsLocal)], when: &str) {
    for (i, c) in clients {
        assert!(
            probe(c).is_err(),
            "{when}: {} accepts a blocked address",
            who(*i, c)
        );
    }
}

/// `vpn firewall list -o json` as (target, server) pairs.
fn firewall_rules(fleet: &Fleet) -> Vec<(String, Option<String>)> {
    let out = fleet.vpn_ok(&["firewall", "list", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`vpn firewall list -o json` is not JSON ({e}): {out}"));
    let rows = rows
        .as_array()
        .unwrap_or_else(|| panic!("`vpn firewall list -o json` is not an array: {out}"));
    rows.iter()
        .map(|r| {
            let target = r["target"]
                .as_str()
                .unwrap_or_else(|| panic!("firewall rule without a target: {r}"))
                .to_string();
            (target, r["server"].as_str().map(str::to_string))
        })
        .collect()
}

/// Whether `target` (`ADDR` or `ADDR/LEN`) names exactly the address `addr`.
fn names_address(target: &str, addr: &str) -> bool {
    target == addr || target == format!("{addr}/32")
}

/// Runs `nft ARGS` inside host `i`'s namespace; panics unless it succeeds.
fn nft(fleet: &Fleet, i: usize, args: &[&str]) -> String {
    let mut cmd: Command = fleet.agents[i].host.command("nft");
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running nft in host {i}: {e} (apt-get install nftables)"));
    assert!(
        out.status.success(),
        "nft {} in host {i} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until agent `i`, restarted, logs that it replaced its table (it always does once at
/// start), and returns that line.
fn wait_table_replaced(fleet: &Fleet, i: usize) -> String {
    let mut line = None;
    let took = poll_until(RESTART_BOUND, || {
        line = fleet
            .agent_log_since_start(i)
            .lines()
            .find(|l| l.contains("firewall table replaced"))
            .map(str::to_string);
        line.is_some()
    });
    assert!(
        took.is_some(),
        "restarted agent {i} did not replace its firewall table within {RESTART_BOUND:?}:\n{}",
        fleet.agent_log_since_start(i)
    );
    line.unwrap_or_default()
}

/// Story (b): blocking the client's address on one host cuts its new connections there within
/// 5 s and nowhere else; unblocking restores them; a fleet-wide block cuts both hosts and holds
/// across agent restarts (one with its table intact, one whose table was lost as in a reboot)
/// without the controller, and across the controller's outage; unblocking it restores both.
#[test]
fn blocked_addresses_are_cut_per_host_and_fleet_wide_and_stay_cut() {
    let mut fleet = Fleet::start(2);
    fleet.deploy_shadowsocks(SS_PORT);
    // Two users: one holds the service's own port, the other a user port next to it.
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.vpn_ok(&["users", "add", "bob", "--all-servers"]);
    fleet.wait_converged(CONVERGE_BOUND);
    let mut clients: Vec<(usize, SsLocal)> = Vec::new();
    for user in ["alice", "bob"] {
        let links = fleet.links(user);
        assert_eq!(
            links.len(),
            2,
            "{user} should have one link per host: {links:#?}"
        );
        for l in &links {
            clients.push((fleet.agent_for_link(l).index, fleet.sslocal(l)));
        }
    }
    for (i, c) in &clients {
        fleet.assert_payload_through(*i, c);
    }
    let on = |host: usize| -> Vec<(usize, &SsLocal)> {
        clients
            .iter()
            .filter(|(i, _)| *i == host)
            .map(|(i, c)| (*i, c))
            .collect()
    };
    let (h0, h1) = (on(0), on(1));
    let all: Vec<(usize, &SsLocal)> = clients.iter().map(|(i, c)| (*i, c)).collect();
    let me = fleet.network.gateway.to_string();
    println!("firewall: the client's address as the hosts see it: {me}");

    // Per host.
    cut_by(
        &fleet,
        &["firewall", "block", &me, "--server", "host-0"],
        &h0,
    );
    assert_open(&h1, "host-0 blocked only");
    let rules = firewall_rules(&fleet);
    println!("firewall: list after the per-host block: {rules:?}");
    assert!(
        rules
            .iter()
            .any(|(t, s)| names_address(t, &me) && s.as_deref() == Some("host-0")),
        "`vpn firewall list` does not show the block of {me} on host-0: {rules:?}"
    );
    let table = nft(&fleet, 0, &["list", "table", "inet", "vpn_agent"]);
    assert!(
        table.contains(&me),
        "host-0's table inet vpn_agent does not hold {me}:\n{table}"
    );
    restored_by(
        &fleet,
        &["firewall", "unblock", &me, "--server", "host-0"],
        &h0,
    );
    assert_open(&h1, "host-0 unblocked");
    assert!(
        !firewall_rules(&fleet)
            .iter()
            .any(|(t, _)| names_address(t, &me)),
        "the unblocked rule is still listed"
    );

    // Fleet-wide.
    cut_by(&fleet, &["firewall", "block", &me, "--all-servers"], &all);
    let rules = firewall_rules(&fleet);
    println!("firewall: list after the fleet-wide block: {rules:?}");
    assert!(
        rules
            .iter()
            .any(|(t, s)| names_address(t, &me) && s.is_none()),
        "`vpn firewall list` does not show the fleet-wide block of {me}: {rules:?}"
    );

    // Agents restart without the controller: host 0's table stays in the kernel meanwhile,
    // host 1's is deleted first (as a reboot would lose it) so only its agent can bring it back.
    fleet.stop_controller();
    fleet.kill_agent(0);
    fleet.start_agent(0);
    fleet.kill_agent(1);
    nft(&fleet, 1, &["delete", "table", "inet", "vpn_agent"]);
    for (_, c) in &h1 {
        let mut last = String::new();
        let open = poll_until(Duration::from_secs(5), || {
            probe(c).map_err(|e| last = e).is_ok()
        });
        assert!(
            open.is_some(),
            "{} still refuses with its agent dead and table inet vpn_agent deleted: is \
             something else blocking? {last}",
            who(1, c)
        );
    }
    fleet.start_agent(1);
    for i in 0..2 {
        let line = wait_table_replaced(&fleet, i);
        println!("firewall: restarted agent {i}: {line}");
    }
    assert_cut(&all, "agents restarted without the controller");
    let table = nft(&fleet, 1, &["list", "table", "inet", "vpn_agent"]);
    assert!(
        table.contains(&me),
        "host 1's rebuilt table does not hold {me}:\n{table}"
    );

    // The controller returns: the block list is still the same.
    fleet.start_controller();
    let took = fleet.wait_converged(CONVERGE_BOUND);
    println!("firewall: agents online and acked {took:?} after the controller came back");
    assert_cut(&all, "after the controller came back");
    assert!(
        firewall_rules(&fleet)
            .iter()
            .any(|(t, s)| names_address(t, &me) && s.is_none()),
        "the fleet-wide block is gone from `vpn firewall list` after the controller restarted"
    );

    restored_by(&fleet, &["firewall", "unblock", &me, "--all-servers"], &all);
    for (i, c) in &all {
        fleet.assert_payload_through(*i, c);
    }
}

// ---- health ------------------------------------------------------------------------------------

/// The kernel configuration as the agent's probe reads it (`/proc/config.gz`, else
/// `/boot/config-<release>`); the agent runs on this very kernel.
fn kernel_config() -> String {
    if let Ok(out) = Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .output()
        && out.status.success()
        && !out.stdout.is_empty()
    {
        return String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let boot = format!("/boot/config-{}", release.trim());
    std::fs::read_to_string(&boot).unwrap_or_else(|e| {
        panic!(
            "this story compares the agent's health report with the kernel configuration, but \
             neither /proc/config.gz nor {boot} is readable ({e})"
        )
    })
}

/// Whether `option` is built in or a module according to `config`.
fn config_has(config: &str, option: &str) -> bool {
    let set = format!("{option}=");
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix(set.as_str()))
        .any(|v| matches!(v.trim(), "y" | "m"))
}

/// The `CONFIG_*` words of `text`.
fn config_options(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("CONFIG_") && w.len() > "CONFIG_".len())
        .map(str::to_string)
        .collect()
}

/// Story (c): `vpn servers show host-0 -o json` carries the agent's health report: an array of
/// what the host lacks, consistent with this kernel's configuration — every kernel option it
/// names as missing is indeed not set, and the options this project's kernels are known to lack
/// (u32 mark matching, `act_connmark`) are named when they are not set.
#[test]
fn servers_show_reports_what_the_kernel_lacks() {
    let fleet = Fleet::start(1);
    let config = kernel_config();
    // Bounded: the report comes with the agent's session; give it the convergence bound.
    let mut shown = serde_json::Value::Null;
    let reported = poll_until(CONVERGE_BOUND, || {
        let out = fleet.vpn_ok(&["servers", "show", "host-0", "-o", "json"]);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("`vpn servers show host-0 -o json` is not JSON ({e}): {out}")
        });
        // The host's fields sit under `server`, next to its health view.
        shown = parsed.get("server").cloned().unwrap_or(parsed);
        shown["health"].as_array().is_some_and(|h| !h.is_empty())
            || (config_has(&config, "CONFIG_CLS_U32_MARK")
                && config_has(&config, "CONFIG_NET_ACT_CONNMARK")
                && shown["health"].is_array())
    });
    println!(
        "health: `vpn servers show host-0 -o json` health = {}",
        serde_json::to_string_pretty(&shown["health"]).unwrap_or_default()
    );
    let health = shown["health"].as_array().unwrap_or_else(|| {
        panic!("no `health` array in `vpn servers show host-0 -o json`: {shown}")
    });
    assert!(
        reported.is_some(),
        "the agent reported no missing feature within {CONVERGE_BOUND:?} although this kernel \
         lacks some: {shown}"
    );
    let entries: Vec<&str> = health
        .iter()
        .map(|h| {
            h.as_str()
                .unwrap_or_else(|| panic!("health entry is not a string: {h}"))
        })
        .collect();

    for e in &entries {
        for option in config_options(e) {
            assert!(
                !config_has(&config, &option),
                "health says {option} is missing, but this kernel has it: {e}"
            );
        }
    }
    for (option, module) in [
        ("CONFIG_CLS_U32_MARK", "cls_u32"),
        ("CONFIG_NET_ACT_CONNMARK", "act_connmark"),
    ] {
        if !config_has(&config, option) {
            assert!(
                entries
                    .iter()
                    .any(|e| e.contains(option) && e.contains(module) && e.contains("disables")),
                "this kernel lacks {option} ({module}) but the health report does not say so, \
                 nor what it disables: {entries:#?}"
            );
        }
    }
    // The human view shows the same.
    let table = fleet.vpn_ok(&["servers", "show", "host-0"]);
    println!("health: `vpn servers show host-0`:\n{table}");
    if !entries.is_empty() {
        assert!(
            table.contains("Missing features"),
            "`vpn servers show host-0` has no \"Missing features\" line:\n{table}"
        );
    }
}

// ---- shared ------------------------------------------------------------------------------------
