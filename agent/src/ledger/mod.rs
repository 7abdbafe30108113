//! The traffic ledger (SPEC §2.6).

pub mod delta;
