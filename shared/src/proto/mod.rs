//! The wire protocol between agents, admins and the controller.
//!
//! Every message is a postcard-encoded frame behind a 4-byte big-endian length (see [`frame`]).
//! The role and the protocol major version are named by the QUIC ALPN (`vpn-agent/1`,
//! `vpn-admin/1`, `vpn-enroll/1`); inside a connection the first frames negotiate the minor
//! version. Enums only ever gain variants at the end; `tests.rs` pins the bytes of every message.

pub mod admin;
pub mod chunk;
pub mod frame;
mod messages;
pub mod stream;

#[cfg(test)]
mod tests;

pub use messages::*;

/// ALPN for agents' long-lived sessions.
pub const ALPN_AGENT: &[u8] = b"vpn-agent/1";
/// ALPN for operators' CLI and TUI.
pub const ALPN_ADMIN: &[u8] = b"vpn-admin/1";
/// ALPN for enrollment with a join token (no client certificate yet).
pub const ALPN_ENROLL: &[u8] = b"vpn-enroll/1";

/// The protocol version this build speaks; peers agree on `min(theirs, ours)` if both support it.
///
/// - 1: the first.
/// - 2: a full state's block list is split across its chunks (each [`StateChunk::firewall`]
///   holds the next part) instead of coming whole in the first chunk, so a list larger than
///   one frame can be sent. No message changed shape; a version 1 peer gets the old layout.
/// - 3: the agent may send [`AgentMsg::Report`] (resource results and vitals after each
///   reconcile); an agent sends it only when the session negotiated 3 or more.
/// - 4: the agent may send [`AgentMsg::Usage`] (ledger entries) and the controller answers
///   [`ControllerMsg::UsageAck`]; each side sends them only when the session negotiated 4.
/// - 5: the controller may send [`ControllerMsg::Allowances`] and the agent
///   [`AgentMsg::Enforced`] (offline enforcement of quotas); only when the session negotiated 5.
pub const PROTOCOL_VERSION: u16 = 5;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Picks the highest version both sides support, if any.
pub fn negotiate(peer_min: u16, peer_max: u16) -> Option<u16> {
    let v = peer_max.min(PROTOCOL_VERSION);
    (v >= peer_min && v >= MIN_PROTOCOL_VERSION).then_some(v)
}

/// QUIC application close codes.
pub mod close {
    /// Orderly shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// The peer is not authorized (wrong identity, revoked host, wrong host's state).
    pub const REFUSED: u32 = 1;
    /// Malformed, truncated or oversized frame, or an unexpected message.
    pub const PROTOCOL: u32 = 2;
}
