//! One shoes process per user, each in a container of its own: what the VLESS-on-shoes and the
//! proxy drivers share.
//!
//! shoes holds one user per listener, and reloading a changed config stops every listener for
//! three seconds, so a service on shoes is a container per user
//! (`vpn-<host>-<service>.<port>`) running `shoes --no-reload --threads 1 <run dir>/user-<port>.yaml`:
//! adding or removing a user creates or removes that user's container only. The config is read
//! only at start, so its digest is a label (a changed config is a new spec hash, a new
//! container). shoes has no API: a user is served when their port accepts connections.
//!
//! The drivers render each user's config (`vless::shoes`, `proxy::config`) and name their
//! protocol's labels; [`render`] makes the containers and [`check_ports`] the users' report.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use vpn_shared::model::ServiceSpec;
use vpn_shared::proto::ResourceResult;

use super::{
    DriverError, LABEL_CONFIG, Rendered, RunFile, ServiceCtx, UsersReport, bind_of, config_digest,
    service_resource, user_resource,
};
use crate::apply::docker::ContainerSpec;

/// Image of the shoes engine when the service names none; built by `deploy/images/shoes`.
pub const SHOES_IMAGE: &str = "vpn-fleet/shoes:local";

/// One user's listener: who, on which port, and the shoes YAML that serves them alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig<'a> {
    pub name: &'a str,
    pub port: u16,
    pub config: String,
}

/// A container per user. `labels` are the protocol's own (`vpn-fleet.protocol` and any
/// other); the service, engine, user and config digest labels are added here.
pub fn render(
    service: &ServiceSpec,
    ctx: &ServiceCtx<'_>,
    labels: &[(&str, &str)],
    users: Vec<UserConfig<'_>>,
) -> Result<Vec<Rendered>, DriverError> {
    let bind = bind_of(ctx)?;
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let file = format!("user-{}.yaml", u.port);
        let path = ctx.run_dir.join(&file).display().to_string();
        let mut all: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.extend([
            ("vpn-fleet.service".into(), service.name.clone()),
            ("vpn-fleet.engine".into(), "shoes".into()),
            ("vpn-fleet.user".into(), u.name.to_owned()),
            (LABEL_CONFIG.into(), config_digest(u.config.as_bytes())),
        ]);
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
            labels: all,
            cap_add: Vec::new(),
            devices: Vec::new(),
        };
        out.push(Rendered {
            spec,
            files: vec![RunFile {
                name: file,
                contents: u.config.into_bytes(),
            }],
            user: Some(u.name.to_owned()),
        });
    }
    Ok(out)
}

/// Each `(user, port)` is served when its port accepts connections (waiting up to
/// `ready_within` for containers just started). The applier has already created (or kept) each
/// user's container; users whose container failed are reported by the applier instead.
pub async fn check_ports(
    service: &ServiceSpec,
    users: &[(&str, u16)],
    ready_within: Duration,
) -> UsersReport {
    let deadline = tokio::time::Instant::now() + ready_within;
    let mut results = Vec::with_capacity(users.len() + 1);
    for &(name, port) in users {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let resource = user_resource(name, &service.name);
        results.push(match listening(addr, deadline).await {
            Ok(()) => ResourceResult::ok(resource),
            Err(e) => ResourceResult::error(
                resource,
                format!("port {port} is not accepting connections: {e}"),
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
async fn listening(addr: SocketAddr, deadline: tokio::time::Instant) -> std::io::Result<()> {
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
