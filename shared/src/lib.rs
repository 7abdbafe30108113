//! Code shared by the controller, the agent and the CLI.
//!
//! # Layout
//! - [`model`]: the desired state of a host, changes to it and its digest.
//! - [`proto`]: wire messages, versions and framing.
//! - [`pki`]: the private CA, certificates, CSRs and identities in SANs.
//! - [`transport`]: QUIC endpoint configuration (rustls, ring, mTLS) and framed streams.
//! - [`join`]: the join string an operator hands to a new host.
//! - [`backoff`]: reconnect delays with full jitter (agents and the agent simulator).
//! - [`rate`]: parsing and showing bit rates (`20mbit`, `20 Mbit/s`).
//! - [`size`]: parsing and showing byte sizes (`50GiB`, `10kB`, `50.0 GiB`).
//! - [`links`]: client links (SIP002 `ss://`).
//! - [`metrics_http`]: the tiny HTTP responder behind both daemons' `/metrics`.
//! - [`reality`]: Reality X25519 key pairs and short ids (base64url, as Xray and shoes read them).
//! - [`wireguard`]: WireGuard keys (standard base64), tunnel subnets and the address allocator.

pub mod backoff;
pub mod context;
pub mod fsutil;
pub mod join;
pub mod links;
pub mod metrics_http;
pub mod model;
pub mod moment;
pub mod pki;
pub mod proto;
pub mod rate;
pub mod reality;
pub mod size;
pub mod transport;
pub mod wireguard;
