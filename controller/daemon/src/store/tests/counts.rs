//! The counts of `servers list` and `status`, aggregated in SQL.

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
