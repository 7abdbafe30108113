//! Traffic accounting on a real SQLite file: a batch is applied once however often it comes, a
//! lost ledger (a new epoch) starts its seqs again without being taken for a replay, a batch
//! out of order changes nothing, bytes of a removed user or host are kept and named, and the
//! totals come out per user, server, service and day.

use vpn_shared::proto::admin::{UsageBy, UsageRow};
use vpn_shared::proto::{UsageEntry, UsageReport};

use super::{host, store, user};
use crate::store::{BatchError, Ingested, Servers, Store, StoreError};

/// 2026-12-01T10:00:00Z.
const T0: i64 = 1_796_119_200;

fn entry(seq: u64, user: &str, service: &str, up: u64, down: u64, to: i64) -> UsageEntry {
    UsageEntry {
        seq,
        user: user.into(),
        service: service.into(),
        up,
        down,
        undirected: 0,
        from: to - 10,
        to,
    }
}

fn report(epoch: u64, entries: Vec<UsageEntry>) -> UsageReport {
    UsageReport { epoch, entries }
}

async fn totals(store: &Store, by: UsageBy) -> Vec<(String, Option<String>, u64, u64, u64)> {
    let rows = store.usage_totals(None, None, by).await.unwrap();
    rows.into_iter()
        .map(
            |UsageRow {
                 user,
                 key,
                 up,
                 down,
                 total,
                 ..
             }| (user, key, up, down, total),
        )
        .collect()
}

async fn user_id(store: &Store, name: &str) -> String {
    store
        .add_user(user(name, Servers::All), 0)
        .await
        .unwrap()
        .value
        .id
}

#[tokio::test]
async fn a_replayed_batch_changes_nothing_and_is_acked_again() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    let alice = user_id(&store, "alice").await;
    let batch = report(
        7,
        vec![
            entry(1, &alice, "ss", 100, 1_000, T0 + 10),
            entry(2, &alice, "ss", 50, 500, T0 + 20),
        ],
    );
    let first = store.ingest_usage(&edge.id, &batch, T0 + 25).await.unwrap();
    assert_eq!(
        first,
        Ingested {
            up_to: 2,
            applied: 2,
            skipped: 0,
            bytes: 1_650,
            unknown_users: 0,
            ..Ingested::default()
        }
    );
    // The ack was lost: the agent sends the same batch again.
    let again = store.ingest_usage(&edge.id, &batch, T0 + 40).await.unwrap();
    assert_eq!((again.up_to, again.applied, again.skipped), (2, 0, 2));
    assert_eq!(
        totals(&store, UsageBy::User).await,
        vec![("alice".into(), None, 150, 1_500, 1_650)]
    );

    // The next batch overlaps the last one (resent from the oldest unacked entry): only the
    // new entry counts.
    let overlap = report(
        7,
        vec![
            entry(2, &alice, "ss", 50, 500, T0 + 20),
            entry(3, &alice, "ss", 1, 1, T0 + 30),
        ],
    );
    let third = store
        .ingest_usage(&edge.id, &overlap, T0 + 45)
        .await
        .unwrap();
    assert_eq!((third.up_to, third.applied, third.skipped), (3, 1, 1));
    assert_eq!(store.usage_watermark(&edge.id, 7).await.unwrap(), Some(3));
    assert_eq!(
        totals(&store, UsageBy::User).await,
        vec![("alice".into(), None, 151, 1_501, 1_652)]
    );
}

#[tokio::test]
async fn a_lost_ledger_starts_a_new_epoch_whose_seqs_count_again() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    let alice = user_id(&store, "alice").await;
    // The first ledger reached seq 5. Epochs are random u64s: half of them pass 2^63.
    let old_epoch = u64::MAX - 3;
    let old = report(old_epoch, vec![entry(5, &alice, "ss", 10, 10, T0 + 10)]);
    store.ingest_usage(&edge.id, &old, T0 + 15).await.unwrap();
    // The host's disk was wiped: a new ledger, seqs from 1 again. Not a replay.
    let new = report(42, vec![entry(1, &alice, "ss", 7, 7, T0 + 20)]);
    let ingested = store.ingest_usage(&edge.id, &new, T0 + 25).await.unwrap();
    assert_eq!((ingested.up_to, ingested.applied), (1, 1));
    assert_eq!(
        store.usage_watermark(&edge.id, old_epoch).await.unwrap(),
        Some(5)
    );
    assert_eq!(store.usage_watermark(&edge.id, 42).await.unwrap(), Some(1));
    // A late replay of the old ledger's batch is still recognised.
    let replay = store.ingest_usage(&edge.id, &old, T0 + 30).await.unwrap();
    assert_eq!((replay.up_to, replay.applied, replay.skipped), (5, 0, 1));
    assert_eq!(
        totals(&store, UsageBy::User).await,
        vec![("alice".into(), None, 17, 17, 34)]
    );
    // Another host's seqs are its own.
    let other = host(&store, "edge-2", 2).await;
    let theirs = store.ingest_usage(&other.id, &new, T0 + 30).await.unwrap();
    assert_eq!(theirs.applied, 1);
}

#[tokio::test]
async fn a_batch_out_of_order_is_refused_and_changes_nothing() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    let alice = user_id(&store, "alice").await;
    store
        .ingest_usage(
            &edge.id,
            &report(7, vec![entry(1, &alice, "ss", 1, 1, T0)]),
            T0,
        )
        .await
        .unwrap();
    let shuffled = report(
        7,
        vec![
            entry(3, &alice, "ss", 100, 100, T0 + 10),
            entry(2, &alice, "ss", 100, 100, T0 + 20),
        ],
    );
    let refused = store.ingest_usage(&edge.id, &shuffled, T0 + 30).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Batch(BatchError::NotAscending {
                after: 3,
                seq: 2
            }))
        ),
        "{refused:?}"
    );
    let mut backwards = entry(4, &alice, "ss", 100, 100, T0 + 10);
    backwards.from = T0 + 20;
    let refused = store
        .ingest_usage(&edge.id, &report(7, vec![backwards]), T0 + 30)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "usage batch refused: usage entry seq 4: interval {}..{} is not a time span",
            T0 + 20,
            T0 + 10
        )
    );
    // Neither the totals nor the watermark moved.
    assert_eq!(store.usage_watermark(&edge.id, 7).await.unwrap(), Some(1));
    assert_eq!(
        totals(&store, UsageBy::User).await,
        vec![("alice".into(), None, 1, 1, 2)]
    );
}

#[tokio::test]
async fn bytes_of_removed_users_and_hosts_are_kept_and_named() {
    let (_dir, store) = store().await;
    let edge = host(&store, "edge-1", 1).await;
    let gone = host(&store, "edge-2", 2).await;
    let alice = user_id(&store, "alice").await;
    let bob = user_id(&store, "bob").await;
    store
        .ingest_usage(
            &gone.id,
            &report(1, vec![entry(1, &alice, "ss", 5, 5, T0)]),
            T0,
        )
        .await
        .unwrap();
    store.remove_host("edge-2", T0 + 1).await.unwrap();
    // Bob is removed while the host still has his last bytes in its ledger.
    store.remove_user("bob").await.unwrap();
    let late = report(
        1,
        vec![
            entry(1, &bob, "ss", 3, 4, T0 + 10),
            entry(2, "never-a-user", "ss", 1, 0, T0 + 10),
        ],
    );
    let ingested = store.ingest_usage(&edge.id, &late, T0 + 20).await.unwrap();
    assert_eq!((ingested.applied, ingested.unknown_users), (2, 2));
    assert_eq!(
        totals(&store, UsageBy::Server).await,
        vec![
            ("alice".into(), Some("edge-2 (removed)".into()), 5, 5, 10),
            ("bob (removed)".into(), Some("edge-1".into()), 3, 4, 7),
            ("never-a-user".into(), Some("edge-1".into()), 1, 0, 1),
        ]
    );
    // The removed host's watermark went with it: nothing of it can connect again.
    assert_eq!(store.usage_watermark(&gone.id, 1).await.unwrap(), None);
}

#[tokio::test]
async fn a_group_of_hosts_batches_is_one_transaction_and_a_bad_batch_spoils_only_itself() {
    let (_dir, store) = store().await;
    let a = host(&store, "edge-a", 1).await;
    let b = host(&store, "edge-b", 2).await;
    let gone = host(&store, "edge-gone", 3).await;
    let alice = user_id(&store, "alice").await;
    let bob = user_id(&store, "bob").await;
    // Two batches of one host and epoch in one group apply in order: the second is not taken
    // for a replay of the first, and the watermark ends at the second's highest seq.
    let a1 = report(1, vec![entry(1, &alice, "ss", 10, 100, T0 + 10)]);
    let a2 = report(1, vec![entry(2, &alice, "ss", 20, 200, T0 + 20)]);
    let b1 = report(9, vec![entry(1, &bob, "ss", 1, 2, T0 + 10)]);
    // Malformed: refused alone, the others are written.
    let broken = report(
        4,
        vec![
            entry(3, &bob, "ss", 1, 1, T0),
            entry(2, &bob, "ss", 1, 1, T0),
        ],
    );
    let group = store
        .ingest_usage_group(
            &[(&a.id, &a1), (&b.id, &broken), (&a.id, &a2), (&b.id, &b1)],
            T0 + 30,
        )
        .await;
    let acks: Vec<_> = group
        .results
        .iter()
        .map(|r| r.as_ref().map(|d| (d.up_to, d.applied, d.skipped)))
        .collect();
    assert_eq!(acks[0].as_ref().unwrap(), &(1, 1, 0));
    assert!(matches!(
        group.results[1],
        Err(StoreError::Batch(BatchError::NotAscending {
            after: 3,
            seq: 2
        }))
    ));
    assert_eq!(acks[2].as_ref().unwrap(), &(2, 1, 0));
    assert_eq!(acks[3].as_ref().unwrap(), &(1, 1, 0));
    assert_eq!(store.usage_watermark(&a.id, 1).await.unwrap(), Some(2));
    assert_eq!(store.usage_watermark(&b.id, 4).await.unwrap(), None);
    // The quota counters summed the group once per user.
    let quotas = store.quotas().await.unwrap();
    assert_eq!((quotas[&alice].used, quotas[&bob].used), (330, 3));

    // A host removed while its batch waited fails the group's transaction; the group is then
    // written batch by batch, so only that host's batch is unacked.
    store.remove_host("edge-gone", T0 + 31).await.unwrap();
    let late = report(1, vec![entry(1, &alice, "ss", 5, 5, T0 + 30)]);
    let a3 = report(1, vec![entry(3, &alice, "ss", 1, 1, T0 + 30)]);
    let group = store
        .ingest_usage_group(&[(&gone.id, &late), (&a.id, &a3), (&a.id, &a1)], T0 + 40)
        .await;
    assert!(
        matches!(group.results[0], Err(StoreError::Database(_))),
        "{:?}",
        group.results[0]
    );
    let a3_done = group.results[1].as_ref().unwrap();
    assert_eq!((a3_done.up_to, a3_done.applied), (3, 1));
    // a1 again (its ack was lost): a replay, acked up to the watermark.
    let replay = group.results[2].as_ref().unwrap();
    assert_eq!((replay.up_to, replay.applied, replay.skipped), (3, 0, 1));
    assert_eq!(
        totals(&store, UsageBy::User).await,
        vec![
            ("alice".into(), None, 31, 301, 332),
            ("bob".into(), None, 1, 2, 3),
        ]
    );
}

#[tokio::test]
async fn totals_per_user_server_service_and_day_since_an_hour() {
    let (_dir, store) = store().await;
    let fra = host(&store, "fra-1", 1).await;
    let ams = host(&store, "ams-1", 2).await;
    let alice = user_id(&store, "alice").await;
    let bob = user_id(&store, "bob").await;
    // Alice: two services on fra today, ams yesterday (late evening). Bob: ams today.
    let fra_batch = report(
        1,
        vec![
            entry(1, &alice, "ss", 10, 100, T0 + 10),
            entry(2, &alice, "vless", 1, 2, T0 + 10),
            entry(3, &alice, "ss", 10, 100, T0 + 3_600),
        ],
    );
    let mut undirected = entry(2, &bob, "ss", 0, 0, T0 + 20);
    undirected.undirected = 1_000;
    let ams_batch = report(
        9,
        vec![entry(1, &alice, "ss", 7, 7, T0 - 11 * 3_600), undirected],
    );
    store
        .ingest_usage(&fra.id, &fra_batch, T0 + 3_600)
        .await
        .unwrap();
    store
        .ingest_usage(&ams.id, &ams_batch, T0 + 3_600)
        .await
        .unwrap();

    assert_eq!(
        totals(&store, UsageBy::User).await,
        vec![
            ("alice".into(), None, 28, 209, 237),
            ("bob".into(), None, 0, 0, 1_000),
        ]
    );
    assert_eq!(
        totals(&store, UsageBy::Server).await,
        vec![
            ("alice".into(), Some("ams-1".into()), 7, 7, 14),
            ("alice".into(), Some("fra-1".into()), 21, 202, 223),
            ("bob".into(), Some("ams-1".into()), 0, 0, 1_000),
        ]
    );
    assert_eq!(
        totals(&store, UsageBy::Service).await,
        vec![
            ("alice".into(), Some("ss".into()), 27, 207, 234),
            ("alice".into(), Some("vless".into()), 1, 2, 3),
            ("bob".into(), Some("ss".into()), 0, 0, 1_000),
        ]
    );
    assert_eq!(
        totals(&store, UsageBy::Day).await,
        vec![
            ("alice".into(), Some("2026-11-30".into()), 7, 7, 14),
            ("alice".into(), Some("2026-12-01".into()), 21, 202, 223),
            ("bob".into(), Some("2026-12-01".into()), 0, 0, 1_000),
        ]
    );
    // One user, from the hour holding `since` (10:59:59 counts from 10:00).
    let since = store
        .usage_totals(Some(&alice), Some(T0 + 3_599), UsageBy::Service)
        .await
        .unwrap();
    assert_eq!(since.len(), 2);
    assert_eq!((since[0].key.as_deref(), since[0].total), (Some("ss"), 220));
    let later = store
        .usage_totals(Some(&alice), Some(T0 + 3_600), UsageBy::User)
        .await
        .unwrap();
    assert_eq!(later[0].total, 110);
}
