//! A WHEN on the command line: parsed by `vpn_shared::moment`, which `vpn tui`'s forms share.

pub use vpn_shared::moment::{Moment, parse, secs};
