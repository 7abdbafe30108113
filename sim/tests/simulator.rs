//! The simulator tested against the real controller (in this process, over QUIC on loopback):
//! a few simulated hosts enroll with join strings, get their full state, apply and ack deltas,
//! find one delta not matching their state and resync, renew their certificates, report usage the controller counts, and
//! the one the operator removes is refused and stops.

use std::sync::Arc;
use std::time::Duration;

use vpn_agent_sim::identity::Admin;
use vpn_agent_sim::{SimConfig, Stats, enroll, run_agents};
use vpn_controller::config::{Config, FileConfig, Overrides};
use vpn_controller::init::{self, PkiPaths};
use vpn_controller::server;
use vpn_shared::context::CliContext;
use vpn_shared::model::Protocol;
use vpn_shared::proto::admin::{
    AddUser, AdminRequest, AdminResponse, DeployService, HostApplyState, Servers, UsageBy,
    UsageQuery,
};

const HOSTS: usize = 3;

/// Waits up to 20 s for `what` to hold, re-reading `stats`; panics with the counters if not.
async fn until(stats: &Stats, what: &str, ok: impl Fn(&Stats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ok(stats) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 20 s: {what}; counters: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn add_user(name: &str) -> AdminRequest {
    AdminRequest::UsersAdd(AddUser {
        name: name.into(),
        email: None,
        note: None,
        protocols: None,
        servers: Servers::All,
        bandwidth: Default::default(),
        wait: true,
    })
}

/// Every host of an admin answer applied the change.
fn all_applied(answer: AdminResponse, stats: &Stats) {
    let AdminResponse::Applied(applied) = answer else {
        panic!("expected Applied, got {answer:?}");
    };
    assert_eq!(applied.hosts.len(), HOSTS, "{applied:?}");
    for h in &applied.hosts {
        assert_eq!(h.state, HostApplyState::Applied, "{applied:?}; {stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_sync_resync_renew_report_usage_and_stop_when_revoked() {
    // The controller, as `vpn-controller init` and `run` make it, on a free port; certificates
    // of agents short-lived enough that a renewal is accepted at once.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let file = FileConfig::default();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        public_address: Some("127.0.0.1:7443".into()),
        ..Default::default()
    };
    let config = Config::resolve(&data_dir, file.clone(), overrides).unwrap();
    init::init(&config, &file, &dir.path().join("context.toml"))
        .await
        .unwrap();
    let (ctl, endpoint) = server::bind(config).await.unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(ctl.clone(), endpoint, async move {
        let _ = stopped.await;
    }));
    let pki = PkiPaths::new(&data_dir);
    let ctx = CliContext {
        controller: addr.to_string(),
        ca_cert: pki.ca_cert.clone(),
        admin_cert: pki.admin_cert.clone(),
        admin_key: pki.admin_key.clone(),
    };

    // Enrolled as `servers add` + `vpn-agent join` would: hosts the controller knows by name.
    let fleet = enroll(&ctx, "sim-", 0, HOSTS).await.unwrap();
    assert_eq!(fleet.hosts.len(), HOSTS);
    assert_eq!(fleet.hosts[2].name, "sim-00002");
    let admin = Admin::connect(&ctx).await.unwrap();

    let stats = Arc::new(Stats::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sim = SimConfig {
        usage_every: Some(Duration::from_millis(500)),
        renew_every: Some(Duration::from_secs(2)),
        mismatch_first_deltas: 1,
        ..SimConfig::default()
    };
    let running = tokio::spawn(run_agents(
        addr,
        fleet.ca_pem.clone(),
        fleet.hosts.clone(),
        sim,
        stats.clone(),
        stop,
    ));
    until(
        &stats,
        "every host connected with its full state acked",
        |s| Stats::get(&s.connected) == HOSTS as u64 && Stats::get(&s.full_states) == HOSTS as u64,
    )
    .await;

    // The first delta does not match what each host holds: each asks for a resync and acks
    // the full state; the next changes arrive as deltas and are acked, and the operator's
    // `--all-servers` adds complete on every host.
    let deploy = AdminRequest::ServicesDeploy(DeployService {
        protocol: Protocol::Shadowsocks,
        name: None,
        port: 20_000,
        servers: Servers::All,
        image: None,
        method: None,
        bandwidth: Default::default(),
        new_conn_rate: None,
        wait: false,
    });
    admin.request(&deploy).await.unwrap();
    until(&stats, "every host resynced after its mismatch", |s| {
        Stats::get(&s.resyncs) == HOSTS as u64 && Stats::get(&s.full_states) == 2 * HOSTS as u64
    })
    .await;
    all_applied(admin.request(&add_user("alice")).await.unwrap(), &stats);
    all_applied(admin.request(&add_user("bob")).await.unwrap(), &stats);
    assert_eq!(Stats::get(&stats.deltas), 2 * HOSTS as u64, "{stats}");
    assert_eq!(Stats::get(&stats.resyncs), HOSTS as u64, "{stats}");

    // Usage for alice and bob from every host, counted by the controller; certificates renewed
    // over the sessions.
    until(&stats, "two usage batches acked per host", |s| {
        Stats::get(&s.usage_acked) >= 2 * HOSTS as u64
    })
    .await;
    until(&stats, "a certificate renewed per host", |s| {
        Stats::get(&s.renewed) >= HOSTS as u64
    })
    .await;
    assert_eq!(Stats::get(&stats.renew_failed), 0, "{stats}");

    // The operator removes one host: it is refused and stops; the others stay.
    let removed = admin
        .request(&AdminRequest::ServersRemove {
            name: "sim-00001".into(),
        })
        .await
        .unwrap();
    assert!(
        !matches!(removed, AdminResponse::Error { .. }),
        "{removed:?}"
    );
    until(&stats, "the removed host refused", |s| {
        Stats::get(&s.refused) == 1 && Stats::get(&s.connected) == HOSTS as u64 - 1
    })
    .await;

    let _ = stop_tx.send(true);
    running.await.unwrap().unwrap();
    assert_eq!(Stats::get(&stats.connected), 0);
    // Every acked entry is in the controller's totals (11,000 bytes each); a batch applied
    // whose ack the simulator had not read when it stopped may add one more per host.
    let usage = admin
        .request(&AdminRequest::UsersUsage(UsageQuery {
            user: None,
            since: None,
            by: UsageBy::User,
        }))
        .await
        .unwrap();
    let AdminResponse::Usage(info) = usage else {
        panic!("expected usage rows, got {usage:?}");
    };
    let counted: u64 = info.rows.iter().map(|r| r.total).sum();
    let acked = Stats::get(&stats.entries_acked) * 11_000;
    assert!(
        counted >= acked && counted <= acked + 2 * HOSTS as u64 * 11_000,
        "controller counted {counted} bytes, the simulator saw {acked} acked; {stats}"
    );
    let _ = shutdown.send(());
    let _ = serving.await;
}
