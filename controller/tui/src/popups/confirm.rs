//! A yes/no question before something that cannot be undone (deleting a user).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use crate::components::{Component, Ctx, DrawCtx, Effect, EventState, centered};
use crate::keys::{Action, Scope};
use crate::update::Command;

#[derive(Debug, Clone)]
pub struct Confirm {
    pub user: String,
}

impl Confirm {
    pub fn delete_user(user: String) -> Confirm {
        Confirm { user }
    }
}

impl Component for Confirm {
    fn scopes(&self) -> &'static [Scope] {
        &[]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return EventState::NotConsumed;
        }
        match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => {
                let id = ctx.id();
                ctx.commands.push(Command::DeleteUser {
                    id,
                    name: self.user.clone(),
                });
                ctx.effects.push(Effect::Close);
                ctx.effects
                    .push(Effect::Message(format!("deleting {}…", self.user), false));
            }
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                ctx.effects.push(Effect::Close);
            }
            _ => {}
        }
        EventState::Consumed
    }

    fn on_action(&mut self, _action: Action, _ctx: &mut Ctx<'_>) -> EventState {
        EventState::Consumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        let t = ctx.theme;
        let rect = centered(area, 56, 7);
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(" Delete user ", t.title))
            .border_style(t.bad)
            .style(t.base);
        let text = vec![
            Line::from(vec![
                Span::raw("Delete "),
                Span::styled(self.user.clone(), t.title),
                Span::raw("? Its links stop working on every server."),
            ]),
            Line::raw(""),
            Line::from(vec![
                Span::styled("y", t.key),
                Span::raw(" delete   "),
                Span::styled("n", t.key),
                Span::raw("/Esc keep"),
            ]),
        ];
        f.render_widget(Clear, rect);
        f.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
            rect,
        );
    }
}
