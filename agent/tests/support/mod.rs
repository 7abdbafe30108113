//! What the Docker-backed Shadowsocks tests of the agent share: cleanup of a test host's
//! containers, a veth address the ACL lets through, the locally built ssmanager image, free
//! port pairs, an echo server, real `sslocal` clients and a SOCKS5 round trip.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use vpn_agent::apply::docker::{Docker, LABEL_HOST};
use vpn_agent::drivers::shadowsocks::DEFAULT_IMAGE;
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
};

/// The cipher of every test service.
pub const METHOD: &str = "chacha20-ietf-poly1305";

/// Force-removes every container of the given hosts, also when the test panics.
pub struct Cleanup(pub Vec<String>);

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
pub struct Veth {
    pub link: String,
    pub ip: Ipv4Addr,
}

impl Veth {
    pub fn add() -> Veth {
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
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn cargo_bin(name: &str) -> PathBuf {
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

pub async fn ensure_image(docker: &Docker) {
    if docker.client().inspect_image(DEFAULT_IMAGE).await.is_ok() {
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/images/shadowsocks-rust/build.sh");
    let status = Command::new("bash").arg(&script).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
}

/// A base port with it and the next one free for TCP and UDP on all addresses.
pub fn free_port_pair() -> u16 {
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

pub fn free_local_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An echo server on `ip`; the counter says how many connections it accepted.
pub async fn echo_server(ip: Ipv4Addr) -> (SocketAddr, Arc<AtomicUsize>) {
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
pub async fn sslocal(server_port: u16, password: &str) -> (Proc, SocketAddr) {
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
pub async fn socks_connect(socks: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
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
pub async fn roundtrip(s: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
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

/// A desired state of one Shadowsocks service `service` on `base` and one user per
/// `(name, port, password)`, each with the id `id-<name>`.
pub fn state(service: &str, base: u16, users: &[(&str, u16, &str)]) -> DesiredState {
    let mut s = DesiredState::default();
    let spec = ServiceSpec {
        name: service.into(),
        protocol: Protocol::Shadowsocks,
        port: base,
        image: None,
        options: ServiceOptions::Shadowsocks {
            method: METHOD.into(),
        },
        bandwidth: Default::default(),
        new_conn_rate: None,
    };
    s.services.insert(service.into(), spec);
    for (name, port, password) in users {
        let user = UserSpec {
            name: (*name).into(),
            id: format!("id-{name}"),
            credentials: vec![Credential::Shadowsocks {
                service: service.into(),
                port: *port,
                password: (*password).into(),
            }],
            bandwidth: Default::default(),
        };
        s.users.insert((*name).into(), user);
    }
    s
}
