//! The join string: everything a new host needs to enroll, in one copy-pasteable token.
//!
//! `vpnjoin1.` followed by base64url (no padding) of a small JSON object with the controller
//! address, the SHA-256 fingerprint of the controller's CA (pinned by the agent) and the
//! one-time token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "vpnjoin1.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinString {
    /// `HOST:PORT` of the controller (UDP).
    pub controller: String,
    /// Hex SHA-256 of the CA certificate.
    pub ca_sha256: String,
    /// The one-time token (at least 128 random bits, base64url).
    pub token: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("join string must start with `{PREFIX}`")]
    Prefix,
    #[error("join string is not valid base64url")]
    Base64,
    #[error("join string content is invalid: {0}")]
    Content(String),
}

impl JoinString {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn parse(s: &str) -> Result<JoinString, JoinError> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(JoinError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| JoinError::Base64)?;
        let join: JoinString =
            serde_json::from_slice(&json).map_err(|e| JoinError::Content(e.to_string()))?;
        if join.ca_sha256.len() != 64 || !join.ca_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JoinError::Content("ca_sha256 must be 64 hex digits".into()));
        }
        if join.token.len() < 22 {
            return Err(JoinError::Content("token is too short".into()));
        }
        Ok(join)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_strings_round_trip_and_bad_ones_say_why() {
        let j = JoinString {
            controller: "198.51.100.7:7443".into(),
            ca_sha256: "ab".repeat(32),
            token: "A".repeat(43),
        };
        assert_eq!(JoinString::parse(&j.encode()).unwrap(), j);
        assert_eq!(JoinString::parse("nope"), Err(JoinError::Prefix));
        assert_eq!(JoinString::parse("vpnjoin1.%%%"), Err(JoinError::Base64));
        let short = JoinString {
            token: "x".into(),
            ..j
        };
        assert!(matches!(
            JoinString::parse(&short.encode()),
            Err(JoinError::Content(_))
        ));
    }
}
