//! The counts of `servers list` and `status`, aggregated in SQL, and the users list with its
//! quotas handed over as one value.

use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::admin::Reset;

use super::{host, named, store, user};
use crate::quota::OnHold;
use crate::store::{QuotaSettings, Servers, UserStatus, UserTotals};

#[tokio::test]
async fn hosts_count_their_active_users_and_status_counts_every_user() {
    let (_dir, store) = store().await;
    let a = host(&store, "edge-a", 1).await;
    let b = host(&store, "edge-b", 2).await;
    let c = host(&store, "edge-c", 3).await;
    let add = |name: &str, servers: Servers| store.add_user(user(name, servers), 0);
    add("everywhere", Servers::All).await.unwrap();
    add("on-a", named(&["edge-a"])).await.unwrap();
    add("on-a-and-b", named(&["edge-a", "edge-b"]))
        .await
        .unwrap();
    add("suspended-everywhere", Servers::All).await.unwrap();
    add("suspended-on-b", named(&["edge-b"])).await.unwrap();
    for name in ["suspended-everywhere", "suspended-on-b"] {
        store
            .set_user_status(name, UserStatus::Suspended, 1)
            .await
            .unwrap();
    }
    let mut held = user("held-on-c", named(&["edge-c"]));
    held.quota = QuotaSettings {
        on_hold: Some(OnHold {
            duration: 86_400,
            timeout_at: None,
        }),
        ..QuotaSettings::default()
    };
    let held = store.add_user(held, 0).await.unwrap();
    assert_eq!(held.value.status, UserStatus::OnHold);

    let per_host = store.active_users_per_host().await.unwrap();
    assert_eq!(per_host.len(), 3, "every host, with users or not");
    assert_eq!(per_host[&a.id], 3, "everywhere, on-a, on-a-and-b");
    assert_eq!(per_host[&b.id], 2, "everywhere, on-a-and-b");
    assert_eq!(per_host[&c.id], 1, "everywhere; on_hold is not active");

    let totals = store.user_totals().await.unwrap();
    assert_eq!(
        totals,
        UserTotals {
            total: 6,
            active: 3
        }
    );
}

#[tokio::test]
async fn an_empty_store_counts_zero() {
    let (_dir, store) = store().await;
    assert!(store.active_users_per_host().await.unwrap().is_empty());
    assert_eq!(store.user_totals().await.unwrap(), UserTotals::default());
    let h = host(&store, "edge-a", 1).await;
    assert_eq!(store.active_users_per_host().await.unwrap()[&h.id], 0);
}

#[tokio::test]
async fn the_users_list_with_quotas_is_every_user_as_read_one_by_one() {
    let (_dir, store) = store().await;
    for (i, name) in ["edge-b", "edge-a", "edge-c"].iter().enumerate() {
        host(&store, name, i as u8 + 1).await;
    }
    let mut odd = user("zed", named(&["edge-c", "edge-a"]));
    odd.email = Some("z@example.com".into());
    odd.note = Some("quotes \" and \\ backslashes,\nnew lines, commas; ünïcödé".into());
    odd.protocols = Some(vec![Protocol::Shadowsocks, Protocol::Wireguard]);
    odd.bandwidth = Bandwidth {
        down_bps: Some(20_000_000),
        up_bps: None,
    };
    odd.quota = QuotaSettings {
        data_limit: Some(1 << 30),
        reset: Reset::Month,
        expires_at: Some(2_000_000_000),
        on_hold: None,
    };
    store.add_user(odd, 100).await.unwrap();
    let mut held = user("held", Servers::All);
    held.quota.on_hold = Some(OnHold {
        duration: 86_400,
        timeout_at: Some(1_000_000),
    });
    store.add_user(held, 100).await.unwrap();
    store
        .add_user(user("alice", Servers::All), 100)
        .await
        .unwrap();
    store
        .add_user(user("bob", named(&["edge-b"])), 100)
        .await
        .unwrap();
    store
        .set_user_status("bob", UserStatus::Suspended, 200)
        .await
        .unwrap();

    let listed = store.users_with_quotas().await.unwrap();
    let users = store.users().await.unwrap();
    let quotas = store.quotas().await.unwrap();
    let expected: Vec<_> = users
        .into_iter()
        .map(|u| {
            let q = quotas[&u.id].clone();
            (u, q)
        })
        .collect();
    assert_eq!(listed, expected);
    let names: Vec<&str> = listed.iter().map(|(u, _)| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "held", "zed"]);
    assert_eq!(listed[3].0.servers, named(&["edge-a", "edge-c"]));

    let (_empty_dir, empty) = super::store().await;
    assert!(empty.users_with_quotas().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_user_without_its_quota_row_is_a_corrupt_store_not_a_shorter_list() {
    let (_dir, store) = store().await;
    store
        .add_user(user("alice", Servers::All), 0)
        .await
        .unwrap();
    sqlx::query("DELETE FROM user_quota")
        .execute(&store.pool)
        .await
        .unwrap();
    let err = store.users_with_quotas().await.unwrap_err();
    assert!(err.to_string().contains("user list"), "{err}");
}
