//! The Xray-core configuration of one VLESS + Reality service (pure).
//!
//! Key names and case are Xray's own (`realitySettings.privateKey`, `shortIds`, `serverNames`,
//! `dest`, `flow`): the seed tool wrote them in the wrong case and Xray silently ignored them.
//! Typed structs with serde renames keep every key spelled once, and golden files beside this
//! module pin the output.
//!
//! What the file holds:
//! - the VLESS inbound on the service port with every current user (email = the user's id,
//!   so `user>>>ID>>>traffic>>>…` counters name the user whatever the case of their name) — users are also added and removed hot
//!   through the API; the file only matters when Xray (re)starts, so it is not part of the
//!   container's spec hash;
//! - the API (HandlerService and StatsService) on a unix socket in the service's run directory
//!   (`api.listen` with a path): it has no authentication, so no TCP port at all — neither a
//!   local process nor a VPN user through the tunnel can reach it; `stats` and level-0 per-user
//!   uplink/downlink counters;
//! - a block rule for the host's own loopback (as the Shadowsocks ACL does), so VPN users reach
//!   nothing bound to 127.0.0.1 on the host;
//! - for each user with a firewall mark, a `freedom` outbound with `sockopt.mark` and a rule
//!   routing that user's email to it, so tc can shape the user by mark.

use serde::Serialize;
use vpn_shared::model::{VLESS_FLOW, VlessOptions};

/// Tag of the VLESS inbound (users are added to and removed from it through the API).
pub const INBOUND_TAG: &str = "vless-in";
/// Tag of the API handler.
pub const API_TAG: &str = "api";
const DIRECT: &str = "direct";
const BLOCK: &str = "block";

/// Destinations refused for every user: the host itself (loopback, "this host" and the
/// IPv4-mapped forms), as `shadowsocks::OUTBOUND_ACL` refuses them.
const HOST_ONLY: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "::ffff:127.0.0.0/104",
    "::ffff:0.0.0.0/104",
];

/// One user as the engine knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrayUser<'a> {
    /// Xray's `email`: the user's id.
    pub email: &'a str,
    pub uuid: &'a str,
    /// The firewall mark of this user's outbound sockets, for users tc shapes.
    pub mark: Option<u32>,
}

/// What one service's configuration is made from.
#[derive(Debug, Clone)]
pub struct XrayService<'a> {
    /// The VLESS port, on every address.
    pub port: u16,
    /// The API's unix socket, an absolute path (Xray reads a `listen` starting with `/` so).
    pub api_socket: &'a str,
    pub options: &'a VlessOptions,
}

#[derive(Serialize)]
struct Config<'a> {
    log: Log,
    api: Api<'a>,
    stats: Empty,
    policy: Policy,
    inbounds: [VlessInbound<'a>; 1],
    outbounds: Vec<Outbound>,
    routing: Routing<'a>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Log {
    loglevel: &'static str,
}

#[derive(Serialize)]
struct Api<'a> {
    tag: &'static str,
    listen: &'a str,
    services: [&'static str; 2],
}

#[derive(Serialize)]
struct Policy {
    levels: Levels,
}

#[derive(Serialize)]
struct Levels {
    #[serde(rename = "0")]
    zero: Level,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Level {
    stats_user_uplink: bool,
    stats_user_downlink: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VlessInbound<'a> {
    tag: &'static str,
    listen: &'static str,
    port: u16,
    protocol: &'static str,
    settings: VlessSettings<'a>,
    stream_settings: StreamSettings<'a>,
    sniffing: Sniffing,
}

#[derive(Serialize)]
struct VlessSettings<'a> {
    clients: Vec<Client<'a>>,
    decryption: &'static str,
}

#[derive(Serialize)]
struct Client<'a> {
    id: &'a str,
    email: &'a str,
    flow: &'static str,
    level: u8,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamSettings<'a> {
    network: &'static str,
    security: &'static str,
    reality_settings: RealitySettings<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RealitySettings<'a> {
    show: bool,
    dest: &'a str,
    xver: u8,
    server_names: [&'a str; 1],
    private_key: &'a str,
    short_ids: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sniffing {
    enabled: bool,
    dest_override: [&'static str; 2],
    route_only: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outbound {
    tag: String,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_settings: Option<OutboundStream>,
}

#[derive(Serialize)]
struct OutboundStream {
    sockopt: Sockopt,
}

#[derive(Serialize)]
struct Sockopt {
    mark: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Routing<'a> {
    domain_strategy: &'static str,
    rules: Vec<Rule<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'static [&'static str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<[&'a str; 1]>,
    outbound_tag: String,
}

impl<'a> Rule<'a> {
    fn to(outbound: &str) -> Rule<'a> {
        Rule {
            kind: "field",
            ip: None,
            domain: None,
            user: None,
            outbound_tag: outbound.to_owned(),
        }
    }
}

/// The outbound tag of a marked user.
pub fn user_outbound(mark: u32) -> String {
    format!("mark-{mark:08x}")
}

/// The whole configuration as pretty JSON (operators read it when debugging a host).
pub fn render(service: &XrayService<'_>, users: &[XrayUser<'_>]) -> String {
    let o = service.options;
    let clients = users
        .iter()
        .map(|u| Client {
            id: u.uuid,
            email: u.email,
            flow: VLESS_FLOW,
            level: 0,
        })
        .collect();
    let mut outbounds = vec![
        Outbound {
            tag: DIRECT.into(),
            protocol: "freedom",
            stream_settings: None,
        },
        Outbound {
            tag: BLOCK.into(),
            protocol: "blackhole",
            stream_settings: None,
        },
    ];
    let mut rules = vec![
        Rule {
            ip: Some(HOST_ONLY),
            ..Rule::to(BLOCK)
        },
        Rule {
            domain: Some(["full:localhost"]),
            ..Rule::to(BLOCK)
        },
    ];
    for u in users {
        let Some(mark) = u.mark else { continue };
        outbounds.push(Outbound {
            tag: user_outbound(mark),
            protocol: "freedom",
            stream_settings: Some(OutboundStream {
                sockopt: Sockopt { mark },
            }),
        });
        rules.push(Rule {
            user: Some([u.email]),
            ..Rule::to(&user_outbound(mark))
        });
    }
    let config = Config {
        log: Log {
            loglevel: "warning",
        },
        api: Api {
            tag: API_TAG,
            listen: service.api_socket,
            services: ["HandlerService", "StatsService"],
        },
        stats: Empty {},
        policy: Policy {
            levels: Levels {
                zero: Level {
                    stats_user_uplink: true,
                    stats_user_downlink: true,
                },
            },
        },
        inbounds: [VlessInbound {
            tag: INBOUND_TAG,
            listen: "0.0.0.0",
            port: service.port,
            protocol: "vless",
            settings: VlessSettings {
                clients,
                decryption: "none",
            },
            stream_settings: StreamSettings {
                network: "tcp",
                security: "reality",
                reality_settings: RealitySettings {
                    show: false,
                    dest: &o.dest,
                    xver: 0,
                    server_names: [&o.sni],
                    private_key: &o.private_key,
                    short_ids: &o.short_ids,
                },
            },
            sniffing: Sniffing {
                enabled: true,
                dest_override: ["http", "tls"],
                route_only: true,
            },
        }],
        outbounds,
        routing: Routing {
            // A domain is resolved as soon as an IP rule is reached, so a name that resolves to
            // the host's loopback is refused like the address itself (the block rules come
            // before the per-user rules). `full:localhost` covers names the resolver maps
            // without asking DNS.
            domain_strategy: "IPOnDemand",
            rules,
        },
    };
    // Serializing plain structs of strings and numbers into a String cannot fail.
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// The users listed in a configuration this module rendered: `(email, uuid)`. The file on disk
/// is the record of which users the running engine loaded at its start.
pub fn users_in(config: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct File {
        inbounds: Vec<Inbound>,
    }
    #[derive(serde::Deserialize)]
    struct Inbound {
        tag: String,
        #[serde(default)]
        settings: Option<Settings>,
    }
    #[derive(serde::Deserialize)]
    struct Settings {
        #[serde(default)]
        clients: Vec<ClientIn>,
    }
    #[derive(serde::Deserialize)]
    struct ClientIn {
        id: String,
        email: String,
    }
    let file: File = serde_json::from_str(config)?;
    Ok(file
        .inbounds
        .into_iter()
        .filter(|i| i.tag == INBOUND_TAG)
        .flat_map(|i| i.settings.map(|s| s.clients).unwrap_or_default())
        .map(|c| (c.email, c.id))
        .collect())
}

#[cfg(test)]
mod tests;
