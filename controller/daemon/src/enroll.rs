//! Enrollment: a new host trades its one-time join token and a CSR for a certificate naming it.
//! The token is checked (hashed, single use, unexpired) before anything is signed, and the CSR
//! is checked before the token is spent, so a malformed request does not burn a valid token.

use std::sync::Arc;
use std::time::Duration;

use ring::digest::{SHA256, digest};
use tracing::{info, warn};
use vpn_shared::pki::{self, Identity};
use vpn_shared::proto::frame::{read_frame, write_frame};
use vpn_shared::proto::{EnrollRequest, EnrollResponse, close};

use crate::server::{Controller, now};
use crate::store::{StoreError, TokenRefusal};

/// Enrollment requests are small; anything bigger is refused before allocation.
const MAX_ENROLL_FRAME: usize = 64 * 1024;

/// The form a join token is stored in: SHA-256 hex of its text.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest(&SHA256, token.as_bytes()))
}

/// A new random join token: 32 bytes (256 bits) base64url.
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub async fn serve(ctl: Arc<Controller>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Ok(Ok((mut send, mut recv))) =
        tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await
    else {
        return;
    };
    let req: EnrollRequest = match read_frame(&mut recv, MAX_ENROLL_FRAME).await {
        Ok(Some(req)) => req,
        other => {
            ctl.metrics.refused("enroll_protocol");
            warn!(%remote, error = ?other.err(), "malformed enrollment request");
            conn.close(close::PROTOCOL.into(), b"malformed enrollment request");
            return;
        }
    };
    let response = match enroll(&ctl, &req).await {
        Ok(resp) => resp,
        Err((metric, reason)) => {
            ctl.metrics.refused(metric);
            warn!(%remote, %reason, "enrollment refused");
            EnrollResponse::Refused { reason }
        }
    };
    let _ = write_frame(&mut send, &response).await;
    let _ = send.finish();
    // Let the agent read the answer and close; do not hold the connection forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}

async fn enroll(
    ctl: &Controller,
    req: &EnrollRequest,
) -> Result<EnrollResponse, (&'static str, String)> {
    pki::check_csr(&req.csr_pem).map_err(|e| ("enroll_bad_csr", e.to_string()))?;
    let host = match ctl
        .store
        .consume_join_token(&token_hash(&req.token), now())
        .await
    {
        Ok(host) => host,
        Err(StoreError::TokenRefused(r)) => {
            let metric = match r {
                TokenRefusal::Unknown => "join_token_unknown",
                TokenRefusal::Used => "join_token_used",
                TokenRefusal::Expired => "join_token_expired",
            };
            return Err((metric, r.to_string()));
        }
        Err(e) => return Err(("enroll_store", e.to_string())),
    };
    let issued = ctl
        .ca
        .sign_csr(
            &req.csr_pem,
            &Identity::Agent(host.id.clone()),
            ctl.config.agent_cert_lifetime,
        )
        .map_err(|e| ("enroll_sign", e.to_string()))?;
    ctl.store
        .set_host_certificate(&host.id, &issued.serial, issued.not_after)
        .await
        .map_err(|e| ("enroll_store", e.to_string()))?;
    info!(host = %host.name, host_id = %host.id, agent_version = %req.agent_version, not_after = issued.not_after, "host enrolled");
    Ok(EnrollResponse::Accepted {
        host_id: host.id,
        host_name: host.name,
        cert_pem: issued.cert_pem,
        ca_pem: ctl.ca.cert_pem().to_string(),
    })
}
