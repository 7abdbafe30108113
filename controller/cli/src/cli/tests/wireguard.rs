//! `services deploy wireguard` and `users link --conf`: the request carries the tunnel
//! settings, bad flags are usage errors (exit 2) naming the flag.

use clap::error::ErrorKind;
use vpn_shared::model::Protocol;
use vpn_shared::proto::admin::{AdminRequest, DeployOptions, DeployWireguard, Servers};

use super::{parse, request, usage_error};
use crate::cli::{Command, UsersCmd};

#[test]
fn services_deploy_wireguard_carries_the_tunnel_settings() {
    let args = "services deploy wireguard --port 51820 --subnet 10.66.0.0/16 \
        --ipv6-subnet fd66::/64 --dns 1.1.1.1,9.9.9.9 --mtu 1380 --all-servers";
    let AdminRequest::ServicesDeployWith { deploy, options } = request(args) else {
        panic!("wireguard deploys carry their options");
    };
    assert_eq!((deploy.protocol, deploy.port), (Protocol::Wireguard, 51820));
    assert_eq!(deploy.servers, Servers::All);
    assert_eq!(
        options,
        DeployOptions::Wireguard(DeployWireguard {
            subnet: "10.66.0.0/16".into(),
            ipv6_subnet: Some("fd66::/64".into()),
            dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            mtu: Some(1380),
        })
    );
    let AdminRequest::ServicesDeployWith { options, .. } =
        request("services deploy wg --port 51820 --subnet 10.66.0.0/16 --server a --server b")
    else {
        panic!("wireguard options");
    };
    let DeployOptions::Wireguard(w) = options else {
        panic!("wireguard options");
    };
    assert!(w.dns.is_empty() && w.mtu.is_none() && w.ipv6_subnet.is_none());
}

#[test]
fn bad_wireguard_flags_are_usage_errors_naming_the_flag() {
    let base = "services deploy wireguard --port 51820 --all-servers";
    let (kind, text) = usage_error(base);
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(text.contains("--subnet"), "{text}");
    for mtu in ["100", "9001", "x"] {
        let (kind, text) = usage_error(&format!("{base} --subnet 10.66.0.0/16 --mtu {mtu}"));
        assert_eq!(kind, ErrorKind::ValueValidation, "--mtu {mtu}");
        assert!(text.contains("--mtu"), "{text}");
    }
    let (kind, text) = usage_error(&format!("{base} --subnet 10.66.0.0/16 --sni a.example"));
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(text.contains("--sni"), "{text}");
    let (kind, text) = usage_error(&format!(
        "{base} --subnet 10.66.0.0/16 --method aes-256-gcm"
    ));
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(text.contains("--method"), "{text}");
    let (kind, text) =
        usage_error("services deploy shadowsocks --port 8388 --all-servers --subnet 10.0.0.0/8");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(
        text.contains("--subnet") && text.contains("wireguard"),
        "{text}"
    );
}

#[test]
fn users_link_conf_asks_for_the_links_and_excludes_qr() {
    let cli = parse("users link alice --protocol wg --server a --conf").unwrap();
    assert!(matches!(
        cli.command,
        Command::Users(UsersCmd::Link { conf: true, .. })
    ));
    assert_eq!(
        request("users link alice --protocol wireguard --server a --conf"),
        AdminRequest::UsersLink {
            name: "alice".into(),
            server: Some("a".into()),
            protocol: Some(Protocol::Wireguard),
        }
    );
    let (kind, text) = usage_error("users link alice --conf --qr");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(text.contains("--qr"), "{text}");
}
