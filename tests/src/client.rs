//! The client side of the data plane: the real `sslocal` (SOCKS5 front end of a Shadowsocks
//! client, started from the exact `ss://` link the product printed) and a small SOCKS5 HTTP
//! client that fetches from the host server behind the tunnel, plus bulk transfers in both
//! directions (`/stream/N`, `POST /sink`) for throughput measurements.
//!
//! The host server is addressed by the host's own address on the fleet network — the server
//! address of the link — never as 127.0.0.1: the VPN server refuses to relay to its host's
//! loopback.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream as StdTcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hostserver::{self, DRIP_BYTES_PER_SEC, drip_byte};
use crate::proc::{Proc, tail};
use crate::wait::poll_until;

/// How long one payload fetch may take (1–4 MiB over loopback and a bridge).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 64 * 1024;

/// The bar of SPEC §2.5: a limited user's measured rate lies within ±15 % of the limit.
pub const RATE_TOLERANCE: f64 = 0.15;

/// Prints `what`'s measured rate (bit/s) and how far it is from `limit` (bit/s), and asserts
/// it within [`RATE_TOLERANCE`].
#[allow(
    clippy::print_stdout,
    reason = "the measured rate is part of the story's output, as docs quote it"
)]
pub fn assert_rate_near(what: &str, measured: f64, limit: f64) {
    let err = (measured - limit) / limit;
    println!(
        "{what}: {:.2} Mbit/s ({:+.1} % of the {:.0} mbit limit)",
        measured / 1e6,
        err * 100.0,
        limit / 1e6
    );
    assert!(
        err.abs() <= RATE_TOLERANCE,
        "{what}: measured {:.2} Mbit/s, {:+.1} % off the {:.0} mbit limit (bar ±{:.0} %)",
        measured / 1e6,
        err * 100.0,
        limit / 1e6,
        RATE_TOLERANCE * 100.0
    );
}

/// Asserts that `transfers` (each `who`'s on host `k`) all outlasted the story — a transfer that
/// ended early proves nothing about being undisturbed — and then that each arrived intact.
pub fn assert_transfers_intact(transfers: Vec<LongTransfer>, who: &str) {
    for (k, t) in transfers.iter().enumerate() {
        assert!(
            !t.is_finished(),
            "{who}'s download {k} ended before the story did: the drip is too short to tell"
        );
    }
    for (k, t) in transfers.into_iter().enumerate() {
        let report = t.wait();
        assert!(
            report.intact,
            "{who}'s long download on host {k} was disturbed: {report:?}"
        );
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A free UDP port on all addresses (the controller's QUIC port).
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
        .local_addr()?
        .port())
}

/// A running `sslocal` that offers SOCKS5 on `addr` and tunnels through the server of `link`.
#[derive(Debug)]
pub struct SsLocal {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub link: String,
    /// The host of the link's server: where the host server listens, in the server's namespace.
    pub target: String,
}

impl SsLocal {
    /// Starts `sslocal --server-url LINK --local-addr 127.0.0.1:FREE` and waits until it listens.
    pub fn start(link: &str, log: &Path) -> Result<SsLocal> {
        let target = crate::fleet::link_host(link)
            .with_context(|| format!("no server host in link {link}"))?;
        let port = free_tcp_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = std::process::Command::new(crate::env::sslocal());
        cmd.arg("--server-url")
            .arg(link)
            .arg("--local-addr")
            .arg(addr.to_string());
        let mut proc = Proc::spawn("sslocal", cmd, log)?;
        let up = poll_until(Duration::from_secs(10), || {
            !proc.is_running()
                || StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if up.is_none() || !proc.is_running() {
            bail!(
                "sslocal for {link} did not start listening on {addr}:\n{}",
                tail(log, 30)
            );
        }
        proc.note("is listening (an 'unexpected end of file' above was the readiness probe)");
        Ok(SsLocal {
            proc,
            addr,
            link: link.to_string(),
            target,
        })
    }

    /// GETs `path` from the host server behind the tunnel (`TARGET:8000`, on the server side).
    pub fn get(&self, path: &str) -> Result<Vec<u8>> {
        self.get_within(path, FETCH_TIMEOUT)
    }

    /// [`SsLocal::get`] with its own time limit.
    pub fn get_within(&self, path: &str, timeout: Duration) -> Result<Vec<u8>> {
        self.get_from(&self.target, path, timeout)
    }

    /// GETs `path` from port 8000 of `host` as resolved on the server's side, e.g. `127.0.0.1`
    /// to check that the server refuses its own loopback.
    pub fn get_from(&self, host: &str, path: &str, timeout: Duration) -> Result<Vec<u8>> {
        http_get_via_socks(self.addr, host, hostserver::PORT, path, timeout)
    }

    /// A small request (`GET /`) on a new tunnel connection: does this link work right now?
    /// (A refused user may be answered with silence, hence the short limit.)
    pub fn probe(&self) -> Result<()> {
        self.get_within("/", Duration::from_secs(3)).map(|_| ())
    }

    /// `GET /payload` through a new tunnel connection.
    pub fn fetch_payload(&self) -> Result<Vec<u8>> {
        self.get("/payload")
    }

    /// Starts a `/drip/SECS` download through a new tunnel connection.
    pub fn start_drip(&self, secs: u64) -> LongTransfer {
        LongTransfer::start(self.addr, &self.target, secs)
    }

    /// Starts a `/stream/BYTES` download through a new tunnel connection, as fast as the path
    /// allows; it ends when complete, stopped, or after `limit`.
    pub fn start_bulk_download(&self, bytes: usize, limit: Duration) -> BulkDownload {
        BulkDownload::start(self.addr, &self.target, bytes, limit)
    }

    /// `POST /sink` of `bytes` bytes through a new tunnel connection; returns the time from the
    /// first byte sent to the server's answer, which comes only once it has read every byte.
    pub fn upload(&self, bytes: usize, limit: Duration) -> Result<Duration> {
        let proxy = self.addr;
        let rt = runtime()?;
        rt.block_on(async {
            tokio::time::timeout(limit, upload_via_socks(proxy, &self.target, bytes))
                .await
                .with_context(|| format!("upload of {bytes} bytes exceeded {limit:?}"))?
        })
    }
}

async fn upload_via_socks(proxy: SocketAddr, host: &str, bytes: usize) -> Result<Duration> {
    let port = hostserver::PORT;
    let mut s = socks5_connect(proxy, host, port).await?;
    let start = Instant::now();
    let head = format!(
        "POST /sink HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Length: {bytes}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())
        .await
        .context("sending request")?;
    let chunk: Vec<u8> = (0..BULK_CHUNK).map(drip_byte).collect();
    let mut sent = 0;
    while sent < bytes {
        let n = BULK_CHUNK.min(bytes - sent);
        s.write_all(&chunk[..n]).await.context("sending body")?;
        sent += n;
    }
    let (_, mut body) = read_head(&mut s).await?;
    s.read_to_end(&mut body).await.context("reading answer")?;
    let elapsed = start.elapsed();
    let got: usize = String::from_utf8_lossy(&body)
        .trim()
        .parse()
        .with_context(|| format!("sink answered {:?}", String::from_utf8_lossy(&body)))?;
    if got != bytes {
        bail!("sink read {got} of the {bytes} bytes sent");
    }
    Ok(elapsed)
}

/// Blocking wrapper: SOCKS5 CONNECT to `host:port` via `proxy`, HTTP/1.0 GET `path`, return
/// the body after checking status 200 and the full Content-Length arrived.
pub fn http_get_via_socks(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let rt = runtime()?;
    rt.block_on(async {
        tokio::time::timeout(timeout, async {
            let mut s = socks5_connect(proxy, host, port).await?;
            send_get(&mut s, host, port, path).await?;
            let (len, mut body) = read_head(&mut s).await?;
            s.read_to_end(&mut body).await.context("reading body")?;
            if let Some(len) = len
                && body.len() != len
            {
                bail!("truncated body: got {} of {len} bytes", body.len());
            }
            Ok(body)
        })
        .await
        .with_context(|| format!("GET {path} via {proxy} timed out after {timeout:?}"))?
    })
}

/// SOCKS5 (no authentication) CONNECT; `host` may be an IPv4 literal or a name.
pub async fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)
        .await
        .with_context(|| format!("connecting to SOCKS5 proxy {proxy}"))?;
    s.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)
        .await
        .context("socks5 method reply")?;
    if choice != [5, 0] {
        bail!("socks5 proxy {proxy} refused no-auth (reply {choice:?})");
    }
    let mut req = vec![5, 1, 0];
    match host.parse::<Ipv4Addr>() {
        Ok(ip) => {
            req.push(1);
            req.extend(ip.octets());
        }
        Err(_) => {
            let name = u8::try_from(host.len()).context("host name too long for socks5")?;
            req.push(3);
            req.push(name);
            req.extend(host.as_bytes());
        }
    }
    req.extend(port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .with_context(|| format!("socks5 CONNECT {host}:{port}: proxy closed the connection"))?;
    if head[1] != 0 {
        bail!(
            "socks5 CONNECT {host}:{port} failed: reply code {}",
            head[1]
        );
    }
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l).await?;
            usize::from(l[0])
        }
        other => bail!("socks5 reply with unknown address type {other}"),
    };
    let mut rest = vec![0u8; addr_len + 2];
    s.read_exact(&mut rest).await?;
    Ok(s)
}

async fn send_get(s: &mut TcpStream, host: &str, port: u16, path: &str) -> Result<()> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.context("sending request")
}

/// Reads the response head; returns Content-Length and the body bytes read past the head.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> Result<(Option<usize>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            bail!("response head longer than {MAX_HEAD} bytes");
        }
        let n = s.read(&mut chunk).await.context("reading response head")?;
        if n == 0 {
            bail!(
                "connection closed before a response head ({} bytes received): the tunnel \
                 refused or dropped the request",
                buf.len()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("unexpected response status {status:?}");
    }
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    Ok((len, buf[end + 4..].to_vec()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// Size of the writes of an upload.
const BULK_CHUNK: usize = 64 * 1024;

/// What a bulk download saw.
#[derive(Debug, Clone)]
pub struct BulkReport {
    pub received: usize,
    pub expected: usize,
    /// From sending the request to the last byte read (or to the stop).
    pub elapsed: Duration,
    /// The spot-checked bytes had the expected values and, unless stopped, all `expected`
    /// bytes arrived.
    pub intact: bool,
    pub stopped: bool,
    pub error: Option<String>,
}

impl BulkReport {
    /// Goodput over the whole transfer in bit/s (HTTP body bytes only).
    pub fn bits_per_sec(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A `/stream/N` download running on its own thread; sample [`BulkDownload::received`] over a
/// time window to measure a rate, [`BulkDownload::stop`] it, or wait for all of it.
#[derive(Debug)]
pub struct BulkDownload {
    progress: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<BulkReport>,
}

impl BulkDownload {
    /// Starts downloading `/stream/BYTES` from `host` through the SOCKS5 proxy at `proxy`.
    pub fn start(proxy: SocketAddr, host: &str, bytes: usize, limit: Duration) -> BulkDownload {
        let progress = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (progress.clone(), stop.clone());
        let host = host.to_string();
        let handle = std::thread::spawn(move || bulk(proxy, &host, bytes, limit, &seen, &stopped));
        BulkDownload {
            progress,
            stop,
            handle,
        }
    }

    /// Body bytes received so far.
    pub fn received(&self) -> usize {
        self.progress.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Closes the connection at the next read (within a second) and returns the report.
    pub fn stop(self) -> BulkReport {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Waits for the download to end (it ends by itself within its limit).
    pub fn wait(self) -> BulkReport {
        self.handle.join().unwrap_or_else(|_| BulkReport {
            received: 0,
            expected: 0,
            elapsed: Duration::ZERO,
            intact: false,
            stopped: false,
            error: Some("download thread panicked".into()),
        })
    }
}

fn bulk(
    proxy: SocketAddr,
    host: &str,
    expected: usize,
    limit: Duration,
    progress: &AtomicUsize,
    stop: &AtomicBool,
) -> BulkReport {
    let mut start = Instant::now();
    let mut received = 0usize;
    let mut corrupt = false;
    let mut stopped = false;
    let result: Result<()> = (|| {
        let rt = runtime()?;
        rt.block_on(async {
            tokio::time::timeout(limit, async {
                let port = hostserver::PORT;
                let mut s = socks5_connect(proxy, host, port).await?;
                start = Instant::now();
                send_get(&mut s, host, port, &format!("/stream/{expected}")).await?;
                let (len, first) = read_head(&mut s).await?;
                if len != Some(expected) {
                    bail!("stream announced {len:?} bytes, expected {expected}");
                }
                // Spot checks (first and last byte of every read): a per-byte check would cap
                // what an unoptimised test build can measure.
                let check = |bytes: &[u8], received: &mut usize, corrupt: &mut bool| {
                    if let (Some(first), Some(last)) = (bytes.first(), bytes.last()) {
                        *corrupt |= *first != drip_byte(*received)
                            || *last != drip_byte(*received + bytes.len() - 1);
                    }
                    *received += bytes.len();
                    progress.store(*received, Ordering::Relaxed);
                };
                check(&first, &mut received, &mut corrupt);
                let mut buf = vec![0u8; BULK_CHUNK];
                // Bounded: every turn reads bytes, or waits at most a second to look at `stop`.
                while received < expected {
                    if stop.load(Ordering::Relaxed) {
                        stopped = true;
                        break;
                    }
                    let read = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf));
                    match read.await {
                        Ok(n) => match n.context("reading stream body")? {
                            0 => break,
                            n => check(&buf[..n], &mut received, &mut corrupt),
                        },
                        Err(_) => continue,
                    }
                }
                Ok(())
            })
            .await
            .with_context(|| format!("bulk download exceeded {limit:?}"))?
        })
    })();
    let elapsed = start.elapsed();
    let mut error = result.err().map(|e| format!("{e:#}"));
    if error.is_none() && !stopped && received != expected {
        error = Some(format!(
            "connection closed after {received} of {expected} bytes"
        ));
    }
    BulkReport {
        received,
        expected,
        elapsed,
        intact: !corrupt && error.is_none() && (stopped || received == expected),
        stopped,
        error,
    }
}

/// What a long-running transfer saw.
#[derive(Debug, Clone)]
pub struct TransferReport {
    pub received: usize,
    pub expected: usize,
    /// Every byte had the expected value and all `expected` bytes arrived.
    pub intact: bool,
    pub elapsed: Duration,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

/// A slow download (`/drip/SECS`) running on its own thread; see [`LongTransfer::wait`].
#[derive(Debug)]
pub struct LongTransfer {
    progress: Arc<AtomicUsize>,
    handle: JoinHandle<TransferReport>,
}

impl LongTransfer {
    /// Starts downloading `/drip/SECS` from the host server on `host` through the SOCKS5 proxy
    /// at `proxy`.
    pub fn start(proxy: SocketAddr, host: &str, secs: u64) -> LongTransfer {
        let progress = Arc::new(AtomicUsize::new(0));
        let seen = progress.clone();
        let host = host.to_string();
        let handle = std::thread::spawn(move || drip(proxy, &host, secs, &seen));
        LongTransfer { progress, handle }
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.progress.load(Ordering::Relaxed)
    }

    /// Whether the transfer has ended (completed or failed).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the transfer to end (it ends by itself: its own deadline is 3×SECS + 30 s).
    pub fn wait(self) -> TransferReport {
        self.handle.join().unwrap_or_else(|_| TransferReport {
            received: 0,
            expected: 0,
            intact: false,
            elapsed: Duration::ZERO,
            error: Some("transfer thread panicked".into()),
        })
    }
}

fn drip(proxy: SocketAddr, host: &str, secs: u64, progress: &AtomicUsize) -> TransferReport {
    let start = Instant::now();
    let expected = usize::try_from(secs).unwrap_or(0) * DRIP_BYTES_PER_SEC;
    let deadline = Duration::from_secs(secs * 3 + 30);
    let mut received = 0usize;
    let mut corrupt = false;
    let result: Result<()> = (|| {
        let rt = runtime()?;
        rt.block_on(async {
            tokio::time::timeout(deadline, async {
                let mut s = socks5_connect(proxy, host, hostserver::PORT).await?;
                send_get(&mut s, host, hostserver::PORT, &format!("/drip/{secs}")).await?;
                let (len, first) = read_head(&mut s).await?;
                if len != Some(expected) {
                    bail!("drip announced {len:?} bytes, expected {expected}");
                }
                let mut check = |bytes: &[u8]| {
                    for (i, b) in bytes.iter().enumerate() {
                        corrupt |= *b != drip_byte(received + i);
                    }
                    received += bytes.len();
                    progress.store(received, Ordering::Relaxed);
                };
                check(&first);
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = s.read(&mut buf).await.context("reading drip body")?;
                    if n == 0 {
                        break;
                    }
                    check(&buf[..n]);
                }
                Ok(())
            })
            .await
            .with_context(|| format!("drip transfer exceeded {deadline:?}"))?
        })
    })();
    let mut error = result.err().map(|e| format!("{e:#}"));
    if error.is_none() && received != expected {
        error = Some(format!(
            "connection closed after {received} of {expected} bytes"
        ));
    }
    TransferReport {
        received,
        expected,
        intact: !corrupt && received == expected && error.is_none(),
        elapsed: start.elapsed(),
        error,
    }
}

/// Waits until a new connection through `client` fails, at the latest by `deadline`; returns
/// how long that took.
pub fn assert_refused_by(client: &SsLocal, deadline: Instant, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if client.probe().is_err() {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: new connections through {} still work",
            client.link
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_head_parses_status_length_and_leftover() {
        let rt = runtime().unwrap();
        let raw: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhel";
        let (len, rest) = rt.block_on(read_head(&mut &raw[..])).unwrap();
        assert_eq!(len, Some(5));
        assert_eq!(rest, b"hel");
    }

    #[test]
    fn read_head_rejects_errors_and_early_close() {
        let rt = runtime().unwrap();
        let raw: &[u8] = b"HTTP/1.0 404 Not Found\r\n\r\n";
        assert!(rt.block_on(read_head(&mut &raw[..])).is_err());
        let raw: &[u8] = b"";
        assert!(rt.block_on(read_head(&mut &raw[..])).is_err());
    }
}
