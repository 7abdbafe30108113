//! The add/edit user form. Each field is checked on Enter with the CLI's rules
//! ([`crate::validate`]); errors are shown under their field and nothing is sent until all
//! pass. The form stays open while the controller answers, and its error (a duplicate name,
//! say) is shown in the form too.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use vpn_shared::model::Bandwidth;
use vpn_shared::proto::admin::{AddUser, EditUser, Quota, QuotaEdit, UserDetail};

use crate::components::input::TextInput;
use crate::components::{Component, Ctx, DrawCtx, Effect, EventState, centered};
use crate::keys::{Action, Scope};
use crate::update::Command;
use crate::validate;

const NAME: usize = 0;
const EMAIL: usize = 1;
const SERVERS: usize = 2;
const PROTOCOLS: usize = 3;
const LIMIT: usize = 4;
const RESET: usize = 5;
const EXPIRES: usize = 6;
const DOWN: usize = 7;
const UP: usize = 8;

const FIELDS: [(&str, &str); 9] = [
    ("Name", "letters, digits, . _ @ -"),
    ("Email", "optional"),
    ("Servers", "all, or names: fra-1,ams-2"),
    ("Protocols", "all, or: shadowsocks,vless,proxy,wireguard"),
    ("Data limit", "empty: unlimited; 50GiB, 500MB"),
    ("Reset", "none, day, week, month, year"),
    ("Expires", "empty: never; 30d, 2027-01-31"),
    ("Down", "empty: unlimited; 10mbit"),
    ("Up", "empty: unlimited; 10mbit"),
];

#[derive(Debug, Clone)]
struct Field {
    input: TextInput,
    /// What the field held when the form opened (edit: only changes are sent).
    initial: String,
    error: Option<String>,
    editable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Add,
    Edit { name: String },
}

#[derive(Debug, Clone)]
pub struct UserForm {
    pub mode: Mode,
    fields: Vec<Field>,
    pub focus: usize,
    /// The id of the command sent, while waiting for its answer.
    pub pending: Option<u64>,
    /// The controller's answer when it refused.
    pub error: Option<String>,
    rows: Vec<(u16, usize)>,
    area: Rect,
}

fn rfc3339(t: i64) -> String {
    let secs = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

impl UserForm {
    fn with(mode: Mode, values: [String; 9], editable: [bool; 9]) -> UserForm {
        let fields = values
            .into_iter()
            .zip(editable)
            .map(|(v, editable)| Field {
                input: TextInput::new(v.clone()),
                initial: v,
                error: None,
                editable,
            })
            .collect();
        let focus = editable.iter().position(|e| *e).unwrap_or(0);
        UserForm {
            mode,
            fields,
            focus,
            pending: None,
            error: None,
            rows: Vec::new(),
            area: Rect::default(),
        }
    }

    pub fn add() -> UserForm {
        let values = ["", "", "all", "all", "", "none", "", "", ""].map(String::from);
        UserForm::with(Mode::Add, values, [true; 9])
    }

    pub fn edit(u: &UserDetail, _now: i64) -> UserForm {
        let q = &u.quota;
        let rate = |v: Option<u64>| v.map_or_else(String::new, |v| vpn_shared::rate::show(Some(v)));
        let values = [
            u.user.name.clone(),
            u.user.email.clone().unwrap_or_default(),
            if u.user.all_servers {
                "all".into()
            } else {
                u.user.servers.join(",")
            },
            match &u.user.protocols {
                None => "all".into(),
                Some(p) => p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(","),
            },
            q.data_limit
                .map_or_else(String::new, vpn_shared::size::show_set),
            q.reset.as_str().into(),
            q.expires_at.map_or_else(String::new, rfc3339),
            rate(u.user.bandwidth.down_bps),
            rate(u.user.bandwidth.up_bps),
        ];
        let editable = [false, true, false, false, true, true, true, true, true];
        UserForm::with(
            Mode::Edit {
                name: u.user.name.clone(),
            },
            values,
            editable,
        )
    }

    /// The field's current text (tests and the form itself).
    pub fn value(&self, i: usize) -> &str {
        &self.fields[i].input.value
    }

    /// The error shown under each field, by label.
    pub fn errors(&self) -> Vec<(&'static str, String)> {
        self.fields
            .iter()
            .zip(FIELDS)
            .filter_map(|(f, (label, _))| f.error.clone().map(|e| (label, e)))
            .collect()
    }

    fn text(&self, i: usize) -> &str {
        &self.fields[i].input.value
    }

    fn changed(&self, i: usize) -> bool {
        self.fields[i].input.value.trim() != self.fields[i].initial.trim()
    }

    fn check<T>(&mut self, i: usize, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => {
                self.fields[i].error = None;
                Some(v)
            }
            Err(e) => {
                self.fields[i].error = Some(e);
                None
            }
        }
    }

    /// Validates every field and, when all pass, sends the request.
    fn submit(&mut self, ctx: &mut Ctx<'_>) {
        if self.pending.is_some() {
            return;
        }
        self.error = None;
        let model = ctx.model;
        let name = match self.mode {
            Mode::Add => {
                let r = validate::user_name(self.text(NAME)).and_then(|n| {
                    if model.users.get(&n).is_some() {
                        Err(format!("user {n} already exists"))
                    } else {
                        Ok(n)
                    }
                });
                self.check(NAME, r)
            }
            Mode::Edit { ref name } => Some(name.clone()),
        };
        let email = self.check(EMAIL, validate::email(self.text(EMAIL)));
        let servers = self.check(
            SERVERS,
            validate::servers(self.text(SERVERS), |n| model.hosts.get(n).is_some()),
        );
        let protocols = self.check(PROTOCOLS, validate::protocols(self.text(PROTOCOLS)));
        let limit = self.check(LIMIT, validate::data_limit(self.text(LIMIT)));
        let reset = self.check(RESET, validate::reset(self.text(RESET)));
        let expires = self.check(EXPIRES, validate::expires(self.text(EXPIRES)));
        let down = self.check(DOWN, validate::rate(self.text(DOWN)));
        let up = self.check(UP, validate::rate(self.text(UP)));
        let (
            Some(name),
            Some(email),
            Some(servers),
            Some(protocols),
            Some(limit),
            Some(reset),
            Some(expires),
            Some(down),
            Some(up),
        ) = (
            name, email, servers, protocols, limit, reset, expires, down, up,
        )
        else {
            if let Some(first) = self.fields.iter().position(|f| f.error.is_some()) {
                self.focus = first;
            }
            return;
        };
        let bandwidth = Bandwidth {
            down_bps: down,
            up_bps: up,
        };
        let id = ctx.id();
        let command = match self.mode {
            Mode::Add => Command::AddUser {
                id,
                add: AddUser {
                    name,
                    email,
                    note: None,
                    protocols,
                    servers,
                    bandwidth,
                    wait: true,
                },
                quota: Quota {
                    data_limit: limit,
                    reset,
                    expires,
                    on_hold: None,
                },
            },
            Mode::Edit { .. } => {
                let bw_changed = self.changed(DOWN) || self.changed(UP);
                Command::EditUser {
                    id,
                    edit: EditUser {
                        name,
                        email: self.changed(EMAIL).then(|| email.unwrap_or_default()),
                        note: None,
                        bandwidth: bw_changed.then_some(bandwidth),
                        wait: true,
                    },
                    quota: QuotaEdit {
                        data_limit: self.changed(LIMIT).then_some(limit),
                        reset: self.changed(RESET).then_some(reset),
                        expires: self.changed(EXPIRES).then_some(expires),
                        on_hold: None,
                    },
                }
            }
        };
        ctx.commands.push(command);
        self.pending = Some(id);
    }

    /// The controller's answer to this form's request; `true` when the form should close.
    pub fn on_result(&mut self, id: u64, result: &Result<String, String>) -> Option<bool> {
        if self.pending != Some(id) {
            return None;
        }
        self.pending = None;
        match result {
            Ok(_) => Some(true),
            Err(e) => {
                self.error = Some(e.clone());
                Some(false)
            }
        }
    }

    fn step(&mut self, forward: bool) {
        let n = self.fields.len();
        for k in 1..=n {
            let i = if forward {
                (self.focus + k) % n
            } else {
                (self.focus + n - k) % n
            };
            if self.fields[i].editable {
                self.focus = i;
                return;
            }
        }
    }
}

impl Component for UserForm {
    fn scopes(&self) -> &'static [Scope] {
        &[]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return EventState::NotConsumed;
        }
        match key.code {
            KeyCode::Esc => ctx.effects.push(Effect::Close),
            KeyCode::Enter => self.submit(ctx),
            KeyCode::Tab | KeyCode::Down => self.step(true),
            KeyCode::BackTab | KeyCode::Up => self.step(false),
            _ if self.pending.is_none() => {
                let f = &mut self.fields[self.focus];
                if f.editable && f.input.key(key) {
                    f.error = None;
                }
            }
            _ => {}
        }
        EventState::Consumed
    }

    fn on_action(&mut self, _action: Action, _ctx: &mut Ctx<'_>) -> EventState {
        EventState::Consumed
    }

    fn on_mouse(&mut self, m: &MouseEvent, _ctx: &mut Ctx<'_>) -> EventState {
        let a = self.area;
        let inside =
            m.column >= a.x && m.column < a.x + a.width && m.row >= a.y && m.row < a.y + a.height;
        if !inside {
            return EventState::NotConsumed;
        }
        if m.kind == MouseEventKind::Down(MouseButton::Left)
            && let Some(&(_, i)) = self.rows.iter().find(|(y, _)| *y == m.row)
            && self.fields[i].editable
        {
            self.focus = i;
        }
        EventState::Consumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        let t = ctx.theme;
        let w = area.width.saturating_sub(4).min(76);
        let inner_w = usize::from(w.saturating_sub(2));
        let label_w = 11usize;
        let value_w = inner_w.saturating_sub(label_w + 2);
        let mut lines = Vec::new();
        let mut rows = Vec::new();
        for (i, (field, (label, hint))) in self.fields.iter().zip(FIELDS).enumerate() {
            rows.push((lines.len(), i));
            let focused = i == self.focus;
            let mut value = field.input.value.clone();
            if focused && field.editable {
                value.push('▏');
            }
            let count = value.chars().count();
            let shown: String = value.chars().skip(count.saturating_sub(value_w)).collect();
            let style = if !field.editable {
                t.dim
            } else if focused {
                t.input
            } else {
                t.base
            };
            let mut spans = vec![
                Span::styled(
                    format!("{label:>label_w$}: "),
                    if focused { t.key } else { t.dim },
                ),
                Span::styled(shown, style),
            ];
            if field.input.value.is_empty() {
                spans.push(Span::styled(format!(" {hint}"), t.dim));
            }
            lines.push(Line::from(spans));
            if let Some(e) = &field.error {
                for part in wrap(&format!("↳ {e}"), value_w.max(10)) {
                    lines.push(Line::from(Span::styled(
                        format!("{:>label_w$}  {part}", ""),
                        t.bad,
                    )));
                }
            }
        }
        lines.push(Line::raw(""));
        match (&self.pending, &self.error) {
            (Some(_), _) => {
                lines.push(Line::styled("saving… (waiting for the controller)", t.warn))
            }
            (None, Some(e)) => {
                for part in wrap(&format!("controller: {e}"), inner_w.max(10)) {
                    lines.push(Line::styled(part, t.bad));
                }
            }
            (None, None) => lines.push(Line::styled(
                "Enter save · Tab/↑↓ field · Esc cancel",
                t.dim,
            )),
        }
        let h = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
        let rect = centered(area, w, h);
        self.area = rect;
        self.rows = rows
            .into_iter()
            .map(|(n, i)| (rect.y + 1 + u16::try_from(n).unwrap_or(0), i))
            .collect();
        let title = match &self.mode {
            Mode::Add => " Add user ".to_owned(),
            Mode::Edit { name } => format!(" Edit user {name} "),
        };
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(title, t.title))
            .border_style(t.key)
            .style(t.base);
        f.render_widget(Clear, rect);
        f.render_widget(Paragraph::new(lines).style(t.base).block(block), rect);
    }
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            line = line.chars().skip(width).collect();
            out.push(head);
        }
    }
    if !line.is_empty() {
        out.push(line);
    }
    out
}

#[cfg(test)]
pub(crate) mod field {
    pub const NAME: usize = super::NAME;
    pub const EMAIL: usize = super::EMAIL;
    pub const LIMIT: usize = super::LIMIT;
    pub const EXPIRES: usize = super::EXPIRES;
}
