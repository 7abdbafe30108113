//! The health answers in the `plain` format.
//!
//! A list line is today's record with fields appended. A `show` answer is that record on its
//! first line, then one line per detail whose first field names its kind (`failing`, `warning`,
//! `vitals`, `container`, `event`, `host`), so `head -1` still gives the record.

use vpn_shared::proto::admin::{
    CheckLevel, DoctorCheck, HostState, ServerDetail, ServiceDetail, ServiceHostState, StatusDetail,
};

use super::{opt, server as server_info, service as service_info, status as status_info};

/// The `servers` record, then: state (`online`, `degraded`, `offline`, `pending`), failing
/// resources, warnings.
pub fn server(d: &ServerDetail) -> Vec<String> {
    let state = match d.state {
        HostState::Online => "online",
        HostState::Degraded { .. } => "degraded",
        HostState::Offline => "offline",
        HostState::Pending => "pending",
    };
    let mut rec = server_info(&d.server);
    rec.extend([
        state.into(),
        d.failing.len().to_string(),
        d.warnings.len().to_string(),
    ]);
    rec
}

/// The record, then `failing` (resource, message, first seen, last seen), `warning` (text),
/// `vitals` (reported, clock skew ms, certificate expiry, disk free bytes, ledger backlog),
/// `container` (name, resource, `running`/`stopped`, restarts) and `event` (time, kind,
/// resource, message) lines.
pub fn server_show(d: &ServerDetail) -> Vec<Vec<String>> {
    let mut lines = vec![server(d)];
    lines.extend(d.failing.iter().map(|f| {
        vec![
            "failing".into(),
            f.resource.clone(),
            f.message.clone(),
            f.first_seen.to_string(),
            f.last_seen.to_string(),
        ]
    }));
    lines.extend(d.warnings.iter().map(|w| vec!["warning".into(), w.clone()]));
    if let Some(v) = &d.vitals {
        lines.push(vec![
            "vitals".into(),
            v.reported_at.to_string(),
            v.clock_skew_ms.to_string(),
            opt(v.cert_not_after),
            opt(v.disk_free_bytes),
            opt(v.ledger_backlog),
        ]);
        lines.extend(v.containers.iter().map(|c| {
            let state = if c.running { "running" } else { "stopped" };
            vec![
                "container".into(),
                c.name.clone(),
                c.resource.clone(),
                state.into(),
                c.restarts.to_string(),
            ]
        }));
    }
    lines.extend(d.events.iter().map(|e| {
        vec![
            "event".into(),
            e.at.to_string(),
            e.kind.clone(),
            opt(e.resource.as_deref()),
            e.message.clone(),
        ]
    }));
    lines
}

/// Today's `key<TAB>value` lines, then `hosts_degraded`, `hosts_offline`, `failing_resources`,
/// `hosts_warned`.
pub fn status(s: &StatusDetail) -> Vec<Vec<String>> {
    let mut lines = status_info(&s.status);
    let health = [
        ("hosts_degraded", s.hosts_degraded),
        ("hosts_offline", s.hosts_offline),
        ("failing_resources", s.failing_resources),
        ("hosts_warned", s.hosts_warned),
    ];
    lines.extend(health.map(|(k, n)| vec![k.into(), n.to_string()]));
    lines
}

/// The `services` record, then one `host` line per placed host: server, state (`ok`,
/// `failing`, `users-failing`, `offline`, `pending`), failing resources (comma-joined).
pub fn service_show(d: &ServiceDetail) -> Vec<Vec<String>> {
    let mut lines = vec![service_info(&d.service)];
    lines.extend(d.hosts.iter().map(|h| {
        let state = match h.state {
            ServiceHostState::Ok => "ok",
            ServiceHostState::Failing => "failing",
            ServiceHostState::UsersFailing => "users-failing",
            ServiceHostState::Offline => "offline",
            ServiceHostState::Pending => "pending",
        };
        let resources: Vec<&str> = h.failing.iter().map(|f| f.resource.as_str()).collect();
        vec![
            "host".into(),
            h.server.clone(),
            state.into(),
            super::dash_join(&resources),
        ]
    }));
    lines
}

/// server (`fleet` for fleet-wide checks), check, level (`ok`, `warn`, `fail`), detail.
pub fn check(c: &DoctorCheck) -> Vec<String> {
    let level = match c.level {
        CheckLevel::Ok => "ok",
        CheckLevel::Warn => "warn",
        CheckLevel::Fail => "fail",
    };
    vec![
        c.server.clone().unwrap_or_else(|| "fleet".into()),
        c.check.clone(),
        level.into(),
        c.detail.clone(),
    ]
}
