//! The Xray-core engine of the VLESS driver.
//!
//! - [`config`]: the engine's JSON configuration (pure, golden-tested).
pub mod config;
