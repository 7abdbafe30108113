//! Bounded polling: every loop in the harness ends by itself.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL: Duration = Duration::from_millis(200);

/// Polls `cond` until it returns true and returns how long that took; panics after `timeout`
/// with `what` so the failure says which expectation was not met.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    match poll_until(timeout, &mut cond) {
        Some(took) => took,
        None => panic!("timed out after {timeout:?} waiting until {what}"),
    }
}

/// Polls `cond` until it returns true (`Some(elapsed)`) or `timeout` passes (`None`).
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_gives_up_after_the_timeout() {
        let start = Instant::now();
        assert!(poll_until(Duration::from_millis(300), || false).is_none());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn poll_until_reports_success() {
        let mut n = 0;
        assert!(
            poll_until(Duration::from_secs(5), || {
                n += 1;
                n == 3
            })
            .is_some()
        );
    }
}
