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

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::future::BoxFuture;
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, VlessEngine, VlessOptions,
};
use vpn_shared::proto::ResourceResult;

use super::{
    Counters, Driver, DriverError, Rendered, RunFile, ServiceCtx, UsersReport, service_resource,
    user_resource,
};
use crate::apply::docker::ContainerSpec;

/// Image of the shoes engine when the service names none; built by `deploy/images/shoes`.
pub const SHOES_IMAGE: &str = "vpn-fleet/shoes:local";
/// Label with a digest of what an engine reads only at start.
pub const LABEL_CONFIG: &str = "vpn-fleet.config-sha256";

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

/// Docker's bind syntax splits on `:`.
pub(crate) fn bind_of(ctx: &ServiceCtx<'_>) -> Result<String, DriverError> {
    let dir = ctx.run_dir.display().to_string();
    if dir.contains(':') {
        return Err(DriverError::BadPath(ctx.run_dir.to_owned()));
    }
    Ok(format!("{dir}:{dir}"))
}

/// Hex SHA-256 (first 8 bytes) of what an engine reads at start.
pub(crate) fn config_digest(contents: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, contents);
    hex::encode(&d.as_ref()[..8])
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
                VlessEngine::Shoes => check_shoes(service, &users, ready_within).await,
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

/// One container per user: `shoes --no-reload <run dir>/user-<port>.yaml` on the user's port.
fn render_shoes(
    service: &ServiceSpec,
    options: &VlessOptions,
    users: &[VlessUser<'_>],
    ctx: &ServiceCtx<'_>,
) -> Result<Vec<Rendered>, DriverError> {
    let bind = bind_of(ctx)?;
    let reality = shoes::RealityServer {
        private_key: &options.private_key,
        short_ids: &options.short_ids,
        sni: &options.sni,
        dest: &options.dest,
    };
    let mut out = Vec::with_capacity(users.len());
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
        let file = format!("user-{}.yaml", u.port);
        let path = ctx.run_dir.join(&file).display().to_string();
        let spec = ContainerSpec {
            name: format!("{}.{}", ctx.container, u.port),
            image: service.image.clone().unwrap_or_else(|| SHOES_IMAGE.into()),
            // shoes watches its config and restarts every listener on a change; ours never
            // changes under a running container (a change is a new container).
            // One thread: a process serves one user (9 MiB instead of one thread per core).
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
                ("vpn-fleet.protocol".into(), "vless".into()),
                ("vpn-fleet.engine".into(), "shoes".into()),
                ("vpn-fleet.user".into(), u.name.to_owned()),
                (LABEL_CONFIG.into(), config_digest(config.as_bytes())),
            ]),
            cap_add: Vec::new(),
            devices: Vec::new(),
        };
        out.push(Rendered {
            spec,
            files: vec![RunFile {
                name: file,
                contents: config.into_bytes(),
            }],
            user: Some(u.name.to_owned()),
        });
    }
    Ok(out)
}

/// shoes has no API: a user is served when their port accepts connections. The applier has
/// already created (or kept) each user's container; users whose container failed are reported
/// by the applier instead of here.
async fn check_shoes(
    service: &ServiceSpec,
    users: &[VlessUser<'_>],
    ready_within: Duration,
) -> UsersReport {
    let deadline = tokio::time::Instant::now() + ready_within;
    let mut results = Vec::with_capacity(users.len() + 1);
    for u in users {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, u.port));
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

/// Connects to `addr` until it accepts or `deadline` passes (then the last error).
pub(crate) async fn listening(
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> std::io::Result<()> {
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        let err = match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests;
