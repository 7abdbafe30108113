//! A small fleet on a fixed clock, and helpers to drive an [`App`] by keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::ContainerStatus;
use vpn_shared::proto::admin::{
    FailingResource, HostEvent, HostState, HostVitals, LinkInfo, OnHoldInfo, Reset, ServerDetail,
    ServerInfo, ServiceInfo, UserDetail, UserInfo, UserQuota,
};

use crate::{App, Command, Event, FleetEvent, FleetSnapshot, HostRate, Theme, Update};

/// 2026-12-01T00:00:00Z.
pub const NOW: i64 = 1_796_083_200;
pub const DAY: i64 = 86_400;
const GIB: u64 = 1 << 30;

pub fn server(name: &str, state: HostState) -> ServerDetail {
    let online = matches!(state, HostState::Online | HostState::Degraded { .. });
    let enrolled = state != HostState::Pending;
    ServerDetail {
        server: ServerInfo {
            name: name.into(),
            host_id: format!("id-{name}"),
            online,
            enrolled,
            address: enrolled.then(|| "203.0.113.10".into()),
            agent_version: enrolled.then(|| "0.1.0".into()),
            last_seen: enrolled.then_some(NOW - 3),
            desired_generation: 42,
            acked_generation: enrolled.then_some(42),
            cert_not_after: enrolled.then_some(NOW + 20 * DAY),
            services: if enrolled {
                vec!["ss".into(), "vless".into()]
            } else {
                vec![]
            },
            users: if enrolled { 120 } else { 0 },
            health: vec![],
        },
        state,
        failing: vec![],
        events: vec![],
        vitals: online.then(|| HostVitals {
            reported_at: NOW - 3,
            clock_skew_ms: 4,
            cert_not_after: Some(NOW + 20 * DAY),
            containers: vec![
                ContainerStatus {
                    name: "vpn-ss".into(),
                    resource: "service/ss".into(),
                    running: true,
                    restarts: 0,
                },
                ContainerStatus {
                    name: "vpn-vless".into(),
                    resource: "service/vless".into(),
                    running: true,
                    restarts: 2,
                },
            ],
            disk_free_bytes: Some(40 * GIB),
            ledger_backlog: Some(0),
        }),
        warnings: vec![],
    }
}

pub fn hosts() -> Vec<ServerDetail> {
    let fra = server("fra-1", HostState::Online);
    let mut ams = server("ams-2", HostState::Degraded { failing: 2 });
    ams.server.acked_generation = Some(40);
    ams.server.health = vec![
        "kernel module ifb missing: ingress (upload) limits are off".into(),
        "last apply: host/state: cannot write /var/lib/vpn-agent/state.bin: no space left".into(),
    ];
    ams.failing = vec![
        FailingResource {
            resource: "service/vless".into(),
            message: "container exited (code 1): bind 0.0.0.0:443: address in use".into(),
            first_seen: NOW - 600,
            last_seen: NOW - 10,
        },
        FailingResource {
            resource: "user/bob@ss".into(),
            message: "port 20001 in use".into(),
            first_seen: NOW - 120,
            last_seen: NOW - 10,
        },
    ];
    ams.warnings = vec!["certificate expires in 2d".into()];
    ams.server.cert_not_after = Some(NOW + 2 * DAY);
    if let Some(v) = ams.vitals.as_mut() {
        v.cert_not_after = Some(NOW + 2 * DAY);
    }
    let mut nyc = server("nyc-3", HostState::Offline);
    nyc.server.last_seen = Some(NOW - 7_200);
    nyc.server.acked_generation = Some(39);
    let sgp = server("sgp-4", HostState::Pending);
    let lon = server("lon-5", HostState::Online);
    vec![fra, ams, nyc, sgp, lon]
}

pub fn services() -> Vec<ServiceInfo> {
    let svc = |name: &str, protocol, port| ServiceInfo {
        name: name.into(),
        protocol,
        port,
        port_span: if protocol == Protocol::Shadowsocks {
            1000
        } else {
            1
        },
        image: None,
        all_servers: true,
        servers: vec![],
        options: String::new(),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    };
    vec![
        svc("ss", Protocol::Shadowsocks, 20000),
        svc("vless", Protocol::Vless, 443),
    ]
}

pub fn user(name: &str, status: &str, used: u64, limit: Option<u64>) -> UserDetail {
    UserDetail {
        user: UserInfo {
            name: name.into(),
            id: format!("uuid-{name}"),
            email: Some(format!("{name}@example.com")),
            note: None,
            status: status.into(),
            all_servers: true,
            servers: vec![],
            protocols: None,
            bandwidth: Bandwidth::default(),
            created_at: NOW - 40 * DAY,
            updated_at: NOW - DAY,
        },
        quota: UserQuota {
            data_limit: limit,
            reset: if limit.is_some() {
                Reset::Month
            } else {
                Reset::Never
            },
            used,
            period_start: None,
            next_reset: None,
            expires_at: None,
            on_hold: None,
            first_use: None,
            reason: None,
        },
    }
}

pub fn users() -> Vec<UserDetail> {
    let mut alice = user("alice", "active", 1_288_490_189, Some(50 * GIB));
    alice.quota.expires_at = Some(NOW + 30 * DAY);
    let bob = user("bob", "suspended", 0, None);
    let mut carol = user("carol", "limited", GIB, Some(GIB));
    carol.quota.reason = Some("limited: 1.0 GiB of 1 GiB used".into());
    let mut dave = user("dave", "expired", 5 * GIB, None);
    dave.quota.expires_at = Some(NOW - 2 * DAY);
    let mut erin = user("erin", "on_hold", 0, Some(10 * GIB));
    erin.quota.on_hold = Some(OnHoldInfo {
        duration: 30 * DAY,
        timeout_at: None,
    });
    let mut frank = user("frank", "active", 900 * (1 << 20), None);
    frank.user.bandwidth = Bandwidth {
        down_bps: Some(20_000_000),
        up_bps: Some(5_000_000),
    };
    frank.user.all_servers = false;
    frank.user.servers = vec!["fra-1".into()];
    frank.user.protocols = Some(vec![Protocol::Vless]);
    vec![alice, bob, carol, dave, erin, frank]
}

pub fn events() -> Vec<FleetEvent> {
    let ev = |host: &str, at: i64, kind: &str, resource: Option<&str>, message: &str| FleetEvent {
        host: host.into(),
        event: HostEvent {
            at,
            kind: kind.into(),
            resource: resource.map(Into::into),
            message: message.into(),
        },
    };
    vec![
        ev(
            "nyc-3",
            NOW - 7_200,
            "offline",
            None,
            "session closed: timed out",
        ),
        ev(
            "ams-2",
            NOW - 600,
            "failing",
            Some("service/vless"),
            "container exited (code 1)",
        ),
        ev(
            "ams-2",
            NOW - 300,
            "repaired",
            Some("service/ss"),
            "container was missing; created",
        ),
        ev(
            "ams-2",
            NOW - 120,
            "failing",
            Some("user/bob@ss"),
            "port 20001 in use",
        ),
        ev(
            "fra-1",
            NOW - 60,
            "online",
            None,
            "connected from 203.0.113.10",
        ),
        ev(
            "lon-5",
            NOW - 30,
            "recovered",
            Some("service/ss"),
            "running again",
        ),
    ]
}

pub fn snapshot() -> FleetSnapshot {
    FleetSnapshot {
        hosts: hosts(),
        services: services(),
        users: users(),
        events: events(),
    }
}

pub fn rates(i: u64) -> Update {
    Update::Rates(vec![
        HostRate {
            host: "fra-1".into(),
            rx_bps: 12_400_000 + i * 1_000_000,
            tx_bps: 48_000_000 + (i % 4) * 9_000_000,
            cpu: None,
            mem: None,
        },
        HostRate {
            host: "ams-2".into(),
            rx_bps: 800_000 * (i % 3 + 1),
            tx_bps: 2_100_000,
            cpu: Some(37.0),
            mem: Some(61.0),
        },
    ])
}

pub fn links() -> Vec<LinkInfo> {
    vec![
        LinkInfo {
            server: "fra-1".into(),
            service: "ss".into(),
            protocol: Protocol::Shadowsocks,
            url: "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpzZWNyZXQ@203.0.113.10:20001#alice".into(),
        },
        LinkInfo {
            server: "fra-1".into(),
            service: "vless".into(),
            protocol: Protocol::Vless,
            url: "vless://uuid-alice@203.0.113.10:443?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.example.com&fp=chrome&pbk=abc&sid=0123abcd&type=tcp#alice".into(),
        },
    ]
}

/// An app with the fixture fleet and a few rate samples, on the fleet screen.
pub fn app() -> App {
    let mut app = App::new(Theme::dark(), NOW);
    app.handle(Event::Update(Update::Snapshot(snapshot())));
    for i in 0..12 {
        app.handle(Event::Update(rates(i)));
    }
    app
}

pub fn press(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.handle(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

pub fn key(app: &mut App, c: char) -> Vec<Command> {
    press(app, KeyCode::Char(c))
}

pub fn type_str(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, c);
    }
}

pub fn click(app: &mut App, button: MouseButton, column: u16, row: u16) -> Vec<Command> {
    app.handle(Event::Mouse(MouseEvent {
        kind: MouseEventKind::Down(button),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    }))
}

/// Draws one frame of `app` at `w`×`h`.
pub fn frame(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = match Terminal::new(TestBackend::new(w, h)) {
        Ok(t) => t,
        Err(e) => panic!("test backend: {e}"),
    };
    if let Err(e) = t.draw(|f| app.draw(f)) {
        panic!("draw: {e}");
    }
    t
}

/// The frame as text lines (for assertions on content).
pub fn text(app: &mut App, w: u16, h: u16) -> String {
    let t = frame(app, w, h);
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}
