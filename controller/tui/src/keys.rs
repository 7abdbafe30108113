//! The one key table: key → [`Action`] per [`Scope`]. The status bar, the help popup and the
//! context menu are all generated from [`BINDINGS`], so what they show is what the keys do.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key (or a context-menu entry, or a click) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Menu,
    Theme,
    FleetScreen,
    UsersScreen,
    EventsScreen,
    NextScreen,
    Back,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Filter,
    SortNext,
    SortReverse,
    Open,
    AddUser,
    EditUser,
    ToggleSuspend,
    DeleteUser,
    ShowQr,
    Follow,
}

/// Where a binding applies. A screen lists its scopes, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Fleet,
    Host,
    Users,
    Events,
    /// Every screen with a list (moving, filter).
    List,
    /// Tables that sort (fleet, users).
    Sort,
    Global,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Fleet => "Fleet",
            Scope::Host => "Host",
            Scope::Users => "Users",
            Scope::Events => "Events",
            Scope::List => "Lists",
            Scope::Sort => "Tables",
            Scope::Global => "Everywhere",
        }
    }
}

/// A key with its modifiers (Shift is ignored for characters: `S` arrives as Shift+`S`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const fn k(c: char) -> Key {
    Key {
        code: KeyCode::Char(c),
        mods: KeyModifiers::NONE,
    }
}

const fn code(code: KeyCode) -> Key {
    Key {
        code,
        mods: KeyModifiers::NONE,
    }
}

impl Key {
    pub fn matches(&self, ev: &KeyEvent) -> bool {
        match ev.code {
            KeyCode::Char(_) => {
                let ignore = KeyModifiers::SHIFT;
                self.code == ev.code && (self.mods - ignore) == (ev.modifiers - ignore)
            }
            _ => self.code == ev.code && self.mods == ev.modifiers,
        }
    }
}

/// One row of the key table.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in the bar and the help (`/`, `↑↓`, `F10`).
    pub shown: &'static str,
    pub action: Action,
    pub scope: Scope,
    pub help: &'static str,
    /// Shown in the status bar.
    pub bar: bool,
    /// Offered in the context menu.
    pub menu: bool,
}

const fn b(
    keys: &'static [Key],
    shown: &'static str,
    action: Action,
    scope: Scope,
    help: &'static str,
    bar: bool,
    menu: bool,
) -> Binding {
    Binding {
        keys,
        shown,
        action,
        scope,
        help,
        bar,
        menu,
    }
}

use Action as A;
use Scope as S;

/// Every key the TUI knows. Order: as the bar and the help list them.
pub const BINDINGS: &[Binding] = &[
    b(
        &[code(KeyCode::Enter)],
        "Enter",
        A::Open,
        S::Fleet,
        "open (drill down into the host)",
        true,
        true,
    ),
    b(
        &[code(KeyCode::Esc)],
        "Esc",
        A::Back,
        S::Host,
        "back (to the fleet)",
        true,
        true,
    ),
    b(
        &[k('a')],
        "a",
        A::AddUser,
        S::Users,
        "add (a user, in a form)",
        true,
        true,
    ),
    b(
        &[k('e'), code(KeyCode::Enter)],
        "e",
        A::EditUser,
        S::Users,
        "edit (the selected user)",
        true,
        true,
    ),
    b(
        &[k('p')],
        "p",
        A::ToggleSuspend,
        S::Users,
        "suspend/resume (the selected user)",
        true,
        true,
    ),
    b(
        &[k('d'), code(KeyCode::Delete)],
        "d",
        A::DeleteUser,
        S::Users,
        "delete (the selected user, after a question)",
        true,
        true,
    ),
    b(
        &[k('l')],
        "l",
        A::ShowQr,
        S::Users,
        "QR (the user's links as QR codes)",
        true,
        true,
    ),
    b(
        &[k('f')],
        "f",
        A::Follow,
        S::Events,
        "follow (keep the newest event in view)",
        true,
        true,
    ),
    b(
        &[k('/')],
        "/",
        A::Filter,
        S::List,
        "filter (type; Enter keeps it while you move, Esc clears)",
        true,
        true,
    ),
    b(
        &[code(KeyCode::Esc)],
        "Esc",
        A::Back,
        S::List,
        "clear the filter",
        false,
        false,
    ),
    b(
        &[k('s')],
        "s",
        A::SortNext,
        S::Sort,
        "sort (by the next column; click a header too)",
        true,
        true,
    ),
    b(
        &[k('S')],
        "S",
        A::SortReverse,
        S::Sort,
        "reverse the sort",
        false,
        true,
    ),
    b(
        &[code(KeyCode::Up), k('k')],
        "↑/k",
        A::Up,
        S::List,
        "up",
        false,
        false,
    ),
    b(
        &[code(KeyCode::Down), k('j')],
        "↓/j",
        A::Down,
        S::List,
        "down",
        false,
        false,
    ),
    b(
        &[code(KeyCode::PageUp)],
        "PgUp",
        A::PageUp,
        S::List,
        "page up",
        false,
        false,
    ),
    b(
        &[code(KeyCode::PageDown)],
        "PgDn",
        A::PageDown,
        S::List,
        "page down",
        false,
        false,
    ),
    b(
        &[code(KeyCode::Home), k('g')],
        "Home/g",
        A::Top,
        S::List,
        "first row",
        false,
        false,
    ),
    b(
        &[code(KeyCode::End), k('G')],
        "End/G",
        A::Bottom,
        S::List,
        "last row",
        false,
        false,
    ),
    b(
        &[code(KeyCode::Up), k('k')],
        "↑/k",
        A::Up,
        S::Host,
        "scroll up",
        false,
        false,
    ),
    b(
        &[code(KeyCode::Down), k('j')],
        "↓/j",
        A::Down,
        S::Host,
        "scroll down",
        false,
        false,
    ),
    b(
        &[code(KeyCode::PageUp)],
        "PgUp",
        A::PageUp,
        S::Host,
        "page up",
        false,
        false,
    ),
    b(
        &[code(KeyCode::PageDown)],
        "PgDn",
        A::PageDown,
        S::Host,
        "page down",
        false,
        false,
    ),
    b(
        &[k('1')],
        "1",
        A::FleetScreen,
        S::Global,
        "fleet screen",
        false,
        true,
    ),
    b(
        &[k('2')],
        "2",
        A::UsersScreen,
        S::Global,
        "users screen",
        false,
        true,
    ),
    b(
        &[k('3')],
        "3",
        A::EventsScreen,
        S::Global,
        "events screen",
        false,
        true,
    ),
    b(
        &[code(KeyCode::Tab)],
        "Tab",
        A::NextScreen,
        S::Global,
        "next screen",
        false,
        false,
    ),
    b(
        &[k('t')],
        "t",
        A::Theme,
        S::Global,
        "light / dark theme",
        false,
        true,
    ),
    b(
        &[
            code(KeyCode::F(10)),
            Key {
                code: KeyCode::F(10),
                mods: KeyModifiers::SHIFT,
            },
            Key {
                code: KeyCode::Char('m'),
                mods: KeyModifiers::NONE,
            },
        ],
        "F10/m",
        A::Menu,
        S::Global,
        "menu (context menu; also Shift-F10, right click)",
        true,
        false,
    ),
    b(
        &[k('?'), code(KeyCode::F(1))],
        "?",
        A::Help,
        S::Global,
        "help",
        true,
        false,
    ),
    b(
        &[
            k('q'),
            Key {
                code: KeyCode::Char('c'),
                mods: KeyModifiers::CONTROL,
            },
        ],
        "q",
        A::Quit,
        S::Global,
        "quit",
        true,
        true,
    ),
];

impl Binding {
    /// The help text up to its explanation: what the status bar shows.
    pub fn short(&self) -> &'static str {
        self.help.split(" (").next().unwrap_or(self.help)
    }
}

/// The action `key` means in the first of `scopes` that binds it.
pub fn lookup(scopes: &[Scope], key: &KeyEvent) -> Option<Action> {
    scopes.iter().find_map(|scope| {
        BINDINGS
            .iter()
            .filter(|b| b.scope == *scope)
            .find(|b| b.keys.iter().any(|k| k.matches(key)))
            .map(|b| b.action)
    })
}

/// The bindings of `scopes` in table order, each action once (its first binding).
pub fn visible(scopes: &[Scope]) -> impl Iterator<Item = &'static Binding> + '_ {
    scopes.iter().flat_map(|scope| {
        BINDINGS
            .iter()
            .filter(move |b| b.scope == *scope)
            .enumerate()
            .filter(move |(i, b)| {
                !BINDINGS
                    .iter()
                    .filter(|o| o.scope == *scope)
                    .take(*i)
                    .any(|o| o.action == b.action)
            })
            .map(|(_, b)| b)
    })
}
