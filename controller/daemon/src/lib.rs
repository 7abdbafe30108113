//! The vpn-controller daemon.
//!
//! # Layout
//! - [`config`]: layered configuration (file, env, flags).
//! - [`ingest`]: group commit of agents' usage batches (one transaction for those that queue).
//! - [`init`]: `vpn-controller init` — CA, certificates, context file.
//! - [`server`]: the QUIC endpoint; connections dispatched by ALPN.
//! - [`session`]: one agent's session — full state, deltas, acks, reports and health moves.
//! - [`fleet`]: who is connected, queued pushes, ack waits.
//! - [`backlog`]: one session's queued pushes, bounded by turning an overflow into a resync.
//! - [`enroll`]: join tokens and CSR signing.
//! - [`admin`] and [`views`]: the operator API, host health and `doctor` included.
//! - [`store`]: SQLite persistence and the per-host desired-state computation.
//! - [`metrics`]: the Prometheus registry (refusals, events, pushes, ack latency, apply
//!   failures, admin requests, store latency) behind `/metrics`, and the throttle of refusal logs.
//! - [`quota`]: the pure core of quotas and time: statuses, reset calendars, on hold.
//! - [`webhooks`]: signed host events POSTed to `[[webhooks]]` receivers, never blocking.

pub mod admin;
pub mod backlog;
pub mod config;
pub mod enroll;
pub mod fleet;
pub mod ingest;
pub mod init;
pub mod metrics;
pub mod quota;
pub mod quota_timer;
pub mod server;
pub mod session;
pub mod store;
pub mod subscribe;
pub mod views;
pub mod webhooks;
