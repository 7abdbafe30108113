//! A simulated VPN host: one `vpn-fleet/pause:local` container on the fleet's bridge network.
//!
//! The container does nothing but hold a network namespace with its own address. The agent and
//! the host's HTTP server run on this machine but *inside* that namespace (`nsenter --net`), and
//! the agent's service containers join it with Docker's `container:NAME` network mode, so from
//! the network's point of view everything of one host lives at one IP.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::docker::{FLEET_LABEL, Network, docker};
use crate::env::PAUSE_IMAGE;

#[derive(Debug)]
pub struct Host {
    /// Container name; also what the agent's `--network-mode container:NAME` names.
    pub name: String,
    /// Full container id.
    pub id: String,
    /// Pid of the container's init process, whose namespace we enter.
    pub pid: u32,
    /// The host's address on the fleet network: what clients dial, and what the controller sees.
    pub ip: Ipv4Addr,
}

impl Host {
    /// Starts the pause container `name` on `network`.
    pub fn start(name: &str, network: &Network, fleet_id: &str) -> Result<Host> {
        let label = format!("{FLEET_LABEL}={fleet_id}");
        let id = docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            &network.name,
            "--label",
            &label,
            PAUSE_IMAGE,
        ])?;
        let info = docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &id,
        ])?;
        let mut parts = info.split_whitespace();
        let pid = parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| *p > 0)
            .with_context(|| format!("container {name} has no running pid ({info:?})"))?;
        let ip = parts
            .find_map(|p| p.parse::<Ipv4Addr>().ok())
            .with_context(|| format!("container {name} has no IPv4 address ({info:?})"))?;
        Ok(Host {
            name: name.to_string(),
            id,
            pid,
            ip,
        })
    }

    /// `/proc/PID/ns/net` of the host's namespace.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// A command that runs `program` inside this host's network namespace. `nsenter` execs the
    /// program (no fork is needed for a network namespace), so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Docker network mode for containers that must share this host's namespace.
    pub fn network_mode(&self) -> String {
        format!("container:{}", self.name)
    }

    /// Cuts this one host off the network (its `eth0` down: controller and clients alike) until
    /// [`Partition::heal`], which brings the link and the default route back.
    pub fn partition(&self) -> Result<Partition<'_>> {
        let route = self.run_ip(&["route", "show", "default"])?;
        self.run_ip(&["link", "set", "eth0", "down"])?;
        Ok(Partition {
            host: self,
            route: route.trim().to_string(),
        })
    }

    fn run_ip(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command("ip")
            .args(args)
            .output()
            .context("running ip")?;
        if !out.status.success() {
            anyhow::bail!(
                "ip {} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Force-removes the pause container.
    pub fn remove(&self) -> Result<()> {
        docker(&["rm", "-f", "-v", &self.id]).map(|_| ())
    }
}

/// A host cut off by [`Host::partition`].
#[derive(Debug)]
pub struct Partition<'a> {
    host: &'a Host,
    /// `ip route show default` before the cut: a downed link loses its routes.
    route: String,
}

impl Partition<'_> {
    /// Brings the link up and the default route back.
    pub fn heal(self) -> Result<()> {
        self.host.run_ip(&["link", "set", "eth0", "up"])?;
        if !self.route.is_empty() {
            let mut args = vec!["route", "replace"];
            args.extend(self.route.split_whitespace());
            self.host.run_ip(&args)?;
        }
        Ok(())
    }
}
