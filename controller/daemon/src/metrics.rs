//! The controller's metrics: the one place where refusals and other notable events are counted
//! (their callers log them), kept in a Prometheus registry that `/metrics` exposes (see
//! [`crate::server`] and `vpn_shared::metrics_http`).
//!
//! Most series are counted as things happen. What the store and the fleet already know — hosts
//! by state, sessions connected — is computed when scraped ([`Scraper`]), so it can never drift.
//! Labels are only ever names chosen by this code (a reason, a request kind, a resource kind
//! from a fixed list), never a string a peer sent: a peer cannot grow the number of series.
//!
//! - [`throttle`]: the pure decision which repeated WARN lines are written.

pub mod throttle;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use vpn_shared::proto::admin::AdminRequest;
use vpn_shared::proto::{Outcome, ResourceResult};

use crate::server::Controller;
use crate::store::HostRow;
use throttle::Throttle;

/// Latency buckets, in seconds, for things a person waits on (acks, admin requests).
const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Usage batch buckets, in seconds: a 1,000-entry batch commits in about a millisecond; the
/// top ones catch a writer lock held by a backup or a long admin transaction.
const INGEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Every state `vpn_controller_hosts` reports, so that a state without hosts shows 0.
/// The host-health work adds `degraded` here and in [`host_state`].
pub const HOST_STATES: &[&str] = &["online", "degraded", "offline", "pending"];

/// Resource kinds `vpn_controller_apply_failures_total` counts; anything else is `other`.
const RESOURCE_KINDS: &[&str] = &["service", "user", "host"];

/// Generations awaiting an ack kept per session; older ones are forgotten (a lost sample).
const MAX_PENDING_ACKS: usize = 4096;

/// How often one reason's refusal is logged at most; the rest are counted and summarised.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

pub struct Metrics {
    registry: Registry,
    refusals: Counters,
    events: Counters,
    hosts: IntGaugeVec,
    sessions: IntGauge,
    pushes: IntCounter,
    ack_latency: Histogram,
    apply_failures: IntCounterVec,
    admin_requests: IntCounterVec,
    admin_latency: HistogramVec,
    usage_entries: IntCounterVec,
    usage_bytes: IntCounter,
    usage_ingest: Histogram,
    usage_group: Histogram,
    /// Which refusal WARN lines are written: a peer without credentials must not be able to
    /// fill the log (the counters above keep the exact numbers).
    refusal_log: Mutex<Throttle>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The controller's series, registered in a fresh registry. Series from elsewhere (the
    /// store's latency) are added with [`Metrics::register`].
    #[allow(clippy::expect_used)] // see DEFINED
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let refusals = Counters::new(
            &registry,
            "vpn_controller_refusals_total",
            "Connections and requests refused, by reason.",
            "reason",
        );
        let events = Counters::new(
            &registry,
            "vpn_controller_events_total",
            "Notable events that are not refusals, by name.",
            "event",
        );
        let m = Metrics {
            hosts: IntGaugeVec::new(
                Opts::new("vpn_controller_hosts", "Hosts by state, when scraped."),
                &["state"],
            )
            .expect(DEFINED),
            sessions: IntGauge::new(
                "vpn_controller_agent_sessions",
                "Agent sessions connected (authorized and registered), when scraped.",
            )
            .expect(DEFINED),
            pushes: IntCounter::new(
                "vpn_controller_pushes_total",
                "Changes of one host's desired state sent to its connected session.",
            )
            .expect(DEFINED),
            ack_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "vpn_controller_ack_latency_seconds",
                    "From a session taking a change to the agent acking a generation at least as new.",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
            )
            .expect(DEFINED),
            apply_failures: IntCounterVec::new(
                Opts::new(
                    "vpn_controller_apply_failures_total",
                    "Failed resources in agents' acks, by resource kind (service, user, host, other).",
                ),
                &["kind"],
            )
            .expect(DEFINED),
            admin_requests: IntCounterVec::new(
                Opts::new(
                    "vpn_controller_admin_requests_total",
                    "Admin API requests, by kind and result (ok, error).",
                ),
                &["kind", "result"],
            )
            .expect(DEFINED),
            admin_latency: HistogramVec::new(
                HistogramOpts::new(
                    "vpn_controller_admin_request_duration_seconds",
                    "Admin API request handling time by kind (a waiting change includes its ack wait).",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
                &["kind"],
            )
            .expect(DEFINED),
            usage_entries: IntCounterVec::new(
                Opts::new(
                    "vpn_controller_usage_entries_total",
                    "Agents' usage ledger entries received, by result (applied: added to the \
                     totals; duplicate: at or below the host's watermark, a replay).",
                ),
                &["result"],
            )
            .expect(DEFINED),
            // Fleet-wide only: a series per user (or per user and host) would grow with the
            // user base, 100,000 users being 100,000 series; per-user bytes are `users usage`.
            usage_bytes: IntCounter::new(
                "vpn_controller_usage_bytes_total",
                "Bytes (up + down + undirected) of applied usage entries, the whole fleet.",
            )
            .expect(DEFINED),
            usage_ingest: Histogram::with_opts(
                HistogramOpts::new(
                    "vpn_controller_usage_ingest_duration_seconds",
                    "One usage group (batches of every session that queued together): its store \
                     transaction from the writer lock to the commit.",
                )
                .buckets(INGEST_BUCKETS.to_vec()),
            )
            .expect(DEFINED),
            usage_group: Histogram::with_opts(
                HistogramOpts::new(
                    "vpn_controller_usage_group_batches",
                    "Usage batches written together in one store transaction.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )
            .expect(DEFINED),
            refusals,
            events,
            registry,
            refusal_log: Mutex::new(Throttle::new(REFUSAL_LOG_WINDOW)),
        };
        for result in ["applied", "duplicate"] {
            // Both series show from the start, at 0.
            let _ = m.usage_entries.with_label_values(&[result]);
        }
        for state in HOST_STATES {
            m.hosts.with_label_values(&[state]).set(0);
        }
        let build = IntGaugeVec::new(
            Opts::new(
                "vpn_controller_build_info",
                "The running controller's version.",
            ),
            &["version"],
        )
        .expect(DEFINED);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.register(Box::new(m.hosts.clone()));
        m.register(Box::new(m.sessions.clone()));
        m.register(Box::new(m.pushes.clone()));
        m.register(Box::new(m.ack_latency.clone()));
        m.register(Box::new(m.apply_failures.clone()));
        m.register(Box::new(m.admin_requests.clone()));
        m.register(Box::new(m.admin_latency.clone()));
        m.register(Box::new(m.usage_entries.clone()));
        m.register(Box::new(m.usage_bytes.clone()));
        m.register(Box::new(m.usage_ingest.clone()));
        m.register(Box::new(m.usage_group.clone()));
        m.register(Box::new(build));
        m
    }

    /// Adds a collector made elsewhere (the store's latency histogram).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            // Only a programming error (a name registered twice) gets here.
            tracing::error!(error = %e, "metric not registered");
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one refused connection or request by reason.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.inc(reason);
    }

    /// Counts one refusal of a peer that showed no credentials and says whether to log it:
    /// `Some(n)` with the number of such refusals not logged since the last line of this
    /// reason, `None` to stay silent (at most one line per reason per 10 s).
    #[must_use = "log the refusal when this returns Some"]
    pub fn refused_quietly(&self, reason: &'static str) -> Option<u64> {
        self.refusals.inc(reason);
        self.refusal_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(reason, Instant::now())
    }

    /// Counts one notable event that is not a refusal (`health_changed`, say).
    pub fn event(&self, name: &'static str) {
        self.events.inc(name);
    }

    pub fn events(&self) -> BTreeMap<&'static str, u64> {
        self.events.snapshot()
    }

    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals.snapshot()
    }

    /// Sets `vpn_controller_hosts{state}` from one state name (one of [`HOST_STATES`]) per
    /// host: the hook through which every host state is reported.
    pub fn set_hosts<'a>(&self, states: impl IntoIterator<Item = &'a str>) {
        let mut counts: BTreeMap<&str, i64> = HOST_STATES.iter().map(|s| (*s, 0)).collect();
        for state in states {
            if let Some(n) = counts.get_mut(state) {
                *n += 1;
            }
        }
        for (state, n) in counts {
            self.hosts.with_label_values(&[state]).set(n);
        }
    }

    pub fn set_sessions(&self, connected: usize) {
        self.sessions
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
    }

    /// Counts one change sent towards a session's agent and starts its ack clock.
    pub fn pushed(&self, clock: &mut AckClock, generation: u64, since: Instant) {
        self.pushes.inc();
        clock.sent(generation, since);
    }

    /// Records an ack: the latency of every change it covers, and its failed resources.
    pub fn acked(&self, clock: &mut AckClock, generation: u64, results: &[ResourceResult]) {
        for latency in clock.acked(generation, Instant::now()) {
            self.ack_latency.observe(latency.as_secs_f64());
        }
        for r in results {
            if matches!(r.outcome, Outcome::Error(_)) {
                self.apply_failures
                    .with_label_values(&[resource_kind(&r.resource)])
                    .inc();
            }
        }
    }

    /// Counts one usage batch stored in `took`.
    pub fn usage_ingested(&self, done: &crate::store::Ingested) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.usage_entries
            .with_label_values(&["applied"])
            .inc_by(count(done.applied));
        self.usage_entries
            .with_label_values(&["duplicate"])
            .inc_by(count(done.skipped));
        self.usage_bytes.inc_by(done.bytes);
    }

    /// One group of usage batches written (`ingest.rs`): how many, and how long it took.
    pub fn usage_group(&self, batches: usize, took: Duration) {
        self.usage_group.observe(batches as f64);
        self.usage_ingest.observe(took.as_secs_f64());
    }

    /// Starts timing an admin request; finish it with [`AdminTimer::done`].
    pub fn admin_request(&self, req: &AdminRequest) -> AdminTimer<'_> {
        AdminTimer {
            metrics: self,
            kind: request_kind(req),
            started: Instant::now(),
        }
    }
}

/// An admin request being handled.
pub struct AdminTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    started: Instant,
}

impl AdminTimer<'_> {
    pub fn done(self, ok: bool) {
        let m = self.metrics;
        let result = if ok { "ok" } else { "error" };
        m.admin_requests
            .with_label_values(&[self.kind, result])
            .inc();
        m.admin_latency
            .with_label_values(&[self.kind])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// One session's changes awaiting an ack: generations only grow within a session, so the
/// oldest is first, and an ack of generation `g` covers every change up to `g`.
#[derive(Debug, Default)]
pub struct AckClock {
    sent: VecDeque<(u64, Instant)>,
}

impl AckClock {
    fn sent(&mut self, generation: u64, at: Instant) {
        if self.sent.len() >= MAX_PENDING_ACKS {
            self.sent.pop_front();
        }
        self.sent.push_back((generation, at));
    }

    /// The latencies of the changes an ack of `generation` at `now` covers, oldest first.
    fn acked(&mut self, generation: u64, now: Instant) -> Vec<Duration> {
        let mut out = Vec::new();
        while let Some(&(g, at)) = self.sent.front() {
            if g > generation {
                break;
            }
            out.push(now.saturating_duration_since(at));
            self.sent.pop_front();
        }
        out
    }
}

/// The kind of a resource named in an ack (`service/ss` → `service`), from a fixed list so an
/// agent cannot create series.
pub fn resource_kind(resource: &str) -> &'static str {
    let prefix = resource.split('/').next().unwrap_or_default();
    RESOURCE_KINDS
        .iter()
        .find(|k| **k == prefix)
        .copied()
        .unwrap_or("other")
}

/// A host's state for `vpn_controller_hosts`: never enrolled is `pending`; online with failing
/// resources is `degraded`, as `servers list` says.
pub fn host_state(host: &HostRow, online: bool, failing: u32) -> &'static str {
    match (host.enrolled_at, online) {
        (_, true) if failing > 0 => "degraded",
        (_, true) => "online",
        (None, false) => "pending",
        (Some(_), false) => "offline",
    }
}

/// The controller's `/metrics` source: refreshes what is computed at scrape time, then renders.
pub struct Scraper(pub Arc<Controller>);

impl vpn_shared::metrics_http::Scrape for Scraper {
    async fn render(&self) -> Result<String, prometheus::Error> {
        let ctl = &self.0;
        let hosts = ctl
            .store
            .hosts()
            .await
            .map_err(|e| prometheus::Error::Msg(format!("reading hosts: {e}")))?;
        let failing = ctl
            .store
            .failing_counts()
            .await
            .map_err(|e| prometheus::Error::Msg(format!("reading failing resources: {e}")))?;
        ctl.metrics.set_hosts(hosts.iter().map(|h| {
            let n = failing.get(&h.id).copied().unwrap_or(0);
            host_state(h, ctl.fleet.is_online(&h.id), n)
        }));
        ctl.metrics.set_sessions(ctl.fleet.online_count());
        vpn_shared::metrics_http::encode(&ctl.metrics.registry)
    }
}

/// A counter family by one label whose values are `&'static str` names, readable back.
struct Counters {
    family: IntCounterVec,
    /// The children by name, so that reading one back needs no gather.
    children: Mutex<BTreeMap<&'static str, IntCounter>>,
}

impl Counters {
    #[allow(clippy::expect_used)] // see DEFINED
    fn new(registry: &Registry, name: &str, help: &str, label: &str) -> Counters {
        let family = IntCounterVec::new(Opts::new(name, help), &[label]).expect(DEFINED);
        if let Err(e) = registry.register(Box::new(family.clone())) {
            tracing::error!(error = %e, "metric not registered");
        }
        Counters {
            family,
            children: Mutex::default(),
        }
    }

    fn inc(&self, name: &'static str) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children
            .entry(name)
            .or_insert_with(|| self.family.with_label_values(&[name]))
            .inc();
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.iter().map(|(k, c)| (*k, c.get())).collect()
    }
}

/// The `expect` message of metric definitions: they are constants of this file, so an invalid
/// one (a bad name, a label count mismatch) fails every test at once and never depends on
/// input.
const DEFINED: &str = "metric definitions are valid constants";

/// The `kind` label of an admin request.
pub fn request_kind(req: &AdminRequest) -> &'static str {
    use AdminRequest as R;
    match req {
        R::ServersAdd { .. } => "servers_add",
        R::ServersList => "servers_list",
        R::ServersShow { .. } => "servers_show",
        R::ServersRemove { .. } => "servers_remove",
        R::ServersListDetail => "servers_list_detail",
        R::ServersShowDetail { .. } => "servers_show_detail",
        R::ServicesDeploy(_) | R::ServicesDeployWith { .. } | R::ServicesDeployPorts { .. } => {
            "services_deploy"
        }
        R::ServicesList => "services_list",
        R::ServicesShow { .. } => "services_show",
        R::ServicesShowDetail { .. } => "services_show_detail",
        R::ServicesRemove { .. } => "services_remove",
        R::ServicesEdit(_) | R::ServicesEditWith { .. } | R::ServicesEditPorts { .. } => {
            "services_edit"
        }
        R::UsersAdd(_) | R::UsersAddWith { .. } => "users_add",
        R::UsersList => "users_list",
        R::UsersListDetail => "users_list_detail",
        R::UsersShow { .. } => "users_show",
        R::UsersShowDetail { .. } => "users_show_detail",
        R::UsersRemove { .. } => "users_remove",
        R::UsersSuspend { .. } => "users_suspend",
        R::UsersResume { .. } => "users_resume",
        R::UsersLink { .. } => "users_link",
        R::UsersEdit(_) | R::UsersEditWith { .. } => "users_edit",
        R::Status => "status",
        R::StatusDetail => "status_detail",
        R::FirewallBlock { .. } => "firewall_block",
        R::FirewallUnblock { .. } => "firewall_unblock",
        R::FirewallList => "firewall_list",
        R::Doctor => "doctor",
        R::UsersUsage(_) => "users_usage",
        R::Subscribe => "subscribe",
        // Counted as the request inside; a nested wrapper (refused) as itself.
        R::InChunks(inner) if !matches!(**inner, R::InChunks(_)) => request_kind(inner),
        R::InChunks(_) => "in_chunks",
    }
}

#[cfg(test)]
mod tests;
