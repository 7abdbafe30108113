//! A real WireGuard client from the exact `.conf` `vpn users link --conf` printed: `wireguard-go`
//! and `wg` (Debian's, independent of the product's code) in a client namespace of its own —
//! a pause container on the fleet network — configured the way `wg-quick` would: `wg setconf`
//! takes the `[Interface]`/`[Peer]` keys, `ip` applies `Address` and `MTU`, and a full tunnel
//! (`AllowedIPs = 0.0.0.0/0`) is routed with wg-quick's fwmark rule so the encrypted packets
//! still reach the endpoint — and everything else, the client's LAN included, goes through the
//! tunnel. `DNS` is read but not applied (the payload is fetched by address).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::docker::Network;
use crate::env::require_tool;
use crate::host::Host;
use crate::hostserver;
use crate::proc::Proc;
use crate::wait::poll_until;

/// The fields of a client `.conf`, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    pub private_key: String,
    pub addresses: Vec<String>,
    pub dns: Vec<String>,
    pub mtu: Option<u16>,
    pub public_key: String,
    pub preshared_key: String,
    pub endpoint: String,
    pub allowed_ips: Vec<String>,
}

impl Conf {
    /// Parses a `wg-quick` `.conf`; every field a client needs must be there.
    pub fn parse(text: &str) -> Result<Conf> {
        let mut section = "";
        let mut fields: Vec<(String, String, String)> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                section = if line == "[Interface]" {
                    "i"
                } else if line == "[Peer]" {
                    "p"
                } else {
                    bail!("unknown section {line}")
                };
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("not KEY = VALUE: {line}"))?;
            fields.push((section.into(), k.trim().into(), v.trim().into()));
        }
        let get = |s: &str, k: &str| {
            fields
                .iter()
                .find(|(fs, fk, _)| fs == s && fk == k)
                .map(|(_, _, v)| v.clone())
        };
        let need = |s: &str, k: &str| get(s, k).with_context(|| format!("{k} missing in:\n{text}"));
        let list = |v: Option<String>| -> Vec<String> {
            v.map(|v| v.split(',').map(|x| x.trim().to_owned()).collect())
                .unwrap_or_default()
        };
        Ok(Conf {
            private_key: need("i", "PrivateKey")?,
            addresses: list(Some(need("i", "Address")?)),
            dns: list(get("i", "DNS")),
            mtu: get("i", "MTU").map(|m| m.parse()).transpose()?,
            public_key: need("p", "PublicKey")?,
            preshared_key: need("p", "PresharedKey")?,
            endpoint: need("p", "Endpoint")?,
            allowed_ips: list(Some(need("p", "AllowedIPs")?)),
        })
    }

    /// What `wg setconf` takes: the file without wg-quick's own keys (Address, DNS, MTU).
    pub fn setconf_text(&self) -> String {
        format!(
            "[Interface]\nPrivateKey = {}\n\n[Peer]\nPublicKey = {}\nPresharedKey = {}\n\
             Endpoint = {}\nAllowedIPs = {}\n",
            self.private_key,
            self.public_key,
            self.preshared_key,
            self.endpoint,
            self.allowed_ips.join(", ")
        )
    }
}

/// wg-quick's table and fwmark for a full tunnel.
const TABLE: &str = "51820";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running client; its namespace and `wireguard-go` go when it is dropped.
pub struct WgClient {
    pub conf: Conf,
    pub iface: String,
    ns: Host,
    engine: Proc,
    dir: PathBuf,
}

impl WgClient {
    /// Starts a client namespace on `network` and brings a tunnel up from `conf_text`.
    pub fn start(
        conf_text: &str,
        network: &Network,
        fleet_id: &str,
        dir: &Path,
    ) -> Result<WgClient> {
        let wireguard_go = require_tool("wireguard-go", "`apt-get install wireguard-go`");
        require_tool("wg", "`apt-get install wireguard-tools`");
        require_tool("curl", "`apt-get install curl`");
        let conf = Conf::parse(conf_text)?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let iface = format!("wgc{}-{n}", std::process::id() % 10_000);
        let ns = Host::start(
            &format!("vpn-e2e-{fleet_id}-wgclient-{n}"),
            network,
            fleet_id,
        )?;
        let mut cmd = ns.command(&wireguard_go);
        cmd.arg("-f").arg(&iface);
        let engine = Proc::spawn(
            &format!("wireguard-go {iface}"),
            cmd,
            &dir.join(format!("logs/wgclient-{n}.log")),
        )?;
        let client = WgClient {
            conf,
            iface,
            ns,
            engine,
            dir: dir.to_path_buf(),
        };
        client.configure(n)?;
        Ok(client)
    }

    fn configure(&self, n: usize) -> Result<()> {
        let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", self.iface));
        poll_until(Duration::from_secs(10), || sock.exists())
            .with_context(|| format!("wireguard-go made no {}", sock.display()))?;
        let file = self.dir.join(format!("wgclient-{n}.conf"));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)?;
            std::io::Write::write_all(&mut f, self.conf.setconf_text().as_bytes())?;
        }
        let iface = self.iface.as_str();
        self.run("wg", &["setconf", iface, &file.display().to_string()])?;
        for a in self.conf.addresses.iter().filter(|a| !a.contains(':')) {
            self.run("ip", &["address", "add", a, "dev", iface])?;
        }
        let mtu = self.conf.mtu.unwrap_or(1420).to_string();
        self.run("ip", &["link", "set", iface, "mtu", &mtu, "up"])?;
        if self.conf.allowed_ips.iter().any(|a| a == "0.0.0.0/0") {
            self.run("wg", &["set", iface, "fwmark", TABLE])?;
            self.run(
                "ip",
                &["route", "add", "default", "dev", iface, "table", TABLE],
            )?;
            // wg-quick also adds `table main suppress_prefixlength 0`, which keeps the LAN's
            // routes direct; the fleet network *is* this client's LAN, so without leaving it out
            // the host's address would be reached around the tunnel.
            self.run(
                "ip",
                &["rule", "add", "not", "fwmark", TABLE, "table", TABLE],
            )?;
        }
        Ok(())
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .ns
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} in the client namespace: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A curl in the client namespace for `http://HOST:8000PATH`.
    pub fn curl(&self, host: &str, path: &str, timeout: Duration) -> Command {
        let mut cmd = self.ns.command("curl");
        cmd.args(["-sS", "--fail", "--max-time"])
            .arg(format!("{:.1}", timeout.as_secs_f64()))
            .arg(format!("http://{host}:{}{path}", hostserver::PORT));
        cmd
    }

    /// GETs `path` from the host server at `host`, through the tunnel.
    pub fn get(&self, host: &str, path: &str, timeout: Duration) -> Result<Vec<u8>> {
        let out = self
            .curl(host, path, timeout)
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl http://{host}:{}{path} through {}: {}",
                hostserver::PORT,
                self.iface,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// Downloads `/stream/BYTES` from `host` through the tunnel; the rate in bit/s (curl's
    /// body bytes over its total time).
    pub fn download_rate(&self, host: &str, bytes: usize, timeout: Duration) -> Result<f64> {
        let mut cmd = self.curl(host, &format!("/stream/{bytes}"), timeout);
        cmd.args(["-o", "/dev/null", "-w", "%{size_download} %{time_total}"]);
        self.rate_of(cmd, bytes)
    }

    /// POSTs `bytes` to `/sink` of `host` through the tunnel; the rate in bit/s.
    pub fn upload_rate(&self, host: &str, bytes: usize, timeout: Duration) -> Result<f64> {
        let file = self.dir.join(format!("{}-upload.bin", self.iface));
        std::fs::write(&file, vec![0x5a; bytes])?;
        let mut cmd = self.curl(host, "/sink", timeout);
        // No `Expect: 100-continue`: curl would wait up to a second for it, inside the timing.
        cmd.args(["-H", "Expect:"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .args(["-o", "/dev/null", "-w", "%{size_upload} %{time_total}"]);
        self.rate_of(cmd, bytes)
    }

    fn rate_of(&self, mut cmd: Command, bytes: usize) -> Result<f64> {
        let out = cmd.output().context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "curl through {}: {} {}",
                self.iface,
                text,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut f = text.split_whitespace();
        let moved: f64 = f.next().context("no size from curl")?.parse()?;
        let secs: f64 = f.next().context("no time from curl")?.parse()?;
        if (moved as usize) < bytes || secs <= 0.0 {
            bail!("curl moved {moved} of {bytes} bytes in {secs} s");
        }
        Ok(moved * 8.0 / secs)
    }

    /// Unix seconds of the latest handshake with the server, 0 before the first.
    pub fn latest_handshake(&self) -> Result<u64> {
        let out = self.run("wg", &["show", &self.iface, "latest-handshakes"])?;
        let field = out.split_whitespace().nth(1).unwrap_or("0");
        Ok(field.parse()?)
    }

    /// The address the client's namespace has on the fleet network: the source of its
    /// encrypted packets, as the hosts (and their firewall) see them.
    pub fn address(&self) -> Ipv4Addr {
        self.ns.ip
    }

    pub fn is_running(&mut self) -> bool {
        self.engine.is_running()
    }
}

impl Drop for WgClient {
    fn drop(&mut self) {
        self.engine.kill();
        let _ = self.ns.remove();
    }
}
