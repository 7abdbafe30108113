//! Reconnect delays: exponential with full jitter, so that after a controller restart thousands
//! of agents spread their reconnects instead of arriving in one handshake storm.

use std::time::Duration;

/// The first retry waits up to this long.
const BASE: Duration = Duration::from_millis(500);

/// The delay before attempt `attempt` (0-based): uniform in `[0, min(max, BASE·2^attempt)]`,
/// with `unit` in `[0, 1)` supplied by the caller (pure: tests pass fixed values).
pub fn delay(attempt: u32, max: Duration, unit: f64) -> Duration {
    let ceiling = BASE
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// A uniform value in `[0, 1)` from the OS.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_and_jitter_spreads_them() {
        let max = Duration::from_secs(30);
        assert_eq!(delay(0, max, 1.0), Duration::from_millis(500));
        assert_eq!(delay(3, max, 1.0), Duration::from_secs(4));
        assert_eq!(delay(30, max, 1.0), max);
        assert_eq!(delay(5, max, 0.0), Duration::ZERO);
        assert_eq!(delay(5, max, 0.5), Duration::from_secs(8));
        let u = random_unit();
        assert!((0.0..1.0).contains(&u));
    }
}
