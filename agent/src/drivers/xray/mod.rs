//! VLESS through Xray-core: users changed hot over Xray's gRPC API, counters read from its
//! StatsService. [`api`] is the API client (see `docs/XRAY.md`).

pub mod api;
