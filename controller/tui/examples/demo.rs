//! The TUI on a made-up fleet, without a controller: `cargo run -p vpn-tui --example demo
//! [HOSTS] [USERS]`. A fake backend sends a snapshot, rates every second, a disconnect with a
//! countdown every 30 s, and answers every command after 300 ms — the shape of the real backend,
//! for trying the keys and for terminal smoke tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::admin::{
    HostEvent, HostState, LinkInfo, Reset, ServerDetail, ServerInfo, ServiceInfo, UserDetail,
    UserInfo, UserQuota,
};
use vpn_tui::{Command, FleetEvent, FleetSnapshot, HostRate, Theme, Update};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn host(i: usize, now: i64) -> ServerDetail {
    let state = match i % 9 {
        3 => HostState::Offline,
        5 => HostState::Degraded { failing: 1 },
        _ => HostState::Online,
    };
    ServerDetail {
        server: ServerInfo {
            name: format!("edge-{i:03}"),
            host_id: format!("id-{i}"),
            online: state != HostState::Offline,
            enrolled: true,
            address: Some(format!("192.0.2.{}", i % 250)),
            agent_version: Some("0.1.0".into()),
            last_seen: Some(now - (i % 40) as i64),
            desired_generation: 12,
            acked_generation: Some(if i % 7 == 2 { 11 } else { 12 }),
            cert_not_after: Some(now + 25 * 86_400),
            services: vec!["ss".into()],
            users: 10 + i as u64,
            health: vec![],
        },
        state,
        failing: vec![],
        events: vec![],
        vitals: None,
        warnings: vec![],
    }
}

fn user(i: usize, now: i64) -> UserDetail {
    UserDetail {
        user: UserInfo {
            name: format!("user{i:05}"),
            id: format!("uuid-{i}"),
            email: None,
            note: None,
            status: ["active", "active", "suspended", "limited"][i % 4].into(),
            all_servers: true,
            servers: vec![],
            protocols: None,
            bandwidth: Bandwidth::default(),
            created_at: now,
            updated_at: now,
        },
        quota: UserQuota {
            data_limit: Some(50 << 30),
            reset: Reset::Month,
            used: (i as u64 * 123_456_789) % (50 << 30),
            period_start: None,
            next_reset: None,
            expires_at: Some(now + (i % 60) as i64 * 86_400),
            on_hold: None,
            first_use: None,
            reason: None,
        },
    }
}

async fn backend(
    hosts: usize,
    users: usize,
    tx: mpsc::Sender<Update>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let t = now();
    let snapshot = FleetSnapshot {
        hosts: (0..hosts).map(|i| host(i, t)).collect(),
        services: vec![ServiceInfo {
            name: "ss".into(),
            protocol: Protocol::Shadowsocks,
            port: 20_000,
            port_span: 1_000,
            image: None,
            all_servers: true,
            servers: vec![],
            options: String::new(),
            bandwidth: Bandwidth::default(),
            new_conn_rate: None,
        }],
        users: (0..users).map(|i| user(i, t)).collect(),
        events: vec![],
    };
    if tx.send(Update::Snapshot(snapshot)).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                round += 1;
                let rates = (0..hosts)
                    .map(|i| HostRate {
                        host: format!("edge-{i:03}"),
                        rx_bps: (i as u64 * 1_000_003 + round * 7_777_777) % 80_000_000,
                        tx_bps: (i as u64 * 2_000_003 + round * 5_555_555) % 200_000_000,
                        cpu: None,
                        mem: None,
                    })
                    .collect();
                let mut out = vec![Update::Rates(rates)];
                if round % 30 == 20 {
                    out.push(Update::Disconnected {
                        reason: "demo: controller unreachable".into(),
                        retry_in: Some(Duration::from_secs(5)),
                    });
                }
                if round % 30 == 25 {
                    out.push(Update::Connected);
                    out.push(Update::Event(FleetEvent {
                        host: "edge-001".into(),
                        event: HostEvent { at: now(), kind: "online".into(), resource: None, message: "reconnected".into() },
                    }));
                }
                for u in out {
                    if tx.send(u).await.is_err() {
                        return;
                    }
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                tokio::time::sleep(Duration::from_millis(300)).await;
                let update = match cmd {
                    Command::Quit => return,
                    Command::FetchLinks { id, name } => Update::Links {
                        id,
                        user: name.clone(),
                        result: Ok(vec![LinkInfo {
                            server: "edge-000".into(),
                            service: "ss".into(),
                            protocol: Protocol::Shadowsocks,
                            url: format!("ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpkZW1v@192.0.2.1:20001#{name}"),
                        }]),
                    },
                    Command::AddUser { id, add, .. } => Update::CommandResult { id, result: Ok(format!("user {} added", add.name)) },
                    Command::EditUser { id, edit, .. } => Update::CommandResult { id, result: Ok(format!("user {} changed", edit.name)) },
                    Command::SuspendUser { id, name } => Update::CommandResult { id, result: Ok(format!("user {name} suspended")) },
                    Command::ResumeUser { id, name } => Update::CommandResult { id, result: Ok(format!("user {name} resumed")) },
                    Command::DeleteUser { id, name } => Update::CommandResult { id, result: Ok(format!("user {name} removed")) },
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let hosts = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let users = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let (update_tx, update_rx) = mpsc::channel(1_024);
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    tokio::spawn(backend(hosts, users, update_tx, command_rx));
    vpn_tui::run(update_rx, command_tx, Theme::dark()).await
}
