//! Controller memory per connected host does not grow with the number of users (SPEC §3, issue
//! 10): a session keeps its host's generation and digest, not a copy of the host's state.
//!
//! A real `vpn-controller` process with two groups of simulated hosts (the agent simulator, over
//! the real protocol): the `a-` hosts carry no user, every one of the `b-` hosts carries the
//! same 5,000 users (seeded in SQL while the controller was stopped). Each group connects in
//! two halves, one host after another (each once the one before is synced, so only one full
//! state is being sent at a time), and
//! the controller's anonymous resident memory is read after each half; the second half of a
//! group shows what a host costs once what is paid once (caches) was paid by the first. A controller that kept each
//! host's state would grow by about 1 MiB more per `b-` host than per `a-` host; this one must
//! not grow by more than a few bytes per user and host.
//!
//! Needs the workspace's binaries (`cargo build --workspace --bins`); no root, no Docker.

// A test file: its helpers panic on failure, and it prints its figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use vpn_agent_sim::{SimConfig, Stats, enroll, identity::resolve, run_agents};
use vpn_e2e::controller::{LoneController, rss_anon};
use vpn_e2e::proc::tail;
use vpn_shared::context::CliContext;

/// Hosts in each half of each group.
const HOSTS: usize = 20;
const USERS: usize = 5_000;
/// The bound per user and connected host: far below what a copy of a user costs (a few
/// hundred bytes), far above allocator noise spread over 20 hosts.
const BYTES_PER_USER_AND_HOST: u64 = 48;

/// Seeds `USERS` active users placed on every `b-` host (not on `a-` hosts), with the quota row
/// the controller keeps for each.
fn seed(c: &LoneController) {
    let statements = [
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO users (id, name, email, status, all_servers, created_at, updated_at) \
             SELECT printf('%08x-0000-4000-8000-%012x', i, i), printf('user%06d', i), \
             printf('user%06d@example.com', i), 'active', 0, 1700000000, 1700000000 FROM n",
            last = USERS - 1
        ),
        "INSERT INTO user_servers (user_id, host_id) SELECT u.id, h.id FROM users u, hosts h \
         WHERE h.name LIKE 'b-%'"
            .to_string(),
        "INSERT INTO user_quota (user_id) SELECT id FROM users".to_string(),
    ];
    vpn_e2e::seed::run_sql(&c.db(), &statements);
}

/// Waits until `hosts` hosts of `stats` are connected with their full state acked.
async fn all_synced(stats: &Stats, hosts: usize, c: &LoneController) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while Stats::get(&stats.connected) < hosts as u64
        || Stats::get(&stats.full_states) < hosts as u64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hosts did not all sync within 120 s: {stats}\n{}",
            tail(&c.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller's anonymous memory once it has settled (the median of a few readings).
async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut readings = Vec::new();
    for _ in 0..5 {
        readings.push(rss_anon(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    readings.sort();
    readings[2]
}

/// Connects `hosts` strictly one after another (each waits until the one before has its full
/// state acked: only one full state is ever being sent, however slow the machine) and returns
/// the controller's settled memory once all are synced, and the tasks running them until `stop`.
async fn connect(
    c: &LoneController,
    ca_pem: &str,
    hosts: &[vpn_agent_sim::SimIdentity],
    stop: &tokio::sync::watch::Receiver<bool>,
) -> (u64, Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    let ctx = CliContext::load(&c.context_path()).unwrap();
    let addr = resolve(&ctx.controller).await.unwrap();
    let stats = Arc::new(Stats::default());
    let mut runs = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        runs.push(tokio::spawn(run_agents(
            addr,
            ca_pem.to_owned(),
            vec![host.clone()],
            SimConfig::default(),
            stats.clone(),
            stop.clone(),
        )));
        all_synced(&stats, i + 1, c).await;
    }
    (settled_rss(c.pid()).await, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_memory_per_connected_host_does_not_grow_with_users() {
    let mut c = LoneController::init("vpn-e2e-memory-");
    c.start();
    let ctx = CliContext::load(&c.context_path()).unwrap();
    let a = enroll(&ctx, "a-", 0, 2 * HOSTS).await.unwrap();
    let b = enroll(&ctx, "b-", 0, 2 * HOSTS).await.unwrap();
    c.stop();
    tokio::task::block_in_place(|| seed(&c));
    c.start();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);

    // Each kind of host connects in two halves: the first warms what is paid once (the
    // store's page cache, the runtime's buffers), the second shows what a host costs.
    let (a1, a2) = a.hosts.split_at(HOSTS);
    let (b1, b2) = b.hosts.split_at(HOSTS);
    let start = settled_rss(c.pid()).await;
    let mut runs = Vec::new();
    let mut readings = Vec::new();
    for half in [a1, a2, b1, b2] {
        let (rss, run) = connect(&c, &a.ca_pem, half, &stop).await;
        readings.push(rss);
        runs.extend(run);
    }
    let per_a = readings[1].saturating_sub(readings[0]) as f64 / HOSTS as f64;
    let per_b = readings[3].saturating_sub(readings[2]) as f64 / HOSTS as f64;
    let extra_per_user = (per_b - per_a) / USERS as f64;
    eprintln!(
        "controller RssAnon: {start} B at start; {} and {} B with {HOSTS} and {} hosts without \
         users ({per_a:.0} B per host); {} and {} B with {HOSTS} and {} more hosts of {USERS} \
         users each ({per_b:.0} B per host): {extra_per_user:.1} B per user and host",
        readings[0],
        readings[1],
        2 * HOSTS,
        readings[2],
        readings[3],
        2 * HOSTS,
    );
    assert!(
        extra_per_user < BYTES_PER_USER_AND_HOST as f64,
        "each connected host of {USERS} users costs {per_b:.0} B against {per_a:.0} B for a \
         host without users: {extra_per_user:.1} B per user and host (bound \
         {BYTES_PER_USER_AND_HOST})"
    );

    stop_tx.send(true).unwrap();
    for run in runs {
        run.await.unwrap().unwrap();
    }
}
