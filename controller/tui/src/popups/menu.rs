//! The context menu (F10, Shift-F10, right click): the current screen's actions from the key
//! table, at the mouse or in the middle. Choosing one runs it as if its key was pressed.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::components::{Component, Ctx, DrawCtx, Effect, EventState, centered};
use crate::keys::{self, Action, Scope};

#[derive(Debug, Clone)]
pub struct Menu {
    pub items: Vec<(&'static str, &'static str, Action)>,
    pub selected: usize,
    /// Where the right click was; `None`: centred.
    anchor: Option<(u16, u16)>,
    area: Rect,
}

impl Menu {
    pub fn new(scopes: &[Scope], anchor: Option<(u16, u16)>) -> Menu {
        let items = keys::visible(scopes)
            .filter(|b| b.menu)
            .map(|b| (b.shown, b.short(), b.action))
            .collect();
        Menu {
            items,
            selected: 0,
            anchor,
            area: Rect::default(),
        }
    }

    fn choose(&self, ctx: &mut Ctx<'_>) {
        ctx.effects.push(Effect::Close);
        if let Some(&(_, _, action)) = self.items.get(self.selected) {
            ctx.effects.push(Effect::Action(action));
        }
    }
}

impl Component for Menu {
    fn scopes(&self) -> &'static [Scope] {
        &[]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return EventState::NotConsumed;
        }
        let n = self.items.len().max(1);
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.selected = (self.selected + n - 1) % n,
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1) % n,
            KeyCode::Enter => self.choose(ctx),
            KeyCode::Esc | KeyCode::F(10) => ctx.effects.push(Effect::Close),
            // The key an entry shows runs it, as it would without the menu.
            KeyCode::Char(c) => {
                let shown = c.to_string();
                if let Some(i) = self.items.iter().position(|(k, _, _)| *k == shown) {
                    self.selected = i;
                    self.choose(ctx);
                }
            }
            _ => {}
        }
        EventState::Consumed
    }

    fn on_action(&mut self, _action: Action, _ctx: &mut Ctx<'_>) -> EventState {
        EventState::Consumed
    }

    fn on_mouse(&mut self, m: &MouseEvent, ctx: &mut Ctx<'_>) -> EventState {
        let a = self.area;
        let inside = m.column > a.x
            && m.column + 1 < a.x + a.width
            && m.row > a.y
            && m.row + 1 < a.y + a.height;
        if !inside {
            return EventState::NotConsumed;
        }
        let pos = usize::from(m.row - a.y - 1);
        match m.kind {
            MouseEventKind::Moved => self.selected = pos,
            MouseEventKind::Down(MouseButton::Left) => {
                self.selected = pos;
                self.choose(ctx);
            }
            _ => {}
        }
        EventState::Consumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        let t = ctx.theme;
        let w = self
            .items
            .iter()
            .map(|(k, h, _)| k.chars().count() + h.chars().count() + 4)
            .max()
            .unwrap_or(10)
            .min(usize::from(area.width.saturating_sub(2)));
        let w = w + 2;
        let (w16, h) = (
            u16::try_from(w).unwrap_or(u16::MAX),
            u16::try_from(self.items.len() + 2).unwrap_or(u16::MAX),
        );
        let rect = match self.anchor {
            Some((x, y)) => Rect {
                x: x.min(area.x + area.width.saturating_sub(w16)),
                y: y.min(area.y + area.height.saturating_sub(h)).max(area.y),
                width: w16.min(area.width),
                height: h.min(area.height),
            },
            None => centered(area, w16, h),
        };
        self.area = rect;
        let lines: Vec<Line<'static>> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, (k, help, _))| {
                let pad = w.saturating_sub(6 + help.chars().count() + k.chars().count());
                let line = Line::from(vec![
                    Span::raw(format!(" {help}{}", " ".repeat(pad))),
                    Span::styled(format!("  {k} "), t.dim),
                ]);
                if i == self.selected {
                    line.style(t.selected)
                } else {
                    line
                }
            })
            .collect();
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(" Actions ", t.title))
            .border_style(t.key)
            .style(t.base);
        f.render_widget(Clear, rect);
        f.render_widget(Paragraph::new(lines).block(block), rect);
    }
}
