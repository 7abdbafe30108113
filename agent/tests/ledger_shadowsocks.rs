//! The ledger against a real ssmanager (Docker, host networking, ports 39xxx): `sslocal`
//! clients move bytes through two users' ports to an echo server on a veth address; the
//! agent's ledger reads the manager's counters through the driver, is closed and opened again
//! in the middle (an agent restart), and sees one user's port re-added by a password change.
//! At the end, each user's entries add up to exactly what the engine itself counted — nothing
//! lost, nothing twice — and to at least the payload both ways. Needs Docker and CAP_NET_ADMIN;
//! fails (does not skip) without them.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use vpn_agent::apply::Applier;
use vpn_agent::apply::docker::{Docker, LABEL_HOST};
use vpn_agent::drivers::shadowsocks::{
    DEFAULT_IMAGE, REQUEST_TIMEOUT, manager::ManagerClient, socket_path,
};
use vpn_agent::ledger::delta::Now;
use vpn_agent::ledger::{self, Ledger, Limits};
use vpn_shared::model::*;
use vpn_shared::proto::Outcome;

const METHOD: &str = "chacha20-ietf-poly1305";
const SERVICE: &str = "ss-ledger";

/// Force-removes every container of the given hosts, also when the test panics.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for host in &self.0 {
            let filter = format!("label={LABEL_HOST}={host}");
            let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

/// A veth pair the test adds, with one address: a local destination the ACL allows (the host's
/// loopback is refused). Removed on drop; deleting one end deletes both.
struct Veth {
    link: String,
    ip: Ipv4Addr,
}

impl Veth {
    fn add() -> Veth {
        let pid = std::process::id();
        let link = format!("vpnit{}", pid % 100_000);
        // Benchmarking range (RFC 2544): routed nowhere, and the address is ours alone.
        let ip = Ipv4Addr::new(198, 18, (pid / 254 % 256) as u8, (pid % 254 + 1) as u8);
        let veth = Veth { link, ip };
        let peer = format!("{}p", veth.link);
        let ip_cmd = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {} (this test needs CAP_NET_ADMIN)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let link = veth.link.as_str();
        ip_cmd(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
        ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", link]);
        ip_cmd(&["link", "set", link, "up"]);
        ip_cmd(&["link", "set", &peer, "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

/// Kills a child process on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let p = home.join("bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo install shadowsocks-rust`",
        p.display()
    );
    p
}

async fn ensure_image(docker: &Docker) {
    if docker.client().inspect_image(DEFAULT_IMAGE).await.is_ok() {
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/images/shadowsocks-rust/build.sh");
    let status = Command::new("bash").arg(&script).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
}

/// A base port with it and the next one free for TCP and UDP on all addresses.
fn free_port_pair() -> u16 {
    let start = 39000 + (std::process::id() % 400) as u16 * 2;
    (0..200)
        .map(|i| 39000 + (start - 39000 + i * 2) % 800)
        .find(|&p| {
            (p..p + 2).all(|q| {
                StdTcpListener::bind(("0.0.0.0", q)).is_ok()
                    && UdpSocket::bind(("0.0.0.0", q)).is_ok()
            })
        })
        .expect("no free port pair in 39000..39800")
}

fn free_local_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An echo server on `ip`; the counter says how many connections it accepted.
async fn echo_server(ip: Ipv4Addr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, accepted)
}

/// Starts `sslocal` for one user and waits until its SOCKS5 port accepts.
async fn sslocal(server_port: u16, password: &str) -> (Proc, SocketAddr) {
    let socks: SocketAddr = format!("127.0.0.1:{}", free_local_port()).parse().unwrap();
    // Wrapped at once so a panic below still kills it.
    let child = Proc(
        Command::new(cargo_bin("sslocal"))
            .args([
                "-b",
                &socks.to_string(),
                "-s",
                &format!("127.0.0.1:{server_port}"),
            ])
            .args(["-m", METHOD, "-k", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..50 {
        if TcpStream::connect(socks).await.is_ok() {
            return (child, socks);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sslocal on {socks} did not start");
}

/// A SOCKS5 CONNECT (no auth, IPv4) through `socks` to `target`.
async fn socks_connect(socks: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(t) = target else {
        unreachable!()
    };
    let mut s = TcpStream::connect(socks).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello).await?;
    let mut req = vec![5, 1, 0, 1];
    req.extend(t.ip().octets());
    req.extend(t.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).await?;
    if rep[1] != 0 {
        return Err(std::io::Error::other(format!("socks reply {}", rep[1])));
    }
    Ok(s)
}

/// Sends `payload` and reads the echo back, in at most 5 s.
async fn roundtrip(s: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut back = vec![0u8; payload.len()];
    let exchange = async {
        s.write_all(payload).await?;
        s.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(())
    };
    timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(back)
}

fn state(base: u16, users: &[(&str, u16, &str)]) -> DesiredState {
    let mut s = DesiredState::default();
    s.services.insert(
        SERVICE.into(),
        ServiceSpec {
            name: SERVICE.into(),
            protocol: Protocol::Shadowsocks,
            port: base,
            image: None,
            options: ServiceOptions::Shadowsocks {
                method: METHOD.into(),
            },
            bandwidth: Default::default(),
            new_conn_rate: None,
        },
    );
    for (name, port, password) in users {
        let user = UserSpec {
            name: (*name).into(),
            id: format!("id-{name}"),
            credentials: vec![Credential::Shadowsocks {
                service: SERVICE.into(),
                port: *port,
                password: (*password).into(),
            }],
            bandwidth: Default::default(),
        };
        s.users.insert((*name).into(), user);
    }
    s
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

/// Opens one connection through `socks`, echoes `n` bytes and closes it.
async fn transfer(socks: SocketAddr, echo: SocketAddr, n: usize) {
    let mut s = socks_connect(socks, echo).await.unwrap();
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
