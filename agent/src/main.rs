//! `vpn-agent`: `join` enrolls this host with a join string, `run` serves the controller's
//! desired state.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vpn_agent::apply::Applier;
use vpn_agent::apply::docker::Docker;
use vpn_agent::config::{Config, FileConfig, Overrides, Paths};
use vpn_agent::enroll::JoinError;
use vpn_agent::metrics::Metrics;
use vpn_agent::session::Agent;

#[derive(Parser)]
#[command(name = "vpn-agent", version, about = "VPN Fleet Manager host agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this host with the join string printed by `vpn servers add`.
    Join {
        join: String,
        #[arg(long, env = "VPN_AGENT_DATA_DIR", default_value = "/var/lib/vpn-agent")]
        data_dir: PathBuf,
        /// Address clients should use for this host (default: what the controller sees).
        #[arg(long, env = "VPN_AGENT_PUBLIC_ADDRESS")]
        public_address: Option<String>,
    },
    /// Apply the saved state, then follow the controller.
    Run {
        #[arg(long, env = "VPN_AGENT_DATA_DIR", default_value = "/var/lib/vpn-agent")]
        data_dir: PathBuf,
        /// Docker network mode of service containers: `host` (production) or `container:NAME`.
        #[arg(long, env = "VPN_AGENT_NETWORK_MODE")]
        network_mode: Option<String>,
        #[arg(long, env = "VPN_AGENT_PUBLIC_ADDRESS")]
        public_address: Option<String>,
        /// Longest pause between reconnect attempts (e.g. `30s`).
        #[arg(long, env = "VPN_AGENT_RECONNECT_MAX")]
        reconnect_max: Option<String>,
        /// Interface to shape (default: the default route's device).
        #[arg(long, env = "VPN_AGENT_SHAPING_IFACE")]
        shaping_iface: Option<String>,
        /// The link's real speed, e.g. `1gbit` (default `10gbit`).
        #[arg(long, env = "VPN_AGENT_LINK_CEILING")]
        link_ceiling: Option<String>,
        /// Do not manage the nftables table `inet vpn_agent`.
        #[arg(long, env = "VPN_AGENT_NO_FIREWALL")]
        no_firewall: bool,
        /// Do not apply bandwidth limits.
        #[arg(long, env = "VPN_AGENT_NO_SHAPING")]
        no_shaping: bool,
        /// Serve Prometheus `/metrics` on this `IP:PORT` (off by default; keep it on loopback).
        #[arg(long, env = "VPN_AGENT_METRICS_LISTEN")]
        metrics_listen: Option<String>,
        /// How often per-user traffic counters are read into the ledger (default `10s`).
        #[arg(long, env = "VPN_AGENT_USAGE_INTERVAL")]
        usage_interval: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::from(71);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            let code = if let Some(j) = e.downcast_ref::<JoinError>() {
                match j {
                    JoinError::Refused(_) => 77,
                    JoinError::Unavailable { .. } => 69,
                }
            } else if e
                .chain()
                .any(|c| c.downcast_ref::<vpn_agent::config::ConfigError>().is_some())
            {
                78
            } else {
                1
            };
            std::process::ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Join {
            join,
            data_dir,
            public_address,
        } => {
            let paths = Paths::resolve(&data_dir)?;
            vpn_agent::enroll::join(&join, &paths.data_dir, public_address).await
        }
        Command::Run {
            data_dir,
            network_mode,
            public_address,
            reconnect_max,
            shaping_iface,
            link_ceiling,
            no_firewall,
            no_shaping,
            metrics_listen,
            usage_interval,
        } => {
            // Absolute from here on: the data directory's spelling is in every bind mount and
            // so in every container's spec hash.
            let paths = Paths::resolve(&data_dir)?;
            let file = FileConfig::load(&paths.config)?;
            let config = Config::resolve(
                file,
                Overrides {
                    network_mode,
                    public_address,
                    reconnect_max,
                    shaping_iface,
                    link_ceiling,
                    no_firewall,
                    no_shaping,
                    metrics_listen,
                    usage_interval,
                },
            )?;
            let metrics = Metrics::new();
            if let Some(addr) = config.metrics_listen {
                // The task lives as long as the process; the agent never stops serving it.
                let _ = vpn_agent::metrics::serve(addr, &metrics).await?;
            }
            let docker = Docker::connect().await.context("connecting to Docker")?;
            let applier = Applier::new(
                docker,
                &config.host_id,
                &paths.data_dir,
                &config.network_mode,
            );
            tracing::info!(host = %config.host_name, host_id = %config.host_id, controller = %config.controller, network_mode = %config.network_mode, data_dir = %paths.data_dir.display(), "agent starting");
            let net = vpn_agent::hostnet::HostNet::setup(&config.net).await;
            Agent::new(config, paths, applier, net, metrics).run().await
        }
    }
}
