//! A lone `vpn-controller` process on loopback whose store a test may seed in SQL while it is
//! stopped (stories at a scale the CLI would take minutes to build), and the `vpn` CLI that
//! reaches it. No agents, no root, no Docker: fleets of real agents are [`crate::fleet`]'s.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::client::free_udp_port;
use crate::env::product_bin;
use crate::proc::{Proc, tail};
use crate::wait::poll_until;

/// A debug-build controller needs a few seconds to start on a loaded machine.
const READY: Duration = Duration::from_secs(30);

/// `vpn-controller init` done in a temporary directory; running while `proc` is set.
pub struct LoneController {
    dir: TempDir,
    address: String,
    proc: Option<Proc>,
}

impl LoneController {
    /// `vpn-controller init` on a free loopback port; not started.
    pub fn init(prefix: &str) -> LoneController {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let port = free_udp_port().unwrap_or_else(|e| panic!("a free UDP port: {e}"));
        let address = format!("127.0.0.1:{port}");
        let c = LoneController {
            dir,
            address,
            proc: None,
        };
        let out = c
            .command(product_bin("vpn-controller"))
            .arg("init")
            .arg("--data-dir")
            .arg(c.data_dir())
            .args(["--listen", &c.address, "--public-address", &c.address])
            .output()
            .unwrap_or_else(|e| panic!("running vpn-controller init: {e}"));
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    /// The store's SQLite file (seed it only while the controller is stopped).
    pub fn db(&self) -> PathBuf {
        self.data_dir().join("controller.db")
    }

    /// The CLI context `init` wrote.
    pub fn context_path(&self) -> PathBuf {
        self.dir.path().join("vpn.toml")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("controller.log")
    }

    /// The running controller's process id.
    pub fn pid(&self) -> u32 {
        match &self.proc {
            Some(p) => p.pid(),
            None => panic!("the controller is not running"),
        }
    }

    /// `vpn-controller run`, returning once `vpn status` gets an answer.
    pub fn start(&mut self) {
        let mut cmd = self.command(product_bin("vpn-controller"));
        cmd.arg("run").arg("--data-dir").arg(self.data_dir());
        let mut proc = Proc::spawn("vpn-controller", cmd, &self.log())
            .unwrap_or_else(|e| panic!("starting the controller: {e}"));
        let ready = poll_until(READY, || {
            !proc.is_running() || self.vpn(&["status", "-o", "json"]).status.success()
        });
        assert!(
            ready.is_some() && proc.is_running(),
            "the controller did not answer within {READY:?}:\n{}",
            tail(&self.log(), 40)
        );
        self.proc = Some(proc);
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    /// `vpn ARGS` against this controller.
    pub fn vpn(&self, args: &[&str]) -> Output {
        self.command(product_bin("vpn"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running vpn {args:?}: {e}"))
    }

    /// A product command with the caller's `VPN_*` removed and this controller's CLI context.
    fn command(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VPN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("VPN_CONFIG", self.context_path());
        cmd
    }
}

impl Drop for LoneController {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Anonymous resident memory of a process (`RssAnon`, bytes): its heap, not the store's
/// memory-mapped file pages.
pub fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no RssAnon in /proc/{pid}/status"))
}
