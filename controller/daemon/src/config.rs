//! Controller configuration, layered: defaults, then `DIR/controller.toml`, then
//! `VPN_CONTROLLER_*` environment variables and flags (clap merges those two).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default QUIC port of the controller.
pub const DEFAULT_PORT: u16 = 7443;

/// The file form of the configuration; every field optional so flags and env can override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// UDP address to listen on, for example `0.0.0.0:7443`.
    pub listen: Option<String>,
    /// `HOST:PORT` agents and admins dial; goes into join strings.
    pub public_address: Option<String>,
    /// Only `sqlite://PATH` for now.
    pub database_url: Option<String>,
    /// Lifetime of agent certificates, humantime (default `30d`).
    pub agent_cert_lifetime: Option<String>,
    /// How long fleet-wide changes wait for acks, humantime (default `10s`).
    pub ack_timeout: Option<String>,
    /// The whole enrollment exchange (request, signing, answer) must finish within this,
    /// humantime (default `10s`); a silent or slow peer is closed then.
    pub enroll_timeout: Option<String>,
    /// Enrollment connections (the only ones without a certificate) open at once, from all
    /// sources (default 64). More are refused at once.
    pub enroll_max_connections: Option<usize>,
    /// Enrollment connections open at once from one source address (default 4).
    pub enroll_max_per_address: Option<usize>,
    /// Changes queued for one agent that has not caught up; past it the backlog becomes one
    /// full resync (default 20000).
    pub max_queued_changes: Option<usize>,
    /// TCP address of the Prometheus `/metrics` listener, for example `127.0.0.1:9464`.
    /// Default: none (off; see docs/OPERATIONS.md, "Metrics").
    pub metrics_listen: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub public_address: String,
    pub database_path: PathBuf,
    pub agent_cert_lifetime: Duration,
    pub ack_timeout: Duration,
    pub enroll_timeout: Duration,
    pub enroll_max_connections: usize,
    pub enroll_max_per_address: usize,
    pub max_queued_changes: usize,
    /// `None`: no `/metrics` listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Overrides from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub public_address: Option<String>,
    pub database_url: Option<String>,
    pub metrics_listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("controller.toml")
}

impl FileConfig {
    /// Reads `DIR/controller.toml`; a missing file is an empty configuration.
    pub fn load(data_dir: &Path) -> Result<FileConfig, ConfigError> {
        let path = config_path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => FileConfig::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }
}

impl Config {
    /// Layers overrides over the file over defaults, and validates the result.
    pub fn resolve(
        data_dir: &Path,
        file: FileConfig,
        over: Overrides,
    ) -> Result<Config, ConfigError> {
        let listen = over
            .listen
            .or(file.listen)
            .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"));
        listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::Invalid {
                field: "listen",
                reason: format!("{listen:?}: {e}"),
            })?;
        let public_address = over
            .public_address
            .or(file.public_address)
            .unwrap_or_else(|| listen.replace("0.0.0.0", "127.0.0.1"));
        check_host_port("public_address", &public_address)?;
        let database_path = match over.database_url.or(file.database_url) {
            None => data_dir.join("controller.db"),
            Some(url) => parse_database_url(&url)?,
        };
        Ok(Config {
            data_dir: data_dir.to_path_buf(),
            listen,
            public_address,
            database_path,
            agent_cert_lifetime: duration(
                "agent_cert_lifetime",
                file.agent_cert_lifetime.as_deref(),
                "30d",
            )?,
            ack_timeout: duration("ack_timeout", file.ack_timeout.as_deref(), "10s")?,
            enroll_timeout: positive_duration(
                "enroll_timeout",
                file.enroll_timeout.as_deref(),
                "10s",
            )?,
            enroll_max_connections: at_least_one(
                "enroll_max_connections",
                file.enroll_max_connections,
                64,
            )?,
            enroll_max_per_address: at_least_one(
                "enroll_max_per_address",
                file.enroll_max_per_address,
                4,
            )?,
            max_queued_changes: at_least_one(
                "max_queued_changes",
                file.max_queued_changes,
                20_000,
            )?,
            metrics_listen: socket_addr(
                "metrics_listen",
                over.metrics_listen.or(file.metrics_listen),
            )?,
        })
    }
}

fn socket_addr(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    value
        .map(|v| {
            v.parse().map_err(|e| ConfigError::Invalid {
                field,
                reason: format!("{v:?}: {e} (expected IP:PORT, for example 127.0.0.1:9464)"),
            })
        })
        .transpose()
}

fn check_host_port(field: &'static str, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Invalid {
        field,
        reason: format!("{value:?}: {reason}"),
    };
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("port must be 1-65535")),
    }
}

fn parse_database_url(url: &str) -> Result<PathBuf, ConfigError> {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(ConfigError::Invalid {
            field: "database_url",
            reason: format!("{url:?}: only sqlite://PATH is supported in this version"),
        }),
    }
}

fn duration(
    field: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or(default);
    humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
        field,
        reason: format!("{text:?}: {e}"),
    })
}

/// A duration that must not be zero: a zero deadline would refuse every peer.
fn positive_duration(
    field: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let d = duration(field, value, default)?;
    if d.is_zero() {
        return Err(ConfigError::Invalid {
            field,
            reason: "must be longer than zero".into(),
        });
    }
    Ok(d)
}

/// A count that must be at least one: zero would refuse everything.
fn at_least_one(
    field: &'static str,
    value: Option<usize>,
    default: usize,
) -> Result<usize, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid {
            field,
            reason: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, over: Overrides) -> Result<Config, ConfigError> {
        let dir = Path::new("/data");
        let file = FileConfig::parse(&config_path(dir), text)?;
        Config::resolve(dir, file, over)
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let c = resolve("listen = \"0.0.0.0:9000\"\n", Overrides::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.public_address, "127.0.0.1:9000");
        assert_eq!(c.database_path, PathBuf::from("/data/controller.db"));
        let c = resolve(
            "listen = \"0.0.0.0:9000\"\n",
            Overrides {
                listen: Some("127.0.0.1:9100".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100");
    }

    #[test]
    fn invalid_files_name_the_field() {
        let cases = [
            ("listen = \"nope\"", "listen"),
            ("public_address = \"host\"", "public_address"),
            ("database_url = \"postgres://x\"", "database_url"),
            ("ack_timeout = \"soon\"", "ack_timeout"),
            ("enroll_timeout = \"0s\"", "enroll_timeout"),
            ("enroll_max_connections = 0", "enroll_max_connections"),
            ("enroll_max_per_address = 0", "enroll_max_per_address"),
            ("max_queued_changes = 0", "max_queued_changes"),
            ("metrics_listen = \"localhost\"", "metrics_listen"),
            ("colour = 1", "unknown field `colour`"),
        ];
        for (text, needle) in cases {
            let err = resolve(text, Overrides::default()).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
