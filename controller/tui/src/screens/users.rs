//! The users screen: every user with status, usage against the limit and expiry; forms to add
//! and edit, suspend/resume, delete (confirmed) and a QR popup of the user's links.

use crossterm::event::{KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Span;
use vpn_shared::proto::admin::UserDetail;

use super::title_line;
use crate::components::table::{Clicked, Col, Table};
use crate::components::{Component, Ctx, DrawCtx, Effect, EventState};
use crate::format::{self, NONE};
use crate::keys::{Action, Scope};
use crate::popups::Popup;
use crate::popups::confirm::Confirm;
use crate::popups::form::UserForm;
use crate::popups::qr::QrPopup;
use crate::update::Command;

fn status_span(u: &UserDetail, ctx: &DrawCtx<'_>) -> Span<'static> {
    let t = ctx.theme;
    let s = u.user.status.as_str();
    let style = match s {
        "active" => t.ok,
        "suspended" | "on_hold" => t.warn,
        "limited" | "expired" => t.bad,
        _ => t.base,
    };
    Span::styled(s.to_owned(), style)
}

fn name(u: &UserDetail) -> &str {
    &u.user.name
}

fn expires(u: &UserDetail, ctx: &DrawCtx<'_>) -> Span<'static> {
    let q = &u.quota;
    match (q.expires_at, q.on_hold) {
        (Some(at), _) => {
            let style = if at <= ctx.now {
                ctx.theme.bad
            } else if at - ctx.now < 3 * 86_400 {
                ctx.theme.warn
            } else {
                ctx.theme.base
            };
            Span::styled(format::until(ctx.now, at), style)
        }
        (None, Some(h)) => Span::raw(format!("hold {}", vpn_shared::size::show_span(h.duration))),
        (None, None) => Span::styled("never", ctx.theme.dim),
    }
}

/// An `i64` as a `u64` in the same order.
fn ordered(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

fn email(u: &UserDetail) -> &str {
    u.user.email.as_deref().unwrap_or_default()
}

fn servers(u: &UserDetail) -> String {
    if u.user.all_servers {
        "all".into()
    } else {
        u.user.servers.join(",")
    }
}

fn protocols(u: &UserDetail) -> String {
    match &u.user.protocols {
        None => "all".into(),
        Some(p) => p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(","),
    }
}

fn bandwidth(u: &UserDetail) -> String {
    let b = u.user.bandwidth;
    if b.is_unlimited() {
        return "∞".into();
    }
    let one = |v: Option<u64>| v.map_or_else(|| "∞".to_owned(), format::bps);
    format!("↓{} ↑{}", one(b.down_bps), one(b.up_bps))
}

/// Used over limit as a fraction, for sorting (unlimited last).
fn fill(u: &UserDetail) -> u64 {
    match u.quota.data_limit {
        Some(l) if l > 0 => u128::from(u.quota.used)
            .saturating_mul(1_000_000)
            .div_euclid(u128::from(l))
            .try_into()
            .unwrap_or(u64::MAX),
        _ => 0,
    }
}

const COLS: &[Col<UserDetail>] = &[
    Col {
        title: "NAME",
        width: 18,
        keep: 100,
        right: false,
        text: None,
        num: None,
        cell: |u, _| Span::raw(format::fit(&u.user.name, 18)),
        cmp: |a, b| a.user.name.cmp(&b.user.name),
    },
    Col {
        title: "STATUS",
        width: 9,
        keep: 95,
        right: false,
        text: Some(|u| &u.user.status),
        num: None,
        cell: status_span,
        cmp: |a, b| a.user.status.cmp(&b.user.status),
    },
    Col {
        title: "USED",
        width: 10,
        keep: 80,
        right: true,
        text: None,
        num: Some(|u| u.quota.used),
        cell: |u, _| Span::raw(vpn_shared::size::show(u.quota.used)),
        cmp: |a, b| a.quota.used.cmp(&b.quota.used),
    },
    Col {
        title: "LIMIT",
        width: 9,
        keep: 70,
        right: true,
        text: None,
        num: Some(|u| u.quota.data_limit.unwrap_or(u64::MAX)),
        cell: |u, _| {
            Span::raw(
                u.quota
                    .data_limit
                    .map_or_else(|| "∞".into(), vpn_shared::size::show_set),
            )
        },
        cmp: |a, b| {
            a.quota
                .data_limit
                .unwrap_or(u64::MAX)
                .cmp(&b.quota.data_limit.unwrap_or(u64::MAX))
        },
    },
    Col {
        title: "USE%",
        width: 5,
        keep: 66,
        right: true,
        text: None,
        num: Some(fill),
        cell: |u, c| match u.quota.data_limit {
            Some(_) => {
                let pct = fill(u) / 10_000;
                let style = if pct >= 100 {
                    c.theme.bad
                } else if pct >= 80 {
                    c.theme.warn
                } else {
                    c.theme.base
                };
                Span::styled(format!("{pct}%"), style)
            }
            None => Span::styled(NONE, c.theme.dim),
        },
        cmp: |a, b| fill(a).cmp(&fill(b)),
    },
    Col {
        title: "EXPIRES",
        width: 10,
        keep: 60,
        right: false,
        text: None,
        num: Some(|u| ordered(u.quota.expires_at.unwrap_or(i64::MAX))),
        cell: expires,
        cmp: |a, b| {
            a.quota
                .expires_at
                .unwrap_or(i64::MAX)
                .cmp(&b.quota.expires_at.unwrap_or(i64::MAX))
        },
    },
    Col {
        title: "RESET",
        width: 5,
        keep: 30,
        right: false,
        text: None,
        num: None,
        cell: |u, _| Span::raw(u.quota.reset.as_str()),
        cmp: |a, b| a.quota.reset.as_str().cmp(b.quota.reset.as_str()),
    },
    Col {
        title: "SERVERS",
        width: 10,
        keep: 35,
        right: false,
        text: None,
        num: None,
        cell: |u, _| Span::raw(format::fit(&servers(u), 10)),
        cmp: |a, b| {
            (!a.user.all_servers, &a.user.servers).cmp(&(!b.user.all_servers, &b.user.servers))
        },
    },
    Col {
        title: "PROTOCOLS",
        width: 12,
        keep: 25,
        right: false,
        text: None,
        num: None,
        cell: |u, _| Span::raw(format::fit(&protocols(u), 12)),
        cmp: |a, b| a.user.protocols.cmp(&b.user.protocols),
    },
    Col {
        title: "BANDWIDTH",
        width: 13,
        keep: 20,
        right: false,
        text: None,
        num: None,
        cell: |u, _| Span::raw(bandwidth(u)),
        cmp: |a, b| a.user.bandwidth.down_bps.cmp(&b.user.bandwidth.down_bps),
    },
    Col {
        title: "EMAIL",
        width: 20,
        keep: 10,
        right: false,
        text: Some(email),
        num: None,
        cell: |u, _| Span::raw(u.user.email.clone().unwrap_or_default()),
        cmp: |a, b| email(a).cmp(email(b)),
    },
];

fn search(u: &UserDetail, out: &mut String) {
    out.push_str(&u.user.name);
    out.push('\n');
    out.push_str(&u.user.status);
    if let Some(e) = &u.user.email {
        out.push('\n');
        out.push_str(e);
    }
}

pub struct UsersScreen {
    pub table: Table<UserDetail>,
}

impl Default for UsersScreen {
    fn default() -> Self {
        UsersScreen {
            table: Table::new(COLS, name, search),
        }
    }
}

impl UsersScreen {
    fn selected<'a>(&self, ctx: &Ctx<'a>) -> Option<&'a UserDetail> {
        self.table.selected_item(&ctx.model.users.items)
    }

    fn act(&mut self, action: Action, ctx: &mut Ctx<'_>) -> EventState {
        if action == Action::AddUser {
            ctx.effects
                .push(Effect::Open(Popup::Form(Box::new(UserForm::add()))));
            return EventState::Consumed;
        }
        let Some(u) = self.selected(ctx) else {
            return EventState::NotConsumed;
        };
        let name = u.user.name.clone();
        match action {
            Action::EditUser => {
                let form = UserForm::edit(u, ctx.now);
                ctx.effects.push(Effect::Open(Popup::Form(Box::new(form))));
            }
            Action::ToggleSuspend => {
                let id = ctx.id();
                let (cmd, verb) = if u.user.status == "suspended" {
                    (
                        Command::ResumeUser {
                            id,
                            name: name.clone(),
                        },
                        "resuming",
                    )
                } else {
                    (
                        Command::SuspendUser {
                            id,
                            name: name.clone(),
                        },
                        "suspending",
                    )
                };
                ctx.commands.push(cmd);
                ctx.effects
                    .push(Effect::Message(format!("{verb} {name}…"), false));
            }
            Action::DeleteUser => {
                ctx.effects
                    .push(Effect::Open(Popup::Confirm(Confirm::delete_user(name))));
            }
            Action::ShowQr => {
                let id = ctx.id();
                ctx.commands.push(Command::FetchLinks {
                    id,
                    name: name.clone(),
                });
                ctx.effects
                    .push(Effect::Open(Popup::Qr(Box::new(QrPopup::new(id, name)))));
            }
            _ => return EventState::NotConsumed,
        }
        EventState::Consumed
    }
}

impl Component for UsersScreen {
    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Users, Scope::Sort, Scope::List, Scope::Global]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        let users = &ctx.model.users;
        self.table.on_key(key, users)
    }

    fn on_action(&mut self, action: Action, ctx: &mut Ctx<'_>) -> EventState {
        let users = &ctx.model.users;
        if self.table.on_action(action, users).consumed() {
            return EventState::Consumed;
        }
        self.act(action, ctx)
    }

    fn on_mouse(&mut self, m: &MouseEvent, ctx: &mut Ctx<'_>) -> EventState {
        let users = &ctx.model.users;
        match self.table.on_mouse(m, users) {
            Clicked::Row { again: true } if m.kind == MouseEventKind::Down(MouseButton::Left) => {
                self.act(Action::EditUser, ctx)
            }
            Clicked::Nothing => EventState::NotConsumed,
            _ => EventState::Consumed,
        }
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        let users = &ctx.model.users;
        self.table.refresh(users);
        let summary = format!(
            "Users {}/{} · sort {}",
            self.table.len(),
            users.len(),
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
        self.table.draw(f, body, users, ctx);
    }
}
