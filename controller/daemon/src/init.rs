//! `vpn-controller init`: the CA, the controller's and the first admin's certificates, the
//! config file, the database and the CLI context file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use vpn_shared::context::CliContext;
use vpn_shared::fsutil::{SECRET_MODE, create_private_dir, write_atomic};
use vpn_shared::pki::{CONTROLLER_DNS_NAME, Ca, Identity};

use crate::config::{Config, FileConfig, config_path};
use crate::store::Store;

/// Where the controller keeps its PKI files inside the data directory.
pub struct PkiPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> PkiPaths {
        let pki = data_dir.join("pki");
        PkiPaths {
            ca_cert: pki.join("ca.pem"),
            ca_key: pki.join("ca.key"),
            cert: pki.join("controller.pem"),
            key: pki.join("controller.key"),
            admin_cert: pki.join("admin.pem"),
            admin_key: pki.join("admin.key"),
        }
    }
}

/// Admin certificates live a year; the controller's own certificate ten.
const ADMIN_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
const CONTROLLER_LIFETIME: Duration = Duration::from_secs(3650 * 86_400);

/// Initializes a data directory; refuses to overwrite an existing CA.
pub async fn init(config: &Config, file: &FileConfig, context_path: &Path) -> anyhow::Result<()> {
    let paths = PkiPaths::new(&config.data_dir);
    if paths.ca_cert.exists() {
        bail!(
            "{} is already initialized (found {})",
            config.data_dir.display(),
            paths.ca_cert.display()
        );
    }
    create_private_dir(&config.data_dir)
        .and_then(|()| create_private_dir(&config.data_dir.join("pki")))
        .with_context(|| format!("creating {}", config.data_dir.display()))?;

    let ca = Ca::generate("vpn-fleet controller CA")?;
    let (server, server_key) = ca.issue(
        &Identity::Controller,
        &[CONTROLLER_DNS_NAME.to_string()],
        CONTROLLER_LIFETIME,
    )?;
    let (admin, admin_key) = ca.issue(&Identity::Admin("admin".into()), &[], ADMIN_LIFETIME)?;
    for (path, contents) in [
        (&paths.ca_cert, ca.cert_pem().to_string()),
        (&paths.ca_key, ca.key_pem()),
        (&paths.cert, server.cert_pem),
        (&paths.key, server_key),
        (&paths.admin_cert, admin.cert_pem),
        (&paths.admin_key, admin_key),
    ] {
        write_atomic(path, contents.as_bytes(), SECRET_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let default_db = config.data_dir.join("controller.db");
    let file = FileConfig {
        listen: Some(config.listen.clone()),
        public_address: Some(config.public_address.clone()),
        database_url: (config.database_path != default_db)
            .then(|| format!("sqlite://{}", config.database_path.display()))
            .or(file.database_url.clone()),
        ..file.clone()
    };
    let toml = toml::to_string(&file).context("rendering controller.toml")?;
    write_atomic(&config_path(&config.data_dir), toml.as_bytes(), SECRET_MODE)?;

    Store::open(&config.database_path)
        .await
        .with_context(|| format!("creating database {}", config.database_path.display()))?;

    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let context = CliContext {
        controller: config.public_address.clone(),
        ca_cert: abs(&paths.ca_cert),
        admin_cert: abs(&paths.admin_cert),
        admin_key: abs(&paths.admin_key),
    };
    if let Some(dir) = context_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(context_path, context.to_toml().as_bytes(), SECRET_MODE)
        .with_context(|| format!("writing {}", context_path.display()))?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        ca_sha256 = %ca.fingerprint(),
        context = %context_path.display(),
        "controller initialized"
    );
    Ok(())
}
