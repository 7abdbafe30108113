//! The fleet subscription (`vpn tui`, SPEC §2.7): one long-lived admin stream opened by
//! [`AdminRequest::Subscribe`](super::admin::AdminRequest::Subscribe), answered by
//! [`AdminResponse::Stream`](super::admin::AdminResponse::Stream) frames until either side
//! closes it.
//!
//! The controller first sends a snapshot in parts ([`StreamMsg::Snapshot`], `last` on the
//! final one: hosts, services and recent events in the first part, users spread over as many
//! parts as they need), then changes: at most about one message per changed item per second
//! (the controller coalesces), events as they happen, and every host's traffic rates each
//! second. A subscriber that does not keep up is not waited for: its stream is closed with
//! [`StreamMsg::Lagged`], and it subscribes again for a fresh snapshot. Enums only gain
//! variants at the end.

use serde::{Deserialize, Serialize};

use super::admin::{HostEvent, ServerDetail, ServiceInfo, UserDetail};

/// One message of the subscription stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamMsg {
    /// Part of the snapshot the stream starts with; the model is complete after `last`.
    Snapshot(SnapshotPart),
    /// A host was added or changed (health, online state, acks, users, services).
    HostChanged(ServerDetail),
    /// A host was removed, by name.
    HostRemoved(String),
    ServiceChanged(ServiceInfo),
    /// A service was removed, by name.
    ServiceRemoved(String),
    /// A user was added or changed (status, limits, usage).
    UserChanged(UserDetail),
    /// A user was removed, by name.
    UserRemoved(String),
    /// Something happened on a host.
    Event(StreamEvent),
    /// Each host's traffic over the last second.
    Rates(Vec<HostRateInfo>),
    /// The subscriber fell behind and the stream ends here: subscribe again.
    Lagged,
}

/// A part of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotPart {
    pub hosts: Vec<ServerDetail>,
    pub services: Vec<ServiceInfo>,
    pub users: Vec<UserDetail>,
    /// Recent events of the whole fleet, oldest first.
    pub events: Vec<StreamEvent>,
    /// The snapshot is complete.
    pub last: bool,
}

/// An event of one host, by the host's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    pub host: String,
    pub event: HostEvent,
}

/// A host's traffic rates over the last interval, from the usage its agent reported. What no
/// agent reports yet (cpu, memory) is `None`, never a guess.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRateInfo {
    pub host: String,
    /// Bits per second from users to the host.
    pub rx_bps: u64,
    /// Bits per second from the host to users.
    pub tx_bps: u64,
    /// CPU in use, tenths of a percent of one core.
    pub cpu_permille: Option<u32>,
    /// Memory in use, tenths of a percent of the host's.
    pub mem_permille: Option<u32>,
}
