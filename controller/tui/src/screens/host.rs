//! One host in detail: health, services and their state, failing resources with their
//! messages, missing kernel features, certificate expiry, warnings and recent events.
//! Built as lines each frame (one host: cheap) and scrolled.

use crossterm::event::{MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use vpn_shared::proto::admin::{HostEvent, LAST_APPLY};

use super::fleet::status_span;
use crate::components::{Component, Ctx, DrawCtx, Effect, EventState};
use crate::format::{self, NONE};
use crate::keys::{Action, Scope};
use crate::model::HostRow;

/// Events shown at most.
const EVENTS: usize = 50;

pub struct HostScreen {
    pub name: String,
    scroll: u16,
    /// Lines in the last frame and the height they had, to stop scrolling at the end.
    lines: u16,
    height: u16,
    area: Rect,
}

impl HostScreen {
    pub fn new(name: String) -> HostScreen {
        HostScreen {
            name,
            scroll: 0,
            lines: 0,
            height: 0,
            area: Rect::default(),
        }
    }

    fn scroll_by(&mut self, delta: i32) {
        let max = self.lines.saturating_sub(self.height);
        let next = (i32::from(self.scroll) + delta).clamp(0, i32::from(max));
        self.scroll = u16::try_from(next).unwrap_or(0);
    }
}

fn section(title: String, ctx: &DrawCtx<'_>) -> Line<'static> {
    Line::from(Span::styled(format!("── {title} "), ctx.theme.header))
}

fn field(label: &str, value: Span<'static>, ctx: &DrawCtx<'_>) -> Vec<Span<'static>> {
    vec![
        Span::styled(format!("{label} "), ctx.theme.dim),
        value,
        Span::raw("   "),
    ]
}

fn lines(h: &HostRow, ctx: &DrawCtx<'_>) -> Vec<Line<'static>> {
    let t = ctx.theme;
    let d = &h.detail;
    let s = &d.server;
    let mut out = Vec::new();
    let mut head = field("Host", Span::styled(s.name.clone(), t.title), ctx);
    head.extend(field("Status", status_span(&d.state, ctx), ctx));
    head.extend(field(
        "Agent",
        Span::raw(s.agent_version.clone().unwrap_or_else(|| NONE.into())),
        ctx,
    ));
    head.extend(field(
        "Address",
        Span::raw(s.address.clone().unwrap_or_else(|| NONE.into())),
        ctx,
    ));
    out.push(Line::from(head));
    let seen = s
        .last_seen
        .map_or_else(|| "never".into(), |t| format::ago(ctx.now, t));
    let behind = s.enrolled && s.acked_generation != Some(s.desired_generation);
    let acked = s
        .acked_generation
        .map_or_else(|| NONE.to_owned(), |g| g.to_string());
    let mut gen_line = field("Seen", Span::raw(seen), ctx);
    gen_line.extend(field(
        "Generation",
        Span::styled(
            format!("{acked} acked / {} desired", s.desired_generation),
            if behind { t.warn } else { t.base },
        ),
        ctx,
    ));
    out.push(Line::from(gen_line));
    let cert = d
        .vitals
        .as_ref()
        .and_then(|v| v.cert_not_after)
        .or(s.cert_not_after);
    let cert_span = match cert {
        Some(at) => {
            let soon = at - ctx.now < 7 * 86_400;
            Span::styled(
                format!("{} ({})", format::moment(at), format::until(ctx.now, at)),
                if soon { t.warn } else { t.base },
            )
        }
        None => Span::raw(NONE),
    };
    let mut vit = field("Certificate", cert_span, ctx);
    match &d.vitals {
        Some(v) => {
            vit.extend(field(
                "Skew",
                Span::raw(format!("{} ms", v.clock_skew_ms)),
                ctx,
            ));
            let disk = v
                .disk_free_bytes
                .map_or_else(|| NONE.into(), vpn_shared::size::show);
            vit.extend(field("Disk free", Span::raw(disk), ctx));
            let backlog = v
                .ledger_backlog
                .map_or_else(|| NONE.into(), |b| b.to_string());
            vit.extend(field("Ledger backlog", Span::raw(backlog), ctx));
        }
        None => vit.extend(field("Vitals", Span::styled("not reported", t.dim), ctx)),
    }
    out.push(Line::from(vit));
    let mut live = Vec::new();
    match &h.rate {
        Some(r) => {
            live.extend(field(
                "RX",
                Span::raw(format!("{}bit/s", format::bps(r.rx_bps))),
                ctx,
            ));
            live.extend(field(
                "TX",
                Span::raw(format!("{}bit/s", format::bps(r.tx_bps))),
                ctx,
            ));
            live.extend(field("CPU", Span::raw(format::percent(r.cpu)), ctx));
            live.extend(field("Mem", Span::raw(format::percent(r.mem)), ctx));
            live.push(Span::styled(
                format::sparkline(h.history.iter().copied(), 30),
                t.ok,
            ));
        }
        None => live.extend(field("Traffic", Span::styled("no rates yet", t.dim), ctx)),
    }
    out.push(Line::from(live));

    out.push(section(format!("Services ({})", s.services.len()), ctx));
    if s.services.is_empty() {
        out.push(Line::styled("  none", t.dim));
    }
    for name in &s.services {
        out.push(service_line(name, h, ctx));
    }

    let last_apply: Vec<&String> = s
        .health
        .iter()
        .filter(|l| l.starts_with(LAST_APPLY))
        .collect();
    out.push(section(
        format!("Failing resources ({})", d.failing.len() + last_apply.len()),
        ctx,
    ));
    if d.failing.is_empty() && last_apply.is_empty() {
        out.push(Line::styled("  none", t.ok));
    }
    for fr in &d.failing {
        out.push(Line::from(vec![
            Span::styled(format!("  {}", fr.resource), t.bad),
            Span::styled(
                format!("  since {}", format::ago(ctx.now, fr.first_seen)),
                t.dim,
            ),
        ]));
        out.push(Line::raw(format!("    {}", fr.message)));
    }
    for l in last_apply {
        out.push(Line::styled(format!("  {l}"), t.bad));
    }

    let missing: Vec<&String> = s
        .health
        .iter()
        .filter(|l| !l.starts_with(LAST_APPLY))
        .collect();
    out.push(section(
        format!("Missing kernel features ({})", missing.len()),
        ctx,
    ));
    if missing.is_empty() {
        let known = d.vitals.is_some() || s.online;
        out.push(if known {
            Line::styled("  none", t.ok)
        } else {
            Line::styled("  not reported (offline)", t.dim)
        });
    }
    for m in missing {
        out.push(Line::styled(format!("  {m}"), t.warn));
    }

    if !d.warnings.is_empty() {
        out.push(section(format!("Warnings ({})", d.warnings.len()), ctx));
        for w in &d.warnings {
            out.push(Line::styled(format!("  {w}"), t.warn));
        }
    }

    let events: Vec<&HostEvent> = if d.events.is_empty() {
        ctx.model
            .events
            .iter()
            .rev()
            .filter(|e| e.host == s.name)
            .map(|e| &e.event)
            .take(EVENTS)
            .collect()
    } else {
        d.events.iter().take(EVENTS).collect()
    };
    out.push(section(format!("Recent events ({})", events.len()), ctx));
    if events.is_empty() {
        out.push(Line::styled("  none", t.dim));
    }
    for e in events {
        out.push(event_line(e, ctx));
    }
    out
}

fn service_line(name: &str, h: &HostRow, ctx: &DrawCtx<'_>) -> Line<'static> {
    let t = ctx.theme;
    let info = ctx.model.services.get(name);
    let proto = info.map_or_else(|| NONE.to_owned(), |s| s.protocol.to_string());
    let port = info.map_or_else(
        || NONE.to_owned(),
        |s| {
            if s.port_span > 1 {
                format!(
                    "{}-{}",
                    s.port,
                    u32::from(s.port) + u32::from(s.port_span) - 1
                )
            } else {
                s.port.to_string()
            }
        },
    );
    let resource = format!("service/{name}");
    let failing = h.detail.failing.iter().find(|f| f.resource == resource);
    let users_failing = h
        .detail
        .failing
        .iter()
        .filter(|f| f.resource.starts_with("user/") && f.resource.ends_with(&format!("@{name}")))
        .count();
    let container = h
        .detail
        .vitals
        .as_ref()
        .and_then(|v| v.containers.iter().find(|c| c.resource == resource));
    let (state, style): (String, Style) = if let Some(f) = failing {
        (format!("failing: {}", f.message), t.bad)
    } else if !h.detail.server.online {
        ("offline".into(), t.bad)
    } else if let Some(c) = container {
        if c.running {
            let restarts = if c.restarts > 0 {
                format!(", {} restarts", c.restarts)
            } else {
                String::new()
            };
            (
                format!("running{restarts}"),
                if c.restarts > 0 { t.warn } else { t.ok },
            )
        } else {
            ("not running".into(), t.bad)
        }
    } else {
        ("ok".into(), t.ok)
    };
    let mut spans = vec![
        Span::raw(format!(
            "  {:<16} {:<12} {:<12} ",
            format::fit(name, 16),
            proto,
            port
        )),
        Span::styled(state, style),
    ];
    if users_failing > 0 {
        spans.push(Span::styled(
            format!("  ({users_failing} users failing)"),
            t.warn,
        ));
    }
    Line::from(spans)
}

pub fn event_style(kind: &str, ctx: &DrawCtx<'_>) -> Style {
    match kind {
        "failing" | "offline" => ctx.theme.bad,
        "recovered" | "online" => ctx.theme.ok,
        "repaired" => ctx.theme.warn,
        _ => ctx.theme.base,
    }
}

fn event_line(e: &HostEvent, ctx: &DrawCtx<'_>) -> Line<'static> {
    let mut spans = vec![
        Span::styled(format!("  {}  ", format::moment_secs(e.at)), ctx.theme.dim),
        Span::styled(format!("{:<10}", e.kind), event_style(&e.kind, ctx)),
    ];
    if let Some(r) = &e.resource {
        spans.push(Span::raw(format!("{r}  ")));
    }
    spans.push(Span::raw(e.message.clone()));
    Line::from(spans)
}

impl Component for HostScreen {
    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Host, Scope::Global]
    }

    fn on_action(&mut self, action: Action, ctx: &mut Ctx<'_>) -> EventState {
        let page = i32::from(self.height.max(2) - 1);
        match action {
            Action::Back => ctx.effects.push(Effect::Back),
            Action::Up => self.scroll_by(-1),
            Action::Down => self.scroll_by(1),
            Action::PageUp => self.scroll_by(-page),
            Action::PageDown => self.scroll_by(page),
            _ => return EventState::NotConsumed,
        }
        EventState::Consumed
    }

    fn on_mouse(&mut self, m: &MouseEvent, _ctx: &mut Ctx<'_>) -> EventState {
        match m.kind {
            MouseEventKind::ScrollDown => self.scroll_by(3),
            MouseEventKind::ScrollUp => self.scroll_by(-3),
            _ => return EventState::NotConsumed,
        }
        EventState::Consumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        self.area = area;
        let Some(h) = ctx.model.hosts.get(&self.name) else {
            let text = format!("host {} was removed (Esc: back)", self.name);
            f.render_widget(Paragraph::new(text).style(ctx.theme.warn), area);
            return;
        };
        let lines = lines(h, ctx);
        self.lines = u16::try_from(lines.len()).unwrap_or(u16::MAX);
        self.height = area.height;
        self.scroll = self.scroll.min(self.lines.saturating_sub(self.height));
        let p = Paragraph::new(lines)
            .style(ctx.theme.base)
            .scroll((self.scroll, 0));
        f.render_widget(p, area);
    }
}
