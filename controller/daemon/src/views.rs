//! Read-only views the admin API returns: store rows joined with live fleet state.

use std::collections::HashMap;

use vpn_shared::links;
use vpn_shared::model::{Protocol, ServiceOptions};
use vpn_shared::proto::admin::{
    FirewallRuleInfo, LinkInfo, ServerInfo, Servers, ServiceInfo, StatusInfo, UserInfo,
};

use crate::admin::AdminErrorExt;
use crate::server::Controller;
use crate::store::{FirewallRuleRow, ServiceRow, StoreError, UserRow, UserStatus};

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

pub async fn servers(ctl: &Controller) -> Result<Vec<ServerInfo>, StoreError> {
    let hosts = ctl.store.hosts().await?;
    let services = ctl.store.services().await?;
    let users = ctl.store.users().await?;
    // One pass over users: count `all` once, named placements per host.
    let mut everywhere = 0u64;
    let mut named: HashMap<&str, u64> = HashMap::new();
    for u in users.iter().filter(|u| u.status == UserStatus::Active) {
        match &u.servers {
            Servers::All => everywhere += 1,
            Servers::Named(list) => {
                for n in list {
                    *named.entry(n.as_str()).or_default() += 1;
                }
            }
        }
    }
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
            users: everywhere + named.get(h.name.as_str()).copied().unwrap_or_default(),
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
/// Reality private key stays on the controller and its hosts).
pub fn public_options(options: &ServiceOptions) -> String {
    let mut value = serde_json::to_value(options).unwrap_or_default();
    if let Some(v) = value.get_mut("Vless").and_then(|v| v.as_object_mut()) {
        v.remove("private_key");
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
                    let tag = format!("{name}@{}", host.name);
                    links::vless(&cred.secret, host_part(address), port, reality, &tag)
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
    let users = ctl.store.users().await.bad()?;
    Ok(StatusInfo {
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
        hosts_total: hosts.len() as u64,
        hosts_online: ctl.fleet.online_count() as u64,
        services: services.len() as u64,
        users_total: users.len() as u64,
        users_active: users
            .iter()
            .filter(|u| u.status == UserStatus::Active)
            .count() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_strips_ports_and_brackets() {
        assert_eq!(host_part("203.0.113.1"), "203.0.113.1");
        assert_eq!(host_part("203.0.113.1:7443"), "203.0.113.1");
        assert_eq!(host_part("[2001:db8::1]:7443"), "2001:db8::1");
        assert_eq!(host_part("vpn.example.com"), "vpn.example.com");
    }
}
