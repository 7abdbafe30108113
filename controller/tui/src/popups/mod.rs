//! Popups drawn over the screens; the top one gets every event first and is modal.
//! A new popup is one file here and one [`Popup`] variant.

pub mod confirm;
pub mod form;
pub mod help;
pub mod menu;
pub mod qr;

use crate::components::Component;

#[derive(Debug)]
pub enum Popup {
    Help(help::Help),
    Menu(menu::Menu),
    Form(Box<form::UserForm>),
    Confirm(confirm::Confirm),
    Qr(Box<qr::QrPopup>),
}

impl Popup {
    pub fn component(&mut self) -> &mut dyn Component {
        match self {
            Popup::Help(p) => p,
            Popup::Menu(p) => p,
            Popup::Form(p) => p.as_mut(),
            Popup::Confirm(p) => p,
            Popup::Qr(p) => p.as_mut(),
        }
    }

    /// A short name, for tests and the status bar.
    pub fn kind(&self) -> &'static str {
        match self {
            Popup::Help(_) => "help",
            Popup::Menu(_) => "menu",
            Popup::Form(_) => "form",
            Popup::Confirm(_) => "confirm",
            Popup::Qr(_) => "qr",
        }
    }
}
