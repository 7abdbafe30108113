//! The agent's side of the control channel, and the fail-static loop around it.
//!
//! `run` applies the state saved on disk before anything else (the controller may be down for a
//! week), then dials the controller forever with jittered exponential backoff. Connected, it
//! applies full states and deltas, persists each applied state, and acks with the generation,
//! the digest and per-resource results. Whether connected or not, the state is reconciled every
//! 10 s so a removed or restarted container comes back with its users; what that repaired and
//! what still fails goes to the controller in [`AgentMsg::Report`]s (protocol 3 and later), on
//! change or at least every minute, with the repairs made while disconnected kept for later.
//!
//! Every `usage_interval` (connected or not: fail-static) the services' counters are read into
//! the traffic [`Ledger`]; connected to a controller of protocol 4 or later, the unacked
//! entries go out in [`AgentMsg::Usage`] batches, one in flight at a time, from the oldest
//! unacked again after every reconnect, and leave the ledger when a `UsageAck` names them.
//!
//! Offline enforcement (SPEC §2.6, decided in [`crate::allowance`]): the controller's
//! [`Allowances`](vpn_shared::proto::Allowances) are kept on disk, and after every usage tick, allowance, ack and new desired
//! state the agent decides again who has used up their bytes or is past their expiry. What
//! touches the host — apply, reconcile, the counters read — is the *effective* state: the
//! desired state (`current`) less those users. What is saved, acked (generation, digest) and
//! said in `Hello` stays the desired state's, so the controller sees no mismatch; a user cut
//! off simply has no results. Cut-offs go to controllers of protocol 5 in [`AgentMsg::Enforced`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use vpn_shared::model::{Change, TrackedState};
use vpn_shared::proto::frame::{FrameError, MAX_FRAME, read_frame, write_frame};
use vpn_shared::proto::{
    ALPN_AGENT, Ack, AgentHello, AgentMsg, AgentReport, ControllerMsg, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION, ResourceResult, StateChunk,
};
use vpn_shared::transport::{self, SERVER_NAME};

use crate::allowance::Enforcer;
use crate::apply::Applier;
use crate::backoff;
use crate::config::{Config, Paths};
use crate::drivers::DriverError;
use crate::hostnet::HostNet;
use crate::ledger::delta::{Now, Reset};
use crate::ledger::{self, LEDGER_RESOURCE, Ledger};
use crate::metrics::Metrics;
use crate::renew::{self, Renewal};
use crate::report::{self, LastSent, PendingRepairs};
use crate::state;

mod enforce;

/// Application keep-alive, well inside the controller's idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Users are re-checked against the running services this often.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often the certificate's renewal time is checked while connected.
const RENEW_CHECK: Duration = Duration::from_secs(5);
/// The first protocol version whose controllers take [`AgentMsg::Report`].
const REPORT_VERSION: u16 = 3;
/// The first protocol version whose controllers take [`AgentMsg::Usage`].
const USAGE_VERSION: u16 = 4;
/// The first protocol version whose controllers send
/// [`Allowances`](vpn_shared::proto::Allowances) and take
/// [`AgentMsg::Enforced`].
const ENFORCE_VERSION: u16 = 5;
/// A batch not acked in this long is sent again (from the oldest unacked).
const USAGE_RESEND: Duration = Duration::from_secs(30);

/// The agent: its configuration, applier and the state it last applied.
pub struct Agent {
    pub config: Config,
    pub paths: Paths,
    pub applier: Applier,
    pub net: HostNet,
    /// The desired state, as the controller sent it (saved, acked); the host runs it less the
    /// users `enforcer` cut off.
    pub current: TrackedState,
    /// Results of the last apply, re-sent in acks.
    last_results: Vec<ResourceResult>,
    /// Results of the last apply or reconcile (with the last apply's `host/state`): what a
    /// report carries.
    report_results: Vec<ResourceResult>,
    /// Repairs made since the last report went out; kept across sessions, so what a reconcile
    /// fixed while the controller was away is reported after reconnecting.
    pending_repairs: PendingRepairs,
    /// The failing resources last seen, so a reconcile logs each change once, not every 10 s.
    failing: BTreeMap<String, String>,
    renewal: Renewal,
    metrics: Metrics,
    /// The traffic ledger; `None` while it cannot be opened (retried every usage interval,
    /// the reason in `ledger_error`, reported as `host/ledger`).
    ledger: Option<Ledger>,
    ledger_error: Option<String>,
    /// When counters are read next; one cadence across sessions and the pauses between them.
    next_usage: tokio::time::Instant,
    /// Origin of the monotonic clock the ledger's restart test uses.
    clock: std::time::Instant,
    /// Offline enforcement: the allowances, who is cut off now, the cut-offs not reported.
    enforcer: Enforcer,
    /// Why the allowances could not be saved last (logged when it changes), reported as
    /// `host/allowances` until a save succeeds.
    allowances_error: Option<String>,
}

enum SessionEnd {
    /// The controller refused this host; wait the maximum before trying again.
    Refused(String),
    Lost(String),
}

impl Agent {
    pub fn new(
        config: Config,
        paths: Paths,
        applier: Applier,
        net: HostNet,
        metrics: Metrics,
    ) -> Agent {
        Agent {
            config,
            paths,
            applier,
            net,
            current: TrackedState::default(),
            last_results: Vec::new(),
            report_results: Vec::new(),
            pending_repairs: PendingRepairs::default(),
            failing: BTreeMap::new(),
            renewal: Renewal::new(backoff::random_unit()),
            metrics,
            ledger: None,
            ledger_error: None,
            next_usage: tokio::time::Instant::now(),
            clock: std::time::Instant::now(),
            enforcer: Enforcer::default(),
            allowances_error: None,
        }
    }

    fn now(&self) -> Now {
        Now {
            unix_ms: unix_now_ms(),
            mono: self.clock.elapsed(),
        }
    }

    /// Opens the ledger if it is not open; a failure is logged when it changes.
    fn open_ledger(&mut self) {
        if self.ledger.is_some() {
            return;
        }
        match Ledger::open(&self.paths.data_dir, ledger::Limits::default()) {
            Ok(l) => {
                info!(
                    epoch = l.epoch(),
                    backlog = l.backlog(),
                    "traffic ledger open"
                );
                self.metrics.ledger_backlog(l.backlog());
                self.ledger = Some(l);
                self.ledger_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if self.ledger_error.as_deref() != Some(msg.as_str()) {
                    error!(error = %msg, "cannot open the traffic ledger; counters are not read until it opens");
                }
                self.ledger_error = Some(msg);
            }
        }
    }

    /// `host/ledger` as it stands.
    fn ledger_result(&self) -> ResourceResult {
        match (&self.ledger, &self.ledger_error) {
            (Some(l), _) => l.result(),
            (None, Some(e)) => ResourceResult::error(LEDGER_RESOURCE, e.as_str()),
            (None, None) => ResourceResult::ok(LEDGER_RESOURCE),
        }
    }

    /// Tells the ledger which counters an apply or reconcile restarted from zero.
    fn note_resets(&mut self, resets: BTreeSet<Reset>) {
        let now = self.now();
        if let Some(l) = self.ledger.as_mut() {
            l.reset(resets, now);
        }
    }

    /// Reads every service's counters into the ledger (the usage tick).
    async fn read_usage(&mut self) {
        self.next_usage = tokio::time::Instant::now() + self.config.usage_interval;
        self.open_ledger();
        if self.ledger.is_none() {
            return;
        }
        let state = self.enforcer.effective(&self.current);
        let mut readings = Vec::new();
        let mut by_port = Vec::new();
        for (service, read) in self.applier.read_counters(&state).await {
            match read {
                Ok(c) => readings.push(ledger::reading(&state, &service, c)),
                Err(DriverError::NoCounters { .. }) => by_port.push(service),
                // The service's own result says why; its baselines wait for the next reading.
                Err(e) => debug!(%service, error = %e, "counters not read"),
            }
        }
        if !by_port.is_empty()
            && let Some(l) = self.ledger.as_ref()
        {
            let from_ports = self
                .net
                .port_readings(&state, &by_port, l.baselines())
                .await;
            readings.extend(from_ports);
        }
        let (services, users) = ledger::state_keys(&state);
        drop(state);
        let now = self.now();
        let Some(l) = self.ledger.as_mut() else {
            return;
        };
        match l.record(&readings, &services, &users, now) {
            Ok(added) => {
                if added.entries > 0 {
                    debug!(
                        entries = added.entries,
                        bytes = added.bytes,
                        backlog = l.backlog(),
                        "usage recorded"
                    );
                }
                self.metrics.ledger_appended(added.entries, added.bytes);
            }
            // Logged by the ledger when it changes; reported as host/ledger.
            Err(e) => debug!(error = %e, "usage not recorded"),
        }
        self.metrics.ledger_backlog(l.backlog());
    }

    /// The usage tick: counters into the ledger, then who is cut off now (the bytes just read,
    /// an expiry that passed).
    async fn usage_tick(&mut self) {
        self.read_usage().await;
        self.enforce(false).await;
    }

    /// Sends the next batch of unacked entries, if any; returns its last seq.
    async fn send_usage(&mut self, send: &mut SendStream) -> Result<Option<u64>, String> {
        let Some(batch) = self
            .ledger
            .as_mut()
            .and_then(|l| l.next_batch(ledger::MAX_BATCH))
        else {
            return Ok(None);
        };
        let last = batch.entries.last().map(|e| e.seq);
        let (first, n) = (batch.entries.first().map(|e| e.seq), batch.entries.len());
        write_frame(send, &AgentMsg::Usage(batch))
            .await
            .map_err(|e| e.to_string())?;
        debug!(first, last, entries = n, "usage sent");
        Ok(last)
    }

    /// Runs until SIGINT/SIGTERM.
    pub async fn run(mut self) -> anyhow::Result<()> {
        // Before the first apply: the resets it makes go into the ledger.
        self.open_ledger();
        // Before the first apply too: a user cut off before a restart stays off (and is
        // reported again).
        self.load_allowances();
        self.next_usage = tokio::time::Instant::now() + self.config.usage_interval;
        match state::load(&self.paths.state) {
            Ok(Some(saved)) => {
                info!(
                    generation = saved.generation,
                    services = saved.services.len(),
                    users = saved.users.len(),
                    "re-applying the last saved state without the controller"
                );
                self.apply(TrackedState::new(saved)).await;
            }
            Ok(None) => info!("no saved state yet; waiting for the controller"),
            Err(e) => warn!(error = %e, "saved state unusable"),
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut attempt = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let end = tokio::select! {
                end = self.session() => end,
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
            };
            if started.elapsed() > Duration::from_secs(30) {
                attempt = 0;
            }
            let wait = match &end {
                SessionEnd::Refused(reason) => {
                    error!(%reason, "the controller refused this host");
                    // Jittered too: a controller that refuses many hosts at once (a store
                    // restored from an old backup) must not get them back in lockstep.
                    self.config
                        .reconnect_max
                        .mul_f64(0.5 + 0.5 * backoff::random_unit())
                }
                SessionEnd::Lost(reason) => {
                    warn!(%reason, attempt, "controller session ended");
                    backoff::delay(attempt, self.config.reconnect_max, backoff::random_unit())
                }
            };
            attempt = attempt.saturating_add(1);
            debug!(
                wait_ms = wait.as_millis() as u64,
                "reconnecting after a pause"
            );
            let deadline = tokio::time::Instant::now() + wait;
            let mut tick = tokio::time::Instant::now() + RECONCILE_EVERY;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline.min(tick).min(self.next_usage)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                // Fail-static: counters are read, and allowances enforced, while the
                // controller is away too.
                if now >= self.next_usage {
                    self.usage_tick().await;
                }
                if now >= tick {
                    self.reconcile().await;
                    tick = now + RECONCILE_EVERY;
                }
            }
        }
    }

    /// Makes `next` (its digest already known) the desired state: decides who of it is cut
    /// off, applies the rest, persists `next` itself and remembers the results.
    async fn apply(&mut self, next: TrackedState) {
        self.current = next;
        self.decide();
        self.apply_effective(true).await;
    }

    /// Applies the effective state (the desired state less the users cut off) and remembers
    /// the results. `save`: the desired state is new and is persisted; otherwise the last
    /// save's `host/state` result stands.
    async fn apply_effective(&mut self, save: bool) {
        let started = std::time::Instant::now();
        let state = self.enforcer.effective(&self.current);
        let applied = self.applier.apply_report(&state).await;
        let mut results = applied.results.clone();
        results.extend(self.net.apply(&state).await);
        let resets = ledger::resets(&state, &applied);
        drop(state);
        let failed = results
            .iter()
            .filter(|r| r.outcome != vpn_shared::proto::Outcome::Ok)
            .count();
        if save {
            let saved = state::saved_result(&self.paths.state, self.current.state());
            if let vpn_shared::proto::Outcome::Error(e) = &saved.outcome {
                error!(error = %e, "cannot persist the applied state");
            }
            results.push(saved);
        } else {
            results.extend(
                self.last_results
                    .iter()
                    .filter(|r| r.resource == state::STATE_RESOURCE)
                    .cloned(),
            );
        }
        info!(
            generation = self.current.generation(),
            failed,
            cut_off = self.enforcer.blocked().len(),
            "applied"
        );
        self.metrics.applied(started.elapsed(), &results);
        self.note_resets(resets);
        self.failing = report::failures(&results);
        self.report_results = results.clone();
        self.last_results = results;
    }

    /// Re-applies the current state: brings back a container that was removed or stopped and
    /// users a restarted container lost. Idempotent, and cheap when nothing drifted. What it had
    /// to change is a repair for the next report; failures are logged when they change.
    async fn reconcile(&mut self) {
        let state = self.enforcer.effective(&self.current);
        let applied = self.applier.apply_report(&state).await;
        let (net_results, net) = self.net.apply_report(&state).await;
        let resets = ledger::resets(&state, &applied);
        drop(state);
        let mut results = applied.results.clone();
        results.extend(net_results);
        // Reconcile does not save; whether the last apply's state is on disk still holds.
        results.extend(
            self.last_results
                .iter()
                .filter(|r| r.resource == state::STATE_RESOURCE)
                .cloned(),
        );
        self.note_resets(resets);
        let repairs = report::repairs(&applied, net, unix_now());
        for r in &repairs {
            info!(resource = %r.resource, action = %r.action, "reconcile repaired drift");
        }
        self.metrics.reconciled(&results, &repairs);
        self.pending_repairs.extend(repairs);
        let failing = report::failures(&results);
        let change = report::failure_change(&self.failing, &failing);
        for (resource, error) in &change.failing {
            warn!(%resource, %error, "reconcile: resource failing");
        }
        for resource in &change.recovered {
            info!(%resource, "reconcile: resource recovered");
        }
        self.failing = failing;
        self.report_results = results;
    }

    /// The host as it is now, with the repairs not yet reported.
    async fn build_report(&self) -> AgentReport {
        let containers = match self
            .applier
            .docker
            .container_health(&self.config.host_id)
            .await
        {
            Ok(list) => list
                .iter()
                .map(|c| report::container_status(&c.name, &c.labels, c.running, c.restarts))
                .collect(),
            Err(e) => {
                debug!(error = %e, "containers not listed for the report");
                Vec::new()
            }
        };
        AgentReport {
            sent_at_ms: unix_now_ms(),
            generation: self.current.generation(),
            // Only the failures: a resource missing from a report is not failing, and a host of
            // 100,000 users would otherwise send every user's "ok" once a minute.
            results: self
                .report_results
                .iter()
                .cloned()
                .chain([self.ledger_result()])
                .chain(self.allowances_result())
                .filter(|r| r.outcome != vpn_shared::proto::Outcome::Ok)
                .collect(),
            repairs: self.pending_repairs.peek(),
            containers,
            cert_not_after: renew::not_after(&self.paths.cert),
            disk_free_bytes: disk_free(&self.paths.data_dir),
            ledger_backlog: self.ledger.as_ref().map(|l| l.backlog() as u64),
        }
    }

    /// Sends a report if [`report::should_send`] says it is worth it.
    async fn maybe_report(
        &mut self,
        send: &mut SendStream,
        last: &mut Option<LastSent>,
    ) -> Result<(), String> {
        let next = self.build_report().await;
        let now = tokio::time::Instant::now();
        if !report::should_send(last.as_ref(), &next, now) {
            return Ok(());
        }
        let repairs = next.repairs.len();
        write_frame(send, &AgentMsg::Report(next.clone()))
            .await
            .map_err(|e| e.to_string())?;
        debug!(
            generation = next.generation,
            results = next.results.len(),
            repairs,
            "report sent"
        );
        self.pending_repairs.clear();
        self.metrics.report_sent();
        *last = Some(LastSent {
            report: next,
            at: now,
        });
        Ok(())
    }

    async fn session(&mut self) -> SessionEnd {
        let lost = |e: String| SessionEnd::Lost(e);
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let (ca, cert, key) = match (
            read(&self.paths.ca_cert),
            read(&self.paths.cert),
            read(&self.paths.key),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (a, b, c) => {
                return lost(format!(
                    "identity files unreadable: {:?}",
                    [a.err(), b.err(), c.err()]
                ));
            }
        };
        let addr = match tokio::net::lookup_host(&self.config.controller)
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            Ok(None) => return lost(format!("{} did not resolve", self.config.controller)),
            Err(e) => return lost(format!("resolving {}: {e}", self.config.controller)),
        };
        let client = match transport::client_config(&ca, &cert, &key, ALPN_AGENT) {
            Ok(c) => c,
            Err(e) => return lost(e.to_string()),
        };
        let endpoint = match transport::client_endpoint(addr) {
            Ok(e) => e,
            Err(e) => return lost(e.to_string()),
        };
        let connecting = match endpoint.connect_with(client, addr, SERVER_NAME) {
            Ok(c) => c,
            Err(e) => return lost(e.to_string()),
        };
        // Counters are read and quotas enforced while the handshake waits too (up to 10 s
        // against a controller that is gone): fail-static has no pause.
        tokio::pin!(connecting);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        let conn = loop {
            tokio::select! {
                c = &mut connecting => match c {
                    Ok(c) => break c,
                    Err(e) => return lost(format!("connecting to {addr}: {e}")),
                },
                _ = tokio::time::sleep_until(give_up) => {
                    return lost(format!("connecting to {addr}: timed out"));
                }
                _ = tokio::time::sleep_until(self.next_usage) => self.usage_tick().await,
            }
        };
        let end = self.serve(&conn).await;
        conn.close(0u32.into(), b"agent session ended");
        endpoint.close(0u32.into(), b"");
        end
    }

    async fn serve(&mut self, conn: &quinn::Connection) -> SessionEnd {
        let lost = |e: String| SessionEnd::Lost(e);
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return lost(e.to_string()),
        };
        let hello = AgentMsg::Hello(AgentHello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            host_id: self.config.host_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            applied: (self.current.generation() > 0)
                .then(|| (self.current.generation(), self.current.digest())),
            public_address: self.config.public_address.clone(),
        });
        if let Err(e) = write_frame(&mut send, &hello).await {
            return lost(e.to_string());
        }
        let health = AgentMsg::Health(self.net.health().clone());
        if let Err(e) = write_frame(&mut send, &health).await {
            return lost(e.to_string());
        }
        let (tx, mut msgs) = mpsc::channel(16);
        let reader = tokio::spawn(read_loop(recv, tx));
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.reset();
        let mut renew = tokio::time::interval(RENEW_CHECK);
        self.renewal.abandon();
        let mut chunks: Vec<StateChunk> = Vec::new();
        // Reports go only to controllers that negotiated them (the Welcome's version).
        let mut reports = false;
        let mut last_report: Option<LastSent> = None;
        // Usage goes only to controllers of protocol 4 on; one batch in flight: its last seq
        // and when it went.
        let mut usage = false;
        let mut in_flight: Option<(u64, tokio::time::Instant)> = None;
        // Cut-offs go only to controllers of protocol 5 on: right after the Welcome, and
        // whenever new ones are made while connected.
        let mut enforced = false;
        let end = loop {
            if enforced && let Err(e) = self.send_cut_offs(&mut send).await {
                break lost(e);
            }
            let msg = tokio::select! {
                m = msgs.recv() => m,
                _ = keep_alive.tick() => {
                    if let Err(e) = write_frame(&mut send, &AgentMsg::KeepAlive).await {
                        break lost(e.to_string());
                    }
                    continue;
                }
                _ = reconcile.tick() => {
                    self.reconcile().await;
                    if reports && let Err(e) = self.maybe_report(&mut send, &mut last_report).await {
                        break lost(e);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(self.next_usage) => {
                    self.usage_tick().await;
                    let stale = in_flight.is_some_and(|(_, at)| at.elapsed() >= USAGE_RESEND);
                    if usage && (in_flight.is_none() || stale) {
                        if stale {
                            debug!("usage batch not acked in time; sending again from the oldest unacked");
                        }
                        match self.send_usage(&mut send).await {
                            Ok(last) => in_flight = last.map(|s| (s, tokio::time::Instant::now())),
                            Err(e) => break lost(e),
                        }
                    }
                    continue;
                }
                _ = renew.tick() => {
                    if !self.renewal.due(&self.paths, unix_now()) { continue; }
                    let csr_pem = match self.renewal.start() {
                        Ok(csr) => csr,
                        Err(e) => { warn!(error = %e, "cannot make a renewal request"); continue; }
                    };
                    info!("certificate due for renewal, sending a CSR");
                    if let Err(e) = write_frame(&mut send, &AgentMsg::RenewRequest { csr_pem }).await {
                        break lost(e.to_string());
                    }
                    continue;
                }
            };
            let reply = match msg {
                None => {
                    break lost(
                        conn.close_reason()
                            .map_or("connection closed".into(), |r| r.to_string()),
                    );
                }
                Some(Err(e)) => break lost(format!("protocol error: {e}")),
                Some(Ok(ControllerMsg::Refused { reason })) => break SessionEnd::Refused(reason),
                Some(Ok(ControllerMsg::Welcome { version, host_name })) => {
                    info!(version, host = %host_name, "connected to the controller");
                    reports = version >= REPORT_VERSION;
                    usage = version >= USAGE_VERSION;
                    enforced = version >= ENFORCE_VERSION;
                    // From the oldest unacked: what the last session sent may not have landed.
                    if usage {
                        match self.send_usage(&mut send).await {
                            Ok(last) => in_flight = last.map(|s| (s, tokio::time::Instant::now())),
                            Err(e) => break lost(e),
                        }
                    }
                    None
                }
                Some(Ok(ControllerMsg::KeepAlive)) => None,
                Some(Ok(ControllerMsg::Allowances(a))) => {
                    self.on_allowances(&a).await;
                    None
                }
                Some(Ok(ControllerMsg::UsageAck { epoch, up_to })) => {
                    self.fold_acked(epoch, up_to);
                    if let Some(l) = self.ledger.as_mut() {
                        let dropped = l.ack(epoch, up_to);
                        debug!(epoch, up_to, dropped, backlog = l.backlog(), "usage acked");
                        self.metrics.ledger_backlog(l.backlog());
                        let ours = l.epoch() == epoch;
                        if ours && in_flight.is_some_and(|(last, _)| last <= up_to) {
                            match self.send_usage(&mut send).await {
                                Ok(last) => {
                                    in_flight = last.map(|s| (s, tokio::time::Instant::now()))
                                }
                                Err(e) => break lost(e),
                            }
                        }
                    }
                    self.enforce(false).await;
                    None
                }
                Some(Ok(ControllerMsg::Renewed { cert_pem })) => {
                    if let Err(e) =
                        self.renewal
                            .complete(&self.paths, &self.config.host_id, &cert_pem)
                    {
                        error!(error = %e, "renewed certificate rejected");
                    }
                    None
                }
                Some(Ok(ControllerMsg::RenewFailed { reason })) => {
                    warn!(%reason, "the controller could not renew the certificate");
                    self.renewal.abandon();
                    None
                }
                Some(Ok(ControllerMsg::FullState(chunk))) => {
                    let last = chunk.last;
                    chunks.push(chunk);
                    if last {
                        Some(self.on_full_state(std::mem::take(&mut chunks)).await)
                    } else {
                        None
                    }
                }
                Some(Ok(ControllerMsg::Delta {
                    base_generation,
                    generation,
                    digest,
                    changes,
                })) => {
                    let mut next = self.current.clone();
                    match next.apply_delta(base_generation, generation, &changes) {
                        Err(e) => Some(AgentMsg::ResyncRequest {
                            reason: e.to_string(),
                        }),
                        Ok(()) if next.digest() != digest => Some(AgentMsg::ResyncRequest {
                            reason: format!("digest mismatch at generation {generation}"),
                        }),
                        Ok(()) => {
                            debug!(
                                base_generation,
                                generation,
                                changes = changes.len(),
                                "delta"
                            );
                            // A user or service about to go (or a credential about to
                            // change, which restarts its counter) still holds bytes its
                            // counter saw since the last tick: read them into the ledger
                            // first, or a suspended or limited user's last seconds are lost.
                            if changes.iter().any(|c| {
                                !matches!(c, Change::UpsertService(_) | Change::SetFirewall(_))
                            }) {
                                self.read_usage().await;
                            }
                            self.apply(next).await;
                            Some(self.ack())
                        }
                    }
                }
            };
            let acked = matches!(reply, Some(AgentMsg::Ack(_)));
            if let Some(reply) = reply
                && let Err(e) = write_frame(&mut send, &reply).await
            {
                break lost(e.to_string());
            }
            // The first report of a session follows its first ack: the controller then holds
            // this host's results and hears what happened while it was away.
            if acked
                && reports
                && last_report.is_none()
                && let Err(e) = self.maybe_report(&mut send, &mut last_report).await
            {
                break lost(e);
            }
        };
        reader.abort();
        end
    }

    async fn on_full_state(&mut self, chunks: Vec<StateChunk>) -> AgentMsg {
        let state = match StateChunk::assemble(chunks) {
            Ok(state) => state,
            Err(reason) => return AgentMsg::ResyncRequest { reason },
        };
        info!(
            generation = state.generation(),
            services = state.state().services.len(),
            users = state.state().users.len(),
            "full state received"
        );
        // As for a delta: what the engines counted under the old state goes into the ledger
        // before the new one may remove or re-add anything.
        if state.digest() != self.current.digest() {
            self.read_usage().await;
        }
        self.apply(state).await;
        self.ack()
    }

    fn ack(&self) -> AgentMsg {
        AgentMsg::Ack(Ack {
            generation: self.current.generation(),
            digest: self.current.digest(),
            results: self.last_results.clone(),
        })
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Free bytes for unprivileged users on the file system holding `dir`.
fn disk_free(dir: &Path) -> Option<u64> {
    match rustix::fs::statvfs(dir) {
        Ok(st) => Some(st.f_bavail.saturating_mul(st.f_frsize)),
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "statvfs failed");
            None
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn read_loop(mut recv: RecvStream, tx: mpsc::Sender<Result<ControllerMsg, FrameError>>) {
    loop {
        let item = match read_frame::<_, ControllerMsg>(&mut recv, MAX_FRAME).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => break,
            Err(e) => Err(e),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            break;
        }
    }
}
