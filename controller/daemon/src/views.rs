//! Read-only views the admin API returns: store rows joined with live fleet state.
//!
//! Host health (SPEC §2.8) is judged by pure functions over what is known of a host
//! ([`HostFacts`]): its [`host_state`], its [`warnings`] against the `[health]` thresholds and
//! its `doctor` checks ([`doctor_checks`]); the async views only gather the facts (failing
//! counts are SQL counts, vitals and feature health come from the live fleet).

use std::collections::HashMap;
use std::time::Duration;

use vpn_shared::links;
use vpn_shared::model::{Protocol, ServiceOptions};
use vpn_shared::proto::admin::{
    CheckLevel, DoctorCheck, DoctorReport, FailingResource, FirewallRuleInfo, HostState,
    HostVitals, LinkInfo, OnHoldInfo, ServerDetail, ServerInfo, Servers, ServiceDetail,
    ServiceHost, ServiceHostState, ServiceInfo, StatusDetail, StatusInfo, UsageInfo, UsageQuery,
    UserDetail, UserInfo, UserQuota,
};
use vpn_shared::size;

use crate::admin::{AdminError, AdminErrorExt};
use crate::config::HealthThresholds;
use crate::quota;
use crate::server::{Controller, now};
use crate::store::{FirewallRuleRow, QuotaState, ServiceRow, StoreError, UserRow, UserStatus};

/// Failing resources shown per host in `servers list` (the state's count is always complete).
pub const LIST_FAILING: u32 = 20;
/// Failing resources shown in `servers show`.
pub const SHOW_FAILING: usize = 1_000;
/// Events shown in `servers show`, newest first.
pub const SHOW_EVENTS: u32 = 20;
/// Failing resources named in one doctor check's detail.
const DOCTOR_NAMED: usize = 3;

fn placed_on(servers: &Servers, host: &str) -> bool {
    match servers {
        Servers::All => true,
        Servers::Named(names) => names.iter().any(|n| n == host),
    }
}

fn server_names(servers: &Servers) -> (bool, Vec<String>) {
    match servers {
        Servers::All => (true, Vec::new()),
        Servers::Named(n) => (false, n.clone()),
    }
}

/// Every host with its services and its count of active users (counted in SQL: no user row
/// is read, whatever the number of users).
pub async fn servers(ctl: &Controller) -> Result<Vec<ServerInfo>, StoreError> {
    let hosts = ctl.store.hosts().await?;
    let services = ctl.store.services().await?;
    let users = ctl.store.active_users_per_host().await?;
    Ok(hosts
        .into_iter()
        .map(|h| ServerInfo {
            online: ctl.fleet.is_online(&h.id),
            health: [ctl.fleet.health(&h.id), ctl.fleet.ack_problems(&h.id)].concat(),
            enrolled: h.enrolled_at.is_some(),
            services: services
                .iter()
                .filter(|s| placed_on(&s.servers, &h.name))
                .map(|s| s.name.clone())
                .collect(),
            users: users.get(&h.id).copied().unwrap_or_default(),
            name: h.name,
            host_id: h.id,
            address: h.address,
            agent_version: h.agent_version,
            last_seen: h.last_seen,
            desired_generation: h.generation,
            acked_generation: h.acked_generation,
            cert_not_after: h.cert_not_after,
        })
        .collect())
}

pub fn service(s: &ServiceRow) -> ServiceInfo {
    let (all_servers, servers) = server_names(&s.servers);
    ServiceInfo {
        name: s.name.clone(),
        protocol: s.protocol,
        port: s.port,
        port_span: s.port_span,
        image: s.image.clone(),
        all_servers,
        servers,
        options: public_options(&s.options),
        bandwidth: s.bandwidth,
        new_conn_rate: s.new_conn_rate,
    }
}

/// A service's options as JSON for operators: everything but secrets (a VLESS service's
/// Reality private key and a WireGuard host's interface key stay on the controller and its
/// hosts).
pub fn public_options(options: &ServiceOptions) -> String {
    let mut value = serde_json::to_value(options).unwrap_or_default();
    for protocol in ["Vless", "Wireguard"] {
        if let Some(v) = value.get_mut(protocol).and_then(|v| v.as_object_mut()) {
            v.remove("private_key");
        }
    }
    value.to_string()
}

pub async fn services(ctl: &Controller) -> Result<Vec<ServiceInfo>, StoreError> {
    Ok(ctl.store.services().await?.iter().map(service).collect())
}

pub fn user(u: &UserRow) -> UserInfo {
    let (all_servers, servers) = server_names(&u.servers);
    UserInfo {
        name: u.name.clone(),
        id: u.id.clone(),
        email: u.email.clone(),
        note: u.note.clone(),
        status: u.status.to_string(),
        all_servers,
        servers,
        protocols: u.protocols.clone(),
        bandwidth: u.bandwidth,
        created_at: u.created_at,
        updated_at: u.updated_at,
    }
}

/// `users list|show` with quotas: one user or every user.
pub async fn user_details(
    ctl: &Controller,
    name: Option<&str>,
) -> Result<Vec<UserDetail>, AdminError> {
    let now = now();
    let offset = ctl.store.time_zone();
    let users = match name {
        Some(n) => match ctl.store.user(n).await? {
            Some(d) => {
                let quota = ctl.store.quota(&d.user.id).await?;
                vec![(d.user, quota)]
            }
            None => return Err(AdminError::bad_data(format!("user {n} not found"))),
        },
        None => ctl.store.users_with_quotas().await?,
    };
    Ok(users
        .iter()
        .map(|(u, q)| UserDetail {
            user: user(u),
            quota: user_quota(u.status, q, now, offset),
        })
        .collect())
}

/// A user's quota as the operator reads it at `now`.
pub fn user_quota(
    status: UserStatus,
    q: &QuotaState,
    now: i64,
    offset: time::UtcOffset,
) -> UserQuota {
    let s = &q.settings;
    let used = q.used_at(now, offset);
    let reason = match status {
        UserStatus::Active => None,
        UserStatus::Suspended => Some("suspended by an operator".to_owned()),
        UserStatus::Limited => Some(match s.data_limit {
            Some(limit) => format!(
                "limited: {} of {} used",
                size::show(used),
                size::show_set(limit)
            ),
            None => "limited".to_owned(),
        }),
        UserStatus::Expired => Some(match s.expires_at {
            Some(at) => format!("expired: {}", utc_minute(at)),
            None => "expired".to_owned(),
        }),
        UserStatus::OnHold => Some(match s.on_hold {
            Some(h) => {
                let timeout = h
                    .timeout_at
                    .map_or(String::new(), |t| format!(", or from {}", utc_minute(t)));
                format!(
                    "on_hold: {} of use from the first traffic{timeout}",
                    size::show_span(h.duration)
                )
            }
            None => "on_hold".to_owned(),
        }),
    };
    UserQuota {
        data_limit: s.data_limit,
        reset: s.reset,
        used,
        period_start: quota::period_start(s.reset, now, offset),
        next_reset: quota::next_reset(s.reset, now, offset),
        expires_at: s.expires_at,
        on_hold: s.on_hold.map(|h| OnHoldInfo {
            duration: h.duration,
            timeout_at: h.timeout_at,
        }),
        first_use: q.first_use,
        reason,
    }
}

/// `2026-12-01 00:00 UTC`.
fn utc_minute(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("@{t}"))
}

pub fn firewall_rule(r: &FirewallRuleRow) -> FirewallRuleInfo {
    FirewallRuleInfo {
        target: r.target.clone(),
        server: r.server.clone(),
        created_at: r.created_at,
    }
}

/// Every link of a user: one per (assigned host, service on that host, credential).
pub async fn links(
    ctl: &Controller,
    name: &str,
    server: Option<&str>,
    protocol: Option<Protocol>,
) -> Result<Vec<LinkInfo>, crate::admin::AdminError> {
    let detail = ctl
        .store
        .user(name)
        .await
        .map_err(crate::admin::AdminError::from)?
        .ok_or_else(|| crate::admin::AdminError::bad_data(format!("user {name} not found")))?;
    if let Some(s) = server
        && !detail.hosts.iter().any(|h| h.name == s)
    {
        return Err(crate::admin::AdminError::bad_data(format!(
            "user {name} is not placed on server {s}"
        )));
    }
    let services = ctl.store.services().await.bad()?;
    let mut out = Vec::new();
    for host in detail
        .hosts
        .iter()
        .filter(|h| server.is_none_or(|s| s == h.name))
    {
        let Some(address) = host.address.as_deref() else {
            continue; // never connected: no address to put in a link yet
        };
        for cred in &detail.credentials {
            if protocol.is_some_and(|p| p != cred.protocol) {
                continue;
            }
            let Some(svc) = services.iter().find(|s| s.name == cred.service) else {
                continue;
            };
            if !placed_on(&svc.servers, &host.name) {
                continue;
            }
            let tag = format!("{name}@{}", host.name);
            let url = match &cred.options {
                ServiceOptions::Shadowsocks { method } => links::shadowsocks(
                    method,
                    &cred.secret,
                    host_part(address),
                    cred.port,
                    &format!("{name}@{}", host.name),
                ),
                ServiceOptions::Vless(v) => {
                    let port = if v.engine.port_per_user() {
                        cred.port
                    } else {
                        svc.port
                    };
                    let reality = links::Reality {
                        sni: &v.sni,
                        public_key: &v.public_key,
                        short_id: v.short_ids.first().map(String::as_str).unwrap_or_default(),
                    };
                    links::vless(&cred.secret, host_part(address), port, reality, &tag)
                }
                ServiceOptions::Proxy(p) => {
                    // One port, one or two links (`--kind both` serves both on it).
                    let schemes = [
                        (p.kind.http(), links::ProxyScheme::Http),
                        (p.kind.socks5(), links::ProxyScheme::Socks5),
                    ];
                    for (_, scheme) in schemes.into_iter().filter(|(on, _)| *on) {
                        out.push(LinkInfo {
                            server: host.name.clone(),
                            service: cred.service.clone(),
                            protocol: cred.protocol,
                            url: links::proxy(
                                scheme,
                                name,
                                &cred.secret,
                                host_part(address),
                                cred.port,
                            ),
                        });
                    }
                    continue;
                }
                ServiceOptions::Wireguard(_) => {
                    let client = ctl
                        .store
                        .wireguard_client(&detail.user.id, &cred.service, &host.id)
                        .await
                        .map_err(crate::admin::AdminError::from)?;
                    let Some(c) = client else {
                        continue;
                    };
                    vpn_shared::wireguard::ClientConf {
                        private_key: c.private_key,
                        addresses: c.addresses,
                        dns: c.dns,
                        mtu: c.mtu,
                        server_public_key: c.server_public_key,
                        preshared_key: c.preshared_key,
                        endpoint: vpn_shared::wireguard::endpoint(host_part(address), c.port),
                    }
                    .render()
                }
            };
            out.push(LinkInfo {
                server: host.name.clone(),
                service: cred.service.clone(),
                protocol: cred.protocol,
                url,
            });
        }
    }
    Ok(out)
}

/// The host part of an address that may carry a port.
fn host_part(address: &str) -> &str {
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        // Borrowing from a parsed value is not possible; fall back to string slicing.
        let ip_len = address.len() - sa.port().to_string().len() - 1;
        return address[..ip_len]
            .trim_start_matches('[')
            .trim_end_matches(']');
    }
    address
}

pub async fn status(ctl: &Controller) -> Result<StatusInfo, crate::admin::AdminError> {
    let hosts = ctl.store.hosts().await.bad()?;
    let services = ctl.store.services().await.bad()?;
    let users = ctl.store.user_totals().await.bad()?;
    Ok(StatusInfo {
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
        hosts_total: hosts.len() as u64,
        hosts_online: ctl.fleet.online_count() as u64,
        services: services.len() as u64,
        users_total: users.total,
        users_active: users.active,
    })
}

/// What is known about one host's health, for the pure judgements below.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    pub enrolled: bool,
    pub online: bool,
    pub desired_generation: u64,
    pub acked_generation: Option<u64>,
    /// The certificate the controller last issued (the agent reports the one it uses).
    pub cert_not_after: Option<i64>,
    pub last_seen: Option<i64>,
    pub vitals: Option<&'a HostVitals>,
    /// Missing features the agent reported at start.
    pub missing: &'a [String],
    pub failing: u32,
    /// Some of the failing resources (for doctor's detail).
    pub failing_sample: &'a [FailingResource],
}

impl HostFacts<'_> {
    /// The certificate the agent runs, else the one issued last.
    fn cert(&self) -> Option<i64> {
        self.vitals
            .and_then(|v| v.cert_not_after)
            .or(self.cert_not_after)
    }
}

/// Pending (never enrolled), offline (no session), degraded (online with failures) or online.
pub fn host_state(enrolled: bool, online: bool, failing: u32) -> HostState {
    match (enrolled, online) {
        (false, false) => HostState::Pending,
        (_, false) => HostState::Offline,
        _ if failing > 0 => HostState::Degraded { failing },
        _ => HostState::Online,
    }
}

fn human(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(secs.unsigned_abs())).to_string()
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

/// The certificate judgement shared by warnings and doctor: `None` when all is well.
fn cert_problem(not_after: i64, now: i64, th: &HealthThresholds) -> Option<(CheckLevel, String)> {
    if not_after <= now {
        return Some((
            CheckLevel::Fail,
            format!("certificate expired {} ago", human(now - not_after)),
        ));
    }
    let warn = i64::try_from(th.cert_warn.as_secs()).unwrap_or(i64::MAX);
    (not_after - now < warn).then(|| {
        (
            CheckLevel::Warn,
            format!(
                "certificate expires in {} (renewal overdue?)",
                human(not_after - now)
            ),
        )
    })
}

fn skew_problem(v: &HostVitals, th: &HealthThresholds) -> Option<String> {
    let limit = i64::try_from(th.clock_skew_warn.as_millis()).unwrap_or(i64::MAX);
    (v.clock_skew_ms.saturating_abs() > limit).then(|| {
        format!(
            "clock off by {:+.1} s against the controller",
            v.clock_skew_ms as f64 / 1_000.0
        )
    })
}

/// Containers not running (first) and those restarted past the threshold.
fn container_problems(v: &HostVitals, th: &HealthThresholds) -> (Vec<String>, Vec<String>) {
    let mut stopped = Vec::new();
    let mut restarting = Vec::new();
    for c in &v.containers {
        if !c.running {
            stopped.push(format!(
                "container {} ({}) is not running",
                c.name, c.resource
            ));
        } else if c.restarts >= th.container_restarts_warn {
            restarting.push(format!(
                "container {} ({}) restarted {} times",
                c.name, c.resource, c.restarts
            ));
        }
    }
    (stopped, restarting)
}

/// Everything about a host past a `[health]` threshold, one line each.
pub fn warnings(f: &HostFacts, now: i64, th: &HealthThresholds) -> Vec<String> {
    let mut out = Vec::new();
    if !f.enrolled {
        return out;
    }
    if let Some((_, line)) = f.cert().and_then(|n| cert_problem(n, now, th)) {
        out.push(line);
    }
    if let Some(v) = f.vitals {
        out.extend(skew_problem(v, th));
        let (stopped, restarting) = container_problems(v, th);
        out.extend(stopped);
        out.extend(restarting);
        if let Some(free) = v.disk_free_bytes.filter(|b| *b < th.disk_free_warn) {
            out.push(format!(
                "disk: {} free in the agent's data directory",
                mib(free)
            ));
        }
        if let Some(n) = v.ledger_backlog.filter(|n| *n > th.ledger_backlog_warn) {
            out.push(format!("ledger: {n} usage entries wait for the controller"));
        }
    }
    if !f.missing.is_empty() {
        out.push(format!(
            "{} host feature(s) missing: {}",
            f.missing.len(),
            f.missing.join("; ")
        ));
    }
    out
}

fn check(server: &str, name: &str, level: CheckLevel, detail: impl Into<String>) -> DoctorCheck {
    DoctorCheck {
        server: Some(server.to_string()),
        check: name.to_string(),
        level,
        detail: detail.into(),
    }
}

/// `vpn doctor`'s checks of one host: `online`, `acked`, `resources`, `certificate`, and
/// while online `clock`, `kernel` and `containers` (unknown while offline, so not judged).
pub fn doctor_checks(
    server: &str,
    f: &HostFacts,
    now: i64,
    th: &HealthThresholds,
) -> Vec<DoctorCheck> {
    use CheckLevel::{Fail, Ok, Warn};
    let c = |name, level, detail: String| check(server, name, level, detail);
    if !f.enrolled {
        return vec![c(
            "online",
            Warn,
            "not enrolled yet: run the agent command `vpn servers add` printed".into(),
        )];
    }
    let mut out = Vec::new();
    out.push(match (f.online, f.last_seen) {
        (true, _) => c("online", Ok, "connected".into()),
        (false, Some(seen)) => c(
            "online",
            Fail,
            format!("offline; last seen {} ago", human(now - seen)),
        ),
        (false, None) => c("online", Fail, "offline; never connected".into()),
    });
    let acked = f.acked_generation.unwrap_or(0);
    out.push(if acked == f.desired_generation {
        c("acked", Ok, format!("generation {acked} applied"))
    } else if f.online {
        c(
            "acked",
            Warn,
            format!(
                "acked generation {acked} of {} (a change in flight, or the agent is behind)",
                f.desired_generation
            ),
        )
    } else {
        c(
            "acked",
            Warn,
            format!(
                "acked generation {acked} of {}; the rest applies on reconnect",
                f.desired_generation
            ),
        )
    });
    out.push(if f.failing == 0 {
        c("resources", Ok, "no resource failing".into())
    } else {
        let named: Vec<String> = f
            .failing_sample
            .iter()
            .take(DOCTOR_NAMED)
            .map(|r| format!("{}: {}", r.resource, r.message))
            .collect();
        let more = (f.failing as usize).saturating_sub(named.len());
        let tail = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        c(
            "resources",
            Fail,
            format!("{} failing: {}{tail}", f.failing, named.join("; ")),
        )
    });
    out.push(match f.cert() {
        None => c("certificate", Warn, "no certificate on record".into()),
        Some(n) => match cert_problem(n, now, th) {
            Some((level, line)) => c("certificate", level, line),
            None => c("certificate", Ok, format!("expires in {}", human(n - now))),
        },
    });
    if !f.online {
        return out;
    }
    let unreported = "no report from the agent in this session (an agent before protocol 3?)";
    out.push(match f.vitals {
        None => c("clock", Warn, unreported.into()),
        Some(v) => match skew_problem(v, th) {
            Some(line) => c("clock", Warn, line),
            None => c("clock", Ok, format!("skew {} ms", v.clock_skew_ms)),
        },
    });
    out.push(if f.missing.is_empty() {
        c("kernel", Ok, "every feature present".into())
    } else {
        c("kernel", Warn, format!("missing: {}", f.missing.join("; ")))
    });
    out.push(match f.vitals {
        None => c("containers", Warn, unreported.into()),
        Some(v) => match container_problems(v, th) {
            (stopped, _) if !stopped.is_empty() => c("containers", Fail, stopped.join("; ")),
            (_, restarting) if !restarting.is_empty() => {
                c("containers", Warn, restarting.join("; "))
            }
            _ => c("containers", Ok, format!("{} running", v.containers.len())),
        },
    });
    out
}

/// The facts of one host as [`servers`] and the fleet know them.
fn facts<'a>(
    info: &ServerInfo,
    vitals: Option<&'a HostVitals>,
    missing: &'a [String],
    failing: u32,
    sample: &'a [FailingResource],
) -> HostFacts<'a> {
    HostFacts {
        enrolled: info.enrolled,
        online: info.online,
        desired_generation: info.desired_generation,
        acked_generation: info.acked_generation,
        cert_not_after: info.cert_not_after,
        last_seen: info.last_seen,
        vitals,
        missing,
        failing,
        failing_sample: sample,
    }
}

/// `servers list` (`name: None`: every host, few failing resources, no events) or `servers
/// show NAME` (failing resources and newest events).
pub async fn server_details(
    ctl: &Controller,
    name: Option<&str>,
) -> Result<Vec<ServerDetail>, AdminError> {
    let infos = servers(ctl).await.bad()?;
    let infos: Vec<ServerInfo> = match name {
        None => infos,
        Some(n) => {
            let found: Vec<_> = infos.into_iter().filter(|s| s.name == n).collect();
            if found.is_empty() {
                return Err(AdminError::bad_data(format!("server {n} not found")));
            }
            found
        }
    };
    let counts = ctl.store.failing_counts().await.bad()?;
    let mut failing = match name {
        None => ctl.store.failing_all(LIST_FAILING).await.bad()?,
        Some(_) => HashMap::new(),
    };
    let (now, th) = (now(), &ctl.config.health);
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        let count = counts.get(&info.host_id).copied().unwrap_or_default();
        let (list, events) = match name {
            None => (
                failing.remove(&info.host_id).unwrap_or_default(),
                Vec::new(),
            ),
            Some(_) => {
                let mut all = ctl.store.failing(&info.host_id).await.bad()?;
                all.truncate(SHOW_FAILING);
                let events = ctl.store.host_events(&info.host_id, SHOW_EVENTS).await;
                (all, events.bad()?)
            }
        };
        let vitals = ctl.fleet.vitals(&info.host_id);
        let missing = ctl.fleet.health(&info.host_id);
        let f = facts(&info, vitals.as_ref(), &missing, count, &list);
        out.push(ServerDetail {
            state: host_state(info.enrolled, info.online, count),
            warnings: warnings(&f, now, th),
            failing: list,
            events,
            vitals,
            server: info,
        });
    }
    Ok(out)
}

/// `status` with the fleet's health counts.
pub async fn status_detail(ctl: &Controller) -> Result<StatusDetail, AdminError> {
    let status = status(ctl).await?;
    let hosts = ctl.store.hosts().await.bad()?;
    let counts = ctl.store.failing_counts().await.bad()?;
    let (now, th) = (now(), &ctl.config.health);
    let mut d = StatusDetail {
        status,
        hosts_degraded: 0,
        hosts_offline: 0,
        failing_resources: counts.values().map(|n| u64::from(*n)).sum(),
        hosts_warned: 0,
    };
    for h in &hosts {
        let online = ctl.fleet.is_online(&h.id);
        let failing = counts.get(&h.id).copied().unwrap_or_default();
        let enrolled = h.enrolled_at.is_some();
        match host_state(enrolled, online, failing) {
            HostState::Degraded { .. } => d.hosts_degraded += 1,
            HostState::Offline => d.hosts_offline += 1,
            HostState::Pending | HostState::Online => {}
        }
        let vitals = ctl.fleet.vitals(&h.id);
        let missing = ctl.fleet.health(&h.id);
        let f = HostFacts {
            enrolled,
            online,
            desired_generation: h.generation,
            acked_generation: h.acked_generation,
            cert_not_after: h.cert_not_after,
            last_seen: h.last_seen,
            vitals: vitals.as_ref(),
            missing: &missing,
            failing,
            failing_sample: &[],
        };
        if !warnings(&f, now, th).is_empty() {
            d.hosts_warned += 1;
        }
    }
    Ok(d)
}

/// How one placed host runs a service, from that service's failing resources there.
pub fn service_host_state(
    enrolled: bool,
    online: bool,
    service: &str,
    failing: &[FailingResource],
) -> ServiceHostState {
    let own = format!("service/{service}");
    match (enrolled, online) {
        (false, _) => ServiceHostState::Pending,
        (_, false) => ServiceHostState::Offline,
        _ if failing.iter().any(|f| f.resource == own) => ServiceHostState::Failing,
        _ if !failing.is_empty() => ServiceHostState::UsersFailing,
        _ => ServiceHostState::Ok,
    }
}

/// `services show NAME` with each placed host's state.
pub async fn service_detail(ctl: &Controller, name: &str) -> Result<ServiceDetail, AdminError> {
    let services = ctl.store.services().await.bad()?;
    let row = services
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| AdminError::bad_data(format!("service {name} not found")))?;
    let mut failing = ctl.store.failing_of_service(name).await.bad()?;
    let hosts = ctl
        .store
        .hosts()
        .await
        .bad()?
        .into_iter()
        .filter(|h| placed_on(&row.servers, &h.name))
        .map(|h| {
            let list = failing.remove(&h.id).unwrap_or_default();
            let online = ctl.fleet.is_online(&h.id);
            ServiceHost {
                state: service_host_state(h.enrolled_at.is_some(), online, name, &list),
                server: h.name,
                failing: list,
            }
        })
        .collect();
    Ok(ServiceDetail {
        service: service(row),
        hosts,
    })
}

/// `vpn doctor`: every host's checks, or one fleet-wide check when there is no host.
pub async fn doctor(ctl: &Controller) -> Result<DoctorReport, AdminError> {
    let infos = servers(ctl).await.bad()?;
    let counts = ctl.store.failing_counts().await.bad()?;
    let (now, th) = (now(), &ctl.config.health);
    let mut checks = Vec::new();
    if infos.is_empty() {
        checks.push(DoctorCheck {
            server: None,
            check: "servers".into(),
            level: CheckLevel::Warn,
            detail: "no servers yet: add one with `vpn servers add NAME`".into(),
        });
    }
    for info in &infos {
        let count = counts.get(&info.host_id).copied().unwrap_or_default();
        let sample = if count > 0 {
            ctl.store.failing(&info.host_id).await.bad()?
        } else {
            Vec::new()
        };
        let vitals = ctl.fleet.vitals(&info.host_id);
        let missing = ctl.fleet.health(&info.host_id);
        let f = facts(info, vitals.as_ref(), &missing, count, &sample);
        checks.extend(doctor_checks(&info.name, &f, now, th));
    }
    Ok(DoctorReport { checks })
}

/// How far in the future `users usage --since` may be: the CLI and controller clocks differ.
pub const SINCE_SLACK: i64 = 60;

/// Refuses a `--since` more than [`SINCE_SLACK`] after `now` (a typo of a year, say), which
/// would answer "no traffic" instead of an error.
pub fn check_since(since: Option<i64>, now: i64) -> Result<(), AdminError> {
    match since {
        Some(s) if s > now.saturating_add(SINCE_SLACK) => {
            let shown = u64::try_from(s)
                .ok()
                .and_then(|s| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
                .map_or_else(
                    || s.to_string(),
                    |t| humantime::format_rfc3339(t).to_string(),
                );
            Err(AdminError::bad_data(format!(
                "invalid --since: {shown} is in the future"
            )))
        }
        _ => Ok(()),
    }
}

/// `vpn users usage [NAME] [--since] [--by]`: totals from the store, one user (by name) or all.
pub async fn usage(ctl: &Controller, q: UsageQuery) -> Result<UsageInfo, AdminError> {
    check_since(q.since, now())?;
    let user_id = match &q.user {
        Some(name) => match ctl.store.user(name).await.bad()? {
            Some(d) => Some(d.user.id),
            None => return Err(StoreError::not_found("user", name).into()),
        },
        None => None,
    };
    let rows = ctl
        .store
        .usage_totals(user_id.as_deref(), q.since, q.by)
        .await
        .bad()?;
    Ok(UsageInfo {
        since: q.since,
        by: q.by,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_may_be_a_minute_ahead_not_more() {
        assert!(check_since(None, 1_000).is_ok());
        assert!(check_since(Some(0), 1_000).is_ok());
        assert!(check_since(Some(1_000 + SINCE_SLACK), 1_000).is_ok());
        let e = check_since(Some(1_796_119_200), 1_000)
            .err()
            .map(|e| e.message().to_string());
        assert_eq!(
            e.as_deref(),
            Some("invalid --since: 2026-12-01T10:00:00Z is in the future")
        );
    }

    #[test]
    fn host_part_strips_ports_and_brackets() {
        assert_eq!(host_part("203.0.113.1"), "203.0.113.1");
        assert_eq!(host_part("203.0.113.1:7443"), "203.0.113.1");
        assert_eq!(host_part("[2001:db8::1]:7443"), "2001:db8::1");
        assert_eq!(host_part("vpn.example.com"), "vpn.example.com");
    }

    use vpn_shared::proto::ContainerStatus;

    fn vitals() -> HostVitals {
        HostVitals {
            reported_at: 1_000,
            clock_skew_ms: 40,
            cert_not_after: Some(1_000 + 20 * 86_400),
            containers: vec![ContainerStatus {
                name: "vpn-ss".into(),
                resource: "service/ss".into(),
                running: true,
                restarts: 0,
            }],
            disk_free_bytes: Some(10 << 30),
            ledger_backlog: Some(0),
        }
    }

    fn facts_of<'a>(v: Option<&'a HostVitals>, missing: &'a [String]) -> HostFacts<'a> {
        HostFacts {
            enrolled: true,
            online: true,
            desired_generation: 4,
            acked_generation: Some(4),
            cert_not_after: Some(1_000 + 20 * 86_400),
            last_seen: Some(1_000),
            vitals: v,
            missing,
            failing: 0,
            failing_sample: &[],
        }
    }

    #[test]
    fn states_follow_enrollment_sessions_and_failures() {
        assert_eq!(host_state(false, false, 0), HostState::Pending);
        assert_eq!(host_state(true, false, 3), HostState::Offline);
        assert_eq!(
            host_state(true, true, 3),
            HostState::Degraded { failing: 3 }
        );
        assert_eq!(host_state(true, true, 0), HostState::Online);
    }

    #[test]
    fn a_healthy_host_has_no_warning_and_passes_every_check() {
        let th = HealthThresholds::default();
        let v = vitals();
        let f = facts_of(Some(&v), &[]);
        assert!(warnings(&f, 1_000, &th).is_empty());
        let checks = doctor_checks("edge-1", &f, 1_000, &th);
        let names: Vec<_> = checks.iter().map(|c| c.check.as_str()).collect();
        assert_eq!(
            names,
            [
                "online",
                "acked",
                "resources",
                "certificate",
                "clock",
                "kernel",
                "containers"
            ]
        );
        assert!(
            checks.iter().all(|c| c.level == CheckLevel::Ok),
            "{checks:?}"
        );
    }

    #[test]
    fn each_threshold_makes_one_warning() {
        let th = HealthThresholds::default();
        let mut v = vitals();
        v.cert_not_after = Some(1_000 + 86_400);
        v.clock_skew_ms = -2_500;
        v.containers.push(ContainerStatus {
            name: "vpn-x".into(),
            resource: "service/x".into(),
            running: true,
            restarts: 3,
        });
        v.containers.push(ContainerStatus {
            name: "vpn-y".into(),
            resource: "service/y".into(),
            running: false,
            restarts: 0,
        });
        v.disk_free_bytes = Some(512 << 20);
        v.ledger_backlog = Some(10_001);
        let missing = vec!["HTB: disables bandwidth limits".to_string()];
        let w = warnings(&facts_of(Some(&v), &missing), 1_000, &th);
        let expect = [
            "certificate expires in 1day (renewal overdue?)",
            "clock off by -2.5 s against the controller",
            "container vpn-y (service/y) is not running",
            "container vpn-x (service/x) restarted 3 times",
            "disk: 512 MiB free in the agent's data directory",
            "ledger: 10001 usage entries wait for the controller",
            "1 host feature(s) missing: HTB: disables bandwidth limits",
        ];
        assert_eq!(w, expect);
    }

    #[test]
    fn a_skew_at_the_threshold_and_three_days_of_certificate_are_fine() {
        let th = HealthThresholds::default();
        let mut v = vitals();
        v.clock_skew_ms = 2_000;
        v.cert_not_after = Some(1_000 + 3 * 86_400);
        assert!(warnings(&facts_of(Some(&v), &[]), 1_000, &th).is_empty());
    }

    #[test]
    fn doctor_fails_a_degraded_or_offline_host_and_names_the_resource() {
        let th = HealthThresholds::default();
        let failing = [FailingResource {
            resource: "service/ss".into(),
            message: "image not found".into(),
            first_seen: 900,
            last_seen: 1_000,
        }];
        let mut f = facts_of(None, &[]);
        f.failing = 1;
        f.failing_sample = &failing;
        let checks = doctor_checks("edge-1", &f, 1_000, &th);
        let resources = checks.iter().find(|c| c.check == "resources").unwrap();
        assert_eq!(resources.level, CheckLevel::Fail);
        assert_eq!(resources.detail, "1 failing: service/ss: image not found");
        let clock = checks.iter().find(|c| c.check == "clock").unwrap();
        assert_eq!(
            clock.level,
            CheckLevel::Warn,
            "no report: the clock is unknown"
        );

        f.online = false;
        f.last_seen = Some(1_000 - 120);
        let checks = doctor_checks("edge-1", &f, 1_000, &th);
        assert_eq!(checks[0].level, CheckLevel::Fail);
        assert_eq!(checks[0].detail, "offline; last seen 2m ago");
        assert_eq!(
            checks.len(),
            4,
            "what needs a session is not judged offline"
        );

        f.enrolled = false;
        let checks = doctor_checks("edge-1", &f, 1_000, &th);
        assert_eq!((checks.len(), checks[0].level), (1, CheckLevel::Warn));
    }

    #[test]
    fn a_service_host_state_tells_the_service_from_its_users() {
        let row = |r: &str| FailingResource {
            resource: r.into(),
            message: "x".into(),
            first_seen: 0,
            last_seen: 0,
        };
        assert_eq!(
            service_host_state(true, true, "ss", &[]),
            ServiceHostState::Ok
        );
        assert_eq!(
            service_host_state(true, true, "ss", &[row("user/a@ss"), row("service/ss")]),
            ServiceHostState::Failing
        );
        assert_eq!(
            service_host_state(true, true, "ss", &[row("user/a@ss")]),
            ServiceHostState::UsersFailing
        );
        assert_eq!(
            service_host_state(true, false, "ss", &[row("service/ss")]),
            ServiceHostState::Offline
        );
        assert_eq!(
            service_host_state(false, false, "ss", &[]),
            ServiceHostState::Pending
        );
    }
}
