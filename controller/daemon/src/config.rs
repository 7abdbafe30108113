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
    /// The time zone of quota reset periods (a day starts at its midnight), as a fixed UTC
    /// offset: `UTC` (default), `+03:00`, `-05:30`. Zones with daylight saving time are not
    /// supported: give the offset the periods should follow.
    pub time_zone: Option<String>,
    /// Thresholds past which a host's vitals become warnings (`[health]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<FileHealth>,
    /// Receivers of signed host events (`[[webhooks]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<FileWebhook>,
}

/// `[health]`: when a host's vitals are worth a warning (`servers show`, `doctor`, `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    /// Warn when the agent's certificate expires within this, humantime (default `2d`).
    pub cert_warn: Option<String>,
    /// Warn when the agent's clock is off by more than this, humantime (default `2s`).
    pub clock_skew_warn: Option<String>,
    /// Warn about a container restarted at least this often (default 3).
    pub container_restarts_warn: Option<u32>,
    /// Warn when the agent's data directory has fewer free bytes (default 1 GiB).
    pub disk_free_warn: Option<u64>,
    /// Warn when more usage entries wait for the controller's ack (default 10000).
    pub ledger_backlog_warn: Option<u64>,
}

/// One `[[webhooks]]` table. Every field is optional here so that a missing one is reported
/// by name (`webhooks[0].secret`), not by the parser.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebhook {
    /// `http://` or `https://` receiver.
    pub url: Option<String>,
    /// Event names the receiver wants (see [`crate::webhooks::WebhookEvent`]).
    pub events: Option<Vec<String>>,
    /// HMAC-SHA256 key of the `X-Vpn-Signature` header; never logged.
    pub secret: Option<String>,
    /// Delivery attempts per event, first included (default 5, at most 20).
    pub attempts: Option<u32>,
    /// Wait before the first retry, doubled after each (default `1s`).
    pub retry_backoff: Option<String>,
}

impl std::fmt::Debug for FileWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWebhook")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("attempts", &self.attempts)
            .field("retry_backoff", &self.retry_backoff)
            .finish()
    }
}

/// Health thresholds in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Agent certificates live 30 days and renew at a jittered 70–90 % of their lifetime, so a
    /// healthy agent renews with at least 3 days left; under 2 days left means a renewal was
    /// missed (agent offline, renewal refused) and the host is days from being locked out.
    pub cert_warn: Duration,
    /// A skew measurement errs by at most half the round trip (and the report's queueing); NTP
    /// keeps hosts within milliseconds. 2 s is far above both and still catches a host without
    /// time sync long before expiry times or certificate validity checks are affected.
    pub clock_skew_warn: Duration,
    pub container_restarts_warn: u32,
    pub disk_free_warn: u64,
    pub ledger_backlog_warn: u64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            cert_warn: Duration::from_secs(2 * 86_400),
            clock_skew_warn: Duration::from_secs(2),
            container_restarts_warn: 3,
            disk_free_warn: 1 << 30,
            ledger_backlog_warn: 10_000,
        }
    }
}

/// A webhook secret: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A validated webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub events: std::collections::BTreeSet<crate::webhooks::WebhookEvent>,
    pub secret: Secret,
    pub attempts: u32,
    pub retry_backoff: Duration,
}

impl WebhookConfig {
    /// The receiver as logs may show it: scheme, host and port only (the path and query of
    /// many webhook URLs are credentials themselves).
    pub fn target(&self) -> String {
        redact_url(self.url.as_str())
    }
}

/// `scheme://host:port/…` of a URL, or `[unparsable url]`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}/…",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => "[unparsable url]".into(),
    }
}

/// Shortest secret accepted: an HMAC key anyone can guess signs nothing.
pub const MIN_SECRET: usize = 16;
/// Most delivery attempts a webhook may ask for.
pub const MAX_ATTEMPTS: u32 = 20;

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
    /// Reset periods of data limits are counted in this offset.
    pub time_zone: time::UtcOffset,
    pub health: HealthThresholds,
    pub webhooks: Vec<WebhookConfig>,
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
    #[error("invalid value for `webhooks[{index}].{field}`: {reason}")]
    Webhook {
        index: usize,
        field: &'static str,
        reason: String,
    },
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
            time_zone: time_zone(file.time_zone.as_deref())?,
            health: health(file.health.unwrap_or_default())?,
            webhooks: file
                .webhooks
                .iter()
                .enumerate()
                .map(|(i, w)| webhook(i, w))
                .collect::<Result<_, _>>()?,
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

/// `UTC`, `Z` or `±HH:MM`.
fn time_zone(value: Option<&str>) -> Result<time::UtcOffset, ConfigError> {
    let Some(v) = value else {
        return Ok(time::UtcOffset::UTC);
    };
    let bad = || ConfigError::Invalid {
        field: "time_zone",
        reason: format!("{v:?} is not UTC or an offset like +03:00 or -05:30"),
    };
    if v.eq_ignore_ascii_case("utc") || v == "Z" {
        return Ok(time::UtcOffset::UTC);
    }
    let (sign, rest) = match v.as_bytes().first() {
        Some(b'+') => (1i8, &v[1..]),
        Some(b'-') => (-1i8, &v[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    time::UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

fn health(file: FileHealth) -> Result<HealthThresholds, ConfigError> {
    let d = HealthThresholds::default();
    Ok(HealthThresholds {
        cert_warn: duration("health.cert_warn", file.cert_warn.as_deref(), "2d")?,
        clock_skew_warn: positive_duration(
            "health.clock_skew_warn",
            file.clock_skew_warn.as_deref(),
            "2s",
        )?,
        container_restarts_warn: match file.container_restarts_warn {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    field: "health.container_restarts_warn",
                    reason: "must be at least 1".into(),
                });
            }
            v => v.unwrap_or(d.container_restarts_warn),
        },
        disk_free_warn: file.disk_free_warn.unwrap_or(d.disk_free_warn),
        ledger_backlog_warn: file.ledger_backlog_warn.unwrap_or(d.ledger_backlog_warn),
    })
}

fn webhook(index: usize, file: &FileWebhook) -> Result<WebhookConfig, ConfigError> {
    let bad = |field, reason: String| ConfigError::Webhook {
        index,
        field,
        reason,
    };
    let text = file
        .url
        .as_deref()
        .ok_or_else(|| bad("url", "required".into()))?;
    let url =
        url::Url::parse(text).map_err(|e| bad("url", format!("{}: {e}", redact_url(text))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            "url",
            format!("scheme {:?}: only http and https", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("url", "has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "url",
            "must not carry a user or password (requests are authenticated by the signature)"
                .into(),
        ));
    }
    let names = file
        .events
        .as_deref()
        .ok_or_else(|| bad("events", "required".into()))?;
    if names.is_empty() {
        return Err(bad("events", "names no event".into()));
    }
    let mut events = std::collections::BTreeSet::new();
    for name in names {
        let event = crate::webhooks::WebhookEvent::parse(name).ok_or_else(|| {
            bad(
                "events",
                format!(
                    "unknown event {name:?}: expected one of {}",
                    crate::webhooks::WebhookEvent::ALL
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        events.insert(event);
    }
    let secret = file
        .secret
        .as_deref()
        .ok_or_else(|| bad("secret", "required".into()))?;
    if secret.trim().chars().count() < MIN_SECRET {
        return Err(bad(
            "secret",
            format!("must be at least {MIN_SECRET} characters"),
        ));
    }
    let attempts = match file.attempts.unwrap_or(5) {
        n @ 1..=MAX_ATTEMPTS => n,
        n => return Err(bad("attempts", format!("{n}: must be 1-{MAX_ATTEMPTS}"))),
    };
    let backoff_text = file.retry_backoff.as_deref().unwrap_or("1s");
    let retry_backoff = humantime::parse_duration(backoff_text)
        .map_err(|e| bad("retry_backoff", format!("{backoff_text:?}: {e}")))?;
    if retry_backoff.is_zero() {
        return Err(bad("retry_backoff", "must be longer than zero".into()));
    }
    Ok(WebhookConfig {
        url,
        events,
        secret: Secret(secret.to_string()),
        attempts,
        retry_backoff,
    })
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

    const HOOK: &str = "url = \"https://hooks.example/in?token=abc\"\nevents = [\"host_degraded\"]\nsecret = \"0123456789abcdef\"\n";

    #[test]
    fn webhooks_and_health_thresholds_have_documented_defaults() {
        let c = resolve("", Overrides::default()).unwrap();
        assert_eq!(c.health, HealthThresholds::default());
        assert_eq!(c.health.cert_warn, Duration::from_secs(2 * 86_400));
        assert!(c.webhooks.is_empty());
        let text = format!(
            "[[webhooks]]\n{HOOK}\n[[webhooks]]\n{HOOK}attempts = 2\nretry_backoff = \"100ms\"\n"
        );
        let c = resolve(&text, Overrides::default()).unwrap();
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(
            (c.webhooks[0].attempts, c.webhooks[0].retry_backoff),
            (5, Duration::from_secs(1))
        );
        assert_eq!(c.webhooks[1].attempts, 2);
        assert_eq!(c.webhooks[0].target(), "https://hooks.example:443/…");
        // Reserved for the accounting issue, accepted already.
        let reserved = HOOK.replace(
            "\"host_degraded\"",
            "\"user_limited\", \"user_expired\", \"user_on_hold\"",
        );
        resolve(&format!("[[webhooks]]\n{reserved}"), Overrides::default()).unwrap();
    }

    #[test]
    fn a_webhook_secret_never_shows_in_debug_output_or_errors() {
        let file = FileConfig::parse(Path::new("/x"), &format!("[[webhooks]]\n{HOOK}")).unwrap();
        assert!(!format!("{file:?}").contains("0123456789abcdef"));
        assert!(!format!("{file:?}").contains("token=abc"));
        let c = Config::resolve(Path::new("/data"), file, Overrides::default()).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        let short = HOOK.replace("0123456789abcdef", "hunter2");
        let err = resolve(&format!("[[webhooks]]\n{short}"), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("webhooks[0].secret") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn invalid_webhooks_name_the_field() {
        let cases = [
            (
                HOOK.replace("https://hooks.example/in?token=abc", "ftp://x"),
                "webhooks[0].url",
            ),
            (
                HOOK.replace("https://hooks.example/in?token=abc", "https://u:p@x/"),
                "webhooks[0].url",
            ),
            (
                HOOK.replace("https://hooks.example/in?token=abc", "not a url"),
                "webhooks[0].url",
            ),
            (
                HOOK.replace("\"host_degraded\"", "\"host_exploded\""),
                "webhooks[0].events",
            ),
            (
                HOOK.replace("[\"host_degraded\"]", "[]"),
                "webhooks[0].events",
            ),
            (
                HOOK.replace("secret = \"0123456789abcdef\"\n", ""),
                "webhooks[0].secret",
            ),
            (format!("{HOOK}attempts = 0\n"), "webhooks[0].attempts"),
            (
                format!("{HOOK}retry_backoff = \"never\"\n"),
                "webhooks[0].retry_backoff",
            ),
            (format!("{HOOK}colour = 1\n"), "unknown field `colour`"),
        ];
        for (body, needle) in cases {
            let text = format!("[[webhooks]]\n{body}");
            let err = resolve(&text, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{body}: {err}");
            assert!(
                !err.contains("token=abc"),
                "the url's query is not shown: {err}"
            );
        }
    }

    #[test]
    fn time_zones_are_fixed_offsets() {
        let tz = |t: &str| resolve(t, Overrides::default()).unwrap().time_zone;
        assert_eq!(tz(""), time::UtcOffset::UTC);
        assert_eq!(tz("time_zone = \"UTC\""), time::UtcOffset::UTC);
        assert_eq!(
            tz("time_zone = \"+03:00\""),
            time::UtcOffset::from_hms(3, 0, 0).unwrap()
        );
        assert_eq!(
            tz("time_zone = \"-05:30\""),
            time::UtcOffset::from_hms(-5, -30, 0).unwrap()
        );
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
            ("time_zone = \"Europe/Berlin\"", "time_zone"),
            ("time_zone = \"+3\"", "time_zone"),
            ("time_zone = \"+15:00\"", "time_zone"),
            ("colour = 1", "unknown field `colour`"),
            ("[health]\ncert_warn = \"soon\"", "health.cert_warn"),
            (
                "[health]\nclock_skew_warn = \"0s\"",
                "health.clock_skew_warn",
            ),
            (
                "[health]\ncontainer_restarts_warn = 0",
                "health.container_restarts_warn",
            ),
            ("[health]\nfoo = 1", "unknown field `foo`"),
        ];
        for (text, needle) in cases {
            let err = resolve(text, Overrides::default()).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
