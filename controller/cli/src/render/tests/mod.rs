//! Snapshot tests: each format of each answer against text written out here.
//!
//! Fixtures live here; `table` pins the people-facing format, `formats` the others.

mod formats;
mod health;
mod quota;
mod table;
mod usage;
mod wireguard;

use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::admin::{
    AdminResponse, Applied, ErrorKind, FirewallRuleInfo, HostApply, HostApplyState, LinkInfo,
    ServerAdded, ServerInfo, ServiceInfo, StatusInfo, UserInfo,
};

use super::{Opts, ago, render};
use crate::cli::Format;
use crate::commands::host_failures;
use crate::error::CliError;

/// 2025-01-31T12:00:00Z.
const NOW: i64 = 1_738_324_800;

fn opts(format: Format) -> Opts {
    Opts {
        format,
        qr: false,
        now: NOW,
        hints: false,
    }
}

fn show(resp: &AdminResponse, opts: &Opts) -> String {
    match render(resp, opts) {
        Ok(s) => s,
        Err(e) => panic!("render failed: {e}"),
    }
}

fn servers() -> AdminResponse {
    AdminResponse::Servers(vec![
        ServerInfo {
            name: "fra-1".into(),
            host_id: "h-1".into(),
            online: true,
            enrolled: true,
            address: Some("203.0.113.7".into()),
            agent_version: Some("0.1.0".into()),
            last_seen: Some(NOW - 3),
            desired_generation: 7,
            acked_generation: Some(7),
            cert_not_after: Some(NOW + 86400),
            services: vec!["ss".into()],
            users: 12,
            health: vec![],
        },
        ServerInfo {
            name: "ams-2".into(),
            host_id: "h-2".into(),
            online: false,
            enrolled: true,
            address: None,
            agent_version: Some("0.1.0".into()),
            last_seen: Some(NOW - 7200),
            desired_generation: 9,
            acked_generation: Some(6),
            cert_not_after: None,
            services: vec!["ss".into(), "ss-alt".into()],
            users: 3,
            health: vec![],
        },
        ServerInfo {
            name: "nyc-3".into(),
            host_id: "h-3".into(),
            online: false,
            enrolled: false,
            address: None,
            agent_version: None,
            last_seen: None,
            desired_generation: 1,
            acked_generation: None,
            cert_not_after: None,
            services: vec![],
            users: 0,
            health: vec![],
        },
    ])
}

fn alice() -> UserInfo {
    UserInfo {
        name: "alice".into(),
        id: "8d0c5c1e".into(),
        email: Some("alice@example.com".into()),
        note: None,
        status: "active".into(),
        all_servers: true,
        servers: vec![],
        protocols: None,
        bandwidth: Bandwidth {
            down_bps: Some(20_000_000),
            up_bps: Some(1_500_000),
        },
        created_at: NOW - 86400,
        updated_at: NOW,
    }
}

fn users() -> AdminResponse {
    let bob = UserInfo {
        name: "bob".into(),
        id: "77aa".into(),
        email: None,
        note: Some("tab\there".into()),
        status: "suspended".into(),
        all_servers: false,
        servers: vec!["fra-1".into(), "ams-2".into()],
        protocols: Some(vec![Protocol::Shadowsocks]),
        bandwidth: Bandwidth::default(),
        created_at: NOW,
        updated_at: NOW,
    };
    AdminResponse::Users(vec![alice(), bob])
}

fn services() -> AdminResponse {
    let ss = ServiceInfo {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: 8388,
        port_span: 1000,
        image: None,
        all_servers: true,
        servers: vec![],
        options: r#"{"Shadowsocks":{"method":"chacha20-ietf-poly1305"}}"#.into(),
        bandwidth: Bandwidth {
            down_bps: Some(1_000_000_000),
            up_bps: Some(1_000_000_000),
        },
        new_conn_rate: Some(20),
    };
    let alt = ServiceInfo {
        name: "ss-alt".into(),
        port: 9000,
        port_span: 1,
        image: Some("local/ss:1".into()),
        all_servers: false,
        servers: vec!["fra-1".into()],
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
        ..ss.clone()
    };
    AdminResponse::Services(vec![ss, alt])
}

fn firewall() -> AdminResponse {
    let rule = |target: &str, server: Option<&str>| FirewallRuleInfo {
        target: target.into(),
        server: server.map(Into::into),
        created_at: NOW - 60,
    };
    AdminResponse::Firewall(vec![
        rule("10.0.0.0/8", None),
        rule("203.0.113.7/32", None),
        rule("203.0.113.7/32", Some("fra-1")),
        rule("2001:db8::/32", Some("ams-2")),
    ])
}

fn links() -> AdminResponse {
    let link = |server: &str, url: &str| LinkInfo {
        server: server.into(),
        service: "ss".into(),
        protocol: Protocol::Shadowsocks,
        url: url.into(),
    };
    AdminResponse::Links(vec![
        link("fra-1", "ss://Y2hhY2hhMjA@203.0.113.7:8388#fra-1"),
        link("ams-2", "ss://Y2hhY2hhMjA@198.51.100.2:8388#ams-2"),
    ])
}

fn applied() -> AdminResponse {
    let host = |server: &str, state| HostApply {
        server: server.into(),
        generation: 7,
        state,
    };
    AdminResponse::Applied(Applied {
        summary: "user alice added".into(),
        hosts: vec![
            host("fra-1", HostApplyState::Applied),
            host("ams-2", HostApplyState::Pending),
            host(
                "nyc-3",
                HostApplyState::Failed(vec!["service ss: port 8388 in use".into()]),
            ),
        ],
    })
}
