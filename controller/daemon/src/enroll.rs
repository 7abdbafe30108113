//! Enrollment: a new host trades its one-time join token and a CSR for a certificate naming it.
//! The token is checked (hashed, single use, unexpired) before anything is signed, and the CSR
//! is checked before the token is looked at, so a malformed request does not burn a valid
//! token. The token is spent in the same store transaction that records the certificate, after
//! signing: a failure before that spends nothing, and a lost answer can be fetched again.
//!
//! Enrollment is the one ALPN served without a client certificate, so it is also the one anyone
//! can reach: each connection has one deadline for the whole exchange, connections open at
//! once are capped in all and per source address ([`Gate`]), and the request frame is small.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ring::digest::{SHA256, digest};
use tracing::{info, warn};
use vpn_shared::pki::{self, Identity};
use vpn_shared::proto::frame::{read_frame, write_frame};
use vpn_shared::proto::{EnrollRequest, EnrollResponse, close};

use crate::server::{Controller, now};
use crate::store::{EnrolledCert, HostRow, JoinToken, Spent, StoreError, TokenRefusal};

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

/// Admits enrollment connections: the only ones the controller serves without a certificate,
/// so the only ones anyone on the network can open. Caps how many are open at once, in all and
/// per source address, so a flood of them cannot hold the controller's memory or tasks.
pub struct Gate {
    open: Arc<Mutex<GateState>>,
    max_total: usize,
    max_per_address: usize,
}

#[derive(Default)]
struct GateState {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it lets the next one in.
pub struct Admitted {
    open: Arc<Mutex<GateState>>,
    address: IpAddr,
}

impl Gate {
    pub fn new(max_total: usize, max_per_address: usize) -> Gate {
        Gate {
            open: Arc::default(),
            max_total,
            max_per_address,
        }
    }

    /// Admits one more connection from `address`, or `None` when a cap is reached.
    pub fn admit(&self, address: IpAddr) -> Option<Admitted> {
        let mut open = lock(&self.open);
        let from_here = open.per_address.get(&address).copied().unwrap_or_default();
        if open.total >= self.max_total || from_here >= self.max_per_address {
            return None;
        }
        open.total += 1;
        open.per_address.insert(address, from_here + 1);
        Some(Admitted {
            open: self.open.clone(),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_address.remove(&self.address);
            }
        }
    }
}

fn lock(m: &Mutex<GateState>) -> std::sync::MutexGuard<'_, GateState> {
    // Counters only: a panic elsewhere cannot leave them half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one enrollment connection, start to end within `enroll_timeout`.
///
/// The server keeps QUIC connections alive with keep-alives, so a silent peer never idles
/// out: this deadline is what ends it.
pub async fn serve(ctl: Arc<Controller>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some(_admitted) = ctl.enroll_gate.admit(remote.ip()) else {
        ctl.metrics.refused("enroll_busy");
        warn!(%remote, "too many enrollment connections open, refused");
        conn.close(close::REFUSED.into(), b"too many enrollment connections");
        return;
    };
    let timeout = ctl.config.enroll_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let Ok(answered) = tokio::time::timeout_at(deadline, exchange(&ctl, &conn)).await else {
        ctl.metrics.refused("enroll_timeout");
        warn!(%remote, ?timeout, "enrollment not completed in time, connection closed");
        conn.close(close::PROTOCOL.into(), b"enrollment timed out");
        return;
    };
    if answered {
        // Let the agent read the answer and close first, but not past the deadline.
        let _ = tokio::time::timeout_at(deadline, conn.closed()).await;
    }
    conn.close(close::SHUTDOWN.into(), b"enrollment done");
}

/// Reads the request, answers it. Returns whether an answer was sent.
async fn exchange(ctl: &Controller, conn: &quinn::Connection) -> bool {
    let remote = conn.remote_address();
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return false;
    };
    let req: EnrollRequest = match read_frame(&mut recv, MAX_ENROLL_FRAME).await {
        Ok(Some(req)) => req,
        other => {
            ctl.metrics.refused("enroll_protocol");
            warn!(%remote, error = ?other.err(), "malformed enrollment request");
            conn.close(close::PROTOCOL.into(), b"malformed enrollment request");
            return false;
        }
    };
    let response = match enroll(ctl, &req).await {
        Ok(resp) => resp,
        Err((metric, reason)) => {
            ctl.metrics.refused(metric);
            warn!(%remote, %reason, "enrollment refused");
            EnrollResponse::Refused { reason }
        }
    };
    if let Err(e) = write_frame(&mut send, &response).await {
        // The certificate (if any) is recorded with the token: the host can ask again.
        warn!(%remote, error = %e, "enrollment answer not delivered");
        return false;
    }
    send.finish().is_ok()
}

fn token_refusal(r: TokenRefusal) -> (&'static str, String) {
    let metric = match r {
        TokenRefusal::Unknown => "join_token_unknown",
        TokenRefusal::Used => "join_token_used",
        TokenRefusal::Expired => "join_token_expired",
    };
    (metric, r.to_string())
}

/// Checks the CSR, then the token, signs, and only then spends the token together with
/// recording the certificate (one store transaction). A lost answer costs nothing: the same
/// key asking again with the same token, within its lifetime, gets the same certificate.
async fn enroll(
    ctl: &Controller,
    req: &EnrollRequest,
) -> Result<EnrollResponse, (&'static str, String)> {
    // The CSR first, so a malformed request does not even look at the token.
    let key_sha256 =
        pki::csr_key_sha256(&req.csr_pem).map_err(|e| ("enroll_bad_csr", e.to_string()))?;
    let hash = token_hash(&req.token);
    let host = match ctl.store.join_token(&hash, now()).await {
        Ok(JoinToken::Fresh(host)) => host,
        Ok(JoinToken::Spent(Spent::Redeliver {
            host,
            cert_pem,
            key_sha256: issued_for,
        })) if issued_for == key_sha256 => {
            info!(host = %host.name, host_id = %host.id, "enrollment answer sent again to the key it was issued for");
            return Ok(accepted(ctl, *host, cert_pem));
        }
        Ok(JoinToken::Spent(_)) => return Err(token_refusal(TokenRefusal::Used)),
        Err(StoreError::TokenRefused(r)) => return Err(token_refusal(r)),
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
    let cert = EnrolledCert {
        cert_pem: issued.cert_pem,
        serial: issued.serial,
        not_after: issued.not_after,
        key_sha256,
    };
    let (host, cert_pem) = match ctl.store.complete_enrollment(&hash, now(), &cert).await {
        Ok(done) => done,
        Err(StoreError::TokenRefused(r)) => return Err(token_refusal(r)),
        Err(e) => return Err(("enroll_store", e.to_string())),
    };
    info!(host = %host.name, host_id = %host.id, agent_version = %req.agent_version, not_after = cert.not_after, "host enrolled");
    Ok(accepted(ctl, host, cert_pem))
}

fn accepted(ctl: &Controller, host: HostRow, cert_pem: String) -> EnrollResponse {
    EnrollResponse::Accepted {
        host_id: host.id,
        host_name: host.name,
        cert_pem,
        ca_pem: ctl.ca.cert_pem().to_string(),
    }
}
