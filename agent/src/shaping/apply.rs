//! The IO half of shaping: reads what the kernel holds (`tc -j`, `ip -j`), renders the
//! difference, and runs it with `ip -batch -` and `tc -batch -` — only when there is any.
//!
//! Netlink crates cannot create HTB classes, hence the `tc` program (SPEC §2.5). A batch stops
//! at its first failing line; the next apply reads the kernel again and renders what is still
//! missing, so a half-applied batch heals itself.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::ShapingError;
use super::plan::ShapingPlan;
use super::render::{Capabilities, ROOT_HANDLE, ROOT_MAJOR, Target, render};
use super::snapshot::{self, IfbState, IngressHook, RootQdisc, Snapshot, TreeState};

/// The default link ceiling: the root class's rate and the unlimited classes' ceil. Set it to
/// at least the real link speed, or every user is limited to it.
pub const DEFAULT_CEILING_BPS: u64 = 10_000_000_000;

/// How long one `tc`/`ip` invocation may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What one [`Shaper::apply`] ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The `ip -batch` lines run (IFB device set-up).
    pub ip_lines: Vec<String>,
    /// The `tc -batch` lines run.
    pub tc_lines: Vec<String>,
    /// Matchers or directions left out for lack of kernel support.
    pub skipped: Vec<String>,
}

impl ApplyOutcome {
    /// Whether anything was run.
    pub fn changed(&self) -> bool {
        !self.ip_lines.is_empty() || !self.tc_lines.is_empty()
    }
}

/// Applies shaping plans to one interface and its IFB device.
#[derive(Debug)]
pub struct Shaper {
    /// The egress interface: download is shaped on it.
    pub iface: String,
    /// The IFB device the interface's ingress is redirected to: upload is shaped on it.
    pub ifb: String,
    /// See [`DEFAULT_CEILING_BPS`].
    pub ceiling_bps: u64,
    /// What the kernel supports (from [`super::kernel::probe`]).
    pub caps: Capabilities,
    /// Run every command inside this network namespace (`ip netns exec`): for tests, and for
    /// services that live in a namespace of their own.
    pub netns: Option<String>,
    /// Serializes applies: two interleaved read-render-run cycles would each render against a
    /// snapshot the other is changing.
    lock: Mutex<()>,
}

/// The IFB device name for `iface`: `ifb-<iface>`, cut to the kernel's 15 characters.
pub fn default_ifb_name(iface: &str) -> String {
    format!("ifb-{iface}").chars().take(15).collect()
}

impl Shaper {
    pub fn new(iface: &str, ceiling_bps: u64, caps: Capabilities) -> Shaper {
        Shaper {
            iface: iface.to_owned(),
            ifb: default_ifb_name(iface),
            ceiling_bps,
            caps,
            netns: None,
            lock: Mutex::new(()),
        }
    }

    /// Uses `ifb` instead of the default IFB device name.
    pub fn with_ifb(mut self, ifb: &str) -> Shaper {
        self.ifb = ifb.to_owned();
        self
    }

    /// Runs every command inside network namespace `netns`.
    pub fn in_netns(mut self, netns: &str) -> Shaper {
        self.netns = Some(netns.to_owned());
        self
    }

    /// Makes the kernel match `plan`, running nothing when it already does.
    pub async fn apply(&self, plan: &ShapingPlan) -> Result<ApplyOutcome, ShapingError> {
        let _serial = self.lock.lock().await;
        if !plan.unplaced.is_empty() {
            warn!(
                count = plan.unplaced.len(),
                first = %plan.unplaced[0],
                "no class id left: these objects are not limited"
            );
        }
        let snap = self.snapshot().await?;
        let target = Target {
            dev: &self.iface,
            ifb: &self.ifb,
            ceiling_bps: self.ceiling_bps,
            caps: self.caps,
        };
        let rendered = render(plan, &target, &snap)?;
        for note in &rendered.skipped {
            debug!(dev = %self.iface, note = %note, "not shaped");
        }
        if !rendered.ip.is_empty() {
            self.batch("ip", &rendered.ip).await?;
        }
        if !rendered.tc.is_empty() {
            self.batch("tc", &rendered.tc).await?;
        }
        if !rendered.is_empty() {
            info!(
                dev = %self.iface,
                ifb = %self.ifb,
                ip_lines = rendered.ip.len(),
                tc_lines = rendered.tc.len(),
                services = plan.services.len(),
                "bandwidth limits applied"
            );
        }
        Ok(ApplyOutcome {
            ip_lines: rendered.ip,
            tc_lines: rendered.tc,
            skipped: rendered.skipped,
        })
    }

    /// Removes everything this shaper installed (the IFB device itself stays).
    pub async fn clear(&self) -> Result<ApplyOutcome, ShapingError> {
        self.apply(&ShapingPlan::default()).await
    }

    /// Reads what the kernel holds on the interface and the IFB device.
    pub async fn snapshot(&self) -> Result<Snapshot, ShapingError> {
        let (egress, ifb) = tokio::join!(self.read_tree(&self.iface), self.read_ifb());
        let (qdiscs, egress) = egress?;
        let ingress = match snapshot::ingress_qdisc(&qdiscs) {
            Ok(false) => IngressHook::Absent,
            Err(kind) => IngressHook::Foreign { kind },
            Ok(true) => {
                let args = [
                    "-j",
                    "filter",
                    "show",
                    "dev",
                    &self.iface,
                    "parent",
                    "ffff:",
                ];
                let out = self.run_ok("tc", &args).await?;
                let entries = snapshot::parse_filters(&out)
                    .map_err(|detail| parse_error("tc", &args, detail))?;
                snapshot::ingress_hook(&entries, super::render::REDIRECT_PRIO)
            }
        };
        Ok(Snapshot {
            egress,
            ingress,
            ifb: ifb?,
        })
    }

    async fn read_ifb(&self) -> Result<Option<IfbState>, ShapingError> {
        let args = ["-j", "link", "show", "dev", &self.ifb];
        let out = self.run("ip", &args, None).await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("does not exist") {
                return Ok(None);
            }
            return Err(command_error("ip", &args, &out));
        }
        let up = snapshot::link_is_up(&String::from_utf8_lossy(&out.stdout))
            .map_err(|detail| parse_error("ip", &args, detail))?;
        let (_, tree) = self.read_tree(&self.ifb).await?;
        Ok(Some(IfbState { up, tree }))
    }

    /// A device's qdiscs, and its tree as far as it is ours.
    async fn read_tree(
        &self,
        dev: &str,
    ) -> Result<(Vec<snapshot::Qdisc>, TreeState), ShapingError> {
        let args = ["-j", "qdisc", "show", "dev", dev];
        let out = self.run_ok("tc", &args).await?;
        let qdiscs =
            snapshot::parse_qdiscs(&out).map_err(|detail| parse_error("tc", &args, detail))?;
        let root = snapshot::root_qdisc(&qdiscs, ROOT_HANDLE);
        if root != RootQdisc::Ours {
            return Ok((
                qdiscs,
                TreeState {
                    root,
                    ..Default::default()
                },
            ));
        }
        let class_args = ["-d", "class", "show", "dev", dev];
        let filter_args = ["-j", "filter", "show", "dev", dev, "parent", ROOT_HANDLE];
        let (classes, filters) = tokio::join!(
            self.run_ok("tc", &class_args),
            self.run_ok("tc", &filter_args)
        );
        let classes = snapshot::parse_classes(&classes?, ROOT_MAJOR)
            .map_err(|detail| parse_error("tc", &class_args, detail))?;
        let entries = snapshot::parse_filters(&filters?)
            .map_err(|detail| parse_error("tc", &filter_args, detail))?;
        Ok((
            qdiscs,
            TreeState {
                root,
                classes,
                filters: snapshot::filters_by_node(&entries, ROOT_MAJOR),
            },
        ))
    }

    /// Runs `program -batch -` with `lines` on standard input.
    async fn batch(&self, program: &str, lines: &[String]) -> Result<(), ShapingError> {
        let mut input = lines.join("\n");
        input.push('\n');
        let args = ["-batch", "-"];
        let out = self.run(program, &args, Some(&input)).await?;
        if !out.status.success() {
            return Err(command_error(program, &args, &out));
        }
        debug!(program, lines = lines.len(), "batch ran");
        Ok(())
    }

    async fn run_ok(&self, program: &str, args: &[&str]) -> Result<String, ShapingError> {
        let out = self.run(program, args, None).await?;
        if !out.status.success() {
            return Err(command_error(program, args, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<std::process::Output, ShapingError> {
        run(self.netns.as_deref(), program, args, stdin).await
    }
}

/// Runs `program args` (inside `netns` if given), feeding `stdin`, bounded by a timeout.
async fn run(
    netns: Option<&str>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<std::process::Output, ShapingError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ShapingError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    let io = async {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            pipe.shutdown().await?;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, io).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(source)) => Err(ShapingError::Spawn {
            program: program.to_owned(),
            source,
        }),
        Err(_) => Err(ShapingError::Timeout {
            command: format!("{program} {}", args.join(" ")),
            secs: COMMAND_TIMEOUT.as_secs(),
        }),
    }
}

fn command_error(program: &str, args: &[&str], out: &std::process::Output) -> ShapingError {
    ShapingError::Command {
        command: format!("{program} {}", args.join(" ")),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

fn parse_error(program: &str, args: &[&str], detail: String) -> ShapingError {
    ShapingError::Parse {
        command: format!("{program} {}", args.join(" ")),
        detail,
    }
}

/// The interface of the default route (IPv4 first, then IPv6), inside `netns` if given.
pub async fn detect_egress_iface(netns: Option<&str>) -> Result<String, ShapingError> {
    for family in ["-4", "-6"] {
        let args = ["-j", family, "route", "show", "default"];
        let out = run(netns, "ip", &args, None).await?;
        if !out.status.success() {
            return Err(command_error("ip", &args, &out));
        }
        let dev = snapshot::default_route_dev(&String::from_utf8_lossy(&out.stdout))
            .map_err(|detail| parse_error("ip", &args, detail))?;
        if let Some(dev) = dev {
            return Ok(dev);
        }
    }
    Err(ShapingError::NoDefaultRoute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_the_kernel_limit() {
        assert_eq!(default_ifb_name("eth0"), "ifb-eth0");
        assert_eq!(default_ifb_name("enp0s31f6u1u2u3"), "ifb-enp0s31f6u1");
        assert!(default_ifb_name("a-very-long-interface").len() <= 15);
    }
}
