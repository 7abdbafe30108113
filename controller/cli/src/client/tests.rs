//! The client against an in-process fake controller speaking the real transport and framing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vpn_shared::context::CliContext;
use vpn_shared::pki::{Ca, Identity};
use vpn_shared::proto::admin::{AdminRequest, AdminResponse, ErrorKind, FirewallRuleInfo};
use vpn_shared::proto::{chunk, frame};
use vpn_shared::transport;

use super::Client;
use crate::error::CliError;

const DAY: Duration = Duration::from_secs(86400);

/// A fresh directory per test (no tempfile in this crate's dependencies).
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vpn-cli-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes an admin certificate issued by `ca` and a context file pointing at `controller`.
fn context(dir: &Path, ca: &Ca, controller: &str) -> (CliContext, PathBuf) {
    let (cert, key) = ca.issue(&Identity::Admin("ops".into()), &[], DAY).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ctx = CliContext {
        controller: controller.into(),
        ca_cert: write("ca.pem", ca.cert_pem()),
        admin_cert: write("admin.pem", &cert.cert_pem),
        admin_key: write("admin.key", &key),
    };
    let path = write("config.toml", &ctx.to_toml());
    (ctx, path)
}

/// Serves admin streams on one connection until the client closes it: reads each request,
/// answers with `answer(request)` or, for `None`, finishes the stream without answering.
/// Returns the requests it got, in order.
pub(crate) fn fake_controller(
    ca: &Ca,
    answer: fn(&AdminRequest) -> Option<AdminResponse>,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<AdminRequest>>) {
    fake_controller_frames(ca, move |req| answer(req).into_iter().collect())
}

/// [`fake_controller`] answering each request with the frames `answer` gives (none: the stream
/// is finished without an answer).
pub(crate) fn fake_controller_frames(
    ca: &Ca,
    answer: impl Fn(&AdminRequest) -> Vec<AdminResponse> + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<AdminRequest>>) {
    let dns = vec![transport::SERVER_NAME.to_string()];
    let (cert, key) = ca.issue(&Identity::Controller, &dns, DAY).unwrap();
    let config = transport::server_config(ca.cert_pem(), &cert.cert_pem, &key).unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let mut seen = Vec::new();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let req: AdminRequest = frame::read_frame(&mut recv, frame::MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            for resp in answer(&req) {
                frame::write_frame(&mut send, &resp).await.unwrap();
            }
            send.finish().unwrap();
            seen.push(req);
        }
        seen
    });
    (addr, task)
}

/// A client connected to a [`fake_controller`] answering with `answer`, and the scratch
/// directory holding its context (remove it when done).
pub(crate) async fn fake_client(
    answer: fn(&AdminRequest) -> Option<AdminResponse>,
) -> (Client, tokio::task::JoinHandle<Vec<AdminRequest>>, PathBuf) {
    let ca = Ca::generate("test ca").unwrap();
    let (addr, server) = fake_controller(&ca, answer);
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let client = Client::connect(&ctx, &path).await.unwrap();
    (client, server, dir)
}

#[tokio::test]
async fn one_request_one_response_over_mtls() {
    let ca = Ca::generate("test ca").unwrap();
    let (addr, server) = fake_controller(&ca, |_| {
        Some(AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "user alice not found".into(),
        })
    });
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let client = Client::connect(&ctx, &path).await.unwrap();
    let req = AdminRequest::UsersShow {
        name: "alice".into(),
    };
    let resp = client.request(&req).await.unwrap();
    client.close().await;
    assert!(matches!(
        resp,
        AdminResponse::Error {
            kind: ErrorKind::BadData,
            ..
        }
    ));
    assert_eq!(server.await.unwrap(), vec![req]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stream_closed_without_an_answer_is_a_protocol_error() {
    let ca = Ca::generate("test ca").unwrap();
    let (addr, _server) = fake_controller(&ca, |_| None);
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let client = Client::connect(&ctx, &path).await.unwrap();
    let err = client.request(&AdminRequest::Status).await.unwrap_err();
    assert!(matches!(err, CliError::Protocol(_)), "{err:?}");
    assert_eq!(err.exit_code(), 76);
    client.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_controller_with_another_ca_is_unavailable() {
    let ca = Ca::generate("ours").unwrap();
    let theirs = Ca::generate("theirs").unwrap();
    let (addr, _server) = fake_controller(&theirs, |_| None);
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let Err(err) = Client::connect(&ctx, &path).await else {
        panic!("the handshake must fail");
    };
    assert_eq!(err.exit_code(), 69);
    let prefix = format!("controller unavailable at {addr}: ");
    assert!(err.to_string().starts_with(&prefix), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bad_context_contents_are_configuration_errors() {
    let ca = Ca::generate("test ca").unwrap();
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, "vpn.example.com");
    let Err(err) = Client::connect(&ctx, &path).await else {
        panic!("an address without a port is invalid");
    };
    assert_eq!(err.exit_code(), 78);
    let want = format!(
        "invalid controller address `vpn.example.com` in {}: expected HOST:PORT",
        path.display()
    );
    assert_eq!(err.to_string(), want);

    let missing = CliContext {
        controller: "127.0.0.1:7443".into(),
        admin_key: dir.join("nope.key"),
        ..ctx
    };
    let Err(err) = Client::connect(&missing, &path).await else {
        panic!("a missing key file is an error");
    };
    assert_eq!(err.exit_code(), 78);
    assert!(
        err.to_string().starts_with("cannot read admin_key "),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The CLI exits right after its answer, without waiting out QUIC's draining period, yet the
/// controller still learns at once that the connection is over: it sees the client's close
/// (code 0), not an idle timeout seconds later.
#[tokio::test]
async fn the_close_reaches_the_controller_although_the_client_does_not_wait_for_it() {
    let ca = Ca::generate("test ca").unwrap();
    let dns = vec![transport::SERVER_NAME.to_string()];
    let (cert, key) = ca.issue(&Identity::Controller, &dns, DAY).unwrap();
    let config = transport::server_config(ca.cert_pem(), &cert.cert_pem, &key).unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    // The server runs on a runtime of its own: the client's runtime is single-threaded, as
    // the CLI's is, and nothing but the client's own tasks may run on it before it returns.
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let conn = endpoint.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let _: AdminRequest = frame::read_frame(&mut recv, frame::MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            frame::write_frame(&mut send, &AdminResponse::Servers(vec![]))
                .await
                .unwrap();
            send.finish().unwrap();
            // Far below the idle timeout: only the client's close frame ends it this soon.
            tokio::time::timeout(Duration::from_secs(2), conn.closed()).await
        })
    });
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let client = Client::connect(&ctx, &path).await.unwrap();
    client.request(&AdminRequest::Status).await.unwrap();
    client.close().await;
    let closed = server
        .join()
        .unwrap()
        .expect("the controller never saw the close");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, 0u32.into());
            assert_eq!(&c.reason[..], b"done");
        }
        other => panic!("the connection ended otherwise: {other}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn rules(n: usize) -> Vec<FirewallRuleInfo> {
    (0..n)
        .map(|i| FirewallRuleInfo {
            target: format!("198.51.100.{i}/32"),
            server: None,
            created_at: i as i64,
        })
        .collect()
}

/// The controller's own encoder ([`chunk::Parts`]) on one side, the client on the other: a list
/// in parts comes back as one answer, in order.
#[tokio::test]
async fn a_list_in_parts_is_read_to_its_last_part_and_joined() {
    let ca = Ca::generate("test ca").unwrap();
    let (addr, server) = fake_controller_frames(&ca, |_| {
        let mut parts = chunk::Parts::with_limits(AdminResponse::Firewall(rules(25)), 10, 1 << 20);
        std::iter::from_fn(|| parts.next_frame())
            .map(|bytes| frame::decode_body(&bytes.unwrap()[4..]).unwrap())
            .collect()
    });
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let client = Client::connect(&ctx, &path).await.unwrap();
    let req = AdminRequest::InChunks(Box::new(AdminRequest::FirewallList));
    let resp = client.request(&req).await.unwrap();
    client.close().await;
    assert_eq!(resp, AdminResponse::Firewall(rules(25)));
    assert_eq!(server.await.unwrap(), vec![req]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn parts_that_stop_before_the_last_or_do_not_match_are_protocol_errors() {
    let ca = Ca::generate("test ca").unwrap();
    let (addr, _server) = fake_controller_frames(&ca, |req| {
        let more = AdminResponse::More(Box::new(AdminResponse::Firewall(rules(2))));
        match req {
            // The stream ends after a `More`: the answer is cut.
            AdminRequest::FirewallList => vec![more],
            // A part of another kind of list.
            _ => vec![more, AdminResponse::Users(vec![])],
        }
    });
    let dir = scratch_dir();
    let (ctx, path) = context(&dir, &ca, &addr.to_string());
    let client = Client::connect(&ctx, &path).await.unwrap();
    for req in [AdminRequest::FirewallList, AdminRequest::UsersList] {
        let err = client.request(&req).await.unwrap_err();
        assert!(matches!(err, CliError::Protocol(_)), "{req:?}: {err:?}");
        assert_eq!(err.exit_code(), 76);
    }
    client.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
