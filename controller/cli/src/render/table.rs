//! The `table` format: borderless aligned columns (like `kubectl get`) for lists, `Key:  value`
//! views for single records, per-host lines for applied changes, QR codes for links.

use comfy_table::{CellAlignment, Table, presets};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use vpn_shared::proto::admin::{
    AdminResponse, Applied, FirewallRuleInfo, HostApplyState, LAST_APPLY, LinkInfo, ServerAdded,
    ServerInfo, ServiceInfo, StatusInfo, UserInfo,
};

use super::{Opts, ago, conn_rate, dash_join, date, refused, server_list, timestamp};
use crate::error::CliError;
use vpn_shared::rate;

mod health;
mod quota;
mod usage;

pub fn render(resp: &AdminResponse, opts: &Opts) -> Result<String, CliError> {
    let now = opts.now;
    Ok(match resp {
        AdminResponse::Error { kind, message } => return Err(refused(*kind, message)),
        AdminResponse::ServerAdded(a) => server_added(a, opts),
        AdminResponse::Servers(v) if v.is_empty() => "no servers\n".into(),
        AdminResponse::Servers(v) => servers(v, now),
        AdminResponse::Server(s) => server(s, now),
        AdminResponse::Services(v) if v.is_empty() => "no services\n".into(),
        AdminResponse::Services(v) => services(v),
        AdminResponse::Service(s) => service(s),
        AdminResponse::Users(v) if v.is_empty() => "no users\n".into(),
        AdminResponse::Users(v) => users(v),
        AdminResponse::User(u) => user(u),
        AdminResponse::UsersDetail(v) if v.is_empty() => "no users\n".into(),
        AdminResponse::UsersDetail(v) => quota::users(v),
        AdminResponse::UserDetail(d) => quota::user(d, now),
        AdminResponse::Links(v) if v.is_empty() => "no links\n".into(),
        AdminResponse::Links(v) if opts.qr => links_qr(v),
        AdminResponse::Links(v) => links(v),
        AdminResponse::Status(s) => status(s),
        AdminResponse::Applied(a) => applied(a),
        AdminResponse::Firewall(v) if v.is_empty() => "no firewall rules\n".into(),
        AdminResponse::Firewall(v) => firewall(v),
        AdminResponse::ServersDetail(v) if v.is_empty() => "no servers\n".into(),
        AdminResponse::ServersDetail(v) => health::servers(v, now),
        AdminResponse::ServerDetail(d) => health::server(d, now),
        AdminResponse::StatusDetail(s) => health::status(s),
        AdminResponse::ServiceDetail(d) => health::service(d),
        AdminResponse::Doctor(r) => health::doctor(r),
        AdminResponse::Usage(u) => usage::usage(u, opts),
        // The client joins parts into their list; a part alone renders as that list.
        AdminResponse::More(part) => return render(part, opts),
        AdminResponse::Stream(_) => return Err(super::plain::stream_only()),
    })
}

/// Columns separated by two spaces, no borders, no trailing blanks.
fn grid(header: Option<&[&str]>, rows: Vec<Vec<String>>) -> String {
    grid_aligned(header, rows, &[])
}

/// [`grid`] with the columns at the indexes in `right` (header included) right-aligned, for
/// numbers.
fn grid_aligned(header: Option<&[&str]>, rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).force_no_tty();
    if let Some(h) = header {
        t.set_header(h.to_vec());
    }
    for row in rows {
        t.add_row(row);
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
        if right.contains(&col.index) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

fn fields(rows: Vec<(&str, String)>) -> String {
    let rows = rows
        .into_iter()
        .map(|(k, v)| vec![format!("{k}:"), v])
        .collect();
    grid(None, rows)
}

fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

fn server_status(s: &ServerInfo) -> &'static str {
    match (s.enrolled, s.online) {
        (false, _) => "not joined",
        (true, true) => "online",
        (true, false) => "offline",
    }
}

fn generation(s: &ServerInfo) -> String {
    let acked = s.acked_generation.map_or("-".into(), |g| g.to_string());
    format!("{acked}/{}", s.desired_generation)
}

fn server_added(a: &ServerAdded, opts: &Opts) -> String {
    let valid_for = u64::try_from(a.expires_at - opts.now).unwrap_or(0);
    let valid_for = humantime::format_duration(std::time::Duration::from_secs(valid_for));
    let mut out = format!(
        "server {} added; the join string is valid until {} ({valid_for})\n\n\
         join string:\n  {}\n\nrun this on the new host as root:\n  vpn-agent join {}\n",
        a.name,
        timestamp(a.expires_at),
        a.join,
        a.join
    );
    if opts.hints {
        out.push_str("\nthe host shows up in `vpn servers list` once it has joined\n");
    }
    out
}

fn servers(v: &[ServerInfo], now: i64) -> String {
    let header = [
        "NAME",
        "STATUS",
        "ADDRESS",
        "VERSION",
        "LAST SEEN",
        "GENERATION",
        "SERVICES",
        "USERS",
    ];
    let rows = v
        .iter()
        .map(|s| server_row(s, server_status(s).into(), now))
        .collect();
    grid(Some(&header), rows)
}

/// The columns of `servers list` after the header's order, with `status` as given.
fn server_row(s: &ServerInfo, status: String, now: i64) -> Vec<String> {
    vec![
        s.name.clone(),
        status,
        or_dash(s.address.as_deref()),
        or_dash(s.agent_version.as_deref()),
        ago(now, s.last_seen),
        generation(s),
        dash_join(&s.services),
        s.users.to_string(),
    ]
}

fn server(s: &ServerInfo, now: i64) -> String {
    fields(server_fields(s, server_status(s).into(), now))
}

/// The `Key: value` rows of `servers show`, with `status` as given.
fn server_fields(s: &ServerInfo, status: String, now: i64) -> Vec<(&'static str, String)> {
    let last_seen = match s.last_seen {
        Some(t) => format!("{} ({})", ago(now, Some(t)), timestamp(t)),
        None => "never".into(),
    };
    let (last_apply, missing): (Vec<&String>, Vec<&String>) =
        s.health.iter().partition(|l| l.starts_with(LAST_APPLY));
    let mut rows = vec![
        ("Name", s.name.clone()),
        ("Host ID", s.host_id.clone()),
        ("Status", status),
        ("Address", or_dash(s.address.as_deref())),
        ("Agent version", or_dash(s.agent_version.as_deref())),
        ("Last seen", last_seen),
        ("Generation", format!("{} (acked/desired)", generation(s))),
        (
            "Cert expires",
            s.cert_not_after.map_or("-".into(), timestamp),
        ),
        ("Services", dash_join(&s.services)),
        ("Users", s.users.to_string()),
        (
            "Missing features",
            if missing.is_empty() {
                "-".into()
            } else {
                missing
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
    ];
    // Only when the last apply had host-wide failures (a state the agent could not save).
    if !last_apply.is_empty() {
        let problems: Vec<&str> = last_apply
            .iter()
            .map(|l| l.strip_prefix(LAST_APPLY).unwrap_or(l))
            .collect();
        rows.push(("Last apply", problems.join("; ")));
    }
    rows
}

fn ports(s: &ServiceInfo) -> String {
    match s.port_span {
        0 | 1 => s.port.to_string(),
        span => {
            let last = u32::from(s.port) + u32::from(span) - 1;
            format!("{}-{last}", s.port)
        }
    }
}

fn services(v: &[ServiceInfo]) -> String {
    let header = [
        "NAME", "PROTOCOL", "PORTS", "SERVERS", "DOWN", "UP", "CONN/S", "IMAGE",
    ];
    let rows = v
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.protocol.to_string(),
                ports(s),
                server_list(s.all_servers, &s.servers),
                rate::show(s.bandwidth.down_bps),
                rate::show(s.bandwidth.up_bps),
                conn_rate(s.new_conn_rate),
                s.image.as_deref().unwrap_or("default").into(),
            ]
        })
        .collect();
    grid(Some(&header), rows)
}

fn service(s: &ServiceInfo) -> String {
    fields(service_fields(s))
}

fn service_fields(s: &ServiceInfo) -> Vec<(&'static str, String)> {
    let conns = s
        .new_conn_rate
        .map_or("-".into(), |n| format!("{n}/s per source address"));
    let mut rows = vec![
        ("Name", s.name.clone()),
        ("Protocol", s.protocol.to_string()),
        ("Ports", ports(s)),
        ("Servers", server_list(s.all_servers, &s.servers)),
        ("Download cap", rate::show(s.bandwidth.down_bps)),
        ("Upload cap", rate::show(s.bandwidth.up_bps)),
        ("New connections", conns),
        ("Image", s.image.as_deref().unwrap_or("default").into()),
    ];
    rows.extend(options(&s.options));
    rows
}

/// A service's protocol options, one field each; the raw JSON when this CLI does not know them.
fn options(json: &str) -> Vec<(&'static str, String)> {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or("-").to_owned();
    if let Some(ss) = value.get("Shadowsocks") {
        return vec![("Method", text(ss, "method"))];
    }
    if let Some(v) = value.get("Vless") {
        let short_ids: Vec<&str> = v["short_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        return vec![
            ("Engine", text(v, "engine").to_ascii_lowercase()),
            ("SNI", text(v, "sni")),
            ("Dest", text(v, "dest")),
            ("Public key", text(v, "public_key")),
            ("Short ids", dash_join(&short_ids)),
        ];
    }
    vec![("Options", json.to_owned())]
}

fn protocols(u: &UserInfo) -> String {
    u.protocols.as_deref().map_or("all".into(), dash_join)
}

/// The columns of `users list`, in the order of [`USERS`].
const USERS: [&str; 7] = [
    "NAME",
    "STATUS",
    "SERVERS",
    "PROTOCOLS",
    "DOWN",
    "UP",
    "CREATED",
];

fn users(v: &[UserInfo]) -> String {
    grid(Some(&USERS), v.iter().map(user_row).collect())
}

fn user_row(u: &UserInfo) -> Vec<String> {
    vec![
        u.name.clone(),
        u.status.clone(),
        server_list(u.all_servers, &u.servers),
        protocols(u),
        rate::show(u.bandwidth.down_bps),
        rate::show(u.bandwidth.up_bps),
        date(u.created_at),
    ]
}

fn user(u: &UserInfo) -> String {
    fields(user_fields(u))
}

fn user_fields(u: &UserInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Name", u.name.clone()),
        ("ID", u.id.clone()),
        ("Status", u.status.clone()),
        ("Email", or_dash(u.email.as_deref())),
        ("Note", or_dash(u.note.as_deref())),
        ("Servers", server_list(u.all_servers, &u.servers)),
        ("Protocols", protocols(u)),
        ("Download limit", rate::show(u.bandwidth.down_bps)),
        ("Upload limit", rate::show(u.bandwidth.up_bps)),
        ("Created", timestamp(u.created_at)),
        ("Updated", timestamp(u.updated_at)),
    ]
}

fn firewall(v: &[FirewallRuleInfo]) -> String {
    let header = ["TARGET", "SERVERS", "CREATED"];
    let rows = v
        .iter()
        .map(|r| {
            vec![
                r.target.clone(),
                r.server.clone().unwrap_or_else(|| "all".into()),
                timestamp(r.created_at),
            ]
        })
        .collect();
    grid(Some(&header), rows)
}

fn links(v: &[LinkInfo]) -> String {
    // A WireGuard `.conf` is many lines: each link then gets a titled block, not a cell.
    if v.iter().any(|l| l.url.contains('\n')) {
        let blocks: Vec<String> = v
            .iter()
            .map(|l| format!("{} {} ({})\n{}", l.server, l.service, l.protocol, l.url))
            .collect();
        return blocks.join("\n");
    }
    let header = ["SERVER", "SERVICE", "PROTOCOL", "URL"];
    let rows = v
        .iter()
        .map(|l| {
            let proto = l.protocol.to_string();
            vec![l.server.clone(), l.service.clone(), proto, l.url.clone()]
        })
        .collect();
    grid(Some(&header), rows)
}

fn links_qr(v: &[LinkInfo]) -> String {
    let blocks: Vec<String> = v
        .iter()
        .map(|l| {
            let title = format!("{} {} ({})", l.server, l.service, l.protocol);
            format!("{title}\n{}\n{}\n", l.url, qr(&l.url))
        })
        .collect();
    blocks.join("\n")
}

/// A QR code in unicode half blocks, light-on-dark so it scans on a dark terminal.
pub fn qr(data: &str) -> String {
    match QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

fn status(s: &StatusInfo) -> String {
    fields(status_fields(s))
}

fn status_fields(s: &StatusInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Controller", s.controller_version.clone()),
        (
            "Hosts",
            format!("{} ({} online)", s.hosts_total, s.hosts_online),
        ),
        ("Services", s.services.to_string()),
        (
            "Users",
            format!("{} ({} active)", s.users_total, s.users_active),
        ),
    ]
}

fn applied(a: &Applied) -> String {
    let rows = a
        .hosts
        .iter()
        .map(|h| {
            let state = match &h.state {
                HostApplyState::Applied => format!("applied gen {}", h.generation),
                HostApplyState::Pending => {
                    format!("pending gen {} (offline or no ack yet)", h.generation)
                }
                HostApplyState::NotWaited => format!("sent gen {} (not waited)", h.generation),
                HostApplyState::Failed(errs) => {
                    format!("failed gen {}: {}", h.generation, errs.join("; "))
                }
            };
            vec![h.server.clone(), state]
        })
        .collect();
    let mut out = grid(None, rows);
    out.push_str(&a.summary);
    out.push('\n');
    out
}
