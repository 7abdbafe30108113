//! Health an operator can trust (SPEC §2.8): the stories of the health issue, on a real
//! controller and real agents in simulated hosts, Shadowsocks in Docker, the real `sslocal`
//! client on the links `vpn users link` printed, the controller's `/metrics` parsed strictly,
//! and a webhook receiver of the test's own that checks every signature.
//!
//! Needs what every fleet story needs (root, Docker, the local images, `sslocal`, the
//! workspace's binaries); without them it fails naming what is missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use vpn_e2e::client::SsLocal;
use vpn_e2e::fleet::ServerRow;
use vpn_e2e::prom::Exposition;
use vpn_e2e::wait::poll_until;
use vpn_e2e::webhook::Receiver;
use vpn_e2e::{Fleet, wait_until};

const SS_PORT: &str = "20000";
/// An image nobody built: creating a container from it fails with Docker's own error.
const MISSING_IMAGE: &str = "vpn-fleet/does-not-exist:missing";
/// The bar: a broken service shows in `servers list` within 5 s.
const DEGRADED_BOUND: Duration = Duration::from_secs(5);
/// Long enough for an apply with a container start on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);
/// A reconcile runs every 10 s; a repair has two of them and a report to show up.
const REPAIR_BOUND: Duration = Duration::from_secs(45);
const SECRET: &str = "a-webhook-secret-of-the-test";

fn deploy(fleet: &Fleet, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "services",
        "deploy",
        "shadowsocks",
        "--port",
        SS_PORT,
        "--all-servers",
    ];
    args.extend_from_slice(extra);
    fleet.vpn(&args)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// alice's one link (one host) and an `sslocal` on it, checked to carry the host's payload.
fn alice_client(fleet: &Fleet) -> SsLocal {
    let links = fleet.links("alice");
    assert_eq!(links.len(), 1, "one host, one link: {links:?}");
    let client = fleet.sslocal(&links[0]);
    fleet.assert_payload_through(0, &client);
    client
}

fn host0(fleet: &Fleet) -> ServerRow {
    let rows = fleet
        .servers()
        .unwrap_or_else(|e| panic!("servers list: {e:#}"));
    rows.into_iter()
        .find(|r| r.name == "host-0")
        .unwrap_or_else(|| panic!("host-0 is not in servers list"))
}

/// `vpn servers show host-0 -o json`, parsed.
fn show_json(fleet: &Fleet) -> serde_json::Value {
    let out = fleet.vpn_ok(&["servers", "show", "host-0", "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("servers show is not JSON ({e}): {out}"))
}

/// `vpn doctor -o json`: the exit code and the checks.
fn doctor(fleet: &Fleet) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = fleet.vpn(&["doctor", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("vpn doctor -o json is not JSON ({e}): {}", text(&out)));
    let checks = report["checks"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no checks in {report}"));
    (out.status.code(), checks)
}

fn check_level<'a>(checks: &'a [serde_json::Value], server: &str, check: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c["server"] == server && c["check"] == check)
        .and_then(|c| c["level"].as_str())
        .unwrap_or_else(|| panic!("no {check} check for {server} in {checks:#?}"))
}

/// One scrape of the controller's `/metrics`, parsed strictly.
fn scrape(fleet: &Fleet) -> Exposition {
    let file = fleet.controller_dir().join("metrics.addr");
    let addr = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{} ({e}): is metrics_listen set?", file.display()));
    let mut stream = TcpStream::connect(addr.trim())
        .unwrap_or_else(|e| panic!("connecting to /metrics at {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        addr.trim()
    )
    .unwrap_or_else(|e| panic!("writing the scrape: {e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("reading the scrape: {e}"));
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "scrape answered {head}");
    Exposition::parse(body).unwrap_or_else(|e| panic!("/metrics is not valid exposition: {e}"))
}

fn value(m: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels).unwrap_or(0.0)
}

fn deliveries_of(receiver: &Receiver, event: &str) -> Vec<vpn_e2e::webhook::Delivery> {
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.event() == event)
        .collect()
}

/// The story of the issue: an agent restarted with a relative `--data-dir` (from the directory
/// above it, as an operator in a checkout would) keeps its service and its users: the container
/// is the very same one (the spec did not change with the path's spelling), the host is online
/// with nothing failing, and alice's client gets through before and after.
#[test]
fn an_agent_restarted_with_a_relative_data_dir_keeps_its_service_and_users() {
    let mut fleet = Fleet::start(1);
    let out = deploy(&fleet, &[]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(CONVERGE);
    let client = alice_client(&fleet);
    let before = fleet.agent_containers(0);
    assert!(!before.is_empty(), "the agent runs no container");

    fleet.kill_agent(0);
    fleet.start_agent_relative(0);
    fleet.wait_converged(CONVERGE);
    // Let at least one reconcile and report pass with the relative spelling.
    std::thread::sleep(Duration::from_secs(12));

    assert_eq!(
        fleet.agent_containers(0),
        before,
        "the agent replaced its containers after a restart with a relative --data-dir"
    );
    let row = host0(&fleet);
    assert_eq!(
        row.state_text(),
        "online",
        "after the restart: {:?}",
        row.failing_resources()
    );
    fleet.assert_payload_through(0, &client);
}

/// A service deployed with an image that does not exist: within 5 s the host is `degraded` in
/// `servers list`, `servers show` names the resource and Docker's error, `vpn doctor` fails its
/// `resources` check, `/metrics` counts the failure and the degraded host, and the test's
/// receiver gets a signed `host_degraded`. Pointing the service at its default image fixes it,
/// and every one of those clears (`host_recovered` arrives signed too).
#[test]
fn a_missing_image_degrades_the_host_and_fixing_it_clears_every_signal() {
    let receiver = Receiver::start(SECRET).unwrap_or_else(|e| panic!("{e:#}"));
    let mut fleet = Fleet::start(1);
    fleet.configure_controller(&format!(
        "metrics_listen = \"127.0.0.1:0\"\n\n[[webhooks]]\nurl = \"{}\"\nevents = [\"host_degraded\", \"host_recovered\"]\nsecret = \"{SECRET}\"\nretry_backoff = \"200ms\"\n",
        receiver.url()
    ));
    let start = scrape(&fleet);
    let failures_before = value(
        &start,
        "vpn_controller_apply_failures_total",
        &[("kind", "service")],
    );

    let out = deploy(&fleet, &["--image", MISSING_IMAGE]);
    let deployed = Instant::now();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a deploy no host could apply exits 1: {}",
        text(&out)
    );
    let mut row = host0(&fleet);
    let took = poll_until(DEGRADED_BOUND, || {
        row = host0(&fleet);
        row.state_text().starts_with("degraded")
    });
    assert!(
        took.is_some(),
        "host-0 not degraded within {DEGRADED_BOUND:?} of the deploy: {} {:?}",
        row.state_text(),
        row.failing_resources()
    );
    println!(
        "health: degraded {:?} after the deploy returned: {}",
        deployed.elapsed(),
        row.state_text()
    );
    let shown = show_json(&fleet);
    let failing = shown["failing"].as_array().cloned().unwrap_or_default();
    let service = failing
        .iter()
        .find(|f| f["resource"] == "service/shadowsocks")
        .unwrap_or_else(|| panic!("servers show names no service/shadowsocks: {shown:#}"));
    let message = service["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(MISSING_IMAGE) && message.to_lowercase().contains("no such image"),
        "the failure does not carry Docker's error about the image: {message}"
    );
    let table = fleet.vpn_ok(&["servers", "show", "host-0"]);
    assert!(
        table.contains("service/shadowsocks") && table.contains(MISSING_IMAGE),
        "servers show (table) does not name the failing resource:\n{table}"
    );
    let (code, checks) = doctor(&fleet);
    assert_ne!(code, Some(0), "doctor passed a degraded fleet: {checks:#?}");
    assert_eq!(check_level(&checks, "host-0", "resources"), "fail");

    let m = scrape(&fleet);
    assert!(
        value(
            &m,
            "vpn_controller_apply_failures_total",
            &[("kind", "service")]
        ) > failures_before,
        "apply failures of kind service did not move"
    );
    assert_eq!(
        value(&m, "vpn_controller_hosts", &[("state", "degraded")]),
        1.0
    );
    wait_until(Duration::from_secs(10), "a host_degraded webhook", || {
        !deliveries_of(&receiver, "host_degraded").is_empty()
    });
    let degraded = &deliveries_of(&receiver, "host_degraded")[0];
    assert!(
        degraded.signature_ok,
        "host_degraded signature {:?} does not verify",
        degraded.raw_signature
    );
    assert_eq!(degraded.body["host"]["name"], "host-0", "{}", degraded.body);

    // The fix: the driver's own image.
    let out = fleet.vpn(&["services", "edit", "shadowsocks", "--default-image"]);
    assert!(out.status.success(), "the fix: {}", text(&out));
    wait_until(CONVERGE, "host-0 online again after the fix", || {
        host0(&fleet).state_text() == "online"
    });
    assert!(
        show_json(&fleet)["failing"]
            .as_array()
            .is_some_and(|f| f.is_empty()),
        "failures left after the fix"
    );
    let (code, checks) = doctor(&fleet);
    assert_eq!(check_level(&checks, "host-0", "resources"), "ok");
    let not_ok: Vec<_> = checks.iter().filter(|c| c["level"] != "ok").collect();
    assert!(
        not_ok.iter().all(|c| c["level"] == "warn"),
        "doctor still fails after the fix: {not_ok:#?}"
    );
    // This machine's kernel lacks shaping features, which doctor rightly warns about (exit 3).
    assert_eq!(
        code,
        Some(if not_ok.is_empty() { 0 } else { 3 }),
        "{checks:#?}"
    );
    println!("health: doctor after the fix: exit {code:?}, warnings {not_ok:?}");
    let m = scrape(&fleet);
    assert_eq!(
        value(&m, "vpn_controller_hosts", &[("state", "degraded")]),
        0.0
    );
    assert_eq!(
        value(&m, "vpn_controller_hosts", &[("state", "online")]),
        1.0
    );
    wait_until(Duration::from_secs(10), "a host_recovered webhook", || {
        !deliveries_of(&receiver, "host_recovered").is_empty()
    });
    assert!(deliveries_of(&receiver, "host_recovered")[0].signature_ok);
}

/// A managed container removed by hand (`docker rm -f`) is recreated by the agent's own
/// reconcile, the controller's view of the host records that repair, and alice gets through
/// again without anyone touching the fleet.
#[test]
fn a_container_removed_by_hand_is_recreated_and_the_repair_recorded() {
    let fleet = Fleet::start(1);
    let out = deploy(&fleet, &[]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(CONVERGE);
    let client = alice_client(&fleet);

    fleet.remove_agent_containers(0);
    let took = fleet.wait_repaired(0, "service/shadowsocks", REPAIR_BOUND);
    println!("health: repair recorded {took:?} after docker rm -f");
    assert!(
        !fleet.agent_containers(0).is_empty(),
        "the container is not back"
    );
    fleet.assert_payload_through(0, &client);
    assert_eq!(host0(&fleet).state_text(), "online");
}

/// Make-before-break: the service is pointed at an image that does not exist. The replacement
/// cannot be created, so the running container is left alone — same container, alice still
/// gets through — and the failure is reported (the host is degraded, naming the image). Going
/// back to the default image is the old spec again: nothing is recreated and the host recovers.
#[test]
fn a_replacement_that_cannot_be_created_leaves_the_old_container_serving() {
    let fleet = Fleet::start(1);
    let out = deploy(&fleet, &[]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(CONVERGE);
    let client = alice_client(&fleet);
    let before = fleet.agent_containers(0);

    let out = fleet.vpn(&["services", "edit", "shadowsocks", "--image", MISSING_IMAGE]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an edit the host could not apply exits 1: {}",
        text(&out)
    );
    let report = text(&out);
    assert!(
        report.contains(MISSING_IMAGE),
        "the edit's per-host report does not name the image: {report}"
    );
    assert_eq!(
        fleet.agent_containers(0),
        before,
        "the old container was touched"
    );
    fleet.assert_payload_through(0, &client);
    let row = host0(&fleet);
    assert!(
        row.state_text().starts_with("degraded"),
        "host-0 is {} after a failed replacement",
        row.state_text()
    );
    // Still serving after a reconcile or two (which must not stop the old engine to retry).
    std::thread::sleep(Duration::from_secs(12));
    fleet.assert_payload_through(0, &client);
    assert_eq!(fleet.agent_containers(0), before);

    let out = fleet.vpn(&["services", "edit", "shadowsocks", "--default-image"]);
    assert!(out.status.success(), "back to the default: {}", text(&out));
    wait_until(CONVERGE, "host-0 online again", || {
        host0(&fleet).state_text() == "online"
    });
    assert_eq!(fleet.agent_containers(0), before);
    fleet.assert_payload_through(0, &client);
}
