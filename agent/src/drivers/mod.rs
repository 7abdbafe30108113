//! Protocol drivers: what container a service needs, how its users are changed hot, which open
//! sessions a change must end, and what the engine counts per user.
//!
//! The applier (`crate::apply`) sees protocols only through [`Driver`]; each protocol is one
//! folder here and one line in [`driver`]. A driver has a pure half (render a [`Rendered`]
//! container and its files, plan user changes) that unit tests cover without Docker, and a thin
//! async half that talks to the engine's own API inside the container.
//!
//! - [`shadowsocks`]: shadowsocks-rust's `ssmanager`, one port per user.
//! - [`vless`]: VLESS + Reality on Xray-core (production) or shoes (a port per user).
//! - [`proxy`]: HTTP / SOCKS5 proxy on shoes (a port and a container per user).
//! - [`wireguard`]: WireGuard (kernel or wireguard-go), peers changed with `wg set`.
//! - [`shoes_user`]: a shoes container per user, shared by VLESS-on-shoes and the proxy.

pub mod proxy;
pub mod shadowsocks;
pub mod shoes_user;
pub mod vless;
pub mod wireguard;

use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;
use vpn_shared::model::{DesiredState, Protocol, ServiceSpec};
use vpn_shared::proto::ResourceResult;

use crate::apply::docker::ContainerSpec;

/// The driver of `protocol`: the registration point of every protocol.
pub fn driver(protocol: Protocol) -> &'static dyn Driver {
    match protocol {
        Protocol::Shadowsocks => &shadowsocks::Shadowsocks,
        Protocol::Vless => &VLESS,
        Protocol::Proxy => &proxy::Proxy,
        Protocol::Wireguard => &WIREGUARD,
    }
}

/// The VLESS driver keeps what each running Xray engine holds, so it is one instance.
static VLESS: vless::Vless = vless::Vless::new();

/// The WireGuard driver holds the Docker connection its `wg` commands go through.
static WIREGUARD: wireguard::Wireguard = wireguard::Wireguard::new();

/// Where one service runs on this host, as the applier chose it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceCtx<'a> {
    /// The container's name (`vpn-<host>-<service>`).
    pub container: &'a str,
    /// The service's private run directory (mode 0700), bind-mounted at the same path: sockets
    /// and files the engine reads live here.
    pub run_dir: &'a Path,
    /// `host` in production; `container:NAME` in tests.
    pub network_mode: &'a str,
}

/// A file a service's engine reads from its run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    /// A plain file name inside the run directory.
    pub name: String,
    pub contents: Vec<u8>,
}

/// One container of a service and the files to write (write, fsync, rename) into the run
/// directory before it is ensured.
///
/// Whatever the engine reads only at start must change the spec hash when it changes (a label
/// with its digest does); files the engine re-reads, or that only matter after a restart (users
/// that are also applied hot), must not, or a user change would restart the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub spec: ContainerSpec,
    pub files: Vec<RunFile>,
    /// `None`: the service's engine, serving every user. `Some(user)`: a container of that user
    /// alone (engines that hold one user per process); its failure is that user's, not the
    /// service's.
    pub user: Option<String>,
}

/// What [`Driver::apply_users`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersReport {
    /// One per user of the service and one for the service itself.
    pub results: Vec<ResourceResult>,
    /// Engine calls made; both zero when the engine already matched.
    pub adds: usize,
    pub removes: usize,
    /// Sessions the applier must end because their user lost access (the engine itself leaves
    /// them open).
    pub end: EndSessions,
    /// Users (names) whose engine counter this call started again from zero (ssmanager counts
    /// a port anew when it is added): the ledger must count their next reading whole. Engines
    /// that keep a user's counter across a hot re-add (Xray) list none.
    pub counters_restarted: Vec<String>,
}

/// Open sessions to end after users were removed, identified the way the kernel can find them
/// in the container's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndSessions {
    /// Sockets whose local port is one of these (per-user-port engines).
    pub ports: Vec<u16>,
    /// Sockets carrying one of these firewall marks (a shaped Xray user's outbound).
    pub marks: Vec<u32>,
}

impl EndSessions {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.marks.is_empty()
    }
}

/// Bytes an engine counted for one user since `epoch` began; read without reset (SPEC §2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCounter {
    pub user: String,
    pub bytes: Bytes,
}

/// Some engines count per direction, some only in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bytes {
    /// `up` is from the user, `down` to the user.
    Directional { up: u64, down: u64 },
    /// Both directions together (ssmanager's per-port `stat`).
    Total(u64),
}

/// One reading of a service's per-user counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// How long the engine has been counting, where it says: an uptime smaller than the last
    /// one plus the time between the readings means its counters started again from zero. A
    /// per-user reset (ssmanager re-adding a port) shows as that user's counter going back.
    pub uptime: Option<Duration>,
    pub users: Vec<UserCounter>,
}

/// One VPN protocol on this host.
///
/// Methods return boxed futures so the applier can hold drivers as `&dyn Driver`.
pub trait Driver: Send + Sync {
    /// The protocol this driver serves.
    fn protocol(&self) -> Protocol;

    /// The containers of `service` and the files they read (pure; `state` gives the users for
    /// engines that also load them at start, or that run a container per user). Names start
    /// with `ctx.container`; the first is the service's own.
    fn render(
        &self,
        service: &ServiceSpec,
        state: &DesiredState,
        ctx: &ServiceCtx<'_>,
    ) -> Result<Vec<Rendered>, DriverError>;

    /// Brings the running engine's users to those of `state`, hot, and reports per resource.
    /// Waits up to `ready_within` for an engine that was just (re)started to answer.
    fn apply_users<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
        ready_within: Duration,
    ) -> BoxFuture<'a, UsersReport>;

    /// The engine's per-user counters, without resetting them.
    fn read_counters<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
    ) -> BoxFuture<'a, Result<Counters, DriverError>>;
}

/// The firewall mark of a user's outbound sockets on an engine that serves every user on one
/// port (Xray's per-user outbound `sockopt.mark`): `0x7a` in the high byte names this agent,
/// the low 24 bits come from the SHA-256 of the user's VLESS id, so a user's mark never changes
/// while other users come and go. Two users of one host share a mark with a chance of about
/// n²/2²⁵ for n shaped users (0.03 % at 100); see docs/VLESS.md.
pub fn user_mark(uuid: &str) -> u32 {
    let h = ring::digest::digest(&ring::digest::SHA256, uuid.as_bytes());
    let b = h.as_ref();
    0x7a00_0000 | u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

/// Label with a digest of what an engine reads only at start.
pub const LABEL_CONFIG: &str = "vpn-fleet.config-sha256";

/// The run directory's bind mount, `DIR:DIR`; Docker's bind syntax splits on `:`, so a run
/// directory with one is refused.
pub(crate) fn bind_of(ctx: &ServiceCtx<'_>) -> Result<String, DriverError> {
    let dir = ctx.run_dir.display().to_string();
    if dir.contains(':') {
        return Err(DriverError::BadPath(ctx.run_dir.to_owned()));
    }
    Ok(format!("{dir}:{dir}"))
}

/// Hex SHA-256 (first 8 bytes) of what an engine reads at start.
pub(crate) fn config_digest(contents: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, contents);
    hex::encode(&d.as_ref()[..8])
}

/// Resource name of a service in [`ResourceResult`]s.
pub fn service_resource(service: &str) -> String {
    format!("service/{service}")
}

/// Resource name of one user's access to one service.
pub fn user_resource(user: &str, service: &str) -> String {
    format!("user/{user}@{service}")
}

/// Why a driver could not render or apply a service.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The service's options are for another protocol than its driver.
    #[error("service {service} has options of another protocol")]
    WrongOptions { service: String },
    /// The cipher is not one the engine and Outline clients both accept.
    #[error("service {service}: unsupported shadowsocks method {method}")]
    UnsupportedMethod { service: String, method: String },
    /// A path Docker's bind syntax cannot carry (it splits on `:`).
    #[error("path {0} cannot be bind-mounted (contains ':')")]
    BadPath(std::path::PathBuf),
    /// A setting the engine cannot take, named.
    #[error("service {service}: invalid {field}: {reason}")]
    Invalid {
        service: String,
        field: &'static str,
        reason: String,
    },
    /// The engine's API failed.
    #[error("service {service}: {message}")]
    Engine { service: String, message: String },
    /// The engine keeps no per-user counters; its users' own ports are counted by the agent's
    /// nftables table instead (`ledger::ports`).
    #[error(
        "service {service}: the engine keeps no counters; its users' ports are counted by nftables"
    )]
    NoCounters { service: String },
}

/// Keeps a driver's file name a single path component inside the run directory.
pub fn sanitize_file_name(name: &str) -> String {
    let out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match out.as_str() {
        "" | "." | ".." => "_".into(),
        _ => out,
    }
}
