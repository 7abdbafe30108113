//! A client for shadowsocks-rust's manager API over a UNIX datagram socket.
//!
//! Wire format (shadowsocks-rust 1.25, `shadowsocks::manager::protocol`), one datagram each way:
//! - `add: {"server_port":P,"password":"..","method":".."}` → `ok`, or an error text. ssmanager
//!   answers `ok` even when the port could not be bound (it only logs that), so callers check
//!   with `list` afterwards.
//! - `remove: {"server_port":P}` → `ok` (also for a port that was not open).
//! - `list` → `[{"server_port":P,"password":".."},..]` (the method is not reported).
//! - `ping` → `stat: {"P":bytes,..}`, bytes being tx+rx since the port was (re)added.
//!
//! The manager replies to the sender's bound path, resolved in *its* mount namespace: the client
//! binds its own socket inside the shared run directory, which the container mounts at the same
//! path (see `render` in the parent module).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UnixDatagram;
use tokio::sync::Mutex;

/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Large enough for a `list` answer of one manager's 1,000 ports (about 55 KB; see
/// `super::blocks` for why a manager never holds more).
const RECV_BUFFER: usize = 256 * 1024;

/// A port as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedPort {
    #[serde(rename = "server_port")]
    pub port: u16,
    pub password: String,
}

#[derive(Serialize)]
struct AddRequest<'a> {
    server_port: u16,
    password: &'a str,
    method: &'a str,
}

#[derive(Serialize)]
struct RemoveRequest {
    server_port: u16,
}

/// Errors talking to ssmanager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The local socket could not be created or the datagram not sent.
    #[error("manager socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No answer in time: the manager is not running (yet) or lost the datagram.
    #[error("manager at {path} did not answer {command} within {timeout:?}")]
    Timeout {
        path: PathBuf,
        command: &'static str,
        timeout: Duration,
    },
    /// The answer was not what the protocol promises for that command. The reply itself is
    /// never kept: a `list` reply (late, stray or truncated) holds every user's password, and
    /// these errors are logged, sent in acks and printed by `vpn … --wait`.
    #[error("manager answered {command} with {len} bytes that are not {expected}")]
    BadReply {
        command: &'static str,
        expected: &'static str,
        len: usize,
    },
    /// The manager did not answer `ok` (an unknown method, say; its log has the text). The
    /// reply is not kept, for the same reason as in [`ManagerError::BadReply`].
    #[error("manager refused {command}: expected `ok`, got {len} bytes (see ssmanager's log)")]
    Refused { command: &'static str, len: usize },
    /// A socket path longer than `sun_path` allows.
    #[error("socket path {0} is too long for a unix socket")]
    PathTooLong(PathBuf),
}

/// One client socket talking to one ssmanager.
#[derive(Debug)]
pub struct ManagerClient {
    /// Held across send and receive so concurrent requests never take each other's reply.
    socket: Mutex<UnixDatagram>,
    server: PathBuf,
    local: PathBuf,
    timeout: Duration,
}

impl ManagerClient {
    /// Binds a fresh client socket in `run_dir` to talk to the manager at `server`.
    pub fn bind(run_dir: &Path, server: &Path, timeout: Duration) -> Result<Self, ManagerError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let local = run_dir.join(format!("agent-{}-{n}.sock", std::process::id()));
        for p in [server, local.as_path()] {
            if p.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(ManagerError::PathTooLong(p.to_owned()));
            }
        }
        // A leftover from a process that had the same pid; nobody else binds this name.
        let _ = std::fs::remove_file(&local);
        let socket = UnixDatagram::bind(&local).map_err(|source| ManagerError::Io {
            path: local.clone(),
            source,
        })?;
        Ok(ManagerClient {
            socket: Mutex::new(socket),
            server: server.to_owned(),
            local,
            timeout,
        })
    }

    /// The manager's socket path.
    pub fn server_path(&self) -> &Path {
        &self.server
    }

    async fn request(&self, command: &'static str, body: &[u8]) -> Result<String, ManagerError> {
        let socket = self.socket.lock().await;
        // Drop late answers to earlier requests that timed out, so they are not taken for ours.
        let mut buf = vec![0u8; RECV_BUFFER];
        while socket.try_recv(&mut buf).is_ok() {}
        let io_err = |source| ManagerError::Io {
            path: self.server.clone(),
            source,
        };
        socket.send_to(body, &self.server).await.map_err(io_err)?;
        let n = tokio::time::timeout(self.timeout, socket.recv(&mut buf))
            .await
            .map_err(|_| ManagerError::Timeout {
                path: self.server.clone(),
                command,
                timeout: self.timeout,
            })?
            .map_err(io_err)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    }

    /// Checks that the manager answers.
    pub async fn ping(&self) -> Result<(), ManagerError> {
        self.stats().await.map(|_| ())
    }

    /// Bytes (tx+rx) per open port since it was last added.
    pub async fn stats(&self) -> Result<BTreeMap<u16, u64>, ManagerError> {
        let reply = self.request("ping", b"ping").await?;
        let bad = || ManagerError::BadReply {
            command: "ping",
            expected: "`stat: {port: bytes, ..}`",
            len: reply.len(),
        };
        let json = reply.strip_prefix("stat:").ok_or_else(bad)?;
        serde_json::from_str(json).map_err(|_| bad())
    }

    /// The ports the manager has open.
    pub async fn list(&self) -> Result<Vec<ListedPort>, ManagerError> {
        let reply = self.request("list", b"list").await?;
        // Not `serde_json::Error` either: its message can quote the input.
        serde_json::from_str(&reply).map_err(|_| ManagerError::BadReply {
            command: "list",
            expected: "a JSON list of ports",
            len: reply.len(),
        })
    }

    /// Opens `port` with its own password and method (replacing what was open there).
    pub async fn add(&self, port: u16, password: &str, method: &str) -> Result<(), ManagerError> {
        let req = AddRequest {
            server_port: port,
            password,
            method,
        };
        self.command("add", &req).await
    }

    /// Closes `port`.
    pub async fn remove(&self, port: u16) -> Result<(), ManagerError> {
        self.command("remove", &RemoveRequest { server_port: port })
            .await
    }

    async fn command(
        &self,
        command: &'static str,
        req: &impl Serialize,
    ) -> Result<(), ManagerError> {
        let mut body = format!("{command}: ").into_bytes();
        serde_json::to_writer(&mut body, req).map_err(|e| ManagerError::Io {
            path: self.server.clone(),
            source: e.into(),
        })?;
        let reply = self.request(command, &body).await?;
        if reply == "ok" {
            Ok(())
        } else {
            Err(ManagerError::Refused {
                command,
                len: reply.len(),
            })
        }
    }
}

impl Drop for ManagerClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays ssmanager's side of one exchange: checks the request bytes, sends `reply`.
    async fn fake_manager(server: UnixDatagram, expect: &'static str, reply: &'static str) {
        let mut buf = [0u8; 1024];
        let Ok((n, from)) = server.recv_from(&mut buf).await else {
            return;
        };
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), expect);
        let to = from.as_pathname().unwrap().to_owned();
        server.send_to(reply.as_bytes(), to).await.unwrap();
    }

    async fn exchange(
        expect: &'static str,
        reply: &'static str,
    ) -> (tempfile::TempDir, ManagerClient) {
        let dir = tempfile::tempdir().unwrap();
        let server_path = dir.path().join("manager.sock");
        let server = UnixDatagram::bind(&server_path).unwrap();
        tokio::spawn(fake_manager(server, expect, reply));
        let client = ManagerClient::bind(dir.path(), &server_path, Duration::from_secs(2)).unwrap();
        (dir, client)
    }

    #[tokio::test]
    async fn add_sends_the_documented_bytes() {
        let (_d, c) = exchange(
            r#"add: {"server_port":39001,"password":"p\"w","method":"aes-256-gcm"}"#,
            "ok\n",
        )
        .await;
        c.add(39001, "p\"w", "aes-256-gcm").await.unwrap();
    }

    #[tokio::test]
    async fn refused_add_is_an_error_naming_the_command() {
        let (_d, c) = exchange(
            r#"add: {"server_port":1,"password":"x","method":"rot13"}"#,
            "unrecognized method \"rot13\"\n",
        )
        .await;
        let err = c.add(1, "x", "rot13").await.unwrap_err();
        assert!(
            matches!(err, ManagerError::Refused { command: "add", .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn remove_list_and_stats_parse_real_replies() {
        let (_d, c) = exchange(r#"remove: {"server_port":7}"#, "ok\n").await;
        c.remove(7).await.unwrap();
        let (_d, c) = exchange("list", "[{\"server_port\":8388,\"password\":\"pw\"}]\n").await;
        let listed = c.list().await.unwrap();
        assert_eq!(
            listed,
            vec![ListedPort {
                port: 8388,
                password: "pw".into()
            }]
        );
        let (_d, c) = exchange("ping", "stat: {\"8388\":1234,\"8389\":0}\n").await;
        let stats = c.stats().await.unwrap();
        assert_eq!(stats, BTreeMap::from([(8388, 1234), (8389, 0)]));
    }

    /// A `list` reply holds every user's password. Arriving where another answer was expected
    /// (a late datagram, a truncated one), it must not end up in an error: errors are logged
    /// every reconcile, sent in acks and printed by `--wait`.
    #[tokio::test]
    async fn errors_never_carry_the_reply_and_its_passwords() {
        const LIST: &str = "[{\"server_port\":8388,\"password\":\"s3cret-alice\"},\
                            {\"server_port\":8389,\"password\":\"s3cret-bob\"}]";
        const TRUNCATED: &str = "[{\"server_port\":8388,\"password\":\"s3cret-alice\"},{\"ser";
        let check = |what: &str, err: ManagerError| {
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(
                    !shown.contains("s3cret") && !shown.contains("password"),
                    "{what}: the error shows the reply: {shown}"
                );
            }
            let text = err.to_string();
            assert!(text.contains(" bytes"), "{what}: no length in {text}");
        };
        let (_d, c) = exchange("ping", LIST).await;
        check("list reply to ping", c.stats().await.unwrap_err());
        let (_d, c) = exchange("list", TRUNCATED).await;
        check("truncated list", c.list().await.unwrap_err());
        let (_d, c) = exchange(
            r#"add: {"server_port":1,"password":"x","method":"aes-256-gcm"}"#,
            LIST,
        )
        .await;
        check(
            "list reply to add",
            c.add(1, "x", "aes-256-gcm").await.unwrap_err(),
        );
        let (_d, c) = exchange(r#"remove: {"server_port":7}"#, TRUNCATED).await;
        check(
            "truncated list reply to remove",
            c.remove(7).await.unwrap_err(),
        );
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let server_path = dir.path().join("manager.sock");
        let _server = UnixDatagram::bind(&server_path).unwrap();
        let c = ManagerClient::bind(dir.path(), &server_path, Duration::from_millis(50)).unwrap();
        assert!(matches!(c.ping().await, Err(ManagerError::Timeout { .. })));
        let missing = ManagerClient::bind(
            dir.path(),
            &dir.path().join("nope"),
            Duration::from_millis(50),
        )
        .unwrap();
        assert!(matches!(missing.ping().await, Err(ManagerError::Io { .. })));
    }
}
