//! Port ranges: a service holds as many users as its range has ports (20,000 here, the scale
//! issue 10 asks for), the one past that is refused naming the service and its range, a range
//! is resized by `services edit --ports` without moving any user's port, and bad ranges name
//! the flag. Users are seeded with direct SQL so the debug build stays quick; the ports are
//! handed out by the real allocator.

use std::collections::BTreeSet;

use sqlx::{QueryBuilder, Sqlite};
use vpn_shared::model::{Credential, Protocol, ServiceOptions, VlessEngine, WireguardOptions};

use super::vless::vless;
use super::{host, ss, store, user};
use crate::store::{NewService, Servers, Store, StoreError};

const USERS: usize = 20_000;
const FIRST: u16 = 20_000;

/// `count` active users on every server, straight into SQLite.
async fn seed_users(store: &Store, count: usize) {
    let mut tx = store.pool.begin().await.unwrap();
    for chunk in (0..count).collect::<Vec<_>>().chunks(2_000) {
        let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO users (id, name, status, all_servers, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut row, i| {
            row.push_bind(uuid::Uuid::new_v4().to_string())
                .push_bind(format!("user{i:05}"))
                .push_bind("active")
                .push_bind(true)
                .push_bind(0i64)
                .push_bind(0i64);
        });
        q.build().execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// (lowest, highest, distinct) ports held on `service`.
async fn held(store: &Store, service: &str) -> (u16, u16, u32) {
    sqlx::query_as(
        "SELECT MIN(port), MAX(port), COUNT(DISTINCT port) FROM credentials WHERE service = ?1",
    )
    .bind(service)
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

fn message(e: StoreError) -> String {
    e.to_string()
}

#[tokio::test]
async fn twenty_thousand_users_fit_one_service_and_the_next_is_refused_naming_the_range() {
    let (_dir, store) = store().await;
    let h = host(&store, "edge-1", 1).await;
    seed_users(&store, USERS).await;
    let started = std::time::Instant::now();
    let deployed = store
        .deploy_service(ss("ss", FIRST, 20_000, Servers::All), 0)
        .await
        .unwrap();
    println!("deploy with {USERS} users: {:?}", started.elapsed());
    assert_eq!(deployed.value.port_span, 20_000);
    assert_eq!(held(&store, "ss").await, (20_000, 39_999, 20_000));
    let [push] = deployed.pushes.as_slice() else {
        panic!("one host, one push");
    };
    // The service and every user: cheaper sent as the host's full state (in chunks) than as
    // a delta of 20,001 changes.
    assert!(push.full, "{} changes", push.changes.len());
    assert!(push.changes.is_empty());

    // The host's full state holds every user on a port of its own inside the range.
    let state = store.desired_state(&h.id).await.unwrap();
    assert_eq!(state.users.len(), USERS);
    let ports: BTreeSet<u16> = state
        .users
        .values()
        .flat_map(|u| &u.credentials)
        .filter_map(|c| match c {
            Credential::Shadowsocks { port, .. } => Some(*port),
            _ => None,
        })
        .collect();
    assert_eq!(ports.len(), USERS);
    assert_eq!(
        (ports.first(), ports.last()),
        (Some(&20_000), Some(&39_999))
    );

    // The 20,001st: refused with the service and its range, and nothing of it written.
    let err = store
        .add_user(user("one-too-many", Servers::All), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PortsExhausted { .. }), "{err}");
    assert_eq!(
        message(err),
        "no free port left in the range of service ss (20000-39999, every port held); \
         grow it with `vpn services edit ss --ports N`"
    );
    assert!(store.user("one-too-many").await.unwrap().is_none());
    assert_eq!(
        state.generation,
        store.desired_state(&h.id).await.unwrap().generation
    );

    // Shrinking below a held port is refused and changes nothing.
    let err = store
        .edit_service_ports("ss", None, None, None, Some(19_999))
        .await
        .unwrap_err();
    assert_eq!(
        message(err),
        "invalid ports: a user of service ss holds port 39999, past 39998; the range must \
         keep at least 20000 ports"
    );
    assert_eq!(
        store.service("ss").await.unwrap().unwrap().port_span,
        20_000
    );

    // Growing by one makes room for exactly one more, and pushes nothing by itself.
    let grown = store
        .edit_service_ports("ss", None, None, None, Some(20_001))
        .await
        .unwrap();
    assert_eq!(grown.value.port_span, 20_001);
    assert!(grown.pushes.is_empty(), "hosts open held ports, not ranges");
    store
        .add_user(user("one-more", Servers::All), 1)
        .await
        .unwrap();
    assert_eq!(held(&store, "ss").await, (20_000, 40_000, 20_001));
    let err = store
        .add_user(user("and-another", Servers::All), 1)
        .await
        .unwrap_err();
    assert!(message(err).contains("(20000-40000, every port held)"));
}

#[tokio::test]
async fn a_shrunk_range_never_hands_out_a_port_past_its_end() {
    let (_dir, store) = store().await;
    store
        .deploy_service(ss("ss", 9000, 10, Servers::All), 0)
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        store.add_user(user(name, Servers::All), 0).await.unwrap();
    }
    // 9002 goes back to the free list, below the high-water mark 9003.
    store.remove_user("c").await.unwrap();
    let shrunk = store
        .edit_service_ports("ss", None, None, None, Some(2))
        .await
        .unwrap();
    assert_eq!(shrunk.value.port_span, 2);
    let err = store
        .add_user(user("d", Servers::All), 0)
        .await
        .unwrap_err();
    assert!(
        message(err).contains("(9000-9001, every port held)"),
        "9002 was listed free but is past the new end"
    );
    store
        .edit_service_ports("ss", None, None, None, Some(5))
        .await
        .unwrap();
    store.add_user(user("d", Servers::All), 0).await.unwrap();
    store.add_user(user("e", Servers::All), 0).await.unwrap();
    assert_eq!(held(&store, "ss").await, (9000, 9003, 4));
}

#[tokio::test]
async fn bad_ranges_name_the_flag_and_write_nothing() {
    let (_dir, store) = store().await;
    store
        .deploy_service(ss("ss", FIRST, 20_000, Servers::All), 0)
        .await
        .unwrap();
    let deploy = |new: NewService| {
        let store = &store;
        async move { message(store.deploy_service(new, 0).await.unwrap_err()) }
    };
    assert_eq!(
        deploy(ss("ss2", 39_000, 10, Servers::All)).await,
        "invalid ports: ports 39000-39009 overlap service ss (20000-39999)"
    );
    assert_eq!(
        deploy(ss("ss2", 10_000, 10_001, Servers::All)).await,
        "invalid ports: ports 10000-20000 overlap service ss (20000-39999)"
    );
    assert_eq!(
        deploy(ss("ss2", 50_000, 20_000, Servers::All)).await,
        "invalid ports: the range 50000-69999 (20000 ports) goes past 65535"
    );
    let default_span = NewService {
        port_span: None,
        ..ss("ss2", 65_000, 1, Servers::All)
    };
    assert_eq!(
        deploy(default_span).await,
        "invalid port: the range 65000-65999 (1000 ports) goes past 65535"
    );
    let shared = NewService {
        port_span: Some(10),
        ..vless("x", 443, VlessEngine::Xray)
    };
    assert!(
        deploy(shared)
            .await
            .starts_with("invalid ports: the users of a vless service share its one port"),
    );
    let wg = NewService {
        name: "wg".into(),
        protocol: Protocol::Wireguard,
        port: 51_820,
        port_span: Some(100),
        image: None,
        options: ServiceOptions::Wireguard(WireguardOptions {
            subnet: "10.66.0.0/16".into(),
            ipv6_subnet: None,
            dns: Vec::new(),
            mtu: None,
            private_key: String::new(),
        }),
        servers: Servers::All,
        bandwidth: Default::default(),
        new_conn_rate: None,
    };
    assert!(deploy(wg).await.starts_with("invalid ports:"));
    let names: Vec<String> = store
        .services()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["ss"], "nothing refused was written");

    // Edits: into another range, past 65535, or on a shared-port service.
    store
        .deploy_service(ss("low", 10_000, 1_000, Servers::All), 0)
        .await
        .unwrap();
    store
        .deploy_service(vless("x", 443, VlessEngine::Xray), 0)
        .await
        .unwrap();
    let edit = |name: &'static str, span: u16| {
        let store = &store;
        async move {
            message(
                store
                    .edit_service_ports(name, None, Some(Some(5)), None, Some(span))
                    .await
                    .unwrap_err(),
            )
        }
    };
    assert_eq!(
        edit("low", 10_001).await,
        "invalid ports: ports 10000-20000 overlap service ss (20000-39999)"
    );
    assert_eq!(
        edit("ss", 45_537).await,
        "invalid ports: the range 20000-65536 (45537 ports) goes past 65535"
    );
    assert!(
        edit("x", 2)
            .await
            .starts_with("invalid ports: the users of service x (vless) share its one port 443"),
    );
    let low = store.service("low").await.unwrap().unwrap();
    assert_eq!(
        (low.port_span, low.new_conn_rate),
        (1_000, None),
        "a refused resize leaves the rest of the edit unwritten too"
    );
    // Up to 65535 exactly is fine.
    store
        .edit_service_ports("ss", None, None, None, Some(45_536))
        .await
        .unwrap();
}
