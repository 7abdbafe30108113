//! The shoes server config of a VLESS + Reality service (pure: typed structs → YAML).
//!
//! shoes (crate `shoes`, see `docs/SHOES.md`) holds one VLESS user per listener, so a service is
//! one listener per user, each on the user's own port:
//!
//! ```yaml
//! - address: 0.0.0.0:20001          # bind_ip:port of the user
//!   protocol:
//!     type: tls
//!     reality_targets:
//!       www.example.com:            # the SNI clients send (`sni=` of the link)
//!         private_key: …            # the service's X25519 key, base64url without padding
//!         short_ids: [0123456789abcdef]
//!         dest: www.example.com:443 # where non-Reality handshakes are forwarded
//!         vision: true              # = flow xtls-rprx-vision, required for TCP
//!         protocol: { type: vless, user_id: UUID, udp_enabled: true }
//! ```
//!
//! shoes reloads a changed config by stopping *every* listener for three seconds and cutting
//! every old connection after a grace period, so the driver gives each user a process of its
//! own and calls [`render_config`] with that one user; several users in one file remain valid
//! for tests and small hosts.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use vpn_shared::reality::{RealityKeyError, decode_key};

/// The Reality side of a service, shared by all of its users.
#[derive(Debug, Clone, Copy)]
pub struct RealityServer<'a> {
    /// X25519 private key, base64url without padding.
    pub private_key: &'a str,
    /// Short ids a client may present (`sid=` of a link), 8–16 hex characters, even length.
    pub short_ids: &'a [String],
    /// The server name clients send; non-Reality handshakes for it go to `dest`.
    pub sni: &'a str,
    /// `host:port` of the real TLS 1.3 site the server impersonates. A host *name*: shoes
    /// writes it into the certificate it signs for Reality clients and refuses an IP there.
    pub dest: &'a str,
}

/// One user's listener.
#[derive(Debug, Clone, Copy)]
pub struct ShoesUser<'a> {
    /// Names the user in errors (shoes itself has no user names).
    pub email: &'a str,
    /// The VLESS id, hyphenated UUID.
    pub uuid: &'a str,
    pub port: u16,
}

/// Why a shoes config could not be rendered; each variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ShoesError {
    /// `private_key` is not a base64url X25519 key.
    #[error("reality private_key: {0}")]
    PrivateKey(#[source] RealityKeyError),
    /// `short_ids` is empty.
    #[error("reality short_ids: at least one is needed")]
    NoShortIds,
    /// A short id is not 8–16 hex characters of even length.
    #[error("reality short_ids: {0:?} is not 8-16 hex characters of even length")]
    ShortId(String),
    /// `sni` is not a DNS host name.
    #[error("reality sni: {0:?} is not a host name")]
    Sni(String),
    /// `dest` is not `host:port` with a host name.
    #[error("reality dest: {0:?} is not host:port with a host name (shoes refuses IP addresses)")]
    Dest(String),
    /// `bind_ip` is not an IP address.
    #[error("bind_ip: {0:?} is not an IP address")]
    BindIp(String),
    /// No users: shoes would listen on nothing.
    #[error("users: at least one is needed")]
    NoUsers,
    /// A user's `uuid` is not a hyphenated UUID.
    #[error("user {email}: uuid {uuid:?} is not a hyphenated UUID")]
    Uuid { email: String, uuid: String },
    /// A user's `port` is 0.
    #[error("user {email}: port 0")]
    Port { email: String },
    /// Two users on one port.
    #[error("user {email}: port {port} is already used by {other}")]
    DuplicatePort {
        email: String,
        port: u16,
        other: String,
    },
    /// Serializing failed (not expected for these types).
    #[error("encoding the shoes config: {0}")]
    Yaml(#[from] serde_norway::Error),
}

/// The shoes YAML for `users`, each a VLESS-over-Reality listener with XTLS Vision on
/// `bind_ip:port`, in the order given.
/// Users reach everything but the host itself (its loopback is refused).
pub fn render_config(
    reality: &RealityServer,
    users: &[ShoesUser],
    bind_ip: &str,
) -> Result<String, ShoesError> {
    render(reality, users, bind_ip, Outbound::HostBlocked)
}

/// Like [`render_config`] but without the host block: only for tests whose servers can only
/// be on this machine's loopback.
pub fn render_config_open(
    reality: &RealityServer,
    users: &[ShoesUser],
    bind_ip: &str,
) -> Result<String, ShoesError> {
    render(reality, users, bind_ip, Outbound::Open)
}

fn render(
    reality: &RealityServer,
    users: &[ShoesUser],
    bind_ip: &str,
    outbound: Outbound,
) -> Result<String, ShoesError> {
    validate_reality(reality)?;
    let ip: IpAddr = bind_ip
        .parse()
        .map_err(|_| ShoesError::BindIp(bind_ip.to_string()))?;
    if users.is_empty() {
        return Err(ShoesError::NoUsers);
    }
    let mut ports = BTreeMap::new();
    let mut listeners = Vec::with_capacity(users.len());
    for user in users {
        validate_user(user)?;
        if let Some(other) = ports.insert(user.port, user.email) {
            return Err(ShoesError::DuplicatePort {
                email: user.email.to_string(),
                port: user.port,
                other: other.to_string(),
            });
        }
        listeners.push(listener(reality, user, ip, outbound));
    }
    Ok(serde_norway::to_string(&listeners)?)
}

#[derive(Serialize)]
struct Listener<'a> {
    address: String,
    protocol: Tls<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<[Rule; 2]>,
}

/// A shoes routing rule: `masks` → block, or allow directly.
#[derive(Serialize)]
struct Rule {
    masks: &'static [&'static str],
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_chain: Option<Chain>,
}

#[derive(Serialize)]
struct Chain {
    protocol: Direct,
}

#[derive(Serialize)]
struct Direct {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Destinations refused for every user: the host itself, as the Shadowsocks ACL and the Xray
/// config refuse them (a VPN user must not reach what the host binds to its loopback).
const HOST_ONLY: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "::ffff:127.0.0.0/104",
    "localhost",
];

/// Where users may go: everywhere but the host ([`render_config`]), or everywhere
/// ([`render_config_open`], for tests whose only server is on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbound {
    HostBlocked,
    Open,
}

fn rules(outbound: Outbound) -> Option<[Rule; 2]> {
    (outbound == Outbound::HostBlocked).then_some([
        Rule {
            masks: HOST_ONLY,
            action: "block",
            client_chain: None,
        },
        Rule {
            masks: &["0.0.0.0/0", "::/0"],
            action: "allow",
            client_chain: Some(Chain {
                protocol: Direct { kind: "direct" },
            }),
        },
    ])
}

#[derive(Serialize)]
struct Tls<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Keyed by SNI; exactly one entry here.
    reality_targets: BTreeMap<&'a str, RealityTarget<'a>>,
}

#[derive(Serialize)]
struct RealityTarget<'a> {
    private_key: &'a str,
    short_ids: &'a [String],
    dest: &'a str,
    vision: bool,
    protocol: Vless<'a>,
}

#[derive(Serialize)]
struct Vless<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
    /// UDP as XUDP inside the VLESS connection, as Xray's VLESS inbound allows.
    udp_enabled: bool,
}

fn listener<'a>(
    reality: &RealityServer<'a>,
    user: &ShoesUser<'a>,
    ip: IpAddr,
    outbound: Outbound,
) -> Listener<'a> {
    let target = RealityTarget {
        private_key: reality.private_key,
        short_ids: reality.short_ids,
        dest: reality.dest,
        vision: true,
        protocol: Vless {
            kind: "vless",
            user_id: user.uuid,
            udp_enabled: true,
        },
    };
    Listener {
        address: SocketAddr::new(ip, user.port).to_string(),
        protocol: Tls {
            kind: "tls",
            reality_targets: BTreeMap::from([(reality.sni, target)]),
        },
        rules: rules(outbound),
    }
}

fn validate_reality(reality: &RealityServer) -> Result<(), ShoesError> {
    decode_key(reality.private_key).map_err(ShoesError::PrivateKey)?;
    if reality.short_ids.is_empty() {
        return Err(ShoesError::NoShortIds);
    }
    let mut seen = BTreeSet::new();
    for id in reality.short_ids {
        if !is_short_id(id) || !seen.insert(id.as_str()) {
            return Err(ShoesError::ShortId(id.clone()));
        }
    }
    if !is_host_name(reality.sni) {
        return Err(ShoesError::Sni(reality.sni.to_string()));
    }
    let dest_ok = reality.dest.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok_and(|p| p != 0) && is_host_name(host)
    });
    if !dest_ok {
        return Err(ShoesError::Dest(reality.dest.to_string()));
    }
    Ok(())
}

fn validate_user(user: &ShoesUser) -> Result<(), ShoesError> {
    // Only the hyphenated form: shoes and Xray clients both write it so in links.
    if user.uuid.len() != 36 || uuid::Uuid::try_parse(user.uuid).is_err() {
        return Err(ShoesError::Uuid {
            email: user.email.to_string(),
            uuid: user.uuid.to_string(),
        });
    }
    if user.port == 0 {
        return Err(ShoesError::Port {
            email: user.email.to_string(),
        });
    }
    Ok(())
}

/// Reality short ids are 0–16 hex characters of even length (Xray decodes them as bytes); the
/// product asks for at least 8 (SPEC §2.4) so that ids cannot be guessed.
fn is_short_id(id: &str) -> bool {
    (8..=16).contains(&id.len())
        && id.len().is_multiple_of(2)
        && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens; not an IPv4 literal.
fn is_host_name(host: &str) -> bool {
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    labels_ok && host.parse::<IpAddr>().is_err()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// RFC 7748 §6.1's private key (any valid key does; this one is documented).
    const KEY: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo";

    fn short_ids() -> Vec<String> {
        vec!["0123456789abcdef".into(), "a1b2c3d4".into()]
    }

    fn reality(ids: &[String]) -> RealityServer<'_> {
        RealityServer {
            private_key: KEY,
            short_ids: ids,
            sni: "www.example.com",
            dest: "www.example.com:443",
        }
    }

    fn users() -> Vec<ShoesUser<'static>> {
        vec![
            ShoesUser {
                email: "alice@example.com",
                uuid: "b85798ef-e9dc-46a4-9a87-8da4499d36d0",
                port: 20001,
            },
            ShoesUser {
                email: "bob@example.com",
                uuid: "3f1c5a0e-6b7d-4e2a-9c8f-1d2e3f4a5b6c",
                port: 20002,
            },
        ]
    }

    fn cases() -> Vec<(&'static str, String)> {
        let ids = short_ids();
        let users = users();
        vec![
            (
                "two_users",
                render_config(&reality(&ids), &users, "0.0.0.0").unwrap(),
            ),
            (
                "one_user_ipv6",
                render_config(&reality(&ids[..1]), &users[..1], "::").unwrap(),
            ),
        ]
    }

    /// `GOLDEN_UPDATE=1` rewrites `golden/*.yaml`; review the diff like code.
    #[test]
    fn golden_configs() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/drivers/vless/golden");
        let update = std::env::var_os("GOLDEN_UPDATE").is_some();
        let mut mismatches = Vec::new();
        for (name, actual) in cases() {
            let path = dir.join(format!("{name}.yaml"));
            if update {
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
            if expected != actual {
                mismatches.push(format!("{name}:\n{actual}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "golden mismatch:\n{}",
            mismatches.join("\n")
        );
    }

    #[test]
    fn one_listener_per_user_with_vision() {
        let ids = short_ids();
        let text = render_config(&reality(&ids), &users(), "127.0.0.1").unwrap();
        let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let listeners = doc.as_sequence().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1]["address"].as_str(), Some("127.0.0.1:20002"));
        let target = &listeners[1]["protocol"]["reality_targets"]["www.example.com"];
        assert_eq!(target["vision"].as_bool(), Some(true));
        assert_eq!(
            target["protocol"]["user_id"].as_str(),
            Some("3f1c5a0e-6b7d-4e2a-9c8f-1d2e3f4a5b6c")
        );
    }

    /// shoes reads YAML with serde_yaml: a short id of digits must stay a string there.
    #[test]
    fn short_ids_that_look_like_numbers_stay_strings() {
        let ids = vec!["12345678".to_string(), "1e100000".to_string()];
        let text = render_config(&reality(&ids), &users(), "0.0.0.0").unwrap();
        let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let target = &doc[0]["protocol"]["reality_targets"]["www.example.com"];
        assert_eq!(target["short_ids"][0].as_str(), Some("12345678"), "{text}");
        assert_eq!(target["short_ids"][1].as_str(), Some("1e100000"), "{text}");
    }

    fn error_of(reality: RealityServer, users: &[ShoesUser], bind_ip: &str) -> String {
        render_config(&reality, users, bind_ip)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_reality_fields_are_named() {
        let ids = short_ids();
        let users = users();
        let bad_key = RealityServer {
            private_key: "AAAA",
            ..reality(&ids)
        };
        assert!(error_of(bad_key, &users, "0.0.0.0").starts_with("reality private_key: "));
        assert_eq!(
            error_of(reality(&[]), &users, "0.0.0.0"),
            "reality short_ids: at least one is needed"
        );
        for bad in [
            "abc",
            "0123456",
            "0123456789abcdef01",
            "0123456z",
            "abcdef012",
        ] {
            let ids = vec![bad.to_string()];
            assert_eq!(
                error_of(reality(&ids), &users, "0.0.0.0"),
                format!("reality short_ids: {bad:?} is not 8-16 hex characters of even length")
            );
        }
        let twice = vec!["a1b2c3d4".to_string(), "a1b2c3d4".to_string()];
        assert!(error_of(reality(&twice), &users, "0.0.0.0").starts_with("reality short_ids: "));
        for sni in ["", "1.2.3.4", "bad_name.com", "-x.com", "a..b"] {
            let r = RealityServer {
                sni,
                ..reality(&ids)
            };
            assert_eq!(
                error_of(r, &users, "0.0.0.0"),
                format!("reality sni: {sni:?} is not a host name")
            );
        }
        for dest in [
            "localhost",
            "localhost:0",
            ":443",
            "host:http",
            "a b:443",
            "::1:443",
            // shoes 0.3.2 fails every handshake with "REALITY requires a hostname destination".
            "127.0.0.1:443",
            "[::1]:443",
        ] {
            let r = RealityServer {
                dest,
                ..reality(&ids)
            };
            assert_eq!(
                error_of(r, &users, "0.0.0.0"),
                format!(
                    "reality dest: {dest:?} is not host:port with a host name (shoes refuses IP \
                     addresses)"
                )
            );
        }
        for dest in ["localhost:8443", "www.example.com:443"] {
            let r = RealityServer {
                dest,
                ..reality(&ids)
            };
            assert!(render_config(&r, &users, "0.0.0.0").is_ok(), "{dest}");
        }
    }

    #[test]
    fn bad_users_and_bind_ip_are_named() {
        let ids = short_ids();
        let mut users = users();
        assert_eq!(
            error_of(reality(&ids), &users, "localhost"),
            "bind_ip: \"localhost\" is not an IP address"
        );
        assert_eq!(
            error_of(reality(&ids), &[], "0.0.0.0"),
            "users: at least one is needed"
        );
        users[1].port = 20001;
        assert_eq!(
            error_of(reality(&ids), &users, "0.0.0.0"),
            "user bob@example.com: port 20001 is already used by alice@example.com"
        );
        users[1].port = 0;
        assert_eq!(
            error_of(reality(&ids), &users, "0.0.0.0"),
            "user bob@example.com: port 0"
        );
        for uuid in ["", "not-a-uuid", "b85798efe9dc46a49a878da4499d36d0"] {
            users[1] = ShoesUser { uuid, ..users[0] };
            assert_eq!(
                error_of(reality(&ids), &users[1..], "0.0.0.0"),
                format!("user alice@example.com: uuid {uuid:?} is not a hyphenated UUID")
            );
        }
    }
}
