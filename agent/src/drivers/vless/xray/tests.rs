//! The Xray engine's pure parts: which API calls bring the engine to the desired users, and the
//! container whose spec hash ignores users.

use std::path::Path;

use vpn_shared::model::{
    Bandwidth, Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
    VlessEngine, VlessOptions,
};

use super::*;
use crate::drivers::vless::users_of;

fn vu<'a>(name: &'a str, uuid: &'a str) -> VlessUser<'a> {
    VlessUser {
        name,
        id: name,
        uuid,
        port: 443,
        shaped: false,
    }
}

fn record(users: &[(&str, &str)]) -> Record {
    Record {
        started: 100,
        users: users
            .iter()
            .map(|(e, u)| ((*e).to_owned(), (*u).to_owned()))
            .collect(),
    }
}

#[test]
fn a_known_engine_gets_only_the_difference() {
    let held = record(&[("alice", "a1"), ("bob", "b1"), ("carol", "c1")]);
    let desired = [vu("alice", "a1"), vu("bob", "b2"), vu("dave", "d1")];
    let sync = plan(Some(&held), &held, &desired);
    assert_eq!(
        sync.removes,
        ["bob", "carol"],
        "bob's id changed: out, then in again"
    );
    assert_eq!(sync.adds, [("bob", "b2"), ("dave", "d1")]);
    assert_eq!(
        plan(
            Some(&held),
            &held,
            &[vu("alice", "a1"), vu("bob", "b1"), vu("carol", "c1")]
        ),
        Sync::default()
    );
}

#[test]
fn a_restarted_engine_gets_every_desired_user_and_loses_every_recorded_stranger() {
    let recorded = record(&[("alice", "a1"), ("carol", "c1")]);
    let desired = [vu("alice", "a1"), vu("bob", "b1")];
    let sync = plan(None, &recorded, &desired);
    assert_eq!(sync.removes, ["carol"]);
    assert_eq!(sync.adds, [("alice", "a1"), ("bob", "b1")]);
}

fn service(bandwidth: Bandwidth) -> ServiceSpec {
    ServiceSpec {
        name: "vless".into(),
        protocol: Protocol::Vless,
        port: 443,
        image: None,
        options: ServiceOptions::Vless(VlessOptions {
            engine: VlessEngine::Xray,
            sni: "www.example.com".into(),
            dest: "www.example.com:443".into(),
            private_key: "2KZ4uouMKgI8nR-LDJNP1_MHisCJOmKGj9jUjZLncVU".into(),
            public_key: "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw".into(),
            short_ids: vec!["6ba85179e30d4fc2".into()],
        }),
        bandwidth,
        new_conn_rate: None,
    }
}

fn state(service: &ServiceSpec, users: &[(&str, &str, Bandwidth)]) -> DesiredState {
    let mut s = DesiredState::default();
    s.services.insert(service.name.clone(), service.clone());
    for (name, uuid, bandwidth) in users {
        s.users.insert(
            (*name).to_owned(),
            UserSpec {
                name: (*name).to_owned(),
                id: format!("id-{name}"),
                credentials: vec![Credential::Vless {
                    service: service.name.clone(),
                    port: service.port,
                    uuid: (*uuid).to_owned(),
                }],
                bandwidth: *bandwidth,
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

#[test]
fn users_change_the_file_but_never_the_spec_hash() {
    let svc = service(Bandwidth::default());
    let options = options_of(&svc);
    let one = state(
        &svc,
        &[(
            "alice",
            "b831381d-6324-4d53-ad4f-8cda48b30811",
            Bandwidth::default(),
        )],
    );
    let two = state(
        &svc,
        &[
            (
                "alice",
                "b831381d-6324-4d53-ad4f-8cda48b30811",
                Bandwidth::default(),
            ),
            (
                "bob",
                "4b1c0f4e-24e8-4bd5-9d4b-2a1c5f3bb2a0",
                Bandwidth::default(),
            ),
        ],
    );
    let r1 = render(&svc, options, &users_of(&one, &svc), &ctx()).unwrap();
    let r2 = render(&svc, options, &users_of(&two, &svc), &ctx()).unwrap();
    assert_eq!(r1.spec.spec_hash(), r2.spec.spec_hash());
    assert_ne!(r1.files, r2.files);
    assert_eq!(r1.files[0].name, "config.json");
    assert_eq!(
        r1.spec.cmd,
        ["run", "-c", "/var/lib/vpn-agent/run/vless/config.json"]
    );
    assert_eq!(
        r1.spec.binds,
        ["/var/lib/vpn-agent/run/vless:/var/lib/vpn-agent/run/vless"]
    );
    // A new Reality key is read only at start: it must recreate the container.
    let mut rekeyed = svc.clone();
    if let ServiceOptions::Vless(o) = &mut rekeyed.options {
        o.private_key = "dwdtCnMY1RdQrTC4lqkYJ7SQyJOoPZpBJjaG35pWBmk".into();
    }
    let r3 = render(
        &rekeyed,
        options_of(&rekeyed),
        &users_of(&one, &rekeyed),
        &ctx(),
    )
    .unwrap();
    assert_ne!(r1.spec.spec_hash(), r3.spec.spec_hash());
}

#[test]
fn shaped_users_and_only_they_get_a_marked_outbound() {
    let svc = service(Bandwidth::default());
    let limited = Bandwidth {
        down_bps: Some(8_000_000),
        up_bps: None,
    };
    let s = state(
        &svc,
        &[
            ("alice", "b831381d-6324-4d53-ad4f-8cda48b30811", limited),
            (
                "bob",
                "4b1c0f4e-24e8-4bd5-9d4b-2a1c5f3bb2a0",
                Bandwidth::default(),
            ),
        ],
    );
    let r = render(&svc, options_of(&svc), &users_of(&s, &svc), &ctx()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.files[0].contents).unwrap();
    let marked: Vec<u64> = v["outbounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["streamSettings"]["sockopt"]["mark"].as_u64())
        .collect();
    let mark = user_mark("b831381d-6324-4d53-ad4f-8cda48b30811");
    assert_eq!(marked, [u64::from(mark)]);
    // The same mark the shaping plan matches for alice.
    let plan = crate::shaping::plan::plan(&s);
    let alice = &plan.services[0].users[0];
    assert_eq!(alice.matchers, [crate::shaping::plan::Matcher::Mark(mark)]);
}

fn options_of(s: &ServiceSpec) -> &VlessOptions {
    super::super::options_of(s).unwrap()
}

/// SPEC §3: rendering the Xray config for 100,000 users < 200 ms (release). Ignored by default:
/// it prints figures and never fails because the machine was slow.
#[test]
#[ignore = "prints timings at 100,000 users; run with --release --ignored --nocapture"]
fn rendering_one_hundred_thousand_users() {
    let svc = service(Bandwidth::default());
    let limited = Bandwidth {
        down_bps: Some(8_000_000),
        up_bps: None,
    };
    let uuids: Vec<String> = (0..100_000u32)
        .map(|i| format!("{i:08x}-6324-4d53-ad4f-8cda48b30811"))
        .collect();
    let names: Vec<String> = (0..100_000u32).map(|i| format!("user{i}")).collect();
    let users: Vec<VlessUser<'_>> = names
        .iter()
        .zip(&uuids)
        .enumerate()
        .map(|(i, (name, uuid))| VlessUser {
            name,
            id: name,
            uuid,
            port: 443,
            // One user in ten has a limit of their own: a marked outbound and rule each.
            shaped: i % 10 == 0 && !limited.is_unlimited(),
        })
        .collect();
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let r = render(&svc, options_of(&svc), &users, &ctx()).unwrap();
        times.push(start.elapsed());
        bytes = r.files[0].contents.len();
    }
    times.sort();
    println!(
        "xray config, 100,000 users (10,000 shaped), {bytes} bytes: min {:?}, median {:?}, max {:?}",
        times[0], times[2], times[4]
    );
}
