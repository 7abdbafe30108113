//! The agent's Prometheus metrics (SPEC §2.8), and the opt-in `/metrics` listener that serves
//! them through the shared responder ([`vpn_shared::metrics_http`]).
//!
//! Off unless `--metrics-listen` / `metrics_listen` names an address; meant for loopback (a
//! node exporter or a local Prometheus agent scrapes it), so another address is warned about:
//! the endpoint has no authentication, and the names of services and failing resources are
//! in it. The counters are kept whether or not the listener runs; they cost next to nothing.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tracing::{info, warn};
use vpn_shared::proto::{Outcome, Repair, ResourceResult};

/// Resource kinds a failure or repair is counted under: the part of its name before `/`.
const KINDS: [&str; 3] = ["service", "user", "host"];

/// Everything the agent counts.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    apply_seconds: Histogram,
    applies: IntCounter,
    apply_failures: IntCounterVec,
    failing: IntGaugeVec,
    reconciles: IntCounter,
    repairs: IntCounterVec,
    reports: IntCounter,
    ledger_entries: IntCounter,
    ledger_bytes: IntCounter,
    ledger_backlog: IntGauge,
    users_cut_off: IntGauge,
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Metrics {
    /// A fresh registry with every agent metric in it.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vpn_agent_apply_duration_seconds",
                "Time to apply a full state or a delta: containers, users, firewall, tc, save.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let applies = IntCounter::new("vpn_agent_applies_total", "States and deltas applied.")
            .unwrap_or_else(|_| unreachable_metric());
        let apply_failures = IntCounterVec::new(
            Opts::new(
                "vpn_agent_apply_failures_total",
                "Resources that failed in an apply, by kind (service, user, host).",
            ),
            &["kind"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let failing = IntGaugeVec::new(
            Opts::new(
                "vpn_agent_failing_resources",
                "Resources failing in the last apply or reconcile, by kind.",
            ),
            &["kind"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let reconciles = IntCounter::new(
            "vpn_agent_reconcile_runs_total",
            "Periodic reconciles run (every 10 s, connected or not).",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let repairs = IntCounterVec::new(
            Opts::new(
                "vpn_agent_reconcile_repairs_total",
                "Drift the reconcile repaired (a container recreated, users re-added, the firewall reinstalled), by kind.",
            ),
            &["kind"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let reports = IntCounter::new(
            "vpn_agent_reports_sent_total",
            "Health reports sent to the controller.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let ledger_entries = IntCounter::new(
            "vpn_agent_ledger_entries_total",
            "Traffic entries appended to the ledger (one per user and service with bytes in a reading).",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let ledger_bytes = IntCounter::new(
            "vpn_agent_ledger_bytes_total",
            "Bytes counted into the ledger, all directions.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let ledger_backlog = IntGauge::new(
            "vpn_agent_ledger_backlog_entries",
            "Ledger entries written but not yet acked by the controller.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let users_cut_off = IntGauge::new(
            "vpn_agent_users_cut_off",
            "Users of the desired state the agent keeps off this host by itself now: allowance used up or expired.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        for kind in KINDS {
            // Present from the start at 0, so a rate over the first failure is right.
            apply_failures.with_label_values(&[kind]);
            failing.with_label_values(&[kind]);
            repairs.with_label_values(&[kind]);
        }
        let collectors: [Box<dyn prometheus::core::Collector>; 11] = [
            Box::new(users_cut_off.clone()),
            Box::new(ledger_entries.clone()),
            Box::new(ledger_bytes.clone()),
            Box::new(ledger_backlog.clone()),
            Box::new(apply_seconds.clone()),
            Box::new(applies.clone()),
            Box::new(apply_failures.clone()),
            Box::new(failing.clone()),
            Box::new(reconciles.clone()),
            Box::new(repairs.clone()),
            Box::new(reports.clone()),
        ];
        for c in collectors {
            // Distinct names in a fresh registry: registration cannot collide.
            let _ = registry.register(c);
        }
        Metrics {
            registry,
            apply_seconds,
            applies,
            apply_failures,
            failing,
            reconciles,
            repairs,
            reports,
            ledger_entries,
            ledger_bytes,
            ledger_backlog,
            users_cut_off,
        }
    }

    /// The registry the listener renders.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One apply took `took` and ended with `results`.
    pub fn applied(&self, took: Duration, results: &[ResourceResult]) {
        self.apply_seconds.observe(took.as_secs_f64());
        self.applies.inc();
        for r in results.iter().filter(|r| r.outcome != Outcome::Ok) {
            self.apply_failures
                .with_label_values(&[kind(&r.resource)])
                .inc();
        }
        self.set_failing(results);
    }

    /// One reconcile ended with `results` after repairing `repairs`.
    pub fn reconciled(&self, results: &[ResourceResult], repairs: &[Repair]) {
        self.reconciles.inc();
        for r in repairs {
            self.repairs.with_label_values(&[kind(&r.resource)]).inc();
        }
        self.set_failing(results);
    }

    pub fn report_sent(&self) {
        self.reports.inc();
    }

    /// One reading went into the ledger.
    pub fn ledger_appended(&self, entries: usize, bytes: u64) {
        self.ledger_entries
            .inc_by(u64::try_from(entries).unwrap_or(u64::MAX));
        self.ledger_bytes.inc_by(bytes);
    }

    pub fn ledger_backlog(&self, entries: usize) {
        self.ledger_backlog
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Users cut off on this host now.
    pub fn users_cut_off(&self, users: usize) {
        self.users_cut_off
            .set(i64::try_from(users).unwrap_or(i64::MAX));
    }

    fn set_failing(&self, results: &[ResourceResult]) {
        for k in KINDS {
            let n = results
                .iter()
                .filter(|r| r.outcome != Outcome::Ok && kind(&r.resource) == k)
                .count();
            self.failing
                .with_label_values(&[k])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The options above are constants that the library accepts; failing here is a programming
/// error caught by every test that makes a [`Metrics`].
#[allow(clippy::panic)]
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition")
}

/// `service`, `user` or `host` (anything else counts as `host`: it is about the host).
fn kind(resource: &str) -> &'static str {
    match resource.split_once('/').map(|(k, _)| k) {
        Some("service") => "service",
        Some("user") => "user",
        _ => "host",
    }
}

/// Binds `addr` and serves `/metrics` from `metrics` in a background task; returns the bound
/// address (port 0 picks one). Warns when `addr` is not a loopback address.
pub async fn serve(
    addr: SocketAddr,
    metrics: &Metrics,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    if !addr.ip().is_loopback() {
        warn!(%addr, "metrics listen on a non-loopback address: /metrics has no authentication");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    info!(addr = %bound, "serving /metrics");
    let registry = metrics.registry().clone();
    let task = tokio::spawn(vpn_shared::metrics_http::serve(
        listener,
        registry,
        std::future::pending(),
    ));
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_counted_by_kind() {
        assert_eq!(kind("service/ss"), "service");
        assert_eq!(kind("user/alice@ss"), "user");
        assert_eq!(kind("host/firewall"), "host");
        assert_eq!(kind("odd"), "host");
        let m = Metrics::new();
        m.applied(
            Duration::from_millis(20),
            &[
                ResourceResult::error("service/ss", "no such image"),
                ResourceResult::error("user/a@ss", "service ss not running"),
                ResourceResult::ok("host/state"),
            ],
        );
        assert_eq!(m.apply_failures.with_label_values(&["service"]).get(), 1);
        assert_eq!(m.failing.with_label_values(&["user"]).get(), 1);
        m.reconciled(&[], &[]);
        assert_eq!(m.failing.with_label_values(&["service"]).get(), 0);
        assert_eq!(m.reconciles.get(), 1);
    }
}
