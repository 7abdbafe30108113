//! The health answers (SPEC §2.8) in the `table` format: servers with their state, failing
//! resources, warnings, vitals and events; the fleet's health counts; each host's state of a
//! service; the doctor's checks.
//!
//! A value the controller does not have (`None`) is `-` or `n/a`, never a number made up here.

use vpn_shared::proto::ContainerStatus;
use vpn_shared::proto::admin::{
    CheckLevel, DoctorCheck, DoctorReport, FailingResource, HostEvent, HostVitals, ServerDetail,
    ServiceDetail, ServiceHost, StatusDetail,
};

use super::{fields, grid, server_fields, server_row, service_fields, status_fields};
use crate::render::{ago, bytes, skew, timestamp, until};

/// `servers list`: today's columns with the host's state as STATUS, and a WARNINGS count.
pub fn servers(v: &[ServerDetail], now: i64) -> String {
    let header = [
        "NAME",
        "STATUS",
        "WARNINGS",
        "ADDRESS",
        "VERSION",
        "LAST SEEN",
        "GENERATION",
        "SERVICES",
        "USERS",
    ];
    let rows = v
        .iter()
        .map(|d| {
            let mut row = server_row(&d.server, d.state.to_string(), now);
            row.insert(2, count_or_dash(d.warnings.len()));
            row
        })
        .collect();
    grid(Some(&header), rows)
}

fn count_or_dash(n: usize) -> String {
    if n == 0 { "-".into() } else { n.to_string() }
}

/// `servers show`: the host's fields, then one section each for failing resources, warnings,
/// vitals and recent events.
pub fn server(d: &ServerDetail, now: i64) -> String {
    let mut out = fields(server_fields(&d.server, d.state.to_string(), now));
    out.push_str(&section("Failing resources", failing(&d.failing, now)));
    let warnings = (!d.warnings.is_empty()).then(|| {
        d.warnings
            .iter()
            .map(|w| format!("{w}\n"))
            .collect::<String>()
    });
    out.push_str(&section("Warnings", warnings));
    out.push_str(&vitals(d.vitals.as_ref(), now));
    out.push_str(&section("Recent events", events(&d.events, now)));
    out
}

/// A blank line, then `Title:` and the body indented, or `Title: none`.
fn section(title: &str, body: Option<String>) -> String {
    match body {
        None => format!("\n{title}: none\n"),
        Some(body) => format!("\n{title}:\n{}", indent(&body)),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn failing(v: &[FailingResource], now: i64) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let rows = v
        .iter()
        .map(|f| {
            vec![
                f.resource.clone(),
                ago(now, Some(f.first_seen)),
                ago(now, Some(f.last_seen)),
                f.message.clone(),
            ]
        })
        .collect();
    Some(grid(Some(&["RESOURCE", "SINCE", "LAST", "MESSAGE"]), rows))
}

fn vitals(v: Option<&HostVitals>, now: i64) -> String {
    let Some(v) = v else {
        return "\nVitals: n/a (offline or not reported yet)\n".into();
    };
    let cert = v.cert_not_after.map_or("n/a".into(), |t| {
        format!("expires {} ({})", timestamp(t), until(now, t))
    });
    let mut body = fields(vec![
        ("Clock skew", skew(v.clock_skew_ms)),
        ("Certificate", cert),
        ("Disk free", v.disk_free_bytes.map_or("n/a".into(), bytes)),
        (
            "Ledger backlog",
            v.ledger_backlog
                .map_or("n/a".into(), |n| format!("{n} entries")),
        ),
    ]);
    body.push_str(&containers(&v.containers));
    let title = format!("Vitals (reported {})", ago(now, Some(v.reported_at)));
    section(&title, Some(body))
}

fn containers(v: &[ContainerStatus]) -> String {
    if v.is_empty() {
        return "Containers:      none\n".into();
    }
    let rows = v
        .iter()
        .map(|c| {
            let state = if c.running { "running" } else { "stopped" };
            vec![
                c.name.clone(),
                c.resource.clone(),
                state.into(),
                c.restarts.to_string(),
            ]
        })
        .collect();
    let table = grid(Some(&["NAME", "RESOURCE", "STATE", "RESTARTS"]), rows);
    format!("Containers:\n{}", indent(&table))
}

fn events(v: &[HostEvent], now: i64) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let rows = v
        .iter()
        .map(|e| {
            vec![
                ago(now, Some(e.at)),
                e.kind.clone(),
                e.resource.clone().unwrap_or_else(|| "-".into()),
                e.message.clone(),
            ]
        })
        .collect();
    Some(grid(Some(&["TIME", "KIND", "RESOURCE", "MESSAGE"]), rows))
}

/// `status`: today's counts with the health counts after the hosts line.
pub fn status(s: &StatusDetail) -> String {
    let mut rows = status_fields(&s.status);
    let health = [
        ("Degraded hosts", s.hosts_degraded),
        ("Offline hosts", s.hosts_offline),
        ("Failing resources", s.failing_resources),
        ("Hosts with warnings", s.hosts_warned),
    ];
    let at = rows
        .iter()
        .position(|(k, _)| *k == "Hosts")
        .map_or(rows.len(), |i| i + 1);
    for (i, (key, n)) in health.into_iter().enumerate() {
        rows.insert(at + i, (key, n.to_string()));
    }
    fields(rows)
}

/// `services show`: the service's fields, then each placed host's state.
pub fn service(d: &ServiceDetail) -> String {
    let mut out = fields(service_fields(&d.service));
    let hosts = (!d.hosts.is_empty()).then(|| {
        let rows = d.hosts.iter().map(service_host).collect();
        grid(Some(&["SERVER", "STATE", "FAILING"]), rows)
    });
    out.push_str(&section("Hosts", hosts));
    out
}

fn service_host(h: &ServiceHost) -> Vec<String> {
    let failing = if h.failing.is_empty() {
        "-".into()
    } else {
        let parts: Vec<String> = h
            .failing
            .iter()
            .map(|f| format!("{}: {}", f.resource, f.message))
            .collect();
        parts.join("; ")
    };
    vec![h.server.clone(), h.state.to_string(), failing]
}

/// `doctor`: one row per check, then a summary line.
pub fn doctor(r: &DoctorReport) -> String {
    if r.checks.is_empty() {
        return "no checks\n".into();
    }
    let rows = r
        .checks
        .iter()
        .map(|c| {
            vec![
                check_scope(c),
                c.check.clone(),
                level(c.level).into(),
                c.detail.clone(),
            ]
        })
        .collect();
    let mut out = grid(Some(&["SERVER", "CHECK", "LEVEL", "DETAIL"]), rows);
    out.push_str(&doctor_summary(r));
    out.push('\n');
    out
}

/// The server a check is about, or `fleet` for fleet-wide checks.
pub fn check_scope(c: &DoctorCheck) -> String {
    c.server.clone().unwrap_or_else(|| "fleet".into())
}

fn level(l: CheckLevel) -> &'static str {
    match l {
        CheckLevel::Ok => "OK",
        CheckLevel::Warn => "WARN",
        CheckLevel::Fail => "FAIL",
    }
}

/// `all 12 checks ok`, or `2 of 12 checks failed, 1 warned`.
pub fn doctor_summary(r: &DoctorReport) -> String {
    let total = r.checks.len();
    let count = |l: CheckLevel| r.checks.iter().filter(|c| c.level == l).count();
    let (failed, warned) = (count(CheckLevel::Fail), count(CheckLevel::Warn));
    match (failed, warned) {
        (0, 0) => format!("all {total} checks ok"),
        (f, 0) => format!("{f} of {total} checks failed"),
        (0, w) => format!("{w} of {total} checks warned"),
        (f, w) => format!("{f} of {total} checks failed, {w} warned"),
    }
}
