//! The rendered Xray configuration: pinned by golden files, keys in Xray's own case, and the
//! user list readable back from the file.

use std::path::PathBuf;

use serde_json::Value;
use vpn_shared::model::{VlessEngine, VlessOptions};

use super::*;

fn options() -> VlessOptions {
    VlessOptions {
        engine: VlessEngine::Xray,
        sni: "www.example.com".into(),
        dest: "www.example.com:443".into(),
        private_key: "2KZ4uouMKgI8nR-LDJNP1_MHisCJOmKGj9jUjZLncVU".into(),
        public_key: "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw".into(),
        short_ids: vec!["6ba85179e30d4fc2".into(), "0123456789abcdef".into()],
    }
}

fn users() -> Vec<XrayUser<'static>> {
    vec![
        XrayUser {
            email: "alice",
            uuid: "b831381d-6324-4d53-ad4f-8cda48b30811",
            mark: Some(0x7a12_3456),
        },
        XrayUser {
            email: "bob",
            uuid: "4b1c0f4e-24e8-4bd5-9d4b-2a1c5f3bb2a0",
            mark: None,
        },
    ]
}

fn golden(name: &str, rendered: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/drivers/vless/xray/golden")
        .join(name);
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::write(&path, rendered).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (GOLDEN_UPDATE=1 writes it)", path.display()));
    assert_eq!(rendered, want, "{name} differs from its golden file");
}

#[test]
fn a_service_with_two_users_renders_as_its_golden_file() {
    let o = options();
    let service = XrayService {
        port: 443,
        api_socket: "/var/lib/vpn-agent/run/vless/api.sock",
        options: &o,
    };
    golden("two_users.json", &render(&service, &users()));
}

#[test]
fn a_service_without_users_still_has_its_api_and_block_rules() {
    let o = options();
    let service = XrayService {
        port: 8443,
        api_socket: "/var/lib/vpn-agent/run/vless-2/api.sock",
        options: &o,
    };
    golden("no_users.json", &render(&service, &[]));
}

#[test]
fn keys_are_spelled_the_way_xray_reads_them() {
    let o = options();
    let service = XrayService {
        port: 443,
        api_socket: "/var/lib/vpn-agent/run/vless/api.sock",
        options: &o,
    };
    let v: Value = serde_json::from_str(&render(&service, &users())).unwrap();
    let vless = &v["inbounds"][0];
    assert_eq!(vless["tag"], INBOUND_TAG);
    let reality = &vless["streamSettings"]["realitySettings"];
    assert_eq!(reality["privateKey"], o.private_key);
    assert_eq!(reality["dest"], "www.example.com:443");
    assert_eq!(reality["serverNames"][0], "www.example.com");
    assert_eq!(reality["shortIds"][1], "0123456789abcdef");
    assert!(
        reality.get("publicKey").is_none(),
        "the server needs no public key"
    );
    let client = &vless["settings"]["clients"][0];
    assert_eq!(client["flow"], "xtls-rprx-vision");
    assert_eq!(client["email"], "alice");
    assert_eq!(vless["settings"]["decryption"], "none");
    assert_eq!(v["policy"]["levels"]["0"]["statsUserUplink"], true);
    assert_eq!(v["policy"]["levels"]["0"]["statsUserDownlink"], true);
    assert_eq!(v["api"]["services"][1], "StatsService");
    // The API is a unix socket, not a port: no inbound, no route to it.
    assert_eq!(v["api"]["listen"], "/var/lib/vpn-agent/run/vless/api.sock");
    assert_eq!(v["inbounds"].as_array().unwrap().len(), 1);
}

#[test]
fn only_marked_users_get_an_outbound_routed_by_their_email() {
    let o = options();
    let service = XrayService {
        port: 443,
        api_socket: "/var/lib/vpn-agent/run/vless/api.sock",
        options: &o,
    };
    let v: Value = serde_json::from_str(&render(&service, &users())).unwrap();
    let outbounds = v["outbounds"].as_array().unwrap();
    let marked: Vec<&Value> = outbounds
        .iter()
        .filter(|o| o.get("streamSettings").is_some())
        .collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["streamSettings"]["sockopt"]["mark"], 0x7a12_3456);
    let rules = v["routing"]["rules"].as_array().unwrap();
    let by_user: Vec<&Value> = rules.iter().filter(|r| r.get("user").is_some()).collect();
    assert_eq!(by_user.len(), 1);
    assert_eq!(by_user[0]["user"][0], "alice");
    assert_eq!(by_user[0]["outboundTag"], marked[0]["tag"]);
    // The host's loopback is refused before any user's own route.
    let block = rules
        .iter()
        .position(|r| r["outboundTag"] == "block")
        .unwrap();
    let first_user = rules.iter().position(|r| r.get("user").is_some()).unwrap();
    assert!(block < first_user);
}

#[test]
fn the_user_list_reads_back_from_a_rendered_file() {
    let o = options();
    let service = XrayService {
        port: 443,
        api_socket: "/var/lib/vpn-agent/run/vless/api.sock",
        options: &o,
    };
    let users = users_in(&render(&service, &users())).unwrap();
    assert_eq!(
        users,
        [
            (
                "alice".to_owned(),
                "b831381d-6324-4d53-ad4f-8cda48b30811".to_owned()
            ),
            (
                "bob".to_owned(),
                "4b1c0f4e-24e8-4bd5-9d4b-2a1c5f3bb2a0".to_owned()
            ),
        ]
    );
    assert!(users_in("{").is_err());
}
