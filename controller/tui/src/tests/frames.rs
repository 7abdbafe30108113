//! Frame snapshots of every screen and popup at 80×24 and 160×48. The clock is fixed
//! ([`NOW`]) and the data is the fixture fleet, so no frame holds volatile text.

use crossterm::event::{KeyCode, MouseButton};

use super::fixtures::*;
use crate::{App, Event, Update};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn snap(name: &str, make: impl Fn() -> App) {
    for (w, h) in SIZES {
        let mut app = make();
        let t = frame(&mut app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

#[test]
fn fleet() {
    snap("fleet", app);
}

#[test]
fn fleet_filtered_and_sorted_by_status() {
    snap("fleet_filter_sort", || {
        let mut a = app();
        key(&mut a, 's');
        key(&mut a, '/');
        type_str(&mut a, "o");
        a
    });
}

#[test]
fn host_degraded() {
    snap("host_degraded", || {
        let mut a = app();
        key(&mut a, '/');
        type_str(&mut a, "ams");
        press(&mut a, KeyCode::Enter);
        press(&mut a, KeyCode::Enter);
        a
    });
}

#[test]
fn host_offline() {
    snap("host_offline", || {
        let mut a = app();
        key(&mut a, '/');
        type_str(&mut a, "nyc");
        press(&mut a, KeyCode::Enter);
        press(&mut a, KeyCode::Enter);
        a
    });
}

#[test]
fn users() {
    snap("users", || {
        let mut a = app();
        key(&mut a, '2');
        a
    });
}

#[test]
fn events() {
    snap("events", || {
        let mut a = app();
        key(&mut a, '3');
        a
    });
}

#[test]
fn events_search() {
    snap("events_search", || {
        let mut a = app();
        key(&mut a, '3');
        key(&mut a, '/');
        type_str(&mut a, "ams");
        a
    });
}

#[test]
fn help_popup() {
    snap("help", || {
        let mut a = app();
        key(&mut a, '?');
        a
    });
}

#[test]
fn context_menu() {
    snap("menu_users", || {
        let mut a = app();
        key(&mut a, '2');
        press(&mut a, KeyCode::F(10));
        a
    });
    snap("menu_right_click", || {
        let mut a = app();
        click(&mut a, MouseButton::Right, 10, 4);
        a
    });
}

#[test]
fn add_form_with_errors() {
    snap("form_add_errors", || {
        let mut a = app();
        key(&mut a, '2');
        key(&mut a, 'a');
        type_str(&mut a, "bad name");
        for _ in 0..4 {
            press(&mut a, KeyCode::Tab);
        }
        type_str(&mut a, "50G");
        press(&mut a, KeyCode::Tab);
        press(&mut a, KeyCode::Tab);
        type_str(&mut a, "soon");
        press(&mut a, KeyCode::Enter);
        a
    });
}

#[test]
fn edit_form() {
    snap("form_edit", || {
        let mut a = app();
        key(&mut a, '2');
        key(&mut a, 'e');
        a
    });
}

#[test]
fn delete_question() {
    snap("confirm_delete", || {
        let mut a = app();
        key(&mut a, '2');
        key(&mut a, 'd');
        a
    });
}

#[test]
fn qr_popup() {
    // 160×48 holds the code; 80×24 falls back to the link as text.
    snap("qr", || {
        let mut a = app();
        key(&mut a, '2');
        let cmds = key(&mut a, 'l');
        let Some(crate::Command::FetchLinks { id, .. }) = cmds.first().cloned() else {
            panic!("no FetchLinks: {cmds:?}");
        };
        a.handle(Event::Update(Update::Links {
            id,
            user: "alice".into(),
            result: Ok(links()),
        }));
        a
    });
}

#[test]
fn qr_popup_of_a_long_link() {
    // The VLESS link needs a bigger code: it fits at 160×48, not at 80×24.
    snap("qr_vless", || {
        let mut a = app();
        key(&mut a, '2');
        let cmds = key(&mut a, 'l');
        let Some(crate::Command::FetchLinks { id, .. }) = cmds.first().cloned() else {
            panic!("no FetchLinks: {cmds:?}");
        };
        a.handle(Event::Update(Update::Links {
            id,
            user: "alice".into(),
            result: Ok(links()),
        }));
        press(&mut a, KeyCode::Right);
        a
    });
}

#[test]
fn disconnected() {
    snap("disconnected", || {
        let mut a = app();
        a.handle(Event::Update(Update::Disconnected {
            reason: "controller 198.51.100.1:7443 unreachable: timed out".into(),
            retry_in: Some(std::time::Duration::from_secs(5)),
        }));
        a.handle(Event::Tick(NOW + 2));
        a
    });
}

#[test]
fn waiting_for_the_first_snapshot() {
    snap("connecting", || App::new(crate::Theme::light(), NOW));
}
