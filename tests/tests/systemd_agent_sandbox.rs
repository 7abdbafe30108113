//! The agent unit's capability set is exactly what its `nsenter -t PID -n …` path needs, shown
//! under a real systemd: programs run in the sandbox of `deploy/systemd/vpn-agent.service`
//! (the shipped file; only `ExecStart`, the service type and the restart policy are changed,
//! and one capability at a time removed) enter the network namespace of a root process that
//! holds more capabilities than the agent — as a service container's process does — and list
//! its nftables tables, as the agent's `ss -K` and `nft` do.
//!
//! With the unit's three capabilities the probe succeeds; without `CAP_SYS_PTRACE` opening
//! `/proc/PID/ns/net` is refused, without `CAP_SYS_ADMIN` `setns` is, and without
//! `CAP_NET_ADMIN` netlink is. The host is a container whose PID 1 is systemd
//! (`deploy/images/systemd-host/build.sh`; this machine's PID 1 is not systemd).
//!
//! Needs root and Docker.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test: a failed unwrap is a failure with its message, stderr is its report"
)]

use vpn_e2e::docker::Network;
use vpn_e2e::env::{self, workspace_root};
use vpn_e2e::fleet::serial_guard;
use vpn_e2e::install::{SYSTEMD_HOST_IMAGE, SystemdHost};

const CAPS: [&str; 3] = ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"];

/// The shipped agent unit turned into a one-shot probe running `command` with `caps`, its
/// stderr in `err_file` (opened by systemd, outside the sandbox).
fn probe_unit(command: &str, caps: &[&str], err_file: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("deploy/systemd/vpn-agent.service"))
        .unwrap_or_else(|e| panic!("reading deploy/systemd/vpn-agent.service: {e}"));
    let mut seen = [false; 4];
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                seen[0] = true;
                format!("ExecStart={command}\nStandardError=file:{err_file}")
            } else if l == "Type=exec" {
                seen[1] = true;
                "Type=oneshot".into()
            } else if l == "Restart=always" {
                seen[2] = true;
                "Restart=no".into()
            } else if l == format!("CapabilityBoundingSet={}", CAPS.join(" ")) {
                seen[3] = true;
                format!("CapabilityBoundingSet={}", caps.join(" "))
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        seen,
        [true; 4],
        "vpn-agent.service no longer has the lines this test rewrites (ExecStart=, Type=exec, \
         Restart=always, CapabilityBoundingSet={})",
        CAPS.join(" ")
    );
    lines.join("\n") + "\n"
}

#[test]
fn agent_unit_capabilities_are_exactly_what_nsenter_and_netlink_need() {
    let _serial = serial_guard();
    env::require_root();
    env::require_docker();
    env::require_image(SYSTEMD_HOST_IMAGE, "deploy/images/systemd-host/build.sh");

    let id = format!("sb{:x}", std::process::id());
    let network = Network::create(&format!("vpn-ans-{id}"), &id).unwrap();
    let host = SystemdHost::start(&format!("vpn-ans-{id}-h"), &network, &id, false);
    let result = host.map(|host| {
        host.wait_booted().unwrap();
        check(&host);
    });
    let _ = network.remove();
    result.unwrap();
}

fn check(host: &SystemdHost) {
    // A root process in a network namespace of its own with every capability the container
    // has: more than the agent's, like a service container's process.
    host.exec_ok(&[
        "systemd-run",
        "--unit=vpn-probe-target",
        "unshare",
        "--net",
        "sleep",
        "600",
    ])
    .unwrap();
    let mut pid = String::new();
    vpn_e2e::wait_until(
        std::time::Duration::from_secs(10),
        "the target process runs",
        || {
            pid = host
                .exec_ok(&["systemctl", "show", "-P", "MainPID", "vpn-probe-target"])
                .unwrap_or_default()
                .trim()
                .to_string();
            !pid.is_empty() && pid != "0"
        },
    );
    let command = format!("/usr/bin/nsenter -t {pid} -n /usr/sbin/nft list tables");

    // Each variant and the refusal its stderr must show (None: it must pass).
    let mut variants: Vec<(String, Vec<&str>, Option<&str>)> =
        vec![("all three".into(), CAPS.to_vec(), None)];
    for (missing, refusal) in CAPS.into_iter().zip([
        // nft's netlink request
        "Operation not permitted",
        // setns(2)
        "reassociate to namespace 'ns/net' failed: Operation not permitted",
        // open(/proc/PID/ns/net): the target holds capabilities the agent does not
        "cannot open /proc/",
    ]) {
        let caps: Vec<&str> = CAPS.iter().copied().filter(|c| *c != missing).collect();
        variants.push((format!("without {missing}"), caps, Some(refusal)));
    }
    for (i, (name, caps, refusal)) in variants.iter().enumerate() {
        let unit = format!("vpn-agent-probe-{i}.service");
        host.write_file(
            &format!("/etc/systemd/system/{unit}"),
            &probe_unit(&command, caps, &format!("/run/vpn-agent-probe-{i}.err")),
        )
        .unwrap();
        host.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
        let started = host.exec(&["systemctl", "start", &unit]).unwrap();
        let stderr = host
            .exec_ok(&["cat", &format!("/run/vpn-agent-probe-{i}.err")])
            .unwrap_or_default();
        eprintln!(
            "{name} ({}): {} {}",
            caps.join(" "),
            if started.status.success() {
                "passed"
            } else {
                "refused"
            },
            stderr.trim()
        );
        match refusal {
            None => assert!(
                started.status.success(),
                "probe {name} failed in the agent's sandbox: {stderr}\n{}",
                host.journal(&unit)
            ),
            Some(why) => assert!(
                !started.status.success() && stderr.contains(why),
                "probe {name} was not refused with {why:?} in the agent's sandbox: {stderr}"
            ),
        }
    }
}
