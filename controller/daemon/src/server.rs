//! The QUIC front door: one UDP endpoint, connections dispatched by ALPN to the agent session,
//! the admin API or enrollment.

use std::sync::Arc;
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
            .with_context(|| format!("opening {}", config.database_path.display()))?;
        Ok(Controller {
            fleet: Fleet::new(config.max_queued_changes),
            enroll_gate: enroll::Gate::new(
                config.enroll_max_connections,
                config.enroll_max_per_address,
            ),
            config,
            store,
            ca,
            metrics: Metrics::default(),
        })
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
    let ctl = Arc::new(Controller::open(config).await?);
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

/// Accepts connections until `shutdown` completes, then closes every connection.
pub async fn serve(
    ctl: Arc<Controller>,
    endpoint: quinn::Endpoint,
    shutdown: impl std::future::Future<Output = ()>,
) {
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
    endpoint.close(close::SHUTDOWN.into(), b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    ctl.store.close().await;
}

async fn handle(ctl: Arc<Controller>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            ctl.metrics.refused("handshake");
            warn!(%remote, error = %e, "handshake failed, connection refused");
            return;
        }
    };
    match transport::alpn(&conn).as_deref() {
        Some(ALPN_AGENT) => session::run(ctl, conn).await,
        Some(ALPN_ADMIN) => admin::serve(ctl, conn).await,
        Some(ALPN_ENROLL) => enroll::serve(ctl, conn).await,
        other => {
            ctl.metrics.refused("unknown_alpn");
            warn!(%remote, alpn = ?other.map(String::from_utf8_lossy), "unknown ALPN");
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
