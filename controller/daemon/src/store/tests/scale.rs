//! Figures at the SPEC's scale (100,000 users). Ignored by default: a test never fails because
//! the machine was slow; run with `--ignored --nocapture` to print the figures.

use std::time::Instant;

use sqlx::{QueryBuilder, Sqlite};

use super::{host, store, user};
use crate::store::Servers;

const USERS: usize = 100_000;

#[tokio::test]
#[ignore = "prints timings at 100,000 users; run by hand with --ignored --nocapture"]
async fn listing_and_adding_at_one_hundred_thousand_users() {
    let (_dir, store) = store().await;
    let mut hosts = Vec::new();
    for i in 0..10u8 {
        hosts.push(host(&store, &format!("edge-{i}"), i).await);
    }
    // Deployed before the bulk rows, so only the users added below get a port from it.
    store
        .deploy_service(super::ss("ss", 10_000, 5_000, Servers::All), 0)
        .await
        .unwrap();
    // Bulk rows straight into SQLite: the figure wanted is listing, not 100,000 inserts.
    let started = Instant::now();
    let mut tx = store.pool.begin().await.unwrap();
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(2_000) {
        let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO users (id, name, status, all_servers, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut row, i| {
            row.push_bind(uuid::Uuid::new_v4().to_string())
                .push_bind(format!("user{i:06}"))
                .push_bind("active")
                .push_bind(i % 2 == 0)
                .push_bind(0i64)
                .push_bind(0i64);
        });
        q.build().execute(&mut *tx).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO user_servers (user_id, host_id) SELECT u.id, ?1 FROM users u \
         WHERE NOT u.all_servers",
    )
    .bind(&hosts[0].id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    println!("seeded {USERS} users in {:?}", started.elapsed());

    let started = Instant::now();
    let users = store.users().await.unwrap();
    println!(
        "users() returned {} users in {:?}",
        users.len(),
        started.elapsed()
    );
    assert_eq!(users.len(), USERS);

    let started = Instant::now();
    let state = store.desired_state(&hosts[0].id).await.unwrap();
    println!(
        "desired_state() of a host with {} users in {:?}",
        state.users.len(),
        started.elapsed()
    );

    // The first adds after a bulk load pay for checkpointing its WAL and warming the page cache;
    // they are reported apart, then 1,000 adds are measured.
    let mut warmup = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        store
            .add_user(user(&format!("warm{i}"), Servers::All), 1)
            .await
            .unwrap();
        warmup.push(started.elapsed());
    }
    println!("first 20 adds after the bulk load: {warmup:?}");
    let mut took = Vec::new();
    let mut slowest = Vec::new();
    for i in 0..1000 {
        let started = Instant::now();
        let m = store
            .add_user(user(&format!("new{i}"), Servers::All), 1)
            .await
            .unwrap();
        took.push(started.elapsed());
        slowest.push((started.elapsed(), i));
        assert_eq!(m.pushes.len(), hosts.len());
    }
    slowest.sort();
    let worst: Vec<_> = slowest.iter().rev().take(5).collect();
    println!("slowest adds (time, index): {worst:?}");
    took.sort();
    println!(
        "add_user --all-servers, 10 hosts, 1 service: p50 {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
}
