//! Golden bytes of the hand-written messages (encoded by hand from the protobuf wire format, so
//! a wrong field number or type fails here), counter names, restart detection.

use std::time::{Duration, Instant};

use prost::Message;

use super::proto::*;
use super::*;

#[test]
fn remove_user_operation_bytes() {
    let op = RemoveUserOperation {
        email: "bob".into(),
    };
    assert_eq!(op.encode_to_vec(), b"\x0a\x03bob");
}

#[test]
fn query_stats_request_bytes_omit_false_reset() {
    let q = QueryStatsRequest {
        pattern: "user>>>".into(),
        reset: false,
    };
    assert_eq!(q.encode_to_vec(), b"\x0a\x07user>>>");
    let q = QueryStatsRequest {
        pattern: "u".into(),
        reset: true,
    };
    assert_eq!(q.encode_to_vec(), b"\x0a\x01u\x10\x01");
}

#[test]
fn alter_inbound_add_user_bytes() {
    let account = VlessAccount {
        id: "i".into(),
        flow: "f".into(),
        encryption: String::new(),
    };
    assert_eq!(account.encode_to_vec(), b"\x0a\x01i\x12\x01f");
    let user = User {
        level: 1,
        email: "e".into(),
        account: Some(TypedMessage {
            r#type: "t".into(),
            value: account.encode_to_vec(),
        }),
    };
    // level=1 (varint), email=2, account=3 (TypedMessage{type=1, value=2}).
    let user_bytes = b"\x08\x01\x12\x01e\x1a\x0b\x0a\x01t\x12\x06\x0a\x01i\x12\x01f";
    assert_eq!(user.encode_to_vec(), user_bytes);
    let op = AddUserOperation { user: Some(user) };
    let mut op_bytes = vec![0x0a, user_bytes.len() as u8];
    op_bytes.extend_from_slice(user_bytes);
    assert_eq!(op.encode_to_vec(), op_bytes);
    let req = AlterInboundRequest {
        tag: "in".into(),
        operation: Some(TypedMessage {
            r#type: "o".into(),
            value: vec![0xff],
        }),
    };
    assert_eq!(
        req.encode_to_vec(),
        b"\x0a\x02in\x12\x06\x0a\x01o\x12\x01\xff"
    );
}

#[test]
fn replies_decode_and_skip_unknown_fields() {
    // Stat{name="abc", value=150}, twice.
    let stat = b"\x0a\x03abc\x10\x96\x01";
    let mut reply = Vec::new();
    for _ in 0..2 {
        reply.push(0x0a);
        reply.push(stat.len() as u8);
        reply.extend_from_slice(stat);
    }
    let decoded = QueryStatsResponse::decode(reply.as_slice()).unwrap();
    assert_eq!(decoded.stat.len(), 2);
    assert_eq!(decoded.stat[0].name, "abc");
    assert_eq!(decoded.stat[0].value, 150);
    // SysStatsResponse{NumGoroutine=5, Alloc=7, Uptime=42}: field 10 is tag byte 0x50.
    let sys = SysStatsResponse::decode(&b"\x08\x05\x18\x07\x50\x2a"[..]).unwrap();
    assert_eq!(sys.uptime, 42);
}

#[test]
fn flavors_name_paths_and_types() {
    assert_eq!(
        Flavor::Xray.path("app.proxyman.command.HandlerService", "AlterInbound"),
        "/xray.app.proxyman.command.HandlerService/AlterInbound"
    );
    assert_eq!(
        Flavor::V2ray.path("app.stats.command.StatsService", "QueryStats"),
        "/v2ray.core.app.stats.command.StatsService/QueryStats"
    );
    assert_eq!(
        Flavor::Xray.type_name("proxy.vless.Account"),
        "xray.proxy.vless.Account"
    );
    assert_eq!(
        Flavor::V2ray.type_name("app.proxyman.command.AddUserOperation"),
        "v2ray.core.app.proxyman.command.AddUserOperation"
    );
}

#[test]
fn user_stat_names() {
    assert_eq!(
        parse_user_stat("user>>>alice@x>>>traffic>>>uplink"),
        Some(("alice@x", Direction::Uplink))
    );
    assert_eq!(
        parse_user_stat("user>>>a>>>b>>>traffic>>>downlink"),
        Some(("a>>>b", Direction::Downlink))
    );
    assert_eq!(parse_user_stat("user>>>>>>traffic>>>uplink"), None);
    assert_eq!(parse_user_stat("inbound>>>api>>>traffic>>>uplink"), None);
    assert_eq!(parse_user_stat("user>>>alice>>>online"), None);
}

#[test]
fn non_loopback_address_is_refused() {
    let addr = ApiAddress::Tcp("192.0.2.1:10085".parse().unwrap());
    let err = XrayApi::new(&addr, Flavor::Xray, DEFAULT_TIMEOUT).unwrap_err();
    assert!(matches!(err, XrayApiError::NotLoopback(_)), "{err}");
    let rel = ApiAddress::Unix("run/api.sock".into());
    assert!(XrayApi::new(&rel, Flavor::Xray, DEFAULT_TIMEOUT).is_err());
}

#[tokio::test]
async fn bad_uuid_is_refused_without_echoing_it() {
    let addr = ApiAddress::Tcp("127.0.0.1:9".parse().unwrap());
    let api = XrayApi::new(&addr, Flavor::Xray, DEFAULT_TIMEOUT).unwrap();
    let err = api
        .add_vless_user("in", "alice", "not-a-uuid-secret", "")
        .await
        .unwrap_err();
    assert!(matches!(err, XrayApiError::InvalidUuid { .. }));
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn refusals_are_classified() {
    let status = |m: &str| tonic::Status::unknown(m);
    let tag = "vless-in";
    let cases = [
        (
            "app/proxyman/command: failed to get handler: vless-in > app/proxyman/inbound: handler not found: vless-in",
            "InboundNotFound",
        ),
        ("proxy/vless: User alice already exists.", "UserExists"),
        ("proxy/vless: User alice not found.", "UserNotFound"),
    ];
    for (message, want) in cases {
        let got = classify_alter(&status(message), tag, "alice", None);
        assert!(format!("{got:?}").starts_with(want), "{message}: {got:?}");
    }
    let uuid = "0f2c8a52-3b1e-4f55-9d2a-6a7c1b2e3d4f";
    let got = classify_alter(&status(&format!("bad user {uuid}")), tag, "a", Some(uuid));
    assert!(!got.to_string().contains(uuid), "{got}");
    assert!(!got.is_already_applied());
}

#[test]
fn restart_is_seen_from_uptime() {
    let t0 = Instant::now() + Duration::from_secs(1_000);
    let s = |at: u64, up: u64| UptimeSample {
        at: t0 + Duration::from_secs(at),
        uptime: Duration::from_secs(up),
    };
    // Same engine: start time stable within the slack (whole-second truncation).
    assert!(!engine_restarted(s(0, 100), s(10, 110)));
    assert!(!engine_restarted(s(0, 100), s(10, 109)));
    assert!(!engine_restarted(s(0, 100), s(0, 100)));
    // Uptime went backwards.
    assert!(engine_restarted(s(0, 100), s(10, 3)));
    // Restarted long ago relative to the last reading: uptime larger, start moved anyway.
    assert!(engine_restarted(s(0, 5), s(100, 80)));
}
