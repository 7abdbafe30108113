//! What the store hands out and takes in: rows of hosts, services, users, credentials and
//! firewall rules, and the inputs of the mutations. Plain data; the SQL lives in the sibling modules.

use serde::{Deserialize, Serialize};
use vpn_shared::model::{Bandwidth, Protocol, ServiceOptions, ServiceSpec};

pub use vpn_shared::proto::admin::Servers;

use super::error::{Result, StoreError};

/// A user's standing. Only `Active` users are in any host's desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    /// Switched off by an operator.
    Suspended,
    /// Over the data limit.
    Limited,
    /// Past the expiry time.
    Expired,
    /// Waiting for first use before the expiry clock starts.
    OnHold,
}

/// The statuses whose users are in their hosts' desired states, as SQL: an on-hold user must
/// be able to connect, since its first traffic is what starts its clock.
pub(crate) const SERVING: &str = "('active', 'on_hold')";

impl UserStatus {
    /// Whether the user is in its hosts' desired states (see [`SERVING`]).
    pub fn serves(self) -> bool {
        matches!(self, UserStatus::Active | UserStatus::OnHold)
    }

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
            UserStatus::Limited => "limited",
            UserStatus::Expired => "expired",
            UserStatus::OnHold => "on_hold",
        }
    }

    /// Parses a stored or operator-supplied status name.
    pub fn parse(s: &str) -> Option<UserStatus> {
        Some(match s {
            "active" => UserStatus::Active,
            "suspended" => UserStatus::Suspended,
            "limited" => UserStatus::Limited,
            "expired" => UserStatus::Expired,
            "on_hold" | "on-hold" => UserStatus::OnHold,
            _ => return None,
        })
    }
}

impl std::fmt::Display for UserStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One enrolled (or waiting) host. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HostRow {
    /// UUID; the identity in the agent's certificate (`urn:vpn:agent:<id>`).
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// When its join token was used.
    pub enrolled_at: Option<i64>,
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<i64>,
    /// The generation of its current desired state; bumped by every change that touches it.
    pub generation: u64,
    pub agent_version: Option<String>,
    /// The remote address it was last seen from.
    pub address: Option<String>,
    pub last_seen: Option<i64>,
    pub acked_generation: Option<u64>,
    /// Hex digest of the state it acked.
    pub acked_digest: Option<String>,
}

/// The columns of [`HostRow`], in its field order, for `SELECT`s.
pub(crate) const HOST_COLUMNS: &str = "id, name, created_at, enrolled_at, cert_serial, \
    cert_not_after, generation, agent_version, address, last_seen, acked_generation, acked_digest";

/// A deployed service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub protocol: Protocol,
    /// First port; users get ports in `port ..= port + port_span - 1`.
    pub port: u16,
    pub port_span: u16,
    pub image: Option<String>,
    pub options: ServiceOptions,
    /// Host names when explicit, sorted.
    pub servers: Servers,
    /// Cap on the whole service's traffic on each of its hosts.
    pub bandwidth: Bandwidth,
    /// New connections per second admitted per source address, if limited.
    pub new_conn_rate: Option<u32>,
    pub created_at: i64,
}

impl ServiceRow {
    /// The service as a host runs it.
    pub fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            name: self.name.clone(),
            protocol: self.protocol,
            port: self.port,
            image: self.image.clone(),
            options: self.options.clone(),
            bandwidth: self.bandwidth,
            new_conn_rate: self.new_conn_rate,
        }
    }
}

/// The range size a service gets when the operator names none.
pub const DEFAULT_PORT_SPAN: u16 = 1000;
/// Ports of a service whose users share its port (VLESS on Xray): the service port alone (the
/// engine's API is a unix socket).
pub const SHARED_PORT_SPAN: u16 = 1;

/// What `deploy_service` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewService {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// `None` means [`DEFAULT_PORT_SPAN`].
    pub port_span: Option<u16>,
    pub image: Option<String>,
    pub options: ServiceOptions,
    pub servers: Servers,
    pub bandwidth: Bandwidth,
    pub new_conn_rate: Option<u32>,
}

/// A user as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// UUID; stable for the user's lifetime, and the VLESS id once that protocol exists.
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub note: Option<String>,
    pub status: UserStatus,
    /// Host names when explicit, sorted.
    pub servers: Servers,
    /// `None`: every protocol, including ones deployed later.
    pub protocols: Option<Vec<Protocol>>,
    /// The user's own rate limit, on each of its hosts.
    pub bandwidth: Bandwidth,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRow {
    /// Whether the user may hold a credential of this protocol.
    pub fn allows(&self, protocol: Protocol) -> bool {
        self.protocols
            .as_ref()
            .is_none_or(|p| p.contains(&protocol))
    }
}

/// What `add_user` needs. New users start in the status their quota gives them (`active`
/// unless on hold, already expired or given a limit of 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub email: Option<String>,
    pub note: Option<String>,
    pub servers: Servers,
    /// `None` means every protocol.
    pub protocols: Option<Vec<Protocol>>,
    pub bandwidth: Bandwidth,
    pub quota: QuotaSettings,
}

/// A user's quota as the operator set it, times resolved to Unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaSettings {
    /// Bytes per period; `None`: unlimited.
    pub data_limit: Option<u64>,
    pub reset: crate::quota::Reset,
    /// `None`: never (or, on hold, not started yet).
    pub expires_at: Option<i64>,
    pub on_hold: Option<crate::quota::OnHold>,
}

/// Changes to a quota; `None` leaves a field, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaEditFields {
    pub data_limit: Option<Option<u64>>,
    pub reset: Option<crate::quota::Reset>,
    pub expires_at: Option<Option<i64>>,
    pub on_hold: Option<Option<crate::quota::OnHold>>,
}

impl QuotaEditFields {
    pub fn is_empty(&self) -> bool {
        *self == QuotaEditFields::default()
    }

    /// `old` with these changes. Setting an expiry ends a hold and putting a user on hold
    /// clears its expiry: the two exclude each other.
    pub fn apply(&self, old: &QuotaSettings) -> QuotaSettings {
        let mut new = *old;
        if let Some(l) = self.data_limit {
            new.data_limit = l;
        }
        if let Some(r) = self.reset {
            new.reset = r;
        }
        if let Some(e) = self.expires_at {
            new.expires_at = e;
            if e.is_some() {
                new.on_hold = None;
            }
        }
        if let Some(h) = self.on_hold {
            new.on_hold = h;
            if h.is_some() {
                new.expires_at = None;
            }
        }
        new
    }
}

/// What `edit_user` changes; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditUserFields {
    pub email: Option<Option<String>>,
    pub note: Option<Option<String>>,
    /// Replaces the whole limit; `Some(Bandwidth::default())` removes it.
    pub bandwidth: Option<Bandwidth>,
}

/// One block-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRuleRow {
    /// Normalized CIDR (`203.0.113.7/32`, `2001:db8::/32`).
    pub target: String,
    /// The host the rule is for; `None` for every host, including hosts added later.
    pub host_id: Option<String>,
    /// That host's name.
    pub server: Option<String>,
    pub created_at: i64,
}

/// A user's credential for one service, independent of hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub service: String,
    pub protocol: Protocol,
    /// The user's own port on that service.
    pub port: u16,
    /// Random 16 bytes, base64url without padding (the Shadowsocks password).
    pub secret: String,
    /// The service's options, which a client link needs (the cipher, for example).
    pub options: ServiceOptions,
}

/// Everything `vpn users show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDetail {
    pub user: UserRow,
    /// Sorted by service name.
    pub credentials: Vec<CredentialRow>,
    /// The hosts the user is assigned to, sorted by name.
    pub hosts: Vec<HostRow>,
}

/// Reads a stored protocol name.
pub(crate) fn parse_protocol(s: &str) -> Result<Protocol> {
    Protocol::parse(s).ok_or_else(|| StoreError::corrupt("protocol", format!("unknown {s:?}")))
}

/// Reads a stored comma-separated protocol list (`NULL` is "all").
pub(crate) fn parse_protocols(s: Option<&str>) -> Result<Option<Vec<Protocol>>> {
    s.map(|s| s.split(',').map(parse_protocol).collect())
        .transpose()
}

/// Writes a protocol list for the `protocols` column.
pub(crate) fn format_protocols(p: Option<&[Protocol]>) -> Option<String> {
    p.map(|p| p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(","))
}

/// Reads a stored status name.
pub(crate) fn parse_status(s: &str) -> Result<UserStatus> {
    UserStatus::parse(s).ok_or_else(|| StoreError::corrupt("user status", format!("unknown {s:?}")))
}

/// Reads stored service options.
pub(crate) fn parse_options(s: &str) -> Result<ServiceOptions> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt("service options", e))
}

/// Writes a rate (or a connection rate) for an INTEGER column; validation keeps it in range.
pub(crate) fn rate_to_db(rate: Option<u64>) -> Result<Option<i64>> {
    rate.map(|r| {
        i64::try_from(r)
            .map_err(|_| StoreError::invalid("bandwidth", format!("{r} is out of range")))
    })
    .transpose()
}

/// Reads a stored `(down, up)` pair of rates.
pub(crate) fn bandwidth_from_db(down: Option<i64>, up: Option<i64>) -> Result<Bandwidth> {
    let rate = |r: Option<i64>| {
        r.map(|r| u64::try_from(r).map_err(|_| StoreError::corrupt("bandwidth", r)))
            .transpose()
    };
    Ok(Bandwidth {
        down_bps: rate(down)?,
        up_bps: rate(up)?,
    })
}

/// Reads a stored new-connection rate.
pub(crate) fn conn_rate_from_db(rate: Option<i64>) -> Result<Option<u32>> {
    rate.map(|r| u32::try_from(r).map_err(|_| StoreError::corrupt("new_conn_rate", r)))
        .transpose()
}

/// Builds [`Servers`] from the `all_servers` flag and the explicit host names.
pub(crate) fn servers(all: bool, names: Vec<String>) -> Servers {
    if all {
        Servers::All
    } else {
        Servers::Named(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in [
            UserStatus::Active,
            UserStatus::Suspended,
            UserStatus::Limited,
            UserStatus::Expired,
            UserStatus::OnHold,
        ] {
            assert_eq!(UserStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(UserStatus::parse("gone"), None);
    }

    #[test]
    fn protocol_lists_round_trip() {
        let list = vec![Protocol::Shadowsocks];
        let text = format_protocols(Some(&list));
        assert_eq!(parse_protocols(text.as_deref()).unwrap(), Some(list));
        assert_eq!(parse_protocols(None).unwrap(), None);
        assert!(parse_protocols(Some("carrier-pigeon")).is_err());
    }
}
