//! What crosses the channels between the UI and its backend (the task that talks to the
//! controller): [`Update`]s in, [`Command`]s out.
//!
//! The backend maps the controller's subscription stream onto [`Update`] and executes each
//! [`Command`] as an admin request. Both are plain data so the UI core stays IO-free and tests
//! feed it by hand. The view types are the admin protocol's own (`vpn_shared::proto::admin`).

use std::time::Duration;

use vpn_shared::proto::admin::{
    AddUser, EditUser, HostEvent, LinkInfo, Quota, QuotaEdit, ServerDetail, ServiceInfo, UserDetail,
};

/// Everything the UI shows, as of one moment: the first message after every (re)connect.
/// It replaces the whole model (selection and filters survive where the rows still exist).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSnapshot {
    /// Every host with its health (`events` may be empty: [`FleetSnapshot::events`] carries them).
    pub hosts: Vec<ServerDetail>,
    pub services: Vec<ServiceInfo>,
    pub users: Vec<UserDetail>,
    /// Recent events of the whole fleet, oldest first.
    pub events: Vec<FleetEvent>,
}

/// One event of one host, as the events screen lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEvent {
    /// The host's name ([`vpn_shared::proto::admin::ServerInfo::name`]).
    pub host: String,
    pub event: HostEvent,
}

/// A host's live traffic rates over the last interval. Fields the agent does not report
/// yet are `None` and are shown as "—", never guessed.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRate {
    /// The host's name ([`vpn_shared::proto::admin::ServerInfo::name`]).
    pub host: String,
    /// Bits per second received by the host (from users), over the last interval.
    pub rx_bps: u64,
    /// Bits per second sent by the host (to users).
    pub tx_bps: u64,
    /// CPU use in percent of one host (0–100 × cores is fine: shown as is).
    pub cpu: Option<f32>,
    /// Memory in use, percent of the host's memory.
    pub mem: Option<f32>,
}

/// Data from the backend. Sent over a tokio mpsc channel; the UI drains it between frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The whole fleet; sent after every (re)connect and whenever the stream resynchronises.
    Snapshot(FleetSnapshot),
    /// A host was added or changed (matched by `server.name`).
    HostChanged(ServerDetail),
    /// A host was removed, by name.
    HostRemoved(String),
    /// A service was deployed or changed (matched by `name`).
    ServiceChanged(ServiceInfo),
    /// A service was removed, by name.
    ServiceRemoved(String),
    /// A user was added or changed (matched by `user.name`); usage changes come this way too.
    UserChanged(UserDetail),
    /// A user was removed, by name.
    UserRemoved(String),
    /// Something happened on a host (appended to the events screen).
    Event(FleetEvent),
    /// Periodic per-host rates of every online host; a host not named has no current figures
    /// (offline or never enrolled) and shows "—" (its sparkline keeps the past).
    Rates(Vec<HostRate>),
    /// The stream to the controller is down; the data shown is as of the last update.
    /// `retry_in`: when the backend dials again (`None`: it will not, e.g. a fatal error).
    Disconnected {
        reason: String,
        retry_in: Option<Duration>,
    },
    /// The stream is up again (a [`Update::Snapshot`] follows).
    Connected,
    /// The answer to the [`Command`] with this `id`: `Ok` with a summary (`user alice added`),
    /// or `Err` with the controller's error message (shown in the form that sent it).
    CommandResult {
        id: u64,
        result: Result<String, String>,
    },
    /// The answer to [`Command::FetchLinks`]: the user's links, one per server and service.
    Links {
        id: u64,
        user: String,
        result: Result<Vec<LinkInfo>, String>,
    },
}

/// A request from the UI to the backend. Every request but [`Command::Quit`] carries an `id`
/// that the answer ([`Update::CommandResult`] or [`Update::Links`]) repeats.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `users add` with its quota (`AdminRequest::UsersAddWith`).
    AddUser { id: u64, add: AddUser, quota: Quota },
    /// `users edit` (`AdminRequest::UsersEditWith`).
    EditUser {
        id: u64,
        edit: EditUser,
        quota: QuotaEdit,
    },
    /// `users suspend NAME`.
    SuspendUser { id: u64, name: String },
    /// `users resume NAME`.
    ResumeUser { id: u64, name: String },
    /// `users remove NAME`.
    DeleteUser { id: u64, name: String },
    /// `users link NAME` (every server and protocol), for the QR popup.
    FetchLinks { id: u64, name: String },
    /// The operator quit; the runner returns after sending this.
    Quit,
}
