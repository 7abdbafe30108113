//! The Xray API client against a real engine: Debian's `v2ray` 4.34, which serves the same
//! `HandlerService`/`StatsService` messages as Xray under `v2ray.core.…` names
//! ([`Flavor::V2ray`]). Xray itself cannot be fetched on the project's machines (SPEC §2.4).
//!
//! Each test starts its own v2ray server (a VLESS inbound with no users, the API on a
//! dokodemo-door inbound, all on free loopback ports), a loopback HTTP server with a random
//! payload, and one v2ray *client* process per user (socks in, VLESS out) that `curl
//! --socks5-hostname` fetches through. So every byte crosses a real VLESS handshake that the
//! server accepts only for users the API added.
//!
//! - `hot_users_and_counters`: refused before the add; after it the payload arrives intact and
//!   the counters (read without reset, twice, monotonic) cover it; add again and remove twice
//!   are the idempotent variants; unknown inbound; a second user added during the first user's
//!   long download leaves it intact; removal refuses new connections while the open one runs on.
//! - `engine_restart_is_detected`: uptime moves the implied start time and counters are gone.
//! - `tunnel_users_reach_the_api_unless_loopback_is_blocked`: why the API needs a unix socket
//!   or a loopback block rule.
//! - `burst_of_1000_adds`: 1,000 hot adds and removals over one connection, timed.
//!
//! Needs `v2ray` and `curl`; fails (does not skip) without them.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vpn_agent::drivers::vless::xray::api::{
    ApiAddress, Flavor, Traffic, UptimeSample, XrayApi, XrayApiError, engine_restarted,
};

const INBOUND: &str = "vless-in";
const PAYLOAD_LEN: usize = 2 * 1024 * 1024;
/// `/slow` sends the payload in chunks of this size with [`SLOW_PAUSE`] between them: ~4 s.
const SLOW_CHUNK: usize = 64 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(125);
const DEADLINE: Duration = Duration::from_secs(20);

/// Kills a child process on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(tool: &str, arg: &str, package: &str) {
    let found = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{tool}` not found: `apt-get install -y {package}` (deploy/scripts/setup.sh does it)"
    );
}

fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Polls `check` until it returns `Some` or [`DEADLINE`] passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_listening(port: u16) {
    eventually(&format!("port {port}"), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// Starts `v2ray -config FILE` with its output in `dir/NAME.log`.
fn spawn_v2ray(dir: &Path, name: &str, config: &serde_json::Value) -> Proc {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new("v2ray")
        .arg("-config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start v2ray (apt-get install -y v2ray)");
    Proc(child)
}

/// The engine under test: a VLESS inbound with no users, stats on for level 0, and the API on a
/// dokodemo-door inbound routed to the `api` outbound (the only way v2ray 4.34 serves it).
struct Server {
    _proc: Proc,
    dir: PathBuf,
    vless_port: u16,
    api_port: u16,
    api: XrayApi,
}

impl Server {
    async fn start(dir: &Path, vless_port: u16, api_port: u16) -> Server {
        Self::start_with(dir, vless_port, api_port, false).await
    }

    /// `block_loopback`: the routing a production config needs, because the API inbound is on
    /// the engine's own loopback and users' traffic leaves from that same host. Domains are
    /// resolved for matching (`IPIfNonMatch`), so `localhost` is caught too.
    async fn start_with(
        dir: &Path,
        vless_port: u16,
        api_port: u16,
        block_loopback: bool,
    ) -> Server {
        let mut rules = vec![serde_json::json!(
            {"type": "field", "inboundTag": ["api"], "outboundTag": "api"}
        )];
        if block_loopback {
            rules.push(serde_json::json!({
                "type": "field", "inboundTag": [INBOUND], "outboundTag": "block",
                "ip": ["127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"]
            }));
        }
        let config = serde_json::json!({
            "log": {"loglevel": "warning"},
            "stats": {},
            "api": {"tag": "api", "services": ["HandlerService", "StatsService"]},
            "policy": {"levels": {"0": {"statsUserUplink": true, "statsUserDownlink": true}}},
            "inbounds": [
                {"tag": INBOUND, "listen": "127.0.0.1", "port": vless_port, "protocol": "vless",
                 "settings": {"clients": [], "decryption": "none"}},
                {"tag": "api", "listen": "127.0.0.1", "port": api_port,
                 "protocol": "dokodemo-door", "settings": {"address": "127.0.0.1"}}
            ],
            "outbounds": [
                {"tag": "direct", "protocol": "freedom"},
                {"tag": "block", "protocol": "blackhole"}
            ],
            "routing": {"domainStrategy": "IPIfNonMatch", "rules": rules}
        });
        let proc = spawn_v2ray(dir, "server", &config);
        let address = ApiAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], api_port)));
        let api = XrayApi::new(&address, Flavor::V2ray, Duration::from_secs(3)).unwrap();
        if let Err(e) = api.wait_ready(DEADLINE).await {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("v2ray api did not answer: {e}\n--- server.log\n{log}");
        }
        Server {
            _proc: proc,
            dir: dir.to_owned(),
            vless_port,
            api_port,
            api,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// A v2ray client for one user: socks on a loopback port, VLESS (no flow: no XTLS here) out.
struct Client {
    _proc: Proc,
    socks_port: u16,
}

impl Client {
    async fn start(dir: &Path, name: &str, vless_port: u16, uuid: &str) -> Client {
        let socks_port = free_port();
        let config = serde_json::json!({
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": socks_port, "protocol": "socks",
                          "settings": {"auth": "noauth", "udp": false}}],
            "outbounds": [{"protocol": "vless", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": vless_port,
                "users": [{"id": uuid, "encryption": "none", "level": 0}]
            }]}}]
        });
        let proc = spawn_v2ray(dir, name, &config);
        wait_listening(socks_port).await;
        Client {
            _proc: proc,
            socks_port,
        }
    }

    /// `curl --socks5-hostname` of `url` into a file; the body on success, curl's exit code and
    /// stderr otherwise.
    async fn fetch(&self, dir: &Path, url: &str) -> Result<Vec<u8>, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let out = dir.join(format!("fetch-{}", N.fetch_add(1, Ordering::Relaxed)));
        let result = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "30", "--socks5-hostname"])
            .arg(format!("127.0.0.1:{}", self.socks_port))
            .arg("-o")
            .arg(&out)
            .arg(url)
            .output()
            .await
            .expect("run curl (apt-get install -y curl)");
        if result.status.success() {
            Ok(std::fs::read(&out).unwrap())
        } else {
            Err(format!(
                "curl {}: {}",
                result.status,
                String::from_utf8_lossy(&result.stderr).trim()
            ))
        }
    }
}

/// An HTTP server (on loopback unless told otherwise): `/fast` sends the payload at once, `/slow` in paced chunks. Counts
/// the bytes of `/slow` it has written so a test can act while that download is in flight.
struct Payload {
    data: Arc<Vec<u8>>,
    url_fast: String,
    url_slow: String,
    slow_sent: Arc<AtomicU64>,
}

impl Payload {
    async fn serve() -> Payload {
        Self::serve_on([127, 0, 0, 1].into()).await
    }

    async fn serve_on(ip: std::net::IpAddr) -> Payload {
        let mut data = vec![0u8; PAYLOAD_LEN];
        ring::rand::SystemRandom::new().fill(&mut data).unwrap();
        let data = Arc::new(data);
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow_sent = Arc::new(AtomicU64::new(0));
        let (d, sent) = (data.clone(), slow_sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (d, sent) = (d.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let slow = head.starts_with(b"GET /slow");
                    let header = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        d.len()
                    );
                    if conn.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    if !slow {
                        let _ = conn.write_all(&d).await;
                        return;
                    }
                    for chunk in d.chunks(SLOW_CHUNK) {
                        if conn.write_all(chunk).await.is_err() {
                            return;
                        }
                        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        tokio::time::sleep(SLOW_PAUSE).await;
                    }
                });
            }
        });
        Payload {
            data,
            url_fast: format!("http://{addr}/fast"),
            url_slow: format!("http://{addr}/slow"),
            slow_sent,
        }
    }
}

/// Whether a gRPC call to the API at `host:port`, sent by `curl` *through the tunnel* (that is
/// as a VPN user), gets an answer from the API.
async fn api_reachable_through(client: &Client, dir: &Path, host: &str, port: u16) -> bool {
    let body = dir.join("grpc-empty");
    // One gRPC frame: not compressed, length 0 (an empty SysStatsRequest).
    std::fs::write(&body, [0u8; 5]).unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-D",
            "-",
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--socks5-hostname")
        .arg(format!("127.0.0.1:{}", client.socks_port))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "http://{host}:{port}/v2ray.core.app.stats.command.StatsService/GetSysStats"
        ))
        .args(["-o", "/dev/null"])
        .output()
        .await
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).contains("grpc-status: 0")
}

/// A local address that is not loopback (the source address towards a documentation prefix;
/// no packet is sent).
fn local_non_loopback_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("198.51.100.1:9")
        .expect("this test needs a non-loopback IPv4 address and a route");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

/// Relays a unix socket to the API's TCP port, byte for byte: v2ray 4.34 cannot serve its API
/// on a unix socket (Xray can, with `api.listen`), so this is how [`ApiAddress::Unix`] meets a
/// real engine.
fn unix_relay(path: &Path, api_port: u16) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            });
        }
    });
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_users_and_counters() {
    require("v2ray", "-version", "v2ray");
    require("curl", "--version", "curl");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let payload = Payload::serve().await;
    let server = Server::start(dir, free_port(), free_port()).await;
    let api = &server.api;
    let (alice, alice_id) = ("alice@it", new_uuid());
    let alice_client = Client::start(dir, "client-alice", server.vless_port, &alice_id).await;

    // (a) Unknown to the engine: the VLESS handshake is refused.
    let refused = alice_client.fetch(dir, &payload.url_fast).await;
    assert!(refused.is_err(), "fetch before the add must fail");
    assert_eq!(api.all_user_traffic().await.unwrap().get(alice), None);

    // (b) Added hot: the payload arrives intact.
    api.add_vless_user(INBOUND, alice, &alice_id, "")
        .await
        .unwrap();
    let body = alice_client
        .fetch(dir, &payload.url_fast)
        .await
        .unwrap_or_else(|e| panic!("fetch after the add: {e}\n{}", server.log()));
    assert_eq!(sha256(&body), sha256(&payload.data));

    // (c) Counters cover the download, read without reset: a second read is not smaller.
    let first = eventually("alice's downlink to cover the payload", || async {
        let all = api.all_user_traffic().await.unwrap();
        all.get(alice)
            .copied()
            .filter(|t| t.downlink >= PAYLOAD_LEN as u64 && t.uplink > 0)
    })
    .await;
    let second = api.user_traffic(alice).await.unwrap().unwrap();
    assert!(
        second.downlink >= first.downlink && second.uplink >= first.uplink,
        "counters went backwards: {first:?} then {second:?} (a read must not reset)"
    );
    println!("alice after one fetch: {second:?}");

    // The same counters over a unix socket (the transport production should prefer).
    let sock = dir.join("api.sock");
    unix_relay(&sock, server.api_port);
    let over_unix = XrayApi::new(&ApiAddress::Unix(sock), Flavor::V2ray, DEADLINE).unwrap();
    let third = over_unix.user_traffic(alice).await.unwrap().unwrap();
    assert!(third.downlink >= second.downlink, "{third:?}");

    // (d) Adding again is the idempotent "already there" answer.
    let again = api
        .add_vless_user(INBOUND, alice, &alice_id, "")
        .await
        .unwrap_err();
    assert!(
        matches!(again, XrayApiError::UserExists { .. }) && again.is_already_applied(),
        "{again:?}"
    );
    let no_inbound = api
        .add_vless_user("no-such-inbound", alice, &alice_id, "")
        .await
        .unwrap_err();
    assert!(
        matches!(no_inbound, XrayApiError::InboundNotFound { .. }),
        "{no_inbound:?}"
    );
    assert!(!format!("{again:?}{no_inbound:?}").contains(&alice_id));

    // (f) A second user added during alice's long download does not disturb it; then alice is
    // removed while that download is still running.
    let slow = {
        let url = payload.url_slow.clone();
        let client = &alice_client;
        async move { client.fetch(dir, &url).await }
    };
    let (bob, bob_id) = ("bob@it", new_uuid());
    let steps = async {
        eventually("the slow download to start", || async {
            (payload.slow_sent.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        api.add_vless_user(INBOUND, bob, &bob_id, "").await.unwrap();
        let bob_client = Client::start(dir, "client-bob", server.vless_port, &bob_id).await;
        let bob_body = bob_client.fetch(dir, &payload.url_fast).await.unwrap();
        assert_eq!(sha256(&bob_body), sha256(&payload.data));

        // (e) Removal: new connections of alice are refused at once…
        api.remove_user(INBOUND, alice).await.unwrap();
        let in_flight = payload.slow_sent.load(Ordering::SeqCst);
        assert!(
            in_flight < PAYLOAD_LEN as u64,
            "the slow download ended before the removal; make it slower"
        );
        let after = alice_client.fetch(dir, &payload.url_fast).await;
        assert!(after.is_err(), "fetch after the removal must fail");
        let gone = api.remove_user(INBOUND, alice).await.unwrap_err();
        assert!(
            matches!(gone, XrayApiError::UserNotFound { .. }) && gone.is_already_applied(),
            "{gone:?}"
        );
        in_flight
    };
    let (slow_body, in_flight_at_removal) = tokio::join!(slow, steps);
    // …while the connection opened before the removal runs to its end.
    let slow_body = slow_body.expect("alice's download opened before the removal");
    assert_eq!(sha256(&slow_body), sha256(&payload.data));
    println!(
        "alice's open download: {in_flight_at_removal} of {PAYLOAD_LEN} bytes sent at removal, \
         completed intact after it"
    );

    // Counters of a removed user stay readable (the engine keeps them until it restarts).
    let all = api.all_user_traffic().await.unwrap();
    let a = all.get(alice).copied().unwrap_or_default();
    let b = all.get(bob).copied().unwrap_or_default();
    assert!(a.downlink >= 2 * PAYLOAD_LEN as u64, "alice: {a:?}");
    assert!(
        b.downlink >= PAYLOAD_LEN as u64 && b.uplink > 0,
        "bob: {b:?}"
    );
    println!("after the removal: alice {a:?}, bob {b:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_restart_is_detected() {
    require("v2ray", "-version", "v2ray");
    require("curl", "--version", "curl");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let payload = Payload::serve().await;
    let server = Server::start(dir, free_port(), free_port()).await;
    let (carol, carol_id) = ("carol@it", new_uuid());
    server
        .api
        .add_vless_user(INBOUND, carol, &carol_id, "")
        .await
        .unwrap();
    let client = Client::start(dir, "client-carol", server.vless_port, &carol_id).await;
    client.fetch(dir, &payload.url_fast).await.unwrap();
    let before = eventually("carol's counters", || async {
        server.api.user_traffic(carol).await.unwrap()
    })
    .await;
    assert!(before.downlink >= PAYLOAD_LEN as u64, "{before:?}");

    // Let the engine's uptime pass the restart slack, so its start time is clearly older.
    let sample = eventually("uptime of 3 s", || async {
        let uptime = server.api.uptime().await.unwrap();
        let at = Instant::now();
        (uptime >= Duration::from_secs(3)).then_some(UptimeSample { at, uptime })
    })
    .await;
    let again = UptimeSample {
        uptime: server.api.uptime().await.unwrap(),
        at: Instant::now(),
    };
    assert!(
        !engine_restarted(sample, again),
        "{sample:?} then {again:?}"
    );

    // Restart on the same ports: the same client (same address) sees the new engine.
    let (vless_port, api_port) = (server.vless_port, server.api_port);
    let old_api = server.api.clone();
    drop(server);
    let server = Server::start(dir, vless_port, api_port).await;
    // The old client's connection broke; its next calls dial the new engine.
    let after = eventually("the old client to reach the new engine", || async {
        let uptime = old_api.uptime().await.ok()?;
        Some(UptimeSample {
            uptime,
            at: Instant::now(),
        })
    })
    .await;
    assert!(engine_restarted(sample, after), "{sample:?} then {after:?}");
    // Counters (and users) live in memory: both are gone.
    assert_eq!(old_api.user_traffic(carol).await.unwrap(), None::<Traffic>);
    assert!(client.fetch(dir, &payload.url_fast).await.is_err());
    drop(server);
}

/// The API inbound listens on the engine's loopback, and users' traffic leaves from the same
/// host: without a routing rule, any VPN user can call the API (add users, read counters).
/// With the loopback block rule the call is refused, by IP and by `localhost`, while other
/// destinations still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_users_reach_the_api_unless_loopback_is_blocked() {
    require("v2ray", "-version", "v2ray");
    require("curl", "--version", "curl");
    let dir = tempfile::tempdir().unwrap();
    let (open_dir, blocked_dir) = (dir.path().join("open"), dir.path().join("blocked"));
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::create_dir_all(&blocked_dir).unwrap();

    let open = Server::start(&open_dir, free_port(), free_port()).await;
    let id = new_uuid();
    open.api
        .add_vless_user(INBOUND, "eve@it", &id, "")
        .await
        .unwrap();
    let eve = Client::start(&open_dir, "client-eve", open.vless_port, &id).await;
    for host in ["127.0.0.1", "localhost"] {
        assert!(
            api_reachable_through(&eve, &open_dir, host, open.api_port).await,
            "expected the unprotected API at {host} to answer a tunnel user (the hazard pinned here)"
        );
    }
    drop(eve);
    drop(open);

    let blocked = Server::start_with(&blocked_dir, free_port(), free_port(), true).await;
    blocked
        .api
        .add_vless_user(INBOUND, "eve@it", &id, "")
        .await
        .unwrap();
    let eve = Client::start(&blocked_dir, "client-eve", blocked.vless_port, &id).await;
    for host in ["127.0.0.1", "localhost"] {
        assert!(
            !api_reachable_through(&eve, &blocked_dir, host, blocked.api_port).await,
            "a tunnel user reached the API at {host} despite the block rule"
        );
    }
    let payload = Payload::serve_on(local_non_loopback_ip()).await;
    let body = eve.fetch(&blocked_dir, &payload.url_fast).await.unwrap();
    assert_eq!(sha256(&body), sha256(&payload.data));
}

/// A burst of 1,000 hot adds over one connection (32 in flight), then 1,000 removals: every
/// one answered, none an error. Prints the time taken (for docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_adds() {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    require("v2ray", "-version", "v2ray");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), free_port()).await;
    let users: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("burst{i}@it"), new_uuid()))
        .collect();
    let api = &server.api;
    let started = Instant::now();
    stream::iter(&users)
        .map(|(email, id)| async move { api.add_vless_user(INBOUND, email, id, "").await })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let added = started.elapsed();
    let started = Instant::now();
    stream::iter(&users)
        .map(|(email, _)| async move { api.remove_user(INBOUND, email).await })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let removed = started.elapsed();
    println!("v2ray 4.34: 1,000 adds in {added:?}, 1,000 removals in {removed:?} (debug build)");
    assert!(added < Duration::from_secs(30) && removed < Duration::from_secs(30));
}
