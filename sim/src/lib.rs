//! Simulated agents: many agent sessions in one process, over the real protocol, with real
//! enrolled identities — the instrument for 1,000 and 5,000 agents on one machine (SPEC §3),
//! where real agent processes (each with Docker, tc and nftables) are the instrument at 100.
//!
//! A simulated agent does everything the controller can see of an agent and nothing it cannot:
//! it enrolls with a join string and a CSR of its own key, dials with its certificate, says
//! hello (with the state it applied, after a reconnect), rebuilds full states from their chunks
//! and acks them with the digest it computed, applies deltas and acks them (or asks for a resync
//! on a gap or a digest mismatch), sends keep-alives, renews its certificate when asked to, and
//! reports usage for the users of its state in batches with `(epoch, seq)`, one in flight. It
//! applies nothing to any host: no containers, no tc, no nftables.
//!
//! # Layout
//! - [`identity`]: enrollment through the admin API and the enrollment ALPN; the identities
//!   file (0600: it holds private keys).
//! - [`agent`]: one simulated agent's connection loop and session (the pure decisions on each
//!   controller message are [`agent::Replica`]'s).
//! - [`stats`]: counters shared by every simulated agent, printed by the binary.

pub mod agent;
pub mod identity;
pub mod stats;

pub use agent::{SimConfig, run_agents};
pub use identity::{IdentitiesFile, SimIdentity, enroll, load_identities, save_identities};
pub use stats::Stats;
