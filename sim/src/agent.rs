//! One simulated agent: dial, session, reconnect with the real agent's jittered backoff.
//!
//! [`Replica`] holds the decisions (pure, no IO): what to answer to a full state's chunks and
//! to a delta. [`run_agent`] is the IO around it: the connection, a reader task (reading a frame
//! is not cancel-safe inside `select!`), keep-alives, usage batches and renewals on timers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vpn_shared::backoff;
use vpn_shared::model::{Change, DesiredState, Digest, TrackedState};
use vpn_shared::pki;
use vpn_shared::proto::frame::{FrameError, MAX_FRAME, read_frame, write_frame};
use vpn_shared::proto::{
    ALPN_AGENT, Ack, AgentHello, AgentMsg, ControllerMsg, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
    StateChunk, UsageEntry, UsageReport,
};
use vpn_shared::transport;

use crate::identity::SimIdentity;
use crate::stats::Stats;

/// How a simulated fleet behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Application keep-alives, as the agent sends them.
    pub keep_alive: Duration,
    /// Longest reconnect delay (the agent's `--reconnect-max`).
    pub reconnect_max: Duration,
    /// A usage batch this often (one entry per user of the state, up to `usage_users`), or
    /// never. One batch in flight: a tick while one waits for its ack sends nothing.
    pub usage_every: Option<Duration>,
    pub usage_users: usize,
    /// Ask for a new certificate this often over the session (the real agent asks at two
    /// thirds of its certificate's lifetime), or never.
    pub renew_every: Option<Duration>,
    /// Spread the first dials of the fleet over this long (agents booting), instead of all at
    /// once.
    pub start_spread: Duration,
    /// A fault for tests: each agent finds its first N deltas not matching its state (as an
    /// agent whose saved state diverged would), asks for a resync and gets the full state.
    pub mismatch_first_deltas: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            keep_alive: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(30),
            usage_every: None,
            usage_users: 1_000,
            renew_every: None,
            start_spread: Duration::ZERO,
            mismatch_first_deltas: 0,
        }
    }
}

/// What a simulated agent holds of its desired state, and how it answers the controller.
#[derive(Debug, Default)]
pub struct Replica {
    state: TrackedState,
    chunks: Vec<StateChunk>,
    /// Deltas still to be refused ([`SimConfig::mismatch_first_deltas`]).
    mismatch: u32,
}

/// What a [`Replica`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to answer yet (a chunk that is not the last, a message that needs no answer).
    Nothing,
    /// A full state or delta applied: ack it.
    Applied { full: bool, reply: AgentMsg },
    /// A gap, a digest mismatch or chunks out of order: ask for the full state.
    Resync(AgentMsg),
}

impl Replica {
    pub fn new(mismatch_first_deltas: u32) -> Replica {
        Replica {
            mismatch: mismatch_first_deltas,
            ..Replica::default()
        }
    }

    pub fn state(&self) -> &DesiredState {
        self.state.state()
    }

    /// What to say in the hello: the generation and digest applied, if any.
    pub fn applied(&self) -> Option<(u64, Digest)> {
        (self.state.generation() > 0).then(|| (self.state.generation(), self.state.digest()))
    }

    /// A new session starts: chunks of a full state cut off by the old one are worthless.
    pub fn reset_chunks(&mut self) {
        self.chunks.clear();
    }

    /// Takes one full-state chunk; after the last, rebuilds the state as the agent does
    /// (services and users by name, the block list concatenated in chunk order) and acks it if
    /// its digest is the one announced.
    pub fn on_chunk(&mut self, chunk: StateChunk) -> Outcome {
        let last = chunk.last;
        self.chunks.push(chunk);
        if !last {
            return Outcome::Nothing;
        }
        let state = match StateChunk::assemble(std::mem::take(&mut self.chunks)) {
            Ok(state) => state,
            Err(reason) => return Outcome::Resync(resync(reason)),
        };
        self.state = state;
        Outcome::Applied {
            full: true,
            reply: self.ack(),
        }
    }

    /// Applies a delta and acks it, or asks for a resync on a gap or a digest mismatch.
    pub fn on_delta(
        &mut self,
        base: u64,
        generation: u64,
        digest: Digest,
        changes: &[Change],
    ) -> Outcome {
        if self.mismatch > 0 {
            self.mismatch -= 1;
            return Outcome::Resync(resync(format!(
                "digest mismatch at generation {generation} (simulated)"
            )));
        }
        let mut next = self.state.clone();
        match next.apply_delta(base, generation, changes) {
            Err(e) => Outcome::Resync(resync(e.to_string())),
            Ok(()) if next.digest() != digest => Outcome::Resync(resync(format!(
                "digest mismatch at generation {generation}"
            ))),
            Ok(()) => {
                self.state = next;
                Outcome::Applied {
                    full: false,
                    reply: self.ack(),
                }
            }
        }
    }

    fn ack(&self) -> AgentMsg {
        AgentMsg::Ack(Ack {
            generation: self.state.generation(),
            digest: self.state.digest(),
            results: Vec::new(),
        })
    }
}

/// Resolves once `stop` turns true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, not held across the caller's awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn resync(reason: String) -> AgentMsg {
    AgentMsg::ResyncRequest { reason }
}

/// A random u64 from the OS (ledger epochs).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One agent's ledger, simulated: every user of the state moved a few bytes each interval.
struct Ledger {
    epoch: u64,
    next_seq: u64,
    /// The batch waiting for its ack, sent again on the next session if the ack never came
    /// (as the agent resends from its oldest unacked entry).
    in_flight: Option<UsageReport>,
}

impl Ledger {
    fn batch(&mut self, state: &DesiredState, max: usize, every: Duration) -> Option<UsageReport> {
        let to = unix_now();
        let from = to - every.as_secs() as i64;
        let entries: Vec<UsageEntry> = state
            .users
            .values()
            .filter_map(|u| Some((u, u.credentials.first()?.service().to_owned())))
            .take(max)
            .map(|(u, service)| {
                self.next_seq += 1;
                UsageEntry {
                    seq: self.next_seq,
                    user: u.id.clone(),
                    service,
                    up: 1_000,
                    down: 10_000,
                    undirected: 0,
                    from,
                    to,
                }
            })
            .collect();
        entries.last()?;
        let batch = UsageReport {
            epoch: self.epoch,
            entries,
        };
        self.in_flight = Some(batch.clone());
        Some(batch)
    }

    /// Takes an ack: the number of entries it covered if it covers the batch in flight.
    fn acked(&mut self, epoch: u64, up_to: u64) -> Option<u64> {
        let batch = self.in_flight.as_ref()?;
        let (first, last) = (batch.entries.first()?.seq, batch.entries.last()?.seq);
        if epoch != self.epoch || last > up_to {
            return None;
        }
        self.in_flight = None;
        Some(last - first + 1)
    }
}

/// How a session ended.
enum End {
    /// The connection or stream went away: dial again after a backoff.
    Lost(String),
    /// The controller refused this host (revoked): stop for good.
    Refused(String),
    /// Told to stop.
    Stopped,
}

/// Runs every identity as an agent until `stop` turns true. Each agent has its own UDP socket,
/// as a real host would.
pub async fn run_agents(
    controller: std::net::SocketAddr,
    ca_pem: String,
    hosts: Vec<SimIdentity>,
    config: SimConfig,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ca_pem = Arc::new(ca_pem);
    let config = Arc::new(config);
    let n = hosts.len().max(1);
    let mut tasks = Vec::with_capacity(hosts.len());
    for (i, identity) in hosts.into_iter().enumerate() {
        let endpoint = transport::client_endpoint(controller)?;
        let start = config.start_spread.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(run_agent(
            controller,
            ca_pem.clone(),
            identity,
            endpoint,
            config.clone(),
            stats.clone(),
            stop.clone(),
            start,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_agent(
    controller: std::net::SocketAddr,
    ca_pem: Arc<String>,
    mut identity: SimIdentity,
    endpoint: quinn::Endpoint,
    config: Arc<SimConfig>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Duration,
) {
    tokio::select! {
        _ = tokio::time::sleep(start) => {}
        _ = stopped(&mut stop) => return,
    }
    let mut replica = Replica::new(config.mismatch_first_deltas);
    let mut ledger = Ledger {
        epoch: random_u64(),
        next_seq: 0,
        in_flight: None,
    };
    let mut attempt = 0u32;
    loop {
        Stats::add(&stats.dials, 1);
        let end = match dial(&endpoint, controller, &ca_pem, &identity).await {
            Ok(conn) => {
                let end = session(
                    &conn,
                    &mut identity,
                    &mut replica,
                    &mut ledger,
                    &config,
                    &stats,
                    &mut stop,
                    &mut attempt,
                )
                .await;
                conn.close(0u32.into(), b"simulated agent");
                end
            }
            Err(e) => End::Lost(e),
        };
        match end {
            End::Stopped => break,
            End::Refused(reason) => {
                Stats::add(&stats.refused, 1);
                warn!(host = %identity.name, %reason, "refused by the controller: this simulated agent stops");
                break;
            }
            End::Lost(reason) => {
                debug!(host = %identity.name, %reason, attempt, "session lost; dialing again");
            }
        }
        let wait = backoff::delay(attempt, config.reconnect_max, backoff::random_unit());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    endpoint.close(0u32.into(), b"simulator stopping");
}

async fn dial(
    endpoint: &quinn::Endpoint,
    controller: std::net::SocketAddr,
    ca_pem: &str,
    identity: &SimIdentity,
) -> Result<quinn::Connection, String> {
    let config =
        transport::client_config(ca_pem, &identity.cert_pem, &identity.key_pem, ALPN_AGENT)
            .map_err(|e| e.to_string())?;
    let connecting = endpoint
        .connect_with(config, controller, transport::SERVER_NAME)
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

type Inbound = Result<ControllerMsg, FrameError>;

async fn read_loop(mut recv: quinn::RecvStream, tx: mpsc::Sender<Inbound>) {
    loop {
        let msg = match read_frame::<_, ControllerMsg>(&mut recv, MAX_FRAME).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = msg.is_err();
        if tx.send(msg).await.is_err() || failed {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    conn: &quinn::Connection,
    identity: &mut SimIdentity,
    replica: &mut Replica,
    ledger: &mut Ledger,
    config: &SimConfig,
    stats: &Stats,
    stop: &mut watch::Receiver<bool>,
    attempt: &mut u32,
) -> End {
    let lost = |e: &dyn std::fmt::Display| End::Lost(e.to_string());
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            Stats::add(&stats.dial_failures, 1);
            return lost(&e);
        }
    };
    replica.reset_chunks();
    let hello = AgentMsg::Hello(AgentHello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        host_id: identity.host_id.clone(),
        agent_version: concat!("vpn-agent-sim/", env!("CARGO_PKG_VERSION")).into(),
        applied: replica.applied(),
        public_address: None,
    });
    if let Err(e) = write_frame(&mut send, &hello).await {
        Stats::add(&stats.dial_failures, 1);
        return lost(&e);
    }
    let (tx, mut msgs) = mpsc::channel(16);
    let reader = tokio::spawn(read_loop(recv, tx));
    let mut keep_alive = tokio::time::interval(config.keep_alive);
    keep_alive.reset();
    let usage_every = config.usage_every.unwrap_or(Duration::from_secs(3_600));
    let mut usage_tick = tokio::time::interval(usage_every);
    usage_tick.reset();
    let renew_every = config
        .renew_every
        .unwrap_or(Duration::from_secs(86_400 * 365));
    let mut renew_tick = tokio::time::interval(renew_every);
    renew_tick.reset();
    let mut pending_key: Option<String> = None;
    let mut welcomed = false;
    let mut usage = false;
    let end = loop {
        let msg = tokio::select! {
            m = msgs.recv() => m,
            _ = stopped(stop) => break End::Stopped,
            _ = keep_alive.tick() => {
                if let Err(e) = write_frame(&mut send, &AgentMsg::KeepAlive).await {
                    break lost(&e);
                }
                Stats::add(&stats.keep_alives, 1);
                continue;
            }
            _ = usage_tick.tick(), if usage && config.usage_every.is_some() => {
                if ledger.in_flight.is_some() {
                    continue; // one batch in flight
                }
                if let Some(batch) = ledger.batch(replica.state(), config.usage_users, usage_every) {
                    if let Err(e) = write_frame(&mut send, &AgentMsg::Usage(batch)).await {
                        break lost(&e);
                    }
                    Stats::add(&stats.usage_sent, 1);
                }
                continue;
            }
            _ = renew_tick.tick(), if welcomed && config.renew_every.is_some() => {
                let (key_pem, csr_pem) = match pki::generate_csr() {
                    Ok(pair) => pair,
                    Err(e) => { warn!(error = %e, "cannot make a CSR"); continue; }
                };
                pending_key = Some(key_pem);
                if let Err(e) = write_frame(&mut send, &AgentMsg::RenewRequest { csr_pem }).await {
                    break lost(&e);
                }
                continue;
            }
        };
        let msg = match msg {
            None => {
                break End::Lost(
                    conn.close_reason()
                        .map_or("connection closed".into(), |r| r.to_string()),
                );
            }
            Some(Err(e)) => break End::Lost(format!("protocol error: {e}")),
            Some(Ok(m)) => m,
        };
        let outcome = match msg {
            ControllerMsg::Refused { reason } => break End::Refused(reason),
            ControllerMsg::Welcome { version, .. } => {
                welcomed = true;
                usage = version >= 4;
                *attempt = 0;
                Stats::add(&stats.connected, 1);
                // The batch whose ack the last session never saw: again, before anything new.
                if usage && let Some(batch) = &ledger.in_flight {
                    if let Err(e) = write_frame(&mut send, &AgentMsg::Usage(batch.clone())).await {
                        break lost(&e);
                    }
                    Stats::add(&stats.usage_sent, 1);
                }
                Outcome::Nothing
            }
            ControllerMsg::FullState(chunk) => replica.on_chunk(chunk),
            ControllerMsg::Delta {
                base_generation,
                generation,
                digest,
                changes,
            } => replica.on_delta(base_generation, generation, digest, &changes),
            ControllerMsg::UsageAck { epoch, up_to } => {
                if let Some(entries) = ledger.acked(epoch, up_to) {
                    Stats::add(&stats.usage_acked, 1);
                    Stats::add(&stats.entries_acked, entries);
                }
                Outcome::Nothing
            }
            ControllerMsg::Renewed { cert_pem } => {
                if let Some(key_pem) = pending_key.take() {
                    identity.cert_pem = cert_pem;
                    identity.key_pem = key_pem;
                    Stats::add(&stats.renewed, 1);
                }
                Outcome::Nothing
            }
            ControllerMsg::RenewFailed { reason } => {
                pending_key = None;
                Stats::add(&stats.renew_failed, 1);
                info!(host = %identity.name, %reason, "renewal refused");
                Outcome::Nothing
            }
            ControllerMsg::KeepAlive | ControllerMsg::Allowances(_) => Outcome::Nothing,
        };
        let reply = match outcome {
            Outcome::Nothing => continue,
            Outcome::Applied { full, reply } => {
                Stats::add(
                    if full {
                        &stats.full_states
                    } else {
                        &stats.deltas
                    },
                    1,
                );
                Stats::add(&stats.acks, 1);
                reply
            }
            Outcome::Resync(reply) => {
                Stats::add(&stats.resyncs, 1);
                reply
            }
        };
        if let Err(e) = write_frame(&mut send, &reply).await {
            break lost(&e);
        }
    };
    reader.abort();
    if welcomed {
        stats
            .connected
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if matches!(end, End::Lost(_)) {
            Stats::add(&stats.sessions_lost, 1);
        }
    } else if matches!(end, End::Lost(_)) {
        Stats::add(&stats.dial_failures, 1);
    }
    end
}
