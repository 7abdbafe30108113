//! The harness's own data-plane path, proven without the product: a plain `ssserver` that this
//! test starts inside a simulated host's namespace, a link rendered by the product's SIP002
//! renderer (`vpn_shared::links`), the real `sslocal`, the SOCKS5 HTTP client and the drip
//! transfer. When a product scenario fails, this test tells whether the harness itself works.
//!
//! Needs root, Docker and `ssserver`/`sslocal` (`deploy/scripts/setup.sh`); fails loudly without.

use std::time::Duration;

use vpn_e2e::client::SsLocal;
use vpn_e2e::docker::Network;
use vpn_e2e::env::{self, PAUSE_IMAGE};
use vpn_e2e::fleet::serial_guard;
use vpn_e2e::host::Host;
use vpn_e2e::hostserver::HostServer;
use vpn_e2e::proc::{Proc, tail};
use vpn_e2e::wait_until;

const METHOD: &str = "chacha20-ietf-poly1305";
const SS_PORT: u16 = 8388;

/// Removes the host and the network even when an assertion fails.
struct Lab {
    host: Option<Host>,
    network: Network,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            let _ = h.remove();
        }
        let _ = self.network.remove();
    }
}

#[test]
fn sslocal_reaches_a_host_namespace_through_a_plain_ssserver() {
    let _serial = serial_guard();
    env::require_root();
    env::require_docker();
    env::require_image(PAUSE_IMAGE, "deploy/images/pause/build.sh");
    let ssserver = env::ssserver();
    env::sslocal();

    let dir = tempfile::Builder::new()
        .prefix("vpn-e2e-selftest-")
        .tempdir()
        .unwrap();
    let id = format!("st{}", std::process::id());
    let mut lab = Lab {
        host: None,
        network: Network::create(&format!("vpn-e2e-{id}"), &id).unwrap(),
    };
    let host = Host::start(&format!("vpn-e2e-{id}-h0"), &lab.network, &id).unwrap();
    let host = lab.host.insert(host);

    // The host's HTTP server, on the namespace's own address (and its loopback).
    let server = HostServer::start(
        host,
        &dir.path().join("www"),
        &dir.path().join("hostserver.log"),
    )
    .unwrap();

    // A Shadowsocks server in the same namespace, as the agent's container would be.
    let password = "selftest-password";
    let ss_log = dir.path().join("ssserver.log");
    let mut cmd = host.command(&ssserver);
    cmd.args([
        "-s",
        &format!("0.0.0.0:{SS_PORT}"),
        "-m",
        METHOD,
        "-k",
        password,
    ]);
    let mut ss = Proc::spawn("ssserver", cmd, &ss_log).unwrap();

    let ip = host.ip.to_string();
    let link = vpn_shared::links::shadowsocks(METHOD, password, &ip, SS_PORT, "selftest h0");
    let client = SsLocal::start(&link, &dir.path().join("sslocal.log")).unwrap();

    // Story: the exact link reaches the host's server on the host's address, byte for byte.
    wait_until(
        Duration::from_secs(15),
        "the payload arrives through ssserver",
        || {
            assert!(ss.is_running(), "ssserver exited:\n{}", tail(&ss_log, 30));
            matches!(client.fetch_payload(), Ok(body) if body == server.payload)
        },
    );

    // A long, slow transfer arrives complete and uncorrupted.
    let transfer = client.start_drip(3);
    let report = transfer.wait();
    assert!(report.intact, "drip transfer not intact: {report:?}");
    assert!(
        report.elapsed >= Duration::from_secs(2),
        "drip was not slow: {report:?}"
    );

    // A wrong password does not get through.
    let bad_link = vpn_shared::links::shadowsocks(METHOD, "wrong", &ip, SS_PORT, "bad");
    let bad = SsLocal::start(&bad_link, &dir.path().join("sslocal-bad.log")).unwrap();
    assert!(
        bad.probe().is_err(),
        "a wrong password fetched through the tunnel"
    );
    assert!(client.probe().is_ok(), "the good link stopped working");
}
