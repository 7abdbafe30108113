//! Agent configuration: `DIR/agent.toml` (written by `vpn-agent join`), then `VPN_AGENT_*`
//! environment variables and flags (merged by clap).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hostnet::NetConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Controller `HOST:PORT`, from the join string.
    pub controller: String,
    /// This host's id (the identity in its certificate).
    pub host_id: String,
    pub host_name: String,
    /// Docker network mode of service containers (`host` in production).
    pub network_mode: Option<String>,
    /// Address clients should use for this host (default: what the controller sees).
    pub public_address: Option<String>,
    /// Longest wait between reconnect attempts, humantime (default `30s`).
    pub reconnect_max: Option<String>,
    /// Interface whose traffic is shaped (default: the default route's device).
    pub shaping_iface: Option<String>,
    /// The link's real speed, e.g. `1gbit` (default `10gbit`).
    pub link_ceiling: Option<String>,
    /// Whether the agent manages its nftables table (default true).
    pub firewall: Option<bool>,
    /// Whether the agent applies bandwidth limits (default true).
    pub shaping: Option<bool>,
    /// `IP:PORT` to serve Prometheus `/metrics` on (default: off); meant for loopback.
    pub metrics_listen: Option<String>,
    /// How often per-user traffic counters are read into the ledger, humantime (default `10s`).
    pub usage_interval: Option<String>,
}

/// Where the agent keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub state: PathBuf,
    /// The allowances the agent enforces by itself ([`crate::allowance::AllowanceBook`]).
    pub allowances: PathBuf,
}

impl Paths {
    /// The paths under `data_dir` made absolute against the current directory (see
    /// [`absolute`]): what the agent uses at start, so that a relative `--data-dir` names the
    /// same bind mounts, and therefore the same container spec hashes, as its absolute form.
    pub fn resolve(data_dir: &Path) -> Result<Paths, ConfigError> {
        Ok(Paths::new(&absolute(data_dir, "data_dir")?))
    }

    /// The paths under `data_dir` as given (callers that already hold an absolute path).
    pub fn new(data_dir: &Path) -> Paths {
        let pki = data_dir.join("pki");
        Paths {
            data_dir: data_dir.to_path_buf(),
            config: data_dir.join("agent.toml"),
            ca_cert: pki.join("ca.pem"),
            cert: pki.join("agent.pem"),
            key: pki.join("agent.key"),
            state: data_dir.join("state").join("desired.bin"),
            allowances: data_dir.join("allowances.bin"),
        }
    }
}

/// Flags and environment over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub network_mode: Option<String>,
    pub public_address: Option<String>,
    pub reconnect_max: Option<String>,
    pub shaping_iface: Option<String>,
    pub link_ceiling: Option<String>,
    pub no_firewall: bool,
    pub no_shaping: bool,
    pub metrics_listen: Option<String>,
    pub usage_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub controller: String,
    pub host_id: String,
    pub host_name: String,
    pub network_mode: String,
    pub public_address: Option<String>,
    pub reconnect_max: Duration,
    pub net: NetConfig,
    /// Where `/metrics` is served; `None`: not at all.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How often counters are read into the traffic ledger (connected or not).
    pub usage_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path} (has this host joined? run `vpn-agent join`): {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// `path` made absolute against the current directory and lexically normalized.
///
/// Docker refuses relative bind mounts, and a path's spelling is part of every container's spec
/// hash: `.demo/agent-host2`, `./.demo/agent-host2` and `/home/op/.demo/agent-host2` must all
/// become the same string, or restarting the agent with another spelling recreates its
/// containers. Lexical (symlinks are not resolved): the directory may not exist yet.
pub fn absolute(path: &Path, field: &'static str) -> Result<PathBuf, ConfigError> {
    let abs = std::path::absolute(path).map_err(|e| ConfigError::Invalid {
        field,
        reason: format!("{}: {e}", path.display()),
    })?;
    Ok(normalize(&abs))
}

/// Removes `.` components, and `..` together with the component before it, without touching
/// the file system; `..` at the root stays at the root, as the kernel reads it.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                // A relative path climbing above its start keeps its `..`.
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }
}

impl Config {
    pub fn resolve(file: FileConfig, over: Overrides) -> Result<Config, ConfigError> {
        let network_mode = over
            .network_mode
            .or(file.network_mode)
            .unwrap_or_else(|| "host".into());
        if network_mode != "host" && !network_mode.starts_with("container:") {
            return Err(ConfigError::Invalid {
                field: "network_mode",
                reason: format!("{network_mode:?}: expected `host` or `container:NAME`"),
            });
        }
        let reconnect = over
            .reconnect_max
            .or(file.reconnect_max)
            .unwrap_or_else(|| "30s".into());
        let reconnect_max =
            humantime::parse_duration(&reconnect).map_err(|e| ConfigError::Invalid {
                field: "reconnect_max",
                reason: format!("{reconnect:?}: {e}"),
            })?;
        let link_ceiling_bps = over
            .link_ceiling
            .or(file.link_ceiling)
            .map(|c| {
                vpn_shared::rate::parse(&c).map_err(|reason| ConfigError::Invalid {
                    field: "link_ceiling",
                    reason,
                })
            })
            .transpose()?;
        let metrics_listen = over
            .metrics_listen
            .or(file.metrics_listen)
            .map(|a| {
                a.parse().map_err(|e| ConfigError::Invalid {
                    field: "metrics_listen",
                    reason: format!("{a:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:9101)"),
                })
            })
            .transpose()?;
        let usage = over
            .usage_interval
            .or(file.usage_interval)
            .unwrap_or_else(|| "10s".into());
        let usage_interval = humantime::parse_duration(&usage)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                if d.is_zero() {
                    Err("must be more than zero".into())
                } else {
                    Ok(d)
                }
            })
            .map_err(|reason| ConfigError::Invalid {
                field: "usage_interval",
                reason: format!("{usage:?}: {reason}"),
            })?;
        let net = NetConfig {
            shaping_iface: over.shaping_iface.or(file.shaping_iface),
            link_ceiling_bps,
            firewall: !over.no_firewall && file.firewall.unwrap_or(true),
            shaping: !over.no_shaping && file.shaping.unwrap_or(true),
        };
        Ok(Config {
            net,
            controller: file.controller,
            host_id: file.host_id,
            host_name: file.host_name,
            network_mode,
            public_address: over.public_address.or(file.public_address),
            reconnect_max,
            metrics_listen,
            usage_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> FileConfig {
        FileConfig {
            controller: "127.0.0.1:7443".into(),
            host_id: "h".into(),
            host_name: "n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::resolve(file(), Overrides::default()).unwrap();
        assert_eq!(c.network_mode, "host");
        assert_eq!(c.reconnect_max, Duration::from_secs(30));
        assert_eq!(c.metrics_listen, None, "metrics are opt-in");
        assert_eq!(c.usage_interval, Duration::from_secs(10));
        let c = Config::resolve(
            FileConfig {
                usage_interval: Some("30s".into()),
                ..file()
            },
            Overrides {
                usage_interval: Some("2s".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.usage_interval, Duration::from_secs(2), "the flag wins");
        let with_file = Config::resolve(
            FileConfig {
                metrics_listen: Some("127.0.0.1:9101".into()),
                ..file()
            },
            Overrides {
                metrics_listen: Some("[::1]:9102".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            with_file.metrics_listen,
            Some("[::1]:9102".parse().unwrap())
        );
        let c = Config::resolve(
            file(),
            Overrides {
                network_mode: Some("container:x".into()),
                reconnect_max: Some("2s".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.network_mode, "container:x");
        assert_eq!(c.reconnect_max, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (over, field) in [
            (
                Overrides {
                    network_mode: Some("bridge".into()),
                    ..Default::default()
                },
                "network_mode",
            ),
            (
                Overrides {
                    reconnect_max: Some("soon".into()),
                    ..Default::default()
                },
                "reconnect_max",
            ),
            (
                Overrides {
                    metrics_listen: Some("localhost".into()),
                    ..Default::default()
                },
                "metrics_listen",
            ),
            (
                Overrides {
                    usage_interval: Some("0s".into()),
                    ..Default::default()
                },
                "usage_interval",
            ),
            (
                Overrides {
                    usage_interval: Some("often".into()),
                    ..Default::default()
                },
                "usage_interval",
            ),
        ] {
            let err = Config::resolve(file(), over).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn normalize_removes_dots_lexically() {
        for (input, want) in [
            ("/a/./b/../c", "/a/c"),
            ("/a/b/./", "/a/b"),
            ("/../x", "/x"),
            ("/a/../../b", "/b"),
            ("a/./b/..", "a"),
            ("../../a", "../../a"),
            ("a/../../b", "../b"),
            ("/", "/"),
        ] {
            assert_eq!(normalize(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn a_relative_data_dir_resolves_to_the_absolute_spelling() {
        let cwd = std::env::current_dir().unwrap();
        let abs = cwd.join(".demo/agent-host2");
        for spelling in [
            ".demo/agent-host2",
            "./.demo/agent-host2",
            ".demo/../.demo/./agent-host2/",
        ] {
            let p = Paths::resolve(Path::new(spelling)).unwrap();
            assert_eq!(p.data_dir, abs, "{spelling}");
            assert_eq!(p.config, abs.join("agent.toml"));
            assert_eq!(p.state, abs.join("state/desired.bin"));
            assert_eq!(p.allowances, abs.join("allowances.bin"));
        }
        assert_eq!(Paths::resolve(&abs).unwrap().data_dir, abs);
    }

    /// The story: the demo's agent restarted with `--data-dir .demo/agent-host2` saw
    /// another spec hash (the bind mount's spelling), removed its working container and could
    /// not create the new one. Both spellings must render byte-identical container specs.
    #[test]
    fn relative_and_absolute_data_dir_render_the_same_container_spec() {
        use vpn_shared::model::{DesiredState, Protocol, ServiceOptions, ServiceSpec};

        let service = ServiceSpec {
            name: "ss".into(),
            protocol: Protocol::Shadowsocks,
            port: 8388,
            image: None,
            options: ServiceOptions::Shadowsocks {
                method: "chacha20-ietf-poly1305".into(),
            },
            bandwidth: Default::default(),
            new_conn_rate: None,
        };
        let state = DesiredState::default();
        let render = |data_dir: &str| {
            let paths = Paths::resolve(Path::new(data_dir)).unwrap();
            let run_dir = crate::apply::run_dir(&paths.data_dir, &service.name);
            let ctx = crate::drivers::ServiceCtx {
                container: "vpn-h2-ss",
                run_dir: &run_dir,
                network_mode: "host",
            };
            let rendered = crate::drivers::driver(Protocol::Shadowsocks)
                .render(&service, &state, &ctx)
                .unwrap();
            rendered.into_iter().next().unwrap().spec
        };
        let abs = std::env::current_dir().unwrap().join(".demo/agent-host2");
        let relative = render(".demo/agent-host2");
        let absolute = render(abs.to_str().unwrap());
        assert_eq!(relative, absolute);
        assert_eq!(relative.spec_hash(), absolute.spec_hash());
        let bind = &relative.binds[0];
        assert!(
            bind.starts_with('/'),
            "Docker refuses relative binds: {bind}"
        );
    }
}
