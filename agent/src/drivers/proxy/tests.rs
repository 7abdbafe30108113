//! The proxy driver's pure half: the shoes config per kind (golden files) and a container per
//! user.

use std::path::{Path, PathBuf};

use vpn_shared::model::{
    Bandwidth, Credential, DesiredState, Protocol, ProxyKind, ProxyOptions, ServiceOptions,
    ServiceSpec, UserSpec,
};

use super::config::{self, ProxyUser as ConfigUser};
use super::*;
use crate::drivers::shoes_user::SHOES_IMAGE;

fn service(kind: ProxyKind) -> ServiceSpec {
    ServiceSpec {
        name: "proxy".into(),
        protocol: Protocol::Proxy,
        port: 3128,
        image: None,
        options: ServiceOptions::Proxy(ProxyOptions { kind }),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    }
}

fn state(service: &ServiceSpec, users: &[(&str, &str, u16)]) -> DesiredState {
    let mut s = DesiredState::default();
    s.services.insert(service.name.clone(), service.clone());
    for (name, password, port) in users {
        s.users.insert(
            (*name).to_owned(),
            UserSpec {
                name: (*name).to_owned(),
                id: format!("id-{name}"),
                credentials: vec![Credential::Proxy {
                    service: service.name.clone(),
                    port: *port,
                    username: (*name).to_owned(),
                    password: (*password).to_owned(),
                }],
                bandwidth: Bandwidth::default(),
            },
        );
    }
    s
}

fn ctx() -> ServiceCtx<'static> {
    ServiceCtx {
        container: "vpn-h1-proxy",
        run_dir: Path::new("/var/lib/vpn-agent/run/proxy"),
        network_mode: "host",
    }
}

const ALICE: ConfigUser<'static> = ConfigUser {
    username: "alice@example.com",
    password: "kX3v9Qw2bN7mP1sT5yZ8aA",
    port: 3129,
};

/// `GOLDEN_UPDATE=1` rewrites `golden/*.yaml`; review the diff like code.
#[test]
fn golden_configs() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/drivers/proxy/golden");
    let update = std::env::var_os("GOLDEN_UPDATE").is_some();
    let mut mismatches = Vec::new();
    for (name, kind, ip) in [
        ("http", ProxyKind::Http, "0.0.0.0"),
        ("socks5", ProxyKind::Socks5, "0.0.0.0"),
        ("both_ipv6", ProxyKind::Both, "::"),
    ] {
        let actual = config::render(kind, &ALICE, ip).unwrap();
        let path = dir.join(format!("{name}.yaml"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
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
fn the_config_carries_the_credentials_and_refuses_the_host_loopback() {
    let text = config::render(ProxyKind::Both, &ALICE, "127.0.0.1").unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let l = &doc[0];
    assert_eq!(l["address"].as_str(), Some("127.0.0.1:3129"));
    assert_eq!(l["protocol"]["type"].as_str(), Some("mixed"));
    assert_eq!(l["protocol"]["username"].as_str(), Some(ALICE.username));
    assert_eq!(l["protocol"]["password"].as_str(), Some(ALICE.password));
    assert_eq!(l["protocol"]["udp_enabled"].as_bool(), Some(false));
    assert_eq!(l["rules"][0]["action"].as_str(), Some("block"));
    assert_eq!(l["rules"][0]["masks"][0].as_str(), Some("127.0.0.0/8"));
    let http = config::render(ProxyKind::Http, &ALICE, "0.0.0.0").unwrap();
    assert!(
        !http.contains("udp_enabled"),
        "shoes' http has no UDP: {http}"
    );
}

/// A password of digits must stay a string for shoes' YAML reader.
#[test]
fn passwords_that_look_like_numbers_stay_strings() {
    for password in ["12345678", "1e10", "true", "null", "0x1f"] {
        let user = ConfigUser { password, ..ALICE };
        let text = config::render(ProxyKind::Socks5, &user, "0.0.0.0").unwrap();
        let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            doc[0]["protocol"]["password"].as_str(),
            Some(password),
            "{text}"
        );
    }
}

#[test]
fn bad_users_and_bind_ip_are_named() {
    let err = |user: ConfigUser<'_>, ip: &str| {
        config::render(ProxyKind::Http, &user, ip)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(ALICE, "localhost"),
        "bind_ip: \"localhost\" is not an IP address"
    );
    assert_eq!(
        err(ConfigUser { port: 0, ..ALICE }, "0.0.0.0"),
        "user alice@example.com: port 0"
    );
    assert_eq!(
        err(
            ConfigUser {
                password: "",
                ..ALICE
            },
            "0.0.0.0"
        ),
        "user alice@example.com: password is empty"
    );
    assert_eq!(
        err(
            ConfigUser {
                username: "a:b",
                ..ALICE
            },
            "0.0.0.0"
        ),
        "user a:b: username contains ':' (HTTP Basic cannot carry it)"
    );
    let long = "x".repeat(256);
    assert!(
        err(
            ConfigUser {
                password: &long,
                ..ALICE
            },
            "0.0.0.0"
        )
        .contains("255 bytes")
    );
}

#[test]
fn a_container_per_user_and_adding_one_leaves_the_others_alike() {
    let svc = service(ProxyKind::Both);
    let one = Proxy
        .render(&svc, &state(&svc, &[("alice", "alicepw1", 3129)]), &ctx())
        .unwrap();
    let two = Proxy
        .render(
            &svc,
            &state(
                &svc,
                &[("alice", "alicepw1", 3129), ("bob", "bobpw2", 3130)],
            ),
            &ctx(),
        )
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(two.len(), 2);
    assert_eq!(
        one[0], two[0],
        "alice's container is untouched by bob's arrival"
    );
    let bob = &two[1];
    assert_eq!(bob.spec.name, "vpn-h1-proxy.3130");
    assert_eq!(bob.user.as_deref(), Some("bob"));
    assert_eq!(bob.spec.image, SHOES_IMAGE);
    assert_eq!(
        bob.spec.cmd,
        [
            "shoes",
            "--no-reload",
            "--threads",
            "1",
            "/var/lib/vpn-agent/run/proxy/user-3130.yaml"
        ]
    );
    let yaml = String::from_utf8(bob.files[0].contents.clone()).unwrap();
    assert!(
        yaml.contains("bobpw2") && !yaml.contains("alicepw1"),
        "{yaml}"
    );
    assert!(yaml.contains("0.0.0.0:3130"), "{yaml}");
}

#[test]
fn a_password_change_recreates_only_that_users_container() {
    let svc = service(ProxyKind::Http);
    let before = Proxy
        .render(
            &svc,
            &state(
                &svc,
                &[("alice", "alicepw1", 3129), ("bob", "bobpw2", 3130)],
            ),
            &ctx(),
        )
        .unwrap();
    let after = Proxy
        .render(
            &svc,
            &state(&svc, &[("alice", "new", 3129), ("bob", "bobpw2", 3130)]),
            &ctx(),
        )
        .unwrap();
    assert_ne!(before[0].spec.spec_hash(), after[0].spec.spec_hash());
    assert_eq!(before[1].spec.spec_hash(), after[1].spec.spec_hash());
}

#[test]
fn options_of_another_protocol_are_refused() {
    let mut svc = service(ProxyKind::Http);
    svc.options = ServiceOptions::Shadowsocks {
        method: "aes-256-gcm".into(),
    };
    let err = Proxy
        .render(&svc, &DesiredState::default(), &ctx())
        .unwrap_err();
    assert!(
        err.to_string().contains("options of another protocol"),
        "{err}"
    );
}

/// The users' container specs are pinned by their hashes: a change recreates every proxy
/// user's container when agents are upgraded (their open connections end), so it must be a
/// deliberate one. (Pinned when the container render moved to `shoes_user`, unchanged.)
#[test]
fn container_spec_hashes_are_pinned() {
    let svc = service(ProxyKind::Both);
    let users = [("alice", "alicepw1", 3129), ("bob", "bobpw2", 3130)];
    let hashes: Vec<String> = Proxy
        .render(&svc, &state(&svc, &users), &ctx())
        .unwrap()
        .iter()
        .map(|r| r.spec.spec_hash())
        .collect();
    assert_eq!(
        hashes,
        [
            "6fe687d6d592b59d01cc5aea64cd67922ee1feb1123ec9908a8511600caea6e8",
            "5a3d25bb58c797eb021f2816a5c48d63483f9f0845cab46da218ffc3b80775e7",
        ]
    );
}
