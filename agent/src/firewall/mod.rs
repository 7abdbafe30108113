//! The agent's managed nftables firewall (SPEC §2.5): one table, `inet vpn_agent`, that holds
//! the managed ports, the block list, optional per-source new-connection limits and named
//! per-port traffic counters. No other table is ever read, changed or flushed.
//!
//! - [`render`]: desired state → one atomic `nft -f` transaction (pure; golden files in
//!   `golden/*.nft`).
//! - [`counters`]: `nft -j` counter output → counters by name and by port (pure).
//! - [`apply`]: [`Firewall`], the thin IO layer: read-and-reset the counters, replace the table,
//!   remove it, and check what the kernel supports.
//!
//! Inspect on a host with `nft list table inet vpn_agent`; `nft list counters table inet
//! vpn_agent` shows the traffic not yet read by the agent.

pub mod apply;
pub mod counters;
pub mod render;

pub use apply::{Feature, Firewall, FirewallOutcome, FirewallSupport};
pub use counters::{Count, Counters, Direction, PortTraffic};
pub use render::{RenderError, RenderOptions, render};

/// The family of the only table the agent owns.
pub const TABLE_FAMILY: &str = "inet";
/// The name of the only table the agent owns.
pub const TABLE_NAME: &str = "vpn_agent";

/// Why the firewall could not be applied, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The desired state holds something that cannot become a rule; nothing was touched.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The `nft` program is not installed (or not on `PATH`).
    #[error("{program} not found: install nftables")]
    NftMissing { program: String },
    /// `nft` ran and refused.
    #[error("nft {action} failed ({status}): {stderr}")]
    Nft {
        action: &'static str,
        status: String,
        stderr: String,
    },
    /// `nft` did not finish in time and was killed.
    #[error("nft {action} did not finish within {secs} s")]
    Timeout { action: &'static str, secs: u64 },
    /// Talking to the `nft` process failed.
    #[error("nft {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `nft -j` printed something we cannot read.
    #[error(transparent)]
    Counters(#[from] counters::CountersError),
    /// The counters were read and reset, then the replacement failed. The old table is still
    /// installed (the transaction is atomic) with zeroed counters: `counters` must still be
    /// accounted or the traffic they hold is lost.
    #[error("changing table inet vpn_agent failed: {source}")]
    ReplaceFailed {
        counters: Counters,
        #[source]
        source: Box<FirewallError>,
    },
}
