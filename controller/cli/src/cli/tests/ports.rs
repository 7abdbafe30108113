//! `--ports`: the size of a service's port range at deploy and in `services edit`. Valid command
//! lines become `ServicesDeployPorts` / `ServicesEditPorts` (commands without it keep the
//! requests older controllers know); bad ones are usage errors (exit 2) naming the flag.

use clap::error::ErrorKind;
use vpn_shared::model::{Bandwidth, Protocol, ProxyKind, VlessEngine};
use vpn_shared::proto::admin::{
    AdminRequest, DeployOptions, DeployService, DeployVless, EditService, Servers,
};

use super::{request, usage_error};

#[test]
fn a_shadowsocks_deploy_with_ports_carries_the_range_size() {
    let args = "services deploy ss --port 20000 --ports 20000 --method aes-256-gcm --all-servers";
    let want = AdminRequest::ServicesDeployPorts {
        deploy: DeployService {
            protocol: Protocol::Shadowsocks,
            name: None,
            port: 20_000,
            servers: Servers::All,
            image: None,
            method: Some("aes-256-gcm".into()),
            bandwidth: Bandwidth::default(),
            new_conn_rate: None,
            wait: true,
        },
        options: DeployOptions::Shadowsocks {
            method: Some("aes-256-gcm".into()),
        },
        ports: 20_000,
    };
    assert_eq!(request(args), want);
    // The whole 16-bit space from port 1, and a range that ends exactly at 65535.
    for args in [
        "services deploy ss --port 1 --ports 65535 --all-servers",
        "services deploy ss --port 45536 --ports 20000 --all-servers",
    ] {
        assert!(
            matches!(request(args), AdminRequest::ServicesDeployPorts { .. }),
            "{args}"
        );
    }
    // Without --ports the request older controllers know is kept.
    assert!(matches!(
        request("services deploy ss --port 20000 --all-servers"),
        AdminRequest::ServicesDeploy(_)
    ));
}

#[test]
fn proxy_and_shoes_deploys_with_ports_keep_their_options() {
    let AdminRequest::ServicesDeployPorts { options, ports, .. } =
        request("services deploy proxy --port 30000 --ports 5000 --kind socks5 --server h1")
    else {
        panic!("a proxy deploy with --ports");
    };
    assert_eq!(
        (options, ports),
        (
            DeployOptions::Proxy {
                kind: Some(ProxyKind::Socks5)
            },
            5000
        )
    );
    let args = "services deploy vless --port 443 --ports 3000 --engine shoes \
                --sni a.example --dest a.example:443 --all-servers";
    let AdminRequest::ServicesDeployPorts { options, ports, .. } = request(args) else {
        panic!("a shoes deploy with --ports");
    };
    assert_eq!(ports, 3000);
    assert!(matches!(
        options,
        DeployOptions::Vless(DeployVless {
            engine: Some(VlessEngine::Shoes),
            ..
        })
    ));
}

#[test]
fn bad_ports_are_usage_errors_naming_the_flag() {
    let (kind, msg) = usage_error("services deploy ss --port 50000 --ports 20000 --all-servers");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(
        msg.contains("--ports 20000 from --port 50000 would end at 69999, past 65535"),
        "{msg}"
    );
    let (kind, msg) = usage_error("services deploy ss --port 20000 --ports 0 --all-servers");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(msg.contains("'--ports <COUNT>'"), "{msg}");
    let (kind, msg) = usage_error("services deploy ss --port 20000 --ports 65536 --all-servers");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(msg.contains("'--ports <COUNT>'"), "{msg}");
    let (kind, msg) = usage_error("services deploy ss --port 20000 --ports lots --all-servers");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(msg.contains("'--ports <COUNT>'"), "{msg}");
    // Services whose users share one port have no range to size.
    for args in [
        "services deploy wg --port 51820 --ports 10 --subnet 10.66.0.0/16 --all-servers",
        "services deploy vless --port 443 --ports 10 --sni a.example --dest a.example:443 \
         --all-servers",
        "services deploy vless --port 443 --ports 10 --engine xray --sni a.example \
         --dest a.example:443 --all-servers",
    ] {
        let (kind, msg) = usage_error(args);
        assert_eq!(kind, ErrorKind::ArgumentConflict, "{args}");
        assert!(
            msg.contains("--ports applies to services with a port per user"),
            "{msg}"
        );
    }
}

#[test]
fn services_edit_ports_resizes_alone_or_with_other_changes() {
    let edit = |bandwidth, new_conn_rate| EditService {
        name: "ss".into(),
        bandwidth,
        new_conn_rate,
        wait: true,
    };
    assert_eq!(
        request("services edit ss --ports 20000"),
        AdminRequest::ServicesEditPorts {
            edit: edit(None, None),
            image: None,
            ports: 20_000,
        }
    );
    assert_eq!(
        request("services edit ss --ports 3000 --conn-rate 20 --default-image"),
        AdminRequest::ServicesEditPorts {
            edit: edit(None, Some(Some(20))),
            image: Some(None),
            ports: 3000,
        }
    );
    let (kind, msg) = usage_error("services edit ss --ports 0");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(msg.contains("'--ports <COUNT>'"), "{msg}");
}

/// A controller older than `--ports` cannot decode the request and says `malformed request`:
/// that is reported as a controller too old (no older form to fall back to, so nothing is
/// changed by a request without the range). Its real refusals of a range stand.
#[test]
fn a_controller_older_than_ports_is_too_old_and_real_refusals_stand() {
    use crate::commands::{legacy, not_served};
    use vpn_shared::proto::admin::{AdminResponse, ErrorKind};
    let error = |message: &str| AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: message.into(),
    };
    for args in [
        "services deploy ss --port 20000 --ports 20000 --all-servers",
        "services edit ss --ports 20000",
    ] {
        let req = request(args);
        assert!(
            not_served(&req, &error("malformed request: unknown variant")),
            "{args}"
        );
        assert_eq!(legacy(&req), None, "{args}: never sent without its range");
        let refusal = error("invalid ports: ports 39000-39009 overlap service ss (20000-39999)");
        assert!(!not_served(&req, &refusal), "{args}");
    }
}
