//! The per-host agent: applies the controller's desired state to this host.
//!
//! # Layout
//! - [`session`]: the control channel and the fail-static loop (saved state first, reconnect
//!   with jittered backoff, full state / delta / ack); `session/enforce.rs` applies the
//!   allowances.
//! - [`enroll`]: `vpn-agent join` — CSR enrollment pinning the controller's CA.
//! - [`config`]: `agent.toml`, env and flags; where files live.
//! - [`renew`]: certificate renewal over the live session.
//! - [`report`]: what the agent reports between applies (repairs, failures), decided without IO.
//! - [`metrics`]: Prometheus counters and the opt-in loopback `/metrics` listener.
//! - [`hostnet`]: shaping and the firewall around the containers; feature probe and health.
//! - [`state`]: the last applied state on disk (atomic, 0600).
//! - [`ledger`]: the traffic ledger: counter deltas (pure), the append-only file, the backlog.
//! - [`allowance`]: offline enforcement of quotas (pure): the controller's figures less what
//!   this host measured since, who is cut off, the state the host runs without them.
//! - [`backoff`]: reconnect delays (in `vpn-shared`: the agent simulator waits the same).
//! - [`apply`]: the applier and its thin Docker layer (labelled containers, spec-hash recreate).
//! - [`drivers`]: per-protocol container specs and hot user changes (ssmanager for Shadowsocks).
//! - [`firewall`]: our own nftables table `inet vpn_agent` (block list, rate limits, counters).
//! - [`shaping`]: per-user and per-service bandwidth limits with tc (HTB, IFB for upload).

pub mod allowance;
pub mod apply;
pub use vpn_shared::backoff;
pub mod config;
pub mod drivers;
pub mod enroll;
pub mod firewall;
pub mod hostnet;
pub mod ledger;
pub mod metrics;
pub mod renew;
pub mod report;
pub mod session;
pub mod shaping;
pub mod state;
