//! The managed firewall against the real kernel, inside network namespaces this test creates.
//!
//! Topology per test: a `server` namespace with a bridge (10.77.0.1/24, fd77::1/64) and two
//! client namespaces `a` (.2 / ::2) and `b` (.3 / ::3) on veth ports of that bridge. The
//! [`Firewall`] runs `ip netns exec <server> nft`, so nothing touches the host's own ruleset.
//! Servers and clients are this test binary re-executed inside a namespace (the `helper` test
//! with `FW_NETNS_HELPER` set), so no other tool than `ip` and `nft` is needed.
//!
//! Needs root and nft; fails (does not skip) without them.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use vpn_agent::firewall::{Firewall, FirewallOutcome};
use vpn_shared::model::*;

const HELPER_ENV: &str = "FW_NETNS_HELPER";
const SERVICE_PORT: u16 = 39000;
const USER_PORT: u16 = 39001;
const SERVER_V4: &str = "10.77.0.1";
const SERVER_V6: &str = "fd77::1";
const A_V4: &str = "10.77.0.2";
const A_V6: &str = "fd77::2";

// ---------------------------------------------------------------------------------------------
// Helper processes (run inside a namespace)

/// Not a test: the entry point of the servers and clients this file starts inside namespaces.
/// Without `FW_NETNS_HELPER` it does nothing.
#[test]
fn helper() {
    let Ok(role) = std::env::var(HELPER_ENV) else {
        return;
    };
    let args: Vec<&str> = role.split_whitespace().collect();
    let code = match args.as_slice() {
        ["serve", ports @ ..] => serve(ports),
        ["connect", addr, bytes, ms] => connect_once(
            addr.parse().unwrap(),
            bytes.parse().unwrap(),
            ms.parse().unwrap(),
        ),
        ["burst", addr, count, ms] => {
            let addr: SocketAddr = addr.parse().unwrap();
            let timeout = Duration::from_millis(ms.parse().unwrap());
            let ok = (0..count.parse::<u32>().unwrap())
                .filter(|_| TcpStream::connect_timeout(&addr, timeout).is_ok())
                .count();
            println!("RESULT {ok}");
            0
        }
        _ => panic!("unknown helper role {role:?}"),
    };
    std::process::exit(code);
}

/// Listens on every port (dual stack); answers each connection with the byte count it read.
fn serve(ports: &[&str]) -> i32 {
    for port in ports {
        let listener = TcpListener::bind(("::", port.parse::<u16>().unwrap())).unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = conn.write_all(format!("{total}\n").as_bytes());
                });
            }
        });
    }
    println!("READY");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// Connects, sends `bytes`, and checks the server saw them all. Exit 0 on success.
fn connect_once(addr: SocketAddr, bytes: usize, timeout_ms: u64) -> i32 {
    let attempt = || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(timeout_ms))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n])?;
            left -= n;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        if answer.trim() != bytes.to_string() {
            return Err(std::io::Error::other(format!("server saw {answer:?}")));
        }
        Ok(())
    };
    match attempt() {
        Ok(()) => {
            println!("RESULT ok");
            0
        }
        Err(e) => {
            println!("RESULT failed: {e}");
            1
        }
    }
}

fn helper_command(ns: &str, role: &str) -> tokio::process::Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "helper", "--nocapture", "--test-threads=1", "-q"])
        .env(HELPER_ENV, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a client helper in `ns`, bounded in time; returns its exit status and `RESULT` line.
async fn client(ns: &str, role: &str) -> (bool, String) {
    let child = helper_command(ns, role).spawn().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("client helper hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_default()
        .to_owned();
    (out.status.success(), result)
}

/// Whether a TCP connection from `ns` to `addr` carries `bytes` (1 s connect timeout).
async fn can_send(ns: &str, addr: &str, port: u16, bytes: usize) -> bool {
    let addr: SocketAddr = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
    .parse()
    .unwrap();
    client(ns, &format!("connect {addr} {bytes} 1000")).await.0
}

async fn can_connect(ns: &str, addr: &str, port: u16) -> bool {
    can_send(ns, addr, port, 16).await
}

/// Polls until `ns` can (or cannot) connect, for at most 5 s; returns how long that took.
async fn within_5s(ns: &str, addr: &str, port: u16, want: bool) -> Duration {
    let start = Instant::now();
    loop {
        if can_connect(ns, addr, port).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{ns} -> {addr}:{port}: still {} after 5 s",
            if want { "refused" } else { "connecting" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// The three namespaces of one test; deleted on drop, also when the test panics.
struct Net {
    server: String,
    a: String,
    b: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.server, &self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root_and_nft() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(
        uid, "0",
        "firewall_netns needs root (network namespaces, nft)"
    );
    let nft = Command::new("nft").arg("--version").output();
    assert!(
        nft.as_ref().is_ok_and(|o| o.status.success()),
        "firewall_netns needs nft: {nft:?}"
    );
}

impl Net {
    fn new() -> Net {
        require_root_and_nft();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "vpn_agent=info".into()),
            )
            .with_test_writer()
            .try_init();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "fw{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            server: format!("{id}s"),
            a: format!("{id}a"),
            b: format!("{id}b"),
        };
        for ns in [&net.server, &net.a, &net.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let s = net.server.as_str();
        sh(&["ip", "-n", s, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", s, "link", "set", "br0", "up"]);
        sh(&["ip", "-n", s, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        sh(&[
            "ip",
            "-n",
            s,
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            "br0",
            "nodad",
        ]);
        for (ns, host, port) in [(&net.a, "2", "va"), (&net.b, "3", "vb")] {
            sh(&[
                "ip", "-n", s, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            sh(&["ip", "-n", s, "link", "set", port, "master", "br0", "up"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.77.0.{host}/24"),
                "dev",
                "eth0",
            ]);
            let v6 = format!("fd77::{host}/64");
            sh(&["ip", "-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    fn firewall(&self) -> Firewall {
        Firewall::with_command(
            ["ip", "netns", "exec", &self.server, "nft"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn nft_stdin(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft -f: {script}");
    }

    /// Starts the TCP server helper on `ports` in the server namespace.
    async fn serve(&self, ports: &[u16]) -> Child {
        let role = format!(
            "serve {}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = helper_command(&self.server, &role).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.trim() == "READY" {
                    return;
                }
            }
            panic!("server helper exited before READY");
        })
        .await
        .expect("server helper not ready within 10 s");
        child
    }
}

// ---------------------------------------------------------------------------------------------
// States

fn state(blocked: &[&str], rate: Option<u32>, users: &[(&str, u16)]) -> DesiredState {
    let service = ServiceSpec {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: SERVICE_PORT,
        image: None,
        options: ServiceOptions::Shadowsocks {
            method: "chacha20-ietf-poly1305".into(),
        },
        bandwidth: Bandwidth::default(),
        new_conn_rate: rate,
    };
    DesiredState {
        generation: 1,
        services: [("ss".to_owned(), service)].into(),
        users: users
            .iter()
            .map(|(name, port)| {
                let user = UserSpec {
                    name: (*name).into(),
                    id: format!("id-{name}"),
                    credentials: vec![Credential::Shadowsocks {
                        service: "ss".into(),
                        port: *port,
                        password: "pw".into(),
                    }],
                    bandwidth: Bandwidth::default(),
                };
                ((*name).to_owned(), user)
            })
            .collect(),
        firewall: FirewallSpec {
            blocked: blocked.iter().map(|b| (*b).to_owned()).collect(),
        },
    }
}

/// `nft list` output with counter values zeroed.
fn without_counter_values(listing: &str) -> String {
    listing
        .lines()
        .map(|line| match line.find("packets ") {
            Some(i) if line[i..].contains(" bytes ") => format!("{}packets N bytes N", &line[..i]),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const HOST_TABLE: &str = "table inet host_fw {
    set admins {
        type ipv4_addr
        flags interval
        elements = { 10.77.0.0/24 }
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ip saddr @admins tcp dport 22 accept
        tcp dport 23 drop
    }
}
";

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn block_unblock_and_repeated_applies_touch_nothing_else() {
    let net = Net::new();
    net.nft_stdin(HOST_TABLE);
    let host_before = net.nft(&["list", "table", "inet", "host_fw"]);
    let _server = net.serve(&[SERVICE_PORT, USER_PORT]).await;
    let fw = net.firewall();
    let support = fw.check().await;
    assert!(support.usable(), "{support:?}");
    assert!(support.missing.is_empty(), "{support:?}");
    println!("nft {:?}", support.nft_version);

    let users = [("alice", USER_PORT)];
    fw.apply(&state(&[], None, &users)).await.unwrap();
    for port in [SERVICE_PORT, USER_PORT] {
        assert!(can_connect(&net.a, SERVER_V4, port).await);
        assert!(can_connect(&net.a, SERVER_V6, port).await);
    }

    // Block A by address (v4 and v6, with duplicates and a covering entry).
    let blocked = [A_V4, "10.77.0.2/32", A_V6, "fd77::2/127", "fd77::3/128"];
    let blocked_state = state(&blocked, None, &users);
    fw.apply(&blocked_state).await.unwrap();
    for port in [SERVICE_PORT, USER_PORT] {
        let took = within_5s(&net.a, SERVER_V4, port, false).await;
        println!("A refused on {port} after {took:?}");
        assert!(
            can_connect(&net.b, SERVER_V4, port).await,
            "B must still connect"
        );
        within_5s(&net.a, SERVER_V6, port, false).await;
    }
    // fd77::3 (B's v6) was listed too: B is refused over v6 only.
    assert!(!can_connect(&net.b, SERVER_V6, SERVICE_PORT).await);
    // Only managed ports are filtered: A still reaches an unmanaged port (nothing listens: a
    // fast refusal, not a 1 s drop timeout, shows the SYN got through).
    let start = Instant::now();
    assert!(!can_connect(&net.a, SERVER_V4, 40999).await);
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "unmanaged port was filtered"
    );

    fw.apply(&state(&[], None, &users)).await.unwrap();
    within_5s(&net.a, SERVER_V4, SERVICE_PORT, true).await;
    within_5s(&net.a, SERVER_V6, USER_PORT, true).await;

    // The same state 100 times, each through a fresh Firewall (so every apply replaces).
    let full = state(&blocked, Some(50), &[("alice", USER_PORT), ("bob", 39002)]);
    let outcome = fw.apply(&full).await.unwrap();
    assert!(outcome.replaced);
    let first = without_counter_values(&net.nft(&["list", "table", "inet", "vpn_agent"]));
    for i in 0..100 {
        let out = net.firewall().apply(&full).await.unwrap();
        assert!(out.replaced, "apply {i}");
        let now = without_counter_values(&net.nft(&["list", "table", "inet", "vpn_agent"]));
        assert_eq!(now, first, "apply {i} changed the table");
    }
    // The first instance installed this very ruleset last: it only reads the counters.
    let skipped = fw.apply(&full).await.unwrap();
    assert!(!skipped.replaced);
    assert_eq!(skipped.counters.len(), 6);
    assert_eq!(net.nft(&["list", "table", "inet", "host_fw"]), host_before);

    // Hand edits to our table are repaired by the next apply.
    net.nft_stdin(
        "delete element inet vpn_agent traffic_up { 39002 }\n\
         delete counter inet vpn_agent port_39002_up\n",
    );
    assert!(fw.apply(&full).await.unwrap().replaced);

    // Junk in the block list is refused before anything changes.
    let err = fw
        .apply(&state(&["10.0.0.0/8 }; flush ruleset"], None, &users))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("flush ruleset"), "{err}");
    let now = without_counter_values(&net.nft(&["list", "table", "inet", "vpn_agent"]));
    assert_eq!(now, first);

    // Remove deletes our table only, and twice is fine.
    fw.remove().await.unwrap();
    fw.remove().await.unwrap();
    let tables = net.nft(&["list", "tables"]);
    assert_eq!(tables.trim(), "table inet host_fw");
    assert_eq!(net.nft(&["list", "table", "inet", "host_fw"]), host_before);
}

#[tokio::test]
async fn counters_are_read_and_reset_without_loss() {
    let net = Net::new();
    let _server = net.serve(&[SERVICE_PORT, USER_PORT]).await;
    let fw = net.firewall();
    let users = [("alice", USER_PORT)];
    let FirewallOutcome { counters, replaced } = fw.apply(&state(&[], None, &users)).await.unwrap();
    assert!(replaced);
    assert!(counters.is_empty(), "no table before the first apply");

    const N: usize = 1_000_000;
    assert!(can_send(&net.b, SERVER_V4, USER_PORT, N).await);
    let read = fw.read_counters().await.unwrap();
    let up = read["port_39001_up"];
    assert!(up.bytes >= N as u64, "{up:?}");
    assert!(read["port_39001_down"].bytes > 0);
    assert_eq!(read["port_39000_up"].bytes, 0);
    let second = fw.read_counters().await.unwrap();
    assert_eq!(second["port_39001_up"].bytes, 0, "{second:?}");

    // An apply that changes the table returns what was counted since the last read.
    assert!(can_send(&net.b, SERVER_V6, USER_PORT, N).await);
    let out = fw
        .apply(&state(&[], None, &[("alice", USER_PORT), ("bob", 39002)]))
        .await
        .unwrap();
    assert!(out.replaced);
    assert!(out.counters["port_39001_up"].bytes >= N as u64, "{out:?}");
    assert_eq!(fw.read_counters().await.unwrap()["port_39001_up"].bytes, 0);

    // Removing a user reads its port's last bytes before the counter disappears.
    assert!(can_send(&net.a, SERVER_V4, USER_PORT, N).await);
    let out = fw.apply(&state(&[], None, &[])).await.unwrap();
    assert!(out.counters["port_39001_up"].bytes >= N as u64);
    assert!(
        !fw.read_counters()
            .await
            .unwrap()
            .contains_key("port_39001_up")
    );
}

#[tokio::test]
async fn new_connection_limit_is_per_source() {
    let net = Net::new();
    let _server = net.serve(&[SERVICE_PORT]).await;
    let fw = net.firewall();
    fw.apply(&state(&[], Some(2), &[])).await.unwrap();
    let addr = format!("{SERVER_V4}:{SERVICE_PORT}");
    let (_, result) = client(&net.a, &format!("burst {addr} 30 300")).await;
    let ok: u32 = result.parse().unwrap();
    println!("A: {ok} of 30 rapid connections admitted at 2/s");
    assert!(ok >= 1, "the burst allowance admits the first connections");
    assert!(ok < 30, "A was never limited");
    // B is another source: its own budget is untouched.
    assert!(can_connect(&net.b, SERVER_V4, SERVICE_PORT).await);
    // Unlimited again: A connects at once.
    fw.apply(&state(&[], None, &[])).await.unwrap();
    let (_, result) = client(&net.a, &format!("burst {addr} 10 300")).await;
    assert_eq!(result, "10");
}

#[tokio::test]
async fn a_large_state_applies() {
    let net = Net::new();
    let fw = net.firewall();
    // 20,000 users: what one Shadowsocks service may hold (`vpn services deploy … --ports`).
    let users: Vec<(String, u16)> = (0..20_000u16)
        .map(|i| (format!("u{i}"), 40_000 + i))
        .collect();
    let users: Vec<(&str, u16)> = users.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let blocked: Vec<String> = (0..5_000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .chain((0..5_000u32).map(|i| format!("2001:db8:{i:x}::/48")))
        .collect();
    let blocked: Vec<&str> = blocked.iter().map(String::as_str).collect();
    let big = state(&blocked, Some(20), &users);
    let start = Instant::now();
    assert!(fw.apply(&big).await.unwrap().replaced);
    let first = start.elapsed();
    let start = Instant::now();
    let out = net.firewall().apply(&big).await.unwrap();
    let second = start.elapsed();
    assert_eq!(out.counters.len(), 2 * 20_001);
    println!("20,000 users + 10,000 networks: first apply {first:?}, replace {second:?}");
}
