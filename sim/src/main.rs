//! `vpn-agent-sim`: enroll N simulated hosts, then run them as agents against the controller.
//!
//! ```sh
//! vpn-agent-sim enroll --count 1000 --out /tmp/sim.json     # as the operator of $VPN_CONFIG
//! vpn-agent-sim run --identities /tmp/sim.json --for 60s     # prints the fleet's counters
//! ```

#![allow(clippy::print_stdout)] // a benchmark instrument: its output is its figures

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use vpn_agent_sim::{SimConfig, Stats, enroll, load_identities, run_agents, save_identities};
use vpn_shared::context::CliContext;

#[derive(Parser)]
#[command(
    name = "vpn-agent-sim",
    version,
    about = "Simulated agents over the real protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Adds and enrolls COUNT hosts (as the operator of the CLI context) and writes their
    /// identities (private keys included; mode 0600) to OUT.
    Enroll {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        /// Host names are PREFIX and a five-digit index.
        #[arg(long, default_value = "sim-")]
        prefix: String,
        /// The first index (to add hosts to an earlier run's).
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// The CLI context (default: $VPN_CONFIG or ~/.config/vpn/config.toml).
        #[arg(long, env = "VPN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Runs every host of IDENTITIES as an agent until interrupted (or for --for).
    Run {
        #[arg(long)]
        identities: PathBuf,
        /// Only the first N hosts of the file.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this long (e.g. `60s`).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Print the counters this often.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        stats_every: Duration,
        /// Report usage this often (one entry per user of each host's state).
        #[arg(long, value_parser = humantime::parse_duration)]
        usage_every: Option<Duration>,
        /// Entries per usage batch at most.
        #[arg(long, default_value_t = 1_000)]
        usage_users: usize,
        /// Ask for a new certificate this often.
        #[arg(long, value_parser = humantime::parse_duration)]
        renew_every: Option<Duration>,
        /// Spread the first dials over this long.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        start_spread: Duration,
        /// Longest reconnect delay (jittered exponential backoff, as the agent).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        reconnect_max: Duration,
        /// Dial this address instead of the one in the identities file.
        #[arg(long)]
        controller: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    raise_open_files();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

/// One UDP socket per simulated agent: lift the soft limit of open files to the hard one.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll {
            count,
            out,
            prefix,
            first,
            config,
        } => {
            let path = config.unwrap_or_else(CliContext::default_path);
            let ctx = CliContext::load(&path)
                .with_context(|| format!("loading the CLI context {}", path.display()))?;
            let started = Instant::now();
            let file = enroll(&ctx, &prefix, first, count).await?;
            save_identities(&out, &file)?;
            println!(
                "enrolled {count} hosts in {:.1} s; identities in {} (mode 0600)",
                started.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(())
        }
        Command::Run {
            identities,
            count,
            duration,
            stats_every,
            usage_every,
            usage_users,
            renew_every,
            start_spread,
            reconnect_max,
            controller,
        } => {
            let mut file = load_identities(&identities)?;
            if let Some(n) = count {
                file.hosts.truncate(n);
            }
            let target =
                vpn_agent_sim::identity::resolve(controller.as_deref().unwrap_or(&file.controller))
                    .await?;
            let config = SimConfig {
                usage_every,
                usage_users,
                renew_every,
                start_spread,
                reconnect_max,
                ..SimConfig::default()
            };
            let stats = Arc::new(Stats::default());
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let hosts = file.hosts.len();
            println!("running {hosts} simulated agents against {target}");
            let fleet = tokio::spawn(run_agents(
                target,
                file.ca_pem,
                file.hosts,
                config,
                stats.clone(),
                stop,
            ));
            let started = Instant::now();
            let mut tick = tokio::time::interval(stats_every);
            tick.tick().await;
            loop {
                let until_end = duration.map(|d| d.saturating_sub(started.elapsed()));
                tokio::select! {
                    _ = tick.tick() => {
                        println!("t={:.1}s {stats}", started.elapsed().as_secs_f64());
                    }
                    _ = tokio::signal::ctrl_c() => break,
                    _ = tokio::time::sleep(until_end.unwrap_or(Duration::MAX)), if until_end.is_some() => break,
                }
            }
            let _ = stop_tx.send(true);
            let _ = fleet.await;
            println!("final t={:.1}s {stats}", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}
