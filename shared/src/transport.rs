//! QUIC endpoint configuration: TLS 1.3 only, the ring provider only, mutual TLS against the
//! controller's private CA (SPEC §2.2).
//!
//! The controller's server config accepts connections without a client certificate only so that
//! enrollment can happen; every other ALPN requires one, enforced by the controller after the
//! handshake ([`peer_identity`] returns `None`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::pki::{self, CONTROLLER_DNS_NAME, Identity};
use crate::proto::{ALPN_ADMIN, ALPN_AGENT, ALPN_ENROLL};

/// TLS server name clients use; the controller's certificate carries it as a DNS SAN.
pub const SERVER_NAME: &str = CONTROLLER_DNS_NAME;
/// A connection with no traffic for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// QUIC-level keep-alive, well inside [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid PEM in {what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("quic configuration: {0}")]
    Quic(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TransportError::Pem {
        what,
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TransportError::Pem {
            what,
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TransportError::Pem {
        what: "private key",
        message: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(KEEP_ALIVE));
    Arc::new(t)
}

/// The controller's QUIC server config: its certificate chain, client certificates verified
/// against the CA when presented, ALPNs for agents, admins and enrollment.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let mut chain = certs(cert_pem, "controller certificate")?;
    chain.extend(certs(ca_pem, "CA certificate")?);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key(key_pem)?)?;
    tls.alpn_protocols = vec![
        ALPN_AGENT.to_vec(),
        ALPN_ADMIN.to_vec(),
        ALPN_ENROLL.to_vec(),
    ];
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| TransportError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// A client config presenting `cert_pem`/`key_pem` and trusting only the CA in `ca_pem`.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem, "client certificate")?, key(key_pem)?)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    finish_client(tls)
}

/// A client config for enrollment: no client certificate, and the server is trusted only if
/// its chain carries the CA whose SHA-256 is `ca_sha256` and the leaf verifies against it.
pub fn enroll_client_config(ca_sha256: &str) -> Result<quinn::ClientConfig, TransportError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCa {
        fingerprint: ca_sha256.to_ascii_lowercase(),
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    finish_client(tls)
}

fn finish_client(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TransportError> {
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| TransportError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// A client endpoint bound to an ephemeral port of `target`'s address family.
pub fn client_endpoint(target: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    let bind: SocketAddr = if target.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    Ok(quinn::Endpoint::client(bind)?)
}

/// The identity in the peer's verified certificate, if it presented one.
pub fn peer_identity(conn: &quinn::Connection) -> Option<Identity> {
    let any = conn.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    pki::cert_identity(chain.first()?)
}

/// The ALPN the connection negotiated.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let any = conn.handshake_data()?;
    any.downcast::<HandshakeData>().ok()?.protocol
}

/// Trusts a server whose presented chain includes the pinned CA and verifies against it.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| pki::fingerprint_der(c) == self.fingerprint)
        else {
            return Err(rustls::Error::General(
                "controller CA does not match the pinned fingerprint".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
