//! Hosts: join tokens, certificates, liveness, acks and revocation.

use super::{host, named, ss, store, token, user};
use crate::store::{EnrolledCert, JoinToken, Spent, StoreError, TokenRefusal};

fn cert(serial: &str, key: &str) -> EnrolledCert {
    EnrolledCert {
        cert_pem: format!("CERT {serial}"),
        serial: serial.into(),
        not_after: 5_000,
        key_sha256: key.into(),
    }
}

fn refusal(e: StoreError) -> TokenRefusal {
    match e {
        StoreError::TokenRefused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_join_token_works_once_and_only_before_expiry() {
    let (_dir, store) = store().await;
    let added = store.add_host("edge-1", &token(1), 100, 10).await.unwrap();
    assert_eq!((added.generation, added.enrolled_at), (0, None));
    store.add_host("edge-2", &token(2), 100, 10).await.unwrap();

    let err = store.join_token(&token(9), 50).await.unwrap_err();
    assert_eq!(refusal(err), TokenRefusal::Unknown);
    let err = store.join_token(&token(2), 100).await.unwrap_err();
    assert_eq!(refusal(err), TokenRefusal::Expired);
    let err = store
        .complete_enrollment(&token(2), 100, &cert("02", "k2"))
        .await
        .unwrap_err();
    assert_eq!(refusal(err), TokenRefusal::Expired);

    assert_eq!(
        store.join_token(&token(1), 99).await.unwrap(),
        JoinToken::Fresh(added.clone())
    );
    let (enrolled, pem) = store
        .complete_enrollment(&token(1), 99, &cert("0a1b", "k1"))
        .await
        .unwrap();
    assert_eq!(
        (enrolled.id.as_str(), enrolled.enrolled_at),
        (added.id.as_str(), Some(99))
    );
    assert_eq!(pem, "CERT 0a1b");
    // Another key with the spent token: refused, and told how to get a new token.
    let err = store
        .complete_enrollment(&token(1), 99, &cert("0c0d", "other key"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("join token refused: token already used") && text.contains("servers add"),
        "{text}"
    );

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

/// Looking a token up spends nothing: only recording the certificate does, and that records
/// the enrollment and the certificate together.
#[tokio::test]
async fn a_token_is_spent_only_together_with_the_certificate_it_bought() {
    let (_dir, store) = store().await;
    let added = store.add_host("edge-1", &token(1), 100, 10).await.unwrap();
    for _ in 0..3 {
        let found = store.join_token(&token(1), 50).await.unwrap();
        assert_eq!(found, JoinToken::Fresh(added.clone()));
    }
    let h = store.host(&added.id).await.unwrap().unwrap();
    assert_eq!(
        (h.enrolled_at, h.cert_serial.as_deref()),
        (None, None),
        "{h:?}"
    );

    store
        .complete_enrollment(&token(1), 60, &cert("0a1b", "k1"))
        .await
        .unwrap();
    let h = store.host(&added.id).await.unwrap().unwrap();
    assert_eq!(
        (h.enrolled_at, h.cert_serial.as_deref(), h.cert_not_after),
        (Some(60), Some("0a1b"), Some(5_000))
    );
}

/// A host whose answer was lost asks again with the same key: within the token's lifetime it
/// gets the certificate already issued (not a second one); after it, the token is only "used".
#[tokio::test]
async fn a_spent_token_hands_its_certificate_to_the_same_key_until_it_expires() {
    let (_dir, store) = store().await;
    let added = store.add_host("edge-1", &token(1), 100, 10).await.unwrap();
    store
        .complete_enrollment(&token(1), 60, &cert("0a1b", "k1"))
        .await
        .unwrap();

    let JoinToken::Spent(Spent::Redeliver {
        host,
        cert_pem,
        key_sha256,
    }) = store.join_token(&token(1), 99).await.unwrap()
    else {
        panic!("a spent token within its lifetime offers its certificate");
    };
    assert_eq!(
        (host.id.as_str(), cert_pem.as_str(), key_sha256.as_str()),
        (added.id.as_str(), "CERT 0a1b", "k1")
    );
    // Two enrollments raced with the same key: the loser gets the winner's certificate and
    // records nothing of its own.
    let (_, pem) = store
        .complete_enrollment(&token(1), 70, &cert("ffff", "k1"))
        .await
        .unwrap();
    assert_eq!(pem, "CERT 0a1b");
    let h = store.host(&added.id).await.unwrap().unwrap();
    assert_eq!(
        (h.cert_serial.as_deref(), h.enrolled_at),
        (Some("0a1b"), Some(60))
    );

    assert_eq!(
        store.join_token(&token(1), 100).await.unwrap(),
        JoinToken::Spent(Spent::Closed)
    );
    let err = store
        .complete_enrollment(&token(1), 100, &cert("ffff", "k1"))
        .await
        .unwrap_err();
    assert_eq!(refusal(err), TokenRefusal::Used);
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
    let err = store.join_token(&token(1), 1).await.unwrap_err();
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
