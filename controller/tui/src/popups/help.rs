//! The help popup, generated from the key table ([`crate::keys::BINDINGS`]) like the status
//! bar: the current screen's scopes first, then the rest.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::components::{Component, Ctx, DrawCtx, Effect, EventState, centered};
use crate::keys::{self, Action, Scope};

const ALL: [Scope; 7] = [
    Scope::Fleet,
    Scope::Host,
    Scope::Users,
    Scope::Events,
    Scope::Sort,
    Scope::List,
    Scope::Global,
];

#[derive(Debug, Clone)]
pub struct Help {
    /// Scopes in the order shown.
    order: Vec<Scope>,
    scroll: u16,
    lines: u16,
    height: u16,
}

impl Help {
    /// Help for a screen whose scopes are `first`.
    pub fn new(first: &[Scope]) -> Help {
        let mut order: Vec<Scope> = first.to_vec();
        order.extend(ALL.iter().filter(|s| !first.contains(s)));
        Help {
            order,
            scroll: 0,
            lines: 0,
            height: 0,
        }
    }

    fn lines(&self, ctx: &DrawCtx<'_>) -> Vec<Line<'static>> {
        let t = ctx.theme;
        let mut out = Vec::new();
        for scope in &self.order {
            out.push(Line::styled(scope.title().to_owned(), t.header));
            for b in keys::visible(std::slice::from_ref(scope)) {
                out.push(Line::from(vec![
                    Span::styled(format!("  {:<8}", b.shown), t.key),
                    Span::raw(b.help),
                ]));
            }
        }
        out
    }

    fn scroll_by(&mut self, d: i32) {
        let max = i32::from(self.lines.saturating_sub(self.height));
        self.scroll = u16::try_from((i32::from(self.scroll) + d).clamp(0, max)).unwrap_or(0);
    }
}

impl Component for Help {
    fn scopes(&self) -> &'static [Scope] {
        &[]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return EventState::NotConsumed;
        }
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.scroll_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll_by(1),
            KeyCode::PageUp => self.scroll_by(-i32::from(self.height)),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll_by(i32::from(self.height)),
            _ => ctx.effects.push(Effect::Close),
        }
        EventState::Consumed
    }

    fn on_action(&mut self, _action: Action, _ctx: &mut Ctx<'_>) -> EventState {
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
        let lines = self.lines(ctx);
        self.lines = u16::try_from(lines.len()).unwrap_or(u16::MAX);
        let wide = lines.iter().map(Line::width).max().unwrap_or(40);
        let w = u16::try_from(wide + 2).unwrap_or(u16::MAX).max(44);
        let rect = centered(area, w, self.lines.saturating_add(2));
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(
                " Keys (↑↓ scroll, any other key closes) ",
                ctx.theme.title,
            ))
            .border_style(ctx.theme.key)
            .style(ctx.theme.base);
        let inner = block.inner(rect);
        self.height = inner.height;
        self.scroll_by(0);
        f.render_widget(Clear, rect);
        f.render_widget(
            Paragraph::new(lines).block(block).scroll((self.scroll, 0)),
            rect,
        );
    }
}
