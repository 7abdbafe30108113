//! Acceptance stories of the HTTP / SOCKS5 proxy on a fleet: a real controller, real agents each
//! in its own simulated host, the shoes engine deployed by the product in Docker (a container per
//! user), and **curl** — a client this project did not write — given the exact `http://` and
//! `socks5://` links that `vpn users link` printed.
//!
//! Needs root, Docker, the local images (`deploy/scripts/setup.sh`, the shoes image from
//! `deploy/images/shoes/build.sh`), curl and the workspace's binaries; without them a story
//! fails saying what is missing.

#![allow(
    clippy::print_stdout,
    reason = "a limit story prints what it measured, as the other limit stories do"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use vpn_e2e::Fleet;
use vpn_e2e::client::assert_rate_near;
use vpn_e2e::env::{require_image, require_tool};
use vpn_e2e::wait::poll_until;

const PROXY_PORT: &str = "22000";
const SOCKS_ONLY_PORT: &str = "23000";
/// Suspension must cut new connections within this bound (the acceptance bar).
const SUSPEND_BOUND: Duration = Duration::from_secs(5);
const RECONNECT_BOUND: Duration = Duration::from_secs(30);

fn prerequisites() {
    require_tool("curl", "apt-get install curl");
    require_image("vpn-fleet/shoes:local", "deploy/images/shoes/build.sh");
}

/// `services deploy proxy --port PORT --kind KIND [--name NAME] --all-servers`.
fn deploy(fleet: &Fleet, name: &str, port: &str, kind: &str) {
    fleet.vpn_ok(&[
        "services",
        "deploy",
        "proxy",
        "--name",
        name,
        "--port",
        port,
        "--kind",
        kind,
        "--all-servers",
    ]);
}

/// `user`'s proxy links of `scheme` (`http://`, `socks5://`) on the service whose port range
/// starts at `first_port`, one per host, with the host index.
fn links(fleet: &Fleet, user: &str, scheme: &str, first_port: &str) -> Vec<(usize, String)> {
    let printed = fleet.vpn_ok(&["users", "link", user, "--protocol", "proxy", "-o", "plain"]);
    let Ok(first) = first_port.parse::<u16>() else {
        panic!("{first_port} is not a port");
    };
    let links = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(scheme))
        .filter(|l| {
            let port = l.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            // A service's users get ports from its first port up (1000 of them by default).
            port.is_some_and(|p| p >= first && p < first.saturating_add(1000))
        })
        .map(str::to_owned);
    fleet.one_per_host(links, &format!("{user}'s {scheme} links in\n{printed}\n"))
}

/// `http://HOST:PORT/PATH` of host `i`'s server (an IP: remote DNS is not needed).
fn url(fleet: &Fleet, i: usize, path: &str) -> String {
    let a = &fleet.agents[i];
    format!("http://{}:{}{path}", a.host.ip, a.server.port)
}

/// `curl --proxy LINK URL` with the link exactly as given; the body on success.
fn curl(proxy: &str, url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--noproxy", ""])
        .args(["--max-time", &timeout.as_secs().max(1).to_string()])
        .args(["--proxy", proxy, url])
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Fetches host `i`'s payload through `link` (retrying while the user's container starts) and
/// checks it byte for byte.
fn assert_payload_through(fleet: &Fleet, i: usize, link: &str) {
    fleet.assert_payload_by(i, link, || {
        curl(link, &url(fleet, i, "/payload"), Duration::from_secs(5)).map_err(anyhow::Error::msg)
    });
}

fn refused(link: &str, fleet: &Fleet, i: usize) -> bool {
    curl(link, &url(fleet, i, "/"), Duration::from_secs(3)).is_err()
}

/// `(scheme, user, password, host:port)` of a printed `scheme://user:password@host:port`.
fn parts(link: &str) -> (&str, &str, &str, &str) {
    let Some((scheme, rest)) = link.split_once("://") else {
        panic!("no scheme in the link {link}");
    };
    let Some((userinfo, hostport)) = rest.rsplit_once('@') else {
        panic!("no user:password@ in the link {link}");
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        panic!("no password in the link {link}");
    };
    (scheme, user, password, hostport)
}

/// The link with its password replaced.
fn with_password(link: &str, password: &str) -> String {
    let (scheme, user, _, hostport) = parts(link);
    format!("{scheme}://{user}:{password}@{hostport}")
}

/// The link without user name and password.
fn without_credentials(link: &str) -> String {
    let (scheme, _, _, hostport) = parts(link);
    format!("{scheme}://{hostport}")
}

/// Story (a): a `--kind both` service on three hosts; every `http://` and `socks5://` link alice
/// (whose name needs percent-encoding) is given takes curl to that very host, byte for byte; a
/// wrong password, no password and another user's password are refused, and so is the host's own
/// loopback. A `--kind socks5` service beside it gives SOCKS5 links only and refuses HTTP.
#[test]
fn every_proxy_link_reaches_its_host_and_wrong_credentials_are_refused() {
    prerequisites();
    let fleet = Fleet::start(3);
    deploy(&fleet, "proxy", PROXY_PORT, "both");
    deploy(&fleet, "socks", SOCKS_ONLY_PORT, "socks5");
    fleet.vpn_ok(&["users", "add", "alice@corp", "--all-servers"]);
    fleet.vpn_ok(&["users", "add", "bob", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);

    let http = links(&fleet, "alice@corp", "http://", PROXY_PORT);
    let socks = links(&fleet, "alice@corp", "socks5://", PROXY_PORT);
    for ((i, h), (j, s)) in http.iter().zip(&socks) {
        assert_eq!(i, j);
        assert!(h.starts_with("http://alice%40corp:"), "{h}");
        assert_eq!(
            without_credentials(h).trim_start_matches("http://"),
            without_credentials(s).trim_start_matches("socks5://"),
            "both kinds share the user's port"
        );
        assert_payload_through(&fleet, *i, h);
        assert_payload_through(&fleet, *i, s);
        let loopback = format!("http://127.0.0.1:{}/", fleet.agents[*i].server.port);
        for link in [h, s] {
            assert!(
                curl(link, &loopback, Duration::from_secs(3)).is_err(),
                "host {i}'s loopback was served through {link}"
            );
        }
    }

    let (i, h) = &http[0];
    let (_, s) = &socks[0];
    let bob_links = links(&fleet, "bob", "http://", PROXY_PORT);
    let bob_password = parts(&bob_links[0].1).2.to_owned();
    for link in [h, s] {
        for (what, bad) in [
            ("a wrong password", with_password(link, "wrong-password")),
            ("bob's password", with_password(link, &bob_password)),
            ("no credentials", without_credentials(link)),
        ] {
            assert!(
                refused(&bad, &fleet, *i),
                "{what} got through host {i}: {bad}"
            );
        }
    }

    let socks_only = links(&fleet, "alice@corp", "socks5://", SOCKS_ONLY_PORT);
    let printed = fleet.vpn_ok(&[
        "users",
        "link",
        "alice@corp",
        "--protocol",
        "proxy",
        "-o",
        "plain",
    ]);
    let (k, link) = &socks_only[0];
    assert_payload_through(&fleet, *k, link);
    let hostport = without_credentials(link).replace("socks5://", "");
    let on_port: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(&format!("@{hostport}")))
        .collect();
    assert_eq!(
        on_port,
        [link.as_str()],
        "a socks5-only port has its socks5 link only:\n{printed}"
    );
    let as_http = link.replacen("socks5://", "http://", 1);
    assert!(
        refused(&as_http, &fleet, *k),
        "the socks5-only port served HTTP: {as_http}"
    );
}

/// Story (b): suspending alice refuses her new connections on every host within 5 s while bob
/// keeps working; resuming brings her back on the same links.
#[test]
fn suspend_refuses_the_user_within_5_seconds_and_resume_restores() {
    prerequisites();
    let fleet = Fleet::start(3);
    deploy(&fleet, "proxy", PROXY_PORT, "both");
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.vpn_ok(&["users", "add", "bob", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    let alice: Vec<(usize, String)> = links(&fleet, "alice", "http://", PROXY_PORT)
        .into_iter()
        .chain(links(&fleet, "alice", "socks5://", PROXY_PORT))
        .collect();
    let bob = links(&fleet, "bob", "socks5://", PROXY_PORT);
    for (i, l) in alice.iter().chain(&bob) {
        assert_payload_through(&fleet, *i, l);
    }

    fleet.vpn_ok(&["users", "suspend", "alice"]);
    let start = Instant::now();
    for (i, l) in &alice {
        let took = poll_until(SUSPEND_BOUND.saturating_sub(start.elapsed()), || {
            refused(l, &fleet, *i)
        });
        assert!(
            took.is_some(),
            "alice suspended, host {i}: {l} still works after {:?}",
            start.elapsed()
        );
    }
    println!(
        "alice refused everywhere {:?} after the suspend",
        start.elapsed()
    );
    for (i, l) in &bob {
        assert!(
            curl(l, &url(&fleet, *i, "/"), Duration::from_secs(3)).is_ok(),
            "bob refused on host {i} while alice is suspended"
        );
    }

    fleet.vpn_ok(&["users", "resume", "alice"]);
    for (i, l) in &alice {
        assert_payload_through(&fleet, *i, l);
    }
}

/// Story (c): fail-static: with the controller stopped, a restarted agent keeps serving alice
/// from its saved state, also after its containers were lost (a host reboot).
#[test]
fn proxy_keeps_working_with_the_controller_down_and_the_agent_restarted() {
    prerequisites();
    let mut fleet = Fleet::start(1);
    deploy(&fleet, "proxy", PROXY_PORT, "both");
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    let (i, http) = links(&fleet, "alice", "http://", PROXY_PORT).remove(0);
    let (_, socks) = links(&fleet, "alice", "socks5://", PROXY_PORT).remove(0);
    assert_payload_through(&fleet, i, &http);

    fleet.stop_controller();
    fleet.kill_agent(i);
    fleet.start_agent(i);
    assert_payload_through(&fleet, i, &http);
    assert_payload_through(&fleet, i, &socks);
    fleet.remove_agent_containers(i);
    fleet.kill_agent(i);
    fleet.start_agent(i);
    assert_payload_through(&fleet, i, &http);
    assert_payload_through(&fleet, i, &socks);
}

/// Story (d): a proxy user limited to 8 mbit measures within ±15 % through curl, over SOCKS5
/// and over HTTP (the port matcher shapes her own port).
#[test]
fn a_proxy_user_limited_to_8_mbit_measures_within_15_percent() {
    const LIMIT_BPS: f64 = 8_000_000.0;
    const BYTES: usize = 3_500_000;
    prerequisites();
    let fleet = Fleet::start(1);
    deploy(&fleet, "proxy", PROXY_PORT, "both");
    fleet.vpn_ok(&[
        "users",
        "add",
        "alice",
        "--all-servers",
        "--bandwidth",
        "8mbit",
    ]);
    fleet.wait_converged(RECONNECT_BOUND);
    for scheme in ["socks5://", "http://"] {
        let (i, link) = links(&fleet, "alice", scheme, PROXY_PORT).remove(0);
        assert_payload_through(&fleet, i, &link);
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--noproxy", ""])
            .args(["--max-time", "60", "--output", "/dev/null"])
            .args([
                "--write-out",
                "%{size_download} %{time_pretransfer} %{time_total}",
            ])
            .args([
                "--proxy",
                &link,
                &url(&fleet, i, &format!("/stream/{BYTES}")),
            ])
            .output()
            .expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "bulk download through {link}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fields: Vec<f64> = text
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(f64::NAN))
            .collect();
        let [size, pretransfer, total] = fields[..] else {
            panic!("curl --write-out printed {text:?}");
        };
        assert_eq!(size as usize, BYTES, "the whole stream arrived");
        let measured = size * 8.0 / (total - pretransfer);
        assert_rate_near(&format!("proxy {scheme} alice"), measured, LIMIT_BPS);
    }
}

/// Story (e): accounting. shoes counts nothing, so the agent's per-port nftables counters are
/// the source: two 4 MiB downloads through alice's links reach the controller's usage once —
/// at least the payload, at most the payload plus TCP/IP headers — and stay put after settling.
#[test]
fn proxy_traffic_is_counted_once_from_the_port_counters() {
    const BYTES: usize = 4 << 20;
    prerequisites();
    let fleet = Fleet::start_with(1, &["--usage-interval", "1s"]);
    deploy(&fleet, "proxy", PROXY_PORT, "both");
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    let (i, socks) = links(&fleet, "alice", "socks5://", PROXY_PORT).remove(0);
    let (_, http) = links(&fleet, "alice", "http://", PROXY_PORT).remove(0);
    assert_payload_through(&fleet, i, &socks);
    // Let the payload fetch (and the first reading, which only starts the baselines) settle.
    std::thread::sleep(Duration::from_secs(3));
    let server = fleet.agents[i].name.clone();
    let before = fleet.recorded_usage("alice", &server);
    for link in [&socks, &http] {
        let body = curl(
            link,
            &url(&fleet, i, &format!("/stream/{BYTES}")),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("bulk download through {link}: {e}"));
        assert_eq!(body.len(), BYTES);
    }
    let payload = 2 * BYTES as u64;
    let mut seen = 0;
    let ok = poll_until(Duration::from_secs(30), || {
        seen = fleet.recorded_usage("alice", &server) - before;
        seen >= payload
    });
    assert!(
        ok.is_some(),
        "the controller recorded {seen} bytes for alice's {payload} bytes of downloads"
    );
    std::thread::sleep(Duration::from_secs(4));
    let settled = fleet.recorded_usage("alice", &server) - before;
    println!(
        "proxy usage: {settled} bytes recorded for {payload} bytes of payload ({:+.2} %)",
        (settled as f64 - payload as f64) * 100.0 / payload as f64
    );
    assert!(
        settled <= payload + payload / 10,
        "{settled} bytes recorded for {payload} bytes of payload: counted twice?"
    );
    assert!(settled >= payload, "{settled} < {payload}");
}

/// Story (f): the firewall block list covers proxy users' ports: blocking the client's address
/// on one host refuses alice's links there within 5 s and nowhere else; unblocking restores.
#[test]
fn a_blocked_address_is_refused_on_proxy_ports_of_that_host_only() {
    prerequisites();
    let fleet = Fleet::start(2);
    deploy(&fleet, "proxy", PROXY_PORT, "both");
    fleet.vpn_ok(&["users", "add", "alice", "--all-servers"]);
    fleet.wait_converged(RECONNECT_BOUND);
    let socks = links(&fleet, "alice", "socks5://", PROXY_PORT);
    let http = links(&fleet, "alice", "http://", PROXY_PORT);
    for (i, l) in socks.iter().chain(&http) {
        assert_payload_through(&fleet, *i, l);
    }
    let me = fleet.network.gateway.to_string();
    fleet.vpn_ok(&["firewall", "block", &me, "--server", "host-0"]);
    let start = Instant::now();
    for (i, l) in socks.iter().chain(&http).filter(|(i, _)| *i == 0) {
        let took = poll_until(SUSPEND_BOUND.saturating_sub(start.elapsed()), || {
            refused(l, &fleet, *i)
        });
        assert!(took.is_some(), "{me} blocked on host-0, yet {l} works");
    }
    for (i, l) in socks.iter().chain(&http).filter(|(i, _)| *i == 1) {
        assert!(
            curl(l, &url(&fleet, *i, "/"), Duration::from_secs(3)).is_ok(),
            "host-1 refused {l} while only host-0 blocks {me}"
        );
    }
    fleet.vpn_ok(&["firewall", "unblock", &me, "--server", "host-0"]);
    for (i, l) in socks.iter().chain(&http) {
        assert_payload_through(&fleet, *i, l);
    }
}
