//! The shoes config of one proxy user (pure: typed structs → YAML).
//!
//! shoes (crate `shoes` 0.3.2) holds one user name and password per listener, so each user has a
//! listener, a port and a process of their own (see `super` for why a process):
//!
//! ```yaml
//! - address: 0.0.0.0:3129           # bind_ip:port of the user
//!   protocol:
//!     type: mixed                   # http | socks | mixed (both, told apart by the first byte)
//!     username: alice
//!     password: …
//!     udp_enabled: false            # socks and mixed only: no UDP ASSOCIATE
//!   rules:                          # the host's own loopback is refused, the rest is direct
//!     - masks: [127.0.0.0/8, …]
//!       action: block
//!     - masks: [0.0.0.0/0, ::/0]
//!       action: allow
//!       client_chain: { protocol: { type: direct } }
//! ```
//!
//! UDP is off: a SOCKS5 UDP ASSOCIATE relays on a random port that the agent's firewall neither
//! opens, counts nor shapes, so a user's traffic would escape their limit and their counters.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use vpn_shared::model::ProxyKind;

/// One user's listener.
#[derive(Debug, Clone, Copy)]
pub struct ProxyUser<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub port: u16,
}

/// Why a proxy config could not be rendered; each variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// `bind_ip` is not an IP address.
    #[error("bind_ip: {0:?} is not an IP address")]
    BindIp(String),
    /// A user's port is 0.
    #[error("user {username}: port 0")]
    Port { username: String },
    /// Empty, too long for SOCKS5 (RFC 1929: 1–255 bytes), or a `:` that HTTP Basic cannot carry
    /// in a user name.
    #[error("user {username}: {field} {reason}")]
    Credential {
        username: String,
        field: &'static str,
        reason: &'static str,
    },
    /// Serializing failed (not expected for these types).
    #[error("encoding the shoes config: {0}")]
    Yaml(#[from] serde_norway::Error),
}

/// The shoes YAML of `user`'s listener of `kind` on `bind_ip:port`.
pub fn render(
    kind: ProxyKind,
    user: &ProxyUser<'_>,
    bind_ip: &str,
) -> Result<String, ProxyConfigError> {
    let ip: IpAddr = bind_ip
        .parse()
        .map_err(|_| ProxyConfigError::BindIp(bind_ip.to_owned()))?;
    validate(user)?;
    let listener = Listener {
        address: SocketAddr::new(ip, user.port).to_string(),
        protocol: Protocol {
            kind: match kind {
                ProxyKind::Http => "http",
                ProxyKind::Socks5 => "socks",
                ProxyKind::Both => "mixed",
            },
            username: user.username,
            password: user.password,
            udp_enabled: (kind != ProxyKind::Http).then_some(false),
        },
        rules: rules(),
    };
    // A BTreeMap nowhere: field order is the struct's, so the output is stable for golden files.
    Ok(serde_norway::to_string(&[listener])?)
}

fn validate(user: &ProxyUser<'_>) -> Result<(), ProxyConfigError> {
    if user.port == 0 {
        return Err(ProxyConfigError::Port {
            username: user.username.to_owned(),
        });
    }
    let bad = |field, reason| ProxyConfigError::Credential {
        username: user.username.to_owned(),
        field,
        reason,
    };
    for (field, value) in [("username", user.username), ("password", user.password)] {
        if value.is_empty() {
            return Err(bad(field, "is empty"));
        }
        if value.len() > 255 {
            return Err(bad(
                field,
                "is longer than 255 bytes (SOCKS5 cannot carry it)",
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(bad(field, "contains a control character"));
        }
    }
    if user.username.contains(':') {
        return Err(bad("username", "contains ':' (HTTP Basic cannot carry it)"));
    }
    Ok(())
}

#[derive(Serialize)]
struct Listener<'a> {
    address: String,
    protocol: Protocol<'a>,
    rules: [Rule; 2],
}

#[derive(Serialize)]
struct Protocol<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp_enabled: Option<bool>,
}

/// A shoes routing rule: `masks` → block, or allow directly.
#[derive(Serialize)]
struct Rule {
    masks: &'static [&'static str],
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_chain: Option<BTreeMap<&'static str, BTreeMap<&'static str, &'static str>>>,
}

/// Destinations refused for every user: the host itself, as the other engines refuse them (a
/// proxy user must not reach what the host binds to its loopback).
const HOST_ONLY: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "::ffff:127.0.0.0/104",
    "localhost",
];

fn rules() -> [Rule; 2] {
    let direct = BTreeMap::from([("protocol", BTreeMap::from([("type", "direct")]))]);
    [
        Rule {
            masks: HOST_ONLY,
            action: "block",
            client_chain: None,
        },
        Rule {
            masks: &["0.0.0.0/0", "::/0"],
            action: "allow",
            client_chain: Some(direct),
        },
    ]
}
