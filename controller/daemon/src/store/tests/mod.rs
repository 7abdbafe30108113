//! Store tests against real SQLite files in temporary directories: hosts and tokens, services
//! and ports, users, bad input, and (in `invariant`) that deltas always rebuild the full state.

mod counts;
mod credentials;
mod health;
mod hosts;
mod ingest_scale;
mod invariant;
mod limits;
mod ports;
mod proxy;
mod quota;
mod scale;
mod usage;
mod vless;
mod wireguard;

use tempfile::TempDir;
use vpn_shared::model::{Protocol, ServiceOptions};

use super::*;

pub(super) async fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("controller.db"))
        .await
        .unwrap();
    (dir, store)
}

/// A distinct, well-formed token hash.
pub(super) fn token(n: u8) -> String {
    hex::encode([n; 32])
}

pub(super) fn named(names: &[&str]) -> Servers {
    Servers::Named(names.iter().map(|n| n.to_string()).collect())
}

pub(super) fn ss(name: &str, port: u16, span: u16, servers: Servers) -> NewService {
    NewService {
        name: name.into(),
        protocol: Protocol::Shadowsocks,
        port,
        port_span: Some(span),
        image: None,
        options: ServiceOptions::Shadowsocks {
            method: "chacha20-ietf-poly1305".into(),
        },
        servers,
        bandwidth: Default::default(),
        new_conn_rate: None,
    }
}

pub(super) fn user(name: &str, servers: Servers) -> NewUser {
    NewUser {
        name: name.into(),
        email: None,
        note: None,
        servers,
        protocols: None,
        bandwidth: Default::default(),
        quota: Default::default(),
    }
}

pub(super) async fn host(store: &Store, name: &str, n: u8) -> HostRow {
    store.add_host(name, &token(n), 1_000, 0).await.unwrap()
}

#[tokio::test]
async fn the_file_is_private_and_survives_a_reopen() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.db");
    let store = Store::open(&path).await.unwrap();
    host(&store, "edge-1", 1).await;
    store.close().await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.hosts().await.unwrap()[0].name, "edge-1");
}

#[tokio::test]
async fn duplicate_names_are_refused_by_kind() {
    let (_dir, store) = store().await;
    host(&store, "edge-1", 1).await;
    let err = store
        .add_host("edge-1", &token(2), 1_000, 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "server edge-1 already exists");

    store
        .deploy_service(ss("ss", 9000, 10, Servers::All), 0)
        .await
        .unwrap();
    let err = store
        .deploy_service(ss("ss", 9100, 10, Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "service ss already exists");

    store
        .add_user(user("alice", Servers::All), 0)
        .await
        .unwrap();
    let err = store
        .add_user(user("alice", Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "user alice already exists");
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let (_dir, store) = store().await;
    let field = |e: StoreError| match e {
        StoreError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other}"),
    };
    assert_eq!(
        field(store.add_host("Edge_1", &token(1), 9, 0).await.unwrap_err()),
        "name"
    );
    assert_eq!(
        field(store.add_host("edge", "not-hex", 9, 0).await.unwrap_err()),
        "token"
    );
    let mut bad = user("alice", Servers::All);
    bad.email = Some("not an email".into());
    assert_eq!(field(store.add_user(bad, 0).await.unwrap_err()), "email");
    assert_eq!(
        field(
            store
                .add_user(user("-x", Servers::All), 0)
                .await
                .unwrap_err()
        ),
        "name"
    );
    let mut bad = user("alice", Servers::All);
    bad.protocols = Some(vec![]);
    assert_eq!(
        field(store.add_user(bad, 0).await.unwrap_err()),
        "protocols"
    );
    let err = store
        .deploy_service(ss("ss", 0, 1, Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(field(err), "port");
    let err = store
        .deploy_service(ss("ss", 65000, 1000, Servers::All), 0)
        .await
        .unwrap_err();
    // The range was sized by the operator (`--ports`), so that is the flag named.
    assert_eq!(field(err), "ports");
    let err = store
        .deploy_service(ss("Bad", 9000, 1, Servers::All), 0)
        .await
        .unwrap_err();
    assert_eq!(field(err), "name");

    let err = store
        .add_user(user("alice", named(&["nowhere"])), 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "server nowhere not found");
    let err = store
        .deploy_service(ss("ss", 9000, 10, named(&["nowhere"])), 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "server nowhere not found");
    assert!(store.users().await.unwrap().is_empty());
    assert!(store.services().await.unwrap().is_empty());
    assert!(store.hosts().await.unwrap().is_empty());
    let err = store.remove_user("ghost").await.unwrap_err();
    assert_eq!(err.to_string(), "user ghost not found");
    let err = store
        .set_user_status("ghost", UserStatus::Suspended, 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "user ghost not found");
    let err = store.remove_service("ghost").await.unwrap_err();
    assert_eq!(err.to_string(), "service ghost not found");
    let err = store.remove_host("ghost", 0).await.unwrap_err();
    assert_eq!(err.to_string(), "server ghost not found");
    let err = store
        .record_seen("ghost", "1", "192.0.2.1:1", 0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "host ghost not found");
}

/// Compile-time check (never called): the daemon shares one `Store` between tasks and spawns
/// the futures of its methods.
fn _store_futures_are_spawnable(store: std::sync::Arc<Store>) {
    fn spawnable<T: Send + 'static>(_: T) {}
    spawnable(async move {
        store.add_user(user("a", Servers::All), 0).await?;
        store.deploy_service(ss("s", 1, 1, Servers::All), 0).await?;
        store.desired_state("h").await
    });
}
