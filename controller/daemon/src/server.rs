//! The QUIC front door: one UDP endpoint, connections dispatched by ALPN to the agent session,
//! the admin API or enrollment; and, when configured, the `/metrics` TCP listener beside it.
//!
//! A handshake that fails, or a connection on an unknown ALPN, comes from a peer that showed no
//! credentials: it is counted exactly but logged at most once per reason per 10 s
//! ([`crate::metrics::throttle`]), so such peers cannot fill the log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};
use vpn_shared::pki::Ca;
use vpn_shared::proto::{ALPN_ADMIN, ALPN_AGENT, ALPN_ENROLL, close};
use vpn_shared::transport;

use crate::config::Config;
use crate::fleet::Fleet;
use crate::init::PkiPaths;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::{admin, enroll, session};

/// Everything a connection handler needs.
pub struct Controller {
    pub config: Config,
    pub store: Store,
    pub ca: Ca,
    pub fleet: Fleet,
    pub metrics: Metrics,
    /// Caps the enrollment connections (no certificate) open at once.
    pub enroll_gate: enroll::Gate,
    /// Where `/metrics` is served, once [`bind`] bound it (`None` when not configured).
    pub metrics_addr: Option<SocketAddr>,
    /// The bound `/metrics` listener, from [`bind`] (so a port in use fails the start) until
    /// [`serve`] takes it.
    metrics_listener: Mutex<Option<tokio::net::TcpListener>>,
    /// Bumped when users' allowances changed other than by an agent's own usage (an edit, a
    /// reset, a status change): every session sends its host the fresh set.
    allowances: tokio::sync::watch::Sender<u64>,
    /// Agents' usage batches waiting to be written together (`ingest.rs`).
    pub ingest: crate::ingest::Ingest,
    /// What changed, for `vpn tui` subscriptions (`subscribe.rs`).
    pub watch: crate::subscribe::Watch,
}

impl Controller {
    pub async fn open(config: Config) -> anyhow::Result<Controller> {
        let paths = PkiPaths::new(&config.data_dir);
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).with_context(|| {
                format!("reading {} (run `vpn-controller init` first?)", p.display())
            })
        };
        let ca =
            Ca::load(&read(&paths.ca_cert)?, &read(&paths.ca_key)?).context("loading the CA")?;
        let store = Store::open(&config.database_path)
            .await
            .with_context(|| format!("opening {}", config.database_path.display()))?
            .with_time_zone(config.time_zone);
        let metrics = Metrics::new();
        metrics.register(Box::new(store.latency().clone()));
        Ok(Controller {
            fleet: Fleet::new(config.max_queued_changes),
            enroll_gate: enroll::Gate::new(
                config.enroll_max_connections,
                config.enroll_max_per_address,
            ),
            config,
            store,
            ca,
            metrics,
            metrics_addr: None,
            metrics_listener: Mutex::new(None),
            allowances: tokio::sync::watch::channel(0).0,
            ingest: crate::ingest::Ingest::default(),
            watch: crate::subscribe::Watch::default(),
        })
    }

    /// Tells every session to send its host fresh allowances.
    pub fn allowances_changed(&self) {
        self.allowances.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes when [`Controller::allowances_changed`] was called.
    pub fn allowance_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.allowances.subscribe()
    }
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (ctl, endpoint) = bind(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    serve(ctl, endpoint, shutdown).await;
    Ok(())
}

/// Opens the store and binds the QUIC endpoint (port 0 picks a free port: see
/// `endpoint.local_addr()`).
pub async fn bind(config: Config) -> anyhow::Result<(Arc<Controller>, quinn::Endpoint)> {
    let paths = PkiPaths::new(&config.data_dir);
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let server_config = transport::server_config(
        &read(&paths.ca_cert)?,
        &read(&paths.cert)?,
        &read(&paths.key)?,
    )?;
    let listen: std::net::SocketAddr = config.listen.parse().context("listen address")?;
    let mut ctl = Controller::open(config).await?;
    if let Some(addr) = ctl.config.metrics_listen {
        let listener = bind_metrics(addr).await?;
        ctl.metrics_addr = Some(listener.local_addr().unwrap_or(addr));
        ctl.metrics_listener = Mutex::new(Some(listener));
    }
    let ctl = Arc::new(ctl);
    // Started now, not on first use: the periodic certificate check must run even before any
    // agent or operator connects.
    crate::webhooks::hub(&ctl);
    crate::quota_timer::start(&ctl);
    let endpoint = quinn::Endpoint::server(server_config, listen)
        .with_context(|| format!("binding UDP {listen}"))?;
    info!(
        listen = %endpoint.local_addr().map_or(listen, |a| a),
        public_address = %ctl.config.public_address,
        ca_sha256 = %ctl.ca.fingerprint(),
        "controller listening"
    );
    Ok((ctl, endpoint))
}

/// Binds the `/metrics` TCP listener; the caller decided it is wanted.
async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener on TCP {addr}"))?;
    if !addr.ip().is_loopback() {
        // Allowed (a Prometheus on another machine needs it), but the operator should know:
        // the page has no authentication and tells the fleet's size and activity.
        warn!(metrics_listen = %addr, "metrics served on a non-loopback address, without authentication: firewall it");
    }
    Ok(listener)
}

/// `<data_dir>/metrics.addr`: where `/metrics` listens while the controller runs, for scripts
/// and tests that configured port 0.
pub fn metrics_addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join("metrics.addr")
}

/// Serves `/metrics` from the listener [`bind`] bound, if any, until `stop` fires; writes
/// `metrics.addr` while it runs.
fn start_metrics(
    ctl: &Arc<Controller>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = ctl
        .metrics_listener
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()?;
    let addr = ctl.metrics_addr?;
    let file = metrics_addr_file(&ctl.config.data_dir);
    if let Err(e) = vpn_shared::fsutil::write_atomic(&file, format!("{addr}\n").as_bytes(), 0o644) {
        warn!(path = %file.display(), error = %e, "cannot write the metrics address file");
    }
    info!(metrics_listen = %addr, path = "/metrics", "metrics listening");
    let source = crate::metrics::Scraper(ctl.clone());
    let mut stop = stop;
    Some(tokio::spawn(vpn_shared::metrics_http::serve(
        listener,
        source,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    )))
}

/// Accepts connections until `shutdown` completes, then closes every connection.
pub async fn serve(
    ctl: Arc<Controller>,
    endpoint: quinn::Endpoint,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_metrics, metrics_stop) = tokio::sync::watch::channel(false);
    let metrics = start_metrics(&ctl, metrics_stop);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(handle(ctl.clone(), incoming));
            }
            _ = &mut shutdown => break,
        }
    }
    info!("shutting down");
    let _ = stop_metrics.send(true);
    if let Some(metrics) = metrics {
        let _ = metrics.await;
        let file = metrics_addr_file(&ctl.config.data_dir);
        if let Err(e) = std::fs::remove_file(&file) {
            warn!(path = %file.display(), error = %e, "cannot remove the metrics address file");
        }
    }
    endpoint.close(close::SHUTDOWN.into(), b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    ctl.store.close().await;
}

async fn handle(ctl: Arc<Controller>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            if let Some(more) = ctl.metrics.refused_quietly("handshake") {
                warn!(%remote, error = %e, more_since_last_line = more, "handshake failed, connection refused");
            }
            return;
        }
    };
    match transport::alpn(&conn).as_deref() {
        Some(ALPN_AGENT) => session::run(ctl, conn).await,
        Some(ALPN_ADMIN) => admin::serve(ctl, conn).await,
        Some(ALPN_ENROLL) => enroll::serve(ctl, conn).await,
        other => {
            if let Some(more) = ctl.metrics.refused_quietly("unknown_alpn") {
                warn!(%remote, alpn = ?other.map(String::from_utf8_lossy), more_since_last_line = more, "unknown ALPN, connection refused");
            }
            conn.close(close::REFUSED.into(), b"unknown ALPN");
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
