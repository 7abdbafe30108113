//! The ansible roles of `ansible/` run for real: `ansible-playbook ansible/site.yml` installs a
//! controller and two agents on three simulated hosts, enrolls the agents with join strings from
//! `vpn servers add` on the controller host, and starts everything with the units of
//! `deploy/systemd/` under systemd; the agents then show online, come back after their daemons
//! are killed, and a second run of the same playbook changes nothing. Last, a host that lost its
//! data directory is refused with advice, then enrolled again with `vpn_agent_reenroll=true`.
//!
//! The hosts are containers whose PID 1 is systemd (`vpn-fleet/systemd-host:local`, built from
//! `deploy/images/systemd-host/build.sh`; this machine's own PID 1 is not systemd), each with
//! its own file system, network namespace and address on a bridge network of the test, reached
//! by ansible's `community.docker.docker` connection. What differs from real hosts, and why:
//! their `/usr` is this machine's, read-only (no registry to pull a Debian image from; the roles
//! install into `/usr/local`, a tmpfs); the agents' Docker is this machine's engine, through its
//! socket; no VPN service is deployed (the agents' containers would join this machine's
//! network, not the simulated host's). The agents run with their firewall and shaping on, inside
//! their own network namespaces.
//!
//! Needs root, Docker and `ansible-playbook` with the `community.docker` collection (the
//! PyPI package `ansible`, installed by `deploy/scripts/setup.sh`).

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test: a failed unwrap is a failure with its message, stderr is its report"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vpn_e2e::docker::Network;
use vpn_e2e::env::{self, product_bin, workspace_root};
use vpn_e2e::fleet::{ServerRow, serial_guard};
use vpn_e2e::install::{SYSTEMD_HOST_IMAGE, SystemdHost, skip, tool_or_skip};
use vpn_e2e::wait::poll_until;

const TEST: &str = "playbook_installs_controller_and_agents_online_and_a_rerun_changes_nothing";
const AGENTS: [&str; 2] = ["fra-1", "ams-1"];
/// One playbook run may take this long (most of it copying the debug binaries).
const PLAYBOOK_TIMEOUT: &str = "600";
/// CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21): the agent unit's bounding set.
const AGENT_CAPS: u64 = (1 << 12) | (1 << 19) | (1 << 21);

/// The simulated hosts and their network, removed on drop (hosts first), or kept with
/// `VPN_E2E_KEEP=1` for a post-mortem.
struct Lab {
    /// The controller's host first, then one per name of [`AGENTS`].
    hosts: Vec<SystemdHost>,
    network: Network,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("VPN_E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("VPN_E2E_KEEP: kept {}", dir.keep().display());
            }
            self.hosts.drain(..).for_each(SystemdHost::keep);
            return;
        }
        self.hosts.clear();
        let _ = self.network.remove();
    }
}

impl Lab {
    fn start(id: &str) -> Lab {
        let network = Network::create(&format!("vpn-ans-{id}"), id)
            .unwrap_or_else(|e| panic!("creating the test network: {e:#}"));
        let mut lab = Lab {
            hosts: Vec::new(),
            network,
            dir: Some(
                tempfile::Builder::new()
                    .prefix(&format!("vpn-ans-{id}-"))
                    .tempdir()
                    .unwrap(),
            ),
        };
        let names = std::iter::once("ctl").chain(AGENTS);
        for (i, name) in names.enumerate() {
            let host = SystemdHost::start(&format!("vpn-ans-{id}-{name}"), &lab.network, id, i > 0)
                .unwrap_or_else(|e| panic!("starting host {name}: {e:#}"));
            lab.hosts.push(host);
        }
        for h in &lab.hosts {
            h.wait_booted().unwrap_or_else(|e| panic!("{e:#}"));
        }
        lab
    }

    fn controller(&self) -> &SystemdHost {
        &self.hosts[0]
    }

    fn agents(&self) -> &[SystemdHost] {
        &self.hosts[1..]
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/tmp"), |d| d.path())
    }

    /// The inventory: the example's groups, these containers as hosts.
    fn write_inventory(&self) -> PathBuf {
        let mut inv = String::from("[vpn_controllers]\n");
        inv += &format!(
            "ctl ansible_host={} vpn_controller_public_address={}:7443\n\n[vpn_agents]\n",
            self.controller().name,
            self.controller().ip
        );
        for (name, host) in AGENTS.iter().zip(self.agents()) {
            inv += &format!("{name} ansible_host={} vpn_agent_name={name}\n", host.name);
        }
        inv += &format!(
            "\n[all:vars]\nansible_connection=community.docker.docker\n\
             ansible_python_interpreter=/usr/bin/python3\nvpn_binaries_dir={}\n",
            env::bin_dir().display()
        );
        let path = self.dir().join("inventory.ini");
        std::fs::write(&path, inv).unwrap();
        path
    }

    /// `vpn servers list -o json` on the controller host, as the role left its CLI context.
    fn servers(&self) -> Vec<ServerRow> {
        let out = self
            .controller()
            .exec_ok(&["/usr/local/bin/vpn", "servers", "list", "-o", "json"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("servers list -o json: {e}: {out}"));
        rows.into_iter()
            .map(|r| ServerRow::from_json(r).unwrap())
            .collect()
    }

    fn journals(&self) -> String {
        let mut all = format!(
            "--- {} vpn-controller:\n{}",
            self.controller().name,
            self.controller().journal("vpn-controller")
        );
        for h in self.agents() {
            all += &format!("--- {} vpn-agent:\n{}", h.name, h.journal("vpn-agent"));
        }
        all
    }
}

/// Per host of a PLAY RECAP: `ok`, `changed`, `unreachable`, `failed`, … as numbers.
fn recap(log: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut hosts = BTreeMap::new();
    let Some((_, tail)) = log.rsplit_once("PLAY RECAP") else {
        return hosts;
    };
    for line in tail.lines().skip(1) {
        let Some((host, counts)) = line.split_once(" : ") else {
            continue;
        };
        let counts = counts
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        hosts.insert(host.trim().to_string(), counts);
    }
    hosts
}

/// A PLAY RECAP: per host, `ok`, `changed`, `unreachable`, `failed`, … as numbers.
type Recap = BTreeMap<String, BTreeMap<String, u64>>;

/// One run of `ansible-playbook site.yml` with `extra` arguments; its log is kept in the lab's
/// directory as `name.log` and printed.
fn run_playbook(
    playbook: &Path,
    inventory: &Path,
    lab: &Lab,
    name: &str,
    extra: &[&str],
) -> (bool, String, Recap) {
    let ansible = workspace_root().join("ansible");
    let log = lab.dir().join(format!("{name}.log"));
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg(PLAYBOOK_TIMEOUT)
        .arg(playbook)
        .arg("-i")
        .arg(inventory)
        .args(extra)
        .arg(ansible.join("site.yml"))
        .current_dir(&ansible)
        .env("ANSIBLE_CONFIG", ansible.join("ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", lab.dir().join("ansible-tmp"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", playbook.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&log, &text).unwrap();
    eprintln!("{text}");
    eprintln!(
        "ansible-playbook {name} {extra:?}: {} in {:.1} s (log {})",
        out.status,
        started.elapsed().as_secs_f64(),
        log.display()
    );
    let recap = recap(&text);
    (out.status.success(), text, recap)
}

/// [`run_playbook`] that must succeed on `hosts` hosts; panics with the log and journals if not.
fn run_ok(
    playbook: &Path,
    inventory: &Path,
    lab: &Lab,
    name: &str,
    extra: &[&str],
    hosts: usize,
) -> (String, Recap) {
    let (ok, text, recap) = run_playbook(playbook, inventory, lab, name, extra);
    assert!(
        ok && recap.len() == hosts,
        "ansible-playbook {name} failed or did not reach {hosts} hosts:\n{text}\n{}",
        lab.journals()
    );
    (text, recap)
}

#[test]
fn playbook_installs_controller_and_agents_online_and_a_rerun_changes_nothing() {
    let _serial = serial_guard();
    env::require_root();
    env::require_docker();
    let Some(playbook) = tool_or_skip(
        TEST,
        "ansible-playbook",
        "`python3 -m pip install ansible` (ansible-core and the community.docker collection)",
    ) else {
        return;
    };
    let collection = Command::new(playbook.with_file_name("ansible-doc"))
        .args(["-t", "connection", "community.docker.docker"])
        .output();
    if !collection.as_ref().is_ok_and(|o| o.status.success()) {
        skip(
            TEST,
            "the community.docker collection is missing: `python3 -m pip install ansible`, \
             or run deploy/scripts/setup.sh",
        );
        return;
    }
    for bin in ["vpn-controller", "vpn-agent", "vpn"] {
        product_bin(bin);
    }
    env::require_image(SYSTEMD_HOST_IMAGE, "deploy/images/systemd-host/build.sh");

    let id = format!("{:x}", std::process::id());
    let lab = Lab::start(&id);
    let inventory = lab.write_inventory();

    // First run: everything is installed and started.
    let hosts = 1 + AGENTS.len();
    let (_, first) = run_ok(&playbook, &inventory, &lab, "run1", &[], hosts);
    for (host, counts) in &first {
        assert!(
            counts.get("changed").copied().unwrap_or(0) > 0,
            "first run changed nothing on {host}: {counts:?}"
        );
    }
    let online = poll_until(Duration::from_secs(30), || {
        let rows = lab.servers();
        AGENTS
            .iter()
            .all(|a| rows.iter().any(|r| r.name == *a && r.online))
    });
    assert!(
        online.is_some(),
        "agents not online after the playbook: {:?}\n{}",
        lab.servers(),
        lab.journals()
    );

    // The daemons run as the units say: the controller as its own user without capabilities,
    // the agent as root with exactly its three.
    let (user, caps) = main_process(lab.controller(), "vpn-controller");
    assert_eq!(user, "vpn-controller", "controller's user");
    assert_eq!(caps, 0, "controller's effective capabilities: {caps:#x}");
    for h in lab.agents() {
        let (user, caps) = main_process(h, "vpn-agent");
        assert_eq!(user, "root", "{}: agent's user", h.name);
        assert_eq!(
            caps, AGENT_CAPS,
            "{}: agent's effective capabilities {caps:#x}, want {AGENT_CAPS:#x}",
            h.name
        );
        // In the unit's mount namespace the forwarding switch (WireGuard) is writable and the
        // rest of /proc/sys is not.
        let pid = main_pid(h, "vpn-agent").to_string();
        let probe = "test -w /proc/sys/net/ipv4/ip_forward \
                     && ! test -w /proc/sys/net/ipv4/tcp_syncookies";
        let sysctl = h
            .exec(&["nsenter", "-t", &pid, "-m", "sh", "-c", probe])
            .unwrap();
        assert!(
            sysctl.status.success(),
            "{}: in vpn-agent's mount namespace ip_forward is not writable, or all of \
             /proc/sys is ({}): {}",
            h.name,
            sysctl.status,
            String::from_utf8_lossy(&sysctl.stderr)
        );
        // Its firewall worked inside the sandbox: its own table in the host's namespace.
        let table = h
            .exec(&["nft", "list", "table", "inet", "vpn_agent"])
            .unwrap();
        assert!(
            table.status.success(),
            "{}: no nftables table inet vpn_agent: {}\n{}",
            h.name,
            String::from_utf8_lossy(&table.stderr),
            h.journal("vpn-agent")
        );
    }

    // The restart policies: a daemon killed outright is started again by systemd, and the
    // agents come back online.
    for (host, unit) in [
        (lab.controller(), "vpn-controller"),
        (&lab.agents()[0], "vpn-agent"),
    ] {
        let before = main_pid(host, unit);
        host.exec_ok(&["systemctl", "kill", "--signal=SIGKILL", unit])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let back = poll_until(Duration::from_secs(60), || {
            let now = main_pid(host, unit);
            now != 0 && now != before
        });
        assert!(
            back.is_some(),
            "{}: {unit} not restarted within 60 s after SIGKILL:\n{}",
            host.name,
            host.journal(unit)
        );
        eprintln!("{}: {unit} killed, restarted by systemd", host.name);
    }
    let online = poll_until(Duration::from_secs(60), || {
        let rows = lab.servers();
        AGENTS
            .iter()
            .all(|a| rows.iter().any(|r| r.name == *a && r.online))
    });
    assert!(
        online.is_some(),
        "agents not back online after the restarts: {:?}\n{}",
        lab.servers(),
        lab.journals()
    );

    // Second run: nothing to change anywhere, and the fleet is as it was.
    let (log, second) = run_ok(&playbook, &inventory, &lab, "run2", &[], hosts);
    for (host, counts) in &second {
        assert_eq!(
            counts.get("changed").copied(),
            Some(0),
            "second run changed {host}: {counts:?}\n{log}"
        );
    }
    let rows = lab.servers();
    assert_eq!(rows.len(), AGENTS.len(), "servers: {rows:?}");
    for a in AGENTS {
        assert!(
            rows.iter().any(|r| r.name == a && r.online),
            "{a} not online after the second run: {rows:?}"
        );
    }

    // A host that lost its data directory while the controller still knows its name: the
    // play stops and says what to do; with vpn_agent_reenroll=true it enrolls the host again.
    let (lost_name, lost) = (AGENTS[1], &lab.agents()[1]);
    let old_id = rows
        .iter()
        .find(|r| r.name == lost_name)
        .and_then(|r| r.host_id.clone());
    lost.exec_ok(&["systemctl", "stop", "vpn-agent"]).unwrap();
    lost.exec_ok(&["rm", "-rf", "/var/lib/vpn-agent"]).unwrap();
    let (ok, text, _) = run_playbook(&playbook, &inventory, &lab, "lost", &["--limit", lost_name]);
    assert!(
        !ok && text.contains("vpn_agent_reenroll=true") && text.contains("already exists"),
        "a host without its data directory was not stopped with advice:\n{text}"
    );
    run_ok(
        &playbook,
        &inventory,
        &lab,
        "reenroll",
        &["--limit", lost_name, "-e", "vpn_agent_reenroll=true"],
        1,
    );
    let rows = lab.servers();
    let again = rows.iter().find(|r| r.name == lost_name);
    assert!(
        again.is_some_and(|r| r.online && r.host_id.is_some() && r.host_id != old_id),
        "{lost_name} not online under a new identity after re-enrolling (was {old_id:?}): {rows:?}"
    );
}

/// The main process of `unit` as systemd knows it (0: none).
fn main_pid(host: &SystemdHost, unit: &str) -> u32 {
    host.exec_ok(&["systemctl", "show", "-P", "MainPID", unit])
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

/// The user and effective capabilities of a unit's main process, from systemd and /proc.
fn main_process(host: &SystemdHost, unit: &str) -> (String, u64) {
    let pid = main_pid(host, unit);
    assert!(
        pid != 0,
        "{}: {unit} has no main process:\n{}",
        host.name,
        host.journal(unit)
    );
    let status = host
        .exec_ok(&["cat", &format!("/proc/{pid}/status")])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .to_string()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    let user = host
        .exec_ok(&["getent", "passwd", &uid])
        .unwrap_or_else(|e| panic!("{e:#}"));
    (user.split(':').next().unwrap_or_default().to_string(), caps)
}
