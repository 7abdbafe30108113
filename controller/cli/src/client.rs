//! The admin client: one mTLS QUIC connection to the controller, one bidirectional stream per
//! request (write one [`AdminRequest`] frame, finish, read one [`AdminResponse`] frame, or the
//! parts of a list answer asked for in chunks).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vpn_shared::context::CliContext;
use vpn_shared::proto::admin::{AdminRequest, AdminResponse};
use vpn_shared::proto::{self, chunk, frame};
use vpn_shared::transport;

use crate::error::CliError;

/// How long resolving the address plus the QUIC/TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Times [`Client::close`] lets the connection's driver run so the close frame leaves.
const CLOSE_YIELDS: usize = 8;

pub struct Client {
    /// Kept so the socket lives until `close` has sent the close frame.
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// The address as the operator wrote it, for error messages.
    addr: String,
}

impl Client {
    /// Reads the credentials named by the context and connects to its controller.
    pub async fn connect(ctx: &CliContext, ctx_path: &Path) -> Result<Client, CliError> {
        let ca = read_pem(ctx_path, "ca_cert", &ctx.ca_cert)?;
        let cert = read_pem(ctx_path, "admin_cert", &ctx.admin_cert)?;
        let key = read_pem(ctx_path, "admin_key", &ctx.admin_key)?;
        let config =
            transport::client_config(&ca, &cert, &key, proto::ALPN_ADMIN).map_err(|e| {
                CliError::Config(format!(
                    "invalid admin credentials in {}: {e}",
                    ctx_path.display()
                ))
            })?;
        let addr = ctx.controller.clone();
        if !has_port(&addr) {
            return Err(CliError::Config(format!(
                "invalid controller address `{addr}` in {}: expected HOST:PORT",
                ctx_path.display()
            )));
        }
        let dial = async {
            let target = resolve(&addr).await?;
            let endpoint = transport::client_endpoint(target).map_err(|e| e.to_string())?;
            let connecting = endpoint
                .connect_with(config, target, transport::SERVER_NAME)
                .map_err(|e| e.to_string())?;
            let conn = connecting.await.map_err(|e| e.to_string())?;
            Ok::<_, String>((endpoint, conn))
        };
        let (endpoint, conn) = match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(reason)) => return Err(CliError::Unavailable { addr, reason }),
            Err(_) => {
                let reason = format!("no answer within {}s", CONNECT_TIMEOUT.as_secs());
                return Err(CliError::Unavailable { addr, reason });
            }
        };
        tracing::debug!(controller = %addr, remote = %conn.remote_address(), "connected");
        Ok(Client {
            endpoint,
            conn,
            addr,
        })
    }

    /// Sends one request on a fresh stream and reads its response: one frame, or, for a list
    /// asked [`AdminRequest::InChunks`], the `More` parts and the last part joined into one
    /// answer ([`chunk`]).
    pub async fn request(&self, req: &AdminRequest) -> Result<AdminResponse, CliError> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| self.lost(e))?;
        frame::write_frame(&mut send, req)
            .await
            .map_err(|e| self.lost(e))?;
        send.finish().map_err(|e| self.lost(e))?;
        let mut joined: Option<AdminResponse> = None;
        let mut parts = 0usize;
        loop {
            let answer: Result<Option<AdminResponse>, _> =
                frame::read_frame(&mut recv, frame::MAX_FRAME).await;
            let (more, part) = match answer {
                Ok(Some(AdminResponse::More(part))) => (true, *part),
                Ok(Some(last)) => (false, last),
                Ok(None) if parts == 0 => {
                    return Err(self.broken("controller closed the stream without an answer"));
                }
                Ok(None) => {
                    let why = format!("controller ended the answer after {parts} parts");
                    return Err(self.broken(why));
                }
                Err(e) => return Err(self.broken(e)),
            };
            parts += 1;
            // An error after parts (the controller could not encode the rest) is the answer.
            if matches!(part, AdminResponse::Error { .. }) && !more {
                return Ok(part);
            }
            match &mut joined {
                None => joined = Some(part),
                Some(acc) => {
                    chunk::join(acc, part).map_err(|e| CliError::Protocol(e.to_string()))?
                }
            }
            if !more {
                tracing::debug!(parts, "answer received");
                return joined.ok_or_else(|| CliError::Protocol("empty answer".into()));
            }
        }
    }

    /// Opens the fleet subscription (`vpn tui`): the stream its messages arrive on.
    pub async fn subscribe(&self) -> Result<quinn::RecvStream, CliError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(|e| self.lost(e))?;
        frame::write_frame(&mut send, &AdminRequest::Subscribe)
            .await
            .map_err(|e| self.lost(e))?;
        send.finish().map_err(|e| self.lost(e))?;
        Ok(recv)
    }

    /// Closes the connection politely (code 0, "done"), so the controller frees it at once
    /// instead of after an idle timeout, and returns as soon as the close has left.
    ///
    /// The CONNECTION_CLOSE frame is sent by the connection's driver, a task of this (single
    /// threaded) runtime: yielding lets it run and hand the frame to the socket. The CLI does not
    /// wait out QUIC's draining period after that (three probe timeouts, about 90 ms on
    /// loopback, which every command used to spend after printing its answer, SPEC §3): the period
    /// only absorbs the peer's stray packets, and the process closing its socket does the same
    /// (the controller sees `ApplicationClosed`, see `admin.rs`).
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        for _ in 0..CLOSE_YIELDS {
            tokio::task::yield_now().await;
        }
        drop(self.endpoint);
    }

    fn lost(&self, reason: impl std::fmt::Display) -> CliError {
        CliError::Unavailable {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// A failed read is the network's fault when the connection is gone, else the answer's.
    fn broken(&self, reason: impl std::fmt::Display) -> CliError {
        match self.conn.close_reason() {
            Some(closed) => self.lost(closed),
            None => CliError::Protocol(reason.to_string()),
        }
    }
}

/// `HOST:PORT` or `[V6]:PORT` with a numeric port; resolving checks the rest.
fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| "the name resolves to no address".to_string())
}

fn read_pem(ctx_path: &Path, field: &str, path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::Config(format!(
            "cannot read {field} {} (named in {}): {e}",
            path.display(),
            ctx_path.display()
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests;
