//! Applying a desired state to this host: containers through [`docker`], users through the
//! protocol [`Driver`](crate::drivers::Driver)s, which this module sees only through that trait.
//!
//! Apply is idempotent and per object (SPEC §2.3): a container is recreated only when its own
//! spec hash changed, users are added and removed hot through the engine's API, and only this
//! host's labelled containers are ever removed.

pub mod docker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use vpn_shared::fsutil::{SECRET_MODE, write_atomic};
use vpn_shared::model::{DesiredState, ServiceSpec};
use vpn_shared::proto::ResourceResult;

use self::docker::{Docker, EnsureOutcome, LABEL_HOST};
use crate::drivers::{self, Rendered, ServiceCtx, UsersReport, service_resource, user_resource};

/// How long an apply waits for a freshly (re)created engine to answer its API.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Applier::reconcile_users`] waits for an engine that was just restarted by Docker.
const RECONCILE_READY: Duration = Duration::from_secs(2);

/// Applies desired states to the local Docker engine on behalf of one host.
#[derive(Debug)]
pub struct Applier {
    pub docker: Docker,
    pub host_id: String,
    /// The agent's data directory; per-service run directories live in `run/` under it.
    pub data_dir: PathBuf,
    /// `host` in production; tests may use `container:NAME`.
    pub network_mode: String,
    /// Serializes `apply` and `reconcile_users` so two of them never race on one manager.
    lock: Mutex<()>,
}

/// What [`Applier::apply_report`] did, for callers and tests that need more than results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub results: Vec<ResourceResult>,
    /// Per service name, what happened to its container (`service:user` for a user's own).
    pub containers: BTreeMap<String, EnsureOutcome>,
    /// The Docker name of each container in `containers`, by the same key.
    pub container_names: BTreeMap<String, String>,
    /// Per service whose engine's users had to change: manager `add`s and `remove`s.
    pub user_changes: BTreeMap<String, (usize, usize)>,
    /// Manager `add`s and `remove`s made over all services.
    pub adds: usize,
    pub removes: usize,
    /// Stale containers of this host that were removed.
    pub removed: Vec<String>,
    /// Services whose own container was created, recreated or started: every counter of
    /// their engine starts from zero (for the ledger).
    pub restarted_services: BTreeSet<String>,
    /// `(service, user name)` whose counter the driver started again from zero.
    pub restarted_counters: BTreeSet<(String, String)>,
}

/// What [`Applier::ensure_service`] did to a service's containers.
#[derive(Debug, Default)]
struct Ensured {
    /// Every container the service runs now (or keeps running after a failure).
    names: Vec<String>,
    /// Per container: the service name, or `service:user` for a user's own container, its
    /// Docker name and what happened to it.
    outcomes: Vec<(String, String, EnsureOutcome)>,
    /// Users whose own container could not be ensured, with the reason.
    user_failures: BTreeMap<String, String>,
}

/// Keeps names usable as Docker container names and as single path components.
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() { "x".into() } else { out }
}

impl Applier {
    pub fn new(docker: Docker, host_id: &str, data_dir: &Path, network_mode: &str) -> Self {
        Applier {
            docker,
            host_id: host_id.to_owned(),
            data_dir: data_dir.to_owned(),
            network_mode: network_mode.to_owned(),
            lock: Mutex::new(()),
        }
    }

    /// `vpn-<host-short>-<service>`; the host part keeps agents sharing an engine apart.
    pub fn container_name(&self, service: &str) -> String {
        let host: String = sanitize(&self.host_id).chars().take(12).collect();
        format!("vpn-{host}-{}", sanitize(service))
    }

    /// The name prefix of the containers a service runs per user (`vpn-<host>-<service>.`):
    /// service names never hold a `.`, so no other service's container shares it.
    pub fn user_container_prefix(&self, service: &str) -> String {
        format!("{}.", self.container_name(service))
    }

    /// Where a service's manager socket lives (bind-mounted into its container).
    pub fn run_dir(&self, service: &str) -> PathBuf {
        run_dir(&self.data_dir, service)
    }

    /// Applies `state`: one result per service and per user credential.
    pub async fn apply(&self, state: &DesiredState) -> Vec<ResourceResult> {
        self.apply_report(state).await.results
    }

    /// Like [`apply`](Self::apply), also saying which containers and ports changed.
    pub async fn apply_report(&self, state: &DesiredState) -> ApplyReport {
        let _guard = self.lock.lock().await;
        let mut report = ApplyReport::default();
        let mut keep = Vec::new();
        let mut keep_prefixes = Vec::new();
        for service in state.services.values() {
            // Kept whatever happens below: a service that fails to apply keeps what runs.
            keep.push(self.container_name(&service.name));
            let ensured = match self.ensure_service(state, service).await {
                Ok(ensured) => ensured,
                Err(msg) => {
                    warn!(service = %service.name, error = %msg, "service container not ensured");
                    report.results.extend(failed_service(state, service, &msg));
                    // Not rendered: its users' containers are unknown, so all of them stay.
                    keep_prefixes.push(self.user_container_prefix(&service.name));
                    continue;
                }
            };
            keep.extend(ensured.names);
            let own = self.container_name(&service.name);
            for (key, name, outcome) in ensured.outcomes {
                // Only the service's own container restarts the service's counters; another
                // engine of it (a Shadowsocks manager of another block of ports) restarts its
                // users' counters, which its driver reports when it adds their ports again.
                if key == service.name && name == own && outcome != EnsureOutcome::Unchanged {
                    report.restarted_services.insert(key.clone());
                }
                // Several containers of one key: the one that changed is the one to report.
                let seen = report.containers.get(&key);
                if seen.is_none_or(|o| *o == EnsureOutcome::Unchanged) {
                    report.container_names.insert(key.clone(), name);
                    report.containers.insert(key, outcome);
                }
            }
            let sr = self.run_driver(state, service, READY_TIMEOUT).await;
            report.adds += sr.adds;
            report.removes += sr.removes;
            report.restarted_counters.extend(
                sr.counters_restarted
                    .iter()
                    .map(|u| (service.name.clone(), u.clone())),
            );
            if sr.adds + sr.removes > 0 {
                report
                    .user_changes
                    .insert(service.name.clone(), (sr.adds, sr.removes));
            }
            // A user whose own container failed reports that failure instead.
            let failed = &ensured.user_failures;
            report.results.extend(sr.results.into_iter().filter(|r| {
                !failed
                    .keys()
                    .any(|u| r.resource == user_resource(u, &service.name))
            }));
            for (user, msg) in ensured.user_failures {
                warn!(service = %service.name, %user, error = %msg, "user container not ensured");
                let resource = user_resource(&user, &service.name);
                report.results.push(ResourceResult::error(resource, msg));
            }
        }
        match self
            .docker
            .remove_stale(&self.host_id, &keep, &keep_prefixes)
            .await
        {
            Ok(removed) => report.removed = removed,
            Err(e) => report
                .results
                .push(ResourceResult::error("host/containers", e.to_string())),
        }
        let changed = report.adds + report.removes + report.removed.len() > 0
            || report
                .containers
                .values()
                .any(|o| *o != EnsureOutcome::Unchanged);
        if changed {
            info!(
                host = %self.host_id,
                generation = state.generation,
                adds = report.adds,
                removes = report.removes,
                removed = report.removed.len(),
                "state applied"
            );
        } else {
            debug!(host = %self.host_id, generation = state.generation, "state applied, nothing changed");
        }
        report
    }

    /// Re-reads every service's manager and re-adds or removes users; touches no container.
    ///
    /// Cheap when nothing changed (one `list` per service), so it can run every ~10 s and bring
    /// users back after Docker restarted a container (a fresh ssmanager has no ports open).
    pub async fn reconcile_users(&self, state: &DesiredState) -> Vec<ResourceResult> {
        let _guard = self.lock.lock().await;
        let mut results = Vec::new();
        for service in state.services.values() {
            let sr = self.run_driver(state, service, RECONCILE_READY).await;
            if sr.adds + sr.removes > 0 {
                info!(service = %service.name, adds = sr.adds, removes = sr.removes, "users reconciled");
            }
            results.extend(sr.results);
        }
        results
    }

    /// Every service's per-user counters through its driver, read without reset; under the
    /// apply lock, so a reading never interleaves with the changes an apply makes.
    pub async fn read_counters(
        &self,
        state: &DesiredState,
    ) -> Vec<(String, Result<drivers::Counters, drivers::DriverError>)> {
        let _guard = self.lock.lock().await;
        let mut out = Vec::new();
        for service in state.services.values() {
            let run_dir = self.run_dir(&service.name);
            let container = self.container_name(&service.name);
            let ctx = ServiceCtx {
                container: &container,
                run_dir: &run_dir,
                network_mode: &self.network_mode,
            };
            let driver = drivers::driver(service.protocol);
            let counters = driver.read_counters(state, service, &ctx).await;
            out.push((service.name.clone(), counters));
        }
        out
    }

    /// Renders the service through its driver, writes the files its engines read, then makes
    /// sure its containers run with those specs. `Err` when the service itself cannot run; a
    /// failed per-user container is that user's failure only.
    async fn ensure_service(
        &self,
        state: &DesiredState,
        service: &ServiceSpec,
    ) -> Result<Ensured, String> {
        let run_dir = self.run_dir(&service.name);
        create_private_dir(&run_dir).map_err(|e| format!("run dir {}: {e}", run_dir.display()))?;
        let name = self.container_name(&service.name);
        let ctx = ServiceCtx {
            container: &name,
            run_dir: &run_dir,
            network_mode: &self.network_mode,
        };
        let driver = drivers::driver(service.protocol);
        let rendered = driver
            .render(service, state, &ctx)
            .map_err(|e| e.to_string())?;
        let mut ensured = Ensured::default();
        for mut r in rendered {
            let outcome = self.ensure_one(&run_dir, &mut r).await;
            match (r.user, outcome) {
                (None, Ok(o)) => {
                    ensured
                        .outcomes
                        .push((service.name.clone(), r.spec.name.clone(), o));
                }
                (None, Err(msg)) => return Err(msg),
                (Some(user), Ok(o)) => {
                    let key = format!("{}:{user}", service.name);
                    ensured.outcomes.push((key, r.spec.name.clone(), o));
                }
                (Some(user), Err(msg)) => {
                    ensured.user_failures.insert(user, msg);
                }
            }
            ensured.names.push(r.spec.name);
        }
        Ok(ensured)
    }

    /// Writes one rendered container's files, then ensures the container.
    async fn ensure_one(&self, run_dir: &Path, r: &mut Rendered) -> Result<EnsureOutcome, String> {
        for file in &r.files {
            // Rewritten every time: the files on disk always match the spec's labels. Mode 0600:
            // some hold keys (a Reality private key).
            let path = run_dir.join(drivers::sanitize_file_name(&file.name));
            // Unchanged files are not rewritten: an Xray config of many users is megabytes,
            // and every apply renders it again.
            if std::fs::read(&path).is_ok_and(|old| old == file.contents) {
                continue;
            }
            write_atomic(&path, &file.contents, SECRET_MODE)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        r.spec
            .labels
            .insert(LABEL_HOST.into(), self.host_id.clone());
        self.docker.ensure(&r.spec).await.map_err(|e| e.to_string())
    }

    async fn run_driver(
        &self,
        state: &DesiredState,
        service: &ServiceSpec,
        wait: Duration,
    ) -> UsersReport {
        let run_dir = self.run_dir(&service.name);
        let container = self.container_name(&service.name);
        let ctx = ServiceCtx {
            container: &container,
            run_dir: &run_dir,
            network_mode: &self.network_mode,
        };
        let driver = drivers::driver(service.protocol);
        let report = driver.apply_users(state, service, &ctx, wait).await;
        if !report.end.is_empty() {
            let (ports, marks) = (&report.end.ports, &report.end.marks);
            match end_sessions(&self.docker, &container, &report.end).await {
                Ok(n) => {
                    info!(%container, ?ports, ?marks, sessions = n, "removed users' sessions ended")
                }
                Err(e) => {
                    warn!(%container, ?ports, ?marks, error = %e, "could not end removed users' sessions")
                }
            }
        }
        report
    }
}

/// Ends the TCP sessions on `ports` in the container's network namespace; returns how many.
///
/// ssmanager's `remove` aborts a port's listener but not the connections it already accepted
/// (seen with shadowsocks-rust 1.25), while SPEC §2.4 wants a removed user's sessions ended. The
/// kernel's SOCK_DESTROY (`ss -K`, CONFIG_INET_DIAG_DESTROY, on in common distribution kernels)
/// resets exactly the sockets whose local port is one of `ports` — no other user's. Needs root,
/// `nsenter` and `ss` on the host. A failure is logged, not fatal: the port itself is closed.
async fn end_sessions(
    docker: &Docker,
    container: &str,
    end: &drivers::EndSessions,
) -> Result<usize, String> {
    let pid = docker
        .container_pid(container)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("container {container} is not running"))?;
    let filter: Vec<String> = end
        .ports
        .iter()
        .map(|p| format!("sport = :{p}"))
        .chain(end.marks.iter().map(|m| format!("fwmark = {m:#x}")))
        .collect();
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.args([
        "-t",
        &pid.to_string(),
        "-n",
        "ss",
        "-K",
        "-H",
        "-t",
        "state",
        "connected",
    ])
    .arg(format!("( {} )", filter.join(" or ")))
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(5), cmd.output())
        .await
        .map_err(|_| "ss -K timed out".to_owned())?
        .map_err(|e| format!("nsenter ss -K: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        return Err(format!("ss -K: {}", stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// `<data_dir>/run/<service>/`: a service's run directory, bind-mounted at the same path.
pub fn run_dir(data_dir: &Path, service: &str) -> PathBuf {
    data_dir.join("run").join(sanitize(service))
}

/// Results for a service whose container could not be ensured, and for each of its users.
fn failed_service(state: &DesiredState, service: &ServiceSpec, msg: &str) -> Vec<ResourceResult> {
    let mut results = vec![ResourceResult::error(service_resource(&service.name), msg)];
    for (user, _) in state.users_of(&service.name) {
        let user_msg = format!("service {} not running: {msg}", service.name);
        results.push(ResourceResult::error(
            user_resource(&user.name, &service.name),
            user_msg,
        ));
    }
    results
}

/// Creates `dir` (and parents) readable by its owner only: the manager socket inside it has no
/// authentication of its own.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sanitize_keeps_names_docker_and_path_safe() {
        assert_eq!(sanitize("shadowsocks"), "shadowsocks");
        assert_eq!(sanitize("../etc/x y"), "---etc-x-y");
        assert_eq!(sanitize(""), "x");
    }
}
