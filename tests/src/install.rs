//! Install-path helpers: tools that only the install tests need (`systemd-analyze`,
//! `ansible-playbook`), and [`SystemdHost`], a simulated host whose PID 1 is systemd.
//!
//! A missing tool fails the test with the remedy, as the rest of the harness does
//! ([`env::require_tool`]): `deploy/scripts/setup.sh` installs every one of them, and a test
//! that passed without running would tell nobody (nextest hides a passing test's output).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::docker::{FLEET_LABEL, Network, docker};
use crate::env;
use crate::wait::poll_until;

/// The image of a host with systemd as PID 1 (built by `deploy/images/systemd-host/build.sh`).
pub const SYSTEMD_HOST_IMAGE: &str = "vpn-fleet/systemd-host:local";

/// The tool `name` on PATH (or in `~/.cargo/bin`); when it is missing, [`skip`] fails the test
/// naming `install`.
pub fn tool_or_skip(test: &str, name: &str, install: &str) -> Option<PathBuf> {
    if let Some(p) = env::find_tool(name) {
        return Some(p);
    }
    skip(
        test,
        &format!("`{name}` not found on PATH: {install}, or run deploy/scripts/setup.sh"),
    );
    None
}

/// A test that cannot run here fails, saying why: it never passes without having run.
pub fn skip(test: &str, why: &str) {
    panic!("{test} cannot run: {why}");
}

/// How long a simulated host's systemd may take to finish booting.
pub const BOOT: Duration = Duration::from_secs(60);

/// A container whose PID 1 is systemd, sharing this machine's `/usr` read-only, on a fleet
/// network: to the roles it is a Debian host with systemd. Removed on drop.
#[derive(Debug)]
pub struct SystemdHost {
    pub name: String,
    pub ip: Ipv4Addr,
}

impl SystemdHost {
    /// Starts `name` on `network`; with `docker_socket` this machine's Docker socket is
    /// mounted at `/run/docker.sock` (where an agent expects it).
    pub fn start(
        name: &str,
        network: &Network,
        fleet_id: &str,
        docker_socket: bool,
    ) -> Result<SystemdHost> {
        let label = format!("{FLEET_LABEL}={fleet_id}");
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            &network.name,
            "--label",
            &label,
            // `--privileged` is refused here (this machine's root lacks CAP_SYS_RESOURCE): every
            // other capability, and no seccomp or AppArmor profile, so that systemd can build
            // each unit's sandbox (mount namespaces, capability bounding sets, seccomp filters).
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--stop-signal",
            "SIGRTMIN+3",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v",
            "/usr:/usr:ro",
            "--tmpfs",
            "/usr/local:exec",
        ];
        if docker_socket {
            args.extend(["-v", "/var/run/docker.sock:/run/docker.sock"]);
        }
        args.push(SYSTEMD_HOST_IMAGE);
        docker(&args)?;
        // Removed on drop from here on, also when reading its address fails.
        let mut host = SystemdHost {
            name: name.to_string(),
            ip: Ipv4Addr::UNSPECIFIED,
        };
        let ip = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
        ])?;
        host.ip = ip
            .split_whitespace()
            .find_map(|p| p.parse::<Ipv4Addr>().ok())
            .with_context(|| format!("container {name} has no IPv4 address ({ip:?})"))?;
        Ok(host)
    }

    /// Waits until systemd reports `running` (or `degraded`: a unit of this machine's `/usr`
    /// that cannot run in a container does not matter here).
    pub fn wait_booted(&self) -> Result<()> {
        let mut last = String::new();
        let booted = poll_until(BOOT, || {
            last = self
                .exec(&["systemctl", "is-system-running"])
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|e| e.to_string());
            last == "running" || last == "degraded"
        });
        if booted.is_none() {
            bail!(
                "{}: systemd not up within {BOOT:?} (state {last:?})",
                self.name
            );
        }
        Ok(())
    }

    /// `docker exec` of `args` in the host (as root, HOME=/root).
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        Command::new("docker")
            .args(["exec", "-e", "HOME=/root", &self.name])
            .args(args)
            .output()
            .with_context(|| format!("docker exec {} {args:?}", self.name))
    }

    /// Like [`SystemdHost::exec`], failing with its stderr unless it exits 0; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        if !out.status.success() {
            bail!(
                "{}: {args:?} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `content` to `path` in the host.
    pub fn write_file(&self, path: &str, content: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args([
                "exec",
                "-i",
                &self.name,
                "sh",
                "-c",
                "cat > \"$1\"",
                "sh",
                path,
            ])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("docker exec {} (writing {path})", self.name))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(content.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{}: writing {path} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The journal of `unit` (for failure reports).
    pub fn journal(&self, unit: &str) -> String {
        self.exec(&["journalctl", "-u", unit, "--no-pager", "-n", "80"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string())
    }
}

impl SystemdHost {
    /// Leaves the container running for a post-mortem (`VPN_E2E_KEEP=1`); the next test that
    /// takes [`crate::fleet::serial_guard`] sweeps it with its network.
    pub fn keep(self) {
        eprintln!("kept simulated host {} ({})", self.name, self.ip);
        std::mem::forget(self);
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}
