//! `vpn-controller`: `init` creates a controller's data directory, `run` serves it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use vpn_controller::config::{Config, FileConfig, Overrides};
use vpn_shared::context::CliContext;

#[derive(Parser)]
#[command(
    name = "vpn-controller",
    version,
    about = "VPN Fleet Manager controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA, certificates, database and the CLI context file.
    Init {
        #[command(flatten)]
        common: Common,
        /// Where to write the CLI context file (default: $VPN_CONFIG or ~/.config/vpn/config.toml).
        #[arg(long)]
        context: Option<PathBuf>,
    },
    /// Serve agents and operators.
    Run {
        #[command(flatten)]
        common: Common,
        /// TCP address for Prometheus `/metrics` (for example 127.0.0.1:9464); off by default.
        #[arg(long, env = "VPN_CONTROLLER_METRICS_LISTEN", value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
}

#[derive(Args)]
struct Common {
    /// Data directory (config, PKI, database).
    #[arg(
        long,
        env = "VPN_CONTROLLER_DATA_DIR",
        default_value = "/var/lib/vpn-controller"
    )]
    data_dir: PathBuf,
    /// UDP address to listen on.
    #[arg(long, env = "VPN_CONTROLLER_LISTEN")]
    listen: Option<String>,
    /// HOST:PORT agents and operators dial (goes into join strings).
    #[arg(long, env = "VPN_CONTROLLER_PUBLIC_ADDRESS")]
    public_address: Option<String>,
    /// Database URL (`sqlite://PATH`).
    #[arg(long, env = "VPN_CONTROLLER_DATABASE_URL")]
    database_url: Option<String>,
}

impl Common {
    fn config(&self, metrics_listen: Option<String>) -> anyhow::Result<(Config, FileConfig)> {
        let file = FileConfig::load(&self.data_dir)?;
        let over = Overrides {
            listen: self.listen.clone(),
            public_address: self.public_address.clone(),
            database_url: self.database_url.clone(),
            metrics_listen,
        };
        Ok((Config::resolve(&self.data_dir, file.clone(), over)?, file))
    }
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
            let config_error = e.chain().any(|c| {
                c.downcast_ref::<vpn_controller::config::ConfigError>()
                    .is_some()
            });
            std::process::ExitCode::from(if config_error { 78 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { common, context } => {
            let (config, file) = common.config(None)?;
            let context = context.unwrap_or_else(CliContext::default_path);
            vpn_controller::init::init(&config, &file, &context)
                .await
                .context("init failed")
        }
        Command::Run {
            common,
            metrics_listen,
        } => {
            let (config, _) = common.config(metrics_listen)?;
            vpn_controller::server::run(config).await
        }
    }
}
