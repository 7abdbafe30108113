//! Webhooks (SPEC §2.8): host events POSTed as signed JSON to the receivers of `[[webhooks]]`.
//!
//! Emitting never waits: each webhook has a bounded queue ([`QUEUE`]) filled with `try_send`
//! (a full queue drops the event and counts `webhook_dropped`) and one worker task that
//! delivers in order, each attempt bounded by [`REQUEST_TIMEOUT`], retried with exponential
//! backoff up to the webhook's `attempts`. So a receiver that is down or slow delays only its
//! own queue, never a mutation or an agent session.
//!
//! Body: `{"event", "at", "delivery", "host": {"name", "id"}, "detail": {…}}`; headers
//! `X-Vpn-Event`, `X-Vpn-Delivery` (the same on every retry) and
//! `X-Vpn-Signature: sha256=<hex HMAC-SHA256(secret, body)>`. The secret and the URL's path and
//! query (often a credential too) are never logged.
//!
//! The hub lives in [`crate::fleet::Fleet`] and starts on first use ([`hub`]), with a periodic
//! check for certificates near expiry of every enrolled host, online or not.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::WebhookConfig;
use crate::server::{Controller, now};

/// Events queued per webhook; more are dropped (and counted) until the worker catches up.
pub const QUEUE: usize = 256;
/// One delivery attempt, from connecting to the response's status line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between two attempts, however the backoff doubles.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often every enrolled host's certificate is checked against `health.cert_warn`.
pub const CERT_CHECK_EVERY: Duration = Duration::from_secs(600);

/// What a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    HostOnline,
    HostOffline,
    HostDegraded,
    HostRecovered,
    CertExpiring,
    /// Reserved for the accounting issue: accepted in the config, not emitted yet.
    UserLimited,
    UserExpired,
    UserOnHold,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 8] = [
        WebhookEvent::HostOnline,
        WebhookEvent::HostOffline,
        WebhookEvent::HostDegraded,
        WebhookEvent::HostRecovered,
        WebhookEvent::CertExpiring,
        WebhookEvent::UserLimited,
        WebhookEvent::UserExpired,
        WebhookEvent::UserOnHold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::HostOnline => "host_online",
            WebhookEvent::HostOffline => "host_offline",
            WebhookEvent::HostDegraded => "host_degraded",
            WebhookEvent::HostRecovered => "host_recovered",
            WebhookEvent::CertExpiring => "cert_expiring",
            WebhookEvent::UserLimited => "user_limited",
            WebhookEvent::UserExpired => "user_expired",
            WebhookEvent::UserOnHold => "user_on_hold",
        }
    }

    pub fn parse(name: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// One event about one host.
#[derive(Debug, Clone)]
pub struct Notice {
    pub event: WebhookEvent,
    pub host_id: String,
    pub host_name: String,
    pub detail: serde_json::Value,
}

/// The JSON body of a notice; the delivery id is shared by every webhook and every retry.
pub fn body(notice: &Notice, at: i64, delivery: &str) -> Vec<u8> {
    let value = json!({
        "event": notice.event.as_str(),
        "at": at,
        "delivery": delivery,
        "host": { "name": notice.host_name, "id": notice.host_id },
        "detail": notice.detail,
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` with `secret`: what `X-Vpn-Signature` carries.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// Wait before attempt `attempt + 1` (1-based `attempt`): `base · 2^(attempt-1)`, capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Whether a certificate that ends at `not_after` is worth a `cert_expiring` at `now`.
pub fn cert_expiring(not_after: i64, now: i64, warn: Duration) -> bool {
    not_after - now < i64::try_from(warn.as_secs()).unwrap_or(i64::MAX)
}

struct Delivery {
    event: WebhookEvent,
    id: String,
    body: Bytes,
}

struct Sink {
    events: BTreeSet<WebhookEvent>,
    target: String,
    tx: mpsc::Sender<Delivery>,
}

/// The running webhooks: one queue and worker each.
pub struct Webhooks {
    sinks: Vec<Sink>,
    /// `not_after` of the certificate each host was last warned about: one warning per
    /// certificate, a renewed one may warn again.
    cert_warned: Mutex<HashMap<String, i64>>,
    cert_warn: Duration,
}

/// The controller's webhooks, started on first use.
pub fn hub(ctl: &Arc<Controller>) -> &Webhooks {
    ctl.fleet.webhooks.get_or_init(|| Webhooks::start(ctl))
}

impl Webhooks {
    fn start(ctl: &Arc<Controller>) -> Webhooks {
        let tls = tls_config(&ctl.config.webhooks);
        let mut sinks = Vec::new();
        for (index, config) in ctl.config.webhooks.iter().enumerate() {
            let (tx, rx) = mpsc::channel(QUEUE);
            let target = config.target();
            info!(webhook = index, %target, events = ?config.events, "webhook configured");
            tokio::spawn(worker(
                index,
                config.clone(),
                rx,
                Arc::downgrade(ctl),
                tls.clone(),
            ));
            sinks.push(Sink {
                events: config.events.clone(),
                target,
                tx,
            });
        }
        if !sinks.is_empty() {
            tokio::spawn(check_certificates(Arc::downgrade(ctl)));
        }
        Webhooks {
            sinks,
            cert_warned: Mutex::default(),
            cert_warn: ctl.config.health.cert_warn,
        }
    }

    /// Queues `notice` for every webhook that wants it; never waits.
    pub fn emit(&self, metrics: &crate::metrics::Metrics, notice: Notice) {
        let wanted: Vec<&Sink> = self
            .sinks
            .iter()
            .filter(|s| s.events.contains(&notice.event))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let body = Bytes::from(body(&notice, now(), &id));
        for (index, sink) in wanted.into_iter().enumerate() {
            let delivery = Delivery {
                event: notice.event,
                id: id.clone(),
                body: body.clone(),
            };
            if sink.tx.try_send(delivery).is_err() {
                metrics.event("webhook_dropped");
                warn!(webhook = index, target = %sink.target, event = notice.event.as_str(), host = %notice.host_name, "webhook queue full, event dropped");
            }
        }
    }

    /// Emits `cert_expiring` once per host and certificate when `not_after` is near.
    pub fn cert_seen(
        &self,
        metrics: &crate::metrics::Metrics,
        host_id: &str,
        host_name: &str,
        not_after: i64,
        now: i64,
    ) {
        if !cert_expiring(not_after, now, self.cert_warn) {
            return;
        }
        {
            let mut warned = self.cert_warned.lock().unwrap_or_else(|p| p.into_inner());
            if warned.get(host_id) == Some(&not_after) {
                return;
            }
            warned.insert(host_id.to_string(), not_after);
        }
        warn!(host = %host_name, not_after, "agent certificate expires soon");
        self.emit(
            metrics,
            Notice {
                event: WebhookEvent::CertExpiring,
                host_id: host_id.to_string(),
                host_name: host_name.to_string(),
                detail: json!({ "not_after": not_after, "expires_in_secs": not_after - now }),
            },
        );
    }
}

/// rustls (ring) trusting the system's roots, built only when an https webhook exists.
fn tls_config(webhooks: &[WebhookConfig]) -> Option<Arc<rustls::ClientConfig>> {
    if !webhooks.iter().any(|w| w.url.scheme() == "https") {
        return None;
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        warn!(
            errors = found.errors.len(),
            "no trusted roots found on this system: https webhooks will fail"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(config))
}

/// Delivers one webhook's queue in order until the controller is gone.
async fn worker(
    index: usize,
    config: WebhookConfig,
    mut rx: mpsc::Receiver<Delivery>,
    ctl: Weak<Controller>,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let target = config.target();
    let count = |name: &'static str| {
        if let Some(ctl) = ctl.upgrade() {
            ctl.metrics.event(name);
        }
    };
    while let Some(d) = rx.recv().await {
        let signature = signature(config.secret.expose(), &d.body);
        let mut attempt = 1;
        loop {
            let sent = tokio::time::timeout(
                REQUEST_TIMEOUT,
                post(&config.url, tls.as_ref(), &d, &signature),
            )
            .await
            .unwrap_or(Err(DeliveryError::Timeout));
            match sent {
                Ok(()) => {
                    count("webhook_delivered");
                    debug!(webhook = index, %target, event = d.event.as_str(), delivery = %d.id, attempt, "webhook delivered");
                    break;
                }
                Err(e) => {
                    count("webhook_failed");
                    warn!(webhook = index, %target, event = d.event.as_str(), delivery = %d.id, attempt, attempts = config.attempts, error = %e, "webhook delivery failed");
                }
            }
            if attempt >= config.attempts {
                count("webhook_gave_up");
                warn!(webhook = index, %target, event = d.event.as_str(), delivery = %d.id, attempts = config.attempts, "webhook delivery given up");
                break;
            }
            tokio::time::sleep(backoff(config.retry_backoff, attempt)).await;
            attempt += 1;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("https webhook without a TLS configuration")]
    NoTls,
    #[error("invalid host name for TLS")]
    ServerName,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("receiver answered {0}")]
    Status(hyper::StatusCode),
}

/// One POST; success is a 2xx status.
async fn post(
    url: &url::Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
    d: &Delivery,
    signature: &str,
) -> Result<(), DeliveryError> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    // `host_str` keeps an IPv6 literal's brackets; connecting wants it bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(DeliveryError::Connect)?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("vpn-controller/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Vpn-Event", d.event.as_str())
        .header("X-Vpn-Delivery", d.id.as_str())
        .header("X-Vpn-Signature", signature)
        .body(Full::new(d.body.clone()))?;
    if url.scheme() == "https" {
        let tls = tls.ok_or(DeliveryError::NoTls)?;
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|_| DeliveryError::ServerName)?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(DeliveryError::Tls)?;
        send(stream, request).await
    } else {
        send(tcp, request).await
    }
}

async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> Result<(), DeliveryError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection ends when `sender` is dropped; bounded in case the receiver lingers.
    tokio::spawn(tokio::time::timeout(REQUEST_TIMEOUT, conn));
    let response = sender.send_request(request).await?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}

/// Every [`CERT_CHECK_EVERY`], warns about enrolled hosts whose certificate (as the
/// controller issued it) is near expiry: an offline agent past expiry cannot come back.
async fn check_certificates(ctl: Weak<Controller>) {
    loop {
        {
            let Some(ctl) = ctl.upgrade() else { return };
            match ctl.store.hosts().await {
                Ok(hosts) => {
                    let hub = hub(&ctl);
                    for h in hosts {
                        if let Some(not_after) = h.cert_not_after {
                            hub.cert_seen(&ctl.metrics, &h.id, &h.name, not_after, now());
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot read hosts for the certificate check"),
            }
        }
        tokio::time::sleep(CERT_CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=5).map(|a| backoff(base, a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16]);
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }

    #[test]
    fn the_body_names_the_event_the_host_and_the_delivery() {
        let notice = Notice {
            event: WebhookEvent::HostDegraded,
            host_id: "h1".into(),
            host_name: "edge-1".into(),
            detail: json!({ "failing": 1 }),
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&notice, 7, "d1")).unwrap();
        assert_eq!(v["event"], "host_degraded");
        assert_eq!(v["host"]["name"], "edge-1");
        assert_eq!(v["host"]["id"], "h1");
        assert_eq!(v["delivery"], "d1");
        assert_eq!(v["at"], 7);
        assert_eq!(v["detail"]["failing"], 1);
    }

    #[test]
    fn event_names_round_trip() {
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(WebhookEvent::parse("host_exploded"), None);
    }

    #[test]
    fn a_certificate_warns_within_the_threshold() {
        let day = 86_400;
        let warn = Duration::from_secs(2 * day as u64);
        assert!(
            !cert_expiring(10 * day, 7 * day, warn),
            "3 days left: renewal not due yet"
        );
        assert!(cert_expiring(10 * day, 8 * day + 1, warn));
        assert!(cert_expiring(10 * day, 11 * day, warn), "expired");
    }
}
