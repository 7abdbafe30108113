//! The pure halves of reading counters: per-user counter names and engine restart detection.

use std::time::{Duration, Instant};

/// Prefix of every per-user counter name.
pub const USER_STAT_PREFIX: &str = "user>>>";

/// One user's byte counters as the engine holds them since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client to server.
    pub uplink: u64,
    /// Server to client.
    pub downlink: u64,
}

/// Direction of a per-user counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Uplink,
    Downlink,
}

/// Splits `user>>>EMAIL>>>traffic>>>uplink|downlink` into the email and the direction; `None`
/// for any other name (both engines register only these two per user; newer Xray tracks
/// online users apart from counters).
pub fn parse_user_stat(name: &str) -> Option<(&str, Direction)> {
    let rest = name.strip_prefix(USER_STAT_PREFIX)?;
    let (email, direction) = if let Some(email) = rest.strip_suffix(">>>traffic>>>uplink") {
        (email, Direction::Uplink)
    } else {
        (
            rest.strip_suffix(">>>traffic>>>downlink")?,
            Direction::Downlink,
        )
    };
    (!email.is_empty()).then_some((email, direction))
}

/// One reading of the engine's uptime, with the local monotonic time it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UptimeSample {
    pub at: Instant,
    pub uptime: Duration,
}

/// Slack for [`engine_restarted`]: uptime is whole seconds, and the reading took a round trip.
pub const RESTART_SLACK: Duration = Duration::from_secs(2);

/// Whether the engine restarted between two readings: the start time each implies
/// (`at - uptime`) moved later by more than [`RESTART_SLACK`]. Catches a restart even when the
/// new uptime is already larger than the old one (a long gap between readings). A restart
/// within the slack of the previous start goes unseen here; counters that went backwards catch
/// that one.
pub fn engine_restarted(previous: UptimeSample, current: UptimeSample) -> bool {
    let start = |s: UptimeSample| s.at.checked_sub(s.uptime);
    match (start(previous), start(current)) {
        (Some(before), Some(now)) => now.saturating_duration_since(before) > RESTART_SLACK,
        // The monotonic clock is younger than the engine's uptime claims: compare readings.
        _ => current.uptime + RESTART_SLACK < previous.uptime,
    }
}
