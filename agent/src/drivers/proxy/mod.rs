//! HTTP and SOCKS5 proxy (SPEC §2.4) on shoes: one listener per user, on the user's own port,
//! with the user's own name and password (docs/PROXY.md).
//!
//! shoes holds one user name and password per listener, and reloading its config stops every
//! listener for three seconds, so — as for VLESS on shoes — each user runs in a container of
//! their own ([`super::shoes_user`]): adding, changing or removing a user creates or removes
//! that user's container only, and nobody else notices. A password change is a new
//! config file, so a new spec hash and a recreated container: that user's open connections end.
//!
//! Per-user limits and counters need no engine support: every user has a port, which tc's port
//! matcher shapes and the agent's nftables table counts; [`Driver::read_counters`] says
//! [`DriverError::NoCounters`] and the session reads those ports instead (`ledger::ports`).
//!
//! - [`config`]: the shoes YAML of one user (pure, golden files in `golden/`).

pub mod config;

use std::time::Duration;

use futures_util::future::BoxFuture;
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ProxyKind, ServiceOptions, ServiceSpec,
};

use super::{Counters, Driver, DriverError, Rendered, ServiceCtx, UsersReport, shoes_user};

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
        Box::pin(async move {
            let users = users_of(state, service);
            let ports: Vec<(&str, u16)> = users.iter().map(|u| (u.name, u.port)).collect();
            shoes_user::check_ports(service, &ports, ready_within).await
        })
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

/// One container per user (`shoes_user`), each with that user's listener of `kind`.
fn render_users(
    service: &ServiceSpec,
    kind: ProxyKind,
    users: &[ProxyUser<'_>],
    ctx: &ServiceCtx<'_>,
) -> Result<Vec<Rendered>, DriverError> {
    let mut configs = Vec::with_capacity(users.len());
    for u in users {
        let user = config::ProxyUser {
            username: u.username,
            password: u.password,
            port: u.port,
        };
        let config = config::render(kind, &user, "0.0.0.0").map_err(|e| DriverError::Invalid {
            service: service.name.clone(),
            field: "shoes config",
            reason: e.to_string(),
        })?;
        configs.push(shoes_user::UserConfig {
            name: u.name,
            port: u.port,
            config,
        });
    }
    let labels = [
        ("vpn-fleet.protocol", "proxy"),
        ("vpn-fleet.proxy-kind", kind.as_str()),
    ];
    shoes_user::render(service, ctx, &labels, configs)
}

#[cfg(test)]
mod tests;
