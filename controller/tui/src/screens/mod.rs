//! The screens: one file each. A new screen is one file here, one [`ScreenId`] variant and one
//! field in [`Screens`].

pub mod events;
pub mod fleet;
pub mod host;
pub mod users;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::components::{Component, DrawCtx};

/// The top-level screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenId {
    Fleet,
    Users,
    Events,
}

impl ScreenId {
    pub const ALL: [ScreenId; 3] = [ScreenId::Fleet, ScreenId::Users, ScreenId::Events];

    pub fn title(self) -> &'static str {
        match self {
            ScreenId::Fleet => "1 Fleet",
            ScreenId::Users => "2 Users",
            ScreenId::Events => "3 Events",
        }
    }
}

/// Every screen's state; switching screens keeps each one's filter, sort and selection.
pub struct Screens {
    pub current: ScreenId,
    /// The host drilled into from the fleet screen, drawn over it.
    pub host: Option<host::HostScreen>,
    pub fleet: fleet::FleetScreen,
    pub users: users::UsersScreen,
    pub events: events::EventsScreen,
}

impl Default for Screens {
    fn default() -> Self {
        Screens {
            current: ScreenId::Fleet,
            host: None,
            fleet: fleet::FleetScreen::default(),
            users: users::UsersScreen::default(),
            events: events::EventsScreen::default(),
        }
    }
}

impl Screens {
    /// The screen that gets events and is drawn.
    pub fn top(&mut self) -> &mut dyn Component {
        match self.current {
            ScreenId::Fleet => match &mut self.host {
                Some(h) => h,
                None => &mut self.fleet,
            },
            ScreenId::Users => &mut self.users,
            ScreenId::Events => &mut self.events,
        }
    }
}

/// A title line above a table and the rest.
pub fn split_title(area: Rect) -> [Rect; 2] {
    let head = Rect {
        height: 1.min(area.height),
        ..area
    };
    let body = Rect {
        y: area.y + head.height,
        height: area.height - head.height,
        ..area
    };
    [head, body]
}

/// `summary` on the left; the filter (with a cursor while typing) on the right.
pub fn title_line(
    f: &mut Frame<'_>,
    area: Rect,
    summary: &str,
    filter: &str,
    editing: bool,
    ctx: &DrawCtx<'_>,
) {
    let t = ctx.theme;
    let mut spans = vec![Span::styled(summary.to_owned(), t.title)];
    if editing || !filter.is_empty() {
        spans.push(Span::styled("  / ", t.key));
        let shown = if editing {
            format!("{filter}▏")
        } else {
            filter.to_owned()
        };
        spans.push(Span::styled(shown, if editing { t.input } else { t.warn }));
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(t.base), area);
}
