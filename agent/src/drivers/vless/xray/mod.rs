//! The Xray-core engine of the VLESS driver.
//!
//! - [`config`]: the engine's JSON configuration (pure, golden-tested).
//! - [`api`]: the HandlerService / StatsService client.
pub mod api;
pub mod config;
