//! Turns an [`AdminResponse`] into the text `vpn` prints, in the format chosen with `-o`.
//!
//! Pure functions of the response and [`Opts`] (the clock is a parameter), so every format is
//! pinned by snapshot tests in `tests.rs`. Printing happens in `output`.
//!
//! - `table` ([`table`]): aligned columns and key/value views for people.
//! - `json` / `yaml`: the response payload (the struct inside the enum), stable field names.
//! - `plain` ([`plain`]): one record per line, tab-separated, no header, for scripts.

mod plain;
mod table;

#[cfg(test)]
mod tests;

use serde::Serialize;
use vpn_shared::proto::admin::{AdminResponse, ErrorKind};

use crate::cli::Format;
use crate::error::CliError;

/// How to render a response.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub format: Format,
    /// `users link --qr`: follow each link with its QR code (table format only).
    pub qr: bool,
    /// Unix seconds, for "3s ago".
    pub now: i64,
    /// Whether a person is reading (stdout is a terminal): adds hints in table format.
    pub hints: bool,
}

/// `users link --conf`: each link's artefact verbatim (a WireGuard `.conf` keeps its lines),
/// separated by a blank line; any other answer renders as usual.
pub fn artefacts(resp: &AdminResponse, opts: &Opts) -> Result<String, CliError> {
    match resp {
        AdminResponse::Links(v) => Ok(v
            .iter()
            .map(|l| {
                let mut t = l.url.clone();
                if !t.ends_with('\n') {
                    t.push('\n');
                }
                t
            })
            .collect::<Vec<_>>()
            .join("\n")),
        other => render(other, opts),
    }
}

/// Renders a response; the controller's `Error` answer becomes the matching [`CliError`].
pub fn render(resp: &AdminResponse, opts: &Opts) -> Result<String, CliError> {
    match opts.format {
        Format::Table => table::render(resp, opts),
        Format::Plain => plain::render(resp),
        Format::Json | Format::Yaml => structured(resp, opts.format),
    }
}

/// The error a refused request turns into.
fn refused(kind: ErrorKind, message: &str) -> CliError {
    CliError::Remote {
        kind,
        message: message.to_string(),
    }
}

fn structured(resp: &AdminResponse, format: Format) -> Result<String, CliError> {
    match resp {
        AdminResponse::Error { kind, message } => Err(refused(*kind, message)),
        AdminResponse::ServerAdded(p) => encode(p, format),
        AdminResponse::Servers(p) => encode(p, format),
        AdminResponse::Server(p) => encode(p, format),
        AdminResponse::Services(p) => encode(p, format),
        AdminResponse::Service(p) => encode(p, format),
        AdminResponse::Users(p) => encode(p, format),
        AdminResponse::User(p) => encode(p, format),
        AdminResponse::UsersDetail(p) => encode(p, format),
        AdminResponse::UserDetail(p) => encode(p, format),
        AdminResponse::Links(p) => encode(p, format),
        AdminResponse::Status(p) => encode(p, format),
        AdminResponse::Applied(p) => encode(p, format),
        AdminResponse::Firewall(p) => encode(p, format),
        AdminResponse::ServersDetail(p) => encode(p, format),
        AdminResponse::ServerDetail(p) => encode(p, format),
        AdminResponse::StatusDetail(p) => encode(p, format),
        AdminResponse::ServiceDetail(p) => encode(p, format),
        AdminResponse::Doctor(p) => encode(p, format),
        AdminResponse::Usage(p) => encode(p, format),
        // The client joins parts into their list; a part alone renders as that list.
        AdminResponse::More(part) => structured(part, format),
        AdminResponse::Stream(m) => encode(m, format),
    }
}

fn encode<T: Serialize>(payload: &T, format: Format) -> Result<String, CliError> {
    let text = if format == Format::Yaml {
        serde_norway::to_string(payload).map_err(|e| CliError::Render(e.to_string()))?
    } else {
        let mut s =
            serde_json::to_string_pretty(payload).map_err(|e| CliError::Render(e.to_string()))?;
        s.push('\n');
        s
    };
    Ok(text)
}

/// `3s ago`, `5m ago`, `2h ago`, `4d ago`; `never` without a time.
pub fn ago(now: i64, then: Option<i64>) -> String {
    let Some(then) = then else {
        return "never".into();
    };
    let secs = now - then;
    match secs {
        ..0 => "just now".into(),
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// RFC 3339 UTC, to the second (`2025-01-31T12:00:00Z`).
pub fn timestamp(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        Err(_) => unix.to_string(),
    }
}

/// The date part of [`timestamp`] (`2025-01-31`).
pub fn date(unix: i64) -> String {
    let mut s = timestamp(unix);
    if s.len() > 10 && s.is_char_boundary(10) {
        s.truncate(10);
    }
    s
}

/// `all`, the names joined by commas, or `-` for none.
pub fn server_list(all: bool, names: &[String]) -> String {
    if all { "all".into() } else { dash_join(names) }
}

/// `20/s`, or `-` when not limited.
pub fn conn_rate(rate: Option<u32>) -> String {
    rate.map_or("-".into(), |n| format!("{n}/s"))
}

/// Items joined by commas, or `-` for none.
pub fn dash_join<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    parts.join(",")
}

/// `in 3d`, `in 5m`; `expired 2h ago` once past.
pub fn until(now: i64, then: i64) -> String {
    if then <= now {
        return format!("expired {}", ago(now, Some(then)));
    }
    let secs = then - now;
    match secs {
        0..60 => format!("in {secs}s"),
        60..3600 => format!("in {}m", secs / 60),
        3600..86400 => format!("in {}h", secs / 3600),
        _ => format!("in {}d", secs / 86400),
    }
}

/// Bytes as every view shows them: [`vpn_shared::size::show`] (`512 B`, `12.5 GiB`, `5.0 GiB`).
pub fn bytes(n: u64) -> String {
    vpn_shared::size::show(n)
}

/// A limit as the operator would type it: [`vpn_shared::size::show_set`].
pub fn limit(n: u64) -> String {
    vpn_shared::size::show_set(n)
}

/// A length of time as `--on-hold` takes it: [`vpn_shared::size::show_span`].
pub fn span(secs: i64) -> String {
    vpn_shared::size::show_span(secs)
}

/// [`timestamp`] to the minute, for columns (`2026-12-01 00:00`).
pub fn minute(unix: i64) -> String {
    let s = timestamp(unix);
    match s.get(..16) {
        Some(head) if s.len() == 20 => head.replacen('T', " ", 1),
        _ => s,
    }
}

/// Agent clock minus controller clock: `0 ms`, `+120 ms (agent ahead)`, `-2.5 s (agent behind)`.
pub fn skew(ms: i64) -> String {
    let side = match ms {
        0 => return "0 ms".into(),
        1.. => "ahead",
        _ => "behind",
    };
    let sign = if ms > 0 { '+' } else { '-' };
    let abs = ms.unsigned_abs();
    let size = if abs < 1000 {
        format!("{abs} ms")
    } else {
        let tenths = (abs + 50) / 100;
        format!("{}.{} s", tenths / 10, tenths % 10)
    };
    format!("{sign}{size} (agent {side})")
}
