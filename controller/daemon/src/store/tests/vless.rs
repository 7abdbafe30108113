//! VLESS services: Xray users share the service port and need no port of their own, shoes
//! users get one each; every user gets a random UUID; bad Reality settings name their field.

use vpn_shared::model::{Credential, Protocol, ServiceOptions, VlessEngine, VlessOptions};

use super::{host, ss, store, user};
use crate::store::{NewService, Servers, StoreError};

pub(super) fn vless(name: &str, port: u16, engine: VlessEngine) -> NewService {
    NewService {
        name: name.into(),
        protocol: Protocol::Vless,
        port,
        port_span: None,
        image: None,
        options: ServiceOptions::Vless(VlessOptions {
            engine,
            sni: "www.example.com".into(),
            dest: "www.example.com:443".into(),
            private_key: "2KZ4uouMKgI8nR-LDJNP1_MHisCJOmKGj9jUjZLncVU".into(),
            public_key: "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw".into(),
            short_ids: vec!["6ba85179e30d4fc2".into()],
        }),
        servers: Servers::All,
        bandwidth: Default::default(),
        new_conn_rate: None,
    }
}

fn vless_credentials(
    state: &vpn_shared::model::DesiredState,
    user: &str,
) -> Vec<(String, u16, String)> {
    state.users[user]
        .credentials
        .iter()
        .filter_map(|c| match c {
            Credential::Vless {
                service,
                port,
                uuid,
            } => Some((service.clone(), *port, uuid.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn xray_users_share_the_service_port_and_shoes_users_get_their_own() {
    let (_dir, store) = store().await;
    let h = host(&store, "edge-1", 1).await;
    let x = store
        .deploy_service(vless("vless", 443, VlessEngine::Xray), 0)
        .await
        .unwrap();
    assert_eq!(x.value.port_span, 1, "the service port alone");
    store
        .deploy_service(vless("vless-shoes", 20000, VlessEngine::Shoes), 0)
        .await
        .unwrap();
    // Xray's range is only its port: a neighbour right after it fits.
    store
        .deploy_service(ss("ss", 444, 10, Servers::All), 0)
        .await
        .unwrap();
    for name in ["alice", "bob"] {
        store.add_user(user(name, Servers::All), 0).await.unwrap();
    }
    let state = store.desired_state(&h.id).await.unwrap();
    let alice = vless_credentials(&state, "alice");
    let bob = vless_credentials(&state, "bob");
    assert_eq!((alice[0].0.as_str(), alice[0].1), ("vless", 443));
    assert_eq!((bob[0].0.as_str(), bob[0].1), ("vless", 443));
    assert_eq!((alice[1].0.as_str(), alice[1].1), ("vless-shoes", 20000));
    assert_eq!((bob[1].0.as_str(), bob[1].1), ("vless-shoes", 20001));
    for (_, _, id) in alice.iter().chain(&bob) {
        let parsed = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(parsed.get_version_num(), 4, "{id}");
    }
    assert_ne!(alice[0].2, bob[0].2);
    assert_ne!(alice[0].2, alice[1].2, "one id per user and service");

    // Users who arrived before the service get their credentials with the deploy.
    store
        .deploy_service(vless("late", 30000, VlessEngine::Xray), 0)
        .await
        .unwrap();
    let state = store.desired_state(&h.id).await.unwrap();
    assert_eq!(vless_credentials(&state, "bob").len(), 3);

    // Removing an Xray user frees nothing and breaks nothing; shoes ports come back.
    store.remove_user("alice").await.unwrap();
    store
        .add_user(user("carol", Servers::All), 0)
        .await
        .unwrap();
    let state = store.desired_state(&h.id).await.unwrap();
    let carol = vless_credentials(&state, "carol");
    assert_eq!(carol[0].1, 30000, "late: the service port");
    assert_eq!(carol[1].1, 443);
    assert_eq!(carol[2].1, 20000, "alice's shoes port, given back");
}

#[tokio::test]
async fn bad_reality_settings_name_their_field_and_write_nothing() {
    let (_dir, store) = store().await;
    type Spoil = Box<dyn Fn(&mut VlessOptions)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("sni", Box::new(|o| o.sni = "bad name".into())),
        ("sni", Box::new(|o| o.sni = "203.0.113.1".into())),
        ("dest", Box::new(|o| o.dest = "www.example.com".into())),
        ("dest", Box::new(|o| o.dest = "www.example.com:0".into())),
        ("dest", Box::new(|o| o.dest = "bad host:443".into())),
        ("short-ids", Box::new(|o| o.short_ids = vec![])),
        ("short-ids", Box::new(|o| o.short_ids = vec!["abc".into()])),
        (
            "short-ids",
            Box::new(|o| o.short_ids = vec!["0123456789abcdef0".into()]),
        ),
        (
            "short-ids",
            Box::new(|o| o.short_ids = vec!["0123456789ABCDEF".into()]),
        ),
        (
            "short-ids",
            Box::new(|o| o.short_ids = vec!["012345678".into()]),
        ),
        ("reality key", Box::new(|o| o.private_key = "short".into())),
    ];
    for (field, spoil) in cases {
        let mut new = vless("vless", 443, VlessEngine::Xray);
        let ServiceOptions::Vless(o) = &mut new.options else {
            unreachable!()
        };
        spoil(o);
        let err = store.deploy_service(new, 0).await.unwrap_err();
        match err {
            StoreError::Invalid { field: f, .. } => assert_eq!(f, field, "{err}"),
            other => panic!("expected invalid {field}, got {other}"),
        }
    }
    // Options of another protocol.
    let mut new = vless("vless", 443, VlessEngine::Xray);
    new.protocol = Protocol::Shadowsocks;
    assert!(matches!(
        store.deploy_service(new, 0).await.unwrap_err(),
        StoreError::Invalid {
            field: "options",
            ..
        }
    ));
    // shoes signs the dest's name into its certificate: an IP dest cannot work there.
    let mut new = vless("vless", 443, VlessEngine::Shoes);
    if let ServiceOptions::Vless(o) = &mut new.options {
        o.dest = "192.0.2.1:443".into();
    }
    let err = store.deploy_service(new, 0).await.unwrap_err();
    assert!(err.to_string().contains("host name"), "{err}");
    assert!(store.services().await.unwrap().is_empty());
    // IPv6 and IPv4 destinations are fine.
    for dest in ["[2001:db8::1]:443", "192.0.2.1:8443"] {
        let mut new = vless("vless", 443, VlessEngine::Xray);
        if let ServiceOptions::Vless(o) = &mut new.options {
            o.dest = dest.into();
        }
        store.deploy_service(new, 0).await.unwrap();
        store.remove_service("vless").await.unwrap();
    }
}
