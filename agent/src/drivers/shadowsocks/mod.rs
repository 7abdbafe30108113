//! Shadowsocks through shadowsocks-rust's `ssmanager`: one port per user, users opened and
//! closed hot through the manager API so no other user is disturbed; one container per block of
//! 1,000 ports of the service's range, so a service of tens of thousands of users never asks
//! one manager for more than its API and descriptors allow ([`blocks`]).
//!
//! - [`Shadowsocks`]: the [`Driver`] the applier sees.
//! - [`render`]: the container spec of a service's own manager (pure), with the
//!   [`OUTBOUND_ACL`] it loads; [`render_manager`] the same for any block.
//! - [`write_acl`]: puts that ACL into a run directory (the applier writes it from
//!   [`Rendered::files`] instead; kept for tests that start a manager by hand).
//! - [`plan`]: which ports to close and open, from the desired users and the manager's `list`.
//! - [`apply_service`]: waits for the manager, executes the plan, reports per resource.
//! - [`manager`]: the manager API client.

pub mod blocks;
pub mod manager;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};
use vpn_shared::model::{Credential, DesiredState, ServiceOptions, ServiceSpec};
use vpn_shared::proto::ResourceResult;

use futures_util::future::BoxFuture;
use vpn_shared::model::Protocol;

use self::blocks::Block;
use self::manager::{ListedPort, ManagerClient, ManagerError};
use super::{
    Bytes, Counters, Driver, DriverError, EndSessions, Rendered, RunFile, ServiceCtx, UserCounter,
    UsersReport, service_resource, user_resource,
};
use crate::apply::docker::ContainerSpec;

/// The Shadowsocks driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shadowsocks;

impl Driver for Shadowsocks {
    fn protocol(&self) -> Protocol {
        Protocol::Shadowsocks
    }

    fn render(
        &self,
        service: &ServiceSpec,
        state: &DesiredState,
        ctx: &ServiceCtx<'_>,
    ) -> Result<Vec<Rendered>, DriverError> {
        // The service's own manager always runs; another block's while a user holds a port in
        // it. Every manager reads the same ACL file.
        let (desired, _) = desired_ports(state, &service.name);
        let blocks = blocks_of(service, &desired);
        let mut out = Vec::with_capacity(blocks.len());
        for block in blocks.keys() {
            let container = block.container(ctx.container);
            let socket = block.socket(ctx.run_dir);
            let spec = render_manager(service, &container, &socket, ctx.run_dir, ctx.network_mode)?;
            let files = if block.is_first() {
                // Rewritten on every apply: the file on disk always matches the spec's label.
                vec![RunFile {
                    name: ACL_FILE.into(),
                    contents: OUTBOUND_ACL.as_bytes().to_vec(),
                }]
            } else {
                Vec::new()
            };
            let spec = if block.is_first() {
                spec
            } else {
                let mut spec = spec;
                let ports = format!("{}-{}", block.first, block.last);
                spec.labels.insert(LABEL_PORTS.into(), ports);
                spec
            };
            out.push(Rendered {
                spec,
                files,
                user: None,
            });
        }
        Ok(out)
    }

    fn apply_users<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
        ready_within: Duration,
    ) -> BoxFuture<'a, UsersReport> {
        Box::pin(async move {
            let report = apply_service(state, service, ctx.run_dir, ready_within).await;
            UsersReport {
                results: report.results,
                adds: report.adds,
                removes: report.removes,
                end: EndSessions {
                    ports: report.closed,
                    marks: Vec::new(),
                },
                counters_restarted: report.opened,
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
            let (desired, _) = desired_ports(state, &service.name);
            let mut users = Vec::with_capacity(desired.len());
            let mut failed = Vec::new();
            let blocks = blocks_of(service, &desired);
            let read = futures_util::future::join_all(blocks.keys().map(|block| {
                let socket = block.socket(ctx.run_dir);
                async move {
                    let client = ManagerClient::bind(ctx.run_dir, &socket, REQUEST_TIMEOUT)?;
                    client.stats().await
                }
            }))
            .await;
            for ((block, ports), stats) in blocks.into_iter().zip(read) {
                let stats = match stats {
                    Ok(stats) => stats,
                    Err(e) => {
                        failed.push(format!("{}{e}", block.prefix()));
                        continue;
                    }
                };
                users.extend(ports.into_iter().filter_map(|d| {
                    let total = *stats.get(&d.port)?;
                    Some(UserCounter {
                        user: d.user,
                        bytes: Bytes::Total(total),
                    })
                }));
            }
            // Counts are cumulative per port: a block that did not answer this time is read
            // in full next time, so the others' readings are still worth having.
            if !failed.is_empty() {
                if users.is_empty() {
                    return Err(DriverError::Engine {
                        service: service.name.clone(),
                        message: failed.join("; "),
                    });
                }
                warn!(service = %service.name, errors = %failed.join("; "), "some shadowsocks managers were not read");
            }
            // ssmanager restarts a port's count when the port is (re)added: a per-user reset
            // the accounting notices as a counter going backwards.
            Ok(Counters {
                uptime: None,
                users,
            })
        })
    }
}

/// Image used when the service names none; built locally by `deploy/images/shadowsocks-rust`.
pub const DEFAULT_IMAGE: &str = "vpn-fleet/shadowsocks-rust:local";
/// Ciphers both shadowsocks-rust and Outline clients accept (AEAD only).
pub const METHODS: &[&str] = &["chacha20-ietf-poly1305", "aes-256-gcm", "aes-128-gcm"];
/// How long [`apply_service`] waits for a freshly (re)created manager to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one manager request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Label carrying a digest of [`OUTBOUND_ACL`]: the file's path alone is on the command line, so
/// this is what makes a changed ACL change the spec hash (ssmanager reads the file only at start).
pub const LABEL_ACL: &str = "vpn-fleet.acl-sha256";

/// shadowsocks-rust ACL (`--acl`) loaded by ssmanager and shared by every port it opens.
///
/// With host networking the server's own loopback is the VPN host's: without this list any user
/// could reach services bound to 127.0.0.1 or ::1 on the host (a database, the Docker-published
/// `127.0.0.1:` ports, an admin UI). Connecting to 0.0.0.0 or `::` also lands on the local
/// host on Linux, so those go too. shadowsocks-rust matches IPv4-mapped IPv6 addresses against
/// the IPv4 rules itself; the mapped loopback is listed anyway so the intent does not depend on
/// that. Domain targets are checked after resolution (`localhost` is refused as well).
///
/// Format notes: `#` comments only at the start of a line, and no whitespace-only lines (the
/// parser would take one as a match-everything host regex).
pub const OUTBOUND_ACL: &str = "\
# Written by vpn-agent; rewritten on every apply. Refuses relaying to the VPN host itself.
[outbound_block_list]
127.0.0.0/8
::1/128
0.0.0.0/8
::/128
::ffff:127.0.0.0/104
::ffff:0.0.0.0/104
";

/// Label on the container of a block other than the service's own: the ports it serves.
pub const LABEL_PORTS: &str = "vpn-fleet.ports";

/// The socket of the service's own manager (ports `port ..= port + 999`) inside a service's
/// run directory; see [`Block::socket`] for the others.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    Block::at(0, 0).socket(run_dir)
}

/// The desired ports of a service by the block that serves them; block 0 always, even
/// without users (the service's own container runs whatever its users).
pub fn blocks_of(service: &ServiceSpec, desired: &[UserPort]) -> BTreeMap<Block, Vec<UserPort>> {
    let mut blocks: BTreeMap<Block, Vec<UserPort>> = BTreeMap::new();
    blocks.insert(Block::at(service.port, 0), Vec::new());
    for d in desired {
        blocks
            .entry(Block::of(service.port, d.port))
            .or_default()
            .push(d.clone());
    }
    blocks
}

/// Name of the ACL file in a service's run directory.
const ACL_FILE: &str = "outbound.acl";

/// The ACL file inside a service's run directory.
pub fn acl_path(run_dir: &Path) -> PathBuf {
    run_dir.join(ACL_FILE)
}

/// Writes [`OUTBOUND_ACL`] to [`acl_path`] (write, fsync, rename: a container starting meanwhile
/// never reads half a file). Call before the container is ensured.
pub fn write_acl(run_dir: &Path) -> std::io::Result<()> {
    let path = acl_path(run_dir);
    let tmp = run_dir.join("outbound.acl.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(OUTBOUND_ACL.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

fn acl_digest() -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, OUTBOUND_ACL.as_bytes());
    hex::encode(&d.as_ref()[..8])
}

fn method_of(service: &ServiceSpec) -> Result<&str, DriverError> {
    let method = match &service.options {
        ServiceOptions::Shadowsocks { method } => method.as_str(),
        _ => {
            return Err(DriverError::WrongOptions {
                service: service.name.clone(),
            });
        }
    };
    if !METHODS.contains(&method) {
        return Err(DriverError::UnsupportedMethod {
            service: service.name.clone(),
            method: method.to_owned(),
        });
    }
    Ok(method)
}

/// The container of one Shadowsocks service. The caller adds its host label.
///
/// The manager API listens on a UNIX datagram socket in `run_dir` (the agent's
/// `<data_dir>/run/<service>/`, mode 0700), never on a UDP port: the API has no authentication,
/// and with host networking a loopback port would be reachable by every local process (and by
/// every VPN user, were it not for the ACL below). Only root can reach the
/// socket file. The directory is mounted at the *same* path inside the container because ssmanager
/// answers to the client's socket path as the client bound it, resolved in the container.
///
/// Every port refuses to relay to the host's own loopback: see [`OUTBOUND_ACL`], which the caller
/// writes with [`write_acl`] into the same directory.
///
/// The method is the manager's default cipher on the command line as well as sent with each
/// `add`: `list` does not report methods, so a method change must change the spec hash, which
/// recreates the container and re-adds every port.
pub fn render(
    service: &ServiceSpec,
    container_name: &str,
    run_dir: &Path,
    network_mode: &str,
) -> Result<ContainerSpec, DriverError> {
    render_manager(
        service,
        container_name,
        &socket_path(run_dir),
        run_dir,
        network_mode,
    )
}

/// The container of one block's manager, listening on `socket` in `run_dir` (see [`render`]).
pub fn render_manager(
    service: &ServiceSpec,
    container_name: &str,
    socket: &Path,
    run_dir: &Path,
    network_mode: &str,
) -> Result<ContainerSpec, DriverError> {
    let method = method_of(service)?;
    let dir = run_dir.display().to_string();
    if dir.contains(':') {
        return Err(DriverError::BadPath(run_dir.to_owned()));
    }
    let cmd = [
        "ssmanager",
        "--manager-addr",
        &socket.display().to_string(),
        "--server-host",
        "0.0.0.0",
        "-U", // TCP and UDP, as Outline clients expect
        "--encrypt-method",
        method,
        "--acl",
        &acl_path(run_dir).display().to_string(),
    ];
    Ok(ContainerSpec {
        name: container_name.to_owned(),
        image: service
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE.into()),
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        env: Vec::new(),
        binds: vec![format!("{dir}:{dir}")],
        network_mode: network_mode.to_owned(),
        labels: BTreeMap::from([
            ("vpn-fleet.service".into(), service.name.clone()),
            ("vpn-fleet.protocol".into(), "shadowsocks".into()),
            (LABEL_ACL.into(), acl_digest()),
        ]),
        cap_add: Vec::new(),
        devices: Vec::new(),
    })
}

/// One user's port on a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPort {
    pub user: String,
    pub port: u16,
    pub password: String,
}

/// The ports `service` should have open, and errors for users whose port another user holds.
pub fn desired_ports(state: &DesiredState, service: &str) -> (Vec<UserPort>, Vec<ResourceResult>) {
    let mut by_port: BTreeMap<u16, UserPort> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (user, cred) in state.users_of(service) {
        let Credential::Shadowsocks { port, password, .. } = cred else {
            continue;
        };
        if let Some(holder) = by_port.get(port) {
            let msg = format!("port {port} is already held by user {}", holder.user);
            conflicts.push(ResourceResult::error(
                user_resource(&user.name, service),
                msg,
            ));
            continue;
        }
        by_port.insert(
            *port,
            UserPort {
                user: user.name.clone(),
                port: *port,
                password: password.clone(),
            },
        );
    }
    (by_port.into_values().collect(), conflicts)
}

/// Manager changes that bring `listed` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ports to close: not desired, or desired with another password.
    pub removes: Vec<u16>,
    /// Ports to open: missing, or reopened with their new password.
    pub adds: Vec<UserPort>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.adds.is_empty()
    }
}

/// Compares by port and password only: a changed password closes and reopens that port alone.
pub fn plan(desired: &[UserPort], listed: &[ListedPort]) -> Plan {
    let open: BTreeMap<u16, &str> = listed
        .iter()
        .map(|l| (l.port, l.password.as_str()))
        .collect();
    let wanted: BTreeMap<u16, &UserPort> = desired.iter().map(|d| (d.port, d)).collect();
    let mut plan = Plan::default();
    for (port, password) in &open {
        match wanted.get(port) {
            Some(d) if d.password == *password => {}
            _ => plan.removes.push(*port),
        }
    }
    for (port, d) in &wanted {
        if open.get(port) != Some(&d.password.as_str()) {
            plan.adds.push((*d).clone());
        }
    }
    plan
}

/// What [`apply_service`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceReport {
    pub results: Vec<ResourceResult>,
    /// Manager calls made; both zero when the service already matched.
    pub adds: usize,
    pub removes: usize,
    /// Ports closed through the manager. ssmanager only stops their listeners: connections
    /// already accepted carry on, so the caller ends them (see `Applier`).
    pub closed: Vec<u16>,
    /// Users whose port the manager accepted an `add` for: ssmanager counts it from zero.
    pub opened: Vec<String>,
}

/// Brings the managers of `service` to the state's users and reports each resource: the
/// service is ok when every manager answered and closed what it had to.
///
/// Waits up to `ready_within` for a manager to answer (it may just have been (re)created).
pub async fn apply_service(
    state: &DesiredState,
    service: &ServiceSpec,
    run_dir: &Path,
    ready_within: Duration,
) -> ServiceReport {
    let name = service.name.as_str();
    let (desired, conflicts) = desired_ports(state, name);
    let mut report = ServiceReport {
        results: conflicts,
        ..Default::default()
    };
    let method = match method_of(service) {
        Ok(m) => m,
        Err(e) => {
            let msg = e.to_string();
            fail_users(&mut report, name, &desired, &msg);
            report
                .results
                .insert(0, ResourceResult::error(service_resource(name), &msg));
            warn!(service = name, error = %msg, "shadowsocks service not applied");
            return report;
        }
    };
    // The managers are separate processes: asked together, a large range applies in a
    // fraction of the time (each `add` is a round trip to its manager).
    let blocks = blocks_of(service, &desired);
    let applied = futures_util::future::join_all(blocks.iter().map(|(block, ports)| {
        let socket = block.socket(run_dir);
        async move { apply_block(name, method, ports, run_dir, &socket, ready_within).await }
    }))
    .await;
    let mut service_errors = Vec::new();
    for ((block, ports), applied) in blocks.into_iter().zip(applied) {
        let (block_report, errors) = match applied {
            Ok(done) => done,
            Err(e) => {
                let msg = format!("{}{e}", block.prefix());
                warn!(service = name, error = %msg, "shadowsocks manager not applied");
                let mut failed = ServiceReport::default();
                fail_users(&mut failed, name, &ports, &msg);
                (failed, vec![e.to_string()])
            }
        };
        report.results.extend(block_report.results);
        report.adds += block_report.adds;
        report.removes += block_report.removes;
        report.closed.extend(block_report.closed);
        report.opened.extend(block_report.opened);
        service_errors.extend(errors.into_iter().map(|e| format!("{}{e}", block.prefix())));
    }
    report.results.push(if service_errors.is_empty() {
        ResourceResult::ok(service_resource(name))
    } else {
        ResourceResult::error(service_resource(name), service_errors.join("; "))
    });
    report
}

/// Reports every user of `ports` failing because their manager is not ready.
fn fail_users(report: &mut ServiceReport, service: &str, ports: &[UserPort], msg: &str) {
    for d in ports {
        let user_msg = format!("service {service} not ready: {msg}");
        report.results.push(ResourceResult::error(
            user_resource(&d.user, service),
            user_msg,
        ));
    }
}

/// Brings one manager to `desired` (the ports of its block): per-user results, and the
/// errors of ports it could not close. `Err` when the manager cannot be reached at all.
async fn apply_block(
    name: &str,
    method: &str,
    desired: &[UserPort],
    run_dir: &Path,
    socket: &Path,
    ready_within: Duration,
) -> Result<(ServiceReport, Vec<String>), ManagerError> {
    let mut report = ServiceReport::default();
    let client = ManagerClient::bind(run_dir, socket, REQUEST_TIMEOUT)?;
    let listed = list_when_ready(&client, ready_within).await?;
    let plan = plan(desired, &listed);
    let mut failed: BTreeMap<u16, String> = BTreeMap::new();
    let mut service_errors = Vec::new();
    for port in &plan.removes {
        report.removes += 1;
        match client.remove(*port).await {
            Ok(()) => {
                info!(service = name, port, "shadowsocks port closed");
                report.closed.push(*port);
            }
            Err(e) => {
                failed.insert(*port, e.to_string());
                service_errors.push(format!("closing port {port}: {e}"));
            }
        }
    }
    for add in &plan.adds {
        report.adds += 1;
        match client.add(add.port, &add.password, method).await {
            Ok(()) => {
                // A reopened port (changed password) is fine even if closing it failed.
                failed.remove(&add.port);
                report.opened.push(add.user.clone());
                info!(service = name, user = %add.user, port = add.port, "shadowsocks port opened");
            }
            Err(e) => {
                failed.insert(add.port, e.to_string());
            }
        }
    }
    // ssmanager answers `ok` to an add whose port it could not bind, so look again.
    let open: BTreeSet<(u16, String)> = if plan.is_empty() {
        listed.into_iter().map(|l| (l.port, l.password)).collect()
    } else {
        client
            .list()
            .await?
            .into_iter()
            .map(|l| (l.port, l.password))
            .collect()
    };
    for d in desired {
        let resource = user_resource(&d.user, name);
        let result = if let Some(err) = failed.get(&d.port) {
            ResourceResult::error(resource, err.as_str())
        } else if open.contains(&(d.port, d.password.clone())) {
            ResourceResult::ok(resource)
        } else {
            let msg = format!("port {} did not open (already in use on the host?)", d.port);
            ResourceResult::error(resource, msg)
        };
        report.results.push(result);
    }
    Ok((report, service_errors))
}

/// Lists the manager's ports, retrying until it answers or `within` has passed.
async fn list_when_ready(
    client: &ManagerClient,
    within: Duration,
) -> Result<Vec<ListedPort>, ManagerError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match client.list().await {
            Ok(l) => return Ok(l),
            Err(e @ (ManagerError::Io { .. } | ManagerError::Timeout { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(socket = %client.server_path().display(), error = %e, "manager not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
