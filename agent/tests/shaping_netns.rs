//! Bandwidth limits measured for real: two network namespaces joined by a veth pair, the
//! agent's [`Shaper`] on the server side's veth, and TCP transfers between helper processes
//! (this test binary re-executed inside the namespaces with `ip netns exec`).
//!
//! Measures a user limited to 8 mbit (download on the veth's egress, upload on its IFB) next to
//! an unlimited user, a change to 16 mbit on a running transfer, IPv6, and removal; then checks
//! that 100 applies of the same plan run nothing and leave `tc -s` unchanged apart from
//! counters, that another device's qdiscs and filters are untouched, and that a foreign root
//! qdisc is refused. Prints the figures (for docs/benchmarks.md).
//!
//! Needs root, `ip` and `tc`; fails (does not skip) without them.

// Test code: a panic is the failure report; the figures are printed on purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vpn_agent::shaping::ShapingError;
use vpn_agent::shaping::apply::{DEFAULT_CEILING_BPS, Shaper};
use vpn_agent::shaping::kernel;
use vpn_agent::shaping::plan::plan;
use vpn_shared::model::{
    Bandwidth, Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
};

/// Set in a re-executed copy of this binary: run a traffic helper instead of the tests.
const HELPER_ENV: &str = "VPN_SHAPING_HELPER";

const LIMITED_PORT: u16 = 25201;
const FREE_PORT: u16 = 25202;
const SERVER_V4: &str = "10.233.0.1";
const SERVER_V6: &str = "fd00:233::1";
const TOLERANCE: f64 = 0.15;

/// The helper entry point; a no-op in a normal test run.
#[test]
fn traffic_helper_process() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    helper::main(&spec);
    std::process::exit(0);
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

fn preflight() {
    let uid = sh(&["id", "-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "shaping_netns needs root (network namespaces, tc); run the tests as root"
    );
    for tool in [["tc", "-V"], ["ip", "-V"]] {
        let ok = Command::new(tool[0])
            .arg(tool[1])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "shaping_netns needs `{}` (iproute2) on PATH", tool[0]);
    }
}

/// Deletes the namespaces (and with them the veths and the IFB), also on panic.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Kills a helper process on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_helper(ns: &str, spec: &str) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "traffic_helper_process", "--nocapture"])
        .env(HELPER_ENV, spec)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// A transfer's progress: (milliseconds since start, bytes delivered).
type Samples = Vec<(u64, u64)>;

/// Starts a measuring client in `ns`; `dir` is `D` (server → client) or `U`.
fn start_measure(ns: &str, server: SocketAddr, dir: char, secs: f64, out: &Path) -> Proc {
    spawn_helper(
        ns,
        &format!("measure {server} {dir} {secs} {}", out.display()),
    )
}

fn finish(mut p: Proc, out: &Path) -> Samples {
    let status = p.0.wait().unwrap();
    assert!(status.success(), "measuring helper failed: {status}");
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| {
            let (t, b) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// Megabits per second delivered between `from` and `to` seconds.
fn mbit(s: &Samples, from: f64, to: f64) -> f64 {
    let (from, to) = ((from * 1000.0) as u64, (to * 1000.0) as u64);
    let a = s
        .iter()
        .find(|x| x.0 >= from)
        .expect("no sample after window start");
    let b = s
        .iter()
        .rev()
        .find(|x| x.0 <= to)
        .expect("no sample before window end");
    assert!(b.0 > a.0 + 500, "window too short: {a:?}..{b:?}");
    (b.1 - a.1) as f64 * 8.0 / ((b.0 - a.0) as f64 / 1000.0) / 1e6
}

fn assert_near(what: &str, measured: f64, want: f64) {
    let err = (measured - want).abs() / want;
    assert!(
        err <= TOLERANCE,
        "{what}: measured {measured:.2} mbit/s, configured {want} mbit/s ({:.1}% off)",
        err * 100.0
    );
}

/// A Shadowsocks service capped at `cap` mbit (both ways) and users `(name, port, limit in mbit)`.
fn desired_with(cap: Option<u64>, users: &[(&str, u16, Option<u64>)]) -> DesiredState {
    let bw = |mbit: Option<u64>| Bandwidth {
        down_bps: mbit.map(|m| m * 1_000_000),
        up_bps: mbit.map(|m| m * 1_000_000),
    };
    let service = ServiceSpec {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: LIMITED_PORT - 1,
        image: None,
        options: ServiceOptions::Shadowsocks {
            method: "chacha20-ietf-poly1305".into(),
        },
        bandwidth: bw(cap),
        new_conn_rate: None,
    };
    let users = users
        .iter()
        .map(|&(name, port, limit)| {
            let u = UserSpec {
                name: name.into(),
                id: format!("id-{name}"),
                credentials: vec![Credential::Shadowsocks {
                    service: "ss".into(),
                    port,
                    password: "pw".into(),
                }],
                bandwidth: bw(limit),
            };
            (name.to_string(), u)
        })
        .collect();
    DesiredState {
        generation: 1,
        services: [("ss".to_string(), service)].into(),
        users,
        ..Default::default()
    }
}

/// The measured host: one user limited to `limit` mbit, one unlimited.
fn desired(limit: Option<u64>) -> DesiredState {
    desired_with(
        None,
        &[("limited", LIMITED_PORT, limit), ("free", FREE_PORT, None)],
    )
}

/// Drops counters and statistics from `tc -s -j` output, recursively.
fn strip_stats(v: &mut Value) {
    const STATS: &[&str] = &[
        "bytes",
        "packets",
        "drops",
        "overlimits",
        "requeues",
        "backlog",
        "qlen",
        "stats",
        "stats64",
        "xstats",
        "direct_packets_stat",
        "rule_hit",
        "success",
        "lastused",
        "firstused",
        "last_used",
        "first_used",
        "installed",
        "expires",
    ];
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !STATS.contains(&k.as_str()));
            m.values_mut().for_each(strip_stats);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_stats),
        _ => {}
    }
}

/// Everything `tc -s` shows for `dev` minus counters: qdiscs and filters from JSON, classes
/// from text (iproute2 6.1 has no JSON for classes) without their statistics lines.
fn tc_state(ns: &str, dev: &str) -> String {
    let json = |args: &[&str]| -> String {
        let mut full = vec!["tc", "-s", "-d", "-j"];
        full.extend_from_slice(args);
        let text = in_ns(ns, &full);
        if text.trim().is_empty() {
            return String::new();
        }
        let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        strip_stats(&mut v);
        format!("{v}\n")
    };
    let mut out = String::new();
    out.push_str(&json(&["qdisc", "show", "dev", dev]));
    let qdiscs = in_ns(ns, &["tc", "qdisc", "show", "dev", dev]);
    for line in qdiscs.lines() {
        let handle = line.split_whitespace().nth(2).unwrap_or("");
        if handle != "0:" && !line.starts_with("qdisc tbf") {
            out.push_str(&json(&["filter", "show", "dev", dev, "parent", handle]));
            // JSON repeats `match` per u32 key and a parser keeps only the last: add the text.
            out.push_str(&in_ns(
                ns,
                &["tc", "-d", "filter", "show", "dev", dev, "parent", handle],
            ));
        }
    }
    for line in in_ns(ns, &["tc", "-s", "-d", "class", "show", "dev", dev]).lines() {
        if line.starts_with("class") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_measured_idempotent_and_stay_in_their_lane() {
    preflight();
    let started = Instant::now();
    let report = kernel::probe().await;
    println!("{report}");
    let caps = report.capabilities();
    assert!(
        caps.egress,
        "this kernel cannot shape at all (sch_htb/cls_u32 missing):\n{report}"
    );

    let id = std::process::id() % 100_000;
    let (srv, cli) = (format!("vpnsh-s-{id}"), format!("vpnsh-c-{id}"));
    sh(&["ip", "netns", "add", &srv]);
    let _guard = Namespaces(vec![srv.clone(), cli.clone()]);
    sh(&["ip", "netns", "add", &cli]);
    let (vs, vc) = (format!("vs{id}"), format!("vc{id}"));
    sh(&[
        "ip", "link", "add", &vs, "netns", &srv, "type", "veth", "peer", "name", &vc, "netns", &cli,
    ]);
    for (ns, dev, v4, v6) in [
        (&srv, &vs, "10.233.0.1/24", "fd00:233::1/64"),
        (&cli, &vc, "10.233.0.2/24", "fd00:233::2/64"),
    ] {
        in_ns(ns, &["ip", "addr", "add", v4, "dev", dev]);
        in_ns(ns, &["ip", "addr", "add", v6, "dev", dev, "nodad"]);
        in_ns(ns, &["ip", "link", "set", dev, "up"]);
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }

    // Someone else's shaping on two other devices of the server namespace.
    let (fa, fb, fc, fd) = (
        format!("fa{id}"),
        format!("fb{id}"),
        format!("fc{id}"),
        format!("fd{id}"),
    );
    for (a, b) in [(&fa, &fb), (&fc, &fd)] {
        in_ns(
            &srv,
            &["ip", "link", "add", a, "type", "veth", "peer", "name", b],
        );
        in_ns(&srv, &["ip", "link", "set", a, "up"]);
        in_ns(&srv, &["ip", "link", "set", b, "up"]);
    }
    for cmd in [
        "qdisc add dev FA root handle 1: htb default 10",
        "class add dev FA parent 1: classid 1:10 htb rate 5mbit",
        "filter add dev FA parent 1: protocol ip prio 1 u32 match ip dport 80 0xffff flowid 1:10",
        "qdisc add dev FA handle ffff: ingress",
        "filter add dev FA parent ffff: protocol ip prio 7 u32 match ip sport 53 0xffff action mirred egress redirect dev FB",
        "qdisc add dev FC root handle 3: tbf rate 1mbit burst 10kb latency 50ms",
    ] {
        let cmd = cmd.replace("FA", &fa).replace("FB", &fb).replace("FC", &fc);
        let mut args = vec!["tc"];
        args.extend(cmd.split_whitespace());
        in_ns(&srv, &args);
    }
    let foreign_before = (tc_state(&srv, &fa), tc_state(&srv, &fc));

    let _server = spawn_helper(&srv, &format!("serve {LIMITED_PORT},{FREE_PORT} 120"));
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| -> PathBuf { tmp.path().join(name) };
    let v4 = |port| SocketAddr::new(SERVER_V4.parse().unwrap(), port);
    let v6 = |port| SocketAddr::new(SERVER_V6.parse().unwrap(), port);

    let shaper = Shaper::new(&vs, DEFAULT_CEILING_BPS, caps).in_netns(&srv);
    let first = shaper.apply(&plan(&desired(Some(8)))).await.unwrap();
    assert!(first.changed());
    println!(
        "first apply: {} ip lines, {} tc lines",
        first.ip_lines.len(),
        first.tc_lines.len()
    );

    let mut figures = Vec::new();
    // Download (server egress) and, where the kernel has IFB, upload: limited next to free.
    let dirs: &[char] = if caps.ingress { &['D', 'U'] } else { &['D'] };
    for &dir in dirs {
        let lim = start_measure(&cli, v4(LIMITED_PORT), dir, 3.5, &out("lim"));
        let free = start_measure(&cli, v4(FREE_PORT), dir, 3.5, &out("free"));
        let lim = mbit(&finish(lim, &out("lim")), 0.8, 3.4);
        let free = mbit(&finish(free, &out("free")), 0.8, 3.4);
        let name = if dir == 'D' { "download" } else { "upload" };
        println!("{name}: limited 8 mbit → {lim:.2} mbit/s, unlimited → {free:.0} mbit/s");
        figures.push(format!("{name} 8 mbit: {lim:.2}; unlimited: {free:.0}"));
        assert_near(&format!("{name} of the limited user"), lim, 8.0);
        assert!(
            free > 4.0 * 8.0,
            "{name} of the unlimited user is only {free:.1} mbit/s"
        );
    }
    if !caps.ingress {
        println!("upload not measured: the kernel lacks ifb/act_mirred/sch_ingress");
    }

    // 8 → 16 mbit on a running download.
    let running = start_measure(&cli, v4(LIMITED_PORT), 'D', 7.0, &out("run"));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let change = shaper.apply(&plan(&desired(Some(16)))).await.unwrap();
    println!("rate change: {:?}", change.tc_lines);
    assert_eq!(
        change.tc_lines.len(),
        if caps.ingress { 2 } else { 1 },
        "a rate change replaces only the user's classes"
    );
    let samples = finish(running, &out("run"));
    let (before, after) = (mbit(&samples, 0.8, 2.7), mbit(&samples, 4.0, 6.9));
    println!("running download: {before:.2} mbit/s at 8, {after:.2} mbit/s after the change to 16");
    figures.push(format!(
        "running download 8 → 16 mbit: {before:.2} → {after:.2}"
    ));
    assert_near("download before the change", before, 8.0);
    assert_near("download after the change", after, 16.0);
    if caps.ingress {
        let up = start_measure(&cli, v4(LIMITED_PORT), 'U', 3.5, &out("up16"));
        let up = mbit(&finish(up, &out("up16")), 0.8, 3.4);
        println!("upload at 16 mbit: {up:.2} mbit/s");
        figures.push(format!("upload 16 mbit: {up:.2}"));
        assert_near("upload at 16 mbit", up, 16.0);
    }
    let six = start_measure(&cli, v6(LIMITED_PORT), 'D', 3.0, &out("v6"));
    let six = mbit(&finish(six, &out("v6")), 0.8, 2.9);
    println!("IPv6 download at 16 mbit: {six:.2} mbit/s");
    figures.push(format!("IPv6 download 16 mbit: {six:.2}"));
    assert_near("IPv6 download at 16 mbit", six, 16.0);

    // Reshaping on the real kernel: a cap with its rest class, a filter moved from the rest
    // class to a user's own (u32 replace by full handle), a changed port (delete + add), and
    // back. Each step must converge: a second apply runs nothing.
    let steps = [
        desired_with(
            Some(200),
            &[
                ("limited", LIMITED_PORT, Some(16)),
                ("free", FREE_PORT, None),
                ("third", 25203, None),
            ],
        ),
        desired_with(
            Some(200),
            &[
                ("limited", LIMITED_PORT, Some(16)),
                ("free", FREE_PORT, Some(50)),
                ("third", 25203, None),
            ],
        ),
        desired_with(
            None,
            &[("limited", 25204, Some(16)), ("free", FREE_PORT, Some(50))],
        ),
        desired(Some(16)),
    ];
    for (i, st) in steps.iter().enumerate() {
        let o = shaper.apply(&plan(st)).await.unwrap();
        println!("reshape step {i}: {:#?}", o.tc_lines);
        assert!(o.changed(), "step {i} ran nothing");
        let again = shaper.apply(&plan(st)).await.unwrap();
        assert!(!again.changed(), "step {i} did not converge: {again:?}");
    }

    // The same plan 100 times: nothing runs, nothing changes but counters.
    let same = plan(&desired(Some(16)));
    let devices = [vs.clone(), shaper.ifb.clone()];
    let state_before: Vec<String> = devices.iter().map(|d| tc_state(&srv, d)).collect();
    let t = Instant::now();
    for i in 0..100 {
        let o = shaper.apply(&same).await.unwrap();
        assert!(!o.changed(), "apply #{i} of an unchanged plan ran {o:?}");
    }
    let per_apply = t.elapsed() / 100;
    let state_after: Vec<String> = devices.iter().map(|d| tc_state(&srv, d)).collect();
    assert_eq!(state_before, state_after, "100 applies changed tc state");
    println!("100 unchanged applies: {per_apply:?} each (read + render, no batch)");
    figures.push(format!("unchanged apply: {per_apply:?}"));

    // Removing the limit restores full speed and removes our qdiscs.
    let removed = shaper.apply(&plan(&desired(None))).await.unwrap();
    println!("removal: {:?}", removed.tc_lines);
    let qdiscs = in_ns(&srv, &["tc", "qdisc", "show", "dev", &vs]);
    assert!(
        !qdiscs.contains("7a6e:") && !qdiscs.contains("ingress"),
        "{qdiscs}"
    );
    let full = start_measure(&cli, v4(LIMITED_PORT), 'D', 2.5, &out("full"));
    let full = mbit(&finish(full, &out("full")), 0.8, 2.4);
    println!("download after removal: {full:.0} mbit/s");
    figures.push(format!("download after removal: {full:.0}"));
    assert!(
        full > 4.0 * 16.0,
        "removal left the user at {full:.1} mbit/s"
    );

    // A foreign root qdisc is refused and left alone; the other devices are untouched.
    let foreign = Shaper::new(&fc, DEFAULT_CEILING_BPS, caps).in_netns(&srv);
    let err = foreign.apply(&plan(&desired(Some(8)))).await.unwrap_err();
    assert!(
        matches!(err, ShapingError::ForeignRootQdisc { .. }),
        "unexpected: {err}"
    );
    println!("foreign root qdisc: {err}");
    let foreign_after = (tc_state(&srv, &fa), tc_state(&srv, &fc));
    assert_eq!(foreign_before, foreign_after, "foreign qdiscs were touched");

    println!(
        "figures ({:.1} s in all):\n  {}",
        started.elapsed().as_secs_f64(),
        figures.join("\n  ")
    );
}

/// The processes inside the namespaces: a server with one listener per port, and a client that
/// records how many bytes arrived when.
mod helper {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::{Instant, timeout_at};

    const CHUNK: usize = 64 * 1024;

    pub fn main(spec: &str) {
        let args: Vec<&str> = spec.split_whitespace().collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        match args.as_slice() {
            ["serve", ports, secs] => rt.block_on(serve(
                ports.split(',').map(|p| p.parse().unwrap()).collect(),
                secs.parse().unwrap(),
            )),
            ["measure", addr, dir, secs, out] => rt.block_on(measure(
                addr.parse().unwrap(),
                dir.chars().next().unwrap(),
                secs.parse().unwrap(),
                out,
            )),
            other => panic!("bad helper spec {other:?}"),
        }
    }

    async fn serve(ports: Vec<u16>, secs: u64) {
        for port in ports {
            // `[::]` is dual-stack on Linux: one listener for IPv4 and IPv6.
            let l = TcpListener::bind(("::", port)).await.unwrap();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    tokio::spawn(connection(s));
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    async fn connection(mut s: TcpStream) {
        let mut cmd = [0u8];
        if s.read_exact(&mut cmd).await.is_err() {
            return;
        }
        match cmd[0] {
            b'D' => {
                let buf = vec![0u8; CHUNK];
                while s.write_all(&buf).await.is_ok() {}
            }
            b'U' => {
                let (mut r, mut w) = s.into_split();
                let total = Arc::new(AtomicU64::new(0));
                let seen = total.clone();
                let reporter = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    loop {
                        tick.tick().await;
                        let n = seen.load(Ordering::Relaxed);
                        if w.write_all(&n.to_be_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; CHUNK];
                while let Ok(n @ 1..) = r.read(&mut buf).await {
                    total.fetch_add(n as u64, Ordering::Relaxed);
                }
                reporter.abort();
            }
            _ => {}
        }
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match TcpStream::connect(addr).await {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn measure(addr: SocketAddr, dir: char, secs: f64, out: &str) {
        let mut s = connect(addr).await;
        s.write_all(&[dir as u8]).await.unwrap();
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        let ms = || start.elapsed().as_millis() as u64;
        let mut samples = vec![(0u64, 0u64)];
        if dir == 'D' {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            let mut last = 0u64;
            while let Ok(Ok(n @ 1..)) = timeout_at(end, s.read(&mut buf)).await {
                total += n as u64;
                let now = ms();
                if now >= last + 50 {
                    samples.push((now, total));
                    last = now;
                }
            }
            samples.push((ms(), total));
        } else {
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move {
                let buf = vec![0u8; CHUNK];
                while let Ok(Ok(())) = timeout_at(end, w.write_all(&buf)).await {}
            });
            let mut word = [0u8; 8];
            while let Ok(Ok(_)) = timeout_at(end, r.read_exact(&mut word)).await {
                samples.push((ms(), u64::from_be_bytes(word)));
            }
            writer.abort();
        }
        let text: String = samples.iter().map(|(t, b)| format!("{t} {b}\n")).collect();
        std::fs::write(out, text).unwrap();
    }
}
