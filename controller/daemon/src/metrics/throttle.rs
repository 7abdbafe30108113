//! Which repeated WARN lines are written: at most one per reason per window, the next one
//! carrying how many were held back. Pure: the caller passes the clock.
//!
//! Refusals of peers without credentials (garbage, a foreign CA, a wrong ALPN) each logged a
//! line; anyone who can send UDP packets could fill the controller's log. The counters keep the
//! exact numbers, so the log only needs to show that it happens, and from where, now and then.
//! What was held back after the last line is reported by the next one of that reason, however
//! much later (or never, if none comes: the counter still has it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Reasons tracked at most; a reason past that is logged every window under one shared slot.
/// Reasons are names chosen by the code, so this only bounds a programming error.
const MAX_REASONS: usize = 64;

#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    slots: HashMap<&'static str, Slot>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the last line of this reason was written.
    logged_at: Instant,
    /// Held back since then.
    held: u64,
}

impl Throttle {
    pub fn new(window: Duration) -> Throttle {
        Throttle {
            window,
            slots: HashMap::new(),
        }
    }

    /// One occurrence of `reason` at `now`: `Some(held)` to write a line now, saying `held`
    /// more happened since the previous line of this reason; `None` to write nothing.
    pub fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        let key = if self.slots.len() < MAX_REASONS || self.slots.contains_key(reason) {
            reason
        } else {
            "(other)"
        };
        match self.slots.get_mut(key) {
            None => {
                self.slots.insert(
                    key,
                    Slot {
                        logged_at: now,
                        held: 0,
                    },
                );
                Some(0)
            }
            Some(slot) if now.saturating_duration_since(slot.logged_at) >= self.window => {
                let held = slot.held;
                *slot = Slot {
                    logged_at: now,
                    held: 0,
                };
                Some(held)
            }
            Some(slot) => {
                slot.held += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn a_burst_writes_one_line_and_the_next_window_says_how_many_were_held() {
        let start = Instant::now();
        let mut t = Throttle::new(WINDOW);
        let written: Vec<_> = (0..50)
            .filter_map(|i| t.admit("handshake", start + Duration::from_millis(i * 10)))
            .collect();
        assert_eq!(
            written,
            vec![0],
            "one line for 50 failures within half a second"
        );
        // The first failure after the window writes a line carrying the 49 held back.
        assert_eq!(t.admit("handshake", start + WINDOW), Some(49));
        assert_eq!(t.admit("handshake", start + WINDOW), None);
        // A long quiet spell: the next one is written at once, with the one held before.
        assert_eq!(t.admit("handshake", start + WINDOW * 100), Some(1));
    }

    #[test]
    fn reasons_are_throttled_separately() {
        let start = Instant::now();
        let mut t = Throttle::new(WINDOW);
        assert_eq!(t.admit("handshake", start), Some(0));
        assert_eq!(t.admit("unknown_alpn", start), Some(0));
        assert_eq!(t.admit("handshake", start), None);
        assert_eq!(t.admit("unknown_alpn", start + WINDOW / 2), None);
        assert_eq!(t.admit("unknown_alpn", start + WINDOW), Some(1));
        assert_eq!(t.admit("handshake", start + WINDOW), Some(1));
    }

    #[test]
    fn lines_per_window_stay_bounded_however_many_failures_arrive() {
        let start = Instant::now();
        let mut t = Throttle::new(WINDOW);
        let mut lines = 0;
        let mut reported = 0;
        // 100,000 failures, one per millisecond: 100 s.
        for i in 0..100_000u64 {
            if let Some(held) = t.admit("handshake", start + Duration::from_millis(i)) {
                lines += 1;
                reported += 1 + held;
            }
        }
        assert_eq!(lines, 10, "one line per 10 s window");
        // Every failure is either written or held; the held ones of the last window are
        // reported by the next line.
        let still_held = t.slots["handshake"].held;
        assert_eq!(reported + still_held, 100_000);
    }

    #[test]
    fn a_clock_that_goes_backwards_holds_lines_back_instead_of_writing_them() {
        let start = Instant::now() + WINDOW;
        let mut t = Throttle::new(WINDOW);
        assert_eq!(t.admit("handshake", start), Some(0));
        assert_eq!(t.admit("handshake", start - WINDOW), None);
    }

    #[test]
    fn reasons_beyond_the_bound_share_one_slot() {
        let start = Instant::now();
        let mut t = Throttle::new(WINDOW);
        let names: Vec<&'static str> = (0..MAX_REASONS + 10)
            .map(|i| &*Box::leak(format!("reason_{i}").into_boxed_str()))
            .collect();
        let written = names.iter().filter(|n| t.admit(n, start).is_some()).count();
        assert_eq!(
            written,
            MAX_REASONS + 1,
            "the overflow reasons write one line"
        );
        assert!(t.slots.len() <= MAX_REASONS + 1);
    }
}
