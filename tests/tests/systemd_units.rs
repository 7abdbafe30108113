//! The systemd units of `deploy/systemd/` checked offline with systemd's own tools:
//! `systemd-analyze verify` (syntax, directives, dependencies: any warning fails), `systemd-analyze
//! security --offline=true` (the exposure scores, which docs/INSTALL.md quotes) and
//! `systemd-sysusers` (the controller's user, made in a scratch root).
//!
//! That the units also *start* and sandbox the daemons as intended is shown by
//! `install_ansible.rs`, which installs and runs them under a real systemd.
//!
//! Needs `systemd-analyze` and `systemd-sysusers` (Debian package `systemd`, installed by
//! `deploy/scripts/setup.sh`); without them the tests fail, naming the remedy.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test: a failed unwrap is a failure with its message, stderr is its report"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vpn_e2e::env::workspace_root;
use vpn_e2e::install::tool_or_skip;

/// The shipped units and the most exposure `systemd-analyze security` may give each
/// (0 = locked down, 10 = unprotected). The agent runs as root with CAP_NET_ADMIN,
/// CAP_SYS_ADMIN and CAP_SYS_PTRACE (see the unit's header), hence its higher figure.
const UNITS: [(&str, &str, f64); 2] = [
    ("vpn-controller.service", "vpn-controller", 1.5),
    ("vpn-agent.service", "vpn-agent", 3.0),
];

fn unit_dir() -> PathBuf {
    workspace_root().join("deploy/systemd")
}

/// Copies of the units whose `ExecStart` names `/bin/true` instead of `/usr/local/bin/NAME`:
/// `verify` insists that the program exists, and this machine has not installed the
/// binaries there. Nothing else in the files is changed.
fn units_with_stub_binaries(dir: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|(unit, bin, _)| {
            let text = std::fs::read_to_string(unit_dir().join(unit))
                .unwrap_or_else(|e| panic!("reading deploy/systemd/{unit}: {e}"));
            let from = format!("/usr/local/bin/{bin} ");
            assert!(
                text.contains(&format!("ExecStart={from}")),
                "{unit}: ExecStart no longer runs {from}"
            );
            let path = dir.join(unit);
            std::fs::write(&path, text.replace(&from, "/bin/true "))
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify_without_a_warning() {
    let Some(analyze) = tool_or_skip(
        "units_pass_systemd_analyze_verify_without_a_warning",
        "systemd-analyze",
        "apt-get install systemd",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = units_with_stub_binaries(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", analyze.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `verify` exits 0 on an unknown directive or a bad value it ignores: only silence passes.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {units:?} ({}):\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `systemd-analyze security --offline=true` of one unit file: its overall exposure.
fn exposure(analyze: &Path, unit: &Path) -> (f64, String) {
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|e| panic!("running systemd-analyze security: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_once(": "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in `systemd-analyze security` of {} ({}):\n{stdout}{}",
                unit.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (score, stdout)
}

#[test]
fn exposure_scores_are_low_and_the_ones_docs_install_quotes() {
    let Some(analyze) = tool_or_skip(
        "exposure_scores_are_low_and_the_ones_docs_install_quotes",
        "systemd-analyze",
        "apt-get install systemd",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = units_with_stub_binaries(dir.path());
    let docs = std::fs::read_to_string(workspace_root().join("docs/INSTALL.md"))
        .unwrap_or_else(|e| panic!("reading docs/INSTALL.md: {e}"));
    for ((unit, _, max), path) in UNITS.iter().zip(&units) {
        let (score, report) = exposure(&analyze, path);
        eprintln!("{unit}: exposure {score:.1} (at most {max:.1})");
        assert!(
            score <= *max,
            "{unit}: exposure {score:.1} is above {max:.1}; the report:\n{report}"
        );
        let quoted = format!("`{unit}` | {score:.1}");
        assert!(
            docs.contains(&quoted),
            "docs/INSTALL.md does not quote the measured exposure of {unit} ({quoted:?} in its \
             table): update it"
        );
    }
}

#[test]
fn sysusers_snippet_makes_the_controller_user() {
    let Some(sysusers) = tool_or_skip(
        "sysusers_snippet_makes_the_controller_user",
        "systemd-sysusers",
        "apt-get install systemd",
    ) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let snippet = std::fs::File::open(unit_dir().join("vpn-controller.sysusers"))
        .unwrap_or_else(|e| panic!("opening deploy/systemd/vpn-controller.sysusers: {e}"));
    // From stdin: with --root a file argument would be looked up inside the scratch root.
    let out = Command::new(&sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg("-")
        .stdin(Stdio::from(snippet))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", sysusers.display()));
    assert!(
        out.status.success(),
        "systemd-sysusers failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("vpn-controller:"))
        .unwrap_or_else(|| panic!("no vpn-controller in the scratch /etc/passwd:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "not a system uid: {user}");
    assert_eq!(fields[5], "/var/lib/vpn-controller", "home: {user}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "shell: {user}");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("vpn-controller:")),
        "no vpn-controller group:\n{group}"
    );
}
