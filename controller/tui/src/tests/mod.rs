//! Tests of the core without a terminal: key-driven state tests and frame snapshots
//! (ratatui `TestBackend` + insta, at 80×24 and 160×48, on a fixed clock).

mod fixtures;
mod frames;
mod state;
