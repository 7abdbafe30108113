//! A tiny HTTP/1.1 responder for Prometheus text exposition, used by both daemons' `/metrics`.
//!
//! It answers exactly one thing: `GET /metrics` (and `HEAD`) with the text format
//! (`text/plain; version=0.0.4`); other paths get 404 and other methods 405. Every response
//! carries `Connection: close`, so a connection is one request. A scraper needs no more, and a
//! full HTTP stack would be more surface than this port deserves.
//!
//! The listener may face peers that send nothing, garbage or endless headers, so everything is
//! bounded: the request head (8 KiB by default), the time to read it and to write the answer,
//! and the connections served at once (excess connections wait in the kernel's backlog). Nothing
//! a peer sends can make it panic, allocate without bound or log more than a DEBUG line.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

/// The content type of Prometheus text exposition, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The one path served.
pub const PATH: &str = "/metrics";

/// Something that renders the current metrics as text exposition at scrape time.
///
/// A plain [`prometheus::Registry`] is one. A daemon whose gauges must be computed when scraped
/// (from a database, say) implements this to refresh them and then render its registry.
pub trait Scrape: Send + Sync + 'static {
    /// The exposition text, or an error answered with 500.
    fn render(&self) -> impl Future<Output = Result<String, prometheus::Error>> + Send;
}

impl Scrape for prometheus::Registry {
    async fn render(&self) -> Result<String, prometheus::Error> {
        encode(self)
    }
}

/// Renders `registry` as text exposition.
pub fn encode(registry: &prometheus::Registry) -> Result<String, prometheus::Error> {
    prometheus::TextEncoder::new().encode_to_string(&registry.gather())
}

/// The bounds on what one peer may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request line plus headers read at most; a longer head is answered with 431.
    pub max_head_bytes: usize,
    /// Time allowed to read the head, and separately to write the answer.
    pub io_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            io_timeout: Duration::from_secs(5),
            max_connections: 16,
        }
    }
}

/// Serves `/metrics` on `listener` with the default [`Limits`] until `shutdown` completes.
pub async fn serve<S: Scrape>(
    listener: TcpListener,
    source: S,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, source, Limits::default(), shutdown).await;
}

/// Serves `/metrics` on `listener` within `limits` until `shutdown` completes. Connections in
/// flight at shutdown finish on their own, within `limits.io_timeout` twice.
pub async fn serve_with<S: Scrape>(
    listener: TcpListener,
    source: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let source = Arc::new(source);
    // Taken before `accept`, so at most `max_connections` are being served and the rest wait,
    // unaccepted, in the listen backlog instead of costing a task each.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => accepted,
        };
        let (slot, result) = accepted;
        let Ok(slot) = slot else { break };
        match result {
            Ok((stream, peer)) => {
                let source = source.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &*source, limits).await {
                        debug!(%peer, error = %e, "metrics connection ended");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a request head asks for, decided without IO.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (with a body) or `HEAD /metrics` (without).
    Metrics {
        body: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Decides the answer from the request line alone (headers are read, bounded, and ignored).
fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != PATH {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { body: true },
        "HEAD" => Route::Metrics { body: false },
        _ => Route::MethodNotAllowed,
    }
}

/// Why reading a head stopped short.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The peer closed before a blank line.
    Truncated,
}

async fn read_head(stream: &mut TcpStream, max: usize) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Truncated);
        }
        // Search only where a new terminator can be: the chunk plus three bytes before it.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(from + at + 4);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > max {
            return Ok(Head::TooLarge);
        }
    }
}

async fn answer<S: Scrape>(
    mut stream: TcpStream,
    source: &S,
    limits: Limits,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(
        limits.io_timeout,
        read_head(&mut stream, limits.max_head_bytes),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out"))??;
    let cut_off = matches!(head, Head::TooLarge);
    let response = match head {
        Head::Truncated => return Ok(()),
        Head::TooLarge => response(431, "Request Header Fields Too Large", "", "", true),
        Head::Complete(head) => match route(&head) {
            Route::Metrics { body } => match source.render().await {
                Ok(text) => response(200, "OK", CONTENT_TYPE, &text, body),
                Err(e) => {
                    debug!(error = %e, "rendering metrics failed");
                    response(500, "Internal Server Error", "", "", true)
                }
            },
            Route::NotFound => response(404, "Not Found", "", "", true),
            Route::MethodNotAllowed => response(405, "Method Not Allowed", "", "", true),
            Route::BadRequest => response(400, "Bad Request", "", "", true),
        },
    };
    tokio::time::timeout(limits.io_timeout, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response write timed out"))??;
    if cut_off {
        // Closing with unread bytes makes the kernel send a reset, which may destroy the 431 before
        // the peer reads it: read a bounded amount of what it is still sending first.
        let _ = tokio::time::timeout(LINGER, async {
            let mut sink = [0u8; 4096];
            let mut left = LINGER_BYTES;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
    Ok(())
}

/// How long, and how much, an oversized request is read on after its 431 was sent.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// A complete HTTP/1.1 response. `Content-Length` is the body's even when `with_body` is false
/// (HEAD), as HTTP says.
fn response(code: u16, reason: &str, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let content_type = if content_type.is_empty() {
        "text/plain; charset=utf-8"
    } else {
        content_type
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
