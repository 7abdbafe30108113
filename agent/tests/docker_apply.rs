//! The Docker half of apply against the real engine (SPEC §2.8).
//!
//! Make-before-break: a container whose replacement cannot be created keeps running untouched,
//! one whose replacement cannot start is started again, a good replacement ends as exactly one
//! container of the canonical name, and a replacement left behind by a crash is promoted or
//! cleaned up. These containers run a shell loop from the locally built `vpn-fleet/pause:local`
//! image (no registry is reachable; `deploy/images/pause/build.sh` builds it from a static
//! busybox) with network mode `none`.
//!
//! Reconcile repairs: a Shadowsocks service (the local ssmanager image) whose container is
//! removed by hand comes back on the next reconcile, with its users, and that is a repair for
//! the next report. Needs Docker; fails (does not skip) without it.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use vpn_agent::apply::Applier;
use vpn_agent::apply::docker::{
    ContainerSpec, Docker, EnsureOutcome, LABEL_HOST, LABEL_MANAGED_BY, LABEL_SPEC_HASH,
    MANAGED_BY, ManagedContainer, temporary_name,
};
use vpn_agent::report::{self, NetRepairs};
use vpn_shared::model::{
    Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
};
use vpn_shared::proto::Outcome;

const IMAGE: &str = "vpn-fleet/pause:local";

/// Force-removes every container of the host, also when the test panics.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_HOST}={}", self.0);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// A fresh host id per test, so tests and earlier runs never see each other's containers.
fn host() -> (String, Cleanup) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let host = format!(
        "it-mbb-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    (host.clone(), Cleanup(host))
}

async fn docker_with_image() -> Docker {
    let docker = Docker::connect().await.unwrap();
    if docker.client().inspect_image(IMAGE).await.is_err() {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/images/pause/build.sh");
        let status = Command::new("bash").arg(&script).status().unwrap();
        assert!(status.success(), "{} failed", script.display());
    }
    docker
}

fn spec(host: &str, generation: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("vpn-{host}-svc"),
        image: IMAGE.into(),
        // busybox as PID 1 ignores SIGTERM; this one exits on it, as real engines do, so a
        // replacement does not wait out the stop timeout.
        cmd: [
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![format!("GENERATION={generation}")],
        binds: vec![],
        network_mode: "none".into(),
        labels: BTreeMap::from([(LABEL_HOST.into(), host.into())]),
        cap_add: Vec::new(),
        devices: Vec::new(),
    }
}

/// Id and running flag of the container called `name`.
async fn inspect(docker: &Docker, name: &str) -> (String, bool) {
    let c = docker
        .client()
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let running = c.state.and_then(|s| s.running).unwrap_or(false);
    (c.id.unwrap(), running)
}

fn names(list: &[ManagedContainer]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test]
async fn a_replacement_that_cannot_be_created_leaves_the_old_container_serving() {
    let docker = docker_with_image().await;
    let (host, _cleanup) = host();
    let good = spec(&host, "1");
    assert_eq!(docker.ensure(&good).await.unwrap(), EnsureOutcome::Created);
    let (id, running) = inspect(&docker, &good.name).await;
    assert!(running);

    // An image that does not exist (nothing can be pulled here): creation fails, the step
    // that runs while the old container still serves.
    let mut bad = spec(&host, "2");
    bad.image = "vpn-fleet/no-such-image:missing".into();
    let err = docker.ensure(&bad).await.unwrap_err().to_string();
    assert!(err.contains("vpn-fleet/no-such-image:missing"), "{err}");

    assert_eq!(inspect(&docker, &good.name).await, (id.clone(), true));
    let list = docker.list_managed(&host).await.unwrap();
    assert_eq!(names(&list), [good.name.as_str()], "no temporary left");
    assert_eq!(list[0].spec_hash, Some(good.spec_hash()));

    // Applying the working spec again changes nothing.
    assert_eq!(
        docker.ensure(&good).await.unwrap(),
        EnsureOutcome::Unchanged
    );
    assert_eq!(inspect(&docker, &good.name).await.0, id);
}

#[tokio::test]
async fn a_replacement_that_does_not_start_is_rolled_back() {
    let docker = docker_with_image().await;
    let (host, _cleanup) = host();
    let good = spec(&host, "1");
    docker.ensure(&good).await.unwrap();
    let (id, _) = inspect(&docker, &good.name).await;

    // Created fine, but its command does not exist in the image: the start fails.
    let mut broken = spec(&host, "2");
    broken.cmd = vec!["/bin/no-such-program".into()];
    let err = docker.ensure(&broken).await.unwrap_err().to_string();
    assert!(err.contains("start"), "{err}");

    assert_eq!(
        inspect(&docker, &good.name).await,
        (id.clone(), true),
        "the old container was started again"
    );
    let list = docker.list_managed(&host).await.unwrap();
    assert_eq!(names(&list), [good.name.as_str()], "no temporary left");

    // The periodic reconcile applies the same broken spec again 10 s later: it is held back
    // with the same error, and the working container is not stopped again.
    let first_start = started_at(&docker, &good.name).await;
    let again = docker.ensure(&broken).await.unwrap_err().to_string();
    assert_eq!(
        again, err,
        "the same message, so it is logged and reported once"
    );
    assert_eq!(started_at(&docker, &good.name).await, first_start);
    assert_eq!(inspect(&docker, &good.name).await, (id, true));
}

async fn started_at(docker: &Docker, name: &str) -> Option<String> {
    let c = docker
        .client()
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    c.state.and_then(|s| s.started_at)
}

#[tokio::test]
async fn a_good_replacement_ends_as_one_container_with_the_new_spec() {
    let docker = docker_with_image().await;
    let (host, _cleanup) = host();
    let old = spec(&host, "1");
    docker.ensure(&old).await.unwrap();
    let (old_id, _) = inspect(&docker, &old.name).await;

    let new = spec(&host, "2");
    assert_eq!(docker.ensure(&new).await.unwrap(), EnsureOutcome::Recreated);
    let list = docker.list_managed(&host).await.unwrap();
    assert_eq!(names(&list), [new.name.as_str()]);
    assert_eq!(list[0].spec_hash, Some(new.spec_hash()));
    assert!(list[0].running);
    assert_ne!(list[0].id, old_id);
    assert_eq!(docker.ensure(&new).await.unwrap(), EnsureOutcome::Unchanged);
}

/// `docker create` of an owned container under the replacement's name, as a crash would leave.
fn leave_replacement(host: &str, spec: &ContainerSpec) {
    let out = Command::new("docker")
        .args(["create", "--network", "none", "--name"])
        .arg(temporary_name(&spec.name))
        .args(["--label", &format!("{LABEL_MANAGED_BY}={MANAGED_BY}")])
        .args(["--label", &format!("{LABEL_HOST}={host}")])
        .args([
            "--label",
            &format!("{LABEL_SPEC_HASH}={}", spec.spec_hash()),
        ])
        .args([IMAGE, "/bin/sleep", "3600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn replacements_left_by_a_crash_are_promoted_or_removed() {
    let docker = docker_with_image().await;
    let (host, _cleanup) = host();
    let s = spec(&host, "1");

    // Crash after the old container was removed, before the rename: the next ensure finishes.
    leave_replacement(&host, &s);
    assert_eq!(docker.ensure(&s).await.unwrap(), EnsureOutcome::Recreated);
    let list = docker.list_managed(&host).await.unwrap();
    assert_eq!(names(&list), [s.name.as_str()]);
    assert!(list[0].running);

    // Crash before the switch: the old container still runs, the leftover goes with the next
    // stale sweep even though the service's name prefix is kept.
    leave_replacement(&host, &spec(&host, "2"));
    let removed = docker
        .remove_stale(
            &host,
            std::slice::from_ref(&s.name),
            &[format!("{}.", s.name)],
        )
        .await
        .unwrap();
    assert_eq!(removed, [temporary_name(&s.name)]);
    assert_eq!(
        names(&docker.list_managed(&host).await.unwrap()),
        [s.name.as_str()]
    );
}

/// A container holding a network namespace for the service containers (`container:NAME`), so
/// their ports are private to the test. Removed on drop.
struct Netns(String);

impl Netns {
    fn start(host: &str) -> Netns {
        let name = format!("{host}-netns");
        let out = Command::new("docker")
            .args(["run", "-d", "--network", "none", "--name", &name, IMAGE])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn shadowsocks_state() -> DesiredState {
    let mut s = DesiredState {
        generation: 3,
        ..Default::default()
    };
    s.services.insert(
        "ss".into(),
        ServiceSpec {
            name: "ss".into(),
            protocol: Protocol::Shadowsocks,
            port: 8388,
            image: None,
            options: ServiceOptions::Shadowsocks {
                method: "chacha20-ietf-poly1305".into(),
            },
            bandwidth: Default::default(),
            new_conn_rate: None,
        },
    );
    s.users.insert(
        "alice".into(),
        UserSpec {
            name: "alice".into(),
            id: "id-alice".into(),
            credentials: vec![Credential::Shadowsocks {
                service: "ss".into(),
                port: 8388,
                password: "pw-alice".into(),
            }],
            bandwidth: Default::default(),
        },
    );
    s
}

#[tokio::test]
async fn a_container_removed_by_hand_is_repaired_by_the_next_reconcile() {
    let docker = docker_with_image().await;
    let ss_image = vpn_agent::drivers::shadowsocks::DEFAULT_IMAGE;
    if docker.client().inspect_image(ss_image).await.is_err() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/images/shadowsocks-rust/build.sh");
        let status = Command::new("bash").arg(&script).status().unwrap();
        assert!(status.success(), "{} failed", script.display());
    }
    // Short: container names keep 12 characters of the host id.
    let host = format!("rep{}", std::process::id());
    let _cleanup = Cleanup(host.clone());
    let netns = Netns::start(&host);
    let dir = tempfile::tempdir().unwrap();
    let applier = Applier::new(
        docker.clone(),
        &host,
        dir.path(),
        &format!("container:{}", netns.0),
    );
    let state = shadowsocks_state();

    let applied = applier.apply_report(&state).await;
    for r in &applied.results {
        assert_eq!(r.outcome, Outcome::Ok, "{}", r.resource);
    }
    assert_eq!(applied.containers["ss"], EnsureOutcome::Created);

    // The operator (or a cleanup script) removes the service container by hand.
    let name = applier.container_name("ss");
    let out = Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    assert!(out.status.success());

    // The periodic reconcile re-applies the same state: the container and its user come back,
    // and both are repairs the next report carries.
    let reconciled = applier.apply_report(&state).await;
    for r in &reconciled.results {
        assert_eq!(r.outcome, Outcome::Ok, "{}", r.resource);
    }
    let repairs = report::repairs(&reconciled, NetRepairs::default(), 1_700_000_000);
    let pairs: Vec<(&str, String)> = repairs
        .iter()
        .map(|r| (r.resource.as_str(), r.action.clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            (
                "service/ss",
                format!("container {name} was missing; created")
            ),
            (
                "service/ss",
                "engine users brought back to the state: 1 added, 0 removed".to_owned()
            ),
        ]
    );

    // The report lists it running, as the service's container.
    let health = docker.container_health(&host).await.unwrap();
    let statuses: Vec<_> = health
        .iter()
        .map(|c| report::container_status(&c.name, &c.labels, c.running, c.restarts))
        .collect();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(
        (statuses[0].name.as_str(), statuses[0].resource.as_str()),
        (name.as_str(), "service/ss")
    );
    assert!(statuses[0].running);

    // Nothing drifted since: the next reconcile repairs nothing.
    let quiet = applier.apply_report(&state).await;
    assert!(report::repairs(&quiet, NetRepairs::default(), 1).is_empty());
}
