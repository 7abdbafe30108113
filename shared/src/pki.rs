//! The private CA, certificates and the identities carried in their SANs (SPEC §2.2).
//!
//! Every peer is named by one SAN URI: `urn:vpn:agent:<host-id>`, `urn:vpn:admin:<name>` or
//! `urn:vpn:controller`. The controller authorizes by that identity, never by the subject.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::digest::{SHA256, digest};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

/// The DNS name in the controller's certificate; clients connect with it as the TLS server name.
pub const CONTROLLER_DNS_NAME: &str = "vpn-controller";

/// Who a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Agent(String),
    Admin(String),
    Controller,
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Agent(id) => format!("urn:vpn:agent:{id}"),
            Identity::Admin(name) => format!("urn:vpn:admin:{name}"),
            Identity::Controller => "urn:vpn:controller".to_string(),
        }
    }

    pub fn parse_uri(uri: &str) -> Option<Identity> {
        if uri == "urn:vpn:controller" {
            return Some(Identity::Controller);
        }
        if let Some(id) = uri.strip_prefix("urn:vpn:agent:") {
            return (!id.is_empty()).then(|| Identity::Agent(id.to_string()));
        }
        let name = uri.strip_prefix("urn:vpn:admin:")?;
        (!name.is_empty()).then(|| Identity::Admin(name.to_string()))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
}

/// A certificate issued by the CA, with what the controller records about it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// The controller's certificate authority.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Creates a new CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::Pem(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// SHA-256 of the CA certificate (hex), pinned by joining agents.
    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }

    /// Issues a certificate and a fresh key for `identity` (controller and admin certificates).
    /// Returns the certificate and the PEM private key.
    pub fn issue(
        &self,
        identity: &Identity,
        dns_names: &[String],
        validity: Duration,
    ) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = leaf_params(identity, validity)?;
        for name in dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| PkiError::Rcgen(e))?,
            ));
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((issued(&cert, &params), key.serialize_pem()))
    }

    /// Signs a host's CSR, replacing whatever names it asked for with `identity`: the private key
    /// never leaves the host, and the host cannot choose who it is.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        csr.params = leaf_params(identity, validity)?;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(issued(&cert, &csr.params))
    }
}

/// Checks that a CSR parses and its signature verifies, without signing it.
pub fn check_csr(csr_pem: &str) -> Result<(), PkiError> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map(|_| ())
        .map_err(|e| PkiError::Csr(e.to_string()))
}

/// Checks a CSR like [`check_csr`] and returns the SHA-256 (hex) of its public key (the DER
/// SubjectPublicKeyInfo): the same key asking again yields the same value, whatever else the
/// (randomly signed) request holds.
pub fn csr_key_sha256(csr_pem: &str) -> Result<String, PkiError> {
    use rcgen::PublicKeyData;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::Csr(e.to_string()))?;
    Ok(hex::encode(digest(
        &SHA256,
        &csr.public_key.subject_public_key_info(),
    )))
}

/// Generates a host key and a CSR for it; returns `(key_pem, csr_pem)`.
pub fn generate_csr() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("vpn-agent");
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// SHA-256 (hex) of a DER certificate.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(digest(&SHA256, der))
}

/// SHA-256 (hex) of the first certificate in a PEM text.
pub fn fingerprint_pem(pem: &str) -> Result<String, PkiError> {
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))?;
    Ok(fingerprint_der(&der))
}

/// The identity named by a certificate's SAN URI, if exactly one known URI is present.
pub fn cert_identity(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Identity::parse_uri(u),
        _ => None,
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// A certificate's validity as unix seconds `(not_before, not_after)`.
pub fn cert_validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::Pem(e.to_string()))
}

/// Whether a certificate valid over `[not_before, not_after]` is due for renewal at `now`:
/// past `not_before + f·lifetime` with `f = 0.7 + 0.2·unit`, `unit` in `[0, 1)` chosen once per
/// certificate by the caller, so a fleet enrolled together does not renew together.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64, unit: f64) -> bool {
    let lifetime = (not_after - not_before).max(0) as f64;
    let at = not_before as f64 + lifetime * (0.7 + 0.2 * unit.clamp(0.0, 1.0));
    now as f64 >= at
}

/// A certificate's expiry as unix seconds.
pub fn cert_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(identity: &Identity, validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&identity.uri());
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity {
        Identity::Controller => vec![ExtendedKeyUsagePurpose::ServerAuth],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after =
        now + time::Duration::seconds(validity.as_secs().min(i64::MAX as u64) as i64);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn issued(cert: &rcgen::Certificate, params: &CertificateParams) -> Issued {
    Issued {
        cert_pem: cert.pem(),
        serial: params
            .serial_number
            .as_ref()
            .map(|s| hex::encode(s.to_bytes()))
            .unwrap_or_default(),
        not_after: params.not_after.unix_timestamp(),
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source at all.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f; // keep the serial positive
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_csr_carries_the_identity_the_ca_chose_not_the_one_asked_for() {
        let ca = Ca::generate("test ca").unwrap();
        let (_key, csr) = generate_csr().unwrap();
        let issued = ca
            .sign_csr(
                &csr,
                &Identity::Agent("h-1".into()),
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(cert_identity(&der), Some(Identity::Agent("h-1".into())));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((issued.not_after - now - 3600).abs() < 5);
    }

    #[test]
    fn a_reloaded_ca_keeps_its_fingerprint() {
        let ca = Ca::generate("test ca").unwrap();
        let again = Ca::load(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!(fingerprint_pem(ca.cert_pem()).unwrap(), ca.fingerprint());
    }

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_lifetime() {
        assert!(!renewal_due(0, 100, 69, 0.0));
        assert!(renewal_due(0, 100, 70, 0.0));
        assert!(!renewal_due(0, 100, 89, 0.99));
        assert!(renewal_due(0, 100, 90, 0.99));
        assert!(renewal_due(0, 100, 200, 0.5));
    }

    #[test]
    fn identities_round_trip_and_reject_empty_names() {
        for id in [
            Identity::Agent("abc".into()),
            Identity::Admin("root".into()),
            Identity::Controller,
        ] {
            assert_eq!(Identity::parse_uri(&id.uri()), Some(id));
        }
        assert_eq!(Identity::parse_uri("urn:vpn:agent:"), None);
        assert_eq!(Identity::parse_uri("urn:other"), None);
    }
}
