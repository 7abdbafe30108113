//! Time per frame of every screen with 5,000 hosts, 100,000 users and 10,000 events
//! (SPEC §3: a frame in < 16 ms). Prints figures; never fails.
//!
//! `cargo bench -p vpn-tui --bench frame` (release profile). Each case draws frames onto a
//! ratatui `TestBackend` (the same buffer diff a real terminal gets, minus the write), with
//! the view cached ("steady") and after a change that forces the filtered, sorted view to be
//! rebuilt ("after an update").

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::admin::{
    HostEvent, HostState, Reset, ServerDetail, ServerInfo, ServiceInfo, UserDetail, UserInfo,
    UserQuota,
};
use vpn_tui::{App, Event, FleetEvent, FleetSnapshot, HostRate, Theme, Update};

const HOSTS: usize = 5_000;
const USERS: usize = 100_000;
const EVENTS: usize = 10_000;
const NOW: i64 = 1_796_083_200;

fn host(i: usize) -> ServerDetail {
    let state = match i % 50 {
        0 => HostState::Offline,
        1 => HostState::Degraded { failing: 1 },
        _ => HostState::Online,
    };
    ServerDetail {
        server: ServerInfo {
            name: format!("host-{i:05}"),
            host_id: format!("id-{i}"),
            online: state != HostState::Offline,
            enrolled: true,
            address: Some(format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256)),
            agent_version: Some("0.1.0".into()),
            last_seen: Some(NOW - (i % 60) as i64),
            desired_generation: 1_000 + (i % 7) as u64,
            acked_generation: Some(1_000),
            cert_not_after: Some(NOW + 20 * 86_400),
            services: vec!["ss".into(), "vless".into()],
            users: 20 + (i % 100) as u64,
            health: vec![],
        },
        state,
        failing: vec![],
        events: vec![],
        vitals: None,
        warnings: vec![],
    }
}

fn user(i: usize) -> UserDetail {
    let status = [
        "active",
        "active",
        "active",
        "suspended",
        "limited",
        "expired",
    ][i % 6];
    UserDetail {
        user: UserInfo {
            name: format!("user-{:06}", (i * 7_919) % USERS),
            id: format!("uuid-{i}"),
            email: Some(format!("u{i}@example.com")),
            note: None,
            status: status.into(),
            all_servers: true,
            servers: vec![],
            protocols: None,
            bandwidth: Bandwidth::default(),
            created_at: NOW - 86_400,
            updated_at: NOW,
        },
        quota: UserQuota {
            data_limit: i.is_multiple_of(3).then_some(50 << 30),
            reset: Reset::Month,
            used: (i as u64).wrapping_mul(2_654_435_761) % (60 << 30),
            period_start: None,
            next_reset: None,
            expires_at: i
                .is_multiple_of(4)
                .then_some(NOW + (i % 90) as i64 * 86_400),
            on_hold: None,
            first_use: None,
            reason: None,
        },
    }
}

fn rates(round: u64) -> Update {
    Update::Rates(
        (0..HOSTS)
            .map(|i| HostRate {
                host: format!("host-{i:05}"),
                rx_bps: (i as u64 * 7_000 + round * 13_000) % 90_000_000,
                tx_bps: (i as u64 * 11_000 + round * 17_000) % 300_000_000,
                cpu: None,
                mem: None,
            })
            .collect(),
    )
}

fn model() -> App {
    let snapshot = FleetSnapshot {
        hosts: (0..HOSTS).map(host).collect(),
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
        users: (0..USERS).map(user).collect(),
        events: (0..EVENTS)
            .map(|i| FleetEvent {
                host: format!("host-{:05}", i % HOSTS),
                event: HostEvent {
                    at: NOW - (EVENTS - i) as i64,
                    kind: ["online", "offline", "failing", "recovered"][i % 4].into(),
                    resource: Some("service/ss".into()),
                    message: format!("event number {i}"),
                },
            })
            .collect(),
    };
    let mut app = App::new(Theme::dark(), NOW);
    app.handle(Event::Update(Update::Snapshot(snapshot)));
    for round in 0..60 {
        app.handle(Event::Update(rates(round)));
    }
    app
}

fn press(app: &mut App, code: KeyCode) {
    app.handle(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// CPU time of this thread (what a frame costs, whoever else runs on the machine) and wall time.
struct Figures {
    cpu_mean: Duration,
    cpu_p99: Duration,
    wall_mean: Duration,
    wall_p99: Duration,
    wall_max: Duration,
}

fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn stats(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort_unstable();
    let n = times.len().max(1);
    (
        times.iter().sum::<Duration>() / u32::try_from(n).unwrap_or(1),
        times.get(n * 99 / 100).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    )
}

/// Draws `frames` frames, calling `before` (untimed setup is not allowed: it is part of the
/// frame, as an update would be) before each.
fn measure(
    term: &mut Terminal<TestBackend>,
    app: &mut App,
    frames: usize,
    mut before: impl FnMut(&mut App, usize),
) -> Figures {
    let mut wall = Vec::with_capacity(frames);
    let mut cpu = Vec::with_capacity(frames);
    for i in 0..frames {
        let (start, cpu_start) = (Instant::now(), cpu_now());
        before(app, i);
        if let Err(e) = term.draw(|f| app.draw(f)) {
            println!("draw failed: {e}");
            break;
        }
        wall.push(start.elapsed());
        cpu.push(cpu_now().saturating_sub(cpu_start));
    }
    let (cpu_mean, cpu_p99, _) = stats(cpu);
    let (wall_mean, wall_p99, wall_max) = stats(wall);
    Figures {
        cpu_mean,
        cpu_p99,
        wall_mean,
        wall_p99,
        wall_max,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1_000.0)
}

/// The users table's columns, in order.
const USER_COLUMNS: [&str; 11] = [
    "name",
    "status",
    "used",
    "limit",
    "use%",
    "expires",
    "reset",
    "servers",
    "protocols",
    "bandwidth",
    "email",
];

fn main() {
    let mut by_column: Vec<(&str, Figures)> = Vec::new();
    let build = Instant::now();
    let mut app = model();
    println!(
        "model: {HOSTS} hosts (60 rate samples each), {USERS} users, {EVENTS} events, built in {} ms",
        ms(build.elapsed())
    );
    println!();
    println!(
        "| screen | size | case | CPU mean ms | CPU p99 ms | wall mean ms | wall p99 ms | wall max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (w, h) in [(80u16, 24u16), (160, 48), (240, 70)] {
        let Ok(mut term) = Terminal::new(TestBackend::new(w, h)) else {
            println!("no test backend");
            return;
        };
        let row = |name: &str, case: &str, f: Figures| {
            println!(
                "| {name} | {w}×{h} | {case} | {} | {} | {} | {} | {} |",
                ms(f.cpu_mean),
                ms(f.cpu_p99),
                ms(f.wall_mean),
                ms(f.wall_p99),
                ms(f.wall_max)
            );
        };
        press(&mut app, KeyCode::Char('1'));
        row(
            "fleet",
            "steady",
            measure(&mut term, &mut app, 300, |_, _| {}),
        );
        row(
            "fleet",
            "after rates for all hosts (full re-sort of 5,000)",
            measure(&mut term, &mut app, 50, |a, i| {
                a.handle(Event::Update(rates(100 + i as u64)));
            }),
        );
        keys(&mut app, "sssssss");
        row(
            "fleet sorted by rx",
            "after rates for all hosts (full re-sort of 5,000)",
            measure(&mut term, &mut app, 50, |a, i| {
                a.handle(Event::Update(rates(200 + i as u64)));
            }),
        );
        keys(&mut app, "sssss");
        press(&mut app, KeyCode::Enter);
        row(
            "host",
            "steady",
            measure(&mut term, &mut app, 300, |_, _| {}),
        );
        press(&mut app, KeyCode::Esc);

        press(&mut app, KeyCode::Char('2'));
        row(
            "users",
            "steady",
            measure(&mut term, &mut app, 300, |_, _| {}),
        );
        row(
            "users",
            "after one user changed (view patched)",
            measure(&mut term, &mut app, 50, |a, i| {
                a.handle(Event::Update(Update::UserChanged(user(i))));
            }),
        );
        row(
            "users",
            "after a sort change (full sort of 100,000)",
            measure(&mut term, &mut app, 30, |a, _| {
                press(a, KeyCode::Char('s'));
            }),
        );
        // 30 presses of `s` over 11 columns: back to name, then two on: sorted by used.
        keys(&mut app, "sssss");
        if (w, h) == (160, 48) {
            // What a new sort costs per column: reverse it (a full re-sort) 10 times each.
            let mut cur = 2;
            for (col, title) in USER_COLUMNS.iter().enumerate() {
                for _ in 0..(col + 11 - cur) % 11 {
                    press(&mut app, KeyCode::Char('s'));
                }
                cur = col;
                let f = measure(&mut term, &mut app, 10, |a, _| press(a, KeyCode::Char('S')));
                by_column.push((*title, f));
            }
            for _ in 0..(2 + 11 - cur) % 11 {
                press(&mut app, KeyCode::Char('s'));
            }
        }
        row(
            "users sorted by used",
            "after one user changed (view patched)",
            measure(&mut term, &mut app, 50, |a, i| {
                a.handle(Event::Update(Update::UserChanged(user(i))));
            }),
        );
        keys(&mut app, "sssssssss");
        press(&mut app, KeyCode::Char('/'));
        row(
            "users",
            "typing a filter (full filter of 100,000)",
            measure(&mut term, &mut app, 8, |a, i| {
                press(
                    a,
                    KeyCode::Char(['u', 's', 'e', 'r', '-', '0', '0', '1'][i]),
                );
            }),
        );
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::Char('/'));
        keys(&mut app, "user-0012");
        row(
            "users filtered",
            "after one user changed (re-filter)",
            measure(&mut term, &mut app, 50, |a, i| {
                a.handle(Event::Update(Update::UserChanged(user(i))));
            }),
        );
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::Char('e'));
        row(
            "user form",
            "steady",
            measure(&mut term, &mut app, 300, |_, _| {}),
        );
        press(&mut app, KeyCode::Esc);

        press(&mut app, KeyCode::Char('3'));
        row(
            "events",
            "steady",
            measure(&mut term, &mut app, 300, |_, _| {}),
        );
        row(
            "events",
            "after a new event (following)",
            measure(&mut term, &mut app, 300, |a, i| {
                a.handle(Event::Update(Update::Event(FleetEvent {
                    host: "host-00001".into(),
                    event: HostEvent {
                        at: NOW,
                        kind: "online".into(),
                        resource: None,
                        message: format!("bench {i}"),
                    },
                })));
            }),
        );
        press(&mut app, KeyCode::Char('?'));
        row(
            "help",
            "steady",
            measure(&mut term, &mut app, 300, |_, _| {}),
        );
        press(&mut app, KeyCode::Esc);
    }
    println!();
    println!("A new sort of 100,000 users by each column (160×48, 10 reversals each):");
    println!();
    println!("| column | CPU mean ms | CPU p99 ms | wall max ms |");
    println!("|---|---|---|---|");
    for (title, f) in by_column {
        println!(
            "| {title} | {} | {} | {} |",
            ms(f.cpu_mean),
            ms(f.cpu_p99),
            ms(f.wall_max)
        );
    }
}
