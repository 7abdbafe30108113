//! The store's errors: each names the thing that was missing, duplicated or malformed, so the
//! admin session can hand the message to the operator as it is (SPEC §4 item 6).

use std::path::PathBuf;

/// What went wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row of this kind has that name (or id).
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    /// A row of this kind already has that name.
    #[error("{what} {name} already exists")]
    Duplicate { what: &'static str, name: String },
    /// Operator input that breaks a rule; `field` names the offending input.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A join token that cannot enroll a host.
    #[error("join token refused: {0}")]
    TokenRefused(TokenRefusal),
    /// Every port of the service's range `first..=last` is held by a user.
    #[error(
        "no free port left in the range of service {service} ({first}-{last}, every port held); \
         grow it with `vpn services edit {service} --ports N`"
    )]
    PortsExhausted {
        service: String,
        first: u16,
        last: u16,
    },
    /// A stored value that this version cannot read (edited by hand or by a newer version).
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A usage batch an agent sent that cannot be applied as it is (nothing of it was).
    #[error("usage batch refused: {0}")]
    Batch(#[from] super::usage::BatchError),
    /// A usage batch's group ended without an answer (the task writing it panicked): whether
    /// it was written is unknown, so it is not acked; the agent resends and the watermark
    /// makes it a replay if it was.
    #[error("usage batch abandoned: its group ended without an answer")]
    Abandoned,
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The database file could not be created.
    #[error("cannot create database file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The embedded schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// SQLite failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A WireGuard subnet that cannot be used, or one with no free tunnel address left (the
    /// message names the service and the subnet).
    #[error("{0}")]
    Wireguard(#[from] vpn_shared::wireguard::WireguardError),
}

/// Why a join token was refused. Each is a distinct log line and metric (SPEC §4 item 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No such token was ever issued (or its host was removed).
    Unknown,
    /// The token already enrolled a host.
    Used,
    /// The token's lifetime ended before it was used.
    Expired,
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenRefusal::Unknown => "unknown token",
            TokenRefusal::Used => {
                "token already used; if that enrollment never completed on the host, remove \
                 the server and run `vpn servers add` again for a new token"
            }
            TokenRefusal::Expired => "token expired",
        })
    }
}

/// Shorthand for the store's results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> StoreError {
        StoreError::NotFound {
            what,
            name: name.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }
}
