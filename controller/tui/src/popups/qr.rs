//! A user's links, one per server and service, each as a QR code in unicode half blocks — dark
//! modules on a light ground whatever the theme, so a phone reads it — or as text when the
//! terminal is too small for the code.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use qrcode::{Color as Module, QrCode};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use vpn_shared::proto::admin::LinkInfo;

use crate::components::{Component, Ctx, DrawCtx, Effect, EventState, centered};
use crate::keys::{Action, Scope};
use crate::theme;

/// Modules of light border around the code (scanners want some).
const QUIET: usize = 2;

#[derive(Debug, Clone)]
pub enum Links {
    Loading,
    Failed(String),
    Ready(Vec<LinkInfo>),
}

#[derive(Debug, Clone)]
pub struct QrPopup {
    /// The [`crate::Command::FetchLinks`] this popup waits for.
    pub id: u64,
    pub user: String,
    pub links: Links,
    pub index: usize,
    /// The rendered code of `index`: (index, lines).
    cache: Option<(usize, Result<Vec<String>, String>)>,
}

/// The QR code of `data` as half-block lines: `▀` is a dark upper and a light lower module.
/// Error correction level L: a screen is not a worn sticker, and the smaller code lets a
/// Shadowsocks link of about 100 characters (37 modules) fit an 80×24 terminal.
pub fn qr_lines(data: &str) -> Result<Vec<String>, String> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| e.to_string())?;
    let w = code.width();
    let colors = code.to_colors();
    let size = w + 2 * QUIET;
    let dark = |x: usize, y: usize| {
        x >= QUIET
            && y >= QUIET
            && x < QUIET + w
            && y < QUIET + w
            && colors[(y - QUIET) * w + (x - QUIET)] == Module::Dark
    };
    let mut lines = Vec::with_capacity(size.div_ceil(2));
    for row in (0..size).step_by(2) {
        let line: String = (0..size)
            .map(|x| match (dark(x, row), dark(x, row + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            })
            .collect();
        lines.push(line);
    }
    Ok(lines)
}

impl QrPopup {
    pub fn new(id: u64, user: String) -> QrPopup {
        QrPopup {
            id,
            user,
            links: Links::Loading,
            index: 0,
            cache: None,
        }
    }

    /// The backend's answer; `false` when it was for another request.
    pub fn on_links(&mut self, id: u64, result: &Result<Vec<LinkInfo>, String>) -> bool {
        if id != self.id {
            return false;
        }
        self.links = match result {
            Ok(l) => Links::Ready(l.clone()),
            Err(e) => Links::Failed(e.clone()),
        };
        self.index = 0;
        self.cache = None;
        true
    }

    fn count(&self) -> usize {
        match &self.links {
            Links::Ready(l) => l.len(),
            _ => 0,
        }
    }

    /// The title and the lines to show in `area`; `true` when they are a QR code.
    fn body(&mut self, area: Rect, ctx: &DrawCtx<'_>) -> (String, Vec<Line<'static>>, bool) {
        let t = ctx.theme;
        let title = format!(" Links of {} ", self.user);
        let link = match &self.links {
            Links::Loading => return (title, vec![Line::styled("fetching links…", t.dim)], false),
            Links::Failed(e) => {
                return (
                    title,
                    vec![Line::styled(format!("no links: {e}"), t.bad)],
                    false,
                );
            }
            Links::Ready(l) if l.is_empty() => {
                let text = "no links: the user has no service on any server yet";
                return (title, vec![Line::styled(text, t.warn)], false);
            }
            Links::Ready(l) => l[self.index.min(l.len() - 1)].clone(),
        };
        let title = format!(
            " {} · {} {} ({}) {}/{} ",
            self.user,
            link.server,
            link.service,
            link.protocol,
            self.index + 1,
            self.count()
        );
        if self.cache.as_ref().map(|c| c.0) != Some(self.index) {
            self.cache = Some((self.index, qr_lines(&link.url)));
        }
        let code = match self.cache.as_ref().map(|c| &c.1) {
            Some(Ok(lines)) => lines.clone(),
            Some(Err(e)) => {
                let lines = vec![
                    Line::raw(link.url),
                    Line::styled(format!("(no QR code: {e})"), t.bad),
                ];
                return (title, lines, false);
            }
            None => Vec::new(),
        };
        let cols = code.first().map_or(0, |l| l.chars().count());
        let fits =
            cols + 2 <= usize::from(area.width) && code.len() + 2 <= usize::from(area.height);
        if fits {
            let lines = code
                .into_iter()
                .map(|l| Line::styled(l, theme::QR))
                .collect();
            (title, lines, true)
        } else {
            let lines = vec![
                Line::raw(link.url),
                Line::raw(""),
                Line::styled(
                    format!(
                        "terminal too small for the QR code ({}×{} needed)",
                        cols + 2,
                        code.len() + 2
                    ),
                    t.dim,
                ),
            ];
            (title, lines, false)
        }
    }
}

impl Component for QrPopup {
    fn scopes(&self) -> &'static [Scope] {
        &[]
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Ctx<'_>) -> EventState {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return EventState::NotConsumed;
        }
        let n = self.count().max(1);
        match key.code {
            KeyCode::Right | KeyCode::Tab | KeyCode::Char('l') | KeyCode::Down => {
                self.index = (self.index + 1) % n;
            }
            KeyCode::Left | KeyCode::BackTab | KeyCode::Char('h') | KeyCode::Up => {
                self.index = (self.index + n - 1) % n;
            }
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => ctx.effects.push(Effect::Close),
            _ => {}
        }
        EventState::Consumed
    }

    fn on_action(&mut self, _action: Action, _ctx: &mut Ctx<'_>) -> EventState {
        EventState::Consumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>) {
        let (title, lines, is_code) = self.body(area, ctx);
        let wide = lines
            .iter()
            .map(Line::width)
            .max()
            .unwrap_or(20)
            .max(title.chars().count() + 2);
        let w = u16::try_from(wide + 2).unwrap_or(u16::MAX).max(40);
        let h = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
        let rect = if is_code {
            centered(area, w, h)
        } else {
            centered(area, area.width.saturating_sub(4).min(76), h.max(6))
        };
        let block = Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(title, ctx.theme.title))
            .title_bottom(Span::styled(" ←→ other links · Esc close ", ctx.theme.dim))
            .border_style(ctx.theme.key)
            .style(ctx.theme.base);
        f.render_widget(Clear, rect);
        let p = Paragraph::new(lines).block(block);
        let p = if is_code {
            p
        } else {
            p.wrap(Wrap { trim: false })
        };
        f.render_widget(p, rect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadowsocks_link_as_the_fleet_prints_it_fits_an_80_by_24_terminal() {
        // SIP002 as `vpn users link` prints it: base64 of method and a 24-character password,
        // the host's address and the user's port, the user's name as the tag (97 characters).
        let link = "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpxN0t2WjJtUHhMOWNUNHdSYjFuRThzQWQ@10.77.0.2:20000#alice-edge-1";
        assert_eq!(link.len(), 97);
        let lines = qr_lines(link).unwrap();
        // With the popup's border: 2 more each way.
        assert!(lines.len() + 2 <= 24, "{} rows", lines.len() + 2);
        assert!(lines[0].chars().count() + 2 <= 80);
    }
}
