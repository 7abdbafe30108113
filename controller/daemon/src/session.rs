//! One agent's session: authorize, send the full desired state, then stream deltas and collect
//! acks until the connection ends.
//!
//! State machine: `Authorizing → Synced ⇄ (Delta sent, waiting for ack) → Closed`. A gap, a
//! digest mismatch, the agent's `ResyncRequest` or an overflowing push backlog sends the full
//! state again (chunked: users and, from protocol version 2, the block list). The frame reader
//! runs in its own task because reading a frame is not cancel-safe inside `select!`.
//!
//! The registration is held by an [`Online`] guard from the moment it is made, so every exit
//! (a first full state that cannot be sent included) takes the host offline. What an agent
//! reports as its health is bounded and logged only when it changed.
//!
//! Host health (SPEC §2.8): every ack's and every `Report`'s results are the host's complete
//! set and go to the health store (`store::health`), a report's repairs become events, and its
//! vitals (clock skew measured here, certificate, containers, disk, ledger) stay with the
//! registration. The session follows the host's state — online, degraded (failing 0 → N),
//! recovered (N → 0), offline — and turns each move into an event and a webhook. A session
//! replaced by a newer one of the same host moves nothing: the host never went offline.
//!
//! Usage (SPEC §2.6, protocol 4): each `Usage` batch is applied by the store in one transaction
//! with the host's watermark (shared with other sessions' batches that queued at the same time,
//! `ingest.rs`), and `UsageAck` goes out only after the commit. Batches are
//! applied in the order they came, never one past another that failed: the watermark is a
//! single seq, so applying a later batch first would make the earlier one look like a replay.
//! A batch the store could not write (its lock held too long, say) is therefore kept and tried
//! again, before the newer ones, when the next batch arrives; a batch the store refused as
//! malformed stops this session's ingest until the agent reconnects (it resends from its oldest
//! unacked entry), without ending the session: the control channel must not suffer from a
//! broken ledger, and nothing of the ledger is lost while it waits.

use std::sync::Arc;
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use vpn_shared::model::{DesiredState, Digest, FirewallSpec};
use vpn_shared::pki::Identity;
use vpn_shared::proto::frame::{FrameError, MAX_FRAME, read_frame, write_frame};
use vpn_shared::proto::{AgentHello, AgentMsg, ControllerMsg, StateChunk, close, negotiate};
use vpn_shared::transport::peer_identity;

use serde_json::json;
use vpn_shared::proto::admin::HostVitals;
use vpn_shared::proto::{
    AgentReport, Allowances, CutOff, CutOffCause, ResourceResult, UsageReport,
};

use crate::backlog::Next;
use crate::fleet::{AckState, Registration, Transition, transition};
use crate::server::{Controller, now};
use crate::store::{EventKind, HostPush, StoreError};
use crate::webhooks::{self, Notice, WebhookEvent};

/// Failing resources named in a `host_degraded` webhook (the count is always complete).
const NOTICE_RESOURCES: usize = 20;

/// A message from the agent with the controller's wall clock when it was read, Unix ms.
type Inbound = Result<(AgentMsg, i64), FrameError>;

/// Users per full-state chunk: keeps every frame far below the frame limit.
const USERS_PER_CHUNK: usize = 2_000;
/// Block-list entries per full-state chunk (protocol version 2 on): at most about 50 bytes
/// each encoded (an IPv6 network), so a chunk stays near 2.5 MB, far below the frame limit.
const BLOCKED_PER_CHUNK: usize = 50_000;
/// How long deltas are gathered before sending, so a burst becomes a few messages.
const COALESCE: Duration = Duration::from_millis(20);
/// How often a connected host's `last_seen` is written to the store.
const SEEN_EVERY: Duration = Duration::from_secs(30);
/// Usage entries a session keeps while the store cannot take them; past it the session ends,
/// so its agent reconnects and resends from its ledger, and the memory is freed.
const MAX_PENDING_USAGE: usize = 200_000;
/// The first protocol version that carries allowances and cut-offs.
const ALLOWANCE_VERSION: u16 = 5;
/// How often a session sends its host every allowance again, whatever changed: usage on other
/// hosts lowers what a user has left, and this host hears of it at least this often.
const ALLOWANCES_EVERY: Duration = Duration::from_secs(30);

pub async fn run(ctl: Arc<Controller>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some(Identity::Agent(host_id)) = peer_identity(&conn) else {
        if let Some(more) = ctl
            .metrics
            .refused_quietly("agent_without_agent_certificate")
        {
            warn!(%remote, more_since_last_line = more, "agent ALPN without an agent certificate, refused");
        }
        conn.close(close::REFUSED.into(), b"agent certificate required");
        return;
    };
    let (mut send, recv) =
        match tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            _ => {
                debug!(%remote, host = %host_id, "no session stream opened");
                return;
            }
        };
    let (msgs_tx, mut msgs) = mpsc::channel(64);
    let reader = tokio::spawn(read_loop(recv, msgs_tx));
    let hello = match tokio::time::timeout(Duration::from_secs(10), msgs.recv()).await {
        Ok(Some(Ok((AgentMsg::Hello(hello), _)))) => hello,
        other => {
            warn!(%remote, host = %host_id, first = ?other.map(|m| m.map(|m| m.map(|_| ()))), "session did not start with hello");
            conn.close(close::PROTOCOL.into(), b"expected hello");
            return;
        }
    };
    let Some((host_name, version)) = authorize(&ctl, &conn, &host_id, &hello, &mut send).await
    else {
        return;
    };
    let address = hello
        .public_address
        .clone()
        .unwrap_or_else(|| remote.ip().to_string());
    if let Err(e) = ctl
        .store
        .record_seen(&host_id, &hello.agent_version, &address, now())
        .await
    {
        warn!(host = %host_name, error = %e, "cannot record last seen");
    }
    let welcome = ControllerMsg::Welcome {
        version,
        host_name: host_name.clone(),
    };
    if write_frame(&mut send, &welcome).await.is_err() {
        return;
    }
    let mut session = Session {
        ctl: ctl.clone(),
        host_id: host_id.clone(),
        host_name: host_name.clone(),
        agent_version: hello.agent_version.clone(),
        version,
        send,
        generation: 0,
        digest: DesiredState::default().digest(),
        acks: crate::metrics::AckClock::default(),
        conn: conn.clone(),
        failing: 0,
        usage: Usage::default(),
        allowances: ctl.allowance_changes(),
    };
    let online = Online {
        ctl: ctl.clone(),
        host_id: host_id.clone(),
        host_name: host_name.clone(),
        agent_version: hello.agent_version.clone(),
        address: address.clone(),
        session: None,
    };
    let Ok((mut reg, online)) = session.start(hello.applied, online).await else {
        // `online`, dropped inside `start`, already took the host offline.
        return;
    };
    info!(host = %host_name, %remote, agent_version = %hello.agent_version, version, generation = session.generation, "agent connected");
    let reason = session.serve(&mut reg, &mut msgs, &address).await;
    reader.abort();
    drop(online);
    match reason {
        End::Revoked => {
            refuse(&conn, &mut session.send, "host removed").await;
            info!(host = %host_name, "session closed: host removed");
        }
        End::Protocol(e) => {
            warn!(host = %host_name, error = %e, "protocol error, closing session");
            conn.close(close::PROTOCOL.into(), e.as_bytes());
        }
        End::Replaced => {
            conn.close(close::SHUTDOWN.into(), b"replaced by a newer session");
            info!(host = %host_name, "session closed: replaced by a newer session");
        }
        End::Closed => info!(host = %host_name, "agent disconnected"),
        End::StoreUnavailable(e) => {
            warn!(host = %host_name, error = %e, "closing the session: the store cannot take its usage");
            conn.close(close::SHUTDOWN.into(), b"controller store unavailable");
        }
    }
}

/// A registered session, for as long as it lives: dropping it, on whatever path the session
/// ends (a failed first send, a protocol error, a panic), unregisters it and records the
/// host's last contact. Without it, a session that failed before serving stayed "online"
/// with nobody listening, and `--wait` reported its changes as pending forever.
struct Online {
    ctl: Arc<Controller>,
    host_id: String,
    host_name: String,
    agent_version: String,
    address: String,
    /// Set once registered.
    session: Option<u64>,
}

impl Drop for Online {
    fn drop(&mut self) {
        let Some(session) = self.session else {
            return;
        };
        // Replaced by a newer session or revoked: the host did not go offline.
        let offline = self.ctl.fleet.unregister(&self.host_id, session);
        let (ctl, host_id) = (self.ctl.clone(), std::mem::take(&mut self.host_id));
        let host_name = std::mem::take(&mut self.host_name);
        let (agent_version, address) = (
            std::mem::take(&mut self.agent_version),
            std::mem::take(&mut self.address),
        );
        // Drop cannot await: the store write runs on its own (SQLite is off the runtime).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = ctl
                    .store
                    .record_seen(&host_id, &agent_version, &address, now())
                    .await
                {
                    debug!(host_id = %host_id, error = %e, "cannot record last seen at disconnect");
                }
                if offline {
                    went_offline(&ctl, &host_id, &host_name).await;
                }
            });
        }
    }
}

/// Records and announces that a host's last session ended.
async fn went_offline(ctl: &Arc<Controller>, host_id: &str, host_name: &str) {
    let at = now();
    if let Err(e) = ctl
        .store
        .record_host_event(host_id, EventKind::Offline, "session ended", at)
        .await
    {
        debug!(host = %host_name, error = %e, "cannot record the offline event");
    }
    let failing = ctl.store.failing(host_id).await.map_or(0, |f| f.len());
    webhooks::hub(ctl).emit(
        &ctl.metrics,
        Notice {
            event: WebhookEvent::HostOffline,
            host_id: host_id.to_string(),
            host_name: host_name.to_string(),
            detail: json!({ "failing": failing }),
        },
    );
}

/// Agent clock minus controller clock, in ms: the agent's `sent_at_ms` against the moment the
/// report was read, less half the round trip (the report's time on the wire).
pub fn clock_skew_ms(sent_at_ms: i64, received_ms: i64, rtt: Duration) -> i64 {
    let half_rtt = i64::try_from(rtt.as_millis() / 2).unwrap_or(i64::MAX);
    sent_at_ms.saturating_sub(received_ms.saturating_sub(half_rtt))
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks that the agent asks for its own state, exists, is not revoked, and shares a version.
/// Returns the host name and the negotiated version, or refuses and closes.
async fn authorize(
    ctl: &Controller,
    conn: &quinn::Connection,
    host_id: &str,
    hello: &AgentHello,
    send: &mut SendStream,
) -> Option<(String, u16)> {
    let remote = conn.remote_address();
    let refusal = if hello.host_id != host_id {
        Some((
            "other_host_state",
            format!(
                "agent {host_id} may not read the state of host {}",
                hello.host_id
            ),
        ))
    } else {
        match ctl.store.host(host_id).await {
            Ok(Some(host)) => match negotiate(hello.min_version, hello.max_version) {
                Some(v) => return Some((host.name, v)),
                None => Some((
                    "version",
                    format!(
                        "no common protocol version (agent {}-{})",
                        hello.min_version, hello.max_version
                    ),
                )),
            },
            Ok(None) if ctl.store.is_revoked(host_id).await.unwrap_or(false) => Some((
                "revoked",
                format!("host {host_id} was removed (certificate revoked)"),
            )),
            Ok(None) => Some(("unknown_host", format!("unknown host {host_id}"))),
            Err(e) => Some(("store", format!("store unavailable: {e}"))),
        }
    };
    let (metric, reason) = refusal?;
    ctl.metrics.refused(metric);
    warn!(%remote, host = %host_id, %reason, "agent session refused");
    refuse(conn, send, &reason).await;
    None
}

/// Sends `Refused`, gives the agent a moment to read it (quinn drops undelivered stream data
/// when a connection closes), then closes with the REFUSED code.
async fn refuse(conn: &quinn::Connection, send: &mut SendStream, reason: &str) {
    let msg = ControllerMsg::Refused {
        reason: reason.to_string(),
    };
    if write_frame(send, &msg).await.is_ok() && send.finish().is_ok() {
        // The agent closes on reading it; don't wait long for a peer that doesn't.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    }
    conn.close(close::REFUSED.into(), reason.as_bytes());
}

/// How a backlog's end command ends the session.
fn end_of(next: Next) -> End {
    match next {
        Next::Revoke => End::Revoked,
        _ => End::Replaced,
    }
}

enum End {
    Closed,
    Revoked,
    /// A newer session of the same host took over.
    Replaced,
    Protocol(String),
    /// The store failed to take this session's usage for too long.
    StoreUnavailable(String),
}

/// This session's usage batches not yet applied, in arrival order.
#[derive(Default)]
struct Usage {
    pending: std::collections::VecDeque<Arc<UsageReport>>,
    /// Entries in `pending`.
    entries: usize,
    /// Why a batch of this session was refused: later ones are not applied either.
    refused: Option<String>,
}

struct Session {
    ctl: Arc<Controller>,
    host_id: String,
    host_name: String,
    agent_version: String,
    /// The negotiated protocol version: from 2 on, the block list is split across chunks.
    version: u16,
    send: SendStream,
    /// The generation this host was last sent and its digest: what the agent's acks must
    /// match. Not the state itself: a push carries the step of the digest (`store::digest`),
    /// so a session's memory does not grow with its host's users.
    generation: u64,
    digest: Digest,
    /// When each change still awaiting an ack was taken (the ack latency metric).
    acks: crate::metrics::AckClock,
    /// For the round-trip time in clock-skew measurements.
    conn: quinn::Connection,
    /// Resources failing as last recorded: its moves across zero are the degraded and
    /// recovered transitions.
    failing: u32,
    usage: Usage,
    /// Changed when allowances changed elsewhere (an edit, a reset): send them all again.
    allowances: tokio::sync::watch::Receiver<u64>,
}

impl Session {
    /// Reads the full state and registers under the change lock, then sends the state. The
    /// registration is tied to `online` at once, so every way out unregisters it.
    async fn start(
        &mut self,
        applied: Option<(u64, Digest)>,
        mut online: Online,
    ) -> Result<(Registration, Online), ()> {
        let guard = self.ctl.fleet.change_lock.lock().await;
        let state = self.ctl.store.desired_state(&self.host_id).await;
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                warn!(host = %self.host_name, error = %e, "cannot read desired state");
                return Err(());
            }
        };
        // The agent's claim counts as an ack only if it is exactly the current state: after a
        // store restore generations can go backwards, and a stale claim must not satisfy waits.
        let current = (state.generation, state.digest());
        let ack = AckState {
            generation: applied.filter(|a| *a == current).map_or(0, |(g, _)| g),
            results: Vec::new(),
        };
        let reg = self.ctl.fleet.register(&self.host_id, ack);
        online.session = Some(reg.session);
        drop(guard);
        // Last known failures count until the agent reports again (they are kept offline).
        self.failing = match self.ctl.store.failing(&self.host_id).await {
            Ok(f) => f.len() as u32,
            Err(e) => {
                warn!(host = %self.host_name, error = %e, "cannot read the host's failing resources");
                0
            }
        };
        if !reg.replaced {
            self.came_online(&online.address).await;
        }
        if let Err(e) = self.send_full(&state, current.1).await {
            debug!(host = %self.host_name, error = %e, "first full state not delivered");
            return Err(());
        }
        // Right behind the state: until they arrive the agent enforces the ones it kept.
        if let Err(e) = self.send_allowances().await {
            debug!(host = %self.host_name, error = %e, "first allowances not delivered");
            return Err(());
        }
        Ok((reg, online))
    }

    async fn came_online(&self, address: &str) {
        let message = format!("connected from {address}, agent {}", self.agent_version);
        if let Err(e) = self
            .ctl
            .store
            .record_host_event(&self.host_id, EventKind::Online, &message, now())
            .await
        {
            debug!(host = %self.host_name, error = %e, "cannot record the online event");
        }
        self.notify(
            WebhookEvent::HostOnline,
            json!({ "failing": self.failing, "address": address, "agent_version": self.agent_version }),
        );
    }

    fn notify(&self, event: WebhookEvent, detail: serde_json::Value) {
        webhooks::hub(&self.ctl).emit(
            &self.ctl.metrics,
            Notice {
                event,
                host_id: self.host_id.clone(),
                host_name: self.host_name.clone(),
                detail,
            },
        );
    }

    /// Records a complete result set and announces a move across zero failures. A store
    /// failure is logged and leaves the session running: health must not cut a host off.
    async fn record_results(&mut self, results: &[ResourceResult]) {
        let update = match self
            .ctl
            .store
            .record_results(&self.host_id, results, now())
            .await
        {
            Ok(u) => u,
            Err(e) => {
                warn!(host = %self.host_name, error = %e, "cannot record the host's results");
                return;
            }
        };
        for f in &update.new_failures {
            warn!(host = %self.host_name, resource = %f.resource, message = %f.message, "resource failing");
        }
        for r in &update.recovered {
            info!(host = %self.host_name, resource = %r, "resource recovered");
        }
        let before = std::mem::replace(&mut self.failing, update.failing);
        match transition(before, update.failing) {
            Some(Transition::Degraded) => {
                self.ctl.metrics.event("host_degraded");
                warn!(host = %self.host_name, failing = update.failing, "host degraded");
                let resources: Vec<_> = update
                    .new_failures
                    .iter()
                    .take(NOTICE_RESOURCES)
                    .map(|f| json!({ "resource": f.resource, "message": f.message }))
                    .collect();
                self.notify(
                    WebhookEvent::HostDegraded,
                    json!({ "failing": update.failing, "resources": resources }),
                );
            }
            Some(Transition::Recovered) => {
                self.ctl.metrics.event("host_recovered");
                info!(host = %self.host_name, "host recovered: no resource failing");
                let recovered: Vec<_> = update.recovered.iter().take(NOTICE_RESOURCES).collect();
                self.notify(
                    WebhookEvent::HostRecovered,
                    json!({ "failing": 0, "recovered": recovered }),
                );
            }
            None => {}
        }
    }

    /// Keeps a report's vitals with the registration, and announces a certificate near expiry.
    fn keep_vitals(&self, reg: &Registration, report: &mut AgentReport, received_ms: i64) {
        let clock_skew_ms = clock_skew_ms(report.sent_at_ms, received_ms, self.conn.rtt());
        if let Some(not_after) = report.cert_not_after {
            webhooks::hub(&self.ctl).cert_seen(
                &self.ctl.metrics,
                &self.host_id,
                &self.host_name,
                not_after,
                now(),
            );
        }
        let vitals = HostVitals {
            reported_at: received_ms / 1_000,
            clock_skew_ms,
            cert_not_after: report.cert_not_after,
            containers: std::mem::take(&mut report.containers),
            disk_free_bytes: report.disk_free_bytes,
            ledger_backlog: report.ledger_backlog,
        };
        self.ctl
            .fleet
            .set_vitals(&self.host_id, reg.session, vitals);
    }

    /// A reconcile's report: results, repairs and vitals.
    async fn report(&mut self, reg: &Registration, mut report: AgentReport, received_ms: i64) {
        // Vitals first: a view that sees this report's results sees its vitals too.
        self.keep_vitals(reg, &mut report, received_ms);
        self.record_results(&report.results).await;
        if !report.repairs.is_empty() {
            for r in report.repairs.iter().take(NOTICE_RESOURCES) {
                info!(host = %self.host_name, resource = %r.resource, action = %r.action, "agent repaired drift");
            }
            self.ctl.metrics.event("reconcile_repaired");
            if let Err(e) = self
                .ctl
                .store
                .record_repairs(&self.host_id, &report.repairs, now())
                .await
            {
                warn!(host = %self.host_name, error = %e, "cannot record repairs");
            }
        }
    }

    /// Sends the full state again. Pushes already queued are covered by it and dropped.
    async fn resync(&mut self, reg: &mut Registration) -> Result<(), End> {
        let guard = self.ctl.fleet.change_lock.lock().await;
        let state = self
            .ctl
            .store
            .desired_state(&self.host_id)
            .await
            .map_err(|e| End::Protocol(format!("cannot read desired state: {e}")))?;
        if let Some(end) = reg.backlog.covered_by_full_state() {
            return Err(end_of(end));
        }
        drop(guard);
        let digest = state.digest();
        self.send_full(&state, digest)
            .await
            .map_err(|e| End::Protocol(e.to_string()))?;
        self.send_allowances()
            .await
            .map_err(|e| End::Protocol(e.to_string()))
    }

    /// Applies a usage batch after those still pending, acking each after its commit.
    async fn usage(&mut self, report: UsageReport) -> Result<(), End> {
        if self.version < 4 {
            return Err(End::Protocol(format!(
                "usage report on a protocol {} session (needs 4)",
                self.version
            )));
        }
        if let Some(why) = &self.usage.refused {
            debug!(host = %self.host_name, epoch = report.epoch, entries = report.entries.len(), refused = %why, "usage batch not applied: an earlier batch of this session was refused");
            return Ok(());
        }
        self.usage.entries += report.entries.len();
        self.usage.pending.push_back(Arc::new(report));
        while let Some(batch) = self.usage.pending.front().cloned() {
            // Grouped with other sessions' batches into one transaction (`ingest.rs`), which
            // also dispatches the status changes it caused.
            let result = crate::ingest::apply(&self.ctl, &self.host_id, batch.clone()).await;
            let (epoch, entries) = (batch.epoch, batch.entries.len());
            match result {
                Ok(done) => {
                    if done.skipped > 0 {
                        info!(host = %self.host_name, epoch, up_to = done.up_to, applied = done.applied, duplicates = done.skipped, "usage batch replayed: duplicates skipped");
                    } else {
                        debug!(host = %self.host_name, epoch, up_to = done.up_to, applied = done.applied, bytes = done.bytes, "usage batch applied");
                    }
                    if done.unknown_users > 0 {
                        info!(host = %self.host_name, epoch, users = done.unknown_users, "usage of users not in the store (removed while their bytes were in flight?) kept under their ids");
                    }
                    self.usage.entries -= entries;
                    self.usage.pending.pop_front();
                    let ack = ControllerMsg::UsageAck {
                        epoch,
                        up_to: done.up_to,
                    };
                    write_frame(&mut self.send, &ack)
                        .await
                        .map_err(|e| End::Protocol(e.to_string()))?;
                }
                Err(StoreError::Batch(e)) => {
                    self.ctl.metrics.refused("usage_batch");
                    warn!(host = %self.host_name, epoch, entries, error = %e, "usage batch refused, nothing of it applied or acked; this session applies no more usage");
                    self.usage.refused = Some(e.to_string());
                    self.usage.pending.clear();
                    self.usage.entries = 0;
                    return Ok(());
                }
                Err(e) => {
                    let pending = self.usage.pending.len();
                    if self.usage.entries > MAX_PENDING_USAGE {
                        return Err(End::StoreUnavailable(e.to_string()));
                    }
                    warn!(host = %self.host_name, epoch, pending, error = %e, "cannot store usage: not acked, kept and tried again with the next batch");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Signs a fresh CSR for the session's own identity; the host cannot pick another.
    async fn renew(&mut self, csr_pem: &str) -> ControllerMsg {
        let identity = Identity::Agent(self.host_id.clone());
        let lifetime = self.ctl.config.agent_cert_lifetime;
        let issued = match self.ctl.ca.sign_csr(csr_pem, &identity, lifetime) {
            Ok(i) => i,
            Err(e) => {
                warn!(host = %self.host_name, error = %e, "certificate renewal refused");
                return ControllerMsg::RenewFailed {
                    reason: e.to_string(),
                };
            }
        };
        if let Err(e) = self
            .ctl
            .store
            .set_host_certificate(&self.host_id, &issued.serial, issued.not_after)
            .await
        {
            warn!(host = %self.host_name, error = %e, "cannot record the renewed certificate");
            return ControllerMsg::RenewFailed {
                reason: "controller store unavailable".into(),
            };
        }
        info!(host = %self.host_name, not_after = issued.not_after, "agent certificate renewed");
        ControllerMsg::Renewed {
            cert_pem: issued.cert_pem,
        }
    }

    /// Sends every allowance of the host's users (protocol 5 on), as the store has them now.
    /// A store failure is logged and sends nothing: the agent keeps enforcing what it has.
    async fn send_allowances(&mut self) -> Result<(), FrameError> {
        if self.version < ALLOWANCE_VERSION {
            return Ok(());
        }
        self.allowances.mark_unchanged();
        let (epoch, up_to, users) = match self.ctl.store.host_allowances(&self.host_id, now()).await
        {
            Ok(a) => a,
            Err(e) => {
                warn!(host = %self.host_name, error = %e, "cannot read allowances; the host keeps the ones it has");
                return Ok(());
            }
        };
        debug!(host = %self.host_name, users = users.len(), epoch, up_to, "allowances sent");
        let msg = ControllerMsg::Allowances(Allowances {
            epoch,
            up_to,
            complete: true,
            users,
        });
        write_frame(&mut self.send, &msg).await
    }

    /// Records the users the agent cut off by itself as host events.
    async fn enforced(&mut self, cut: Vec<CutOff>) {
        if self.version < ALLOWANCE_VERSION {
            return;
        }
        for c in cut.iter().take(1_000) {
            let why = match c.cause {
                CutOffCause::DataUsedUp => "its data allowance was used up",
                CutOffCause::Expired => "its expiry passed",
            };
            let user = match self.ctl.store.user_name(&c.user).await {
                Ok(Some(n)) => n,
                _ => c.user.clone(),
            };
            let message = format!("agent cut off user {user} by itself: {why}");
            info!(host = %self.host_name, %user, cause = ?c.cause, at = c.at, "{message}");
            if let Err(e) = self
                .ctl
                .store
                .record_host_event(
                    &self.host_id,
                    EventKind::Enforced,
                    &message,
                    c.at.min(now()),
                )
                .await
            {
                debug!(host = %self.host_name, error = %e, "cannot record the cut-off");
            }
        }
    }

    /// Sends `state` (whose digest is `digest`: hashing every user once is enough) in chunks;
    /// from now on acks are checked against it.
    async fn send_full(&mut self, state: &DesiredState, digest: Digest) -> Result<(), FrameError> {
        self.generation = state.generation;
        self.digest = digest;
        // References: a chunk's users are copied only while that chunk is encoded.
        let users: Vec<_> = state.users.values().collect();
        let user_chunks: Vec<_> = users.chunks(USERS_PER_CHUNK).collect();
        // Version 1 agents read the block list from the first chunk only.
        let blocked_per_chunk = if self.version >= 2 {
            BLOCKED_PER_CHUNK
        } else {
            state.firewall.blocked.len().max(1)
        };
        let blocked_chunks: Vec<_> = state.firewall.blocked.chunks(blocked_per_chunk).collect();
        let count = user_chunks.len().max(blocked_chunks.len()).max(1);
        for i in 0..count {
            let chunk = StateChunk {
                generation: state.generation,
                digest: self.digest,
                index: i as u32,
                last: i + 1 == count,
                services: if i == 0 {
                    state.services.values().cloned().collect()
                } else {
                    Vec::new()
                },
                users: user_chunks
                    .get(i)
                    .map(|c| c.iter().map(|u| (*u).clone()).collect())
                    .unwrap_or_default(),
                firewall: FirewallSpec {
                    blocked: blocked_chunks
                        .get(i)
                        .map(|c| c.to_vec())
                        .unwrap_or_default(),
                },
            };
            write_frame(&mut self.send, &ControllerMsg::FullState(chunk)).await?;
        }
        debug!(host = %self.host_name, generation = state.generation, users = users.len(), blocked = state.firewall.blocked.len(), chunks = count, "full state sent");
        Ok(())
    }

    async fn serve(
        &mut self,
        reg: &mut Registration,
        msgs: &mut mpsc::Receiver<Inbound>,
        address: &str,
    ) -> End {
        let mut seen = tokio::time::Instant::now();
        let mut refresh = tokio::time::interval(ALLOWANCES_EVERY);
        refresh.reset();
        loop {
            tokio::select! {
                changed = self.allowances.changed() => {
                    if changed.is_err() { return End::Closed; }
                    if let Err(e) = self.send_allowances().await { return End::Protocol(e.to_string()); }
                }
                _ = refresh.tick() => {
                    if let Err(e) = self.send_allowances().await { return End::Protocol(e.to_string()); }
                }
                next = reg.backlog.next() => match next {
                    Next::Pushes(pushes) => {
                        if let Err(end) = self.push(reg, pushes).await { return end; }
                    }
                    Next::Resync => {
                        info!(host = %self.host_name, "resending the full state: the push backlog overflowed");
                        if let Err(end) = self.resync(reg).await { return end; }
                    }
                    end @ (Next::Revoke | Next::Replaced) => return end_of(end),
                },
                msg = msgs.recv() => match msg {
                    None => return End::Closed,
                    Some(Err(e)) => return End::Protocol(e.to_string()),
                    Some(Ok((msg, received_ms))) => {
                        if seen.elapsed() > SEEN_EVERY {
                            seen = tokio::time::Instant::now();
                            let _ = self.ctl.store.record_seen(&self.host_id, &self.agent_version, address, now()).await;
                        }
                        if let Err(end) = self.handle(reg, msg, received_ms).await { return end; }
                    }
                },
            }
        }
    }

    /// Sends the pushes and whatever else arrives within the coalescing window as one delta.
    async fn push(&mut self, reg: &mut Registration, mut batch: Vec<HostPush>) -> Result<(), End> {
        let taken = std::time::Instant::now();
        tokio::time::sleep(COALESCE).await;
        match reg.backlog.take() {
            None => {}
            Some(Next::Pushes(more)) => batch.extend(more),
            // The backlog overflowed meanwhile: the full state covers this batch too.
            Some(Next::Resync) => return self.resync(reg).await,
            Some(end @ (Next::Revoke | Next::Replaced)) => return Err(end_of(end)),
        }
        // A change that brings a user back comes with fresh allowances: send them first.
        if self.allowances.has_changed().unwrap_or(false) {
            self.send_allowances()
                .await
                .map_err(|e| End::Protocol(e.to_string()))?;
        }
        let base = self.generation;
        let mut changes = Vec::new();
        for p in batch {
            self.ctl.metrics.pushed(&mut self.acks, p.generation, taken);
            if p.base_generation != self.generation {
                warn!(host = %self.host_name, held = self.generation, base = p.base_generation, "push out of sequence, resending full state");
                return self.resync(reg).await;
            }
            if p.full {
                // Cheaper as the whole state (`store::digest`); it covers the rest too.
                return self.resync(reg).await;
            }
            self.generation = p.generation;
            self.digest ^= p.step;
            changes.extend(p.changes);
        }
        let delta = ControllerMsg::Delta {
            base_generation: base,
            generation: self.generation,
            digest: self.digest,
            changes,
        };
        write_frame(&mut self.send, &delta)
            .await
            .map_err(|e| End::Protocol(e.to_string()))
    }

    async fn handle(
        &mut self,
        reg: &mut Registration,
        msg: AgentMsg,
        received_ms: i64,
    ) -> Result<(), End> {
        match msg {
            AgentMsg::KeepAlive => Ok(()),
            AgentMsg::Ack(ack) => {
                let expected = self.digest;
                if ack.generation > self.generation {
                    return Err(End::Protocol(format!(
                        "ack for generation {} which was never sent (latest {})",
                        ack.generation, self.generation
                    )));
                }
                let mismatch = ack.generation == self.generation && ack.digest != expected;
                if mismatch {
                    warn!(host = %self.host_name, generation = ack.generation, "digest mismatch, resending full state");
                    self.ctl.metrics.event("digest_mismatch");
                    return self.resync(reg).await;
                }
                self.ctl
                    .metrics
                    .acked(&mut self.acks, ack.generation, &ack.results);
                let _ = self
                    .ctl
                    .store
                    .record_ack(
                        &self.host_id,
                        ack.generation,
                        &ack.digest.to_string(),
                        now(),
                    )
                    .await;
                let failed = ack
                    .results
                    .iter()
                    .filter(|r| r.outcome != vpn_shared::proto::Outcome::Ok)
                    .count();
                info!(host = %self.host_name, generation = ack.generation, digest = %ack.digest.short(), failed, "agent acked");
                // An ack carries the whole set, like a report.
                self.record_results(&ack.results).await;
                reg.acked.send_replace(AckState {
                    generation: ack.generation,
                    results: ack.results,
                });
                Ok(())
            }
            AgentMsg::ResyncRequest { reason } => {
                info!(host = %self.host_name, %reason, "agent asked for a resync");
                self.resync(reg).await
            }
            AgentMsg::Hello(_) => Err(End::Protocol("hello in the middle of a session".into())),
            AgentMsg::Health(health) => {
                // An agent re-sends its health on every connect and may send it at will: log
                // (once, one line) only what changed, and keep only a bounded copy.
                let changed = self
                    .ctl
                    .fleet
                    .set_health(&self.host_id, reg.session, health.missing);
                if changed.is_some() {
                    self.ctl.metrics.event("health_changed");
                }
                match changed {
                    Some(missing) if missing.is_empty() => {
                        info!(host = %self.host_name, "host health changed: no feature missing");
                    }
                    Some(missing) => {
                        warn!(host = %self.host_name, count = missing.len(), missing = %missing.join("; "), "host health changed: features missing");
                    }
                    None => {}
                }
                Ok(())
            }
            AgentMsg::Usage(report) => self.usage(report).await,
            AgentMsg::Enforced(cut) => {
                self.enforced(cut).await;
                Ok(())
            }
            AgentMsg::Report(report) => {
                self.report(reg, report, received_ms).await;
                Ok(())
            }
            AgentMsg::RenewRequest { csr_pem } => {
                let reply = self.renew(&csr_pem).await;
                write_frame(&mut self.send, &reply)
                    .await
                    .map_err(|e| End::Protocol(e.to_string()))
            }
        }
    }
}

async fn read_loop(mut recv: RecvStream, tx: mpsc::Sender<Inbound>) {
    loop {
        let msg = read_frame::<_, AgentMsg>(&mut recv, MAX_FRAME).await;
        let stop = !matches!(msg, Ok(Some(_)));
        let item = match msg {
            // Stamped as read, before any queueing, for the clock-skew measurement.
            Ok(Some(m)) => Ok((m, now_ms())),
            Ok(None) => break,
            Err(e) => Err(e),
        };
        if tx.send(item).await.is_err() || stop {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_removes_half_the_round_trip() {
        // The agent stamped 10_000; the report arrived at 10_050 after a 100 ms round trip,
        // so it left the agent at about 10_000 by the controller's clock: no skew.
        assert_eq!(clock_skew_ms(10_000, 10_050, Duration::from_millis(100)), 0);
        // An agent 3 s ahead.
        assert_eq!(
            clock_skew_ms(13_000, 10_050, Duration::from_millis(100)),
            3_000
        );
        assert_eq!(clock_skew_ms(7_000, 10_000, Duration::ZERO), -3_000);
        assert_eq!(clock_skew_ms(i64::MIN, i64::MAX, Duration::MAX), i64::MIN);
    }
}
