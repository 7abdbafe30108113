//! Quotas on a real SQLite file, with the clock passed in: a user over its data limit leaves
//! every host's desired state in the ingest that crossed it, a reset a day later (a `now` a day
//! later, no sleeping) brings it back, an expiry in the past takes it off at once, a hold
//! starts at the first traffic, a resume does not lift a limit, and late bytes of a finished
//! period do not count against the next one.

use vpn_shared::proto::{Allowance, UsageEntry, UsageReport};

use super::{host, ss, store, user};
use crate::quota::{OnHold, Reset};
use crate::store::{HostRow, QuotaEditFields, QuotaSettings, Servers, Store, UserStatus};

/// 2026-12-01T10:00:00Z, a Tuesday.
const T0: i64 = 1_796_119_200;
const DAY: i64 = 86_400;
const MIB: u64 = 1 << 20;

fn entry(seq: u64, user: &str, bytes: u64, to: i64) -> UsageEntry {
    UsageEntry {
        seq,
        user: user.into(),
        service: "ss".into(),
        up: bytes / 2,
        down: bytes - bytes / 2,
        undirected: 0,
        from: to - 10,
        to,
    }
}

/// A store with one Shadowsocks service on two hosts.
async fn fleet() -> (tempfile::TempDir, Store, HostRow, HostRow) {
    let (dir, store) = store().await;
    let a = host(&store, "edge-1", 1).await;
    let b = host(&store, "edge-2", 2).await;
    store
        .deploy_service(ss("ss", 20000, 10, Servers::All), T0)
        .await
        .unwrap();
    (dir, store, a, b)
}

async fn add(store: &Store, name: &str, quota: QuotaSettings) -> (String, UserStatus) {
    let mut new = user(name, Servers::All);
    new.quota = quota;
    let m = store.add_user(new, T0).await.unwrap();
    (m.value.id, m.value.status)
}

async fn status(store: &Store, name: &str) -> UserStatus {
    store.user(name).await.unwrap().unwrap().user.status
}

async fn on_host(store: &Store, host: &HostRow, name: &str) -> bool {
    store
        .desired_state(&host.id)
        .await
        .unwrap()
        .users
        .contains_key(name)
}

fn limit(bytes: u64, reset: Reset) -> QuotaSettings {
    QuotaSettings {
        data_limit: Some(bytes),
        reset,
        ..QuotaSettings::default()
    }
}

#[tokio::test]
async fn over_the_limit_leaves_every_host_in_the_ingest_that_crossed_it() {
    let (_dir, store, a, b) = fleet().await;
    let (alice, s) = add(&store, "alice", limit(MIB, Reset::Never)).await;
    assert_eq!(s, UserStatus::Active);

    // Half a MiB on edge-1: still active; the allowances of either host say what is left,
    // counting edge-1's ledger up to that entry.
    let half = UsageReport {
        epoch: 7,
        entries: vec![entry(1, &alice, MIB / 2, T0 + 10)],
    };
    let done = store.ingest_usage(&a.id, &half, T0 + 15).await.unwrap();
    assert!(done.changes.is_empty() && done.pushes.is_empty());
    let (epoch, up_to, users) = store.host_allowances(&a.id, T0 + 15).await.unwrap();
    assert_eq!((epoch, up_to, users.len()), (7, 1, 1));
    assert_eq!(users[0].remaining, Some(MIB / 2));
    let (_, _, users) = store.host_allowances(&b.id, T0 + 15).await.unwrap();
    assert_eq!(users[0].remaining, Some(MIB / 2));

    // The rest on edge-2 crosses the limit: limited, off both hosts, in that transaction.
    let rest = UsageReport {
        epoch: 9,
        entries: vec![entry(1, &alice, MIB / 2, T0 + 20)],
    };
    let done = store.ingest_usage(&b.id, &rest, T0 + 25).await.unwrap();
    assert_eq!(done.changes.len(), 1);
    assert_eq!(done.changes[0].to, UserStatus::Limited);
    let mut pushed: Vec<_> = done.pushes.iter().map(|p| p.host_id.clone()).collect();
    pushed.sort();
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(pushed, both);
    assert_eq!(status(&store, "alice").await, UserStatus::Limited);
    // A limited user is in no host's state, so in no host's allowances.
    let (_, _, users) = store.host_allowances(&a.id, T0 + 25).await.unwrap();
    assert!(users.is_empty(), "{users:?}");
    assert!(!on_host(&store, &a, "alice").await && !on_host(&store, &b, "alice").await);

    // Bytes still in flight from a host are counted, and change nothing more.
    let late = UsageReport {
        epoch: 7,
        entries: vec![entry(2, &alice, 1_000, T0 + 30)],
    };
    let done = store.ingest_usage(&a.id, &late, T0 + 35).await.unwrap();
    assert!(done.changes.is_empty() && done.pushes.is_empty());
    assert_eq!(store.quota(&alice).await.unwrap().used, MIB + 1_000);

    // Resuming does not lift a limit; raising it does.
    let m = store
        .set_user_status("alice", UserStatus::Active, T0 + 40)
        .await
        .unwrap();
    assert_eq!((m.value.status, m.pushes.len()), (UserStatus::Limited, 0));
    let raise = QuotaEditFields {
        data_limit: Some(Some(2 * MIB)),
        ..QuotaEditFields::default()
    };
    let m = store
        .edit_user_with("alice", Default::default(), raise, T0 + 50)
        .await
        .unwrap();
    assert_eq!(m.value.status, UserStatus::Active);
    assert_eq!(m.pushes.len(), 2);
    assert!(on_host(&store, &a, "alice").await);
}

#[tokio::test]
async fn a_daily_reset_brings_a_limited_user_back_the_next_day() {
    let (_dir, store, a, _b) = fleet().await;
    let (alice, _) = add(&store, "alice", limit(MIB, Reset::Day)).await;
    let all = UsageReport {
        epoch: 7,
        entries: vec![entry(1, &alice, MIB, T0 + 10)],
    };
    store.ingest_usage(&a.id, &all, T0 + 15).await.unwrap();
    assert_eq!(status(&store, "alice").await, UserStatus::Limited);

    // The timer's next look is the next midnight (UTC), not earlier.
    let midnight = (T0 / DAY + 1) * DAY;
    assert_eq!(store.next_quota_check().await.unwrap(), Some(midnight));
    let early = store.quota_sweep(midnight - 1).await.unwrap();
    assert!(early.value.is_empty() && early.pushes.is_empty());

    let m = store.quota_sweep(midnight).await.unwrap();
    assert_eq!(m.value.len(), 1);
    assert_eq!(
        (m.value[0].from, m.value[0].to),
        (UserStatus::Limited, UserStatus::Active)
    );
    assert!(on_host(&store, &a, "alice").await);
    let q = store.quota(&alice).await.unwrap();
    assert_eq!((q.used, q.period_start), (0, Some(midnight)));
    // An active user under its limit needs no timer.
    assert_eq!(store.next_quota_check().await.unwrap(), None);

    // Yesterday's bytes arriving today (a partitioned host) do not count against today.
    let late = UsageReport {
        epoch: 7,
        entries: vec![entry(2, &alice, MIB, midnight - 5)],
    };
    let done = store
        .ingest_usage(&a.id, &late, midnight + 60)
        .await
        .unwrap();
    assert!(done.changes.is_empty());
    assert_eq!(store.quota(&alice).await.unwrap().used, 0);
    // Today's do.
    let today = UsageReport {
        epoch: 7,
        entries: vec![entry(3, &alice, MIB, midnight + 100)],
    };
    let done = store
        .ingest_usage(&a.id, &today, midnight + 110)
        .await
        .unwrap();
    assert_eq!(done.changes.len(), 1);
    assert_eq!(status(&store, "alice").await, UserStatus::Limited);
}

#[tokio::test]
async fn an_expiry_in_the_past_takes_a_user_off_at_once_and_lifting_it_brings_them_back() {
    let (_dir, store, a, _b) = fleet().await;
    let past = QuotaSettings {
        expires_at: Some(T0 - 1),
        ..QuotaSettings::default()
    };
    let (_, s) = add(&store, "bob", past).await;
    assert_eq!(s, UserStatus::Expired);
    assert!(!on_host(&store, &a, "bob").await);

    let lift = QuotaEditFields {
        expires_at: Some(None),
        ..QuotaEditFields::default()
    };
    let m = store
        .edit_user_with("bob", Default::default(), lift, T0 + 1)
        .await
        .unwrap();
    assert_eq!(m.value.status, UserStatus::Active);
    assert!(on_host(&store, &a, "bob").await);

    // An expiry an hour ahead: the timer ends it then.
    let soon = QuotaEditFields {
        expires_at: Some(Some(T0 + 3_600)),
        ..QuotaEditFields::default()
    };
    store
        .edit_user_with("bob", Default::default(), soon, T0 + 2)
        .await
        .unwrap();
    assert_eq!(store.next_quota_check().await.unwrap(), Some(T0 + 3_600));
    let m = store.quota_sweep(T0 + 3_600).await.unwrap();
    assert_eq!(m.value[0].to, UserStatus::Expired);
    assert!(!on_host(&store, &a, "bob").await);
}

#[tokio::test]
async fn a_hold_starts_at_first_traffic_or_at_its_timeout() {
    let (_dir, store, a, _b) = fleet().await;
    let hold = |timeout_at| QuotaSettings {
        on_hold: Some(OnHold {
            duration: 30 * DAY,
            timeout_at,
        }),
        ..QuotaSettings::default()
    };
    let (carol, s) = add(&store, "carol", hold(None)).await;
    assert_eq!(s, UserStatus::OnHold);
    // On hold, the user can connect: its first traffic is what starts the clock.
    assert!(on_host(&store, &a, "carol").await);

    let first = UsageReport {
        epoch: 7,
        entries: vec![entry(1, &carol, 500, T0 + 100)],
    };
    let done = store.ingest_usage(&a.id, &first, T0 + 105).await.unwrap();
    assert_eq!(done.changes.len(), 1);
    assert_eq!(done.changes[0].to, UserStatus::Active);
    // No push: an on-hold user is already on its hosts.
    assert!(done.pushes.is_empty());
    let q = store.quota(&carol).await.unwrap();
    let started = T0 + 90; // the first entry's interval began 10 s before its end
    assert_eq!(q.first_use, Some(started));
    assert_eq!(q.settings.expires_at, Some(started + 30 * DAY));
    let (_, _, users) = store.host_allowances(&a.id, T0 + 105).await.unwrap();
    assert_eq!(users[0].expires_at, Some(started + 30 * DAY));

    // Without traffic, the timeout starts the clock.
    let (dave, _) = add(&store, "dave", hold(Some(T0 + 7 * DAY))).await;
    assert_eq!(store.next_quota_check().await.unwrap(), Some(T0 + 7 * DAY));
    let m = store.quota_sweep(T0 + 7 * DAY).await.unwrap();
    assert_eq!(m.value.len(), 1);
    assert_eq!(m.value[0].to, UserStatus::Active);
    let q = store.quota(&dave).await.unwrap();
    assert_eq!(q.settings.expires_at, Some(T0 + 37 * DAY));
}

#[tokio::test]
async fn a_host_gets_the_allowances_of_its_limited_users_with_its_watermark() {
    let (_dir, store, a, _b) = fleet().await;
    let (alice, _) = add(&store, "alice", limit(MIB, Reset::Month)).await;
    let (bob, _) = add(
        &store,
        "bob",
        QuotaSettings {
            expires_at: Some(T0 + DAY),
            ..QuotaSettings::default()
        },
    )
    .await;
    add(&store, "unlimited", QuotaSettings::default()).await;
    let mut expected = vec![
        Allowance {
            user: alice.clone(),
            remaining: Some(MIB),
            expires_at: None,
        },
        Allowance {
            user: bob,
            remaining: None,
            expires_at: Some(T0 + DAY),
        },
    ];
    expected.sort_by(|x, y| x.user.cmp(&y.user));
    // Before any usage the host has no watermark yet.
    assert_eq!(
        store.host_allowances(&a.id, T0).await.unwrap(),
        (0, 0, expected)
    );
    let used = UsageReport {
        epoch: 7,
        entries: vec![entry(4, &alice, 1_000, T0 + 10)],
    };
    store.ingest_usage(&a.id, &used, T0 + 15).await.unwrap();
    let (epoch, up_to, list) = store.host_allowances(&a.id, T0 + 20).await.unwrap();
    assert_eq!((epoch, up_to), (7, 4));
    let alice_now = list.iter().find(|x| x.user == alice).unwrap();
    assert_eq!(alice_now.remaining, Some(MIB - 1_000));
}
