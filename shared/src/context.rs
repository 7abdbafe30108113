//! The CLI context file: how `vpn` reaches and authenticates to a controller.
//!
//! Written by `vpn-controller init` (default `~/.config/vpn/config.toml`, mode 0600), read by
//! `vpn` (override the path with `VPN_CONFIG`). Paths inside are absolute.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable that overrides the context file's path.
pub const CONTEXT_ENV: &str = "VPN_CONFIG";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliContext {
    /// Controller address, `HOST:PORT` (UDP).
    pub controller: String,
    /// PEM file of the controller's CA.
    pub ca_cert: PathBuf,
    /// PEM file of the admin certificate.
    pub admin_cert: PathBuf,
    /// PEM file of the admin private key (0600).
    pub admin_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read context file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid context file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no context file: set {CONTEXT_ENV} or run `vpn-controller init` (looked at {0})")]
    Missing(PathBuf),
}

impl CliContext {
    /// The default path: `$VPN_CONFIG`, else `$HOME/.config/vpn/config.toml`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os(CONTEXT_ENV) {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".config/vpn/config.toml")
    }

    pub fn load(path: &Path) -> Result<CliContext, ContextError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ContextError::Missing(path.to_path_buf())
            } else {
                ContextError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<CliContext, ContextError> {
        toml::from_str(text).map_err(|e| ContextError::Invalid {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
