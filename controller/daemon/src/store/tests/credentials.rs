//! Credentials: port allocation and reuse, secrets, and what `user()` shows.

use vpn_shared::model::{Protocol, ServiceOptions};

use super::{host, ss, store, user};
use crate::store::{Servers, UserDetail, UserStatus};

fn ports_of(detail: &UserDetail) -> Vec<(String, u16)> {
    let c = &detail.credentials;
    c.iter().map(|c| (c.service.clone(), c.port)).collect()
}

#[tokio::test]
async fn ports_are_the_lowest_free_and_come_back_after_removal() {
    let (_dir, store) = store().await;
    store
        .deploy_service(ss("ss", 9000, 3, Servers::All), 0)
        .await
        .unwrap();
    let err = store
        .deploy_service(ss("ss2", 9002, 10, Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid ports: ports 9002-9011 overlap service ss (9000-9002)"
    );
    store
        .deploy_service(ss("ss2", 8990, 10, Servers::All), 0)
        .await
        .unwrap();
    let listed: Vec<String> = store
        .services()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, ["ss", "ss2"]);

    for name in ["a", "b", "c"] {
        store.add_user(user(name, Servers::All), 0).await.unwrap();
    }
    let port = |d: UserDetail| ports_of(&d);
    let b = port(store.user("b").await.unwrap().unwrap());
    assert_eq!(b, [("ss".into(), 9001), ("ss2".into(), 8991)]);
    let err = store
        .add_user(user("d", Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free port left in the range of service ss (9000-9002, every port held); \
         grow it with `vpn services edit ss --ports N`"
    );
    assert!(store.user("d").await.unwrap().is_none());

    store.remove_user("b").await.unwrap();
    store.remove_user("a").await.unwrap();
    store.add_user(user("e", Servers::All), 0).await.unwrap();
    let e = port(store.user("e").await.unwrap().unwrap());
    assert_eq!(e, [("ss".into(), 9000), ("ss2".into(), 8990)]);
    store.add_user(user("f", Servers::All), 0).await.unwrap();
    let f = port(store.user("f").await.unwrap().unwrap());
    assert_eq!(f, [("ss".into(), 9001), ("ss2".into(), 8991)]);

    // Removing a service frees its whole range for a new one.
    store.remove_service("ss").await.unwrap();
    let again = store
        .deploy_service(ss("ss3", 9000, 5, Servers::All), 0)
        .await
        .unwrap();
    assert_eq!(again.value.port_span, 5);
    let mut held: Vec<u16> = Vec::new();
    for u in store.users().await.unwrap() {
        let d = store.user(&u.name).await.unwrap().unwrap();
        held.extend(
            d.credentials
                .iter()
                .filter(|c| c.service == "ss3")
                .map(|c| c.port),
        );
    }
    held.sort();
    assert_eq!(held, [9000, 9001, 9002]);
}

#[tokio::test]
async fn a_user_shows_its_credentials_and_hosts() {
    let (_dir, store) = store().await;
    host(&store, "edge-2", 2).await;
    host(&store, "edge-1", 1).await;
    store
        .deploy_service(ss("ss", 9000, 10, Servers::All), 0)
        .await
        .unwrap();
    let mut new = user("alice", Servers::All);
    new.email = Some("alice@example.com".into());
    new.protocols = Some(vec![Protocol::Shadowsocks, Protocol::Shadowsocks]);
    let added = store.add_user(new, 7).await.unwrap().value;
    assert_eq!(added.protocols, Some(vec![Protocol::Shadowsocks]));
    assert_eq!(
        (added.status, added.created_at, added.updated_at),
        (UserStatus::Active, 7, 7)
    );

    let d = store.user("alice").await.unwrap().unwrap();
    assert_eq!(d.user, added);
    let names: Vec<&str> = d.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["edge-1", "edge-2"]);
    let c = &d.credentials[0];
    assert_eq!(
        (c.service.as_str(), c.protocol, c.port),
        ("ss", Protocol::Shadowsocks, 9000)
    );
    assert_eq!(c.secret.len(), 22, "16 bytes in base64url without padding");
    assert!(matches!(c.options, ServiceOptions::Shadowsocks { .. }));

    let suspended = store
        .set_user_status("alice", UserStatus::Suspended, 9)
        .await
        .unwrap();
    assert_eq!(
        (suspended.value.status, suspended.value.updated_at),
        (UserStatus::Suspended, 9)
    );
    assert_eq!(store.users().await.unwrap(), vec![suspended.value]);
}
