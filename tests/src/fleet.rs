//! [`Fleet`]: one controller and N agents, each agent in its own simulated host, all real
//! processes of this workspace, driven through the real `vpn` CLI.
//!
//! Topology of one fleet (`<id>` is random per fleet):
//!
//! ```text
//!  this machine (root namespace)                 docker network vpn-e2e-<id>
//!  vpn-controller run  0.0.0.0:<udp>  ◀──QUIC── gateway ◀── host h0: pause container (own netns)
//!  vpn (CLI, VPN_CONFIG=<dir>/vpn.toml)                      ├ vpn-agent run (nsenter --net)
//!  sslocal 127.0.0.1:<tcp> ──ss://h0-ip:port──────────────▶  ├ ssserver container (container:h0)
//!                                                            └ hostserver.py 0.0.0.0:8000
//! ```
//!
//! Everything is torn down on drop: processes, the agent's containers (by host-id label and by
//! namespace), the pause containers, the network and the temporary directory. When the test is
//! failing, the logs are printed and the directory is kept (its path is printed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tempfile::TempDir;

use crate::client::{SsLocal, free_udp_port};
use crate::docker::{self, HOST_LABEL, Network};
use crate::env::{self, product_bin};
use crate::host::Host;
use crate::hostserver::HostServer;
use crate::proc::{Proc, tail};
use crate::wait::poll_until;

/// How long the controller may take to answer the CLI after it starts.
pub const CONTROLLER_READY: Duration = Duration::from_secs(30);
/// How long enrolled agents may take to show up online.
pub const AGENTS_ONLINE: Duration = Duration::from_secs(30);
/// The agents' reconnect backoff ceiling (keeps reconnect tests short).
pub const RECONNECT_MAX: &str = "2s";

/// Fleets need root, Docker and fixed names: one at a time per test process. (Across test
/// processes, `.config/nextest.toml` puts these tests in a serial group.)
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the harness-wide lock that serialises tests using Docker and namespaces, then sweeps
/// away what killed test processes left behind ([`docker::sweep_stale`]).
pub fn serial_guard() -> MutexGuard<'static, ()> {
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let problems = docker::sweep_stale();
    if !problems.is_empty() {
        eprintln!("sweeping stale test fleets: {problems:#?}");
    }
    guard
}

/// One row of `vpn servers list -o json` (the fields the tests rely on are not optional).
#[derive(Debug, Clone, Deserialize)]
pub struct ServerRow {
    pub name: String,
    /// Lenient (`null` accepted) so that a server still waiting for enrollment parses too.
    pub host_id: Option<String>,
    pub online: bool,
    pub desired_generation: Option<u64>,
    pub acked_generation: Option<u64>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub enrolled: serde_json::Value,
    #[serde(default)]
    pub last_seen: serde_json::Value,
    #[serde(default)]
    pub cert_not_after: serde_json::Value,
    #[serde(default)]
    pub services: serde_json::Value,
    #[serde(default)]
    pub users: serde_json::Value,
    /// The host's health state (`"online"`, `{"degraded":{"failing":N}}`, …), if reported.
    #[serde(default)]
    pub state: serde_json::Value,
    #[serde(default)]
    pub failing: serde_json::Value,
    #[serde(default)]
    pub warnings: serde_json::Value,
}

impl ServerRow {
    /// A row as `servers list -o json` prints it: a host's fields under `server`, next to its
    /// health (`state`, `failing`, …); a controller without host health prints the fields alone.
    pub fn from_json(mut row: serde_json::Value) -> Result<ServerRow> {
        let detail = row.get("server").is_some_and(|s| s.is_object());
        let mut fields = if detail {
            row.get("server").cloned().unwrap_or_default()
        } else {
            row.clone()
        };
        if detail && let Some(obj) = fields.as_object_mut() {
            for key in ["state", "failing", "warnings", "vitals"] {
                if let Some(v) = row.get_mut(key) {
                    obj.insert(key.into(), v.take());
                }
            }
        }
        serde_json::from_value(fields.clone())
            .with_context(|| format!("a `servers list` row: {fields}"))
    }

    /// `online`, `degraded (N failing)`, `offline` or `pending` as `servers list` shows it;
    /// `online`/`offline` from the flag when the controller reports no state.
    pub fn state_text(&self) -> String {
        match &self.state {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => match o.get("degraded") {
                Some(d) => format!(
                    "degraded ({} failing)",
                    d.get("failing").and_then(|f| f.as_u64()).unwrap_or(0)
                ),
                None => format!("{o:?}"),
            },
            _ if self.online => "online".into(),
            _ => "offline".into(),
        }
    }

    /// `resource: message` of each failing resource.
    pub fn failing_resources(&self) -> Vec<String> {
        self.failing
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        format!(
                            "{}: {}",
                            f.get("resource").and_then(|v| v.as_str()).unwrap_or("?"),
                            f.get("message").and_then(|v| v.as_str()).unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Online and has acknowledged the newest desired state.
    pub fn converged(&self) -> bool {
        self.online
            && self.desired_generation.is_some()
            && self.acked_generation == self.desired_generation
    }
}

/// One simulated host and the agent that runs (or will run) in it.
#[derive(Debug)]
pub struct Agent {
    pub index: usize,
    /// The server's name in the controller (`host-<index>`).
    pub name: String,
    pub host: Host,
    pub data_dir: PathBuf,
    /// Known once enrolled (read from `servers list`).
    pub host_id: Option<String>,
    /// The HTTP server in this host's namespace and the payload it serves.
    pub server: HostServer,
    proc: Option<Proc>,
    log: PathBuf,
}

impl Agent {
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

pub struct Fleet {
    pub id: String,
    root: PathBuf,
    /// `None` once kept for a post-mortem.
    tempdir: Option<TempDir>,
    pub vpn_config: PathBuf,
    pub network: Network,
    pub controller_port: u16,
    controller_dir: PathBuf,
    controller: Option<Proc>,
    pub agents: Vec<Agent>,
    /// Numbers the log files of short-lived clients.
    client_seq: AtomicUsize,
    /// Extra arguments of every `vpn-agent run` (e.g. a shorter `--usage-interval`).
    agent_args: Vec<String>,
    /// Dropped last (after `Drop::drop` cleaned up), releasing the next test.
    _serial: MutexGuard<'static, ()>,
}

/// How long a data-plane change may take to show on a host (container start, manager ready).
pub const DATA_PLANE_SETTLE: Duration = Duration::from_secs(30);

impl Fleet {
    /// Fetches host `i`'s payload through `client` (retrying for [`DATA_PLANE_SETTLE`]) and
    /// checks it byte for byte.
    pub fn assert_payload_through(&self, i: usize, client: &SsLocal) {
        self.assert_payload_by(i, &client.link, || client.fetch_payload());
    }

    /// Retries `fetch` for [`DATA_PLANE_SETTLE`] until it returns host `i`'s payload exactly;
    /// `link` names the way it went in the failure message. Every client of every protocol
    /// proves its tunnel through this one check.
    pub fn assert_payload_by(&self, i: usize, link: &str, fetch: impl Fn() -> Result<Vec<u8>>) {
        let expected = &self.agents[i].server.payload;
        let mut last = String::new();
        let ok = poll_until(DATA_PLANE_SETTLE, || match fetch() {
            Ok(body) if body == *expected => true,
            Ok(body) => {
                last = format!(
                    "got {} bytes that differ from the {} expected",
                    body.len(),
                    expected.len()
                );
                false
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        });
        assert!(
            ok.is_some(),
            "payload of host {i} not fetched through {link} within {DATA_PLANE_SETTLE:?}: {last}"
        );
    }

    /// A controller and `n` enrolled, running, online agents. Panics (with logs) if any step fails.
    pub fn start(n: usize) -> Fleet {
        Fleet::start_with(n, &[])
    }

    /// Like [`Fleet::start`], every agent run with `agent_args` added to its command line.
    pub fn start_with(n: usize, agent_args: &[&str]) -> Fleet {
        env::require_fleet_prerequisites();
        let mut fleet = Fleet::empty().unwrap_or_else(|e| panic!("creating fleet: {e:#}"));
        fleet.agent_args = agent_args.iter().map(|a| a.to_string()).collect();
        fleet.start_controller();
        for _ in 0..n {
            let i = fleet.add_host();
            let join = fleet.new_join_string(&format!("host-{i}"), None);
            let out = fleet.join_agent(i, &join);
            assert!(
                out.status.success(),
                "vpn-agent join for host-{i} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            fleet.start_agent(i);
        }
        fleet.wait_agents_online(AGENTS_ONLINE);
        fleet
    }

    fn empty() -> Result<Fleet> {
        let serial = serial_guard();
        let id = random_hex(4)?;
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("vpn-e2e-{id}-"))
            .tempdir()?;
        let root = tempdir.path().to_path_buf();
        std::fs::create_dir_all(root.join("logs"))?;
        let network = Network::create(&format!("vpn-e2e-{id}"), &id)?;
        Ok(Fleet {
            controller_port: free_udp_port()?,
            vpn_config: root.join("vpn-context.toml"),
            controller_dir: root.join("controller"),
            id,
            root,
            tempdir: Some(tempdir),
            network,
            controller: None,
            agents: Vec::new(),
            client_seq: AtomicUsize::new(0),
            agent_args: Vec::new(),
            _serial: serial,
        })
    }

    /// The fleet's working directory (logs in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Path of the log file called `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    /// The address agents and the CLI dial: the bridge gateway, i.e. this machine.
    pub fn controller_address(&self) -> String {
        format!("{}:{}", self.network.gateway, self.controller_port)
    }

    // ---- controller ------------------------------------------------------------------------

    /// Starts the controller (initialising it on first use) and waits until the CLI gets answers.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        if !self.controller_dir.exists() {
            let out = self
                .command(product_bin("vpn-controller"))
                .arg("init")
                .arg("--data-dir")
                .arg(&self.controller_dir)
                .args(["--listen", &format!("0.0.0.0:{}", self.controller_port)])
                .args(["--public-address", &self.controller_address()])
                .output()
                .unwrap_or_else(|e| panic!("running vpn-controller init: {e}"));
            assert!(
                out.status.success(),
                "vpn-controller init failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                self.vpn_config.exists(),
                "vpn-controller init did not write the CLI context at VPN_CONFIG={}",
                self.vpn_config.display()
            );
        }
        let mut cmd = self.command(product_bin("vpn-controller"));
        cmd.arg("run").arg("--data-dir").arg(&self.controller_dir);
        let log = self.log("controller");
        let mut proc = Proc::spawn("vpn-controller", cmd, &log)
            .unwrap_or_else(|e| panic!("spawning vpn-controller: {e:#}"));
        let ready = poll_until(CONTROLLER_READY, || {
            !proc.is_running()
                || self
                    .vpn(&["servers", "list", "-o", "json"])
                    .status
                    .success()
        });
        let alive = proc.is_running();
        self.controller = Some(proc);
        assert!(
            ready.is_some() && alive,
            "controller did not become ready within {CONTROLLER_READY:?} (running: {alive}):\n{}",
            tail(&log, 40)
        );
    }

    /// Appends `toml` to the controller's `controller.toml` and restarts it to read it (top-level
    /// keys must come before any table the file already has: pass tables like `[[webhooks]]`
    /// last).
    pub fn configure_controller(&mut self, toml: &str) {
        self.stop_controller();
        let path = self.controller_dir.join("controller.toml");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push('\n');
        text.push_str(toml);
        text.push('\n');
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.start_controller();
        self.wait_agents_online(AGENTS_ONLINE);
    }

    /// The controller's data directory.
    pub fn controller_dir(&self) -> &Path {
        &self.controller_dir
    }

    /// Stops the controller (SIGTERM, then SIGKILL after 5 s).
    pub fn stop_controller(&mut self) {
        if let Some(mut p) = self.controller.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    /// Kills the controller outright (SIGKILL).
    pub fn kill_controller(&mut self) {
        if let Some(mut p) = self.controller.take() {
            p.kill();
        }
    }

    // ---- CLI -------------------------------------------------------------------------------

    /// Runs `vpn ARGS` with this fleet's `VPN_CONFIG`.
    pub fn vpn(&self, args: &[&str]) -> Output {
        self.command(product_bin("vpn"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running the vpn CLI: {e}"))
    }

    /// Runs `vpn ARGS`, panics unless it exits 0, returns stdout.
    pub fn vpn_ok(&self, args: &[&str]) -> String {
        let out = self.vpn(args);
        assert!(
            out.status.success(),
            "`vpn {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `vpn servers list -o json`, parsed.
    pub fn servers(&self) -> Result<Vec<ServerRow>> {
        let out = self.vpn(&["servers", "list", "-o", "json"]);
        if !out.status.success() {
            bail!(
                "vpn servers list failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "parsing `vpn servers list -o json`: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?;
        rows.into_iter().map(ServerRow::from_json).collect()
    }

    /// `vpn servers add NAME [--expires E] -o plain`: the join string (first line).
    pub fn new_join_string(&self, name: &str, expires: Option<&str>) -> String {
        let mut args = vec!["servers", "add", name];
        if let Some(e) = expires {
            args.extend(["--expires", e]);
        }
        args.extend(["-o", "plain"]);
        let out = self.vpn_ok(&args);
        let join = out.lines().next().unwrap_or_default().trim().to_string();
        assert!(
            !join.is_empty(),
            "`vpn servers add {name}` printed no join string"
        );
        join
    }

    /// `vpn users link USER -o plain`: one link per line (if a line carries more fields, the
    /// `ss://` one is taken).
    pub fn links(&self, user: &str) -> Vec<String> {
        self.vpn_ok(&["users", "link", user, "-o", "plain"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_whitespace()
                    .find(|f| f.starts_with("ss://"))
                    .unwrap_or(l)
                    .to_string()
            })
            .collect()
    }

    /// The log of agent `i` since it was last started.
    pub fn agent_log_since_start(&self, i: usize) -> String {
        let text = tail(&self.agents[i].log, usize::MAX);
        let marker = "=== harness: starting vpn-agent";
        match text.rfind(marker) {
            Some(at) => text[at..].to_string(),
            None => text,
        }
    }

    /// Waits until every enrolled agent is online and has acked its newest desired state.
    pub fn wait_converged(&self, timeout: Duration) -> Duration {
        let names: Vec<&str> = self
            .agents
            .iter()
            .filter(|a| a.host_id.is_some())
            .map(|a| a.name.as_str())
            .collect();
        let mut last = String::new();
        let took = poll_until(timeout, || match self.servers() {
            Ok(rows) => {
                last = format!("{rows:#?}");
                names
                    .iter()
                    .all(|n| rows.iter().any(|r| r.name == *n && r.converged()))
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        });
        took.unwrap_or_else(|| {
            panic!("agents {names:?} not all online and acked within {timeout:?}; last: {last}")
        })
    }

    fn wait_agents_online(&mut self, timeout: Duration) {
        let names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        let mut rows = Vec::new();
        let ok = poll_until(timeout, || {
            rows = self.servers().unwrap_or_default();
            names
                .iter()
                .all(|n| rows.iter().any(|r| r.name == *n && r.online))
        });
        assert!(
            ok.is_some(),
            "agents {names:?} not all online within {timeout:?}; servers list: {rows:#?}"
        );
        for a in &mut self.agents {
            a.host_id = rows
                .iter()
                .find(|r| r.name == a.name)
                .and_then(|r| r.host_id.clone());
        }
    }

    // ---- hosts and agents ------------------------------------------------------------------

    /// Adds a simulated host (pause container + host server) without enrolling an agent in it.
    pub fn add_host(&mut self) -> usize {
        let i = self.agents.len();
        let host = Host::start(
            &format!("vpn-e2e-{}-h{i}", self.id),
            &self.network,
            &self.id,
        )
        .unwrap_or_else(|e| panic!("starting host {i}: {e:#}"));
        let server = HostServer::start(
            &host,
            &self.root.join(format!("www-{i}")),
            &self.log(&format!("hostserver-{i}")),
        );
        let data_dir = self.root.join(format!("agent-{i}"));
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                // Not yet in `self.agents`, so drop would not remove it.
                let _ = host.remove();
                panic!("starting the host server of host {i}: {e:#}");
            }
        };
        self.agents.push(Agent {
            index: i,
            name: format!("host-{i}"),
            host,
            data_dir,
            host_id: None,
            server,
            proc: None,
            log: self.log(&format!("agent-{i}")),
        });
        i
    }

    /// Runs `vpn-agent join JOIN --data-dir <agent i's dir>` inside host `i`'s namespace.
    pub fn join_agent(&self, i: usize, join: &str) -> Output {
        self.join_agent_into(i, join, &self.agents[i].data_dir)
    }

    /// Like [`Fleet::join_agent`] with another data directory (e.g. to reuse a token).
    pub fn join_agent_into(&self, i: usize, join: &str, data_dir: &Path) -> Output {
        let host = &self.agents[i].host;
        let mut cmd = host.command(product_bin("vpn-agent"));
        self.scrub(&mut cmd);
        cmd.arg("join").arg(join).arg("--data-dir").arg(data_dir);
        cmd.output()
            .unwrap_or_else(|e| panic!("running vpn-agent join: {e}"))
    }

    /// Starts agent `i` inside its host's namespace.
    pub fn start_agent(&mut self, i: usize) {
        let data_dir = self.agents[i].data_dir.clone();
        self.start_agent_in(i, None, &data_dir);
    }

    /// Starts agent `i` with `--data-dir` spelled relative to the fleet's directory, from that
    /// directory (`cd <fleet dir> && vpn-agent run --data-dir agent-<i>`), as an operator might.
    pub fn start_agent_relative(&mut self, i: usize) {
        let relative = self.agents[i]
            .data_dir
            .strip_prefix(&self.root)
            .unwrap_or_else(|_| panic!("agent {i}'s data dir is not under the fleet directory"))
            .to_path_buf();
        let root = self.root.clone();
        self.start_agent_in(i, Some(&root), &Path::new(".").join(relative));
    }

    fn start_agent_in(&mut self, i: usize, cwd: Option<&Path>, data_dir: &Path) {
        let agent = &self.agents[i];
        assert!(agent.proc.is_none(), "agent {i} already running");
        let mut cmd = agent.host.command(product_bin("vpn-agent"));
        self.scrub(&mut cmd);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.arg("run")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--network-mode", &agent.host.network_mode()])
            .args(["--reconnect-max", RECONNECT_MAX])
            .args(&self.agent_args);
        let proc = Proc::spawn(&format!("vpn-agent[{}]", agent.name), cmd, &agent.log)
            .unwrap_or_else(|e| panic!("spawning agent {i}: {e:#}"));
        self.agents[i].proc = Some(proc);
    }

    /// Kills agent `i` (SIGKILL: a crash, nothing is flushed on the way out).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i].proc.take() {
            p.kill();
        }
    }

    /// Whether agent `i`'s process is still running (`false` if it exited or was never started).
    pub fn agent_running(&mut self, i: usize) -> bool {
        self.agents[i].is_running()
    }

    /// Containers the agent of host `i` manages: labelled with its host id, or sharing its
    /// namespace.
    pub fn agent_containers(&self, i: usize) -> Vec<String> {
        let agent = &self.agents[i];
        let mut ids = Vec::new();
        if let Some(h) = &agent.host_id {
            ids.extend(
                docker::containers_with_labels(&[&format!("{HOST_LABEL}={h}")]).unwrap_or_default(),
            );
        }
        ids.extend(
            docker::managed_containers_in_namespace_of(&agent.host.name, &agent.host.id)
                .unwrap_or_default(),
        );
        ids.sort();
        ids.dedup();
        ids
    }

    /// Removes every container the agent of host `i` manages (as a host reboot would lose them).
    pub fn remove_agent_containers(&self, i: usize) {
        let errors = docker::remove_containers(&self.agent_containers(i));
        assert!(
            errors.is_empty(),
            "removing host {i}'s containers: {errors:?}"
        );
    }

    // ---- clients ---------------------------------------------------------------------------

    /// Which agent a `ss://…@HOST:PORT#…` link points at (by host address).
    pub fn agent_for_link(&self, link: &str) -> &Agent {
        let host = link_host(link).unwrap_or_else(|| panic!("cannot read the host of {link}"));
        self.agents
            .iter()
            .find(|a| a.host.ip.to_string() == host)
            .unwrap_or_else(|| {
                let ips: Vec<String> = self.agents.iter().map(|a| a.host.ip.to_string()).collect();
                panic!("link {link} points at {host}, which is none of the hosts {ips:?}")
            })
    }

    /// Starts a shoes client for a `vless://` link, logging into this fleet's log directory.
    pub fn shoes_client(&self, link: &str) -> crate::vless::ShoesClient {
        let n = self.client_seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir().join(format!("shoes-client-{n}"));
        crate::vless::ShoesClient::start(link, &dir, &self.log(&format!("shoes-client-{n}")))
            .unwrap_or_else(|e| panic!("starting the shoes client for {link}: {e:#}"))
    }

    /// Fetches host `i`'s payload through a shoes client (retrying for [`DATA_PLANE_SETTLE`])
    /// and checks it byte for byte.
    pub fn assert_payload_through_vless(&self, i: usize, client: &crate::vless::ShoesClient) {
        let agent = &self.agents[i];
        let target = std::net::SocketAddr::from((agent.host.ip, agent.server.port));
        let link = format!("vless link {}", client.link.name);
        self.assert_payload_by(i, &link, || client.fetch_payload(target));
    }

    /// `vpn services deploy shadowsocks --port PORT --all-servers`, which must succeed.
    pub fn deploy_shadowsocks(&self, port: u16) {
        let port = port.to_string();
        self.vpn_ok(&[
            "services",
            "deploy",
            "shadowsocks",
            "--port",
            &port,
            "--all-servers",
        ]);
    }

    /// `user`'s Shadowsocks links, checked to be one `ss://` link per host; with the host index.
    pub fn ss_links_per_host(&self, user: &str) -> Vec<(usize, String)> {
        let links = self
            .links(user)
            .into_iter()
            .filter(|l| l.starts_with("ss://"));
        self.one_per_host(links, &format!("{user}'s ss:// links"))
    }

    /// `links` with the index of the host each points at, in host order; panics (naming
    /// `what`) unless they cover every host exactly once.
    pub fn one_per_host(
        &self,
        links: impl IntoIterator<Item = String>,
        what: &str,
    ) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = links
            .into_iter()
            .map(|l| (self.agent_for_link(&l).index, l))
            .collect();
        out.sort();
        let hosts: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        let expected: Vec<usize> = (0..self.agents.len()).collect();
        assert_eq!(
            hosts, expected,
            "{what} do not cover every host once: {out:#?}"
        );
        out
    }

    /// Waits up to `bound` until `vpn servers show` of host `i` lists a `repaired` event of
    /// `resource` (`service/NAME`); how long that took. Panics with the events seen otherwise.
    pub fn wait_repaired(&self, i: usize, resource: &str, bound: Duration) -> Duration {
        let name = self.agents[i].name.clone();
        let mut events = Vec::new();
        let took = poll_until(bound, || {
            let out = self.vpn_ok(&["servers", "show", &name, "-o", "json"]);
            let show: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("servers show is not JSON ({e}): {out}"));
            events = show["events"].as_array().cloned().unwrap_or_default();
            events
                .iter()
                .any(|e| e["kind"] == "repaired" && e["resource"] == resource)
        });
        took.unwrap_or_else(|| {
            panic!("no repair of {resource} on {name} recorded within {bound:?}: {events:#?}")
        })
    }

    /// `user`'s bytes on `server` as the controller recorded them (`users usage --by server`).
    pub fn recorded_usage(&self, user: &str, server: &str) -> u64 {
        let out = self.vpn_ok(&["users", "usage", user, "--by", "server", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("users usage is not JSON ({e}): {out}"));
        v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["key"] == server)
            .filter_map(|r| r["total"].as_u64())
            .sum()
    }

    /// One `sslocal` per Shadowsocks link of `user`, indexed by host.
    pub fn ss_clients(&self, user: &str) -> Vec<(usize, SsLocal)> {
        self.ss_links_per_host(user)
            .into_iter()
            .map(|(i, link)| (i, self.sslocal(&link)))
            .collect()
    }

    /// Starts an `sslocal` for `link`, logging into this fleet's log directory.
    pub fn sslocal(&self, link: &str) -> SsLocal {
        let n = self.client_seq.fetch_add(1, Ordering::Relaxed);
        SsLocal::start(link, &self.log(&format!("sslocal-{n}")))
            .unwrap_or_else(|e| panic!("starting sslocal: {e:#}"))
    }

    /// A command for one of the product binaries: VPN_* of the caller's environment removed,
    /// this fleet's VPN_CONFIG set, RUST_LOG defaulted to `info`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.scrub(&mut cmd);
        cmd
    }

    fn scrub(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VPN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("VPN_CONFIG", &self.vpn_config);
        // Plain-text logs: they are read by people and grepped by tests.
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
    }

    /// Text of all product logs (controller and agents) — for asserting that a reason was logged.
    pub fn product_logs(&self) -> String {
        let mut all = tail(&self.log("controller"), 100_000);
        for a in &self.agents {
            all.push('\n');
            all.push_str(&tail(&a.log, 100_000));
        }
        all
    }

    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("logs")) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            eprintln!("----- {} (last 80 lines) -----", p.display());
            eprintln!("{}", tail(&p, 80));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        // Agents first, so nothing recreates the containers we are about to remove.
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
        self.kill_controller();
        let mut problems = Vec::new();
        for i in 0..self.agents.len() {
            self.agents[i].server.proc.kill();
            problems.extend(docker::remove_containers(&self.agent_containers(i)));
            if let Err(e) = self.agents[i].host.remove() {
                problems.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.network.remove() {
            problems.push(format!("{e:#}"));
        }
        if !problems.is_empty() {
            eprintln!("fleet {}: clean-up problems: {problems:#?}", self.id);
        }
        if failing {
            self.print_logs();
        }
        // VPN_E2E_KEEP=1 keeps the directory of a passing test too, for a look around.
        if (failing || std::env::var_os("VPN_E2E_KEEP").is_some_and(|v| v == "1"))
            && let Some(dir) = self.tempdir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "fleet {}: logs and state kept in {}",
                self.id,
                kept.display()
            );
        }
    }
}

/// `HOST` of `ss://USERINFO@HOST:PORT#TAG` (IPv6 brackets removed).
pub fn link_host(link: &str) -> Option<String> {
    let rest = link.split('#').next()?;
    let (_, hostport) = rest.rsplit_once('@')?;
    let hostport = hostport.split(['/', '?']).next()?;
    let (host, _port) = hostport.rsplit_once(':')?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_host_reads_sip002_hosts() {
        assert_eq!(
            link_host("ss://YWVzOnB3@172.18.0.2:20000#alice%20h0").as_deref(),
            Some("172.18.0.2")
        );
        assert_eq!(
            link_host("ss://YWVzOnB3@[2001:db8::1]:1/?plugin=x#t").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(link_host("not a link"), None);
    }
}
