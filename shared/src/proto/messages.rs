//! Messages of the agent session and of enrollment.

use serde::{Deserialize, Serialize};

use crate::model::{Change, Digest, FirewallSpec, ServiceSpec, UserSpec};

/// Sent by an agent on its session stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// First frame: who the agent says it is and what it already runs.
    Hello(AgentHello),
    /// Sent more often than the controller's idle timeout.
    KeepAlive,
    /// Result of applying a full state or a delta.
    Ack(Ack),
    /// The agent cannot apply a delta (gap or digest mismatch) and wants the full state.
    ResyncRequest { reason: String },
    /// A new certificate for a fresh key (sent at 70–90% of the current one's lifetime).
    RenewRequest { csr_pem: String },
    /// What the host can and cannot do (probed at agent start); sent after every `Hello`.
    Health(HostHealth),
    /// Protocol version 3 on: the host's vitals and every resource's current result, after
    /// each periodic reconcile (when anything differs from the last report, and at least once
    /// a minute) and once after `Hello`.
    Report(AgentReport),
    /// Protocol version 4 on: traffic from the agent's ledger, oldest first, seqs ascending.
    /// Sent again (from the oldest unacked) after every reconnect until acked.
    Usage(UsageReport),
    /// Protocol version 5 on: users this agent cut off by itself (an allowance ran out), sent
    /// once each after the next `Hello` when it happened while the controller was away.
    Enforced(Vec<CutOff>),
}

/// A user the agent removed from its host on its own (SPEC §2.6, offline enforcement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutOff {
    /// The user's id (`UserSpec::id`).
    pub user: String,
    pub cause: CutOffCause,
    /// Agent clock, Unix seconds.
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CutOffCause {
    /// The bytes the controller last allowed were used up on this host.
    DataUsedUp,
    /// The expiry the controller last sent has passed.
    Expired,
}

/// A batch of ledger entries (SPEC §2.6).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsageReport {
    /// The ledger's identity: random, made when the ledger is created and kept with it, so the
    /// seqs of a ledger that was lost and started again never collide with the old ones.
    pub epoch: u64,
    /// Strictly ascending `seq`.
    pub entries: Vec<UsageEntry>,
}

/// Bytes one user moved through one service on this host in one interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    /// Monotonic within the epoch; the controller applies each `(host, epoch, seq)` once.
    pub seq: u64,
    /// The user's id (`UserSpec::id`), which outlives a rename.
    pub user: String,
    pub service: String,
    /// Client to server.
    pub up: u64,
    /// Server to client.
    pub down: u64,
    /// Bytes whose direction the engine does not tell (ssmanager counts a port's total).
    pub undirected: u64,
    /// The interval the bytes were counted in, agent clock, Unix seconds.
    pub from: i64,
    pub to: i64,
}

impl UsageEntry {
    pub fn total(&self) -> u64 {
        self.up
            .saturating_add(self.down)
            .saturating_add(self.undirected)
    }
}

/// What the agent last found on its host, whether or not anything was applied.
///
/// `results` holds the resources whose last result is an error, and only those: a resource
/// missing from it is not failing (an ack carries every result; a report would otherwise repeat
/// each user's "ok" once a minute).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentReport {
    /// The agent's wall clock when it made the report, Unix milliseconds (for clock skew).
    pub sent_at_ms: i64,
    /// Generation of the state the results belong to.
    pub generation: u64,
    /// The failing resources of the last apply or reconcile (see above).
    pub results: Vec<ResourceResult>,
    /// What the reconciles since the last report repaired (drift found and fixed).
    pub repairs: Vec<Repair>,
    /// The host's managed containers as Docker reports them.
    pub containers: Vec<ContainerStatus>,
    /// `notAfter` of the agent's certificate, Unix seconds.
    pub cert_not_after: Option<i64>,
    /// Free bytes on the file system of the agent's data directory.
    pub disk_free_bytes: Option<u64>,
    /// Usage entries written but not yet acked by the controller (accounting; `None` before).
    pub ledger_backlog: Option<u64>,
}

/// One repair a reconcile made, for example `service/ss`: `container was missing; created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub resource: String,
    pub action: String,
    /// Agent clock, Unix seconds.
    pub at: i64,
}

/// One managed container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// The resource it serves, for example `service/ss` or `user/alice@vless`.
    pub resource: String,
    pub running: bool,
    /// Docker's restart count since the container was created.
    pub restarts: u32,
}

/// The host's capabilities as the agent found them at start.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostHealth {
    /// One line per missing kernel or tool feature: what is missing and what that disables.
    pub missing: Vec<String>,
}

/// The agent's opening frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    pub min_version: u16,
    pub max_version: u16,
    /// The host whose desired state the agent asks for; must be the identity in its certificate.
    pub host_id: String,
    pub agent_version: String,
    /// Generation and digest of the state the agent applied last (from disk), if any.
    pub applied: Option<(u64, Digest)>,
    /// Address clients should use for this host, if configured on the agent.
    pub public_address: Option<String>,
}

/// Outcome of one apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub generation: u64,
    pub digest: Digest,
    pub results: Vec<ResourceResult>,
}

/// Outcome for one resource (a service container, a user on a service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceResult {
    /// For example `service/shadowsocks` or `user/alice@shadowsocks`.
    pub resource: String,
    pub outcome: Outcome,
}

impl ResourceResult {
    pub fn ok(resource: impl Into<String>) -> Self {
        ResourceResult {
            resource: resource.into(),
            outcome: Outcome::Ok,
        }
    }

    pub fn error(resource: impl Into<String>, message: impl Into<String>) -> Self {
        ResourceResult {
            resource: resource.into(),
            outcome: Outcome::Error(message.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Error(String),
}

/// Sent by the controller on an agent's session stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerMsg {
    /// Answer to `Hello`: the negotiated version.
    Welcome {
        version: u16,
        host_name: String,
    },
    /// One chunk of the host's full desired state; `last` closes it.
    FullState(StateChunk),
    /// Changes against `base_generation`, moving the host to `generation`.
    Delta {
        base_generation: u64,
        generation: u64,
        digest: Digest,
        changes: Vec<Change>,
    },
    KeepAlive,
    /// The controller refuses the session; the connection closes after this frame.
    Refused {
        reason: String,
    },
    /// Answer to `RenewRequest`: the renewed certificate.
    Renewed {
        cert_pem: String,
    },
    /// Answer to `RenewRequest` when it cannot be honoured; the old certificate stays valid.
    RenewFailed {
        reason: String,
    },
    /// Every ledger entry of `epoch` with `seq <= up_to` is stored (sent after the commit): the
    /// agent may drop them.
    UsageAck {
        epoch: u64,
        up_to: u64,
    },
    /// Protocol version 5 on: what users of this host may still use, for the agent to enforce
    /// by itself (SPEC §2.6). Not part of the desired state: no generation, no digest.
    Allowances(Allowances),
}

/// Data and time allowances of a host's users, as the controller counted them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Allowances {
    /// The controller's figures include this host's ledger entries of `epoch` up to `up_to`
    /// and nothing later: the agent subtracts its own entries after that itself.
    pub epoch: u64,
    pub up_to: u64,
    /// `true`: these are all of the host's allowances (a user not listed has none); `false`:
    /// only the listed users changed.
    pub complete: bool,
    pub users: Vec<Allowance>,
}

/// One user's allowance; a user with neither is not limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// The user's id (`UserSpec::id`).
    pub user: String,
    /// Bytes left in the current period over all hosts; `None`: no data limit.
    pub remaining: Option<u64>,
    /// Unix seconds; `None`: no expiry.
    pub expires_at: Option<i64>,
}

/// A chunk of a full state. A state larger than one frame is sent as several chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChunk {
    pub generation: u64,
    /// Digest of the whole state, to check after the last chunk.
    pub digest: Digest,
    pub index: u32,
    pub last: bool,
    pub services: Vec<ServiceSpec>,
    pub users: Vec<UserSpec>,
    /// The host's firewall policy. Version 1: whole in the first chunk, empty in the others.
    /// Version 2 on: each chunk holds the next part of the block list; the receiver
    /// concatenates them in chunk order.
    pub firewall: FirewallSpec,
}

impl StateChunk {
    /// Rebuilds the full state the chunks of one `FullState` carry, in order, as an agent
    /// receives it: services and users by name, the block list concatenated in chunk order
    /// (protocol 2 on; before, it came whole in the first chunk and the others carried none).
    /// The state comes with its digest computed here; `Err` names why it cannot be taken
    /// (chunks out of order, or a digest other than the one announced): ask for a resync.
    pub fn assemble(chunks: Vec<StateChunk>) -> Result<crate::model::TrackedState, String> {
        let mut state = crate::model::DesiredState::default();
        let mut announced = None;
        for (i, chunk) in chunks.into_iter().enumerate() {
            if chunk.index as usize != i {
                return Err(format!("chunk {} out of order", chunk.index));
            }
            state.generation = chunk.generation;
            state.firewall.blocked.extend(chunk.firewall.blocked);
            announced = Some(chunk.digest);
            state
                .services
                .extend(chunk.services.into_iter().map(|s| (s.name.clone(), s)));
            state
                .users
                .extend(chunk.users.into_iter().map(|u| (u.name.clone(), u)));
        }
        let state = crate::model::TrackedState::new(state);
        if announced != Some(state.digest()) {
            return Err("full state digest mismatch".into());
        }
        Ok(state)
    }
}

/// Sent by a joining agent over the enrollment ALPN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub version: u16,
    pub token: String,
    /// PEM certificate signing request; the private key stays on the host.
    pub csr_pem: String,
    pub agent_version: String,
}

/// The controller's answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    Accepted {
        host_id: String,
        host_name: String,
        cert_pem: String,
        ca_pem: String,
    },
    Refused {
        reason: String,
    },
}
