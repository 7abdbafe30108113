//! The events screen: the controller's event stream, oldest at the top, with a search that
//! narrows the list and follow mode (on by default) that keeps the newest line in view.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::host::event_style;
use super::title_line;
use crate::components::input::TextInput;
use crate::components::{Component, Ctx, DrawCtx, EventState, contains_ci};
use crate::format;
use crate::keys::{Action, Scope};
use crate::model::Model;
use crate::update::FleetEvent;

pub struct EventsScreen {
    pub search: TextInput,
    pub editing: bool,
    /// Keep the newest event selected as events arrive.
    pub follow: bool,
    /// Positions in the model's event list that match the search.
    view: Vec<usize>,
    built: Option<(u64, String)>,
    pub selected: usize,
    offset: usize,
    body: Rect,
}

impl Default for EventsScreen {
    fn default() -> Self {
        EventsScreen {
            search: TextInput::default(),
            editing: false,
            follow: true,
            view: Vec::new(),
            built: None,
            selected: 0,
            offset: 0,
            body: Rect::default(),
        }
    }
}

fn matches(e: &FleetEvent, needle: &str) -> bool {
    contains_ci(&e.host, needle)
        || contains_ci(&e.event.kind, needle)
        || contains_ci(&e.event.message, needle)
        || e.event
            .resource
            .as_deref()
            .is_some_and(|r| contains_ci(r, needle))
}

impl EventsScreen {
    fn refresh(&mut self, model: &Model) {
        let key = (model.events_rev, self.search.value.clone());
        if self.built.as_ref() != Some(&key) {
            let needle = self.search.value.trim().to_ascii_lowercase();
            self.view.clear();
            self.view.extend(
                model
                    .events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| needle.is_empty() || matches(e, &needle))
                    .map(|(i, _)| i),
            );
            self.built = Some(key);
        }
        if self.follow {
            self.selected = self.view.len().saturating_sub(1);
        }
        self.selected = self.selected.min(self.view.len().saturating_sub(1));
    }

    /// Events matching the search.
    pub fn len(&self) -> usize {
        self.view.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }

    fn move_to(&mut self, pos: usize) {
        self.selected = pos.min(self.view.len().saturating_sub(1));
        self.follow = self.selected + 1 >= self.view.len();
    }
}

impl Component for EventsScreen {
    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Events, Scope::List, Scope::Global]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        if !self.editing
            || key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
        {
            return EventState::NotConsumed;
        }
        match key.code {
            KeyCode::Enter => self.editing = false,
            KeyCode::Esc => {
                self.editing = false;
                self.search.value.clear();
            }
            KeyCode::Up => return self.on_action(Action::Up, ctx),
            KeyCode::Down => return self.on_action(Action::Down, ctx),
            _ => {
                self.search.key(key);
            }
        }
        self.refresh(ctx.model);
        EventState::Consumed
    }

    fn on_action(&mut self, action: Action, ctx: &mut Ctx<'_>) -> EventState {
        self.refresh(ctx.model);
        let page = usize::from(self.body.height.max(1));
        let s = self.selected;
        match action {
            Action::Up => self.move_to(s.saturating_sub(1)),
            Action::Down => self.move_to(s + 1),
            Action::PageUp => self.move_to(s.saturating_sub(page)),
            Action::PageDown => self.move_to(s + page),
            Action::Top => self.move_to(0),
            Action::Bottom => self.move_to(usize::MAX),
            Action::Filter => self.editing = true,
            Action::Follow => {
                self.follow = !self.follow;
                self.refresh(ctx.model);
            }
            Action::Back if !self.search.value.is_empty() => {
                self.search.value.clear();
                self.refresh(ctx.model);
            }
            _ => return EventState::NotConsumed,
        }
        EventState::Consumed
    }

    fn on_mouse(&mut self, m: &MouseEvent, ctx: &mut Ctx<'_>) -> EventState {
        self.refresh(ctx.model);
        let b = self.body;
        let inside =
            m.column >= b.x && m.column < b.x + b.width && m.row >= b.y && m.row < b.y + b.height;
        if !inside {
            return EventState::NotConsumed;
        }
        match m.kind {
            MouseEventKind::ScrollDown => self.move_to(self.selected + 3),
            MouseEventKind::ScrollUp => self.move_to(self.selected.saturating_sub(3)),
            MouseEventKind::Down(_) => {
                let pos = self.offset + usize::from(m.row - b.y);
                if pos < self.view.len() {
                    self.move_to(pos);
                }
            }
            _ => return EventState::NotConsumed,
        }
        EventState::Consumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        self.refresh(ctx.model);
        let t = ctx.theme;
        let follow = if self.follow {
            "following"
        } else {
            "paused (f: follow)"
        };
        let summary = format!(
            "Events {}/{} · {follow}",
            self.view.len(),
            ctx.model.events.len()
        );
        let [head, body] = super::split_title(area);
        title_line(f, head, &summary, &self.search.value, self.editing, ctx);
        self.body = body;
        let h = usize::from(body.height);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if h > 0 && self.selected >= self.offset + h {
            self.offset = self.selected + 1 - h;
        }
        self.offset = self.offset.min(self.view.len().saturating_sub(h));
        let end = (self.offset + h).min(self.view.len());
        let lines: Vec<Line<'static>> = self.view[self.offset..end]
            .iter()
            .enumerate()
            .filter_map(|(n, &i)| {
                let e = ctx.model.events.get(i)?;
                let mut spans = vec![
                    Span::styled(format!("{} ", format::moment_secs(e.event.at)), t.dim),
                    Span::raw(format!("{:<14} ", format::fit(&e.host, 14))),
                    Span::styled(
                        format!("{:<10}", e.event.kind),
                        event_style(&e.event.kind, ctx),
                    ),
                ];
                if let Some(r) = &e.event.resource {
                    spans.push(Span::raw(format!("{r}  ")));
                }
                spans.push(Span::raw(e.event.message.clone()));
                let line = Line::from(spans);
                Some(if self.offset + n == self.selected && !self.follow {
                    line.style(t.selected)
                } else {
                    line
                })
            })
            .collect();
        if lines.is_empty() {
            let text = if ctx.model.events.is_empty() {
                "no events yet"
            } else {
                "no event matches"
            };
            f.render_widget(Paragraph::new(text).style(t.dim), body);
            return;
        }
        f.render_widget(Paragraph::new(lines).style(t.base), body);
    }
}
