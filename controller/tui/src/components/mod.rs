//! The pieces screens and popups are made of, and the contract between them and the app:
//! a [`Component`] sees an event first when it is on top and answers [`EventState::Consumed`]
//! or lets it bubble to the one below (and finally to the app's global keys), as in gitui.

pub mod input;
pub mod table;

use crossterm::event::{KeyEvent, MouseEvent};
use ratatui::Frame;
use ratatui::layout::Rect;

use crate::keys::{Action, Scope};
use crate::model::Model;
use crate::popups::Popup;
use crate::theme::Theme;
use crate::update::Command;

/// Whether an event was handled or should bubble on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Consumed,
    NotConsumed,
}

impl EventState {
    pub fn consumed(self) -> bool {
        self == EventState::Consumed
    }
}

impl From<bool> for EventState {
    fn from(consumed: bool) -> EventState {
        if consumed {
            EventState::Consumed
        } else {
            EventState::NotConsumed
        }
    }
}

/// What a component asks the app to do beyond its own state.
#[derive(Debug)]
pub enum Effect {
    /// Drill down into a host.
    OpenHost(String),
    /// Leave the host screen.
    Back,
    /// Open a popup on top.
    Open(Popup),
    /// Close the popup on top.
    Close,
    /// Run an action on the screen below (a context-menu choice).
    Action(Action),
    /// A one-line message in the status bar (`true`: an error).
    Message(String, bool),
}

/// What a component may read and ask while handling an event.
pub struct Ctx<'a> {
    pub model: &'a Model,
    pub now: i64,
    pub commands: &'a mut Vec<Command>,
    pub effects: &'a mut Vec<Effect>,
    pub next_id: &'a mut u64,
}

impl Ctx<'_> {
    /// A fresh id for a [`Command`].
    pub fn id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }
}

/// What a component reads while drawing: never the clock, never the network.
pub struct DrawCtx<'a> {
    pub model: &'a Model,
    pub now: i64,
    pub theme: &'a Theme,
}

/// A screen or a popup.
pub trait Component {
    /// The key-table scopes active while this component is on top, most specific first.
    fn scopes(&self) -> &'static [Scope];

    /// Raw keys first (text fields); the default lets them become actions.
    fn on_key(&mut self, _key: &KeyEvent, _ctx: &mut Ctx<'_>) -> EventState {
        EventState::NotConsumed
    }

    /// An action from the key table, the context menu or a click.
    fn on_action(&mut self, action: Action, ctx: &mut Ctx<'_>) -> EventState;

    fn on_mouse(&mut self, _mouse: &MouseEvent, _ctx: &mut Ctx<'_>) -> EventState {
        EventState::NotConsumed
    }

    fn draw(&mut self, f: &mut Frame<'_>, area: Rect, ctx: &DrawCtx<'_>);
}

/// `needle` (already lower case) occurs in `hay`, ignoring ASCII case, without allocating.
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return true;
    }
    if n.len() > h.len() {
        return false;
    }
    // Compare only where the first byte matches: most positions are rejected by one test.
    let (lo, up) = (n[0].to_ascii_lowercase(), n[0].to_ascii_uppercase());
    (0..=h.len() - n.len())
        .any(|i| (h[i] == lo || h[i] == up) && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// A rectangle of at most `w`×`h` centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
