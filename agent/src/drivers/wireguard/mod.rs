//! WireGuard (SPEC §2.4): one container per service runs the interface — the kernel module
//! when the host has it, else userspace `wireguard-go` — and the agent changes peers one by one
//! with `wg set` through Docker exec, never reconfiguring the whole interface.
//!
//! - [`Wireguard`]: the [`Driver`] the applier sees.
//! - [`render`]: the container and its start script (pure).
//! - [`wg`]: dump parsing, the peer plan and the `wg set` command lines (pure).
//! - [`exec`]: running a command in the container through bollard.
//!
//! The host's interface key arrives in the service's options (the controller makes one per
//! host and service); users arrive as [`Credential::Wireguard`] with their public key,
//! preshared key and allowed IPs only. Counters come from `wg show IF dump` (per peer, and
//! reset when a peer is re-added: reported as `counters_restarted`).

pub mod exec;
pub mod wg;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;
use tracing::{info, warn};
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, WireguardOptions,
};
use vpn_shared::proto::ResourceResult;
use vpn_shared::wireguard::Subnet;

use self::wg::Peer;
use super::{
    Bytes, Counters, Driver, DriverError, Rendered, RunFile, ServiceCtx, UserCounter, UsersReport,
    service_resource, user_resource,
};
use crate::apply::docker::ContainerSpec;

/// Image used when the service names none; built locally by `deploy/images/wireguard`.
pub const DEFAULT_IMAGE: &str = "vpn-fleet/wireguard:local";
/// Label with a digest of the start script and the interface key (read only at start).
pub const LABEL_CONFIG: &str = "vpn-fleet.config-sha256";
/// The start script's name in the run directory.
pub const START_FILE: &str = "start.sh";
/// The interface private key's name in the run directory (mode 0600, as every run file).
pub const KEY_FILE: &str = "private.key";
/// How long one `wg` command may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

/// The WireGuard driver. It holds the Docker connection its `wg` commands go through, made
/// on first use.
#[derive(Debug, Default)]
pub struct Wireguard {
    docker: OnceCell<bollard::Docker>,
}

impl Wireguard {
    pub const fn new() -> Wireguard {
        Wireguard {
            docker: OnceCell::const_new(),
        }
    }

    async fn docker(&self, service: &str) -> Result<&bollard::Docker, DriverError> {
        self.docker
            .get_or_try_init(|| async {
                crate::apply::docker::Docker::connect()
                    .await
                    .map(|d| d.client().clone())
            })
            .await
            .map_err(|e| DriverError::Engine {
                service: service.to_owned(),
                message: e.to_string(),
            })
    }
}

/// The service's WireGuard options, or why it has none.
pub fn options_of(service: &ServiceSpec) -> Result<&WireguardOptions, DriverError> {
    match &service.options {
        ServiceOptions::Wireguard(o) => Ok(o),
        _ => Err(DriverError::WrongOptions {
            service: service.name.clone(),
        }),
    }
}

/// The interface of a service: `wg0` for the service named `wireguard` (the default), else
/// `wg-` and the sanitized name, or `wg-` and a hash where that would pass Linux's 15 bytes.
pub fn interface_name(service: &str) -> String {
    if service == "wireguard" {
        return "wg0".into();
    }
    let clean: String = service
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if clean.len() <= 12 {
        return format!("wg-{clean}");
    }
    let d = ring::digest::digest(&ring::digest::SHA256, service.as_bytes());
    format!("wg-{}", hex::encode(&d.as_ref()[..4]))
}

fn invalid(service: &ServiceSpec, field: &'static str, reason: impl Into<String>) -> DriverError {
    DriverError::Invalid {
        service: service.name.clone(),
        field,
        reason: reason.into(),
    }
}

/// The start script of a service (pure): brings the interface up with the server's tunnel
/// addresses, listen port, key and MTU, then waits. The kernel module is used when `ip link
/// add … type wireguard` works (the module is loaded on the host), else `wireguard-go`; setting
/// `VPN_WG_USERSPACE=1` in the container forces userspace. Peers are not in it: the agent adds
/// them with `wg set` once the interface answers.
pub fn start_script(service: &ServiceSpec, run_dir: &Path) -> Result<String, DriverError> {
    let o = options_of(service)?;
    let subnet = Subnet::parse(&o.subnet).map_err(|e| invalid(service, "subnet", e.to_string()))?;
    let v6 = o
        .ipv6_subnet
        .as_deref()
        .map(Subnet::parse)
        .transpose()
        .map_err(|e| invalid(service, "ipv6-subnet", e.to_string()))?;
    let iface = interface_name(&service.name);
    let key = run_dir.join(KEY_FILE).display().to_string();
    let mut addrs = format!(
        "$IP address add {}/{} dev \"$IF\"\n",
        subnet.server_address(),
        subnet.prefix()
    );
    if let Some(v6) = v6 {
        // A host with IPv6 disabled still serves IPv4: the address is best effort, and said.
        addrs.push_str(&format!(
            "$IP -6 address add {a}/{p} dev \"$IF\" || echo \"IPv6 tunnel address {a}/{p} not set (IPv6 disabled here?)\" >&2\n",
            a = v6.server_address(),
            p = v6.prefix()
        ));
    }
    let mtu = o.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    Ok(format!(
        r#"#!/bin/sh
# Written by vpn-agent for service {name}: brings {iface} up; the agent adds peers with `wg set`.
set -eu
IP=/usr/local/bin/ip
IF={iface}
$IP link del "$IF" 2>/dev/null || true
if [ "${{VPN_WG_USERSPACE:-0}}" != 1 ] && $IP link add "$IF" type wireguard 2>/dev/null; then
    MODE=kernel
else
    MODE=userspace
    WG_PROCESS_FOREGROUND=1 wireguard-go "$IF" &
    PID=$!
    i=0
    while [ ! -S "/var/run/wireguard/$IF.sock" ]; do
        i=$((i + 1)); [ "$i" -le 100 ] || {{ echo "wireguard-go did not start" >&2; exit 1; }}
        sleep 0.1
    done
fi
wg set "$IF" listen-port {port} private-key {key}
{addrs}$IP link set "$IF"{mtu} up
echo "interface $IF up ($MODE), port {port}"
if [ "$MODE" = userspace ]; then
    trap 'kill "$PID" 2>/dev/null; exit 0' TERM INT
    wait "$PID"
else
    trap '$IP link del "$IF" 2>/dev/null; exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
fi
"#,
        name = service.name,
        port = service.port,
    ))
}

/// The container of one WireGuard service and its files (pure). The caller adds its host label.
pub fn render(service: &ServiceSpec, ctx: &ServiceCtx<'_>) -> Result<Rendered, DriverError> {
    let o = options_of(service)?;
    if o.private_key.is_empty() {
        return Err(invalid(
            service,
            "private key",
            "the host's interface key is missing from its state",
        ));
    }
    let dir = ctx.run_dir.display().to_string();
    if dir.contains(':') {
        return Err(DriverError::BadPath(ctx.run_dir.to_owned()));
    }
    let script = start_script(service, ctx.run_dir)?;
    let key = format!("{}\n", o.private_key);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(script.as_bytes());
    digest.update(key.as_bytes());
    let digest = hex::encode(&digest.finish().as_ref()[..8]);
    let spec = ContainerSpec {
        name: ctx.container.to_owned(),
        image: service
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE.into()),
        cmd: vec![
            "sh".into(),
            ctx.run_dir.join(START_FILE).display().to_string(),
        ],
        env: Vec::new(),
        binds: vec![format!("{dir}:{dir}")],
        network_mode: ctx.network_mode.to_owned(),
        labels: BTreeMap::from([
            ("vpn-fleet.service".into(), service.name.clone()),
            ("vpn-fleet.protocol".into(), "wireguard".into()),
            (LABEL_CONFIG.into(), digest),
        ]),
        cap_add: vec!["NET_ADMIN".into()],
        devices: vec!["/dev/net/tun".into()],
    };
    Ok(Rendered {
        spec,
        files: vec![
            RunFile {
                name: START_FILE.into(),
                contents: script.into_bytes(),
            },
            RunFile {
                name: KEY_FILE.into(),
                contents: key.into_bytes(),
            },
        ],
        user: None,
    })
}

/// The peers `service` should have, and errors for users whose key or address another user
/// of this host already holds.
pub fn desired_peers(state: &DesiredState, service: &str) -> (Vec<Peer>, Vec<ResourceResult>) {
    let mut peers = Vec::new();
    let mut conflicts = Vec::new();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    for (user, cred) in state.users_of(service) {
        let Credential::Wireguard {
            public_key,
            preshared_key,
            allowed_ips,
            ..
        } = cred
        else {
            continue;
        };
        let taken = keys
            .get(public_key)
            .map(|holder| format!("public key already held by user {holder}"))
            .or_else(|| {
                allowed_ips.iter().find_map(|ip| {
                    ips.get(ip)
                        .map(|holder| format!("address {ip} already held by user {holder}"))
                })
            });
        if let Some(msg) = taken {
            conflicts.push(ResourceResult::error(
                user_resource(&user.name, service),
                msg,
            ));
            continue;
        }
        keys.insert(public_key.clone(), user.name.clone());
        for ip in allowed_ips {
            ips.insert(ip.clone(), user.name.clone());
        }
        peers.push(Peer {
            user: user.name.clone(),
            public_key: public_key.clone(),
            preshared_key: preshared_key.clone(),
            allowed_ips: allowed_ips.clone(),
        });
    }
    (peers, conflicts)
}

impl Driver for Wireguard {
    fn protocol(&self) -> Protocol {
        Protocol::Wireguard
    }

    fn render(
        &self,
        service: &ServiceSpec,
        _state: &DesiredState,
        ctx: &ServiceCtx<'_>,
    ) -> Result<Vec<Rendered>, DriverError> {
        render(service, ctx).map(|r| vec![r])
    }

    fn apply_users<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
        ready_within: Duration,
    ) -> BoxFuture<'a, UsersReport> {
        Box::pin(async move {
            match self.apply(state, service, ctx, ready_within).await {
                Ok(report) => report,
                Err(e) => failed(state, service, &e.to_string()),
            }
        })
    }

    fn read_counters<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
    ) -> BoxFuture<'a, Result<Counters, DriverError>> {
        Box::pin(async move {
            let listed = self.dump(service, ctx).await?;
            let (desired, _) = desired_peers(state, &service.name);
            let by_key: BTreeMap<&str, &wg::Listed> =
                listed.iter().map(|l| (l.public_key.as_str(), l)).collect();
            let users = desired
                .iter()
                .filter_map(|p| {
                    let l = by_key.get(p.public_key.as_str())?;
                    Some(UserCounter {
                        user: p.user.clone(),
                        bytes: Bytes::Directional {
                            up: l.rx,
                            down: l.tx,
                        },
                    })
                })
                .collect();
            // A peer's counters start again when it is re-added (reported then), and all of
            // them when the interface was recreated: that shows as counters going back.
            Ok(Counters {
                uptime: None,
                users,
            })
        })
    }
}

impl Wireguard {
    /// The interface's peers, from `wg show IF dump`.
    async fn dump(
        &self,
        service: &ServiceSpec,
        ctx: &ServiceCtx<'_>,
    ) -> Result<Vec<wg::Listed>, DriverError> {
        let docker = self.docker(&service.name).await?;
        let iface = interface_name(&service.name);
        let cmd = ["wg", "show", iface.as_str(), "dump"].map(str::to_owned);
        let out = exec::run(docker, ctx.container, &cmd, EXEC_TIMEOUT)
            .await
            .map_err(|e| engine(service, e))?;
        wg::parse_dump(&out).map_err(|e| engine(service, e))
    }

    /// Waits until the interface answers, then brings its peers to the desired ones.
    async fn apply(
        &self,
        state: &DesiredState,
        service: &ServiceSpec,
        ctx: &ServiceCtx<'_>,
        ready_within: Duration,
    ) -> Result<UsersReport, DriverError> {
        let deadline = Instant::now() + ready_within;
        let listed = loop {
            match self.dump(service, ctx).await {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        enable_forwarding(service);
        let (desired, conflicts) = desired_peers(state, &service.name);
        let plan = wg::plan(&desired, &listed);
        if !plan.is_empty() {
            self.execute(service, ctx, &plan).await?;
            info!(
                service = %service.name,
                removed = plan.removes.len(),
                added = plan.adds.len(),
                updated = plan.updates.len(),
                "wireguard peers changed with wg set"
            );
        }
        let mut results = vec![ResourceResult::ok(service_resource(&service.name))];
        results.extend(
            desired
                .iter()
                .map(|p| ResourceResult::ok(user_resource(&p.user, &service.name))),
        );
        results.extend(conflicts);
        Ok(UsersReport {
            results,
            adds: plan.adds.len() + plan.updates.len(),
            removes: plan.removes.len(),
            end: Default::default(),
            counters_restarted: plan.adds.iter().map(|p| p.user.clone()).collect(),
        })
    }

    /// Runs the plan's `wg set` commands, each added or updated peer's preshared key in a file
    /// of the run directory (mode 0600, removed afterwards) so no key is on a command line.
    async fn execute(
        &self,
        service: &ServiceSpec,
        ctx: &ServiceCtx<'_>,
        plan: &wg::Plan,
    ) -> Result<(), DriverError> {
        let docker = self.docker(&service.name).await?;
        let psk_dir = ctx.run_dir.join("psk");
        let keys: Vec<&str> = plan
            .adds
            .iter()
            .chain(&plan.updates)
            .map(|p| p.preshared_key.as_str())
            .collect();
        let psk_path = |i: usize| psk_dir.join(format!("{i}.psk")).display().to_string();
        let written = write_psks(&psk_dir, &keys, psk_path);
        let result = async {
            written.map_err(|e| engine(service, format!("preshared keys: {e}")))?;
            for cmd in wg::commands(&interface_name(&service.name), plan, psk_path) {
                exec::run(docker, ctx.container, &cmd, EXEC_TIMEOUT)
                    .await
                    .map_err(|e| engine(service, e))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = std::fs::remove_dir_all(&psk_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(service = %service.name, error = %e, "preshared key files not removed");
        }
        result
    }
}

/// Switches IP forwarding on in the agent's (the host's) network namespace, so peers reach
/// beyond the host: IPv4 always, IPv6 when the service has an IPv6 subnet. Best effort: a host
/// where it cannot be set still serves the host itself, and the log says why the rest fails.
fn enable_forwarding(service: &ServiceSpec) {
    let v6 = options_of(service).is_ok_and(|o| o.ipv6_subnet.is_some());
    let knobs = [
        (true, "/proc/sys/net/ipv4/ip_forward"),
        (v6, "/proc/sys/net/ipv6/conf/all/forwarding"),
    ];
    for (wanted, path) in knobs {
        if !wanted || std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        match std::fs::write(path, b"1\n") {
            Ok(()) => info!(service = %service.name, path, "ip forwarding switched on"),
            Err(e) => {
                warn!(service = %service.name, path, error = %e, "ip forwarding not switched on")
            }
        }
    }
}

/// Writes each preshared key to its file, mode 0600, in a fresh directory mode 0700.
fn write_psks(dir: &Path, keys: &[&str], path: impl Fn(usize) -> String) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    for (i, key) in keys.iter().enumerate() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path(i))?;
        f.write_all(key.as_bytes())?;
        f.write_all(b"\n")?;
    }
    Ok(())
}

fn engine(service: &ServiceSpec, e: impl std::fmt::Display) -> DriverError {
    DriverError::Engine {
        service: service.name.clone(),
        message: e.to_string(),
    }
}

/// Results when the interface could not be read or changed: the service and every user fail.
fn failed(state: &DesiredState, service: &ServiceSpec, msg: &str) -> UsersReport {
    let mut results = vec![ResourceResult::error(service_resource(&service.name), msg)];
    for (user, _) in state.users_of(&service.name) {
        results.push(ResourceResult::error(
            user_resource(&user.name, &service.name),
            format!("service {} not applied: {msg}", service.name),
        ));
    }
    UsersReport {
        results,
        ..UsersReport::default()
    }
}

#[cfg(test)]
mod tests;
