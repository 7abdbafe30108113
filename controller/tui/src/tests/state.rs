//! Key-driven state tests: filter, sort, drill down, forms, context menu, commands — no
//! terminal, no clock, no network.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton};
use vpn_shared::model::Bandwidth;
use vpn_shared::proto::admin::{HostState, Quota, Reset, Servers, When};

use super::fixtures::*;
use crate::popups::Popup;
use crate::popups::form::field;
use crate::screens::ScreenId;
use crate::{Command, Connection, Event, Update};

fn fleet_rows(app: &mut crate::App) -> Vec<String> {
    let hosts = &app.model.hosts;
    let t = &mut app.screens.fleet.table;
    t.refresh(hosts);
    (0..t.len())
        .filter_map(|i| {
            let saved = t.selected;
            t.selected = i;
            let name = t.selected_item(&hosts.items).map(|h| h.name().to_owned());
            t.selected = saved;
            name
        })
        .collect()
}

fn selected_host(app: &crate::App) -> Option<String> {
    let hosts = &app.model.hosts;
    app.screens
        .fleet
        .table
        .selected_item(&hosts.items)
        .map(|h| h.name().to_owned())
}

#[test]
fn the_filter_narrows_the_fleet_and_stays_while_moving() {
    let mut a = app();
    key(&mut a, '/');
    type_str(&mut a, "a");
    assert_eq!(
        fleet_rows(&mut a),
        ["ams-2", "fra-1"],
        "hosts whose text holds an a"
    );
    press(&mut a, KeyCode::Down);
    assert_eq!(selected_host(&a).as_deref(), Some("fra-1"));
    press(&mut a, KeyCode::Enter);
    assert!(!a.screens.fleet.table.editing, "Enter ends typing");
    key(&mut a, 'k');
    assert_eq!(
        selected_host(&a).as_deref(),
        Some("ams-2"),
        "k moves, not types"
    );
    assert_eq!(a.screens.fleet.table.filter.value, "a", "the filter stays");
    press(&mut a, KeyCode::Esc);
    assert_eq!(fleet_rows(&mut a).len(), 5, "Esc clears it");
}

#[test]
fn sorting_cycles_columns_and_reverses_and_a_header_click_sorts() {
    let mut a = app();
    assert_eq!(
        fleet_rows(&mut a),
        ["ams-2", "fra-1", "lon-5", "nyc-3", "sgp-4"]
    );
    key(&mut a, 's');
    assert_eq!(a.screens.fleet.table.sort_label(), "status ▲");
    assert_eq!(
        fleet_rows(&mut a)[..2],
        ["nyc-3", "ams-2"],
        "problems first"
    );
    key(&mut a, 'S');
    assert_eq!(a.screens.fleet.table.sort_label(), "status ▼");
    assert_eq!(
        fleet_rows(&mut a)[..2],
        ["fra-1", "lon-5"],
        "ties stay by name"
    );
    // Draw once so the table knows where its header is, then click "RX bit/s".
    let screen = text(&mut a, 160, 48);
    let header = screen.lines().nth(2).unwrap_or_default();
    let Some(x) = header.find("RX bit/s") else {
        panic!("no RX column in {header:?}");
    };
    let col = u16::try_from(header[..x].chars().count()).unwrap_or(0);
    click(&mut a, MouseButton::Left, col, 2);
    assert_eq!(a.screens.fleet.table.sort_label(), "rx bit/s ▲");
    click(&mut a, MouseButton::Left, col, 2);
    assert_eq!(a.screens.fleet.table.sort_label(), "rx bit/s ▼");
    assert_eq!(fleet_rows(&mut a)[0], "fra-1", "the busiest host first");
}

#[test]
fn enter_drills_down_and_esc_comes_back() {
    let mut a = app();
    key(&mut a, 'j');
    press(&mut a, KeyCode::Enter);
    assert_eq!(a.open_host(), Some("fra-1"));
    let screen = text(&mut a, 80, 24);
    assert!(screen.contains("Services (2)"), "{screen}");
    press(&mut a, KeyCode::Esc);
    assert_eq!(a.open_host(), None);
    assert_eq!(
        selected_host(&a).as_deref(),
        Some("fra-1"),
        "selection kept"
    );
}

#[test]
fn a_double_click_drills_down() {
    let mut a = app();
    text(&mut a, 80, 24);
    // Row 3 is the first host (tabs, title, header above it).
    click(&mut a, MouseButton::Left, 5, 4);
    assert_eq!(selected_host(&a).as_deref(), Some("fra-1"));
    assert_eq!(a.open_host(), None);
    click(&mut a, MouseButton::Left, 5, 4);
    assert_eq!(a.open_host(), Some("fra-1"));
}

#[test]
fn the_selection_follows_its_host_across_updates() {
    let mut a = app();
    key(&mut a, 'G');
    assert_eq!(selected_host(&a).as_deref(), Some("sgp-4"));
    let mut new = server("aaa-0", HostState::Online);
    new.server.users = 1;
    a.handle(Event::Update(Update::HostChanged(new)));
    assert_eq!(selected_host(&a).as_deref(), Some("sgp-4"));
    a.handle(Event::Update(Update::HostRemoved("ams-2".into())));
    assert_eq!(selected_host(&a).as_deref(), Some("sgp-4"));
    assert_eq!(fleet_rows(&mut a).len(), 5);
}

#[test]
fn rates_fill_live_columns_and_missing_figures_say_so() {
    let mut a = app();
    let screen = text(&mut a, 160, 48);
    let fra = screen
        .lines()
        .find(|l| l.starts_with("fra-1"))
        .unwrap_or_default();
    assert!(fra.contains("23.4M"), "{fra}");
    assert!(fra.contains('—'), "cpu/mem not reported: {fra}");
    let lon = screen
        .lines()
        .find(|l| l.starts_with("lon-5"))
        .unwrap_or_default();
    assert!(!lon.contains('%'), "no made-up cpu: {lon}");
    let ams = screen
        .lines()
        .find(|l| l.starts_with("ams-2"))
        .unwrap_or_default();
    assert!(ams.contains("37%") && ams.contains("61%"), "{ams}");
}

#[test]
fn a_host_left_out_of_the_rates_shows_no_figures_instead_of_its_last_ones() {
    let mut a = app();
    // fra-1 goes offline: the next rates name ams-2 alone.
    let Update::Rates(mut only_ams) = rates(1) else {
        unreachable!()
    };
    only_ams.retain(|r| r.host == "ams-2");
    a.handle(Event::Update(Update::Rates(only_ams)));
    let screen = text(&mut a, 160, 48);
    let fra = screen
        .lines()
        .find(|l| l.starts_with("fra-1"))
        .unwrap_or_default();
    assert!(!fra.contains('M'), "no stale rate: {fra}");
    assert!(fra.contains('—'), "{fra}");
}

#[test]
fn the_add_form_shows_errors_and_sends_nothing_until_they_are_fixed() {
    let mut a = app();
    key(&mut a, '2');
    assert_eq!(a.screen(), ScreenId::Users);
    key(&mut a, 'a');
    type_str(&mut a, "alice");
    for _ in 0..field::LIMIT {
        press(&mut a, KeyCode::Tab);
    }
    type_str(&mut a, "50G");
    let cmds = press(&mut a, KeyCode::Enter);
    assert!(cmds.is_empty(), "{cmds:?}");
    let Some(Popup::Form(form)) = a.popup() else {
        panic!("the form closed");
    };
    let errors = form.errors();
    assert_eq!(errors[0], ("Name", "user alice already exists".into()));
    assert_eq!(errors[1].0, "Data limit");
    assert!(errors[1].1.contains("ambiguous"), "{errors:?}");
    assert_eq!(form.focus, field::NAME, "focus goes to the first error");

    // Fix both and add an expiry.
    for _ in 0..5 {
        press(&mut a, KeyCode::Backspace);
    }
    type_str(&mut a, "zoe");
    for _ in 0..field::LIMIT {
        press(&mut a, KeyCode::Tab);
    }
    type_str(&mut a, "iB");
    for _ in field::LIMIT..field::EXPIRES {
        press(&mut a, KeyCode::Tab);
    }
    type_str(&mut a, "30d");
    let cmds = press(&mut a, KeyCode::Enter);
    let [Command::AddUser { id, add, quota }] = &cmds[..] else {
        panic!("{cmds:?}");
    };
    assert_eq!(add.name, "zoe");
    assert_eq!(add.servers, Servers::All);
    assert_eq!(add.protocols, None);
    assert_eq!(add.bandwidth, Bandwidth::default());
    assert_eq!(
        *quota,
        Quota {
            data_limit: Some(50 << 30),
            reset: Reset::Never,
            expires: Some(When::In(30 * DAY)),
            on_hold: None,
        }
    );
    // The controller refuses: the form stays and shows why; then it accepts.
    let id = *id;
    a.handle(Event::Update(Update::CommandResult {
        id,
        result: Err("server fra-1 is full".into()),
    }));
    let Some(Popup::Form(form)) = a.popup() else {
        panic!("the form closed on an error");
    };
    assert_eq!(form.error.as_deref(), Some("server fra-1 is full"));
    let cmds = press(&mut a, KeyCode::Enter);
    let [Command::AddUser { id, .. }] = &cmds[..] else {
        panic!("{cmds:?}");
    };
    a.handle(Event::Update(Update::CommandResult {
        id: *id,
        result: Ok("user zoe added".into()),
    }));
    assert!(a.popup().is_none());
    assert!(text(&mut a, 80, 24).contains("user zoe added"));
}

#[test]
fn the_edit_form_sends_only_what_changed() {
    let mut a = app();
    key(&mut a, '2');
    key(&mut a, 'e');
    let Some(Popup::Form(form)) = a.popup() else {
        panic!("no form");
    };
    assert_eq!(form.value(field::LIMIT), "50 GiB");
    // Focus starts on Email; go to the data limit and clear it.
    assert_eq!(form.focus, field::EMAIL);
    press(&mut a, KeyCode::Tab); // Servers and protocols are not editable: on to the limit.
    a.handle(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    let cmds = press(&mut a, KeyCode::Enter);
    let [Command::EditUser { edit, quota, .. }] = &cmds[..] else {
        panic!("{cmds:?}");
    };
    assert_eq!(edit.name, "alice");
    assert_eq!(edit.email, None);
    assert_eq!(edit.bandwidth, None);
    assert_eq!(quota.data_limit, Some(None), "limit removed");
    assert_eq!(quota.reset, None);
    assert_eq!(quota.expires, None);
}

#[test]
fn suspend_resume_delete_and_links_become_commands() {
    let mut a = app();
    key(&mut a, '2');
    let cmds = key(&mut a, 'p');
    assert!(matches!(&cmds[..], [Command::SuspendUser { name, .. }] if name == "alice"));
    key(&mut a, 'j');
    let cmds = key(&mut a, 'p');
    assert!(
        matches!(&cmds[..], [Command::ResumeUser { name, .. }] if name == "bob"),
        "bob is suspended"
    );
    let cmds = key(&mut a, 'd');
    assert!(cmds.is_empty(), "delete asks first");
    assert_eq!(a.popup().map(Popup::kind), Some("confirm"));
    let cmds = key(&mut a, 'n');
    assert!(cmds.is_empty());
    assert!(a.popup().is_none());
    key(&mut a, 'd');
    let cmds = key(&mut a, 'y');
    assert!(matches!(&cmds[..], [Command::DeleteUser { name, .. }] if name == "bob"));
    let cmds = key(&mut a, 'l');
    let [Command::FetchLinks { id, name }] = &cmds[..] else {
        panic!("{cmds:?}");
    };
    assert_eq!(name, "bob");
    let id = *id;
    a.handle(Event::Update(Update::Links {
        id,
        user: "bob".into(),
        result: Ok(links()),
    }));
    let screen = text(&mut a, 160, 48);
    assert!(screen.contains("fra-1 ss (shadowsocks) 1/2"), "{screen}");
    assert!(
        screen.contains('▀') || screen.contains('▄'),
        "a QR code: {screen}"
    );
}

#[test]
fn f10_shift_f10_and_right_click_open_the_context_menu() {
    let mut a = app();
    press(&mut a, KeyCode::F(10));
    assert_eq!(a.popup().map(Popup::kind), Some("menu"));
    press(&mut a, KeyCode::Esc);
    assert!(a.popup().is_none());
    a.handle(Event::Key(KeyEvent::new(
        KeyCode::F(10),
        KeyModifiers::SHIFT,
    )));
    assert_eq!(a.popup().map(Popup::kind), Some("menu"));
    // The first entry on the fleet screen opens the selected host.
    press(&mut a, KeyCode::Enter);
    assert!(a.popup().is_none());
    assert_eq!(a.open_host(), Some("ams-2"));
    press(&mut a, KeyCode::Esc);

    text(&mut a, 80, 24);
    click(&mut a, MouseButton::Right, 5, 5);
    assert_eq!(
        selected_host(&a).as_deref(),
        Some("lon-5"),
        "right click selects the row"
    );
    let Some(Popup::Menu(menu)) = a.popup() else {
        panic!("no menu");
    };
    let sort = menu
        .items
        .iter()
        .position(|(_, _, act)| *act == crate::keys::Action::SortNext);
    let Some(sort) = sort else {
        panic!("no sort entry in {:?}", menu.items);
    };
    for _ in 0..sort {
        press(&mut a, KeyCode::Down);
    }
    press(&mut a, KeyCode::Enter);
    assert_eq!(a.screens.fleet.table.sort_label(), "status ▲");

    // Inside the menu, the key an entry shows runs that entry.
    press(&mut a, KeyCode::F(10));
    key(&mut a, 's');
    assert!(a.popup().is_none());
    assert_eq!(a.screens.fleet.table.sort_label(), "version ▲");
}

#[test]
fn help_lists_every_binding_of_the_key_table() {
    let mut a = app();
    key(&mut a, '?');
    assert_eq!(a.popup().map(Popup::kind), Some("help"));
    let mut seen = String::new();
    for _ in 0..10 {
        seen.push_str(&text(&mut a, 160, 48));
        press(&mut a, KeyCode::PageDown);
    }
    for b in crate::keys::BINDINGS {
        assert!(seen.contains(b.help), "help lacks {:?}", b.help);
    }
    key(&mut a, 'x');
    assert!(a.popup().is_none());
}

#[test]
fn disconnected_shows_a_countdown_and_keys_keep_working() {
    let mut a = app();
    a.handle(Event::Update(Update::Disconnected {
        reason: "timed out".into(),
        retry_in: Some(Duration::from_secs(5)),
    }));
    assert!(text(&mut a, 80, 24).contains("retrying in 5 s"));
    a.handle(Event::Tick(NOW + 3));
    assert!(text(&mut a, 80, 24).contains("retrying in 2 s"));
    key(&mut a, '2');
    assert_eq!(a.screen(), ScreenId::Users);
    a.handle(Event::Update(Update::Connected));
    assert_eq!(*a.connection(), Connection::Connected);
    assert!(!text(&mut a, 80, 24).contains("retrying"));
}

#[test]
fn events_follow_and_search() {
    let mut a = app();
    key(&mut a, '3');
    assert!(a.screens.events.follow);
    key(&mut a, 'k');
    assert!(!a.screens.events.follow, "moving up pauses");
    key(&mut a, 'f');
    assert!(a.screens.events.follow);
    key(&mut a, '/');
    type_str(&mut a, "bob");
    press(&mut a, KeyCode::Enter);
    assert_eq!(a.screens.events.len(), 1);
    a.handle(Event::Update(Update::Event(crate::FleetEvent {
        host: "fra-1".into(),
        event: vpn_shared::proto::admin::HostEvent {
            at: NOW,
            kind: "failing".into(),
            resource: Some("user/bob@vless".into()),
            message: "no such user".into(),
        },
    })));
    let screen = text(&mut a, 80, 24);
    assert!(screen.contains("no such user"), "{screen}");
    assert_eq!(a.screens.events.len(), 2);
}

#[test]
fn q_quits_once_and_t_switches_the_theme() {
    let mut a = app();
    key(&mut a, 't');
    assert_eq!(a.theme().kind, crate::ThemeKind::Light);
    let cmds = key(&mut a, 'q');
    assert_eq!(cmds, [Command::Quit]);
    assert!(a.should_quit());
}

#[test]
fn typing_in_the_filter_does_not_trigger_keys() {
    let mut a = app();
    key(&mut a, '/');
    let cmds = key(&mut a, 'q');
    assert!(cmds.is_empty());
    assert!(!a.should_quit());
    assert_eq!(a.screens.fleet.table.filter.value, "q");
}

#[test]
fn a_patched_view_equals_a_rebuilt_one() {
    use crate::screens::users::UsersScreen;
    let mut a = app();
    key(&mut a, '2');
    // Sort by used (desc), filter on "e": changes move rows across the order and the filter.
    key(&mut a, 's');
    key(&mut a, 's');
    key(&mut a, 'S');
    key(&mut a, '/');
    type_str(&mut a, "e");
    press(&mut a, KeyCode::Enter);
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    for round in 0..300u32 {
        // Now and then a new sort or filter between the changes and the next frame.
        match next() % 10 {
            0 => {
                key(&mut a, 's');
            }
            1 => {
                key(&mut a, 'S');
            }
            2 => {
                key(&mut a, '/');
                press(&mut a, KeyCode::Backspace);
                type_str(&mut a, ["e", "u1", "", "sus"][(next() % 4) as usize]);
                press(&mut a, KeyCode::Enter);
            }
            _ => {}
        }
        for _ in 0..(next() % 5 + 1) {
            let n = next();
            let name = format!("u{}", n % 40);
            if n.is_multiple_of(7) {
                a.handle(Event::Update(Update::UserRemoved(name)));
            } else {
                let status = if n.is_multiple_of(3) {
                    "active"
                } else {
                    "suspended"
                };
                let used = next() % 1_000;
                a.handle(Event::Update(Update::UserChanged(user(
                    &name, status, used, None,
                ))));
            }
        }
        if !round.is_multiple_of(3) {
            continue; // Let changes pile up across frames.
        }
        let users = &a.model.users;
        a.screens.users.table.refresh(users);
        let mut fresh = UsersScreen::default();
        fresh.table.sort = a.screens.users.table.sort;
        fresh.table.desc = a.screens.users.table.desc;
        fresh.table.filter.value = a.screens.users.table.filter.value.clone();
        fresh.table.refresh(users);
        assert_eq!(
            a.screens.users.table.view(),
            fresh.table.view(),
            "round {round}"
        );
    }
}

#[test]
fn qr_codes_are_dark_on_light_in_both_themes() {
    use ratatui::style::Color;
    for light in [false, true] {
        let mut a = app();
        if light {
            key(&mut a, 't');
        }
        key(&mut a, '2');
        let cmds = key(&mut a, 'l');
        let [Command::FetchLinks { id, .. }] = &cmds[..] else {
            panic!("{cmds:?}");
        };
        a.handle(Event::Update(Update::Links {
            id: *id,
            user: "alice".into(),
            result: Ok(links()),
        }));
        let t = frame(&mut a, 160, 48);
        let buf = t.backend().buffer();
        let blocks: Vec<_> = buf
            .content()
            .iter()
            .filter(|c| matches!(c.symbol(), "▀" | "▄" | "█"))
            .collect();
        assert!(blocks.len() > 100, "a code is drawn (light: {light})");
        for c in blocks {
            assert_eq!((c.fg, c.bg), (Color::Black, Color::White), "light: {light}");
        }
    }
}

#[test]
fn the_themes_differ_and_a_removed_host_says_so() {
    let mut a = app();
    let dark = frame(&mut a, 80, 24).backend().buffer().clone();
    key(&mut a, 't');
    let light = frame(&mut a, 80, 24).backend().buffer().clone();
    assert_ne!(dark[(0, 3)].bg, light[(0, 3)].bg);
    key(&mut a, 't');
    press(&mut a, KeyCode::Enter);
    a.handle(Event::Update(Update::HostRemoved("ams-2".into())));
    assert!(text(&mut a, 80, 24).contains("host ams-2 was removed"));
}
