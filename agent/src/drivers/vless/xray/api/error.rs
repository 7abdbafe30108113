//! Errors of the Xray API client and how the engine's refusals map onto them.

use std::net::SocketAddr;
use std::time::Duration;

/// Errors of the Xray API. None carries a user's UUID or any other secret.
#[derive(Debug, thiserror::Error)]
pub enum XrayApiError {
    /// The API has no authentication, so only a loopback address is accepted.
    #[error("xray api address {0} is not loopback")]
    NotLoopback(SocketAddr),
    /// The address could not become a gRPC endpoint (for example a non-UTF-8 socket path).
    #[error("xray api address {address} is invalid: {detail}")]
    BadAddress { address: String, detail: String },
    /// The UUID is not a UUID (it is not repeated here: it is the user's secret).
    #[error("vless user {email}: id is not a valid uuid")]
    InvalidUuid { email: String },
    /// No answer within the deadline.
    #[error("xray api at {address}: {method} did not answer within {timeout:?}")]
    Timeout {
        address: String,
        method: &'static str,
        timeout: Duration,
    },
    /// Nothing listens, or the connection broke: the engine is not (yet) running.
    #[error("xray api at {address} unavailable for {method}: {detail}")]
    Unavailable {
        address: String,
        method: &'static str,
        detail: String,
    },
    /// Adding a user whose email the inbound already holds (possibly with another UUID).
    #[error("inbound {tag} already has user {email}")]
    UserExists { tag: String, email: String },
    /// Removing a user the inbound does not hold.
    #[error("inbound {tag} has no user {email}")]
    UserNotFound { tag: String, email: String },
    /// The engine has no inbound with that tag.
    #[error("engine has no inbound {tag}")]
    InboundNotFound { tag: String },
    /// Any other refusal, with the engine's gRPC status.
    #[error("xray api refused {method}: {code:?}: {message}")]
    Refused {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// The engine answered something this client cannot use.
    #[error("xray api answered {method} with {detail}")]
    BadReply {
        method: &'static str,
        detail: String,
    },
}

impl XrayApiError {
    /// True for the answers that mean "already as asked": add of a present user, removal of an
    /// absent one. Apply treats them as success (SPEC §2.3, idempotent apply).
    pub fn is_already_applied(&self) -> bool {
        matches!(
            self,
            XrayApiError::UserExists { .. } | XrayApiError::UserNotFound { .. }
        )
    }
}

/// Why a unary call failed: already classified, or refused by the engine with a status.
#[derive(Debug)]
pub(super) enum CallError {
    Api(XrayApiError),
    Status(tonic::Status),
}

impl From<XrayApiError> for CallError {
    fn from(e: XrayApiError) -> Self {
        CallError::Api(e)
    }
}

impl CallError {
    /// For calls whose refusals need no further classification.
    pub(super) fn refused(self, method: &'static str) -> XrayApiError {
        match self {
            CallError::Api(e) => e,
            CallError::Status(status) => XrayApiError::Refused {
                method,
                code: status.code(),
                message: status.message().to_owned(),
            },
        }
    }
}

/// Maps AlterInbound refusals onto the variants apply needs. The engine's texts (identical in
/// Xray and v2ray 4.34, `proxy/vless/validator.go` and `app/proxyman/command/command.go`):
/// `failed to get handler: TAG > … handler not found: TAG`, `User EMAIL already exists.`,
/// `User EMAIL not found.`. The handler check comes first: its text also says "not found".
pub(super) fn classify_alter(
    status: &tonic::Status,
    tag: &str,
    email: &str,
    secret: Option<&str>,
) -> XrayApiError {
    let message = status.message();
    if message.contains("failed to get handler") {
        XrayApiError::InboundNotFound {
            tag: tag.to_owned(),
        }
    } else if message.contains("already exists") {
        XrayApiError::UserExists {
            tag: tag.to_owned(),
            email: email.to_owned(),
        }
    } else if message.contains(" not found") {
        XrayApiError::UserNotFound {
            tag: tag.to_owned(),
            email: email.to_owned(),
        }
    } else {
        let mut message = message.to_owned();
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            message = message.replace(secret, "<redacted>");
        }
        XrayApiError::Refused {
            method: "AlterInbound",
            code: status.code(),
            message,
        }
    }
}

/// tonic reports a refused or broken connection as a status too; those mean "engine not up".
pub(super) fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    status.code() == tonic::Code::Unavailable
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
