//! The `docker` CLI, driven through `std::process` (the harness is a test tool: it wants exactly
//! what an operator would type, and needs no Docker API client).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Label put on every network and container the harness creates, valued with the fleet's id.
pub const FLEET_LABEL: &str = "vpn-e2e.fleet";
/// Label on each fleet network: the pid of the test process that owns it (see [`sweep_stale`]).
pub const OWNER_LABEL: &str = "vpn-e2e.owner-pid";
/// Label the agent puts on the containers it manages, valued with its host id.
pub const HOST_LABEL: &str = "vpn-fleet.host";
/// Label the agent puts on every container it manages.
pub const MANAGED_BY: &str = "vpn-fleet.managed-by=vpn-agent";

/// Runs `docker ARGS` and returns its trimmed stdout, or an error carrying its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A user-defined bridge network of one fleet; removed by [`Network::remove`].
#[derive(Debug)]
pub struct Network {
    pub name: String,
    /// The host side of the bridge: where a namespace reaches the controller.
    pub gateway: Ipv4Addr,
}

impl Network {
    /// Creates `name` (Docker picks a free subnet) and reads its gateway.
    pub fn create(name: &str, fleet_id: &str) -> Result<Network> {
        let label = format!("{FLEET_LABEL}={fleet_id}");
        let owner = format!("{OWNER_LABEL}={}", std::process::id());
        docker(&[
            "network", "create", "--driver", "bridge", "--label", &label, "--label", &owner, name,
        ])?;
        let gw = docker(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            name,
        ])?;
        let gateway = gw
            .split_whitespace()
            .find_map(|g| g.parse::<Ipv4Addr>().ok())
            .with_context(|| format!("network {name} has no IPv4 gateway (got {gw:?})"))?;
        Ok(Network {
            name: name.to_string(),
            gateway,
        })
    }

    /// Removes the network; containers attached to it must be gone first.
    pub fn remove(&self) -> Result<()> {
        docker(&["network", "rm", &self.name]).map(|_| ())
    }
}

/// Ids of all containers (running or not) matching every `label` filter.
pub fn containers_with_labels(labels: &[&str]) -> Result<Vec<String>> {
    let filters: Vec<String> = labels.iter().map(|l| format!("label={l}")).collect();
    let mut args: Vec<&str> = vec!["ps", "-aq", "--no-trunc"];
    for f in &filters {
        args.push("--filter");
        args.push(f);
    }
    Ok(docker(&args)?
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Agent-managed containers that share the network namespace of container `holder` (matched by
/// name or id in their `container:` network mode), whatever host id they are labelled with.
pub fn managed_containers_in_namespace_of(
    holder_name: &str,
    holder_id: &str,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for id in containers_with_labels(&[MANAGED_BY])? {
        let mode = docker(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", &id])
            .unwrap_or_default();
        let Some(target) = mode.strip_prefix("container:") else {
            continue;
        };
        if target == holder_name || target == holder_id {
            found.push(id);
        }
    }
    Ok(found)
}

/// Force-removes containers; errors are collected, not fatal (clean-up goes on).
pub fn remove_containers(ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| docker(&["rm", "-f", "-v", id]).err().map(|e| e.to_string()))
        .collect()
}

/// Removes what earlier test processes left behind when they were killed before their clean-up
/// ran: every fleet network whose owner process is gone, its host containers and the agent
/// containers in their namespaces. (Their processes died with them: see `proc::Proc::spawn`.)
pub fn sweep_stale() -> Vec<String> {
    let mut problems = Vec::new();
    let format =
        format!("{{{{.Name}}}} {{{{.Label \"{FLEET_LABEL}\"}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}");
    let filter = format!("label={FLEET_LABEL}");
    let listing = match docker(&["network", "ls", "--filter", &filter, "--format", &format]) {
        Ok(l) => l,
        Err(e) => return vec![e.to_string()],
    };
    for line in listing.lines() {
        let mut f = line.split_whitespace();
        let (Some(net), Some(fleet), owner) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let alive = owner
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if alive {
            continue;
        }
        let hosts =
            containers_with_labels(&[&format!("{FLEET_LABEL}={fleet}")]).unwrap_or_default();
        for host in &hosts {
            let name = docker(&["inspect", "--format", "{{.Name}}", host]).unwrap_or_default();
            let managed = managed_containers_in_namespace_of(name.trim_start_matches('/'), host)
                .unwrap_or_default();
            problems.extend(remove_containers(&managed));
        }
        problems.extend(remove_containers(&hosts));
        if let Err(e) = docker(&["network", "rm", net]) {
            problems.push(e.to_string());
        }
    }
    problems
}
