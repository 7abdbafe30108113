//! Proxy services: every user gets a port of their own and a random password; the user name
//! the host receives is the user's name; options of another protocol are refused.

use vpn_shared::model::{Credential, Protocol, ProxyKind, ProxyOptions, ServiceOptions};

use super::{host, store, user};
use crate::store::{NewService, Servers, StoreError};

fn proxy(name: &str, port: u16, kind: ProxyKind) -> NewService {
    NewService {
        name: name.into(),
        protocol: Protocol::Proxy,
        port,
        port_span: None,
        image: None,
        options: ServiceOptions::Proxy(ProxyOptions { kind }),
        servers: Servers::All,
        bandwidth: Default::default(),
        new_conn_rate: None,
    }
}

#[tokio::test]
async fn proxy_users_get_their_own_port_their_name_and_a_random_password() {
    let (_dir, store) = store().await;
    let h = host(&store, "edge-1", 1).await;
    store
        .add_user(user("alice@corp", Servers::All), 0)
        .await
        .unwrap();
    let svc = store
        .deploy_service(proxy("proxy", 3128, ProxyKind::Both), 0)
        .await
        .unwrap();
    assert_eq!(svc.value.port_span, 1000, "a range, a port per user");
    store.add_user(user("bob", Servers::All), 0).await.unwrap();
    let state = store.desired_state(&h.id).await.unwrap();
    let creds: Vec<(u16, String, String)> = ["alice@corp", "bob"]
        .iter()
        .flat_map(|u| state.users[*u].credentials.iter())
        .filter_map(|c| match c {
            Credential::Proxy {
                port,
                username,
                password,
                ..
            } => Some((*port, username.clone(), password.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(creds.len(), 2, "{creds:?}");
    assert_eq!((creds[0].0, creds[0].1.as_str()), (3128, "alice@corp"));
    assert_eq!((creds[1].0, creds[1].1.as_str()), (3129, "bob"));
    for (_, _, pw) in &creds {
        assert_eq!(pw.len(), 22, "16 random bytes in base64url: {pw}");
    }
    assert_ne!(creds[0].2, creds[1].2);
}

#[tokio::test]
async fn proxy_options_on_another_protocol_are_refused_naming_the_field() {
    let (_dir, store) = store().await;
    let mut bad = proxy("proxy", 3128, ProxyKind::Http);
    bad.protocol = Protocol::Shadowsocks;
    let err = store.deploy_service(bad, 0).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid { field, .. } if *field == "options"),
        "{err:?}"
    );
}
