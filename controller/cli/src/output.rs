//! The one place `vpn` writes to the terminal: rendered results to stdout, errors to stderr.
//!
//! What to print is decided in `render`; this module only moves text.

// The CLI's job is printing; the workspace warns on print macros elsewhere so that daemons log
// through tracing. Stdout goes through `write_all` so a closed pipe is an error, not a panic.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

use crate::error::CliError;

/// Writes rendered output to stdout.
pub fn stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Reports an error as `error: message` on stderr.
pub fn error(err: &dyn std::fmt::Display) {
    eprintln!("error: {err}");
}

/// Whether a person is probably reading stdout (hints and decoration only then).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
