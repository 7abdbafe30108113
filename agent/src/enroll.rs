//! `vpn-agent join`: generate this host's key, send a CSR with the one-time token while pinning
//! the controller's CA, and store what comes back (private files 0600).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::info;
use vpn_shared::fsutil::{SECRET_MODE, create_private_dir, write_atomic};
use vpn_shared::join::JoinString;
use vpn_shared::pki;
use vpn_shared::proto::frame::{read_frame, write_frame};
use vpn_shared::proto::{EnrollRequest, EnrollResponse, PROTOCOL_VERSION};
use vpn_shared::transport::{self, SERVER_NAME};

use crate::config::{FileConfig, Paths};

/// Why a join failed, for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the controller refused to enroll this host: {0}")]
    Refused(String),
    #[error("controller unavailable at {addr}: {reason}")]
    Unavailable { addr: String, reason: String },
}

pub async fn join(
    join: &str,
    data_dir: &Path,
    public_address: Option<String>,
) -> anyhow::Result<()> {
    let join = JoinString::parse(join).context("invalid join string")?;
    let paths = Paths::new(data_dir);
    if paths.cert.exists() {
        bail!(
            "{} already holds an enrolled identity ({}); use another --data-dir or remove it",
            data_dir.display(),
            paths.cert.display()
        );
    }
    let (key_pem, csr_pem) = pki::generate_csr()?;
    let response = request(&join, &csr_pem).await?;
    let (host_id, host_name, cert_pem, ca_pem) = match response {
        EnrollResponse::Accepted {
            host_id,
            host_name,
            cert_pem,
            ca_pem,
        } => (host_id, host_name, cert_pem, ca_pem),
        EnrollResponse::Refused { reason } => return Err(JoinError::Refused(reason).into()),
    };
    if pki::fingerprint_pem(&ca_pem)? != join.ca_sha256.to_ascii_lowercase() {
        bail!("the controller sent a CA that does not match the join string's fingerprint");
    }
    create_private_dir(data_dir)?;
    create_private_dir(&data_dir.join("pki"))?;
    write_atomic(&paths.key, key_pem.as_bytes(), SECRET_MODE)?;
    write_atomic(&paths.cert, cert_pem.as_bytes(), SECRET_MODE)?;
    write_atomic(&paths.ca_cert, ca_pem.as_bytes(), SECRET_MODE)?;
    let config = FileConfig {
        controller: join.controller.clone(),
        host_id: host_id.clone(),
        host_name: host_name.clone(),
        public_address,
        ..Default::default()
    };
    let toml = toml::to_string(&config)?;
    write_atomic(&paths.config, toml.as_bytes(), SECRET_MODE)?;
    info!(host = %host_name, host_id = %host_id, controller = %join.controller, "enrolled");
    Ok(())
}

async fn request(join: &JoinString, csr_pem: &str) -> Result<EnrollResponse, JoinError> {
    let unavailable = |reason: String| JoinError::Unavailable {
        addr: join.controller.clone(),
        reason,
    };
    let addr = tokio::net::lookup_host(&join.controller)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .next()
        .ok_or_else(|| unavailable("address did not resolve".into()))?;
    let config =
        transport::enroll_client_config(&join.ca_sha256).map_err(|e| unavailable(e.to_string()))?;
    let endpoint = transport::client_endpoint(addr).map_err(|e| unavailable(e.to_string()))?;
    let exchange = async {
        let conn = endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let req = EnrollRequest {
            version: PROTOCOL_VERSION,
            token: join.token.clone(),
            csr_pem: csr_pem.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        write_frame(&mut send, &req)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        let resp: Option<EnrollResponse> = read_frame(&mut recv, 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        conn.close(0u32.into(), b"enrolled");
        resp.ok_or_else(|| "the controller closed without answering".to_string())
    };
    let result = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| unavailable("timed out".into()))?
        .map_err(unavailable);
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}
