//! The fleet screen: every host, its health, generations and live traffic. Enter drills down.

use std::cmp::Ordering;

use crossterm::event::{KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Span;
use vpn_shared::proto::admin::HostState;

use super::title_line;
use crate::components::table::{Clicked, Col, Table, styled};
use crate::components::{Component, Ctx, DrawCtx, Effect, EventState};
use crate::format::{self, NONE};
use crate::keys::{Action, Scope};
use crate::model::HostRow;

/// Problems first when sorted ascending.
fn rank(s: &HostState) -> u8 {
    match s {
        HostState::Offline => 0,
        HostState::Degraded { .. } => 1,
        HostState::Pending => 2,
        HostState::Online => 3,
    }
}

pub fn status_span(s: &HostState, ctx: &DrawCtx<'_>) -> Span<'static> {
    let t = ctx.theme;
    match s {
        HostState::Online => Span::styled("online", t.ok),
        HostState::Degraded { failing } => Span::styled(format!("degraded {failing}"), t.warn),
        HostState::Offline => Span::styled("offline", t.bad),
        HostState::Pending => Span::styled("pending", t.dim),
    }
}

fn rx(h: &HostRow) -> Option<u64> {
    h.rate.as_ref().map(|r| r.rx_bps)
}
fn tx(h: &HostRow) -> Option<u64> {
    h.rate.as_ref().map(|r| r.tx_bps)
}
fn opt_bps(v: Option<u64>) -> Span<'static> {
    Span::raw(v.map_or_else(|| NONE.to_owned(), format::bps))
}
fn cmp_f32(a: Option<f32>, b: Option<f32>) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

const COLS: &[Col<HostRow>] = &[
    Col {
        title: "HOST",
        width: 13,
        keep: 100,
        right: false,
        text: None,
        num: None,
        cell: |h, _| Span::raw(format::fit(h.name(), 13)),
        cmp: |a, b| a.name().cmp(b.name()),
    },
    Col {
        title: "STATUS",
        width: 11,
        keep: 95,
        right: false,
        text: None,
        num: None,
        cell: |h, c| status_span(&h.detail.state, c),
        cmp: |a, b| rank(&a.detail.state).cmp(&rank(&b.detail.state)),
    },
    Col {
        title: "VERSION",
        width: 8,
        keep: 50,
        right: false,
        text: None,
        num: None,
        cell: |h, _| {
            Span::raw(
                h.detail
                    .server
                    .agent_version
                    .clone()
                    .unwrap_or_else(|| NONE.into()),
            )
        },
        cmp: |a, b| {
            a.detail
                .server
                .agent_version
                .cmp(&b.detail.server.agent_version)
        },
    },
    Col {
        title: "SEEN",
        width: 8,
        keep: 60,
        right: false,
        text: None,
        num: None,
        cell: |h, c| match h.detail.server.last_seen {
            Some(t) => Span::raw(format::ago(c.now, t)),
            None => Span::styled("never", c.theme.dim),
        },
        cmp: |a, b| a.detail.server.last_seen.cmp(&b.detail.server.last_seen),
    },
    Col {
        title: "ACK/WANT",
        width: 11,
        keep: 55,
        right: false,
        text: None,
        num: None,
        cell: |h, c| {
            let s = &h.detail.server;
            let acked = s
                .acked_generation
                .map_or_else(|| NONE.to_owned(), |g| g.to_string());
            let text = format!("{acked}/{}", s.desired_generation);
            let behind = s.acked_generation != Some(s.desired_generation) && s.enrolled;
            styled(text, behind.then_some(c.theme.warn))
        },
        cmp: |a, b| {
            let lag = |h: &HostRow| {
                let s = &h.detail.server;
                s.desired_generation
                    .saturating_sub(s.acked_generation.unwrap_or(0))
            };
            lag(a).cmp(&lag(b))
        },
    },
    Col {
        title: "SVC",
        width: 3,
        keep: 40,
        right: true,
        text: None,
        num: None,
        cell: |h, _| Span::raw(h.detail.server.services.len().to_string()),
        cmp: |a, b| {
            a.detail
                .server
                .services
                .len()
                .cmp(&b.detail.server.services.len())
        },
    },
    Col {
        title: "USERS",
        width: 6,
        keep: 45,
        right: true,
        text: None,
        num: None,
        cell: |h, _| Span::raw(h.detail.server.users.to_string()),
        cmp: |a, b| a.detail.server.users.cmp(&b.detail.server.users),
    },
    Col {
        title: "RX bit/s",
        width: 8,
        keep: 80,
        right: true,
        text: None,
        num: None,
        cell: |h, _| opt_bps(rx(h)),
        cmp: |a, b| rx(a).cmp(&rx(b)),
    },
    Col {
        title: "TX bit/s",
        width: 8,
        keep: 79,
        right: true,
        text: None,
        num: None,
        cell: |h, _| opt_bps(tx(h)),
        cmp: |a, b| tx(a).cmp(&tx(b)),
    },
    Col {
        title: "TRAFFIC",
        width: 12,
        keep: 30,
        right: false,
        text: None,
        num: None,
        cell: |h, c| {
            if h.history.is_empty() {
                Span::styled(NONE, c.theme.dim)
            } else {
                Span::styled(format::sparkline(h.history.iter().copied(), 12), c.theme.ok)
            }
        },
        cmp: |a, b| a.history.back().cmp(&b.history.back()),
    },
    Col {
        title: "CPU",
        width: 4,
        keep: 20,
        right: true,
        text: None,
        num: None,
        cell: |h, _| Span::raw(format::percent(h.rate.as_ref().and_then(|r| r.cpu))),
        cmp: |a, b| {
            cmp_f32(
                a.rate.as_ref().and_then(|r| r.cpu),
                b.rate.as_ref().and_then(|r| r.cpu),
            )
        },
    },
    Col {
        title: "MEM",
        width: 4,
        keep: 19,
        right: true,
        text: None,
        num: None,
        cell: |h, _| Span::raw(format::percent(h.rate.as_ref().and_then(|r| r.mem))),
        cmp: |a, b| {
            cmp_f32(
                a.rate.as_ref().and_then(|r| r.mem),
                b.rate.as_ref().and_then(|r| r.mem),
            )
        },
    },
];

fn search(h: &HostRow, out: &mut String) {
    use std::fmt::Write as _;
    let s = &h.detail.server;
    let _ = write!(out, "{}\n{}", s.name, h.detail.state);
    for v in [&s.agent_version, &s.address].into_iter().flatten() {
        out.push('\n');
        out.push_str(v);
    }
}

pub struct FleetScreen {
    pub table: Table<HostRow>,
}

impl Default for FleetScreen {
    fn default() -> Self {
        let mut table = Table::new(COLS, HostRow::name, search);
        table.sort = 0;
        FleetScreen { table }
    }
}

impl FleetScreen {
    fn open(&self, ctx: &mut Ctx<'_>) -> EventState {
        let hosts = &ctx.model.hosts;
        let Some(h) = self.table.selected_item(&hosts.items) else {
            return EventState::NotConsumed;
        };
        ctx.effects.push(Effect::OpenHost(h.name().to_owned()));
        EventState::Consumed
    }

    /// The selected host's name.
    pub fn selected<'a>(&self, ctx: &'a DrawCtx<'_>) -> Option<&'a str> {
        self.table
            .selected_item(&ctx.model.hosts.items)
            .map(HostRow::name)
    }
}

impl Component for FleetScreen {
    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Fleet, Scope::Sort, Scope::List, Scope::Global]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        let hosts = &ctx.model.hosts;
        self.table.on_key(key, hosts)
    }

    fn on_action(&mut self, action: Action, ctx: &mut Ctx<'_>) -> EventState {
        if action == Action::Open {
            return self.open(ctx);
        }
        let hosts = &ctx.model.hosts;
        self.table.on_action(action, hosts)
    }

    fn on_mouse(&mut self, m: &MouseEvent, ctx: &mut Ctx<'_>) -> EventState {
        let hosts = &ctx.model.hosts;
        match self.table.on_mouse(m, hosts) {
            Clicked::Row { again: true } if m.kind == MouseEventKind::Down(MouseButton::Left) => {
                self.open(ctx)
            }
            Clicked::Nothing => EventState::NotConsumed,
            _ => EventState::Consumed,
        }
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        let hosts = &ctx.model.hosts;
        self.table.refresh(hosts);
        let (mut offline, mut degraded) = (0usize, 0usize);
        for h in &hosts.items {
            match h.detail.state {
                HostState::Offline => offline += 1,
                HostState::Degraded { .. } => degraded += 1,
                _ => {}
            }
        }
        let summary = format!(
            "Hosts {}/{} · {degraded} degraded · {offline} offline · sort {}",
            self.table.len(),
            hosts.len(),
            self.table.sort_label()
        );
        let [head, body] = super::split_title(area);
        title_line(
            f,
            head,
            &summary,
            &self.table.filter.value,
            self.table.editing,
            ctx,
        );
        self.table.draw(f, body, hosts, ctx);
    }
}
