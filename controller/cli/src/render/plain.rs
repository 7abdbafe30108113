//! The `plain` format for scripts: one record per line, fields separated by tabs, no header.
//!
//! Times are unix seconds, rates bits per second, absent values (and unlimited rates) are `-`,
//! lists are comma-joined, sizes bytes. New fields are appended, so scripts reading by position
//! keep working. Some answers are a single value on purpose: `servers add` prints only the join
//! string and `users link` only the URLs, so `$(vpn users link alice -o plain)` needs no
//! parsing.

use vpn_shared::proto::admin::{
    AdminResponse, Applied, FirewallRuleInfo, HostApplyState, ServerInfo, ServiceInfo, StatusInfo,
    UserInfo,
};

use super::{dash_join, refused, server_list};
use crate::error::CliError;

mod health;
mod quota;
mod usage;

pub fn render(resp: &AdminResponse) -> Result<String, CliError> {
    let lines: Vec<Vec<String>> = match resp {
        AdminResponse::Error { kind, message } => return Err(refused(*kind, message)),
        AdminResponse::ServerAdded(a) => vec![vec![a.join.clone()]],
        AdminResponse::Servers(v) => v.iter().map(server).collect(),
        AdminResponse::Server(s) => vec![server(s)],
        AdminResponse::Services(v) => v.iter().map(service).collect(),
        AdminResponse::Service(s) => vec![service(s)],
        AdminResponse::Users(v) => v.iter().map(user).collect(),
        AdminResponse::User(u) => vec![user(u)],
        AdminResponse::UsersDetail(v) => v.iter().map(quota::user).collect(),
        AdminResponse::UserDetail(d) => vec![quota::user(d)],
        AdminResponse::Links(v) => v.iter().map(|l| vec![l.url.clone()]).collect(),
        AdminResponse::Status(s) => status(s),
        AdminResponse::Applied(a) => applied(a),
        AdminResponse::Firewall(v) => v.iter().map(firewall_rule).collect(),
        AdminResponse::ServersDetail(v) => v.iter().map(health::server).collect(),
        AdminResponse::ServerDetail(d) => health::server_show(d),
        AdminResponse::StatusDetail(s) => health::status(s),
        AdminResponse::ServiceDetail(d) => health::service_show(d),
        AdminResponse::Doctor(r) => r.checks.iter().map(health::check).collect(),
        AdminResponse::Usage(u) => u.rows.iter().map(usage::row).collect(),
        // The client joins parts into their list; a part alone renders as that list.
        AdminResponse::More(part) => return render(part),
        AdminResponse::Stream(_) => return Err(stream_only()),
    };
    Ok(lines
        .iter()
        .map(|fields| {
            let fields: Vec<String> = fields.iter().map(|f| clean(f)).collect();
            format!("{}\n", fields.join("\t"))
        })
        .collect())
}

/// Tabs and line breaks inside a value would split the record.
fn clean(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// name, status, address, version, last seen, acked generation, desired generation, services,
/// users.
fn server(s: &ServerInfo) -> Vec<String> {
    let status = match (s.enrolled, s.online) {
        (false, _) => "not-joined",
        (true, true) => "online",
        (true, false) => "offline",
    };
    vec![
        s.name.clone(),
        status.into(),
        opt(s.address.as_deref()),
        opt(s.agent_version.as_deref()),
        opt(s.last_seen),
        opt(s.acked_generation),
        s.desired_generation.to_string(),
        dash_join(&s.services),
        s.users.to_string(),
    ]
}

/// name, protocol, port, port span, servers, image, down cap, up cap, new connections per second.
fn service(s: &ServiceInfo) -> Vec<String> {
    vec![
        s.name.clone(),
        s.protocol.to_string(),
        s.port.to_string(),
        s.port_span.to_string(),
        server_list(s.all_servers, &s.servers),
        opt(s.image.as_deref()),
        opt(s.bandwidth.down_bps),
        opt(s.bandwidth.up_bps),
        opt(s.new_conn_rate),
    ]
}

/// name, status, servers, protocols, created, id, email, down limit, up limit.
fn user(u: &UserInfo) -> Vec<String> {
    vec![
        u.name.clone(),
        u.status.clone(),
        server_list(u.all_servers, &u.servers),
        u.protocols.as_deref().map_or("all".into(), dash_join),
        u.created_at.to_string(),
        u.id.clone(),
        opt(u.email.as_deref()),
        opt(u.bandwidth.down_bps),
        opt(u.bandwidth.up_bps),
    ]
}

/// target, server (`all` for a fleet-wide rule), created.
fn firewall_rule(r: &FirewallRuleInfo) -> Vec<String> {
    vec![
        r.target.clone(),
        r.server.clone().unwrap_or_else(|| "all".into()),
        r.created_at.to_string(),
    ]
}

fn status(s: &StatusInfo) -> Vec<Vec<String>> {
    let pairs = [
        ("controller_version", s.controller_version.clone()),
        ("hosts_total", s.hosts_total.to_string()),
        ("hosts_online", s.hosts_online.to_string()),
        ("services", s.services.to_string()),
        ("users_total", s.users_total.to_string()),
        ("users_active", s.users_active.to_string()),
    ];
    pairs.into_iter().map(|(k, v)| vec![k.into(), v]).collect()
}

/// server, state, generation, errors (`; `-joined, only for `failed`).
fn applied(a: &Applied) -> Vec<Vec<String>> {
    a.hosts
        .iter()
        .map(|h| {
            let (state, detail) = match &h.state {
                HostApplyState::Applied => ("applied", None),
                HostApplyState::Pending => ("pending", None),
                HostApplyState::NotWaited => ("not-waited", None),
                HostApplyState::Failed(errs) => ("failed", Some(errs.join("; "))),
            };
            let mut rec = vec![h.server.clone(), state.into(), h.generation.to_string()];
            rec.extend(detail);
            rec
        })
        .collect()
}

/// A subscription message reaches `vpn tui` only; a command never gets one.
pub(super) fn stream_only() -> CliError {
    CliError::Render("a subscription message is shown by `vpn tui`, not printed".into())
}
