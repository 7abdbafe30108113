//! A real controller in-process on `127.0.0.1:0`, and clients that speak the real wire protocol
//! over QUIC with mTLS: an admin, an enrolling host and an agent session. The tests use them the
//! way a hostile or buggy peer would, so the helpers hand back raw connections and streams
//! instead of hiding errors.
//!
//! Every wait is bounded: a test that hangs fails within [`TEST_BUDGET`].

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::{Context, bail};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::rustls;
use quinn::rustls::pki_types::CertificateDer;
use quinn::rustls::pki_types::pem::PemObject;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vpn_controller::config::{Config, FileConfig, Overrides};
use vpn_controller::init::{self, PkiPaths};
use vpn_controller::server::{self, Controller};
use vpn_shared::join::JoinString;
use vpn_shared::model::{DesiredState, Digest, Protocol};
use vpn_shared::pki;
use vpn_shared::proto::admin::{
    AddUser, AdminRequest, AdminResponse, Applied, DeployService, ServerAdded, Servers,
};
use vpn_shared::proto::frame::{MAX_FRAME, read_frame, write_frame};
use vpn_shared::proto::{
    ALPN_AGENT, Ack, AgentHello, AgentMsg, ControllerMsg, EnrollRequest, EnrollResponse,
    PROTOCOL_VERSION,
};
use vpn_shared::transport::{self, SERVER_NAME};

/// The longest any single test may run.
pub const TEST_BUDGET: Duration = Duration::from_secs(60);
/// The longest one expected message, answer or close may take to arrive (an upper bound: a
/// loaded 2-core machine builds a 17 MB debug-mode full state in more than 5 s).
pub const STEP: Duration = Duration::from_secs(15);

/// Runs a test body, failing it if it takes longer than [`TEST_BUDGET`].
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    if tokio::time::timeout(TEST_BUDGET, body).await.is_err() {
        panic!("test exceeded its budget of {TEST_BUDGET:?}");
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_HOOK: Once = Once::new();

/// Panics on tokio worker threads since the hook was installed.
///
/// The controller's connection handlers are spawned tasks, and a panic there is swallowed by
/// tokio: the only trace is the panic hook. Test assertions panic on the test's own thread, so
/// they are not counted. (The count is process-wide: a panic in another test's controller is a
/// bug too.)
pub fn worker_panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

fn count_worker_panics() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Logs to the test output when `RUST_LOG` is set.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A controller running in this process, with its data directory and the first admin's PKI.
pub struct TestController {
    pub ctl: Arc<Controller>,
    /// Where the controller really listens (the join strings carry a placeholder address).
    pub addr: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub ca_pem: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// One client UDP socket shared by every connection the test opens.
    pub client: quinn::Endpoint,
    shutdown: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestController {
    pub async fn start() -> TestController {
        TestController::start_with(FileConfig::default()).await
    }

    /// `vpn-controller init` into a fresh directory, then bind and serve on a free port.
    pub async fn start_with(file: FileConfig) -> TestController {
        init_tracing();
        count_worker_panics();
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            public_address: Some("127.0.0.1:7443".into()),
            database_url: None,
            ..Default::default()
        };
        let config = Config::resolve(&data_dir, file.clone(), overrides).expect("config");
        init::init(&config, &file, &dir.path().join("context.toml"))
            .await
            .expect("controller init");
        let (ctl, endpoint) = server::bind(config).await.expect("controller bind");
        let addr = endpoint.local_addr().expect("bound address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let serving = tokio::spawn(server::serve(ctl.clone(), endpoint, async move {
            let _ = stop.await;
        }));
        let paths = PkiPaths::new(&data_dir);
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pki file");
        TestController {
            ca_pem: read(&paths.ca_cert),
            admin_cert: read(&paths.admin_cert),
            admin_key: read(&paths.admin_key),
            client: transport::client_endpoint(addr).expect("client endpoint"),
            ctl,
            addr,
            data_dir,
            shutdown: Some(shutdown),
            serving: Some(serving),
            _dir: dir,
        }
    }

    /// The controller's own CA, loaded from its data directory: to mint certificates that are
    /// genuine but flawed (expired, say).
    pub fn load_ca(&self) -> pki::Ca {
        let paths = PkiPaths::new(&self.data_dir);
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pki file");
        pki::Ca::load(&read(&paths.ca_cert), &read(&paths.ca_key)).expect("load CA")
    }

    /// Connects with `config`; the error is the test's to inspect.
    pub async fn connect(
        &self,
        config: quinn::ClientConfig,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let connecting = self
            .client
            .connect_with(config, self.addr, SERVER_NAME)
            .expect("connect parameters");
        tokio::time::timeout(STEP, connecting)
            .await
            .unwrap_or(Err(quinn::ConnectionError::TimedOut))
    }

    /// A client config presenting `cert`/`key` on `alpn`, trusting the controller's CA.
    pub fn client_config(&self, cert: &str, key: &str, alpn: &[u8]) -> quinn::ClientConfig {
        transport::client_config(&self.ca_pem, cert, key, alpn).expect("client config")
    }

    /// A client config that trusts the controller's CA but presents no certificate at all.
    pub fn anonymous_config(&self, alpn: &[u8]) -> quinn::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("CA root");
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).expect("QUIC client config");
        quinn::ClientConfig::new(Arc::new(crypto))
    }

    /// A connection as the first admin (created by `init`).
    pub async fn admin(&self) -> quinn::Connection {
        let config = self.client_config(
            &self.admin_cert,
            &self.admin_key,
            vpn_shared::proto::ALPN_ADMIN,
        );
        self.connect(config).await.expect("admin connection")
    }

    /// How many refusals were counted under `reason`.
    pub fn refusals(&self, reason: &str) -> u64 {
        self.ctl
            .metrics
            .refusals()
            .get(reason)
            .copied()
            .unwrap_or_default()
    }

    /// Waits until the refusal counter `reason` reaches `at_least` (handshake refusals are
    /// counted by the controller's task, after the client already saw the failure).
    pub async fn expect_refusals(&self, reason: &str, at_least: u64) {
        let deadline = tokio::time::Instant::now() + STEP;
        while self.refusals(reason) < at_least {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "refusal counter {reason:?} is {} after {STEP:?}, expected at least \
                     {at_least}; all counters: {:?}",
                    self.refusals(reason),
                    self.ctl.metrics.refusals()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `vpn servers add NAME`: the join string parsed.
    pub async fn add_server(
        &self,
        admin: &quinn::Connection,
        name: &str,
        expires_secs: u64,
    ) -> (ServerAdded, JoinString) {
        let req = AdminRequest::ServersAdd {
            name: name.into(),
            expires_secs,
        };
        let added = match admin_request(admin, &req).await.expect("servers add") {
            AdminResponse::ServerAdded(added) => added,
            other => panic!("servers add {name}: unexpected answer {other:?}"),
        };
        let join = JoinString::parse(&added.join).expect("join string");
        (added, join)
    }

    /// Sends one enrollment request pinning `ca_sha256`; `Err` if the connection or the
    /// exchange failed before an answer.
    pub async fn enroll_request(
        &self,
        ca_sha256: &str,
        req: &EnrollRequest,
    ) -> anyhow::Result<EnrollResponse> {
        let config = transport::enroll_client_config(ca_sha256)?;
        let conn = self.connect(config).await?;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            write_frame(&mut send, req).await?;
            send.finish()?;
            read_frame::<_, EnrollResponse>(&mut recv, MAX_FRAME)
                .await?
                .context("stream ended without an enrollment answer")
        };
        let answer = tokio::time::timeout(STEP, exchange)
            .await
            .unwrap_or_else(|_| bail!("no enrollment answer within {STEP:?}"));
        conn.close(0u32.into(), b"done");
        answer
    }

    /// Enrolls with `token` and a fresh key: what `vpn-agent join` does.
    pub async fn enroll_with(&self, join: &JoinString) -> (EnrollResponse, String) {
        let (key_pem, csr_pem) = pki::generate_csr().expect("csr");
        let req = enroll_request(&join.token, &csr_pem);
        let answer = self
            .enroll_request(&join.ca_sha256, &req)
            .await
            .expect("enrollment exchange");
        (answer, key_pem)
    }

    /// Adds a server and enrolls it: a host with an identity, not yet connected.
    pub async fn enroll_agent(&self, admin: &quinn::Connection, name: &str) -> AgentIdentity {
        let (added, join) = self.add_server(admin, name, 600).await;
        match self.enroll_with(&join).await {
            (
                EnrollResponse::Accepted {
                    host_id, cert_pem, ..
                },
                key_pem,
            ) => {
                assert_eq!(
                    host_id, added.host_id,
                    "enrolled as the host that was added"
                );
                AgentIdentity {
                    name: name.into(),
                    host_id,
                    cert_pem,
                    key_pem,
                }
            }
            (other, _) => panic!("enrolling {name}: {other:?}"),
        }
    }

    /// Stops this controller and starts another on the same data directory, as a restarted
    /// process would: what the store committed is there, everything held in memory (sessions,
    /// metrics, queued pushes) is gone. It listens on a new port ([`TestController::addr`]).
    pub async fn restart(mut self) -> TestController {
        let config = self.ctl.config.clone();
        self.client.close(0u32.into(), b"controller restarting");
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(STEP, serving).await;
        }
        // The directory moves to the new controller; `self` is left an empty one to delete.
        let dir = std::mem::replace(
            &mut self._dir,
            tempfile::tempdir().expect("temporary directory"),
        );
        let (ctl, endpoint) = server::bind(config)
            .await
            .expect("controller bind after restart");
        let addr = endpoint.local_addr().expect("bound address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let serving = tokio::spawn(server::serve(ctl.clone(), endpoint, async move {
            let _ = stop.await;
        }));
        TestController {
            ca_pem: std::mem::take(&mut self.ca_pem),
            admin_cert: std::mem::take(&mut self.admin_cert),
            admin_key: std::mem::take(&mut self.admin_key),
            client: transport::client_endpoint(addr).expect("client endpoint"),
            ctl,
            addr,
            data_dir: self.data_dir.clone(),
            shutdown: Some(shutdown),
            serving: Some(serving),
            _dir: dir,
        }
    }

    /// Stops serving and waits for the controller to close its store.
    pub async fn stop(mut self) {
        self.client.close(0u32.into(), b"test over");
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(STEP, serving).await;
        }
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An enrollment request as the agent sends it.
pub fn enroll_request(token: &str, csr_pem: &str) -> EnrollRequest {
    EnrollRequest {
        version: 1,
        token: token.into(),
        csr_pem: csr_pem.into(),
        agent_version: "test-agent/0".into(),
    }
}

/// One admin request on its own stream, as the CLI does it.
pub async fn admin_request(
    conn: &quinn::Connection,
    req: &AdminRequest,
) -> anyhow::Result<AdminResponse> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, req).await?;
        send.finish()?;
        read_frame::<_, AdminResponse>(&mut recv, MAX_FRAME)
            .await?
            .context("stream ended without an answer")
    };
    // Long enough for requests that wait for acks (the tests keep ack timeouts short).
    tokio::time::timeout(STEP * 2, exchange)
        .await
        .unwrap_or_else(|_| bail!("no admin answer within {:?}", STEP * 2))
}

/// An admin request expected to apply a change.
pub async fn applied(conn: &quinn::Connection, req: &AdminRequest) -> Applied {
    match admin_request(conn, req).await {
        Ok(AdminResponse::Applied(applied)) => applied,
        other => panic!("{req:?}: expected Applied, got {other:?}"),
    }
}

/// `vpn users add NAME` on every server.
pub fn add_user(name: &str, wait: bool) -> AdminRequest {
    add_user_on(name, Servers::All, wait)
}

/// `vpn users add NAME --servers ...`.
pub fn add_user_on(name: &str, servers: Servers, wait: bool) -> AdminRequest {
    AdminRequest::UsersAdd(AddUser {
        name: name.into(),
        email: None,
        note: None,
        protocols: None,
        servers,
        bandwidth: Default::default(),
        wait,
    })
}

/// `vpn services deploy shadowsocks --port PORT` on every server, not waiting.
pub fn deploy_shadowsocks(port: u16) -> AdminRequest {
    AdminRequest::ServicesDeploy(DeployService {
        protocol: Protocol::Shadowsocks,
        name: None,
        port,
        servers: Servers::All,
        image: None,
        method: None,
        bandwidth: Default::default(),
        new_conn_rate: None,
        wait: false,
    })
}

/// What an enrolled host holds: its id and its certificate with the key that never left it.
#[derive(Clone)]
pub struct AgentIdentity {
    pub name: String,
    pub host_id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The agent's opening frame, asking for `host_id`'s state, speaking what this build speaks.
pub fn hello(host_id: &str) -> AgentMsg {
    hello_as(host_id, PROTOCOL_VERSION)
}

/// The opening frame of an agent that speaks protocol versions 1 to `max_version`.
pub fn hello_as(host_id: &str, max_version: u16) -> AgentMsg {
    AgentMsg::Hello(AgentHello {
        min_version: 1,
        max_version,
        host_id: host_id.into(),
        agent_version: "test-agent/0".into(),
        applied: None,
        public_address: None,
    })
}

/// What the reader task saw on the session stream.
#[derive(Debug)]
pub enum Inbound {
    Msg(ControllerMsg),
    /// The controller finished the stream cleanly.
    End,
    /// The stream or connection failed, or a frame did not decode.
    Failed(String),
}

/// An agent's session stream. Frames are read by a task into a channel so that waiting with
/// a timeout never loses half a frame.
pub struct AgentSession {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    inbox: mpsc::UnboundedReceiver<Inbound>,
    reader: JoinHandle<()>,
    /// Held by a session opened paused: sending on it lets the reader start.
    resume: Option<oneshot::Sender<()>>,
    /// Every `Allowances` message received so far, oldest first. They come on their own
    /// schedule (after the full state, after usage acks, every 30 s), so [`AgentSession::next`]
    /// sets them aside here instead of handing them to tests that wait for something else.
    pub allowances: Vec<vpn_shared::proto::Allowances>,
}

impl AgentSession {
    /// Connects on the agent ALPN with `identity` and opens the session stream, sending nothing.
    pub async fn open(
        tc: &TestController,
        identity: &AgentIdentity,
    ) -> anyhow::Result<AgentSession> {
        let config = tc.client_config(&identity.cert_pem, &identity.key_pem, ALPN_AGENT);
        AgentSession::on(tc.connect(config).await?).await
    }

    /// Opens the session stream on an established connection, sending nothing. Fails if the
    /// controller already closed the connection.
    pub async fn on(conn: quinn::Connection) -> anyhow::Result<AgentSession> {
        let (send, recv) = conn.open_bi().await?;
        let (tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(recv, tx));
        Ok(AgentSession {
            conn,
            send,
            inbox,
            reader,
            resume: None,
            allowances: Vec::new(),
        })
    }

    /// Like [`AgentSession::open`], but nothing is read from the stream until
    /// [`AgentSession::resume_reading`]: a stalled agent, whose stream window fills up.
    pub async fn open_paused(
        tc: &TestController,
        identity: &AgentIdentity,
    ) -> anyhow::Result<AgentSession> {
        let config = tc.client_config(&identity.cert_pem, &identity.key_pem, ALPN_AGENT);
        let conn = tc.connect(config).await?;
        let (send, recv) = conn.open_bi().await?;
        let (tx, inbox) = mpsc::unbounded_channel();
        let (resume, resumed) = oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            if resumed.await.is_ok() {
                read_loop(recv, tx).await;
            }
        });
        Ok(AgentSession {
            conn,
            send,
            inbox,
            reader,
            resume: Some(resume),
            allowances: Vec::new(),
        })
    }

    /// Starts reading a session opened with [`AgentSession::open_paused`].
    pub fn resume_reading(&mut self) {
        if let Some(resume) = self.resume.take() {
            let _ = resume.send(());
        }
    }

    /// Connects, says hello as itself, and reads the welcome and the full state.
    pub async fn start(
        tc: &TestController,
        identity: &AgentIdentity,
    ) -> anyhow::Result<(AgentSession, DesiredState, Digest)> {
        AgentSession::start_as(tc, identity, PROTOCOL_VERSION).await
    }

    /// [`AgentSession::start`] for an agent that speaks versions 1 to `max_version`.
    pub async fn start_as(
        tc: &TestController,
        identity: &AgentIdentity,
        max_version: u16,
    ) -> anyhow::Result<(AgentSession, DesiredState, Digest)> {
        let mut session = AgentSession::open(tc, identity).await?;
        session
            .send(&hello_as(&identity.host_id, max_version))
            .await?;
        match session.recv().await? {
            ControllerMsg::Welcome { version, host_name } => {
                anyhow::ensure!(version == max_version, "negotiated version {version}");
                anyhow::ensure!(host_name == identity.name, "welcomed as {host_name}");
            }
            other => bail!("expected Welcome, got {other:?}"),
        }
        let (state, digest) = session.full_state().await?;
        Ok((session, state, digest))
    }

    pub async fn send(&mut self, msg: &AgentMsg) -> anyhow::Result<()> {
        write_frame(&mut self.send, msg).await?;
        Ok(())
    }

    /// Acks a generation with every resource ok.
    pub async fn ack(&mut self, generation: u64, digest: Digest) -> anyhow::Result<()> {
        self.send(&AgentMsg::Ack(Ack {
            generation,
            digest,
            results: Vec::new(),
        }))
        .await
    }

    /// The next message, within [`STEP`].
    pub async fn recv(&mut self) -> anyhow::Result<ControllerMsg> {
        match self.next(STEP).await {
            Some(Inbound::Msg(msg)) => Ok(msg),
            Some(other) => bail!("expected a message, the stream gave {other:?}"),
            None => bail!("no message within {STEP:?}"),
        }
    }

    /// Whatever the stream yields next within `within`, allowances aside (see
    /// [`AgentSession::allowances`]); `None` if nothing did.
    pub async fn next(&mut self, within: Duration) -> Option<Inbound> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .ok()
                .map(|m| m.unwrap_or(Inbound::End))?;
            match m {
                Inbound::Msg(ControllerMsg::Allowances(a)) => self.allowances.push(a),
                other => return Some(other),
            }
        }
    }

    /// Every message until the stream ends or fails (bounded by [`STEP`] per message).
    pub async fn drain(&mut self) -> Vec<ControllerMsg> {
        let mut seen = Vec::new();
        while let Some(Inbound::Msg(msg)) = self.next(STEP).await {
            seen.push(msg);
        }
        seen
    }

    /// Reads the chunks of one full state and rebuilds it.
    pub async fn full_state(&mut self) -> anyhow::Result<(DesiredState, Digest)> {
        let mut state = DesiredState::default();
        let mut services = BTreeMap::new();
        let mut users = BTreeMap::new();
        for expected_index in 0u32.. {
            let chunk = match self.recv().await? {
                ControllerMsg::FullState(chunk) => chunk,
                other => bail!("expected a FullState chunk, got {other:?}"),
            };
            anyhow::ensure!(
                chunk.index == expected_index,
                "chunk {} out of order",
                chunk.index
            );
            state.generation = chunk.generation;
            // From protocol version 2 every chunk may carry part of the block list, in order.
            state.firewall.blocked.extend(chunk.firewall.blocked);
            services.extend(chunk.services.into_iter().map(|s| (s.name.clone(), s)));
            users.extend(chunk.users.into_iter().map(|u| (u.name.clone(), u)));
            if chunk.last {
                state.services = services;
                state.users = users;
                return Ok((state, chunk.digest));
            }
        }
        unreachable!("chunk indexes are unbounded")
    }

    /// How the controller closed this connection, within [`STEP`].
    pub async fn closed(&self) -> quinn::ConnectionError {
        closed(&self.conn).await
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(mut recv: quinn::RecvStream, tx: mpsc::UnboundedSender<Inbound>) {
    loop {
        let item = match read_frame::<_, ControllerMsg>(&mut recv, MAX_FRAME).await {
            Ok(Some(msg)) => Inbound::Msg(msg),
            Ok(None) => Inbound::End,
            Err(e) => Inbound::Failed(e.to_string()),
        };
        let more = matches!(item, Inbound::Msg(_));
        if tx.send(item).is_err() || !more {
            return;
        }
    }
}

/// How a connection was closed, within [`STEP`].
pub async fn closed(conn: &quinn::Connection) -> quinn::ConnectionError {
    tokio::time::timeout(STEP, conn.closed())
        .await
        .unwrap_or_else(|_| panic!("connection still open after {STEP:?}"))
}

/// The application close code of a connection error, if the peer closed it with one.
pub fn close_code(e: &quinn::ConnectionError) -> Option<u32> {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            u32::try_from(close.error_code.into_inner()).ok()
        }
        _ => None,
    }
}

/// Asserts that the controller closed `conn` with `code`.
pub async fn assert_closed_with(conn: &quinn::Connection, code: u32, what: &str) {
    let e = closed(conn).await;
    assert_eq!(
        close_code(&e),
        Some(code),
        "{what}: expected application close code {code}, got {e:?}"
    );
}

/// Adds `count` fleet-wide block rules straight into the controller's database, far faster than
/// `count` admin requests: for states of a size that only matters to the framing. `v6` makes
/// each target 42 characters (`2001:db8:0001:0002:1111:2222:3333:4444/128`), else about 14.
/// Bypassing the store's validation is fine here: the agent side of these tests only counts.
pub async fn insert_block_rules(tc: &TestController, count: u32, v6: bool) {
    let url = format!("sqlite://{}", tc.ctl.config.database_path.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the controller's database");
    let target = if v6 {
        "printf('2001:db8:%04x:%04x:1111:2222:3333:4444/128', i / 65536, i % 65536)"
    } else {
        "printf('10.%d.%d.%d/32', i / 65536, (i / 256) % 256, i % 256)"
    };
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
         INSERT INTO firewall_rules (target, host_id, created_at) SELECT {target}, NULL, 0 FROM n"
    );
    sqlx::query(&sql)
        .bind(count)
        .execute(&pool)
        .await
        .expect("insert block rules");
    pool.close().await;
}

/// `servers list`, as the CLI asks for it.
pub async fn servers_list(admin: &quinn::Connection) -> Vec<vpn_shared::proto::admin::ServerInfo> {
    match admin_request(admin, &AdminRequest::ServersList).await {
        Ok(AdminResponse::Servers(servers)) => servers,
        other => panic!("servers list: {other:?}"),
    }
}

/// Polls `servers list` until `name` satisfies `ok`, or fails after `within` with what it saw.
pub async fn wait_for_server(
    admin: &quinn::Connection,
    name: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&vpn_shared::proto::admin::ServerInfo) -> bool,
) -> vpn_shared::proto::admin::ServerInfo {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let servers = servers_list(admin).await;
        let server = servers
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {name}"));
        if ok(&server) {
            return server;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: after {within:?} server {name} is {server:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One admin request whose answer must be `pick`'s variant.
pub async fn ask<T>(
    admin: &quinn::Connection,
    req: AdminRequest,
    pick: impl FnOnce(AdminResponse) -> Option<T>,
) -> T {
    let answer = admin_request(admin, &req)
        .await
        .unwrap_or_else(|e| panic!("{req:?}: {e}"));
    let shown = format!("{answer:?}");
    pick(answer).unwrap_or_else(|| panic!("{req:?}: unexpected answer {shown}"))
}

/// `servers show NAME` with health.
pub async fn server_detail(
    admin: &quinn::Connection,
    name: &str,
) -> vpn_shared::proto::admin::ServerDetail {
    let req = AdminRequest::ServersShowDetail { name: name.into() };
    ask(admin, req, |a| match a {
        AdminResponse::ServerDetail(d) => Some(d),
        _ => None,
    })
    .await
}

/// Polls `servers show NAME` until `ok`, or fails after [`STEP`] with what it saw last.
pub async fn wait_for_detail(
    admin: &quinn::Connection,
    name: &str,
    what: &str,
    ok: impl Fn(&vpn_shared::proto::admin::ServerDetail) -> bool,
) -> vpn_shared::proto::admin::ServerDetail {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let detail = server_detail(admin, name).await;
        if ok(&detail) {
            return detail;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: after {STEP:?} server {name} is {detail:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An agent report at the agent's clock `sent_at_ms`, with these results and nothing else.
pub fn report(
    sent_at_ms: i64,
    generation: u64,
    results: Vec<vpn_shared::proto::ResourceResult>,
) -> AgentMsg {
    AgentMsg::Report(vpn_shared::proto::AgentReport {
        sent_at_ms,
        generation,
        results,
        ..Default::default()
    })
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Applies a `Delta` to `state`, checking it follows on and matches its digest.
pub fn apply_delta(state: &mut DesiredState, msg: ControllerMsg) -> Digest {
    apply_delta_parts(state, msg).1
}

/// Like [`apply_delta`], also giving the delta's base generation and its changes.
pub fn apply_delta_parts(
    state: &mut DesiredState,
    msg: ControllerMsg,
) -> (u64, Digest, Vec<vpn_shared::model::Change>) {
    let ControllerMsg::Delta {
        base_generation,
        generation,
        digest,
        changes,
    } = msg
    else {
        panic!("expected a Delta, got {msg:?}");
    };
    state
        .apply_delta(base_generation, generation, &changes)
        .unwrap_or_else(|e| panic!("delta does not follow on: {e}"));
    assert_eq!(state.digest(), digest, "digest after delta to {generation}");
    (base_generation, digest, changes)
}

/// How often the controller counted the event `name`.
pub fn events(tc: &TestController, name: &str) -> u64 {
    tc.ctl
        .metrics
        .events()
        .get(name)
        .copied()
        .unwrap_or_default()
}

/// Waits until the event counter `name` reaches `at_least`, within `within`.
pub async fn expect_events(tc: &TestController, name: &str, at_least: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while events(tc, name) < at_least {
        if tokio::time::Instant::now() > deadline {
            panic!(
                "event counter {name:?} is {} after {within:?}, expected at least {at_least}; \
                 all: {:?}",
                events(tc, name),
                tc.ctl.metrics.events()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A webhook receiver on loopback: a real HTTP/1.1 server that records every request, then
/// waits `delay` and answers `status`.
pub struct Receiver {
    pub url: String,
    hits: mpsc::UnboundedReceiver<Hit>,
    count: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(status: u16, delay: Duration) -> Receiver {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver bind");
        let addr = listener.local_addr().expect("receiver address");
        let (tx, hits) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, counted) = (tx.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (tx, counted) = (tx.clone(), counted.clone());
                            async move {
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect();
                                let body = req.into_body().collect().await?.to_bytes().to_vec();
                                counted.fetch_add(1, Ordering::SeqCst);
                                let _ = tx.send(Hit { headers, body });
                                tokio::time::sleep(delay).await;
                                let mut answer = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"ok"),
                                ));
                                *answer.status_mut() =
                                    hyper::StatusCode::from_u16(status).expect("status");
                                Ok::<_, hyper::Error>(answer)
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/hooks/vpn?token=t0ps3cret"),
            hits,
            count,
            task,
        }
    }

    /// The next request within [`STEP`].
    pub async fn next(&mut self) -> Hit {
        tokio::time::timeout(STEP, self.hits.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no webhook request within {STEP:?}"))
    }

    /// The next request carrying `event`, skipping others.
    pub async fn next_event(&mut self, event: &str) -> Hit {
        loop {
            let hit = self.next().await;
            if hit.header("x-vpn-event") == event {
                return hit;
            }
        }
    }

    /// Requests received so far (retries included).
    pub fn received(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `[[webhooks]]` entry.
pub fn webhook(url: &str, events: &[&str], secret: &str) -> vpn_controller::config::FileWebhook {
    vpn_controller::config::FileWebhook {
        url: Some(url.into()),
        events: Some(events.iter().map(|e| e.to_string()).collect()),
        secret: Some(secret.into()),
        attempts: None,
        retry_backoff: None,
    }
}

/// Checks `X-Vpn-Signature` against the body with `secret`, as a receiver should.
pub fn signature_verifies(hit: &Hit, secret: &str) -> bool {
    let Some(hex_mac) = hit.header("x-vpn-signature").strip_prefix("sha256=") else {
        return false;
    };
    let Ok(mac) = hex::decode(hex_mac) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, &hit.body, &mac).is_ok()
}
