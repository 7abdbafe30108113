//! The responder against real TCP connections on loopback: what a scraper, a stranger and a
//! hostile peer each get back.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::{IntCounter, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::*;

/// Generous: only a broken responder, never a slow machine, gets near it.
const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start<S: Scrape>(source: S, limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(listener, source, limits, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

fn registry_with_counter(value: u64) -> Registry {
    let registry = Registry::new();
    let counter = IntCounter::new("demo_things_total", "Things seen.").expect("counter");
    counter.inc_by(value);
    registry.register(Box::new(counter)).expect("register");
    registry
}

/// Sends `request` and reads until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    // Half-close, as a peer that has said all it will: a head cut short is then seen at once.
    stream.shutdown().await.expect("shutdown");
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("server answered and closed")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn a_scraper_gets_the_text_exposition_and_the_connection_closes() {
    let server = start(registry_with_counter(3), Limits::default()).await;
    let got = exchange(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&got), "HTTP/1.1 200 OK");
    assert!(
        got.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{got}"
    );
    assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
    let (_, body) = got.split_once("\r\n\r\n").expect("head and body");
    assert!(
        body.contains("# TYPE demo_things_total counter\n"),
        "{body}"
    );
    assert!(body.contains("demo_things_total 3\n"), "{body}");
    let length = format!("Content-Length: {}\r\n", body.len());
    assert!(got.contains(&length), "{got}");

    // A query string is not a different path; HEAD gets the head only.
    let got = exchange(server.addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_line(&got), "HTTP/1.1 200 OK");
    let got = exchange(server.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_line(&got), "HTTP/1.1 200 OK");
    assert!(got.ends_with("\r\n\r\n"), "HEAD has no body: {got}");
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let server = start(registry_with_counter(1), Limits::default()).await;
    for path in ["/", "/metricsx", "/metrics/", "/favicon.ico"] {
        let request = format!("GET {path} HTTP/1.1\r\n\r\n");
        let got = exchange(server.addr, request.as_bytes()).await;
        assert_eq!(status_line(&got), "HTTP/1.1 404 Not Found", "{path}");
        assert!(!got.contains("demo_things_total"), "{got}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let request = format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let got = exchange(server.addr, request.as_bytes()).await;
        assert_eq!(
            status_line(&got),
            "HTTP/1.1 405 Method Not Allowed",
            "{method}"
        );
        assert!(got.contains("\r\nAllow: GET, HEAD\r\n"), "{got}");
    }
}

#[tokio::test]
async fn garbage_is_a_400_and_the_server_keeps_serving() {
    let server = start(registry_with_counter(1), Limits::default()).await;
    let garbage: [&[u8]; 6] = [
        b"\r\n\r\n",
        b"hello\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET /metrics SPDY/3 extra\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"\xff\xfe\x00\x01 /metrics HTTP/1.1\r\n\r\n",
    ];
    for bytes in garbage {
        let got = exchange(server.addr, bytes).await;
        assert_eq!(status_line(&got), "HTTP/1.1 400 Bad Request", "{bytes:?}");
    }
    // A peer that hangs up mid-head gets nothing and costs nothing.
    assert_eq!(exchange(server.addr, b"GET /metr").await, "");
    let got = exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_line(&got), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn an_endless_head_is_cut_off_at_the_limit() {
    let limits = Limits {
        max_head_bytes: 8 * 1024,
        ..Limits::default()
    };
    let server = start(registry_with_counter(1), limits).await;
    let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while request.len() < 64 * 1024 {
        request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // The server may stop reading (and close) before all of this is written.
    let _ = stream.write_all(&request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out)).await;
    let got = String::from_utf8_lossy(&out);
    assert_eq!(
        status_line(&got),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_timeout() {
    let limits = Limits {
        io_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = start(registry_with_counter(1), limits).await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut out = Vec::new();
    let read = tokio::time::timeout(PATIENCE, silent.read_to_end(&mut out)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed without an answer"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let limits = Limits {
        max_connections: 1,
        io_timeout: PATIENCE * 3,
        ..Limits::default()
    };
    let server = start(registry_with_counter(1), limits).await;
    // The only slot is held by a peer that says nothing...
    let idle = TcpStream::connect(server.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ... so a scraper is not answered while it holds it ...
    let scrape = tokio::spawn(exchange(server.addr, b"GET /metrics HTTP/1.1\r\n\r\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!scrape.is_finished(), "served beyond max_connections");
    // ... and is as soon as that peer leaves.
    drop(idle);
    let got = scrape.await.expect("scrape task");
    assert_eq!(status_line(&got), "HTTP/1.1 200 OK");
}

/// A source that computes its text at scrape time, and one that fails.
struct Computed(Result<&'static str, ()>);

impl Scrape for Computed {
    async fn render(&self) -> Result<String, prometheus::Error> {
        match self.0 {
            Ok(text) => Ok(text.to_string()),
            Err(()) => Err(prometheus::Error::Msg("store unavailable".into())),
        }
    }
}

#[tokio::test]
async fn a_computed_source_is_rendered_per_scrape_and_its_failure_is_a_500() {
    let ok = start(Computed(Ok("up 1\n")), Limits::default()).await;
    let got = exchange(ok.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(got.ends_with("\r\n\r\nup 1\n"), "{got}");
    let failing = start(Computed(Err(())), Limits::default()).await;
    let got = exchange(failing.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_line(&got), "HTTP/1.1 500 Internal Server Error");
    assert!(
        !got.contains("store unavailable"),
        "no internals leak: {got}"
    );
}

#[tokio::test]
async fn shutdown_stops_the_accept_loop() {
    let mut server = start(registry_with_counter(1), Limits::default()).await;
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("serve returned")
        .expect("no panic");
    // The listener is gone with it.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[test]
fn routing_is_decided_by_the_request_line() {
    assert_eq!(
        route(b"GET /metrics HTTP/1.1\r\n\r\n"),
        Route::Metrics { body: true }
    );
    assert_eq!(
        route(b"GET /metrics HTTP/1.1"),
        Route::Metrics { body: true }
    );
    assert_eq!(route(b"get /metrics HTTP/1.1\r\n"), Route::MethodNotAllowed);
    assert_eq!(route(b"GET /metrics HTTP/2\r\n"), Route::BadRequest);
    assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n"), Route::BadRequest);
    assert_eq!(route(b""), Route::BadRequest);
}
