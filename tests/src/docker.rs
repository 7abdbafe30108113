//! The `docker` CLI, driven through `std::process` (the harness is a test tool: it wants exactly
//! what an operator would type, and needs no Docker API client).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Label put on every network and container the harness creates, valued with the fleet's id.
pub const FLEET_LABEL: &str = "vpn-e2e.fleet";
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
        docker(&[
            "network", "create", "--driver", "bridge", "--label", &label, name,
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
