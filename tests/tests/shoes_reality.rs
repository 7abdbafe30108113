//! A real VLESS + Reality handshake with the shoes engine, below the product: a Reality key
//! pair and short id from `vpn_shared::reality`, the server config from the agent's renderer
//! (`vpn_agent::drivers::vless::shoes::render_config`) for two users on two ports, the
//! `vpn-fleet/shoes:local` image run with host networking as the product runs it, and the real
//! shoes client started from a `vless://` link in the exact form `vpn users link` prints.
//!
//! Everything is on loopback: the TLS 1.3 site Reality impersonates (`dest`), the HTTP server
//! with the random payload, the server's user ports and the clients' SOCKS ports.
//!
//! Needs Docker, `shoes` and the image (`deploy/scripts/setup.sh`); fails loudly without.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vpn_agent::drivers::vless::shoes::{RealityServer, ShoesUser, render_config_open};
use vpn_e2e::client::free_tcp_port;
use vpn_e2e::env;
use vpn_e2e::fleet::serial_guard;
use vpn_e2e::hostserver::random_payload;
use vpn_e2e::proc::tail;
use vpn_e2e::vless::{
    DestTls, PayloadServer, SHOES_IMAGE, ShoesClient, ShoesContainer, VISION_FLOW, shoes_bin,
};
use vpn_e2e::wait::poll_until;
use vpn_shared::reality;

/// The SNI clients send; `dest` answers for it on loopback, so nothing leaves the machine.
const SNI: &str = "localhost";
/// How long a working link may take to carry its first payload once both ends listen.
const FIRST_FETCH: Duration = Duration::from_secs(20);
/// What shoes 0.3.2 logs when the Reality handshake passed but the VLESS id is not the port's.
const UNKNOWN_USER: &str = "Unknown user id";

/// The link as `vpn users link` prints it (SPEC §2.4; the values here need no
/// percent-encoding). Replace with `vpn_shared::links::vless` once that is on this branch.
fn link(uuid: &str, port: u16, public_key: &str, short_id: &str, name: &str) -> String {
    format!(
        "vless://{uuid}@127.0.0.1:{port}?encryption=none&flow={VISION_FLOW}&security=reality\
         &sni={SNI}&fp=chrome&pbk={public_key}&sid={short_id}&type=tcp#{name}"
    )
}

/// Everything one scenario needs to report a failure with the logs that explain it.
struct Lab<'a> {
    dir: &'a Path,
    server: &'a ShoesContainer,
    target: SocketAddr,
}

impl Lab<'_> {
    fn client(&self, name: &str, link: &str, vision: bool) -> (ShoesClient, std::path::PathBuf) {
        let log = self.dir.join(format!("client-{name}.log"));
        let client = ShoesClient::start_with(link, vision, self.dir, &log)
            .unwrap_or_else(|e| panic!("{name}: {e:#}\nserver:\n{}", self.server.logs()));
        (client, log)
    }

    /// The payload arrives through `link`, byte for byte, within [`FIRST_FETCH`].
    fn assert_payload(&self, name: &str, link: &str, payload: &[u8]) {
        let (client, log) = self.client(name, link, true);
        let mut last = String::new();
        let got = poll_until(FIRST_FETCH, || match client.fetch_payload(self.target) {
            Ok(bytes) => {
                bytes == payload || {
                    last = format!(
                        "got {} bytes, not the {} served",
                        bytes.len(),
                        payload.len()
                    );
                    false
                }
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        });
        assert!(
            got.is_some(),
            "{name}: no payload through {link} within {FIRST_FETCH:?}: {last}\nclient:\n{}\n\
             server:\n{}",
            tail(&log, 30),
            self.server.logs()
        );
    }

    /// `link` carries nothing: the fetch fails, and the server logs `reason` for it once more
    /// than before (so the refusal is the one meant, not a broken client). When the server
    /// could not complete its own handshake with `dest` in time (a loaded machine), it forwards
    /// the connection to `dest` without judging the client at all: that attempt proves nothing
    /// and is made again, at most three times.
    fn assert_refused(&self, name: &str, link: &str, vision: bool, reason: &str) {
        const DEST_FAILED: &str = "Dest handshake failed";
        let seen = |logs: &str, what: &str| logs.matches(what).count();
        let (client, log) = self.client(name, link, vision);
        for attempt in 1..=3 {
            let logs = self.server.logs();
            let (before, dest_before) = (seen(&logs, reason), seen(&logs, DEST_FAILED));
            let Err(refusal) = client.probe(self.target) else {
                panic!(
                    "{name}: {link} was served, but should be refused\nclient:\n{}\nserver:\n{}",
                    tail(&log, 30),
                    self.server.logs()
                );
            };
            let logged = poll_until(Duration::from_secs(10), || {
                seen(&self.server.logs(), reason) > before
            });
            if logged.is_some() {
                return;
            }
            let logs = self.server.logs();
            assert!(
                attempt < 3 && seen(&logs, DEST_FAILED) > dest_before,
                "{name}: refused ({refusal:#}), but the server never logged {reason:?}:\n{logs}"
            );
        }
    }
}

#[test]
fn shoes_reality_serves_each_user_on_its_port_and_refuses_wrong_credentials() {
    let _serial = serial_guard();
    env::require_docker();
    shoes_bin();
    env::require_image(SHOES_IMAGE, "deploy/images/shoes/build.sh");

    let dir = tempfile::Builder::new()
        .prefix("vpn-e2e-shoes-")
        .tempdir()
        .unwrap();
    let keys = reality::generate_key_pair().unwrap();
    assert_eq!(
        reality::public_key_from_private(&keys.private_key).unwrap(),
        keys.public_key
    );
    let short_id = reality::generate_short_id().unwrap();
    let dest = DestTls::start().unwrap();
    let payload = PayloadServer::start(random_payload().unwrap()).unwrap();

    let (alice, bob) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let alice_port = free_tcp_port().unwrap();
    let bob_port = std::iter::repeat_with(|| free_tcp_port().unwrap())
        .find(|p| *p != alice_port)
        .unwrap();
    let short_ids = [short_id.clone()];
    let dest_addr = dest.dest();
    // Open: this test's payload server can only be on loopback; the fleet stories check that
    // the product's configs refuse the host's loopback.
    let config = render_config_open(
        &RealityServer {
            private_key: &keys.private_key,
            short_ids: &short_ids,
            sni: SNI,
            dest: &dest_addr,
        },
        &[
            ShoesUser {
                email: "alice@example.com",
                uuid: &alice,
                port: alice_port,
            },
            ShoesUser {
                email: "bob@example.com",
                uuid: &bob,
                port: bob_port,
            },
        ],
        "127.0.0.1",
    )
    .unwrap();
    let server = ShoesContainer::start(&config, dir.path(), &[alice_port, bob_port])
        .unwrap_or_else(|e| panic!("{e:#}\nconfig:\n{config}"));
    let lab = Lab {
        dir: dir.path(),
        server: &server,
        target: payload.addr(),
    };
    let pbk = &keys.public_key;

    lab.assert_payload(
        "alice",
        &link(&alice, alice_port, pbk, &short_id, "alice"),
        &payload.payload,
    );
    lab.assert_payload(
        "bob",
        &link(&bob, bob_port, pbk, &short_id, "bob"),
        &payload.payload,
    );

    let stranger = uuid::Uuid::new_v4().to_string();
    lab.assert_refused(
        "unknown-uuid",
        &link(&stranger, alice_port, pbk, &short_id, "x"),
        true,
        UNKNOWN_USER,
    );
    lab.assert_refused(
        "bob-on-alices-port",
        &link(&bob, alice_port, pbk, &short_id, "x"),
        true,
        UNKNOWN_USER,
    );
    let other_keys = reality::generate_key_pair().unwrap();
    lab.assert_refused(
        "wrong-public-key",
        &link(&alice, alice_port, &other_keys.public_key, &short_id, "x"),
        true,
        "Session ID decrypt failed",
    );
    let other_sid = std::iter::repeat_with(|| reality::generate_short_id().unwrap())
        .find(|s| *s != short_id)
        .unwrap();
    lab.assert_refused(
        "wrong-short-id",
        &link(&alice, alice_port, pbk, &other_sid, "x"),
        true,
        "Invalid short_id",
    );
    // The server's `vision: true` is the link's flow: a client without it is refused for TCP.
    lab.assert_refused(
        "no-vision",
        &link(&alice, alice_port, pbk, &short_id, "x"),
        false,
        "expected vision flow for TCP",
    );

    // Refusals left the server serving: alice still gets through.
    assert!(server.is_running(), "server died:\n{}", server.logs());
    lab.assert_payload(
        "alice-again",
        &link(&alice, alice_port, pbk, &short_id, "alice"),
        &payload.payload,
    );
}
