//! Test harness for end-to-end fleets (see `tests/tests/`): real `vpn-controller`, `vpn-agent` and
//! `vpn` processes, real Docker containers, a real Shadowsocks client.
//!
//! # Layout
//!
//! - [`env`]: preconditions (root, Docker, `sslocal`, local images, the workspace's binaries), each
//!   checked loudly: a missing piece panics with what to install, it never skips quietly.
//! - [`docker`]: the `docker` CLI driven through `std::process`; the per-fleet bridge network;
//!   the sweep of what killed test runs left behind.
//! - [`host`]: a simulated VPN host = one `vpn-fleet/pause:local` container holding a network
//!   namespace; programs are started inside it with `nsenter --net`.
//! - [`controller`]: a lone controller process whose store a test seeds in SQL, and its CLI.
//! - [`proc`]: child processes whose output goes to a log file, killed on drop.
//! - [`hostserver`]: the HTTP server inside each host namespace (`/payload`, `/drip/SECS`) that
//!   clients reach *through* the tunnel as `HOST-IP:PORT` (the server of the link; the VPN
//!   server refuses its own loopback).
//! - [`client`]: `sslocal` (SOCKS5) plus a small SOCKS5 HTTP GET and a long-running transfer.
//! - [`fleet`]: [`fleet::Fleet`] — a controller and N enrolled agents, each in its own host, with
//!   helpers to drive the CLI, stop/start pieces, and clean everything up on drop.
//! - [`vless`]: the shoes client from a `vless://` link, the shoes server container, and the
//!   loopback TLS 1.3 `dest` and payload servers of a Reality test.
//! - [`install`]: the install tests' tools (CI-aware) and [`install::SystemdHost`], a host whose
//!   PID 1 is systemd, for the systemd units and the ansible roles.
//! - [`prom`]: a strict parser of Prometheus text exposition (also used by the daemons' tests).
//! - [`tmux`]: a real terminal (a private tmux server) for full-screen programs: keys in,
//!   `capture-pane` screens out, waits on screen content.
//! - [`wait`]: bounded polling.
//! - [`webhook`]: a loopback webhook receiver that checks the controller's HMAC signatures.
//! - [`wireguard`]: a real `wireguard-go` + `wg` client in a namespace of its own, from a printed `.conf`.
//!
//! Everything a test sends goes to loopback or to the namespaces of containers the test created.
//!
//! Processes are started through `setpriv --pdeathsig KILL` so they die with a killed test
//! process; the Docker networks and containers such a process leaves are swept by the next test
//! that takes [`fleet::serial_guard`]. Environment knobs: `VPN_E2E_KEEP=1` keeps a passing
//! fleet's directory (a failing one is always kept and its logs printed), `VPN_E2E_BIN_DIR`
//! points at the product binaries when they are not in this build's target directory.

#![allow(
    clippy::print_stderr,
    reason = "the harness reports logs and kept directories on the test's stderr"
)]

pub mod client;
pub mod controller;
pub mod docker;
pub mod env;
pub mod fleet;
pub mod host;
pub mod hostserver;
pub mod install;
pub mod proc;
pub mod prom;
pub mod seed;
pub mod tmux;
pub mod vless;
pub mod wait;
pub mod webhook;
pub mod wireguard;

pub use fleet::Fleet;
pub use wait::wait_until;
