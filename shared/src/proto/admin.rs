//! Messages between the `vpn` CLI (or TUI) and the controller over the admin ALPN.
//!
//! One bidirectional QUIC stream per request: the CLI writes one [`AdminRequest`] frame and reads
//! one [`AdminResponse`] frame, or, for a list answer to [`AdminRequest::InChunks`], several
//! (see [`super::chunk`]). Enums only ever gain variants at the end.

use serde::{Deserialize, Serialize};

use crate::model::{Bandwidth, Protocol, ProxyKind, VlessEngine};

/// Which hosts a service or a user is placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Servers {
    /// Every host, including hosts added later.
    All,
    /// Only these hosts, by name.
    Named(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// First frame of every admin stream is a request; the version travels in each one.
    ServersAdd {
        name: String,
        expires_secs: u64,
    },
    ServersList,
    ServersShow {
        name: String,
    },
    ServersRemove {
        name: String,
    },
    ServicesDeploy(DeployService),
    ServicesList,
    ServicesShow {
        name: String,
    },
    ServicesRemove {
        name: String,
        wait: bool,
    },
    UsersAdd(AddUser),
    UsersList,
    UsersShow {
        name: String,
    },
    UsersRemove {
        name: String,
        wait: bool,
    },
    UsersSuspend {
        name: String,
        wait: bool,
    },
    UsersResume {
        name: String,
        wait: bool,
    },
    UsersLink {
        name: String,
        server: Option<String>,
        protocol: Option<Protocol>,
    },
    Status,
    UsersEdit(EditUser),
    ServicesEdit(EditService),
    /// Blocks an address or network on the given servers (`All`: fleet-wide, including later hosts).
    FirewallBlock {
        target: String,
        servers: Servers,
        wait: bool,
    },
    FirewallUnblock {
        target: String,
        servers: Servers,
        wait: bool,
    },
    FirewallList,
    /// A deploy with protocol options; `ServicesDeploy` stays for Shadowsocks-only peers.
    ServicesDeployWith {
        deploy: DeployService,
        options: DeployOptions,
    },
    /// `servers list` with each host's health: answered with [`AdminResponse::ServersDetail`].
    ServersListDetail,
    /// `servers show` with failing resources, events and vitals: [`AdminResponse::ServerDetail`].
    ServersShowDetail {
        name: String,
    },
    /// `status` with health counts: [`AdminResponse::StatusDetail`].
    StatusDetail,
    /// `services show` with each host's state: [`AdminResponse::ServiceDetail`].
    ServicesShowDetail {
        name: String,
    },
    /// Fleet-wide checks: [`AdminResponse::Doctor`].
    Doctor,
    /// `services edit` that may also change the image; `ServicesEdit` stays for older peers.
    ServicesEditWith {
        edit: EditService,
        /// `Some(Some(i))`: run image `i`; `Some(None)`: back to the driver's default image;
        /// `None`: keep it.
        image: Option<Option<String>>,
    },
    /// `users usage`: [`AdminResponse::Usage`].
    UsersUsage(UsageQuery),
    /// `users add` with a data limit, reset period, expiry or hold: [`AdminResponse::Applied`].
    UsersAddWith {
        add: AddUser,
        quota: Quota,
    },
    /// `users edit` with quota flags: [`AdminResponse::Applied`].
    UsersEditWith {
        edit: EditUser,
        quota: QuotaEdit,
    },
    /// `users list` with quotas: [`AdminResponse::UsersDetail`].
    UsersListDetail,
    /// `users show` with its quota: [`AdminResponse::UserDetail`].
    UsersShowDetail {
        name: String,
    },
    /// The request inside, from a client that joins a list answer sent in parts: the
    /// controller may answer it with [`AdminResponse::More`] frames before the last part
    /// ([`super::chunk`]). Never nested.
    InChunks(Box<AdminRequest>),
    /// `services deploy … --ports N`: a service with a port per user whose range holds
    /// `ports` ports from its first (`deploy.port`); [`AdminResponse::Applied`].
    ServicesDeployPorts {
        deploy: DeployService,
        options: DeployOptions,
        ports: u16,
    },
    /// `services edit NAME --ports N` (with or without the other edit flags): the range keeps
    /// its first port and holds `ports` ports; [`AdminResponse::Applied`].
    ServicesEditPorts {
        edit: EditService,
        /// As in [`AdminRequest::ServicesEditWith`].
        image: Option<Option<String>>,
        ports: u16,
    },
    /// `vpn tui`: a long-lived stream of [`AdminResponse::Stream`] frames, a snapshot then
    /// changes ([`super::stream`]).
    Subscribe,
}

/// A moment, absolute or counted from when the controller receives the request (so a
/// relative `30d` means the controller's clock, not the operator's laptop's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// Unix seconds.
    At(i64),
    /// Seconds from the controller's now.
    In(i64),
}

/// How often a data limit starts again (calendar periods in the controller's time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Reset {
    /// The limit is for the user's whole life.
    #[default]
    Never,
    Day,
    Week,
    Month,
    Year,
}

impl Reset {
    /// The flag's spelling: `none`, `day`, `week`, `month`, `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::Never => "none",
            Reset::Day => "day",
            Reset::Week => "week",
            Reset::Month => "month",
            Reset::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Reset> {
        Some(match s {
            "none" => Reset::Never,
            "day" => Reset::Day,
            "week" => Reset::Week,
            "month" => Reset::Month,
            "year" => Reset::Year,
            _ => return None,
        })
    }
}

/// `--on-hold 30d [--on-hold-timeout 7d]`: the expiry clock starts at first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnHoldSpec {
    /// Seconds of use once the clock starts.
    pub duration: i64,
    /// When the clock starts even without use.
    pub timeout: Option<When>,
}

/// The quota of a new user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    /// Bytes per period; `None`: unlimited.
    pub data_limit: Option<u64>,
    pub reset: Reset,
    pub expires: Option<When>,
    /// Excludes `expires`.
    pub on_hold: Option<OnHoldSpec>,
}

/// Changes to a user's quota; `None` leaves a field as it is, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaEdit {
    pub data_limit: Option<Option<u64>>,
    pub reset: Option<Reset>,
    pub expires: Option<Option<When>>,
    /// `Some(Some(_))` puts the user on hold again (the clock starts at the next use).
    pub on_hold: Option<Option<OnHoldSpec>>,
}

/// A user with its quota as the controller evaluates it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDetail {
    pub user: UserInfo,
    pub quota: UserQuota,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserQuota {
    pub data_limit: Option<u64>,
    pub reset: Reset,
    /// Bytes counted in the current period (all time with `Never`), over every host.
    pub used: u64,
    /// Unix seconds the current period started; `None` with `Never`.
    pub period_start: Option<i64>,
    pub next_reset: Option<i64>,
    pub expires_at: Option<i64>,
    pub on_hold: Option<OnHoldInfo>,
    /// First traffic seen on any host, Unix seconds.
    pub first_use: Option<i64>,
    /// Why the user is in its status (`limited: 1.0 MiB of 1 MiB used`); `None` when active.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnHoldInfo {
    pub duration: i64,
    pub timeout_at: Option<i64>,
}

/// Which traffic `users usage` sums, and how it splits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageQuery {
    /// One user, or every user.
    pub user: Option<String>,
    /// Unix seconds; counted from the hour that holds it. `None`: all recorded traffic.
    pub since: Option<i64>,
    pub by: UsageBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageBy {
    /// One row per user.
    User,
    /// Per user and server.
    Server,
    /// Per user and service.
    Service,
    /// Per user and day (UTC).
    Day,
}

/// The answer to [`AdminRequest::UsersUsage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageInfo {
    pub since: Option<i64>,
    pub by: UsageBy,
    pub rows: Vec<UsageRow>,
}

/// Bytes of one user (and one server, service or day, per [`UsageQuery::by`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub user: String,
    /// The server, service or day (`2026-12-01`) of the row; `None` when `by` is `user`.
    pub key: Option<String>,
    pub up: u64,
    pub down: u64,
    pub undirected: u64,
    pub total: u64,
}

/// Protocol options of a deploy. New protocols are appended, never inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployOptions {
    /// `method` `None` picks the Outline-compatible default.
    Shadowsocks {
        method: Option<String>,
    },
    Vless(DeployVless),
    /// `kind` `None`: both HTTP and SOCKS5 on each user's port.
    Proxy {
        kind: Option<ProxyKind>,
    },
    Wireguard(DeployWireguard),
}

/// What an operator chooses for a WireGuard service; the controller makes every key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployWireguard {
    /// Tunnel subnet, for example `10.66.0.0/16`.
    pub subnet: String,
    pub ipv6_subnet: Option<String>,
    /// DNS servers clients use (`DNS =` in the `.conf`); empty: none.
    pub dns: Vec<String>,
    pub mtu: Option<u16>,
}

/// What an operator chooses for a VLESS + Reality service; the controller makes the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployVless {
    /// `None`: the production default, Xray.
    pub engine: Option<VlessEngine>,
    pub sni: String,
    /// `host:port` of the TLS 1.3 site Reality borrows its handshake from.
    pub dest: String,
    /// How many short ids to generate (`None`: one).
    pub short_ids: Option<u8>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditUser {
    pub name: String,
    pub email: Option<String>,
    pub note: Option<String>,
    /// `Some` replaces the limit; `Some(Bandwidth::default())` removes it.
    pub bandwidth: Option<Bandwidth>,
    pub wait: bool,
}

/// Changes to a service; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditService {
    pub name: String,
    pub bandwidth: Option<Bandwidth>,
    /// `Some(None)` removes the limit.
    pub new_conn_rate: Option<Option<u32>>,
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployService {
    pub protocol: Protocol,
    /// Service name; defaults to the protocol's name when `None`.
    pub name: Option<String>,
    pub port: u16,
    pub servers: Servers,
    pub image: Option<String>,
    /// Shadowsocks cipher; `None` picks the Outline-compatible default.
    pub method: Option<String>,
    /// Cap for the whole service on each host.
    pub bandwidth: Bandwidth,
    /// New connections per second per source address.
    pub new_conn_rate: Option<u32>,
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddUser {
    pub name: String,
    pub email: Option<String>,
    pub note: Option<String>,
    /// `None` means every protocol.
    pub protocols: Option<Vec<Protocol>>,
    pub servers: Servers,
    pub bandwidth: Bandwidth,
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// The request failed; `kind` maps to the CLI's exit code.
    Error {
        kind: ErrorKind,
        message: String,
    },
    ServerAdded(ServerAdded),
    Servers(Vec<ServerInfo>),
    Server(ServerInfo),
    Services(Vec<ServiceInfo>),
    Service(ServiceInfo),
    Users(Vec<UserInfo>),
    User(UserInfo),
    Links(Vec<LinkInfo>),
    Status(StatusInfo),
    /// A change was stored; `hosts` says how each targeted host took it.
    Applied(Applied),
    Firewall(Vec<FirewallRuleInfo>),
    ServersDetail(Vec<ServerDetail>),
    ServerDetail(ServerDetail),
    StatusDetail(StatusDetail),
    ServiceDetail(ServiceDetail),
    Doctor(DoctorReport),
    Usage(UsageInfo),
    UsersDetail(Vec<UserDetail>),
    UserDetail(UserDetail),
    /// One part of a list answer to [`AdminRequest::InChunks`]; more frames follow on the
    /// stream and the last part comes as the plain answer ([`super::chunk`]).
    More(Box<AdminResponse>),
    /// One message of a subscription ([`AdminRequest::Subscribe`]).
    Stream(super::stream::StreamMsg),
}

/// Whether a host can be trusted to serve (SPEC §2.8): online is not healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Added but never enrolled.
    Pending,
    /// Connected and no resource failing.
    Online,
    /// Connected with `failing` resources failing.
    Degraded { failing: u32 },
    /// No session.
    Offline,
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostState::Pending => f.write_str("pending"),
            HostState::Online => f.write_str("online"),
            HostState::Degraded { failing } => write!(f, "degraded ({failing} failing)"),
            HostState::Offline => f.write_str("offline"),
        }
    }
}

/// A host with its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerDetail {
    pub server: ServerInfo,
    pub state: HostState,
    /// Resources whose last result was an error (kept while offline too).
    pub failing: Vec<FailingResource>,
    /// Recent events, newest first (empty in lists).
    pub events: Vec<HostEvent>,
    /// What the agent reported last in this session; `None` when offline or not yet reported.
    pub vitals: Option<HostVitals>,
    /// Past-threshold findings (certificate near expiry, clock skew, restarts, disk, backlog).
    pub warnings: Vec<String>,
}

/// A resource whose last result was an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingResource {
    pub resource: String,
    pub message: String,
    /// Unix seconds (controller clock) of the first and latest report of this failure.
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Something that happened to a host, as the controller recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    /// Unix seconds, controller clock.
    pub at: i64,
    /// `failing`, `recovered`, `repaired`, `online`, `offline`.
    pub kind: String,
    pub resource: Option<String>,
    pub message: String,
}

/// A host's vitals from its agent's last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostVitals {
    /// Unix seconds, controller clock.
    pub reported_at: i64,
    /// Agent clock minus controller clock at the report, milliseconds (half the RTT removed).
    pub clock_skew_ms: i64,
    pub cert_not_after: Option<i64>,
    pub containers: Vec<crate::proto::ContainerStatus>,
    pub disk_free_bytes: Option<u64>,
    pub ledger_backlog: Option<u64>,
}

/// `status` with the fleet's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetail {
    pub status: StatusInfo,
    pub hosts_degraded: u64,
    pub hosts_offline: u64,
    pub failing_resources: u64,
    /// Hosts with at least one warning.
    pub hosts_warned: u64,
}

/// `services show` with each placed host's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDetail {
    pub service: ServiceInfo,
    pub hosts: Vec<ServiceHost>,
}

/// How one host runs one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHost {
    pub server: String,
    pub state: ServiceHostState,
    /// Failing resources of this service on that host (the service and its users).
    pub failing: Vec<FailingResource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceHostState {
    /// Online and nothing of this service failing.
    Ok,
    /// The service itself fails on that host.
    Failing,
    /// The service runs but some of its users fail.
    UsersFailing,
    Offline,
    /// Not enrolled yet.
    Pending,
}

impl std::fmt::Display for ServiceHostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceHostState::Ok => "ok",
            ServiceHostState::Failing => "failing",
            ServiceHostState::UsersFailing => "users failing",
            ServiceHostState::Offline => "offline",
            ServiceHostState::Pending => "pending",
        })
    }
}

/// `vpn doctor`: every check, per host or fleet-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    pub checks: Vec<DoctorCheck>,
}

impl DoctorReport {
    /// True when no check failed (warnings included: a warning is something to fix).
    pub fn all_well(&self) -> bool {
        self.checks.iter().all(|c| c.level == CheckLevel::Ok)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorCheck {
    /// `None` for fleet-wide checks.
    pub server: Option<String>,
    /// For example `online`, `acked`, `resources`, `certificate`, `clock`, `kernel`.
    pub check: String,
    pub level: CheckLevel,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckLevel {
    Ok,
    Warn,
    Fail,
}

/// One block-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRuleInfo {
    /// Normalized CIDR, e.g. `203.0.113.0/24` or `2001:db8::1/128`.
    pub target: String,
    /// `None` for fleet-wide, else the server's name.
    pub server: Option<String>,
    pub created_at: i64,
}

/// Error classes, mapped by the CLI onto SPEC §2.7 exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Unknown, duplicate or malformed input (exit 65).
    BadData,
    /// The caller's identity may not do this.
    Forbidden,
    /// The controller failed internally (exit 70).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAdded {
    pub name: String,
    pub host_id: String,
    pub join: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub name: String,
    pub host_id: String,
    pub online: bool,
    pub enrolled: bool,
    pub address: Option<String>,
    pub agent_version: Option<String>,
    /// Unix seconds.
    pub last_seen: Option<i64>,
    pub desired_generation: u64,
    pub acked_generation: Option<u64>,
    pub cert_not_after: Option<i64>,
    pub services: Vec<String>,
    pub users: u64,
    /// Missing host features the agent reported (empty when offline or all present), then the
    /// host-wide failures of the apply it last acked, each starting with [`LAST_APPLY`] (for
    /// example `last apply: host/state: cannot write …`: the state was applied but not saved,
    /// so a restart would re-apply an older one). Bounded in count and length.
    pub health: Vec<String>,
}

/// Marks a [`ServerInfo::health`] line that comes from the last ack, not the feature probe.
pub const LAST_APPLY: &str = "last apply: ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub port_span: u16,
    pub image: Option<String>,
    pub all_servers: bool,
    pub servers: Vec<String>,
    pub options: String,
    pub bandwidth: Bandwidth,
    pub new_conn_rate: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub id: String,
    pub email: Option<String>,
    pub note: Option<String>,
    pub status: String,
    pub all_servers: bool,
    pub servers: Vec<String>,
    pub protocols: Option<Vec<Protocol>>,
    pub bandwidth: Bandwidth,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub server: String,
    pub service: String,
    pub protocol: Protocol,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub controller_version: String,
    pub hosts_total: u64,
    pub hosts_online: u64,
    pub services: u64,
    pub users_total: u64,
    pub users_active: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// What was changed, for example `user alice added`.
    pub summary: String,
    pub hosts: Vec<HostApply>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostApply {
    pub server: String,
    pub generation: u64,
    pub state: HostApplyState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostApplyState {
    /// The host acked the generation with every resource ok.
    Applied,
    /// The host acked but some resources failed: `resource: message` lines.
    Failed(Vec<String>),
    /// Offline or no ack in time; the host gets the change on reconnect.
    Pending,
    /// Not waited for (`--no-wait`).
    NotWaited,
}
