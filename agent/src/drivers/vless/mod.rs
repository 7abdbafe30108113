//! VLESS + Reality (SPEC §2.4): one service, two engines.
//!
//! - [`xray`]: Xray-core, the production engine: every user on the service port, users changed
//!   through its gRPC API, per-user counters from its StatsService.
pub mod xray;
