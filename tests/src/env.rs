//! Preconditions of the end-to-end tests, checked loudly.
//!
//! A test that needs something missing fails with a message naming the missing piece and the
//! command that provides it (`deploy/scripts/setup.sh` installs all of them). Nothing here skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The image of a simulated host (built by `deploy/images/pause/build.sh`).
pub const PAUSE_IMAGE: &str = "vpn-fleet/pause:local";
/// The Shadowsocks engine image the agent runs (built by `deploy/images/shadowsocks-rust/build.sh`).
pub const SHADOWSOCKS_IMAGE: &str = "vpn-fleet/shadowsocks-rust:local";

const SETUP_HINT: &str = "run `deploy/scripts/setup.sh` (as root) to install everything the \
                          end-to-end tests need";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Panics unless the process runs as root (namespaces, nsenter and Docker need it).
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        uid == "0",
        "end-to-end tests must run as root (effective uid is {uid}): they create network \
         namespaces, enter them with nsenter and drive Docker"
    );
}

/// Panics unless `docker info` answers.
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`docker info` failed ({}): {}\nstart the daemon (e.g. `dockerd >/var/log/dockerd.log \
             2>&1 &`) or {SETUP_HINT}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("cannot run `docker` ({e}): apt-get install docker.io, or {SETUP_HINT}"),
    }
}

/// Finds an executable on PATH or in `~/.cargo/bin`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/root/.cargo/bin"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Like [`find_tool`], but panics with `install` as the remedy.
pub fn require_tool(name: &str, install: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("`{name}` not found on PATH nor in ~/.cargo/bin: {install}, or {SETUP_HINT}")
    })
}

/// `sslocal`, the real Shadowsocks client.
pub fn sslocal() -> PathBuf {
    require_tool("sslocal", "`cargo install shadowsocks-rust --locked`")
}

/// `ssserver` (only the harness self-test uses it directly; the product runs it in a container).
pub fn ssserver() -> PathBuf {
    require_tool("ssserver", "`cargo install shadowsocks-rust --locked`")
}

/// Makes sure a local image exists, running its build script once if it does not.
pub fn require_image(image: &str, build_script: &str) {
    if image_present(image) {
        return;
    }
    let script = workspace_root().join(build_script);
    assert!(
        script.exists(),
        "image {image} is missing and its build script {} does not exist",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success() && image_present(image),
        "building image {image} with {} failed ({}):\n{}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Where the workspace's binaries are: `VPN_E2E_BIN_DIR`, else the profile directory of this
/// test executable (`target/<profile>/deps/..`), else `$CARGO_TARGET_DIR/debug`, else
/// `<workspace>/target/debug`.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("VPN_E2E_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(profile) = exe.parent().and_then(Path::parent)
        {
            candidates.push(profile.to_path_buf());
        }
        if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
            candidates.push(Path::new(&target).join("debug"));
        }
        candidates.push(workspace_root().join("target/debug"));
        candidates
            .iter()
            .find(|d| is_executable(&d.join("vpn-controller")))
            .or(candidates.last())
            .cloned()
            .unwrap_or_default()
    })
    .clone()
}

/// The path of one of the workspace's binaries; panics if it has not been built.
pub fn product_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        is_executable(&path),
        "binary {} not found: run `cargo build --workspace --bins` first (or set VPN_E2E_BIN_DIR)",
        path.display()
    );
    path
}

/// Every precondition a product fleet needs, checked once per process.
pub fn require_fleet_prerequisites() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        require_root();
        require_tool("nsenter", "apt-get install util-linux");
        require_tool("python3", "apt-get install python3");
        require_docker();
        sslocal();
        for bin in ["vpn-controller", "vpn-agent", "vpn"] {
            product_bin(bin);
        }
        require_image(PAUSE_IMAGE, "deploy/images/pause/build.sh");
        require_image(SHADOWSOCKS_IMAGE, "deploy/images/shadowsocks-rust/build.sh");
    });
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
