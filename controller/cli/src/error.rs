//! Errors of the `vpn` CLI and the exit code of each (SPEC §2.7, sysexits.h numbering).
//!
//! Usage errors never reach this type: clap prints them and exits 2 itself.

use vpn_shared::proto::admin::ErrorKind;

/// Process exit codes; the names follow sysexits.h.
pub mod exit {
    /// Some hosts failed to apply a change (the output says which).
    pub const HOSTS_FAILED: u8 = 1;
    /// `vpn doctor` ran and some check warned or failed (the output says which). Not 1, so a
    /// script can tell it from a change that hosts failed to apply; not 2 (usage).
    pub const CHECKS_FAILED: u8 = 3;
    /// Bad operator input, as judged by the controller.
    pub const DATAERR: u8 = 65;
    /// The controller could not be reached.
    pub const UNAVAILABLE: u8 = 69;
    /// The controller (or this CLI) failed internally.
    pub const SOFTWARE: u8 = 70;
    /// Writing the output failed.
    pub const IOERR: u8 = 74;
    /// The controller answered something this CLI does not understand.
    pub const PROTOCOL: u8 = 76;
    /// The admin identity may not do this.
    pub const NOPERM: u8 = 77;
    /// The context file is missing or invalid.
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The context file, or a PEM file it names, is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// Resolving, dialing or talking to the controller failed.
    #[error("controller unavailable at {addr}: {reason}")]
    Unavailable { addr: String, reason: String },
    /// The controller refused the request.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
    /// The controller's answer could not be decoded or did not fit the request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The controller is older than this CLI and cannot answer the command at all.
    #[error("{0}")]
    Unsupported(String),
    /// The change was stored but some hosts reported failures.
    #[error("{failed} of {total} hosts failed to apply the change")]
    HostsFailed { failed: usize, total: usize },
    /// `vpn doctor` found problems (the checks themselves were printed).
    #[error("doctor found problems: {failed} failed and {warned} warned of {total} checks")]
    ChecksFailed {
        failed: usize,
        warned: usize,
        total: usize,
    },
    /// Rendering the output failed (a serializer bug, not bad input).
    #[error("cannot render output: {0}")]
    Render(String),
    /// Writing to stdout failed.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => exit::CONFIG,
            CliError::Unavailable { .. } => exit::UNAVAILABLE,
            CliError::Remote { kind, .. } => match kind {
                ErrorKind::BadData => exit::DATAERR,
                ErrorKind::Forbidden => exit::NOPERM,
                ErrorKind::Internal => exit::SOFTWARE,
            },
            CliError::Protocol(_) | CliError::Unsupported(_) => exit::PROTOCOL,
            CliError::HostsFailed { .. } => exit::HOSTS_FAILED,
            CliError::ChecksFailed { .. } => exit::CHECKS_FAILED,
            CliError::Render(_) => exit::SOFTWARE,
            CliError::Output(_) => exit::IOERR,
        }
    }

    /// A closed pipe (`vpn users list | head -1`) is not worth an error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(kind: ErrorKind) -> CliError {
        CliError::Remote {
            kind,
            message: "user alice not found".into(),
        }
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        let unavailable = CliError::Unavailable {
            addr: "ctl:7443".into(),
            reason: "timed out".into(),
        };
        let cases = [
            (remote(ErrorKind::BadData), 65),
            (remote(ErrorKind::Forbidden), 77),
            (remote(ErrorKind::Internal), 70),
            (unavailable, 69),
            (CliError::Config("x".into()), 78),
            (
                CliError::HostsFailed {
                    failed: 1,
                    total: 3,
                },
                1,
            ),
            (CliError::Protocol("x".into()), 76),
            (CliError::Unsupported("x".into()), 76),
            (
                CliError::ChecksFailed {
                    failed: 1,
                    warned: 0,
                    total: 9,
                },
                3,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit_code(), code, "{err:?}");
        }
    }

    #[test]
    fn messages_name_the_thing() {
        let e = CliError::Unavailable {
            addr: "ctl:7443".into(),
            reason: "timed out after 10s".into(),
        };
        assert_eq!(
            e.to_string(),
            "controller unavailable at ctl:7443: timed out after 10s"
        );
        assert_eq!(
            remote(ErrorKind::BadData).to_string(),
            "user alice not found"
        );
        let e = CliError::HostsFailed {
            failed: 1,
            total: 3,
        };
        assert_eq!(e.to_string(), "1 of 3 hosts failed to apply the change");
    }

    #[test]
    fn broken_pipe_is_quiet() {
        let e = CliError::Output(std::io::ErrorKind::BrokenPipe.into());
        assert!(e.is_broken_pipe());
        assert!(!CliError::Config("x".into()).is_broken_pipe());
    }
}
