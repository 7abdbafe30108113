//! Certificate renewal over the live session (SPEC §2.2): at a jittered 70–90% of the current
//! certificate's lifetime the agent makes a fresh key, sends a CSR, and swaps in the renewed
//! certificate. The new identity is used from the next connection on.

use std::path::Path;

use anyhow::{Context, bail};
use tracing::info;
use vpn_shared::fsutil::{SECRET_MODE, write_atomic};
use vpn_shared::pki::{self, Identity};

use crate::config::Paths;

#[derive(Debug)]
pub struct Renewal {
    /// Where in the 70–90% window this agent renews, drawn once at start.
    unit: f64,
    /// The key of the CSR in flight, if any.
    pending_key: Option<String>,
}

impl Renewal {
    pub fn new(unit: f64) -> Self {
        Renewal {
            unit,
            pending_key: None,
        }
    }

    /// Whether the certificate on disk is due and no request is in flight.
    pub fn due(&self, paths: &Paths, now: i64) -> bool {
        if self.pending_key.is_some() {
            return false;
        }
        let Ok((nb, na)) = validity(&paths.cert) else {
            return false;
        };
        pki::renewal_due(nb, na, now, self.unit)
    }

    /// Makes a fresh key and returns the CSR to send.
    pub fn start(&mut self) -> anyhow::Result<String> {
        let (key, csr) = pki::generate_csr()?;
        self.pending_key = Some(key);
        Ok(csr)
    }

    /// The request failed: allow a new attempt later.
    pub fn abandon(&mut self) {
        self.pending_key = None;
    }

    /// Stores the renewed certificate with the key it was requested for.
    pub fn complete(
        &mut self,
        paths: &Paths,
        host_id: &str,
        cert_pem: &str,
    ) -> anyhow::Result<i64> {
        let Some(key) = self.pending_key.take() else {
            bail!("a renewed certificate arrived but no renewal was requested");
        };
        let der = pki::first_cert_der(cert_pem)?;
        if pki::cert_identity(&der) != Some(Identity::Agent(host_id.to_string())) {
            bail!("the renewed certificate does not name this host");
        }
        let (_, not_after) = pki::cert_validity(&der).context("renewed certificate unreadable")?;
        // Key first, then certificate: both are written atomically; the window in between is
        // a single rename.
        write_atomic(&paths.key, key.as_bytes(), SECRET_MODE)?;
        write_atomic(&paths.cert, cert_pem.as_bytes(), SECRET_MODE)?;
        info!(not_after, "certificate renewed");
        Ok(not_after)
    }
}

/// `notAfter` of the certificate at `cert`, Unix seconds; `None` when it is unreadable.
pub fn not_after(cert: &Path) -> Option<i64> {
    validity(cert).ok().map(|(_, na)| na)
}

fn validity(cert: &Path) -> anyhow::Result<(i64, i64)> {
    let pem = std::fs::read_to_string(cert)?;
    let der = pki::first_cert_der(&pem)?;
    pki::cert_validity(&der).context("certificate unreadable")
}
