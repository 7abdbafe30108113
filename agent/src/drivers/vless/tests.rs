//! The VLESS driver's pure half: users of a service and the shoes engine's containers.

use std::path::Path;

use vpn_shared::model::{
    Bandwidth, Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
    VlessEngine, VlessOptions,
};

use super::*;
use crate::drivers::shoes_user::SHOES_IMAGE;

fn service(engine: VlessEngine) -> ServiceSpec {
    ServiceSpec {
        name: "vless".into(),
        protocol: Protocol::Vless,
        port: 20000,
        image: None,
        options: ServiceOptions::Vless(VlessOptions {
            engine,
            sni: "localhost".into(),
            dest: "localhost:9443".into(),
            private_key: "2KZ4uouMKgI8nR-LDJNP1_MHisCJOmKGj9jUjZLncVU".into(),
            public_key: "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw".into(),
            short_ids: vec!["6ba85179e30d4fc2".into()],
        }),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    }
}

fn state(service: &ServiceSpec, users: &[(&str, &str, u16)]) -> DesiredState {
    let mut s = DesiredState::default();
    s.services.insert(service.name.clone(), service.clone());
    for (name, uuid, port) in users {
        s.users.insert(
            (*name).to_owned(),
            UserSpec {
                name: (*name).to_owned(),
                id: format!("id-{name}"),
                credentials: vec![Credential::Vless {
                    service: service.name.clone(),
                    port: *port,
                    uuid: (*uuid).to_owned(),
                }],
                bandwidth: Bandwidth::default(),
            },
        );
    }
    s
}

fn ctx() -> ServiceCtx<'static> {
    ServiceCtx {
        container: "vpn-h1-vless",
        run_dir: Path::new("/var/lib/vpn-agent/run/vless"),
        network_mode: "host",
    }
}

const ALICE: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
const BOB: &str = "4b1c0f4e-24e8-4bd5-9d4b-2a1c5f3bb2a0";

#[test]
fn shoes_runs_a_container_per_user_and_adding_one_leaves_the_others_alike() {
    let svc = service(VlessEngine::Shoes);
    let one = Vless::new()
        .render(&svc, &state(&svc, &[("alice", ALICE, 20000)]), &ctx())
        .unwrap();
    let two = Vless::new()
        .render(
            &svc,
            &state(&svc, &[("alice", ALICE, 20000), ("bob", BOB, 20001)]),
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
    assert_eq!(bob.spec.name, "vpn-h1-vless.20001");
    assert_eq!(bob.user.as_deref(), Some("bob"));
    assert_eq!(bob.spec.image, SHOES_IMAGE);
    assert_eq!(
        bob.spec.cmd,
        [
            "shoes",
            "--no-reload",
            "--threads",
            "1",
            "/var/lib/vpn-agent/run/vless/user-20001.yaml"
        ]
    );
    assert_eq!(bob.files[0].name, "user-20001.yaml");
    let yaml = String::from_utf8(bob.files[0].contents.clone()).unwrap();
    assert!(yaml.contains(BOB) && !yaml.contains(ALICE));
    assert!(yaml.contains("0.0.0.0:20001"));
}

#[test]
fn shoes_with_no_users_runs_nothing() {
    let svc = service(VlessEngine::Shoes);
    let r = Vless::new()
        .render(&svc, &state(&svc, &[]), &ctx())
        .unwrap();
    assert!(r.is_empty());
}

#[test]
fn xray_runs_one_container_for_everyone() {
    let svc = service(VlessEngine::Xray);
    let r = Vless::new()
        .render(
            &svc,
            &state(&svc, &[("alice", ALICE, 20000), ("bob", BOB, 20000)]),
            &ctx(),
        )
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].spec.name, "vpn-h1-vless");
    assert_eq!(r[0].user, None);
}

#[test]
fn options_of_another_protocol_are_refused() {
    let mut svc = service(VlessEngine::Shoes);
    svc.options = ServiceOptions::Shadowsocks {
        method: "aes-256-gcm".into(),
    };
    let err = Vless::new()
        .render(&svc, &DesiredState::default(), &ctx())
        .unwrap_err();
    assert!(
        err.to_string().contains("options of another protocol"),
        "{err}"
    );
}

/// The shoes users' container specs are pinned by their hashes: a change recreates every
/// VLESS-on-shoes user's container when agents are upgraded, so it must be a deliberate one.
/// (Pinned when the container render moved to `shoes_user`, unchanged.)
#[test]
fn shoes_container_spec_hashes_are_pinned() {
    let svc = service(VlessEngine::Shoes);
    let users = [("alice", ALICE, 20000), ("bob", BOB, 20001)];
    let hashes: Vec<String> = Vless::new()
        .render(&svc, &state(&svc, &users), &ctx())
        .unwrap()
        .iter()
        .map(|r| r.spec.spec_hash())
        .collect();
    assert_eq!(
        hashes,
        [
            "52c12397c214c08f078b8c7eda14f4cd29639fa99e0e8e62c5d78dd43026b8e2",
            "de0e0cce4e13f6fe4f09f9837a78a6aadd0024ea3a97f1f3edc3134b865cd48f",
        ]
    );
}
