//! Traffic ingest at the SPEC's bar (§3): 1,000 agents × 1,000 users reported every 10 s,
//! that is 1,000,000 entries per 10 s (100,000/s). Ignored by default: a test never fails
//! because the machine was slow; run it in release with `--ignored --nocapture` to print the
//! figures
//! (docs/benchmarks.md has the command and the last results).
//!
//! Each simulated 10 s period sends every host's batch of 1,000 entries (one per user, one
//! service) through [`Store::ingest_usage_group`], in groups as the controller forms them when
//! every host reports at once (`ingest.rs`), one group after another: SQLite has one writer.
//! The commit times printed are each batch's wait for its group's commit. The first
//! period creates the hour's 1,000,000 rows; the next ones add to them. A last step replays
//! every batch of the final period (lost acks) and checks that nothing changed: nothing lost,
//! nothing doubled.

use std::time::{Duration, Instant};

use sqlx::{QueryBuilder, Sqlite};
use vpn_shared::proto::admin::UsageBy;
use vpn_shared::proto::{UsageEntry, UsageReport};

use super::store;

const HOSTS: usize = 1_000;
const USERS: usize = 1_000;
const PERIODS: u64 = 6;
const PERIOD: Duration = Duration::from_secs(10);
/// 2026-12-01T10:00:00Z: every period lands in one hour, so period 0 inserts and the rest add.
const T0: i64 = 1_796_119_200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints ingest figures at 1,000 hosts × 1,000 users; run in release with --ignored --nocapture"]
#[allow(clippy::print_stdout)] // a benchmark prints its figures (SPEC §3); it asserts only exactness
async fn ingest_of_one_thousand_hosts_by_one_thousand_users() {
    let (dir, store) = store().await;
    // Hosts and users straight into SQLite: the figure wanted is ingest, not enrollment.
    let hosts: Vec<String> = (0..HOSTS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let users: Vec<String> = (0..USERS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let mut tx = store.pool.begin().await.unwrap();
    for (i, id) in hosts.iter().enumerate() {
        sqlx::query("INSERT INTO hosts (id, name, created_at) VALUES (?1, ?2, 0)")
            .bind(id)
            .bind(format!("edge-{i:04}"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
        "INSERT INTO users (id, name, status, all_servers, created_at, updated_at) ",
    );
    q.push_values(users.iter().enumerate(), |mut row, (i, id)| {
        row.push_bind(id)
            .push_bind(format!("user{i:04}"))
            .push_bind("active")
            .push_bind(true)
            .push_bind(0i64)
            .push_bind(0i64);
    });
    q.build().execute(&mut *tx).await.unwrap();
    // Every user has a quota row (as `add_user` makes it); every other one a monthly data
    // limit far above what the run moves, so each batch updates every row and evaluates none.
    sqlx::query(
        "INSERT INTO user_quota (user_id, data_limit, reset) SELECT id, \
         CASE WHEN rowid % 2 = 0 THEN 1099511627776 END, \
         CASE WHEN rowid % 2 = 0 THEN 'month' ELSE 'none' END FROM users",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let batch = |period: u64, h: usize| UsageReport {
        epoch: 0x5eed_0000 + h as u64,
        entries: users
            .iter()
            .enumerate()
            .map(|(u, id)| UsageEntry {
                seq: period * USERS as u64 + u as u64 + 1,
                user: id.clone(),
                service: "ss".into(),
                up: 1_000 + (u as u64 % 7),
                down: 10_000 + (h as u64 % 13),
                undirected: 0,
                from: T0 + period as i64 * 10,
                to: T0 + period as i64 * 10 + 10,
            })
            .collect(),
    };
    // As the controller groups batches that queue at once (`ingest.rs`): as many as its
    // limits allow, or `USAGE_BENCH_GROUP` (1: one transaction per batch).
    let group = std::env::var("USAGE_BENCH_GROUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::ingest::MAX_GROUP_BATCHES.min(crate::ingest::MAX_GROUP_ENTRIES / USERS))
        .max(1);
    println!("{group} batches per transaction");
    let mut all = Vec::new();
    let started = Instant::now();
    for period in 0..PERIODS {
        // Batches are built before the clock starts: the session gets them decoded.
        let batches: Vec<_> = (0..HOSTS).map(|h| batch(period, h)).collect();
        let now = T0 + period as i64 * 10 + 10;
        let mut times = Vec::with_capacity(HOSTS);
        let begun = Instant::now();
        let pairs: Vec<(&str, &UsageReport)> = hosts
            .iter()
            .map(String::as_str)
            .zip(batches.iter())
            .collect();
        for chunk in pairs.chunks(group) {
            let t = Instant::now();
            let done = store.ingest_usage_group(chunk, now).await;
            // Every batch of a group waits for the group's commit.
            times.extend(std::iter::repeat_n(t.elapsed(), chunk.len()));
            for r in done.results {
                assert_eq!(r.unwrap().applied, USERS);
            }
        }
        let wall = begun.elapsed();
        times.sort();
        println!(
            "period {period}: {} entries in {:.2} s = {:.0} entries/s; wait for commit p50 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms; {:.0} % of the 10 s period",
            HOSTS * USERS,
            wall.as_secs_f64(),
            (HOSTS * USERS) as f64 / wall.as_secs_f64(),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            wall.as_secs_f64() / PERIOD.as_secs_f64() * 100.0,
        );
        all.extend(times);
    }
    let total = started.elapsed();
    all.sort();
    let entries = HOSTS * USERS * PERIODS as usize;
    println!(
        "all {PERIODS} periods: {entries} entries in {:.1} s = {:.0} entries/s (bar: 100,000/s, 1,000 × 1,000 per 10 s); \
         commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total.as_secs_f64(),
        entries as f64 / total.as_secs_f64(),
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3,
    );

    // Every ack of the last period lost: all its batches come again and change nothing.
    let before = store.usage_totals(None, None, UsageBy::User).await.unwrap();
    let replayed: Vec<_> = (0..HOSTS).map(|h| batch(PERIODS - 1, h)).collect();
    let begun = Instant::now();
    for (h, b) in replayed.iter().enumerate() {
        let done = store.ingest_usage(&hosts[h], b, T0 + 100).await.unwrap();
        assert_eq!((done.applied, done.skipped), (0, USERS));
    }
    let replay = begun.elapsed();
    let t = Instant::now();
    let after = store.usage_totals(None, None, UsageBy::User).await.unwrap();
    let query = t.elapsed();
    assert_eq!(before, after, "a replay changed the totals");
    // Exact: every user's bytes are the sum of what every host reported in every period.
    for (u, row) in after.iter().enumerate() {
        let up = (1_000 + (u as u64 % 7)) * HOSTS as u64 * PERIODS;
        let down: u64 = (0..HOSTS as u64).map(|h| 10_000 + h % 13).sum::<u64>() * PERIODS;
        assert_eq!((row.up, row.down), (up, down), "user {u}");
    }
    // The quota counters moved exactly with the totals, replay included.
    let quotas = store.quotas().await.unwrap();
    for (u, id) in users.iter().enumerate() {
        let up = (1_000 + (u as u64 % 7)) * HOSTS as u64 * PERIODS;
        let down: u64 = (0..HOSTS as u64).map(|h| 10_000 + h % 13).sum::<u64>() * PERIODS;
        assert_eq!(quotas[id].used, up + down, "quota counter of user {u}");
    }
    let size: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "replay of {HOSTS} batches (all duplicates): {:.2} s; `users usage` over all users \
         ({} rows of hourly totals): {:.0} ms; database files {:.0} MiB",
        replay.as_secs_f64(),
        HOSTS * USERS,
        query.as_secs_f64() * 1e3,
        size as f64 / (1 << 20) as f64,
    );
}
