//! Child processes whose stdout and stderr go to a log file, and which die with their owner.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::wait::poll_until;

/// A running child process; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Set once the child has been reaped, so we never signal a recycled pid.
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdin closed and both output streams appended to `log`. The process is
    /// started through `setpriv --pdeathsig KILL`, so it dies with the test process even when
    /// that is killed before it can clean up (a timeout, Ctrl-C). The signal follows the
    /// *thread* that spawned it: spawn long-lived processes from the test's own thread.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Proc> {
        let mut cmd = with_parent_death_signal(&cmd);
        let mut file = open_log(log)?;
        writeln!(file, "=== harness: starting {name}: {cmd:?}")?;
        let stderr = file.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.note("killed (SIGKILL)");
    }

    /// SIGTERM, wait up to `grace` for a clean exit, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if self.is_running() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            if poll_until(grace, || !self.is_running()).is_none() {
                self.note("did not exit after SIGTERM");
            }
        }
        self.kill();
    }

    /// Appends a harness line to the process's log (to explain what a reader will see there).
    pub fn note(&self, what: &str) {
        if let Ok(mut f) = open_log(&self.log) {
            let _ = writeln!(f, "=== harness: {} {what}", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `cmd` rewritten as `setpriv --pdeathsig KILL -- PROGRAM ARGS…` with the same environment and
/// working directory. `setpriv` execs the program, so the pid stays the program's.
fn with_parent_death_signal(cmd: &Command) -> Command {
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args(["--pdeathsig", "KILL", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))
}

/// The last `n` lines of a log file (for failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
