//! Per-user and per-service bandwidth limits with `tc` (SPEC §2.5).
//!
//! # Layout
//! - [`plan`] (pure): the desired state → which service and user classes the host needs, with a
//!   rate per direction, the [`plan::Matcher`]s that pick out each user's packets, and stable
//!   class ids.
//! - [`snapshot`] (pure): parses what `tc`/`ip` report into a [`snapshot::Snapshot`] of the
//!   qdiscs, classes and filters this agent owns.
//! - [`render`] (pure): plan + snapshot → the `ip -batch` and `tc -batch` lines that move the
//!   kernel from one to the other, and nothing when they already agree.
//! - [`apply`] (IO): [`apply::Shaper`] reads the snapshot, renders and runs the batches.
//! - [`kernel`]: which kernel features exist here and what their absence disables.
//!
//! # What the kernel holds
//!
//! Download (traffic to users) is shaped on the egress interface, upload (traffic from users) on
//! an IFB device that the interface's ingress traffic is redirected to:
//!
//! ```text
//! eth0 root 7a6e: htb default 2          ifb-eth0 root 7a6e: htb default 2
//! └─ 7a6e:1 link ceiling                 └─ (same shape, upload rates, dport/src matchers)
//!    ├─ 7a6e:2 default: everyone unlimited
//!    └─ 7a6e:S service (cap, or the ceiling)
//!       ├─ 7a6e:U user (ceil = the user's rate)      eth0 ingress ffff:
//!       └─ 7a6e:R rest of a capped service's users   └─ u32 match-all → mirred redirect ifb-eth0
//! ```
//!
//! Only `htb`, `u32`, the `ingress` qdisc, `act_mirred` and `ifb` are required; the kernel of the
//! project's machines has no `fq_codel`, `sfq`, `prio`, `matchall`, `cls_fw`, `act_connmark` or
//! u32 mark support, so leaves keep HTB's default `pfifo` and the catch-all redirect is a
//! `u32 match u32 0 0`. Users are matched by:
//!
//! | matcher | protocols | egress (download) | IFB (upload) |
//! |---|---|---|---|
//! | [`plan::Matcher::ServerPort`] | Shadowsocks (a port per user), per-user-port proxies | `ip sport` / `ip6 sport` = the user's server port | `ip dport` / `ip6 dport` |
//! | [`plan::Matcher::TunnelAddr`] | WireGuard (on the `wg` interface) | `ip dst` / `ip6 dst` | `ip src` / `ip6 src` |
//! | [`plan::Matcher::Mark`] | VLESS through Xray (`sockopt.mark` of a per-user outbound) | `u32 match mark` (needs `CONFIG_CLS_U32_MARK`) | `match mark` after `act_connmark` restored it on ingress |
//!
//! Everything the agent installs lives under the root handle `7a6e:` (an arbitrary major nobody
//! picks by hand, unlike `1:`), the ingress filter at preference [`render::REDIRECT_PRIO`] and the
//! IFB device it names. A root qdisc of anyone else is never replaced: the apply fails with
//! [`ShapingError::ForeignRootQdisc`] instead.

pub mod apply;
pub mod kernel;
pub mod plan;
pub mod render;
pub mod snapshot;

#[cfg(test)]
mod tests;

/// Why shaping could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ShapingError {
    /// A program (`tc`, `ip`) could not be started at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A program did not finish in time.
    #[error("`{command}` did not finish within {secs} s")]
    Timeout { command: String, secs: u64 },
    /// A program's output was not what this module understands.
    #[error("unexpected output of `{command}`: {detail}")]
    Parse { command: String, detail: String },
    /// The device's root qdisc belongs to someone else; the agent does not replace it.
    #[error(
        "device {dev} has a root qdisc `{kind} {handle}` that the agent does not own; remove it \
         or shape another device"
    )]
    ForeignRootQdisc {
        dev: String,
        kind: String,
        handle: String,
    },
    /// The device's ingress hook holds a qdisc other than a plain `ingress` one (e.g. `clsact`).
    #[error(
        "device {dev} has a `{kind}` ingress qdisc the agent does not manage; upload limits need \
         a plain `ingress` qdisc"
    )]
    ForeignIngress { dev: String, kind: String },
    /// No default route, so no egress interface to shape.
    #[error("no default route: cannot pick the egress interface (configure it explicitly)")]
    NoDefaultRoute,
}
