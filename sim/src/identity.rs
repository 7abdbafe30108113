//! Enrolling simulated agents as an operator and a real agent would: `servers add NAME` through
//! the admin API (the operator's context file gives the credentials), then the one-time join
//! string's token and a CSR of a fresh key on the enrollment ALPN, pinning the CA's fingerprint.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use vpn_shared::context::CliContext;
use vpn_shared::join::JoinString;
use vpn_shared::pki;
use vpn_shared::proto::admin::{AdminRequest, AdminResponse};
use vpn_shared::proto::frame::{MAX_FRAME, read_frame, write_frame};
use vpn_shared::proto::{ALPN_ADMIN, EnrollRequest, EnrollResponse};
use vpn_shared::transport;

/// How long one enrollment exchange (connect, request, answer) may take.
const STEP: Duration = Duration::from_secs(20);
/// How long each join token is valid: enrollment follows at once.
const TOKEN_SECS: u64 = 600;

/// One enrolled simulated host: what a real agent keeps in its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimIdentity {
    pub name: String,
    pub host_id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The identities file: the controller's address, its CA and every host, one JSON document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentitiesFile {
    pub controller: String,
    pub ca_pem: String,
    pub hosts: Vec<SimIdentity>,
}

/// Resolves `HOST:PORT`.
pub async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// Adds and enrolls `count` hosts named `{prefix}{index:05}` (from `first`), as the operator
/// of `ctx`. Returns the identities file to save.
pub async fn enroll(
    ctx: &CliContext,
    prefix: &str,
    first: usize,
    count: usize,
) -> anyhow::Result<IdentitiesFile> {
    let admin = Admin::connect(ctx).await?;
    let (endpoint, conn, target) = (&admin.endpoint, &admin.conn, admin.target);
    let mut hosts = Vec::with_capacity(count);
    for i in first..first + count {
        let name = format!("{prefix}{i:05}");
        let req = AdminRequest::ServersAdd {
            name: name.clone(),
            expires_secs: TOKEN_SECS,
        };
        let added = match admin_request(conn, &req).await? {
            AdminResponse::ServerAdded(a) => a,
            AdminResponse::Error { message, .. } => bail!("servers add {name}: {message}"),
            other => bail!("servers add {name}: unexpected answer {other:?}"),
        };
        let join = JoinString::parse(&added.join).context("the join string")?;
        hosts.push(enroll_one(endpoint, target, &name, &join).await?);
    }
    conn.close(0u32.into(), b"done");
    Ok(IdentitiesFile {
        controller: ctx.controller.clone(),
        ca_pem: admin.ca_pem,
        hosts,
    })
}

/// An operator's connection to the controller, from a CLI context.
pub struct Admin {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub target: SocketAddr,
    /// The controller's CA, as the context names it.
    pub ca_pem: String,
}

impl Admin {
    pub async fn connect(ctx: &CliContext) -> anyhow::Result<Admin> {
        let read = |what: &str, p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {what} {}", p.display()))
        };
        let ca_pem = read("ca_cert", &ctx.ca_cert)?;
        let config = transport::client_config(
            &ca_pem,
            &read("admin_cert", &ctx.admin_cert)?,
            &read("admin_key", &ctx.admin_key)?,
            ALPN_ADMIN,
        )?;
        let target = resolve(&ctx.controller).await?;
        let endpoint = transport::client_endpoint(target)?;
        let conn = endpoint
            .connect_with(config, target, transport::SERVER_NAME)?
            .await
            .context("admin connection")?;
        Ok(Admin {
            endpoint,
            conn,
            target,
            ca_pem,
        })
    }

    /// One request, one answer.
    pub async fn request(&self, req: &AdminRequest) -> anyhow::Result<AdminResponse> {
        admin_request(&self.conn, req).await
    }
}

/// What `vpn-agent join` does, at `target` instead of the join string's address (the
/// controller's public address may not be reachable from where the simulator runs).
async fn enroll_one(
    endpoint: &quinn::Endpoint,
    target: SocketAddr,
    name: &str,
    join: &JoinString,
) -> anyhow::Result<SimIdentity> {
    let (key_pem, csr_pem) = pki::generate_csr()?;
    let config = transport::enroll_client_config(&join.ca_sha256)?;
    let exchange = async {
        let conn = endpoint
            .connect_with(config, target, transport::SERVER_NAME)?
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let req = EnrollRequest {
            version: 1,
            token: join.token.clone(),
            csr_pem,
            agent_version: concat!("vpn-agent-sim/", env!("CARGO_PKG_VERSION")).into(),
        };
        write_frame(&mut send, &req).await?;
        send.finish()?;
        let answer = read_frame::<_, EnrollResponse>(&mut recv, MAX_FRAME)
            .await?
            .context("the enrollment stream ended without an answer")?;
        conn.close(0u32.into(), b"done");
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(STEP, exchange)
        .await
        .with_context(|| format!("enrolling {name}: no answer within {STEP:?}"))??;
    match answer {
        EnrollResponse::Accepted {
            host_id, cert_pem, ..
        } => Ok(SimIdentity {
            name: name.into(),
            host_id,
            cert_pem,
            key_pem,
        }),
        EnrollResponse::Refused { reason } => bail!("enrolling {name}: refused: {reason}"),
    }
}

/// One admin request on its own stream, as the CLI sends it (the simulator enrolls with it;
/// tests drive the controller with it).
pub async fn admin_request(
    conn: &quinn::Connection,
    req: &AdminRequest,
) -> anyhow::Result<AdminResponse> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, req).await?;
    send.finish()?;
    read_frame::<_, AdminResponse>(&mut recv, MAX_FRAME)
        .await?
        .context("the admin stream ended without an answer")
}

/// Writes the identities file atomically, mode 0600: it holds every host's private key.
pub fn save_identities(path: &Path, file: &IdentitiesFile) -> anyhow::Result<()> {
    let text = serde_json::to_vec(file)?;
    vpn_shared::fsutil::write_atomic(path, &text, 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads an identities file written by [`save_identities`].
pub fn load_identities(path: &Path) -> anyhow::Result<IdentitiesFile> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}
