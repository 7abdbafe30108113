//! Light and dark colour themes. Every style the screens use comes from here.

use ratatui::style::{Color, Modifier, Style};

/// Which palette; `t` switches at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThemeKind {
    #[default]
    Dark,
    Light,
}

/// The styles of one palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub kind: ThemeKind,
    pub base: Style,
    pub dim: Style,
    pub title: Style,
    pub header: Style,
    pub selected: Style,
    pub border: Style,
    pub key: Style,
    pub ok: Style,
    pub warn: Style,
    pub bad: Style,
    pub tab_active: Style,
    pub input: Style,
}

impl Theme {
    pub fn new(kind: ThemeKind) -> Theme {
        match kind {
            ThemeKind::Dark => Theme::dark(),
            ThemeKind::Light => Theme::light(),
        }
    }

    pub fn dark() -> Theme {
        let base = Style::new().fg(Color::Gray).bg(Color::Black);
        Theme {
            kind: ThemeKind::Dark,
            base,
            dim: base.fg(Color::DarkGray),
            title: base.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            header: base.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            selected: Style::new().fg(Color::Black).bg(Color::Cyan),
            border: base.fg(Color::DarkGray),
            key: base.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            ok: base.fg(Color::Green),
            warn: base.fg(Color::Yellow),
            bad: base.fg(Color::LightRed),
            tab_active: Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
            input: Style::new().fg(Color::White).bg(Color::DarkGray),
        }
    }

    pub fn light() -> Theme {
        let base = Style::new().fg(Color::Black).bg(Color::White);
        Theme {
            kind: ThemeKind::Light,
            base,
            dim: base.fg(Color::DarkGray),
            title: base.fg(Color::Blue).add_modifier(Modifier::BOLD),
            header: base.fg(Color::Magenta).add_modifier(Modifier::BOLD),
            selected: Style::new().fg(Color::White).bg(Color::Blue),
            border: base.fg(Color::Gray),
            key: base.fg(Color::Blue).add_modifier(Modifier::BOLD),
            ok: base.fg(Color::Green),
            warn: base.fg(Color::Rgb(160, 100, 0)),
            bad: base.fg(Color::Red),
            tab_active: Style::new()
                .fg(Color::White)
                .bg(Color::Blue)
                .add_modifier(Modifier::BOLD),
            input: Style::new().fg(Color::Black).bg(Color::Gray),
        }
    }

    /// The other palette.
    pub fn toggled(self) -> Theme {
        match self.kind {
            ThemeKind::Dark => Theme::light(),
            ThemeKind::Light => Theme::dark(),
        }
    }
}

impl Default for Theme {
    fn default() -> Theme {
        Theme::dark()
    }
}

/// A QR code is dark modules on a light ground whatever the theme, or phones cannot read it.
pub const QR: Style = Style::new().fg(Color::Black).bg(Color::White);
