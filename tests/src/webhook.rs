//! A webhook receiver on loopback: what the controller POSTs, with its signature checked.
//!
//! One thread accepts HTTP/1.1 requests on `127.0.0.1:<random>`, answers `204` (or sleeps
//! first, to play a slow receiver) and keeps every request: the event header, the JSON body
//! and whether `X-Vpn-Signature` is `sha256=<hex HMAC-SHA256(secret, body)>` for the secret the
//! test configured. Written here rather than borrowed so the test, not the product, decides what
//! a valid signature is.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Vpn-Event`, if sent.
    pub event_header: Option<String>,
    pub body: serde_json::Value,
    /// Whether the signature header matched the body for the receiver's secret.
    pub signature_ok: bool,
    pub raw_signature: Option<String>,
}

impl Delivery {
    /// The `event` field of the body.
    pub fn event(&self) -> &str {
        self.body
            .get("event")
            .and_then(|e| e.as_str())
            .unwrap_or("")
    }
}

struct Shared {
    deliveries: Mutex<Vec<Delivery>>,
    /// Requests seen, including ones answered with an error or never answered.
    attempts: AtomicU64,
    /// Milliseconds to sleep before answering.
    delay_ms: AtomicU64,
    /// Answer `500` instead of `204`.
    failing: AtomicBool,
    stop: AtomicBool,
}

/// See the module docs. Stops on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    secret: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver that checks signatures made with `secret`.
    pub fn start(secret: &str) -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the webhook receiver")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            deliveries: Mutex::new(Vec::new()),
            attempts: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let (s, key) = (shared.clone(), secret.to_owned());
        let thread = std::thread::spawn(move || accept_loop(listener, s, key));
        Ok(Receiver {
            addr,
            secret: secret.to_owned(),
            shared,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Every request answered so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests received (answered or not).
    pub fn attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// Sleep this long before answering each request (a slow receiver).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer 500 to every request (a broken receiver) or 204 again.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, secret: String) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (s, k) = (shared.clone(), secret.clone());
                // One thread per request, so a slow answer does not hold back the next one.
                std::thread::spawn(move || {
                    let _ = serve(stream, &s, &k);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared, secret: &str) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("POST ") {
        bail!("not a POST: {line:?}");
    }
    let (mut length, mut event, mut signature) = (0usize, None, None);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().context("content-length")?,
            "x-vpn-event" => event = Some(value),
            "x-vpn-signature" => signature = Some(value),
            _ => {}
        }
    }
    if length > 1 << 20 {
        bail!("body of {length} bytes");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let failing = shared.failing.load(Ordering::SeqCst);
    let expected = format!(
        "sha256={}",
        hex_encode(ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            &body
        ))
    );
    if !failing {
        let parsed = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        shared
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Delivery {
                event_header: event,
                body: parsed,
                signature_ok: signature.as_deref() == Some(expected.as_str()),
                raw_signature: signature,
            });
    }
    let status = if failing {
        "500 Internal Server Error"
    } else {
        "204 No Content"
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    out.flush()?;
    Ok(())
}

fn hex_encode(tag: ring::hmac::Tag) -> String {
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
