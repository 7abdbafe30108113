//! A client for the Xray gRPC API: hot user changes through `HandlerService.AlterInbound` and
//! per-user traffic through `StatsService`, read **without** reset (SPEC §2.6).
//!
//! - [`XrayApi`]: the client; every call has a deadline.
//! - [`Flavor`]: Xray (production) or v2ray 4.34 (the real engine the tests run, same messages
//!   under other package names).
//! - [`ApiAddress`]: where the API listens, a loopback TCP port or a unix socket.
//! - `counters`: the pure halves ([`parse_user_stat`], [`engine_restarted`]).
//! - `error`: [`XrayApiError`] and the mapping of the engine's refusals onto it.
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

mod counters;
mod error;
pub mod proto;
#[cfg(test)]
mod tests;

pub use self::counters::{
    Direction, RESTART_SLACK, Traffic, USER_STAT_PREFIX, UptimeSample, engine_restarted,
    parse_user_stat,
};
pub use self::error::XrayApiError;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use self::error::{CallError, classify_alter, error_chain, is_transport_failure};
use self::proto::{
    AddUserOperation, AlterInboundRequest, AlterInboundResponse, QueryStatsRequest,
    QueryStatsResponse, RemoveUserOperation, SysStatsRequest, SysStatsResponse, TypedMessage, User,
    VlessAccount,
};

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
        // What goes on the wire, and what an engine's error text could quote back.
        let canonical = id.hyphenated().to_string();
        let account = VlessAccount {
            id: canonical.clone(),
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
        self.alter_inbound(inbound_tag, email, op, Some(&canonical))
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
