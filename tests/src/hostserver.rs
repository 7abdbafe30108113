//! The HTTP server inside each host namespace (`hostserver.py`, run with the system `python3`).
//!
//! It listens on all of the namespace's addresses. Clients reach it through the VPN server that
//! shares the namespace, on the host's own address (the server address of the link); each host
//! serves its own random payload, so a byte-exact payload proves the tunnel went to that very
//! host. It listens on the namespace's loopback too, so that stories can check the VPN server
//! refuses `127.0.0.1` (a refused fetch there is the server's ACL, not an empty port).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::host::Host;
use crate::proc::Proc;
use crate::wait::poll_until;

/// Port of the server inside every host namespace (namespaces do not share ports).
pub const PORT: u16 = 8000;
/// Its TLS 1.3 port (a `localhost` certificate): the Reality `dest` of VLESS services,
/// `localhost:8443` as seen from the host.
pub const TLS_PORT: u16 = 8443;
/// The server's listening address in the namespace: every address, loopback included.
const BIND: &str = "0.0.0.0";
/// `/drip/SECS` sends this many bytes per second (1 KiB every 100 ms).
pub const DRIP_BYTES_PER_SEC: usize = 10 * 1024;

const SCRIPT: &str = include_str!("hostserver.py");

/// The byte at stream offset `k` of a `/drip` response.
pub fn drip_byte(k: usize) -> u8 {
    (k % 251) as u8
}

/// A running host server and the payload it serves.
#[derive(Debug)]
pub struct HostServer {
    pub proc: Proc,
    pub port: u16,
    pub payload: Vec<u8>,
}

impl HostServer {
    /// Writes a fresh random payload and the script into `dir`, starts the server inside
    /// `host`'s namespace and waits (bounded) until it listens.
    pub fn start(host: &Host, dir: &Path, log: &Path) -> Result<HostServer> {
        std::fs::create_dir_all(dir)?;
        let payload = random_payload()?;
        let payload_path = dir.join("payload.bin");
        std::fs::write(&payload_path, &payload)?;
        let script = dir.join("hostserver.py");
        std::fs::write(&script, SCRIPT)?;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .context("self-signing the host server's certificate")?;
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&key, certified.signing_key.serialize_pem())?;
        let mut cmd = host.command("python3");
        cmd.arg(&script)
            .args(["--bind", BIND, "--port", &PORT.to_string()])
            .arg("--payload")
            .arg(&payload_path)
            .args(["--tls-port", &TLS_PORT.to_string()])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .env("PYTHONUNBUFFERED", "1");
        let mut proc = Proc::spawn(&format!("hostserver[{}]", host.name), cmd, log)?;
        let ready = format!("listening on {BIND}:{PORT}");
        let up = poll_until(Duration::from_secs(15), || {
            !proc.is_running() || crate::proc::tail(log, 50).contains(&ready)
        });
        if up.is_none() || !proc.is_running() {
            bail!(
                "host server in {} did not start:\n{}",
                host.name,
                crate::proc::tail(log, 30)
            );
        }
        Ok(HostServer {
            proc,
            port: PORT,
            payload,
        })
    }
}

/// 1–4 MiB of random bytes (from `/dev/urandom`; the size is random too).
pub fn random_payload() -> Result<Vec<u8>> {
    let mut urandom = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut size = [0u8; 4];
    urandom.read_exact(&mut size)?;
    let len = (1 << 20) + (u32::from_le_bytes(size) as usize % (3 << 20));
    let mut buf = vec![0u8; len];
    urandom.read_exact(&mut buf)?;
    Ok(buf)
}
