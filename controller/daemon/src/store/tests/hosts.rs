//! Hosts: join tokens, certificates, liveness, acks and revocation.

use super::{host, named, ss, store, token, user};
use crate::store::{StoreError, TokenRefusal};

#[tokio::test]
async fn a_join_token_works_once_and_only_before_expiry() {
    let (_dir, store) = store().await;
    let added = store.add_host("edge-1", &token(1), 100, 10).await.unwrap();
    assert_eq!((added.generation, added.enrolled_at), (0, None));
    store.add_host("edge-2", &token(2), 100, 10).await.unwrap();

    let refusal = |e: StoreError| match e {
        StoreError::TokenRefused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    };
    let err = store.consume_join_token(&token(9), 50).await.unwrap_err();
    assert_eq!(refusal(err), TokenRefusal::Unknown);
    let err = store.consume_join_token(&token(2), 100).await.unwrap_err();
    assert_eq!(refusal(err), TokenRefusal::Expired);

    let enrolled = store.consume_join_token(&token(1), 99).await.unwrap();
    assert_eq!(
        (enrolled.id.as_str(), enrolled.enrolled_at),
        (added.id.as_str(), Some(99))
    );
    let err = store.consume_join_token(&token(1), 99).await.unwrap_err();
    assert_eq!(err.to_string(), "join token refused: token already used");

    store
        .set_host_certificate(&added.id, "0a1b", 5_000)
        .await
        .unwrap();
    store
        .record_seen(&added.id, "0.1.0", "192.0.2.7:4433", 120)
        .await
        .unwrap();
    store.record_ack(&added.id, 0, "00ff", 121).await.unwrap();
    let h = store.host(&added.id).await.unwrap().unwrap();
    assert_eq!(h.cert_serial.as_deref(), Some("0a1b"));
    assert_eq!(h.cert_not_after, Some(5_000));
    assert_eq!(h.address.as_deref(), Some("192.0.2.7:4433"));
    assert_eq!(
        (h.acked_generation, h.acked_digest.as_deref()),
        (Some(0), Some("00ff"))
    );
    assert_eq!(h.last_seen, Some(121));
    assert_eq!(store.host_by_name("edge-1").await.unwrap(), Some(h));
}

#[tokio::test]
async fn a_removed_host_is_revoked_and_leaves_every_list() {
    let (_dir, store) = store().await;
    let a = host(&store, "edge-1", 1).await;
    let b = host(&store, "edge-2", 2).await;
    store
        .add_user(user("alice", named(&["edge-1", "edge-2"])), 0)
        .await
        .unwrap();
    store
        .deploy_service(ss("ss", 9000, 10, named(&["edge-1"])), 0)
        .await
        .unwrap();

    let removed = store.remove_host("edge-1", 50).await.unwrap();
    assert_eq!(removed.id, a.id);
    assert!(store.is_revoked(&a.id).await.unwrap());
    assert!(!store.is_revoked(&b.id).await.unwrap());
    assert_eq!(store.host(&a.id).await.unwrap(), None);
    let err = store.consume_join_token(&token(1), 1).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::TokenRefused(TokenRefusal::Unknown)
    ));
    let alice = store.user("alice").await.unwrap().unwrap();
    assert_eq!(alice.user.servers, named(&["edge-2"]));
    assert_eq!(alice.hosts, vec![store.host(&b.id).await.unwrap().unwrap()]);
    assert_eq!(
        store.service("ss").await.unwrap().unwrap().servers,
        named(&[])
    );
    let err = store.desired_state(&a.id).await.unwrap_err();
    assert_eq!(err.to_string(), "host ".to_owned() + &a.id + " not found");
}
