//! Host health on a real SQLite file: a failing service is recorded with first and last seen,
//! replaced by the next complete result set, reported as events newest first, counted for
//! `status`, kept while the host is offline and removed with the host.

use vpn_shared::proto::{Repair, ResourceResult};

use super::{host, store};
use crate::store::EventKind;
use crate::store::health::{EVENTS_KEPT, TOUCH_EVERY};

#[tokio::test]
async fn a_failure_is_kept_until_a_complete_set_without_it_arrives() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    let other = host(&store, "edge-2", 2).await;

    // The deploy's ack: the container could not be created.
    let ack = [
        ResourceResult::error("service/ss", "image ghcr.io/x: not found"),
        ResourceResult::error("user/alice@ss", "service not running"),
        ResourceResult::ok("host/firewall"),
    ];
    let u = store.record_results(&edge.id, &ack, 1_000).await.unwrap();
    assert_eq!((u.failing, u.written, u.new_failures.len()), (2, true, 2));
    let failing = store.failing(&edge.id).await.unwrap();
    assert_eq!(failing[0].resource, "service/ss");
    assert_eq!(failing[0].message, "image ghcr.io/x: not found");
    assert_eq!(
        (failing[0].first_seen, failing[0].last_seen),
        (1_000, 1_000)
    );

    // Reports every 10 s with the same failures: no write until a minute has passed.
    let u = store.record_results(&edge.id, &ack, 1_010).await.unwrap();
    assert_eq!((u.failing, u.written), (2, false));
    let u = store
        .record_results(&edge.id, &ack, 1_000 + TOUCH_EVERY)
        .await
        .unwrap();
    assert!(u.written && u.new_failures.is_empty());
    let failing = store.failing(&edge.id).await.unwrap();
    assert_eq!(
        (failing[0].first_seen, failing[0].last_seen),
        (1_000, 1_000 + TOUCH_EVERY)
    );

    // SQL counts for status.
    store
        .record_results(
            &other.id,
            &[ResourceResult::error("host/shaping", "no tc")],
            1_070,
        )
        .await
        .unwrap();
    let counts = store.failing_counts().await.unwrap();
    assert_eq!(counts.get(&edge.id), Some(&2));
    assert_eq!(counts.get(&other.id), Some(&1));
    let of_ss = store.failing_of_service("ss").await.unwrap();
    assert_eq!(of_ss.get(&edge.id).map(Vec::len), Some(2));
    assert!(
        !of_ss.contains_key(&other.id),
        "host/shaping is no part of service ss"
    );
    let firsts = store.failing_all(1).await.unwrap();
    assert_eq!(firsts.get(&edge.id).map(Vec::len), Some(1));

    // The fixed image: the service is ok, alice is no longer reported.
    let u = store
        .record_results(&edge.id, &[ResourceResult::ok("service/ss")], 1_100)
        .await
        .unwrap();
    assert_eq!(u.failing, 0);
    assert_eq!(
        u.recovered,
        vec!["service/ss".to_string(), "user/alice@ss".into()]
    );
    assert!(store.failing(&edge.id).await.unwrap().is_empty());

    let events = store.host_events(&edge.id, 10).await.unwrap();
    let seen: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.resource.as_deref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("recovered", Some("user/alice@ss")),
            ("recovered", Some("service/ss")),
            ("failing", Some("user/alice@ss")),
            ("failing", Some("service/ss")),
        ],
        "newest first"
    );
    assert_eq!(events[0].at, 1_100);
}

#[tokio::test]
async fn repairs_and_liveness_are_events_and_the_list_stays_bounded() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    store
        .record_host_event(&edge.id, EventKind::Online, "connected", 10)
        .await
        .unwrap();
    let repair = Repair {
        resource: "service/ss".into(),
        action: "container was missing; created".into(),
        at: 999_999, // agent clock: not used for ordering
    };
    store.record_repairs(&edge.id, &[repair], 11).await.unwrap();
    let events = store.host_events(&edge.id, 5).await.unwrap();
    assert_eq!(events[0].kind, "repaired");
    assert_eq!(events[0].message, "container was missing; created");
    assert_eq!(events[0].at, 11);
    assert_eq!(events[1].kind, "online");

    for i in 0..(EVENTS_KEPT + 30) {
        store
            .record_host_event(&edge.id, EventKind::Offline, &format!("gone {i}"), 20 + i)
            .await
            .unwrap();
    }
    let all = store.host_events(&edge.id, 1_000).await.unwrap();
    assert_eq!(all.len() as i64, EVENTS_KEPT);
    assert_eq!(all[0].message, format!("gone {}", EVENTS_KEPT + 29));
}

#[tokio::test]
async fn health_goes_with_its_host() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    store
        .record_results(&edge.id, &[ResourceResult::error("service/ss", "x")], 5)
        .await
        .unwrap();
    store.remove_host("edge-1", 6).await.unwrap();
    assert!(store.failing_counts().await.unwrap().is_empty());
    assert!(store.host_events(&edge.id, 10).await.unwrap().is_empty());
}
