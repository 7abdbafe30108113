//! WireGuard services: keys and tunnel addresses per user per host, the interface key per host
//! and service, addresses never shared on a host and free again only after removal, exhaustion
//! a clear error, and deltas that rebuild the full state.

use std::collections::BTreeSet;

use vpn_shared::model::{Credential, DesiredState, Protocol, ServiceOptions, WireguardOptions};

use super::{host, named, store, user};
use crate::store::{NewService, Servers, Store, StoreError, UserStatus};

pub(super) fn wg(name: &str, port: u16, subnet: &str, servers: Servers) -> NewService {
    NewService {
        name: name.into(),
        protocol: Protocol::Wireguard,
        port,
        port_span: None,
        image: None,
        options: ServiceOptions::Wireguard(WireguardOptions {
            subnet: subnet.into(),
            ipv6_subnet: Some("fd66::/64".into()),
            dns: vec!["1.1.1.1".into()],
            mtu: Some(1380),
            private_key: String::new(),
        }),
        servers,
        bandwidth: Default::default(),
        new_conn_rate: None,
    }
}

/// `(public key, allowed ips)` of a user's WireGuard credential in a host's state.
fn peer(state: &DesiredState, user: &str) -> Option<(String, Vec<String>)> {
    state
        .users
        .get(user)?
        .credentials
        .iter()
        .find_map(|c| match c {
            Credential::Wireguard {
                public_key,
                allowed_ips,
                ..
            } => Some((public_key.clone(), allowed_ips.clone())),
            _ => None,
        })
}

fn interface_key(state: &DesiredState, service: &str) -> String {
    match &state.services[service].options {
        ServiceOptions::Wireguard(o) => o.private_key.clone(),
        other => panic!("not wireguard: {other:?}"),
    }
}

async fn state(store: &Store, host: &str) -> DesiredState {
    store.desired_state(host).await.unwrap()
}

#[tokio::test]
async fn keys_and_addresses_are_per_user_per_host_and_the_server_key_per_host() {
    let (_dir, store) = store().await;
    let a = host(&store, "a", 1).await;
    let b = host(&store, "b", 2).await;
    let m = store
        .deploy_service(wg("wg", 51820, "10.66.0.0/16", Servers::All), 0)
        .await
        .unwrap();
    assert_eq!(m.value.port_span, 1, "one UDP port for every user");
    store
        .add_user(user("alice", Servers::All), 0)
        .await
        .unwrap();
    store.add_user(user("bob", named(&["a"])), 0).await.unwrap();

    let (sa, sb) = (state(&store, &a.id).await, state(&store, &b.id).await);
    let (ka, kb) = (interface_key(&sa, "wg"), interface_key(&sb, "wg"));
    assert_eq!(ka.len(), 44, "standard base64 of 32 bytes");
    assert_ne!(ka, kb, "one interface key per host");
    assert!(
        store.services().await.unwrap()[0].spec().options.eq(&wg(
            "wg",
            0,
            "10.66.0.0/16",
            Servers::All
        )
        .options),
        "the stored service holds no host's key"
    );

    let (alice_a, bob_a) = (peer(&sa, "alice").unwrap(), peer(&sa, "bob").unwrap());
    let alice_b = peer(&sb, "alice").unwrap();
    assert_eq!(alice_a.1, ["10.66.0.2/32", "fd66::2/128"]);
    assert_eq!(bob_a.1, ["10.66.0.3/32", "fd66::3/128"]);
    assert_eq!(
        alice_b.1,
        ["10.66.0.2/32", "fd66::2/128"],
        "allocated per host"
    );
    assert_ne!(alice_a.0, alice_b.0, "a key pair per host");
    assert!(peer(&sb, "bob").is_none(), "bob is not on b");

    let alice = store.user("alice").await.unwrap().unwrap().user.id;
    let client = store
        .wireguard_client(&alice, "wg", &a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        vpn_shared::wireguard::public_key_from_private(&client.private_key).unwrap(),
        alice_a.0,
        "the host gets the public half of the key the .conf carries"
    );
    assert_eq!(
        client.server_public_key,
        vpn_shared::wireguard::public_key_from_private(&ka).unwrap()
    );
    assert_eq!((client.port, client.mtu), (51820, Some(1380)));
}

#[tokio::test]
async fn two_users_never_share_an_address_and_one_is_free_again_only_after_removal() {
    let (_dir, store) = store().await;
    let a = host(&store, "a", 1).await;
    store
        .deploy_service(wg("wg", 51820, "10.66.0.0/16", Servers::All), 0)
        .await
        .unwrap();
    for n in ["u1", "u2", "u3"] {
        store.add_user(user(n, Servers::All), 0).await.unwrap();
    }
    let addresses = store.wireguard_addresses("wg", &a.id).await.unwrap();
    let distinct: BTreeSet<&Vec<String>> = addresses.iter().map(|(_, a)| a).collect();
    assert_eq!(distinct.len(), 3);

    store
        .set_user_status("u2", UserStatus::Suspended, 1)
        .await
        .unwrap();
    assert!(
        peer(&state(&store, &a.id).await, "u2").is_none(),
        "off the host"
    );
    store.add_user(user("u4", Servers::All), 1).await.unwrap();
    let u4 = peer(&state(&store, &a.id).await, "u4").unwrap();
    assert_eq!(
        u4.1[0], "10.66.0.5/32",
        "a suspended user keeps its address"
    );

    store.remove_user("u2").await.unwrap();
    store.add_user(user("u5", Servers::All), 2).await.unwrap();
    let u5 = peer(&state(&store, &a.id).await, "u5").unwrap();
    assert_eq!(u5.1[0], "10.66.0.3/32", "free again after removal");
}

#[tokio::test]
async fn exhaustion_names_the_service_and_subnet_and_writes_nothing() {
    let (_dir, store) = store().await;
    host(&store, "a", 1).await;
    let mut new = wg("wg-small", 51820, "10.9.0.0/29", Servers::All);
    if let ServiceOptions::Wireguard(o) = &mut new.options {
        o.ipv6_subnet = None;
    }
    store.deploy_service(new, 0).await.unwrap();
    for i in 0..5 {
        store
            .add_user(user(&format!("u{i}"), Servers::All), 0)
            .await
            .unwrap();
    }
    let err = store
        .add_user(user("late", Servers::All), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Wireguard(_)));
    assert_eq!(
        err.to_string(),
        "no free tunnel address left in subnet 10.9.0.0/29 of service wg-small"
    );
    assert!(
        store.user("late").await.unwrap().is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn bad_options_name_their_field() {
    let (_dir, store) = store().await;
    type Change = fn(&mut WireguardOptions);
    let cases: [(&str, Change); 5] = [
        ("subnet", |o| o.subnet = "10.66.0.1/16".into()),
        ("subnet", |o| o.subnet = "fd00::/64".into()),
        ("ipv6-subnet", |o| o.ipv6_subnet = Some("10.0.0.0/8".into())),
        ("dns", |o| o.dns = vec!["one.one".into()]),
        ("mtu", |o| o.mtu = Some(100)),
    ];
    for (field, change) in cases {
        let mut new = wg("wg", 51820, "10.66.0.0/16", Servers::All);
        if let ServiceOptions::Wireguard(o) = &mut new.options {
            change(o);
        }
        match store.deploy_service(new, 0).await {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(store.services().await.unwrap().is_empty());

    store
        .deploy_service(wg("wg", 51820, "10.66.0.0/16", Servers::All), 0)
        .await
        .unwrap();
    let err = store
        .deploy_service(wg("wg2", 51821, "10.66.128.0/17", Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid subnet: 10.66.128.0/17 overlaps 10.66.0.0/16 of wireguard service wg"
    );
    let mut other = wg("wg3", 51822, "10.67.0.0/16", Servers::All);
    if let ServiceOptions::Wireguard(o) = &mut other.options {
        o.ipv6_subnet = Some("fd66::/80".into());
    }
    match store.deploy_service(other, 0).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "ipv6-subnet"),
        other => panic!("{other:?}"),
    }
    let mut apart = wg("wg4", 51823, "10.67.0.0/16", Servers::All);
    if let ServiceOptions::Wireguard(o) = &mut apart.options {
        o.ipv6_subnet = Some("fd67::/64".into());
    }
    store.deploy_service(apart, 0).await.unwrap();
}

#[tokio::test]
async fn deltas_and_full_states_agree_including_a_host_added_later() {
    let (_dir, store) = store().await;
    let a = host(&store, "a", 1).await;
    let mut held = state(&store, &a.id).await;
    let apply = |pushes: &[crate::store::HostPush], held: &mut DesiredState| {
        for p in pushes.iter().filter(|p| p.host_id == a.id) {
            held.apply_delta(p.base_generation, p.generation, &p.changes)
                .unwrap();
        }
    };
    let m = store
        .deploy_service(wg("wg", 51820, "10.66.0.0/16", Servers::All), 0)
        .await
        .unwrap();
    apply(&m.pushes, &mut held);
    let m = store
        .add_user(user("alice", Servers::All), 0)
        .await
        .unwrap();
    apply(&m.pushes, &mut held);
    let m = store
        .edit_service_with("wg", None, Some(Some(5)), None)
        .await
        .unwrap();
    apply(&m.pushes, &mut held);
    assert_eq!(held, state(&store, &a.id).await);

    // A host added later gets its interface and peers with its first full state.
    let c = host(&store, "c", 3).await;
    let sc = state(&store, &c.id).await;
    assert_eq!(interface_key(&sc, "wg").len(), 44);
    assert_eq!(peer(&sc, "alice").unwrap().1[0], "10.66.0.2/32");
    assert_eq!(sc, state(&store, &c.id).await, "stable once made");
}
