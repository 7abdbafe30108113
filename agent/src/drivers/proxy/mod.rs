//! HTTP and SOCKS5 proxy (SPEC §2.4) on shoes: one listener per user, on the user's own port,
//! with the user's own name and password (docs/PROXY.md).
//!
//! shoes holds one user name and password per listener, and reloading its config stops every
//! listener for three seconds, so — as for VLESS on shoes — each user runs in a container of
//! their own (`vpn-<host>-<service>.<port>`): adding, changing or removing a user creates or
//! removes that user's container only, and nobody else notices. A password change is a new
//! config file, so a new spec hash and a recreated container: that user's open connections end.
//!
//! Per-user limits and counters need no engine support: every user has a port, which tc's port
//! matcher shapes and the agent's nftables table counts; [`Driver::read_counters`] says
//! [`DriverError::NoCounters`] and the session reads those ports instead (`ledger::ports`).
//!
//! - [`config`]: the shoes YAML of one user (pure, golden files in `golden/`).

pub mod config;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ProxyKind, ServiceOptions, ServiceSpec,
};
use vpn_shared::proto::ResourceResult;

use super::vless::{LABEL_CONFIG, SHOES_IMAGE, bind_of, config_digest, listening};
use super::{
    Counters, Driver, DriverError, Rendered, RunFile, ServiceCtx, UsersReport, service_resource,
    user_resource,
};
use crate::apply::docker::ContainerSpec;

/// The proxy driver (stateless: shoes has no API; the containers are the state).
#[derive(Debug, Default)]
pub struct Proxy;

/// One user of a proxy service on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyUser<'a> {
    pub name: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub port: u16,
}

/// The service's proxy kind, or why it has none.
pub fn kind_of(service: &ServiceSpec) -> Result<ProxyKind, DriverError> {
    match &service.options {
        ServiceOptions::Proxy(o) => Ok(o.kind),
        _ => Err(DriverError::WrongOptions {
            service: service.name.clone(),
        }),
    }
}

/// The service's users on this host, in name order.
pub fn users_of<'a>(state: &'a DesiredState, service: &'a ServiceSpec) -> Vec<ProxyUser<'a>> {
    state
        .users_of(&service.name)
        .filter_map(|(user, cred)| match cred {
            Credential::Proxy {
                port,
                username,
                password,
                ..
            } => Some(ProxyUser {
                name: &user.name,
                username,
                password,
                port: *port,
            }),
            _ => None,
        })
        .collect()
}

impl Driver for Proxy {
    fn protocol(&self) -> Protocol {
        Protocol::Proxy
    }

    fn render(
        &self,
        service: &ServiceSpec,
        state: &DesiredState,
        ctx: &ServiceCtx<'_>,
    ) -> Result<Vec<Rendered>, DriverError> {
        let kind = kind_of(service)?;
        render_users(service, kind, &users_of(state, service), ctx)
    }

    fn apply_users<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        _ctx: &'a ServiceCtx<'a>,
        ready_within: Duration,
    ) -> BoxFuture<'a, UsersReport> {
        Box::pin(
            async move { check_listeners(service, &users_of(state, service), ready_within).await },
        )
    }

    fn read_counters<'a>(
        &'a self,
        _state: &'a DesiredState,
        service: &'a ServiceSpec,
        _ctx: &'a ServiceCtx<'a>,
    ) -> BoxFuture<'a, Result<Counters, DriverError>> {
        // shoes keeps no per-user counters; the session reads its users' ports from nftables.
        Box::pin(async move {
            Err(DriverError::NoCounters {
                service: service.name.clone(),
            })
        })
    }
}

/// One container per user: `shoes --no-reload --threads 1 <run dir>/user-<port>.yaml`.
fn render_users(
    service: &ServiceSpec,
    kind: ProxyKind,
    users: &[ProxyUser<'_>],
    ctx: &ServiceCtx<'_>,
) -> Result<Vec<Rendered>, DriverError> {
    let bind = bind_of(ctx)?;
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let user = config::ProxyUser {
            username: u.username,
            password: u.password,
            port: u.port,
        };
        let text = config::render(kind, &user, "0.0.0.0").map_err(|e| DriverError::Invalid {
            service: service.name.clone(),
            field: "shoes config",
            reason: e.to_string(),
        })?;
        let file = format!("user-{}.yaml", u.port);
        let path = ctx.run_dir.join(&file).display().to_string();
        let spec = ContainerSpec {
            name: format!("{}.{}", ctx.container, u.port),
            image: service.image.clone().unwrap_or_else(|| SHOES_IMAGE.into()),
            // The config never changes under a running container (a change is a new one), and
            // one thread serves one user.
            cmd: vec![
                "shoes".into(),
                "--no-reload".into(),
                "--threads".into(),
                "1".into(),
                path,
            ],
            env: Vec::new(),
            binds: vec![bind.clone()],
            network_mode: ctx.network_mode.to_owned(),
            labels: BTreeMap::from([
                ("vpn-fleet.service".into(), service.name.clone()),
                ("vpn-fleet.protocol".into(), "proxy".into()),
                ("vpn-fleet.engine".into(), "shoes".into()),
                ("vpn-fleet.proxy-kind".into(), kind.as_str().into()),
                ("vpn-fleet.user".into(), u.name.to_owned()),
                (LABEL_CONFIG.into(), config_digest(text.as_bytes())),
            ]),
            cap_add: Vec::new(),
            devices: Vec::new(),
        };
        out.push(Rendered {
            spec,
            files: vec![RunFile {
                name: file,
                contents: text.into_bytes(),
            }],
            user: Some(u.name.to_owned()),
        });
    }
    Ok(out)
}

/// A user is served when their port accepts connections; the applier has already created (or
/// kept) each user's container and reports the ones that failed.
async fn check_listeners(
    service: &ServiceSpec,
    users: &[ProxyUser<'_>],
    ready_within: Duration,
) -> UsersReport {
    let deadline = tokio::time::Instant::now() + ready_within;
    let mut results = Vec::with_capacity(users.len() + 1);
    for u in users {
        let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u.port));
        let resource = user_resource(u.name, &service.name);
        results.push(match listening(addr, deadline).await {
            Ok(()) => ResourceResult::ok(resource),
            Err(e) => ResourceResult::error(
                resource,
                format!("port {} is not accepting connections: {e}", u.port),
            ),
        });
    }
    results.push(ResourceResult::ok(service_resource(&service.name)));
    UsersReport {
        results,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
