//! A client for the Xray gRPC API: hot user changes through `HandlerService.AlterInbound` and
//! per-user traffic through `StatsService`, read **without** reset (SPEC §2.6).
//!
//! - [`XrayApi`]: the client; every call has a deadline.
//! - [`Flavor`]: Xray (production) or v2ray 4.34 (the real engine the tests run, same messages
//!   under other package names).
//! - [`ApiAddress`]: where the API listens, a loopback TCP port or a unix socket.
//! - [`parse_user_stat`], [`engine_restarted`]: the pure halves (counter names, restart check).
//! - [`proto`]: the hand-written protobuf messages and the proto files they were checked against.
//!
//! The API has **no authentication and no TLS**: whoever reaches it can add users and read every
//! counter. So [`XrayApi::new`] refuses any TCP address that is not loopback. On a host-network
//! engine loopback is still reachable by every local process *and by the engine's own users*
//! (a VLESS user's freedom outbound can dial `127.0.0.1:API_PORT`, and a dokodemo-door API
//! inbound routes it straight to the API), so the rendered config must block loopback
//! destinations for user traffic, or — better — use Xray's `api.listen` with a unix socket path
//! in the agent's run directory, which this client also speaks (`ApiAddress::Unix`). v2ray 4.34
//! has no `api.listen`; it takes the API through a dokodemo-door inbound only.

pub mod proto;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use self::proto::{
    AddUserOperation, AlterInboundRequest, AlterInboundResponse, QueryStatsRequest,
    QueryStatsResponse, RemoveUserOperation, SysStatsRequest, SysStatsResponse, TypedMessage, User,
    VlessAccount,
};

/// Prefix of every per-user counter name.
pub const USER_STAT_PREFIX: &str = "user>>>";
/// Deadline of one call when the caller names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The Vision flow that production VLESS+Reality users carry.
pub const FLOW_VISION: &str = "xtls-rprx-vision";

/// Which engine's package names to use on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Xray-core: services and types under `xray.…` (production).
    Xray,
    /// v2ray-core 4.x: services and types under `v2ray.core.…` (Debian's `v2ray`, the tests).
    /// Xray also answers the service paths of this flavor, but not its type strings.
    V2ray,
}

impl Flavor {
    /// The protobuf package prefix of this engine.
    fn package(self) -> &'static str {
        match self {
            Flavor::Xray => "xray",
            Flavor::V2ray => "v2ray.core",
        }
    }

    fn path(self, service: &str, method: &str) -> String {
        format!("/{}.{service}/{method}", self.package())
    }

    fn type_name(self, message: &str) -> String {
        format!("{}.{message}", self.package())
    }
}

/// Where the engine's API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddress {
    /// A TCP port on a loopback address (Xray `api.listen` or a dokodemo-door inbound).
    Tcp(SocketAddr),
    /// A unix socket path (Xray `api.listen` with a path starting with `/`).
    Unix(PathBuf),
}

impl fmt::Display for ApiAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiAddress::Tcp(addr) => write!(f, "{addr}"),
            ApiAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// One user's byte counters as the engine holds them since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client to server.
    pub uplink: u64,
    /// Server to client.
    pub downlink: u64,
}

/// Errors of the Xray API. None carries a user's UUID or any other secret.
#[derive(Debug, thiserror::Error)]
pub enum XrayApiError {
    /// The API has no authentication, so only a loopback address is accepted.
    #[error("xray api address {0} is not loopback")]
    NotLoopback(SocketAddr),
    /// The address could not become a gRPC endpoint (for example a non-UTF-8 socket path).
    #[error("xray api address {address} is invalid: {detail}")]
    BadAddress { address: String, detail: String },
    /// The UUID is not a UUID (it is not repeated here: it is the user's secret).
    #[error("vless user {email}: id is not a valid uuid")]
    InvalidUuid { email: String },
    /// No answer within the deadline.
    #[error("xray api at {address}: {method} did not answer within {timeout:?}")]
    Timeout {
        address: String,
        method: &'static str,
        timeout: Duration,
    },
    /// Nothing listens, or the connection broke: the engine is not (yet) running.
    #[error("xray api at {address} unavailable for {method}: {detail}")]
    Unavailable {
        address: String,
        method: &'static str,
        detail: String,
    },
    /// Adding a user whose email the inbound already holds (possibly with another UUID).
    #[error("inbound {tag} already has user {email}")]
    UserExists { tag: String, email: String },
    /// Removing a user the inbound does not hold.
    #[error("inbound {tag} has no user {email}")]
    UserNotFound { tag: String, email: String },
    /// The engine has no inbound with that tag.
    #[error("engine has no inbound {tag}")]
    InboundNotFound { tag: String },
    /// Any other refusal, with the engine's gRPC status.
    #[error("xray api refused {method}: {code:?}: {message}")]
    Refused {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// The engine answered something this client cannot use.
    #[error("xray api answered {method} with {detail}")]
    BadReply {
        method: &'static str,
        detail: String,
    },
}

impl XrayApiError {
    /// True for the answers that mean "already as asked": add of a present user, removal of an
    /// absent one. Apply treats them as success (SPEC §2.3, idempotent apply).
    pub fn is_already_applied(&self) -> bool {
        matches!(
            self,
            XrayApiError::UserExists { .. } | XrayApiError::UserNotFound { .. }
        )
    }
}

/// Client of one engine's API. Cheap to clone; clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct XrayApi {
    grpc: Grpc<Channel>,
    flavor: Flavor,
    /// For error messages and logs.
    address: String,
    timeout: Duration,
}

impl XrayApi {
    /// A client of the API at `address`. Connects lazily: no IO here, the first call dials, and
    /// a broken connection is dialled again by the next call (the engine may restart under us).
    /// `timeout` bounds every call, connecting included.
    pub fn new(
        address: &ApiAddress,
        flavor: Flavor,
        timeout: Duration,
    ) -> Result<Self, XrayApiError> {
        let uri = match address {
            ApiAddress::Tcp(addr) if !addr.ip().is_loopback() => {
                return Err(XrayApiError::NotLoopback(*addr));
            }
            ApiAddress::Tcp(addr) => format!("http://{addr}"),
            ApiAddress::Unix(path) => match path.to_str() {
                Some(p) if path.is_absolute() => format!("unix:{p}"),
                _ => {
                    return Err(XrayApiError::BadAddress {
                        address: address.to_string(),
                        detail: "a unix socket path must be absolute UTF-8".into(),
                    });
                }
            },
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| XrayApiError::BadAddress {
            address: address.to_string(),
            detail: e.to_string(),
        })?;
        let channel = endpoint
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(XrayApi {
            grpc: Grpc::new(channel),
            flavor,
            address: address.to_string(),
            timeout,
        })
    }

    /// Adds a VLESS user to the inbound `inbound_tag`, hot. `flow` is [`FLOW_VISION`] or empty.
    /// The user gets policy level 0, whose `statsUserUplink`/`statsUserDownlink` switches the
    /// config must turn on. An email the inbound already holds is [`XrayApiError::UserExists`]
    /// even when the UUID differs: to change a UUID, remove then add.
    pub async fn add_vless_user(
        &self,
        inbound_tag: &str,
        email: &str,
        uuid: &str,
        flow: &str,
    ) -> Result<(), XrayApiError> {
        let id = uuid::Uuid::parse_str(uuid).map_err(|_| XrayApiError::InvalidUuid {
            email: email.to_owned(),
        })?;
        let account = VlessAccount {
            id: id.hyphenated().to_string(),
            flow: flow.to_owned(),
            encryption: String::new(),
        };
        let user = User {
            level: 0,
            email: email.to_owned(),
            account: Some(self.pack("proxy.vless.Account", &account)),
        };
        let op = AddUserOperation { user: Some(user) };
        let op = self.pack("app.proxyman.command.AddUserOperation", &op);
        self.alter_inbound(inbound_tag, email, op, Some(uuid))
            .await?;
        debug!(inbound = inbound_tag, email, "xray user added");
        Ok(())
    }

    /// Removes the user `email` from the inbound `inbound_tag`. New connections of that user are
    /// refused from now on; connections already open keep running until they close (the API has
    /// no call that ends them).
    pub async fn remove_user(&self, inbound_tag: &str, email: &str) -> Result<(), XrayApiError> {
        let op = RemoveUserOperation {
            email: email.to_owned(),
        };
        let op = self.pack("app.proxyman.command.RemoveUserOperation", &op);
        self.alter_inbound(inbound_tag, email, op, None).await?;
        debug!(inbound = inbound_tag, email, "xray user removed");
        Ok(())
    }

    /// One user's counters, read without reset; `None` when the engine has none for that email
    /// (counters appear with a user's first connection and vanish when the engine restarts).
    pub async fn user_traffic(&self, email: &str) -> Result<Option<Traffic>, XrayApiError> {
        let pattern = format!("{USER_STAT_PREFIX}{email}>>>traffic>>>");
        let all = self.query_user_stats(pattern).await?;
        Ok(all.get(email).copied())
    }

    /// Every user's counters, read without reset, by email.
    pub async fn all_user_traffic(&self) -> Result<BTreeMap<String, Traffic>, XrayApiError> {
        self.query_user_stats(USER_STAT_PREFIX.to_owned()).await
    }

    /// How long the engine has been running (whole seconds). A value smaller than elapsed time
    /// allows means the engine restarted and its counters started again from zero: see
    /// [`engine_restarted`].
    pub async fn uptime(&self) -> Result<Duration, XrayApiError> {
        let path = self
            .flavor
            .path("app.stats.command.StatsService", "GetSysStats");
        let reply: SysStatsResponse = self
            .unary("GetSysStats", path, SysStatsRequest {})
            .await
            .map_err(|e| e.refused("GetSysStats"))?;
        Ok(Duration::from_secs(u64::from(reply.uptime)))
    }

    /// Polls [`uptime`](Self::uptime) until the API answers or `within` has passed; returns the
    /// engine's uptime, or the last error.
    pub async fn wait_ready(&self, within: Duration) -> Result<Duration, XrayApiError> {
        let deadline = Instant::now() + within;
        loop {
            match self.uptime().await {
                Ok(uptime) => return Ok(uptime),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn pack<M: prost::Message>(&self, message_type: &str, message: &M) -> TypedMessage {
        TypedMessage {
            r#type: self.flavor.type_name(message_type),
            value: message.encode_to_vec(),
        }
    }

    async fn alter_inbound(
        &self,
        tag: &str,
        email: &str,
        operation: TypedMessage,
        secret: Option<&str>,
    ) -> Result<(), XrayApiError> {
        let path = self
            .flavor
            .path("app.proxyman.command.HandlerService", "AlterInbound");
        let request = AlterInboundRequest {
            tag: tag.to_owned(),
            operation: Some(operation),
        };
        let _: AlterInboundResponse =
            self.unary("AlterInbound", path, request)
                .await
                .map_err(|e| match e {
                    CallError::Api(e) => e,
                    CallError::Status(status) => classify_alter(&status, tag, email, secret),
                })?;
        Ok(())
    }

    async fn query_user_stats(
        &self,
        pattern: String,
    ) -> Result<BTreeMap<String, Traffic>, XrayApiError> {
        let path = self
            .flavor
            .path("app.stats.command.StatsService", "QueryStats");
        let request = QueryStatsRequest {
            pattern,
            reset: false,
        };
        let reply: QueryStatsResponse = self
            .unary("QueryStats", path, request)
            .await
            .map_err(|e| e.refused("QueryStats"))?;
        let mut out = BTreeMap::<String, Traffic>::new();
        for stat in reply.stat {
            let Some((email, direction)) = parse_user_stat(&stat.name) else {
                debug!(name = %stat.name, "xray counter ignored");
                continue;
            };
            let value = u64::try_from(stat.value).map_err(|_| XrayApiError::BadReply {
                method: "QueryStats",
                detail: format!("negative counter {}", stat.name),
            })?;
            let entry = out.entry(email.to_owned()).or_default();
            match direction {
                Direction::Uplink => entry.uplink = value,
                Direction::Downlink => entry.downlink = value,
            }
        }
        Ok(out)
    }

    /// One unary call under the deadline. Transport failures and timeouts become
    /// [`XrayApiError`]s here; a refusal by the engine comes back as its status, for the caller
    /// to classify.
    async fn unary<Req, Resp>(
        &self,
        method: &'static str,
        path: String,
        request: Req,
    ) -> Result<Resp, CallError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = PathAndQuery::try_from(path).map_err(|e| XrayApiError::BadReply {
            method,
            detail: format!("bad path: {e}"),
        })?;
        let unavailable = |detail: String| XrayApiError::Unavailable {
            address: self.address.clone(),
            method,
            detail,
        };
        let mut grpc = self.grpc.clone();
        let call = async move {
            grpc.ready()
                .await
                .map_err(|e| unavailable(error_chain(&e)))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            match grpc.unary(tonic::Request::new(request), path, codec).await {
                Ok(response) => Ok(response.into_inner()),
                Err(status) if is_transport_failure(&status) => {
                    Err(unavailable(status.message().to_owned()).into())
                }
                Err(status) => Err(CallError::Status(status)),
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(XrayApiError::Timeout {
                    address: self.address.clone(),
                    method,
                    timeout: self.timeout,
                }
                .into())
            })
    }
}

/// Why a unary call failed: already classified, or refused by the engine with a status.
#[derive(Debug)]
enum CallError {
    Api(XrayApiError),
    Status(tonic::Status),
}

impl From<XrayApiError> for CallError {
    fn from(e: XrayApiError) -> Self {
        CallError::Api(e)
    }
}

impl CallError {
    /// For calls whose refusals need no further classification.
    fn refused(self, method: &'static str) -> XrayApiError {
        match self {
            CallError::Api(e) => e,
            CallError::Status(status) => XrayApiError::Refused {
                method,
                code: status.code(),
                message: status.message().to_owned(),
            },
        }
    }
}

/// Maps AlterInbound refusals onto the variants apply needs. The engine's texts (identical in
/// Xray and v2ray 4.34, `proxy/vless/validator.go` and `app/proxyman/command/command.go`):
/// `failed to get handler: TAG > … handler not found: TAG`, `User EMAIL already exists.`,
/// `User EMAIL not found.`. The handler check comes first: its text also says "not found".
fn classify_alter(
    status: &tonic::Status,
    tag: &str,
    email: &str,
    secret: Option<&str>,
) -> XrayApiError {
    let message = status.message();
    if message.contains("failed to get handler") {
        XrayApiError::InboundNotFound {
            tag: tag.to_owned(),
        }
    } else if message.contains("already exists") {
        XrayApiError::UserExists {
            tag: tag.to_owned(),
            email: email.to_owned(),
        }
    } else if message.contains(" not found") {
        XrayApiError::UserNotFound {
            tag: tag.to_owned(),
            email: email.to_owned(),
        }
    } else {
        let mut message = message.to_owned();
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            message = message.replace(secret, "<redacted>");
        }
        XrayApiError::Refused {
            method: "AlterInbound",
            code: status.code(),
            message,
        }
    }
}

/// tonic reports a refused or broken connection as a status too; those mean "engine not up".
fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    status.code() == tonic::Code::Unavailable
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Direction of a per-user counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Uplink,
    Downlink,
}

/// Splits `user>>>EMAIL>>>traffic>>>uplink|downlink` into the email and the direction; `None`
/// for any other name (both engines register only these two per user; newer Xray tracks
/// online users apart from counters).
pub fn parse_user_stat(name: &str) -> Option<(&str, Direction)> {
    let rest = name.strip_prefix(USER_STAT_PREFIX)?;
    let (email, direction) = if let Some(email) = rest.strip_suffix(">>>traffic>>>uplink") {
        (email, Direction::Uplink)
    } else {
        (
            rest.strip_suffix(">>>traffic>>>downlink")?,
            Direction::Downlink,
        )
    };
    (!email.is_empty()).then_some((email, direction))
}

/// One reading of the engine's uptime, with the local monotonic time it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UptimeSample {
    pub at: Instant,
    pub uptime: Duration,
}

/// Slack for [`engine_restarted`]: uptime is whole seconds, and the reading took a round trip.
pub const RESTART_SLACK: Duration = Duration::from_secs(2);

/// Whether the engine restarted between two readings: the start time each implies
/// (`at - uptime`) moved later by more than [`RESTART_SLACK`]. Catches a restart even when the
/// new uptime is already larger than the old one (a long gap between readings). A restart
/// within the slack of the previous start goes unseen here; counters that went backwards catch
/// that one.
pub fn engine_restarted(previous: UptimeSample, current: UptimeSample) -> bool {
    let start = |s: UptimeSample| s.at.checked_sub(s.uptime);
    match (start(previous), start(current)) {
        (Some(before), Some(now)) => now.saturating_duration_since(before) > RESTART_SLACK,
        // The monotonic clock is younger than the engine's uptime claims: compare readings.
        _ => current.uptime + RESTART_SLACK < previous.uptime,
    }
}
