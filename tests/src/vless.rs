//! VLESS + Reality with the shoes engine: the real shoes client started from the exact
//! `vless://` link the product prints ([`VlessLink`], [`ShoesClient`]), the shoes server in its
//! local image ([`ShoesContainer`]), and the two loopback servers a Reality test needs: a TLS 1.3
//! site to impersonate ([`DestTls`], Reality's `dest`) and an HTTP server with a random payload
//! to fetch through the tunnel ([`PayloadServer`]).
//!
//! The dest server is rustls (TLS 1.3 only, ring) with an rcgen self-signed certificate for
//! `localhost`, so no `openssl` is needed. shoes needs `dest` as a host name: `localhost:PORT`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::client::{FETCH_TIMEOUT, free_tcp_port, http_get_via_socks};
use crate::docker::docker;
use crate::proc::{Proc, tail};
use crate::wait::poll_until;

/// The shoes image the product runs (built by `deploy/images/shoes/build.sh`).
pub const SHOES_IMAGE: &str = "vpn-fleet/shoes:local";
/// The shoes release the configs are written for.
pub const SHOES_VERSION: &str = "0.3.2";
/// The only flow the product's links name; shoes calls it `vision: true`.
pub const VISION_FLOW: &str = "xtls-rprx-vision";
/// Label on every shoes container the harness starts, valued with the owning test's pid.
const OWNER_LABEL: &str = "vpn-e2e.shoes-owner-pid";

/// The `shoes` binary (the client side runs it directly).
pub fn shoes_bin() -> PathBuf {
    crate::env::require_tool(
        "shoes",
        &format!("`cargo install shoes --locked --version {SHOES_VERSION}` (about 12 minutes)"),
    )
}

/// What a `vless://UUID@HOST:PORT?encryption=none&flow=xtls-rprx-vision&security=reality&sni=…
/// &fp=chrome&pbk=…&sid=…&type=tcp#NAME` link says (SPEC §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlessLink {
    pub uuid: String,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
    pub sni: String,
    /// `pbk`: the service's X25519 public key, base64url without padding.
    pub public_key: String,
    /// `sid`.
    pub short_id: String,
    /// `fp`: the uTLS fingerprint Xray clients imitate. shoes has no such setting.
    pub fingerprint: String,
    /// The fragment, percent-decoded.
    pub name: String,
}

/// Query keys a product link carries, each exactly once; the fixed ones with their value.
const FIXED: [(&str, &str); 5] = [
    ("encryption", "none"),
    ("flow", VISION_FLOW),
    ("security", "reality"),
    ("fp", "chrome"),
    ("type", "tcp"),
];
const FREE: [&str; 3] = ["sni", "pbk", "sid"];

impl VlessLink {
    /// Parses a link the product printed; anything else in it (an unknown or repeated
    /// parameter, another flow or transport, a malformed key or id) is an error naming it.
    pub fn parse(link: &str) -> Result<VlessLink> {
        let url = url::Url::parse(link).with_context(|| format!("not a URL: {link}"))?;
        ensure!(
            url.scheme() == "vless",
            "scheme {:?} is not vless",
            url.scheme()
        );
        ensure!(url.password().is_none(), "vless link with a password");
        ensure!(
            url.path().is_empty() || url.path() == "/",
            "vless link with a path {:?}",
            url.path()
        );
        let uuid = url.username().to_string();
        ensure!(
            uuid.len() == 36 && uuid::Uuid::try_parse(&uuid).is_ok(),
            "user id {uuid:?} is not a hyphenated UUID"
        );
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .context("vless link without a host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().context("vless link without a port")?;
        ensure!(port != 0, "vless link with port 0");

        let mut params = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            let known = FIXED.iter().any(|(f, _)| *f == k) || FREE.contains(&k.as_ref());
            ensure!(known, "unexpected parameter {k}={v}");
            if let Some(old) = params.insert(k.to_string(), v.to_string()) {
                bail!("parameter {k} given twice ({old:?} and {v:?})");
            }
        }
        for (key, want) in FIXED {
            let got = params.get(key).with_context(|| format!("missing {key}="))?;
            ensure!(got == want, "{key}={got:?}, expected {want:?}");
        }
        let take = |key: &str| -> Result<String> {
            params
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .with_context(|| format!("missing or empty {key}="))
        };
        let (sni, public_key, short_id) = (take("sni")?, take("pbk")?, take("sid")?);
        vpn_shared::reality::decode_key(&public_key)
            .with_context(|| format!("pbk={public_key:?}"))?;
        ensure!(
            short_id.len() <= 16
                && short_id.len().is_multiple_of(2)
                && short_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "sid={short_id:?} is not up to 16 hex characters of even length"
        );
        let name = percent_encoding::percent_decode_str(url.fragment().unwrap_or_default())
            .decode_utf8()
            .context("link name is not UTF-8")?
            .into_owned();
        Ok(VlessLink {
            uuid,
            host,
            port,
            sni,
            public_key,
            short_id,
            fingerprint: "chrome".into(),
            name,
        })
    }

    /// The `host:port` the client dials (IPv6 bracketed).
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A shoes client config: SOCKS5 on `socks`, every IP target through this server with
    /// Reality and, if `vision` (what the link's flow asks for), XTLS Vision.
    pub fn client_config(&self, socks: SocketAddr, vision: bool) -> Result<String> {
        let config = [ClientListener {
            address: socks.to_string(),
            protocol: Kind { kind: "socks" },
            rules: [ClientRule {
                masks: ["0.0.0.0/0", "::/0"],
                action: "allow",
                client_chain: ChainHop {
                    address: self.server(),
                    protocol: RealityClient {
                        kind: "reality",
                        public_key: &self.public_key,
                        short_id: &self.short_id,
                        sni_hostname: &self.sni,
                        vision,
                        protocol: VlessClient {
                            kind: "vless",
                            user_id: &self.uuid,
                        },
                    },
                },
            }],
        }];
        serde_norway::to_string(&config).context("encoding the shoes client config")
    }
}

#[derive(Serialize)]
struct ClientListener<'a> {
    address: String,
    protocol: Kind,
    rules: [ClientRule<'a>; 1],
}

#[derive(Serialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct ClientRule<'a> {
    masks: [&'static str; 2],
    action: &'static str,
    client_chain: ChainHop<'a>,
}

#[derive(Serialize)]
struct ChainHop<'a> {
    address: String,
    protocol: RealityClient<'a>,
}

#[derive(Serialize)]
struct RealityClient<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    public_key: &'a str,
    short_id: &'a str,
    sni_hostname: &'a str,
    vision: bool,
    protocol: VlessClient<'a>,
}

#[derive(Serialize)]
struct VlessClient<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
}

/// A running shoes client that offers SOCKS5 on `addr` and tunnels through the server of
/// `link` (the counterpart of [`SsLocal`](crate::client::SsLocal)).
#[derive(Debug)]
pub struct ShoesClient {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub link: VlessLink,
    pub config: PathBuf,
}

impl ShoesClient {
    /// Parses `link`, writes its client config into `dir`, starts `shoes --no-reload CONFIG`
    /// and waits until the SOCKS5 port listens.
    pub fn start(link: &str, dir: &Path, log: &Path) -> Result<ShoesClient> {
        ShoesClient::start_with(link, true, dir, log)
    }

    /// [`ShoesClient::start`], but with XTLS Vision off if `!vision`: a client that ignores the
    /// link's flow, to show that the server insists on it.
    pub fn start_with(link: &str, vision: bool, dir: &Path, log: &Path) -> Result<ShoesClient> {
        let link = VlessLink::parse(link).with_context(|| format!("vless link {link}"))?;
        let port = free_tcp_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        std::fs::create_dir_all(dir)?;
        let config = dir.join(format!("shoes-client-{port}.yaml"));
        std::fs::write(&config, link.client_config(addr, vision)?)?;
        let mut cmd = std::process::Command::new(shoes_bin());
        cmd.arg("--no-reload").arg(&config).env("RUST_LOG", "info");
        let mut proc = Proc::spawn("shoes-client", cmd, log)?;
        let up = poll_until(Duration::from_secs(10), || {
            !proc.is_running()
                || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if up.is_none() || !proc.is_running() {
            bail!(
                "shoes client for {} did not start listening on {addr}:\n{}",
                link.server(),
                tail(log, 30)
            );
        }
        proc.note("is listening (a connection error right above was the readiness probe)");
        Ok(ShoesClient {
            proc,
            addr,
            link,
            config,
        })
    }

    /// GETs `path` from `target` (as the server side sees it) through the tunnel.
    pub fn get(&self, target: SocketAddr, path: &str, timeout: Duration) -> Result<Vec<u8>> {
        http_get_via_socks(
            self.addr,
            &target.ip().to_string(),
            target.port(),
            path,
            timeout,
        )
    }

    /// `GET /payload` from `target` through a new tunnel connection.
    pub fn fetch_payload(&self, target: SocketAddr) -> Result<Vec<u8>> {
        self.get(target, "/payload", FETCH_TIMEOUT)
    }

    /// A small request with a short limit: does this link work right now? (A refused
    /// handshake may be answered by the impersonated site or by silence.)
    pub fn probe(&self, target: SocketAddr) -> Result<()> {
        self.get(target, "/", Duration::from_secs(5)).map(|_| ())
    }
}

/// The shoes server running `config` in the local image with host networking, as the product
/// runs it: `shoes --no-reload /etc/shoes/config.yaml`, the file bind-mounted read-only.
#[derive(Debug)]
pub struct ShoesContainer {
    pub name: String,
    pub config: PathBuf,
}

impl ShoesContainer {
    /// Writes `config` into `dir`, starts the container and waits until every one of `ports`
    /// accepts TCP on 127.0.0.1 (or the container exits, which is an error with its logs).
    pub fn start(config: &str, dir: &Path, ports: &[u16]) -> Result<ShoesContainer> {
        sweep_stale_containers();
        std::fs::create_dir_all(dir)?;
        let path = dir.join("shoes-server.yaml");
        std::fs::write(&path, config)?;
        let pid = std::process::id();
        let name = format!("vpn-e2e-shoes-{pid}-{}", free_tcp_port()?);
        let mount = format!("{}:/etc/shoes/config.yaml:ro", path.display());
        let label = format!("{OWNER_LABEL}={pid}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            "host",
            "-e",
            "RUST_LOG=info",
            "-v",
            &mount,
            SHOES_IMAGE,
            "shoes",
            "--no-reload",
            "/etc/shoes/config.yaml",
        ])?;
        let container = ShoesContainer { name, config: path };
        let listening = |port: u16| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        };
        let mut exited = false;
        let up = poll_until(Duration::from_secs(15), || {
            exited = !container.is_running();
            exited || ports.iter().all(|p| listening(*p))
        });
        if up.is_none() || exited {
            bail!(
                "shoes container {} did not listen on {ports:?}{}:\n{}",
                container.name,
                if exited { " (it exited)" } else { "" },
                container.logs()
            );
        }
        Ok(container)
    }

    pub fn is_running(&self) -> bool {
        docker(&["inspect", "--format", "{{.State.Running}}", &self.name])
            .is_ok_and(|s| s == "true")
    }

    /// The container's output (stdout and stderr), for failure reports.
    pub fn logs(&self) -> String {
        let out = std::process::Command::new("docker")
            .args(["logs", "--tail", "60", &self.name])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("<docker logs {}: {e}>", self.name),
        }
    }
}

impl Drop for ShoesContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// Removes shoes containers whose owning test process is gone (killed before its clean-up).
fn sweep_stale_containers() {
    let filter = format!("label={OWNER_LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}");
    let Ok(listing) = docker(&["ps", "-a", "--filter", &filter, "--format", &format]) else {
        return;
    };
    for line in listing.lines() {
        let mut f = line.split_whitespace();
        let (Some(id), Some(pid)) = (f.next(), f.next()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// A TCP accept loop on 127.0.0.1 serving each connection on its own thread until dropped.
#[derive(Debug)]
struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Result<Acceptor> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let serve = Arc::new(serve);
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
                let serve = serve.clone();
                std::thread::spawn(move || serve(conn));
            }
        });
        Ok(Acceptor {
            addr,
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept so the loop sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A TLS 1.3 server on 127.0.0.1 for Reality's `dest` (use [`DestTls::dest`]): it completes
/// any handshake with a self-signed `localhost` certificate and answers one HTTP request.
#[derive(Debug)]
pub struct DestTls {
    acceptor: Acceptor,
}

/// What [`DestTls`] answers; a client that sees it reached the impersonated site, not a tunnel.
pub const DEST_BODY: &[u8] = b"the site Reality impersonates\n";

impl DestTls {
    pub fn start() -> Result<DestTls> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .context("self-signing the dest certificate")?;
        let key =
            rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key.into())
            .context("dest TLS config")?;
        let config = Arc::new(config);
        let acceptor = Acceptor::start(move |tcp| {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let _ = read_request_head(&mut tls);
            let _ = respond(&mut tls, DEST_BODY);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        })?;
        Ok(DestTls { acceptor })
    }

    /// `localhost:PORT`, the form shoes needs in `dest`.
    pub fn dest(&self) -> String {
        format!("localhost:{}", self.acceptor.addr.port())
    }
}

/// An HTTP/1.0 server on 127.0.0.1: `GET /payload` is `payload`, anything else `ok`.
#[derive(Debug)]
pub struct PayloadServer {
    acceptor: Acceptor,
    pub payload: Arc<Vec<u8>>,
}

impl PayloadServer {
    pub fn start(payload: Vec<u8>) -> Result<PayloadServer> {
        let payload = Arc::new(payload);
        let served = payload.clone();
        let acceptor = Acceptor::start(move |mut tcp| {
            let Ok(head) = read_request_head(&mut tcp) else {
                return;
            };
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let body: &[u8] = if path == "/payload" { &served } else { b"ok\n" };
            let _ = respond(&mut tcp, body);
        })?;
        Ok(PayloadServer { acceptor, payload })
    }

    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr
    }
}

/// Reads up to the end of an HTTP request head (at most 64 KiB).
fn read_request_head(s: &mut impl Read) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(head.len() < 64 * 1024, "request head too long");
        if s.read(&mut byte)? == 0 {
            bail!("connection closed in the request head");
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn respond(s: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@203.0.113.5:443?\
        encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.example.com&fp=chrome\
        &pbk=Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw&sid=6ba85179e30d4fc2&type=tcp\
        #alice%20%40%20h1";

    #[test]
    fn parses_the_product_link() {
        let l = VlessLink::parse(LINK).unwrap();
        assert_eq!(l.uuid, "b831381d-6324-4d53-ad4f-8cda48b30811");
        assert_eq!(l.server(), "203.0.113.5:443");
        assert_eq!(l.sni, "www.example.com");
        assert_eq!(l.public_key, "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw");
        assert_eq!(l.short_id, "6ba85179e30d4fc2");
        assert_eq!(l.name, "alice @ h1");
        let v6 = LINK.replace("203.0.113.5", "[2001:db8::1]");
        assert_eq!(VlessLink::parse(&v6).unwrap().server(), "[2001:db8::1]:443");
    }

    #[test]
    fn rejects_what_the_product_does_not_print() {
        let cases = [
            (LINK.replace("vless://", "vmess://"), "scheme"),
            (
                LINK.replace("flow=xtls-rprx-vision", "flow=xtls-rprx-direct"),
                "flow=",
            ),
            (LINK.replace("&flow=xtls-rprx-vision", ""), "missing flow="),
            (LINK.replace("type=tcp", "type=grpc"), "type="),
            (
                LINK.replace("security=reality", "security=tls"),
                "security=",
            ),
            (LINK.replace("fp=chrome", "fp=firefox"), "fp="),
            (
                LINK.replace("&type=tcp", "&type=tcp&spx=%2F"),
                "unexpected parameter spx",
            ),
            (LINK.replace("&type=tcp", "&type=tcp&sid=00"), "given twice"),
            (LINK.replace("sid=6ba85179e30d4fc2", "sid=6ba"), "sid="),
            (LINK.replace("sid=6ba85179e30d4fc2", "sid=zz"), "sid="),
            (LINK.replace("pbk=Z84J", "pbk=Z84"), "pbk="),
            (
                LINK.replace("&pbk=Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw", ""),
                "pbk=",
            ),
            (LINK.replace("b831381d-", "b831381d"), "UUID"),
            (LINK.replace(":443", ""), "port"),
        ];
        for (link, want) in cases {
            let err = format!("{:#}", VlessLink::parse(&link).unwrap_err());
            assert!(err.contains(want), "{link}: {err} (wanted {want:?})");
        }
    }

    #[test]
    fn client_config_chains_socks_to_reality_with_vision() {
        let l = VlessLink::parse(LINK).unwrap();
        let text = l
            .client_config(SocketAddr::from((Ipv4Addr::LOCALHOST, 1080)), true)
            .unwrap();
        let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let hop = &doc[0]["rules"][0]["client_chain"];
        assert_eq!(doc[0]["address"].as_str(), Some("127.0.0.1:1080"));
        assert_eq!(doc[0]["protocol"]["type"].as_str(), Some("socks"));
        assert_eq!(hop["address"].as_str(), Some("203.0.113.5:443"));
        assert_eq!(hop["protocol"]["type"].as_str(), Some("reality"));
        assert_eq!(hop["protocol"]["vision"].as_bool(), Some(true));
        assert_eq!(
            hop["protocol"]["sni_hostname"].as_str(),
            Some("www.example.com")
        );
        assert_eq!(
            hop["protocol"]["protocol"]["user_id"].as_str(),
            Some("b831381d-6324-4d53-ad4f-8cda48b30811")
        );
    }

    #[test]
    fn loopback_servers_answer() {
        let payload = PayloadServer::start(b"0123456789".to_vec()).unwrap();
        let mut s = TcpStream::connect(payload.addr()).unwrap();
        s.write_all(b"GET /payload HTTP/1.0\r\n\r\n").unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert!(got.ends_with(b"\r\n\r\n0123456789"), "{got:?}");

        let dest = DestTls::start().unwrap();
        assert!(dest.dest().starts_with("localhost:"));
    }
}
