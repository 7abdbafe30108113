//! The admin API: one request per bidirectional stream from a `vpn` CLI holding an admin
//! certificate. Mutations go through [`Controller::mutate`], which stores, pushes to online
//! hosts and (unless told not to) waits for their acks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};
use vpn_shared::join::JoinString;
use vpn_shared::model::WireguardOptions;
use vpn_shared::model::{
    Protocol, ProxyKind, ProxyOptions, ServiceOptions, VlessEngine, VlessOptions,
};
use vpn_shared::pki::Identity;
use vpn_shared::proto::admin::*;
use vpn_shared::proto::frame::{FrameError, read_frame, write_frame};
use vpn_shared::proto::{chunk, close};
use vpn_shared::reality;
use vpn_shared::transport::peer_identity;

use crate::enroll::{new_token, token_hash};
use crate::fleet::not_waited;
use crate::quota::OnHold;
use crate::server::{Controller, now};
use crate::store::validate::MAX_SHORT_IDS;
use crate::store::{
    EditUserFields, FirewallRuleRow, HostRow, Mutation, NewService, NewUser, QuotaEditFields,
    QuotaSettings, ServiceRow, StoreError, UserRow, UserStatus,
};
use crate::views;

/// Admin requests are small; larger frames are refused.
const MAX_REQUEST: usize = 1 << 20;
/// Ciphers Outline and the common shadowsocks clients accept with a plain password.
const SS_METHODS: &[&str] = &["chacha20-ietf-poly1305", "aes-256-gcm", "aes-128-gcm"];

type Reply = Result<AdminResponse, AdminError>;

/// A request that failed, with the class the CLI maps onto its exit code.
pub struct AdminError {
    kind: ErrorKind,
    message: String,
}

/// Lifts store results into admin results.
pub trait AdminErrorExt<T> {
    fn bad(self) -> Result<T, AdminError>;
}

impl<T> AdminErrorExt<T> for Result<T, StoreError> {
    fn bad(self) -> Result<T, AdminError> {
        self.map_err(AdminError::from)
    }
}

impl AdminError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::bad(message)
    }

    /// What the operator is told.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn bad(message: impl Into<String>) -> Self {
        AdminError {
            kind: ErrorKind::BadData,
            message: message.into(),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        let kind = match e {
            StoreError::NotFound { .. }
            | StoreError::Duplicate { .. }
            | StoreError::Invalid { .. }
            | StoreError::PortsExhausted { .. }
            | StoreError::Wireguard(_) => ErrorKind::BadData,
            _ => ErrorKind::Internal,
        };
        AdminError {
            kind,
            message: e.to_string(),
        }
    }
}

pub async fn serve(ctl: Arc<Controller>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some(Identity::Admin(admin)) = peer_identity(&conn) else {
        if let Some(more) = ctl
            .metrics
            .refused_quietly("admin_without_admin_certificate")
        {
            warn!(%remote, more_since_last_line = more, "admin ALPN without an admin certificate, refused");
        }
        conn.close(close::REFUSED.into(), b"admin certificate required");
        return;
    };
    // Starts the webhooks (and their periodic certificate check) if no agent did yet.
    crate::webhooks::hub(&ctl);
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            // The CLI closes with code 0 once it has its answers: that is the normal end.
            Err(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == 0u32.into() => {
                debug!(%admin, %remote, "admin connection closed by the client");
                return;
            }
            Err(e) => {
                debug!(%admin, %remote, reason = %e, "admin connection ended");
                return;
            }
        };
        let ctl = ctl.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut in_parts = false;
            let response = match read_frame::<_, AdminRequest>(&mut recv, MAX_REQUEST).await {
                Ok(Some(req)) => {
                    in_parts = chunk::wants_parts(&req);
                    let req = match req {
                        AdminRequest::InChunks(inner) if in_parts => *inner,
                        req => req,
                    };
                    if req == AdminRequest::Subscribe {
                        crate::subscribe::serve(ctl, send, admin.to_string()).await;
                        return;
                    }
                    let what = format!("{req:?}");
                    let timer = ctl.metrics.admin_request(&req);
                    let user = user_named(&req);
                    let reply = handle(&ctl, req).await;
                    timer.done(reply.is_ok());
                    if let (Some(name), Ok(_)) = (user, &reply) {
                        ctl.watch
                            .publish(crate::subscribe::Touched::Users(vec![name]));
                    }
                    match reply {
                        Ok(r) => r,
                        Err(e) => {
                            info!(%admin, request = %truncate(&what), error = %e.message, "admin request failed");
                            AdminResponse::Error {
                                kind: e.kind,
                                message: e.message,
                            }
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    warn!(%admin, error = %e, "malformed admin request");
                    AdminResponse::Error {
                        kind: ErrorKind::BadData,
                        message: format!("malformed request: {e}"),
                    }
                }
            };
            if in_parts {
                send_parts(&mut send, response, &admin).await;
            } else if let Err(FrameError::TooLarge { len, .. }) =
                write_frame(&mut send, &response).await
            {
                // A client older than `InChunks` asked for a list too large for one frame.
                warn!(%admin, len, "admin answer larger than a frame, not sent");
                let refusal = AdminResponse::Error {
                    kind: ErrorKind::Internal,
                    message: format!(
                        "the answer ({len} bytes) is larger than a frame; a newer vpn asks \
                         for it in parts"
                    ),
                };
                let _ = write_frame(&mut send, &refusal).await;
            }
            let _ = send.finish();
        });
    }
}

/// Sends an answer to an `InChunks` request: a list in parts ([`chunk::Parts`]), anything else
/// in one frame. A list entry too large for any frame ends the answer with an `Internal` error
/// after the parts already sent.
async fn send_parts(send: &mut quinn::SendStream, response: AdminResponse, admin: &str) {
    let mut parts = chunk::Parts::new(response);
    let mut sent = 0usize;
    while let Some(next) = parts.next_frame() {
        let bytes = match next {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(%admin, error = %e, parts = sent, "cannot encode an admin answer");
                let _ = write_frame(
                    send,
                    &AdminResponse::Error {
                        kind: ErrorKind::Internal,
                        message: format!("the answer cannot be sent: {e}"),
                    },
                )
                .await;
                return;
            }
        };
        if let Err(e) = send.write_all(&bytes).await {
            debug!(%admin, error = %e, parts = sent, "admin answer not delivered");
            return;
        }
        sent += 1;
    }
    debug!(%admin, parts = sent, "admin answer sent in parts");
}

/// The user a mutation changes, if it changes one: subscribers re-read it.
fn user_named(req: &AdminRequest) -> Option<String> {
    match req {
        AdminRequest::UsersAdd(a) | AdminRequest::UsersAddWith { add: a, .. } => {
            Some(a.name.clone())
        }
        AdminRequest::UsersEdit(e) | AdminRequest::UsersEditWith { edit: e, .. } => {
            Some(e.name.clone())
        }
        AdminRequest::UsersRemove { name, .. }
        | AdminRequest::UsersSuspend { name, .. }
        | AdminRequest::UsersResume { name, .. } => Some(name.clone()),
        _ => None,
    }
}

fn truncate(s: &str) -> &str {
    s.get(..200).unwrap_or(s)
}

async fn handle(ctl: &Controller, req: AdminRequest) -> Reply {
    match req {
        AdminRequest::ServersAdd { name, expires_secs } => {
            servers_add(ctl, name, expires_secs).await
        }
        AdminRequest::ServersList => Ok(AdminResponse::Servers(views::servers(ctl).await?)),
        AdminRequest::ServersShow { name } => {
            let all = views::servers(ctl).await?;
            let found = all.into_iter().find(|s| s.name == name);
            found
                .map(AdminResponse::Server)
                .ok_or_else(|| AdminError::bad(format!("server {name} not found")))
        }
        AdminRequest::ServersRemove { name } => {
            // Under the change lock: a session registering concurrently either sees the host
            // gone or is registered in time to be revoked here.
            let host = {
                let _guard = ctl.fleet.change_lock.lock().await;
                let host = ctl.store.remove_host(&name, now()).await?;
                ctl.fleet.revoke(&host.id);
                host
            };
            info!(host = %host.name, host_id = %host.id, "host removed and revoked");
            Ok(AdminResponse::Applied(Applied {
                summary: format!("server {name} removed; its certificate is revoked"),
                hosts: Vec::new(),
            }))
        }
        AdminRequest::ServicesDeploy(d) => {
            let options = DeployOptions::Shadowsocks {
                method: d.method.clone(),
            };
            services_deploy(ctl, d, options, None).await
        }
        AdminRequest::ServicesDeployWith { deploy, options } => {
            services_deploy(ctl, deploy, options, None).await
        }
        AdminRequest::ServicesDeployPorts {
            deploy,
            options,
            ports,
        } => services_deploy(ctl, deploy, options, Some(ports)).await,
        AdminRequest::ServicesEditPorts {
            edit: e,
            image,
            ports,
        } => {
            let m = ctl.store.edit_service_ports(
                &e.name,
                e.bandwidth,
                e.new_conn_rate,
                image,
                Some(ports),
            );
            let summary = |s: &ServiceRow| format!("service {} updated{}", s.name, range(s));
            mutate(ctl, e.wait, summary, m).await
        }
        AdminRequest::ServersListDetail => Ok(AdminResponse::ServersDetail(
            views::server_details(ctl, None).await?,
        )),
        AdminRequest::ServersShowDetail { name } => views::server_details(ctl, Some(&name))
            .await?
            .into_iter()
            .next()
            .map(AdminResponse::ServerDetail)
            .ok_or_else(|| AdminError::bad(format!("server {name} not found"))),
        AdminRequest::StatusDetail => Ok(AdminResponse::StatusDetail(
            views::status_detail(ctl).await?,
        )),
        AdminRequest::ServicesShowDetail { name } => Ok(AdminResponse::ServiceDetail(
            views::service_detail(ctl, &name).await?,
        )),
        AdminRequest::Doctor => Ok(AdminResponse::Doctor(views::doctor(ctl).await?)),
        AdminRequest::UsersUsage(q) => views::usage(ctl, q).await.map(AdminResponse::Usage),
        AdminRequest::UsersAddWith { add, quota } => users_add(ctl, add, quota).await,
        AdminRequest::UsersEditWith { edit, quota } => users_edit(ctl, edit, quota).await,
        AdminRequest::UsersListDetail => Ok(AdminResponse::UsersDetail(
            views::user_details(ctl, None).await?,
        )),
        AdminRequest::UsersShowDetail { name } => views::user_details(ctl, Some(&name))
            .await?
            .into_iter()
            .next()
            .map(AdminResponse::UserDetail)
            .ok_or_else(|| AdminError::bad(format!("user {name} not found"))),
        AdminRequest::ServicesList => Ok(AdminResponse::Services(views::services(ctl).await?)),
        AdminRequest::ServicesShow { name } => {
            let all = views::services(ctl).await?;
            let found = all.into_iter().find(|s| s.name == name);
            found
                .map(AdminResponse::Service)
                .ok_or_else(|| AdminError::bad(format!("service {name} not found")))
        }
        AdminRequest::ServicesRemove { name, wait } => {
            let summary = format!("service {name} removed");
            mutate(ctl, wait, |_| summary, ctl.store.remove_service(&name)).await
        }
        AdminRequest::ServicesEdit(e) => {
            let summary = format!("service {} updated", e.name);
            let m = ctl
                .store
                .edit_service(&e.name, e.bandwidth, e.new_conn_rate);
            mutate(ctl, e.wait, |_| summary, m).await
        }
        AdminRequest::ServicesEditWith { edit: e, image } => {
            let summary = format!("service {} updated", e.name);
            let m = ctl
                .store
                .edit_service_with(&e.name, e.bandwidth, e.new_conn_rate, image);
            mutate(ctl, e.wait, |_| summary, m).await
        }
        AdminRequest::UsersAdd(u) => users_add(ctl, u, Quota::default()).await,
        AdminRequest::UsersEdit(e) => users_edit(ctl, e, QuotaEdit::default()).await,
        AdminRequest::UsersList => {
            let users = ctl.store.users().await?;
            Ok(AdminResponse::Users(
                users.iter().map(views::user).collect(),
            ))
        }
        AdminRequest::UsersShow { name } => match ctl.store.user(&name).await? {
            Some(d) => Ok(AdminResponse::User(views::user(&d.user))),
            None => Err(AdminError::bad(format!("user {name} not found"))),
        },
        AdminRequest::UsersRemove { name, wait } => {
            let summary = format!("user {name} removed");
            mutate(ctl, wait, |_| summary, ctl.store.remove_user(&name)).await
        }
        AdminRequest::UsersSuspend { name, wait } => {
            let summary = format!("user {name} suspended");
            let m = ctl
                .store
                .set_user_status(&name, UserStatus::Suspended, now());
            mutate(ctl, wait, |_| summary, m).await
        }
        AdminRequest::UsersResume { name, wait } => {
            let summary = format!("user {name} resumed");
            let m = ctl.store.set_user_status(&name, UserStatus::Active, now());
            mutate(ctl, wait, |_| summary, m).await
        }
        AdminRequest::UsersLink {
            name,
            server,
            protocol,
        } => views::links(ctl, &name, server.as_deref(), protocol)
            .await
            .map(AdminResponse::Links),
        AdminRequest::Status => views::status(ctl).await.map(AdminResponse::Status),
        AdminRequest::FirewallBlock {
            target,
            servers,
            wait,
        } => {
            let m = ctl.store.block(&target, &servers, now());
            mutate(ctl, wait, |rules| rules_summary("blocked", rules), m).await
        }
        AdminRequest::FirewallUnblock {
            target,
            servers,
            wait,
        } => firewall_unblock(ctl, &target, &servers, wait).await,
        AdminRequest::InChunks(_) => {
            Err(AdminError::bad("invalid request: InChunks inside InChunks"))
        }
        // Served as a stream before it gets here (`subscribe.rs`).
        AdminRequest::Subscribe => Err(AdminError::bad("invalid request: Subscribe in parts")),
        AdminRequest::FirewallList => {
            let rules = ctl.store.firewall_rules().await?;
            Ok(AdminResponse::Firewall(
                rules.iter().map(views::firewall_rule).collect(),
            ))
        }
    }
}

/// The controller's moment of a `When`.
fn resolve(when: When, now: i64) -> i64 {
    match when {
        When::At(t) => t,
        When::In(secs) => now.saturating_add(secs),
    }
}

fn on_hold(spec: OnHoldSpec, now: i64) -> OnHold {
    OnHold {
        duration: spec.duration,
        timeout_at: spec.timeout.map(|t| resolve(t, now)),
    }
}

/// `user alice added`, with the status when it is not `active` (`(on_hold)`, `(expired)`).
fn user_summary(verb: &str, user: &UserRow) -> String {
    match user.status {
        UserStatus::Active => format!("user {} {verb}", user.name),
        s => format!("user {} {verb} ({s})", user.name),
    }
}

async fn users_add(ctl: &Controller, u: AddUser, quota: Quota) -> Reply {
    let now = now();
    let new = NewUser {
        name: u.name,
        email: u.email,
        note: u.note,
        servers: u.servers,
        protocols: u.protocols,
        bandwidth: u.bandwidth,
        quota: QuotaSettings {
            data_limit: quota.data_limit,
            reset: quota.reset,
            expires_at: quota.expires.map(|w| resolve(w, now)),
            on_hold: quota.on_hold.map(|h| on_hold(h, now)),
        },
    };
    let limited = new.quota != QuotaSettings::default();
    let m = ctl.store.add_user(new, now);
    mutate_quota(ctl, u.wait, limited, |user| user_summary("added", user), m).await
}

async fn users_edit(ctl: &Controller, e: EditUser, quota: QuotaEdit) -> Reply {
    let now = now();
    // The wire cannot say "clear" apart from "keep": an empty text clears the field.
    let clearable = |v: Option<String>| v.map(|v| Some(v).filter(|v| !v.is_empty()));
    let fields = EditUserFields {
        email: clearable(e.email),
        note: clearable(e.note),
        bandwidth: e.bandwidth,
    };
    let quota = QuotaEditFields {
        data_limit: quota.data_limit,
        reset: quota.reset,
        expires_at: quota.expires.map(|e| e.map(|w| resolve(w, now))),
        on_hold: quota.on_hold.map(|h| h.map(|h| on_hold(h, now))),
    };
    let changed = !quota.is_empty();
    let m = ctl.store.edit_user_with(&e.name, fields, quota, now);
    mutate_quota(
        ctl,
        e.wait,
        changed,
        |user| user_summary("updated", user),
        m,
    )
    .await
}

/// `203.0.113.7/32 blocked on fra-1, ams-1` (or `on all servers`).
fn rules_summary(verb: &str, rules: &[FirewallRuleRow]) -> String {
    let target = rules.first().map_or("", |r| r.target.as_str());
    let scopes: Vec<&str> = rules
        .iter()
        .map(|r| r.server.as_deref().unwrap_or("all servers"))
        .collect();
    format!("{target} {verb} on {}", scopes.join(", "))
}

/// Unblocks, then says where the target stays blocked by rules of another scope, so removing
/// the fleet-wide rule does not look like a full unblock while per-server rules remain.
async fn firewall_unblock(ctl: &Controller, target: &str, servers: &Servers, wait: bool) -> Reply {
    let mut normalized = None;
    let m = ctl.store.unblock(target, servers);
    let reply = mutate(
        ctl,
        wait,
        |rules| {
            normalized = rules.first().map(|r| r.target.clone());
            rules_summary("unblocked", rules)
        },
        m,
    )
    .await?;
    let (Some(target), AdminResponse::Applied(mut applied)) = (normalized, reply) else {
        return Err(AdminError::bad("unblock removed no rule"));
    };
    let remaining: Vec<String> = ctl
        .store
        .firewall_rules()
        .await?
        .into_iter()
        .filter(|r| r.target == target)
        .map(|r| r.server.unwrap_or_else(|| "all servers".into()))
        .collect();
    if !remaining.is_empty() {
        applied.summary = format!(
            "{}; still blocked on {} by other rules",
            applied.summary,
            remaining.join(", ")
        );
    }
    Ok(AdminResponse::Applied(applied))
}

async fn servers_add(ctl: &Controller, name: String, expires_secs: u64) -> Reply {
    if expires_secs == 0 || expires_secs > 30 * 86_400 {
        return Err(AdminError::bad(
            "invalid --expires: must be between 1s and 30d",
        ));
    }
    let token = new_token().map_err(|_| AdminError {
        kind: ErrorKind::Internal,
        message: "the system random generator failed".into(),
    })?;
    let expires_at = now() + expires_secs as i64;
    let host = ctl
        .store
        .add_host(&name, &token_hash(&token), expires_at, now())
        .await?;
    let join = JoinString {
        controller: ctl.config.public_address.clone(),
        ca_sha256: ctl.ca.fingerprint(),
        token,
    };
    info!(host = %host.name, host_id = %host.id, expires_at, "join token issued");
    Ok(AdminResponse::ServerAdded(ServerAdded {
        name: host.name,
        host_id: host.id,
        join: join.encode(),
        expires_at,
    }))
}

/// ` (ports FIRST-LAST)` for a service with a range of ports (to open in the hosts' firewalls).
fn range(s: &ServiceRow) -> String {
    match s.port_span {
        0 | 1 => String::new(),
        span => {
            let last = u32::from(s.port) + u32::from(span) - 1;
            format!(" (ports {}-{last})", s.port)
        }
    }
}

/// `ports`: the size of the range (`--ports`); `None` the protocol's default.
async fn services_deploy(
    ctl: &Controller,
    d: DeployService,
    options: DeployOptions,
    ports: Option<u16>,
) -> Reply {
    if d.port == 0 {
        return Err(AdminError::bad("invalid --port: must be 1-65535"));
    }
    let options = service_options(d.protocol, options)?;
    let name = d.name.unwrap_or_else(|| d.protocol.as_str().to_string());
    let new = NewService {
        name,
        protocol: d.protocol,
        port: d.port,
        port_span: ports,
        image: d.image,
        options,
        servers: d.servers,
        bandwidth: d.bandwidth,
        new_conn_rate: d.new_conn_rate,
    };
    mutate(
        ctl,
        d.wait,
        |s| format!("service {} deployed{}", s.name, range(s)),
        ctl.store.deploy_service(new, now()),
    )
    .await
}

/// The stored options of a new service from what the operator chose; makes a VLESS service's
/// Reality keys and short ids.
fn service_options(
    protocol: Protocol,
    options: DeployOptions,
) -> Result<ServiceOptions, AdminError> {
    match (protocol, options) {
        (Protocol::Shadowsocks, DeployOptions::Shadowsocks { method }) => {
            let method = method.unwrap_or_else(|| SS_METHODS[0].to_string());
            if !SS_METHODS.contains(&method.as_str()) {
                return Err(AdminError::bad(format!(
                    "invalid --method {method:?}: expected one of {}",
                    SS_METHODS.join(", ")
                )));
            }
            Ok(ServiceOptions::Shadowsocks { method })
        }
        (Protocol::Vless, DeployOptions::Vless(v)) => {
            let count = usize::from(v.short_ids.unwrap_or(1));
            if !(1..=MAX_SHORT_IDS).contains(&count) {
                return Err(AdminError::bad(format!(
                    "invalid --short-ids {count}: must be 1-{MAX_SHORT_IDS}"
                )));
            }
            let random_failed = |_| AdminError {
                kind: ErrorKind::Internal,
                message: "the system random generator failed".into(),
            };
            let keys = reality::generate_key_pair().map_err(random_failed)?;
            let mut short_ids: Vec<String> = Vec::with_capacity(count);
            while short_ids.len() < count {
                let id = reality::generate_short_id().map_err(random_failed)?;
                if !short_ids.contains(&id) {
                    short_ids.push(id);
                }
            }
            Ok(ServiceOptions::Vless(VlessOptions {
                engine: v.engine.unwrap_or(VlessEngine::Xray),
                sni: v.sni,
                dest: v.dest,
                private_key: keys.private_key.clone(),
                public_key: keys.public_key.clone(),
                short_ids,
            }))
        }
        (Protocol::Proxy, DeployOptions::Proxy { kind }) => {
            Ok(ServiceOptions::Proxy(ProxyOptions {
                kind: kind.unwrap_or(ProxyKind::Both),
            }))
        }
        (Protocol::Wireguard, DeployOptions::Wireguard(w)) => {
            // The interface keys are made per host by the store; the service holds none.
            Ok(ServiceOptions::Wireguard(WireguardOptions {
                subnet: w.subnet,
                ipv6_subnet: w.ipv6_subnet,
                dns: w.dns,
                mtu: w.mtu,
                private_key: String::new(),
            }))
        }
        (protocol, _) => Err(AdminError::bad(format!(
            "invalid options: not those of a {protocol} service"
        ))),
    }
}

/// Stores a change, queues its pushes under the change lock, then waits for acks if asked.
/// `summary` words the stored result for the operator.
async fn mutate<T>(
    ctl: &Controller,
    wait: bool,
    summary: impl FnOnce(&T) -> String,
    change: impl std::future::Future<Output = Result<Mutation<T>, StoreError>>,
) -> Reply {
    mutate_quota(ctl, wait, false, summary, change).await
}

/// [`mutate`], telling every session to send fresh allowances when `allowances` (a quota
/// changed): after the commit and before the pushes, so a user a raised limit brings back
/// reaches its hosts with its new allowance, not cut off again by the old one.
async fn mutate_quota<T>(
    ctl: &Controller,
    wait: bool,
    allowances: bool,
    summary: impl FnOnce(&T) -> String,
    change: impl std::future::Future<Output = Result<Mutation<T>, StoreError>>,
) -> Reply {
    let (pushes, summary) = {
        let _guard = ctl.fleet.change_lock.lock().await;
        let m = change.await?;
        if allowances {
            ctl.allowances_changed();
        }
        ctl.fleet.dispatch(&m.pushes);
        (m.pushes, summary(&m.value))
    };
    let names: HashMap<String, String> = ctl
        .store
        .hosts()
        .await?
        .into_iter()
        .map(|h: HostRow| (h.id, h.name))
        .collect();
    let hosts = if wait {
        let timeout = ctl.config.ack_timeout.max(Duration::from_millis(100));
        ctl.fleet.wait_for_acks(&pushes, &names, timeout).await
    } else {
        not_waited(&pushes, &names)
    };
    info!(%summary, hosts = pushes.len(), "change stored");
    Ok(AdminResponse::Applied(Applied { summary, hosts }))
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    #[test]
    fn a_proxy_deploy_defaults_to_both_and_foreign_options_are_bad_data() {
        let opts = service_options(Protocol::Proxy, DeployOptions::Proxy { kind: None })
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(
            opts,
            ServiceOptions::Proxy(ProxyOptions {
                kind: ProxyKind::Both
            })
        );
        let socks = DeployOptions::Proxy {
            kind: Some(ProxyKind::Socks5),
        };
        let opts = service_options(Protocol::Proxy, socks.clone())
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(
            opts,
            ServiceOptions::Proxy(ProxyOptions {
                kind: ProxyKind::Socks5
            })
        );
        for (protocol, options) in [
            (Protocol::Shadowsocks, socks),
            (Protocol::Proxy, DeployOptions::Shadowsocks { method: None }),
        ] {
            let Err(err) = service_options(protocol, options) else {
                panic!("{protocol} took foreign options");
            };
            assert_eq!(err.kind, ErrorKind::BadData, "exit 65");
            assert!(err.message.contains("invalid options"), "{}", err.message);
        }
    }
}
