//! VLESS + Reality (SPEC §2.4): one protocol, two engines, chosen per service.
//!
//! - [`xray`]: Xray-core, the production engine: one container serves every user on the
//!   service port; users are added and removed through its gRPC API without a restart.
//! - [`shoes`]: shoes, the engine the tests use for real Reality handshakes: one shoes listener
//!   holds one user, and reloading a config stops every listener, so each user runs in a
//!   container of their own on their own port (adding or removing a user touches only theirs).
//!
//! Both read the service's Reality keys, SNI, dest and short ids from [`VlessOptions`], and the
//! users' ids from their [`Credential::Vless`].

pub mod shoes;
pub mod xray;

use std::time::Duration;

use futures_util::future::BoxFuture;
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, VlessEngine, VlessOptions,
};
use vpn_shared::proto::ResourceResult;

use super::{
    Counters, Driver, DriverError, Rendered, ServiceCtx, UsersReport, service_resource, shoes_user,
    user_resource,
};

/// The VLESS driver.
#[derive(Debug, Default)]
pub struct Vless {
    xray: xray::Engines,
}

impl Vless {
    pub const fn new() -> Vless {
        Vless {
            xray: xray::Engines::new(),
        }
    }
}

/// One user of a VLESS service on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlessUser<'a> {
    pub name: &'a str,
    /// The user's stable id: Xray's `email`, which Xray compares without case (names may
    /// differ only in case) and which a rename leaves alone.
    pub id: &'a str,
    pub uuid: &'a str,
    /// The port the user's client dials (their own on shoes, the service's on Xray).
    pub port: u16,
    /// Whether tc shapes this user (their own limit, or the service's cap): only then does
    /// Xray need the user's traffic on a marked outbound.
    pub shaped: bool,
}

/// The service's VLESS options, or why it has none.
pub fn options_of(service: &ServiceSpec) -> Result<&VlessOptions, DriverError> {
    match &service.options {
        ServiceOptions::Vless(o) => Ok(o),
        _ => Err(DriverError::WrongOptions {
            service: service.name.clone(),
        }),
    }
}

/// The service's users on this host, in name order.
pub fn users_of<'a>(state: &'a DesiredState, service: &'a ServiceSpec) -> Vec<VlessUser<'a>> {
    let capped = !service.bandwidth.is_unlimited();
    state
        .users_of(&service.name)
        .filter_map(|(user, cred)| match cred {
            Credential::Vless { uuid, port, .. } => Some(VlessUser {
                name: &user.name,
                id: &user.id,
                uuid,
                port: *port,
                shaped: capped || !user.bandwidth.is_unlimited(),
            }),
            _ => None,
        })
        .collect()
}

impl Driver for Vless {
    fn protocol(&self) -> Protocol {
        Protocol::Vless
    }

    fn render(
        &self,
        service: &ServiceSpec,
        state: &DesiredState,
        ctx: &ServiceCtx<'_>,
    ) -> Result<Vec<Rendered>, DriverError> {
        let options = options_of(service)?;
        let users = users_of(state, service);
        match options.engine {
            VlessEngine::Xray => xray::render(service, options, &users, ctx).map(|r| vec![r]),
            VlessEngine::Shoes => render_shoes(service, options, &users, ctx),
        }
    }

    fn apply_users<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
        ready_within: Duration,
    ) -> BoxFuture<'a, UsersReport> {
        Box::pin(async move {
            let options = match options_of(service) {
                Ok(o) => o,
                Err(e) => return failed(service, &users_of(state, service), &e.to_string()),
            };
            let users = users_of(state, service);
            match options.engine {
                VlessEngine::Xray => {
                    self.xray
                        .apply_users(service, &users, ctx, ready_within)
                        .await
                }
                VlessEngine::Shoes => {
                    let ports: Vec<(&str, u16)> = users.iter().map(|u| (u.name, u.port)).collect();
                    shoes_user::check_ports(service, &ports, ready_within).await
                }
            }
        })
    }

    fn read_counters<'a>(
        &'a self,
        state: &'a DesiredState,
        service: &'a ServiceSpec,
        ctx: &'a ServiceCtx<'a>,
    ) -> BoxFuture<'a, Result<Counters, DriverError>> {
        Box::pin(async move {
            let options = options_of(service)?;
            match options.engine {
                VlessEngine::Xray => {
                    let users = users_of(state, service);
                    xray::read_counters(service, &users, ctx.run_dir).await
                }
                // shoes keeps no per-user counters; its users have ports of their own, which
                // the agent's nftables table counts (`firewall::counters`).
                VlessEngine::Shoes => Err(DriverError::Engine {
                    service: service.name.clone(),
                    message: "shoes keeps no counters; its users' ports are counted by nftables"
                        .into(),
                }),
            }
        })
    }
}

/// Every user of a service failed for one reason, and the service with them.
fn failed(service: &ServiceSpec, users: &[VlessUser<'_>], msg: &str) -> UsersReport {
    let mut results = vec![ResourceResult::error(service_resource(&service.name), msg)];
    for u in users {
        let user_msg = format!("service {} not ready: {msg}", service.name);
        results.push(ResourceResult::error(
            user_resource(u.name, &service.name),
            user_msg,
        ));
    }
    UsersReport {
        results,
        ..Default::default()
    }
}

/// One container per user (`shoes_user`), each with that user's Reality listener.
fn render_shoes(
    service: &ServiceSpec,
    options: &VlessOptions,
    users: &[VlessUser<'_>],
    ctx: &ServiceCtx<'_>,
) -> Result<Vec<Rendered>, DriverError> {
    let reality = shoes::RealityServer {
        private_key: &options.private_key,
        short_ids: &options.short_ids,
        sni: &options.sni,
        dest: &options.dest,
    };
    let mut configs = Vec::with_capacity(users.len());
    for u in users {
        let user = shoes::ShoesUser {
            email: u.name,
            uuid: u.uuid,
            port: u.port,
        };
        let config = shoes::render_config(&reality, &[user], "0.0.0.0").map_err(|e| {
            DriverError::Invalid {
                service: service.name.clone(),
                field: "shoes config",
                reason: e.to_string(),
            }
        })?;
        configs.push(shoes_user::UserConfig {
            name: u.name,
            port: u.port,
            config,
        });
    }
    shoes_user::render(service, ctx, &[("vpn-fleet.protocol", "vless")], configs)
}

#[cfg(test)]
mod tests;
