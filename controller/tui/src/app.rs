//! The IO-free core: [`App`] holds the model, the screens and the popups; [`App::handle`] takes
//! one [`Event`] (a key, a click, a tick of the clock or an [`Update`] from the backend) and
//! returns the [`Command`]s for the backend; [`App::draw`] renders a frame from the state alone.
//! The clock is an input (`Event::Tick`), so tests and snapshots pin their own time.

use std::collections::VecDeque;

use crossterm::event::{KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::components::{Ctx, DrawCtx, Effect, centered};
use crate::format;
use crate::keys::{self, Action, Scope};
use crate::model::Model;
use crate::popups::Popup;
use crate::popups::help::Help;
use crate::popups::menu::Menu;
use crate::screens::host::HostScreen;
use crate::screens::{ScreenId, Screens};
use crate::theme::Theme;
use crate::update::{Command, Update};

/// Everything the app reacts to.
// An `Update` (a snapshot) is large, a key is small; events are moved once each, so boxing
// would only add an allocation per update.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// The wall clock, Unix seconds; the runner sends one a second.
    Tick(i64),
    Update(Update),
}

/// The stream to the controller, as the backend reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected,
    Disconnected {
        reason: String,
        /// Unix seconds of the next attempt; `None`: no retry.
        retry_at: Option<i64>,
        since: i64,
    },
}

/// How long a status-bar message stays, seconds.
const MESSAGE_SECS: i64 = 6;

pub struct App {
    pub(crate) model: Model,
    pub(crate) screens: Screens,
    /// Drawn bottom to top; the last one gets the events.
    pub(crate) popups: Vec<Popup>,
    pub(crate) theme: Theme,
    now: i64,
    pub(crate) connection: Connection,
    /// Text, is an error, shown until.
    message: Option<(String, bool, i64)>,
    next_id: u64,
    quit: bool,
    /// Where the last frame drew each tab, for clicks.
    tabs: Vec<(Rect, ScreenId)>,
}

impl App {
    /// An empty app (waiting for the first snapshot) at `now` (Unix seconds).
    pub fn new(theme: Theme, now: i64) -> App {
        App {
            model: Model::default(),
            screens: Screens::default(),
            popups: Vec::new(),
            theme,
            now,
            connection: Connection::Connecting,
            message: None,
            next_id: 0,
            quit: false,
            tabs: Vec::new(),
        }
    }

    /// True once the operator quit (a [`Command::Quit`] was returned).
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn screen(&self) -> ScreenId {
        self.screens.current
    }

    /// The host drilled into, if any.
    pub fn open_host(&self) -> Option<&str> {
        self.screens.host.as_ref().map(|h| h.name.as_str())
    }

    /// The popup on top, if any.
    pub fn popup(&self) -> Option<&Popup> {
        self.popups.last()
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn theme(&self) -> Theme {
        self.theme
    }

    /// Handles one event; returns what the backend should do.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut commands = Vec::new();
        let mut effects = Vec::new();
        match event {
            Event::Tick(now) => {
                self.now = now;
                if self.message.as_ref().is_some_and(|m| m.2 <= now) {
                    self.message = None;
                }
            }
            Event::Resize(..) => {}
            Event::Update(u) => self.update(u, &mut effects),
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                self.key(&k, &mut commands, &mut effects);
            }
            Event::Key(_) => {}
            Event::Mouse(m) => self.mouse(&m, &mut commands, &mut effects),
        }
        self.apply(effects, &mut commands);
        commands
    }

    fn update(&mut self, u: Update, effects: &mut Vec<Effect>) {
        let m = &mut self.model;
        match u {
            Update::Snapshot(s) => {
                m.snapshot(s);
                self.connection = Connection::Connected;
            }
            Update::HostChanged(d) => m.host_changed(d),
            Update::HostRemoved(n) => m.hosts.remove(&n),
            Update::ServiceChanged(s) => m.services.upsert(s, |_, _| {}),
            Update::ServiceRemoved(n) => m.services.remove(&n),
            Update::UserChanged(u) => m.users.upsert(u, |_, _| {}),
            Update::UserRemoved(n) => m.users.remove(&n),
            Update::Event(e) => m.event(e),
            Update::Rates(r) => m.rates(r),
            Update::Connected => self.connection = Connection::Connected,
            Update::Disconnected { reason, retry_in } => {
                let since = match &self.connection {
                    Connection::Disconnected { since, .. } => *since,
                    _ => self.now,
                };
                let retry_at = retry_in.map(|d| {
                    self.now
                        .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                });
                self.connection = Connection::Disconnected {
                    reason,
                    retry_at,
                    since,
                };
            }
            Update::CommandResult { id, result } => {
                for i in (0..self.popups.len()).rev() {
                    let Popup::Form(form) = &mut self.popups[i] else {
                        continue;
                    };
                    if let Some(close) = form.on_result(id, &result) {
                        if close {
                            self.popups.remove(i);
                            if let Ok(summary) = &result {
                                effects.push(Effect::Message(summary.clone(), false));
                            }
                        }
                        return;
                    }
                }
                effects.push(match result {
                    Ok(s) => Effect::Message(s, false),
                    Err(e) => Effect::Message(e, true),
                });
            }
            Update::Links {
                id,
                user: _,
                result,
            } => {
                for p in self.popups.iter_mut().rev() {
                    if let Popup::Qr(qr) = p
                        && qr.on_links(id, &result)
                    {
                        return;
                    }
                }
            }
        }
    }

    fn key(&mut self, k: &KeyEvent, commands: &mut Vec<Command>, effects: &mut Vec<Effect>) {
        let mut ctx = Ctx {
            model: &self.model,
            now: self.now,
            commands,
            effects,
            next_id: &mut self.next_id,
        };
        if let Some(p) = self.popups.last_mut() {
            // Popups are modal: a key they leave (Ctrl-C) may only quit.
            if !p.component().on_key(k, &mut ctx).consumed()
                && keys::lookup(&[Scope::Global], k) == Some(Action::Quit)
            {
                self.global(Action::Quit, commands, effects);
            }
            return;
        }
        let screen = self.screens.top();
        if screen.on_key(k, &mut ctx).consumed() {
            return;
        }
        if let Some(action) = keys::lookup(screen.scopes(), k) {
            self.action(action, commands, effects);
        }
    }

    /// An action for the screen on top; what it leaves goes to the global keys.
    fn action(&mut self, action: Action, commands: &mut Vec<Command>, effects: &mut Vec<Effect>) {
        let mut ctx = Ctx {
            model: &self.model,
            now: self.now,
            commands,
            effects,
            next_id: &mut self.next_id,
        };
        if !self.screens.top().on_action(action, &mut ctx).consumed() {
            self.global(action, commands, effects);
        }
    }

    fn global(&mut self, action: Action, commands: &mut Vec<Command>, effects: &mut Vec<Effect>) {
        let scopes = self.screens.top().scopes();
        match action {
            Action::Quit => {
                if !self.quit {
                    commands.push(Command::Quit);
                }
                self.quit = true;
            }
            Action::Help => effects.push(Effect::Open(Popup::Help(Help::new(scopes)))),
            Action::Menu => effects.push(Effect::Open(Popup::Menu(Menu::new(scopes, None)))),
            Action::Theme => self.theme = self.theme.toggled(),
            Action::FleetScreen => {
                if self.screens.current == ScreenId::Fleet {
                    self.screens.host = None;
                }
                self.screens.current = ScreenId::Fleet;
            }
            Action::UsersScreen => self.screens.current = ScreenId::Users,
            Action::EventsScreen => self.screens.current = ScreenId::Events,
            Action::NextScreen => {
                let all = ScreenId::ALL;
                let i = all
                    .iter()
                    .position(|s| *s == self.screens.current)
                    .unwrap_or(0);
                self.screens.current = all[(i + 1) % all.len()];
            }
            Action::Back => self.screens.host = None,
            _ => {}
        }
    }

    fn mouse(&mut self, m: &MouseEvent, commands: &mut Vec<Command>, effects: &mut Vec<Effect>) {
        let mut ctx = Ctx {
            model: &self.model,
            now: self.now,
            commands,
            effects,
            next_id: &mut self.next_id,
        };
        if let Some(p) = self.popups.last_mut() {
            let consumed = p.component().on_mouse(m, &mut ctx).consumed();
            if !consumed && matches!(m.kind, MouseEventKind::Down(_)) {
                self.popups.pop();
            }
            return;
        }
        if let MouseEventKind::Down(MouseButton::Left) = m.kind {
            let tab = self
                .tabs
                .iter()
                .find(|(r, _)| m.row == r.y && m.column >= r.x && m.column < r.x + r.width);
            if let Some(&(_, id)) = tab {
                let action = match id {
                    ScreenId::Fleet => Action::FleetScreen,
                    ScreenId::Users => Action::UsersScreen,
                    ScreenId::Events => Action::EventsScreen,
                };
                self.global(action, commands, effects);
                return;
            }
        }
        let screen = self.screens.top();
        screen.on_mouse(m, &mut ctx);
        if m.kind == MouseEventKind::Down(MouseButton::Right) {
            let menu = Menu::new(screen.scopes(), Some((m.column, m.row)));
            effects.push(Effect::Open(Popup::Menu(menu)));
        }
    }

    fn apply(&mut self, effects: Vec<Effect>, commands: &mut Vec<Command>) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(e) = queue.pop_front() {
            match e {
                Effect::OpenHost(name) => self.screens.host = Some(HostScreen::new(name)),
                Effect::Back => self.screens.host = None,
                Effect::Open(p) => self.popups.push(p),
                Effect::Close => {
                    self.popups.pop();
                }
                Effect::Message(text, error) => {
                    self.message = Some((text, error, self.now + MESSAGE_SECS));
                }
                Effect::Action(a) => {
                    let mut more = Vec::new();
                    self.action(a, commands, &mut more);
                    queue.extend(more);
                }
            }
        }
    }

    /// Draws a frame from the state; reads no clock and waits on nothing.
    pub fn draw(&mut self, f: &mut Frame<'_>) {
        let area = f.area();
        let theme = self.theme;
        f.render_widget(Block::default().style(theme.base), area);
        if area.height < 3 || area.width < 20 {
            f.render_widget(Paragraph::new("terminal too small").style(theme.bad), area);
            return;
        }
        let banner = matches!(self.connection, Connection::Disconnected { .. });
        let top = Rect { height: 1, ..area };
        let body_y = area.y + 1 + u16::from(banner);
        let body = Rect {
            y: body_y,
            height: area.height.saturating_sub(2 + u16::from(banner)),
            ..area
        };
        let bar = Rect {
            y: area.y + area.height - 1,
            height: 1,
            ..area
        };
        self.draw_tabs(f, top);
        self.draw_bar(f, bar);
        if banner {
            self.draw_banner(
                f,
                Rect {
                    y: area.y + 1,
                    height: 1,
                    ..area
                },
            );
        }
        let ctx = DrawCtx {
            model: &self.model,
            now: self.now,
            theme: &self.theme,
        };
        if self.model.loaded {
            self.screens.top().draw(f, body, &ctx);
        } else {
            let text = match &self.connection {
                Connection::Disconnected { .. } => "no data yet: the controller is unreachable",
                _ => "waiting for the controller's snapshot…",
            };
            let r = centered(body, u16::try_from(text.chars().count()).unwrap_or(40), 1);
            f.render_widget(Paragraph::new(text).style(theme.dim), r);
        }
        // Popups may cover the bars too: a QR code needs every row at 80×24.
        for p in &mut self.popups {
            p.component().draw(f, area, &ctx);
        }
    }

    fn draw_tabs(&mut self, f: &mut Frame<'_>, area: Rect) {
        let t = &self.theme;
        let mut spans = vec![Span::styled(" vpn ", t.title)];
        let mut x = area.x + 5;
        self.tabs.clear();
        for id in ScreenId::ALL {
            let mut title = format!(" {} ", id.title());
            if id == ScreenId::Fleet
                && let Some(h) = &self.screens.host
            {
                title = format!(" {} › {} ", id.title(), format::fit(&h.name, 16));
            }
            let w = u16::try_from(title.chars().count()).unwrap_or(0);
            self.tabs.push((
                Rect {
                    x,
                    y: area.y,
                    width: w,
                    height: 1,
                },
                id,
            ));
            x += w + 1;
            let style = if id == self.screens.current {
                t.tab_active
            } else {
                t.dim
            };
            spans.push(Span::styled(title, style));
            spans.push(Span::raw(" "));
        }
        f.render_widget(Paragraph::new(Line::from(spans)).style(t.base), area);
        let (state, style) = match &self.connection {
            Connection::Connected => ("● live ", t.ok),
            Connection::Connecting => ("○ connecting ", t.warn),
            Connection::Disconnected { .. } => ("✖ disconnected ", t.bad),
        };
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(state, style)).right_aligned()),
            area,
        );
    }

    fn draw_banner(&self, f: &mut Frame<'_>, area: Rect) {
        let Connection::Disconnected {
            reason,
            retry_at,
            since,
        } = &self.connection
        else {
            return;
        };
        let retry = match retry_at {
            Some(at) if *at > self.now => format!("retrying in {} s", at - self.now),
            Some(_) => "retrying now…".to_owned(),
            None => "not retrying".to_owned(),
        };
        let text = format!(
            " Disconnected, {retry}: {reason} · data as of {}",
            format::ago(self.now, *since)
        );
        let style = self
            .theme
            .bad
            .add_modifier(ratatui::style::Modifier::REVERSED);
        f.render_widget(
            Paragraph::new(format::fit(&text, usize::from(area.width))).style(style),
            area,
        );
    }

    fn draw_bar(&mut self, f: &mut Frame<'_>, area: Rect) {
        let t = self.theme;
        if let Some((text, error, _)) = &self.message {
            let style = if *error { t.bad } else { t.ok };
            f.render_widget(Paragraph::new(format!(" {text}")).style(style), area);
            return;
        }
        let scopes = match self.popups.last() {
            Some(_) => &[][..],
            None => self.screens.top().scopes(),
        };
        let mut spans = Vec::new();
        let mut used = 0usize;
        for b in keys::visible(scopes).filter(|b| b.bar) {
            let w = b.shown.chars().count() + b.short().chars().count() + 3;
            if used + w > usize::from(area.width) {
                break;
            }
            used += w;
            spans.push(Span::styled(format!(" {}", b.shown), t.key));
            spans.push(Span::styled(format!(" {} ", b.short()), t.dim));
        }
        f.render_widget(Paragraph::new(Line::from(spans)).style(t.base), area);
    }
}
