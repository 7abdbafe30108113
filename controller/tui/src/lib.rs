//! `vpn tui`: a live fleet overview in the terminal (SPEC §2.7, issue 11).
//!
//! # Layout
//! - [`update`]: the channel contract with the backend — [`Update`] in, [`Command`] out.
//! - [`app`]: the IO-free core: [`App::handle`] an [`Event`], [`App::draw`] a frame.
//! - [`model`]: hosts, services, users and events as the updates leave them.
//! - [`screens`]: fleet, host drill-down, users, events — one file each.
//! - [`popups`]: help, context menu, user form, delete question, QR codes — one file each.
//! - [`components`]: the [`components::Component`] contract (events bubble: consumed or not)
//!   and the virtualised, filterable, sortable table every list uses.
//! - [`keys`]: the one key table the status bar, the help and the context menu are built from.
//! - [`validate`]: form checks with the CLI's rules.
//! - [`theme`], [`format`]: colours and cell text.
//! - [`terminal`]: [`run`], the crossterm runner (raw mode, input thread, restore on panic).
//!
//! The backend — the task that holds the controller connection — is not here: it maps the
//! controller's subscription stream onto [`Update`]s and executes [`Command`]s, so nothing in
//! this crate touches the network and drawing never waits on it.

pub mod app;
pub mod components;
pub mod format;
pub mod keys;
pub mod model;
pub mod popups;
pub mod screens;
pub mod terminal;
pub mod theme;
pub mod update;
pub mod validate;

pub use app::{App, Connection, Event};
pub use terminal::run;
pub use theme::{Theme, ThemeKind};
pub use update::{Command, FleetEvent, FleetSnapshot, HostRate, Update};

#[cfg(test)]
mod tests;
