//! `vpn`: the operator CLI of the VPN fleet manager (SPEC §2.7).
//!
//! # Layout
//! - [`cli`]: clap types for the noun-verb command tree; parsing and input validation only.
//! - [`commands`]: a parsed command becomes one admin request; runs it and prints the answer.
//! - [`client`]: the QUIC mTLS connection to the controller, one stream per request.
//! - [`render`]: response → text for `-o table|json|yaml|plain` (pure, snapshot-tested).
//! - [`tui`]: `vpn tui`, the terminal UI (`vpn-tui`) fed by the subscription stream.
//! - [`output`]: the only module that prints.
//! - [`error`]: errors and their exit codes (2 usage, 65 bad data, 69 unavailable, 78 config…).

mod cli;
mod client;
mod commands;
mod error;
mod output;
mod render;
mod tui;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Parse first: `--help` and usage errors (exit 2) must not wait for a runtime or logging.
    let cli = cli::Cli::parse_checked();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::error(&format_args!("cannot start the async runtime: {e}"));
            return ExitCode::from(error::exit::SOFTWARE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            output::error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Diagnostics on stderr, quiet unless `VPN_LOG` asks (for example `VPN_LOG=debug`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
