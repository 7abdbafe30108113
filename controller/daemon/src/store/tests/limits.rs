//! Bandwidth limits, new-connection rates and firewall rules: what is stored, what reaches which
//! host, and how bad input is refused. (That pushes rebuild full states is in `invariant`.)

use vpn_shared::model::{Bandwidth, Change, FirewallSpec};

use super::{host, named, ss, store, user};
use crate::store::{EditUserFields, Servers, StoreError, UserStatus};

fn mbit(down: u64, up: u64) -> Bandwidth {
    Bandwidth {
        down_bps: Some(down * 1_000_000),
        up_bps: Some(up * 1_000_000),
    }
}

fn field(e: StoreError) -> &'static str {
    match e {
        StoreError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other}"),
    }
}

fn blocked(list: &[&str]) -> FirewallSpec {
    FirewallSpec {
        blocked: list.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn user_and_service_limits_reach_the_desired_state() {
    let (_dir, store) = store().await;
    let h = host(&store, "a", 1).await;
    let mut svc = ss("ss", 9000, 10, Servers::All);
    svc.bandwidth = mbit(200, 100);
    svc.new_conn_rate = Some(20);
    let m = store.deploy_service(svc, 0).await.unwrap();
    assert_eq!(m.value.bandwidth, mbit(200, 100));
    assert_eq!(m.value.new_conn_rate, Some(20));
    let mut alice = user("alice", Servers::All);
    alice.bandwidth = mbit(20, 5);
    let m = store.add_user(alice, 0).await.unwrap();
    assert_eq!(m.value.bandwidth, mbit(20, 5));

    let state = store.desired_state(&h.id).await.unwrap();
    assert_eq!(state.services["ss"].bandwidth, mbit(200, 100));
    assert_eq!(state.services["ss"].new_conn_rate, Some(20));
    assert_eq!(state.users["alice"].bandwidth, mbit(20, 5));
    assert_eq!(store.users().await.unwrap()[0].bandwidth, mbit(20, 5));
    assert_eq!(store.services().await.unwrap()[0].new_conn_rate, Some(20));
}

#[tokio::test]
async fn editing_a_user_pushes_only_a_changed_limit_of_an_active_user() {
    let (_dir, store) = store().await;
    host(&store, "a", 1).await;
    host(&store, "b", 2).await;
    store
        .add_user(user("alice", named(&["b"])), 0)
        .await
        .unwrap();

    let notes = EditUserFields {
        email: Some(Some("a@example.com".into())),
        note: Some(Some("vip".into())),
        bandwidth: None,
    };
    let m = store.edit_user("alice", notes.clone(), 5).await.unwrap();
    assert!(
        m.pushes.is_empty(),
        "email and note are not in any host's state"
    );
    assert_eq!(m.value.email.as_deref(), Some("a@example.com"));
    assert_eq!(m.value.updated_at, 5);
    let m = store.edit_user("alice", notes, 6).await.unwrap();
    assert_eq!(
        m.value.updated_at, 5,
        "an edit that changes nothing writes nothing"
    );

    let limit = EditUserFields {
        bandwidth: Some(mbit(8, 8)),
        ..Default::default()
    };
    let m = store.edit_user("alice", limit.clone(), 7).await.unwrap();
    assert_eq!(m.pushes.len(), 1, "only b holds alice");
    let [Change::UpsertUser(spec)] = m.pushes[0].changes.as_slice() else {
        panic!("expected one UpsertUser, got {:?}", m.pushes[0].changes);
    };
    assert_eq!(spec.bandwidth, mbit(8, 8));
    assert!(
        store
            .edit_user("alice", limit, 8)
            .await
            .unwrap()
            .pushes
            .is_empty()
    );

    store
        .set_user_status("alice", UserStatus::Suspended, 9)
        .await
        .unwrap();
    let lift = EditUserFields {
        bandwidth: Some(Bandwidth::default()),
        email: Some(None),
        ..Default::default()
    };
    let m = store.edit_user("alice", lift, 10).await.unwrap();
    assert!(m.pushes.is_empty(), "no host holds a suspended user");
    assert!(m.value.bandwidth.is_unlimited());
    assert_eq!(m.value.email, None);
    assert_eq!(m.value.note.as_deref(), Some("vip"));
}

#[tokio::test]
async fn editing_a_service_pushes_its_new_spec_to_its_hosts() {
    let (_dir, store) = store().await;
    host(&store, "a", 1).await;
    host(&store, "b", 2).await;
    store
        .deploy_service(ss("ss", 9000, 10, named(&["a"])), 0)
        .await
        .unwrap();
    let m = store
        .edit_service("ss", Some(mbit(100, 100)), Some(Some(5)))
        .await
        .unwrap();
    assert_eq!(m.pushes.len(), 1);
    let [Change::UpsertService(spec)] = m.pushes[0].changes.as_slice() else {
        panic!("expected one UpsertService");
    };
    assert_eq!(
        (spec.bandwidth, spec.new_conn_rate),
        (mbit(100, 100), Some(5))
    );
    let m = store.edit_service("ss", None, Some(None)).await.unwrap();
    assert_eq!(m.value.bandwidth, mbit(100, 100), "None keeps the cap");
    assert_eq!(
        m.value.new_conn_rate, None,
        "Some(None) lifts the rate limit"
    );
    let m = store.edit_service("ss", None, None).await.unwrap();
    assert!(m.pushes.is_empty());
}

/// A new image is one `UpsertService` carrying it (each host then replaces the container); the
/// same image again pushes nothing; `Some(None)` returns to the driver's default; a malformed
/// reference is refused naming `image` and leaves the service as it was.
#[tokio::test]
async fn an_image_edit_pushes_the_service_with_its_new_image() {
    let (_dir, store) = store().await;
    host(&store, "a", 1).await;
    store
        .deploy_service(ss("ss", 9000, 10, named(&["a"])), 0)
        .await
        .unwrap();
    let image = Some(Some("vpn-fleet/shadowsocks-rust:next".to_owned()));
    let m = store
        .edit_service_with("ss", None, None, image.clone())
        .await
        .unwrap();
    let [Change::UpsertService(spec)] = m.pushes[0].changes.as_slice() else {
        panic!("expected one UpsertService, got {:?}", m.pushes);
    };
    assert_eq!(
        spec.image.as_deref(),
        Some("vpn-fleet/shadowsocks-rust:next")
    );
    let again = store
        .edit_service_with("ss", None, None, image)
        .await
        .unwrap();
    assert!(again.pushes.is_empty(), "the same image changes nothing");
    let err = store
        .edit_service_with("ss", None, None, Some(Some("two words".into())))
        .await
        .unwrap_err();
    assert_eq!(field(err), "image");
    assert_eq!(
        store.services().await.unwrap()[0].image.as_deref(),
        Some("vpn-fleet/shadowsocks-rust:next"),
        "a refused edit writes nothing"
    );
    let m = store
        .edit_service_with("ss", None, None, Some(None))
        .await
        .unwrap();
    assert_eq!(
        m.value.image, None,
        "Some(None) is the driver's default again"
    );
    assert_eq!(m.pushes.len(), 1);
}

#[tokio::test]
async fn bad_limits_name_the_field_and_write_nothing() {
    let (_dir, store) = store().await;
    let mut bad = user("alice", Servers::All);
    bad.bandwidth.up_bps = Some(0);
    assert_eq!(
        field(store.add_user(bad, 0).await.unwrap_err()),
        "bandwidth"
    );
    let mut bad = ss("ss", 9000, 10, Servers::All);
    bad.new_conn_rate = Some(0);
    assert_eq!(
        field(store.deploy_service(bad, 0).await.unwrap_err()),
        "new_conn_rate"
    );
    assert!(store.users().await.unwrap().is_empty());
    assert!(store.services().await.unwrap().is_empty());

    let err = store
        .edit_user("ghost", EditUserFields::default(), 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "user ghost not found");
    let err = store.edit_service("ghost", None, None).await.unwrap_err();
    assert_eq!(err.to_string(), "service ghost not found");
    store.add_user(user("bob", Servers::All), 0).await.unwrap();
    let bad = EditUserFields {
        email: Some(Some("nope".into())),
        bandwidth: Some(mbit(1, 1)),
        ..Default::default()
    };
    assert_eq!(
        field(store.edit_user("bob", bad, 1).await.unwrap_err()),
        "email"
    );
    assert!(store.users().await.unwrap()[0].bandwidth.is_unlimited());
    let bad = Bandwidth {
        down_bps: Some(0),
        up_bps: None,
    };
    store
        .deploy_service(ss("ss", 9000, 10, Servers::All), 0)
        .await
        .unwrap();
    let err = store.edit_service("ss", Some(bad), None).await.unwrap_err();
    assert_eq!(field(err), "bandwidth");
    let err = store
        .edit_service("ss", None, Some(Some(0)))
        .await
        .unwrap_err();
    assert_eq!(field(err), "new_conn_rate");
}

#[tokio::test]
async fn firewall_rules_reach_exactly_the_hosts_whose_policy_changes() {
    let (_dir, store) = store().await;
    let a = host(&store, "a", 1).await;
    let b = host(&store, "b", 2).await;

    let m = store
        .block("203.0.113.7", &named(&["a"]), 10)
        .await
        .unwrap();
    assert_eq!(m.value[0].target, "203.0.113.7/32", "normalized");
    assert_eq!(m.value[0].server.as_deref(), Some("a"));
    assert_eq!(m.pushes.len(), 1);
    assert_eq!(m.pushes[0].host_id, a.id);
    assert_eq!(
        m.pushes[0].changes,
        [Change::SetFirewall(blocked(&["203.0.113.7/32"]))]
    );

    // Fleet-wide: only b's policy changes, a already blocks it.
    let m = store
        .block("203.0.113.7/32", &Servers::All, 11)
        .await
        .unwrap();
    let hosts: Vec<&str> = m.pushes.iter().map(|p| p.host_id.as_str()).collect();
    assert_eq!(hosts, [b.id.as_str()]);
    let m = store.block("10.0.0.0/8", &Servers::All, 12).await.unwrap();
    assert_eq!(m.pushes.len(), 2);
    let want = blocked(&["10.0.0.0/8", "203.0.113.7/32"]);
    assert!(
        m.pushes
            .iter()
            .all(|p| p.changes == [Change::SetFirewall(want.clone())])
    );

    let listed: Vec<(String, Option<String>)> = store
        .firewall_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.target, r.server))
        .collect();
    let want = [
        ("10.0.0.0/8".to_owned(), None),
        ("203.0.113.7/32".to_owned(), None),
        ("203.0.113.7/32".to_owned(), Some("a".to_owned())),
    ];
    assert_eq!(listed, want);

    // Removing the fleet-wide rule changes b only: a keeps its own rule.
    let m = store.unblock("203.0.113.7", &Servers::All).await.unwrap();
    assert_eq!(m.value[0].created_at, 11);
    let hosts: Vec<&str> = m.pushes.iter().map(|p| p.host_id.as_str()).collect();
    assert_eq!(hosts, [b.id.as_str()]);
    let state = store.desired_state(&a.id).await.unwrap();
    assert_eq!(state.firewall, blocked(&["10.0.0.0/8", "203.0.113.7/32"]));

    // A host added later gets the fleet-wide rules, not other hosts' own ones.
    let c = host(&store, "c", 3).await;
    let state = store.desired_state(&c.id).await.unwrap();
    assert_eq!(state.firewall, blocked(&["10.0.0.0/8"]));

    // A removed host takes its own rules with it.
    store.remove_host("a", 20).await.unwrap();
    let targets: Vec<String> = store
        .firewall_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, ["10.0.0.0/8"]);
}

#[tokio::test]
async fn bad_firewall_requests_are_refused_and_write_nothing() {
    let (_dir, store) = store().await;
    host(&store, "a", 1).await;
    host(&store, "b", 2).await;
    let err = store
        .block("10.1.2.3/8", &Servers::All, 0)
        .await
        .unwrap_err();
    assert_eq!(field(err), "target");
    let err = store
        .block("nonsense", &named(&["a"]), 0)
        .await
        .unwrap_err();
    assert_eq!(field(err), "target");
    let err = store.block("10.0.0.1", &named(&[]), 0).await.unwrap_err();
    assert_eq!(field(err), "servers");
    let err = store
        .block("10.0.0.1", &named(&["a", "ghost"]), 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "server ghost not found");
    assert!(store.firewall_rules().await.unwrap().is_empty());

    store.block("10.0.0.1", &named(&["b"]), 0).await.unwrap();
    let err = store
        .block("10.0.0.1/32", &named(&["a", "b"]), 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "firewall rule 10.0.0.1/32 on b already exists"
    );
    assert_eq!(
        store.firewall_rules().await.unwrap().len(),
        1,
        "a was not added"
    );

    let err = store.unblock("10.0.0.1", &Servers::All).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "firewall rule 10.0.0.1/32 on all servers not found"
    );
    let err = store
        .unblock("10.0.0.1", &named(&["b", "a"]))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "firewall rule 10.0.0.1/32 on a not found");
    assert_eq!(store.firewall_rules().await.unwrap().len(), 1, "b was kept");
    let err = store
        .unblock("10.0.0.1/33", &Servers::All)
        .await
        .unwrap_err();
    assert_eq!(field(err), "target");
    let m = store
        .unblock("10.0.0.1", &named(&["b", "b"]))
        .await
        .unwrap();
    assert_eq!(m.value.len(), 1);
    assert!(store.firewall_rules().await.unwrap().is_empty());
}
