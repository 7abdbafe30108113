use proptest::prelude::*;
use time::UtcOffset;

use super::*;

const GIB: u64 = 1 << 30;
const DAY: i64 = 86_400;
/// 2026-12-02 10:30:00 UTC, a Wednesday.
const NOW: i64 = 1_796_207_400;

fn utc() -> UtcOffset {
    UtcOffset::UTC
}

fn facts(limits: Limits, used: u64) -> Facts {
    Facts {
        limits,
        suspended: false,
        used,
        first_use: None,
    }
}

fn limited(limit: u64, reset: Reset) -> Limits {
    Limits {
        data_limit: Some(limit),
        reset: Some(reset),
        ..Limits::default()
    }
}

#[test]
fn the_calendar_periods_start_where_people_expect() {
    // 2026-12-02 is a Wednesday.
    assert_eq!(period_start(Reset::Day, NOW, utc()), Some(1_796_169_600)); // 2026-12-02 00:00
    assert_eq!(period_start(Reset::Week, NOW, utc()), Some(1_795_996_800)); // Mon 2026-11-30
    assert_eq!(period_start(Reset::Month, NOW, utc()), Some(1_796_083_200)); // 2026-12-01
    assert_eq!(period_start(Reset::Year, NOW, utc()), Some(1_767_225_600)); // 2026-01-01
    assert_eq!(period_start(Reset::Never, NOW, utc()), None);
    assert_eq!(next_reset(Reset::Day, NOW, utc()), Some(1_796_256_000)); // 2026-12-03
    assert_eq!(next_reset(Reset::Week, NOW, utc()), Some(1_796_601_600)); // Mon 2026-12-07
    assert_eq!(next_reset(Reset::Month, NOW, utc()), Some(1_798_761_600)); // 2027-01-01
    assert_eq!(next_reset(Reset::Year, NOW, utc()), Some(1_798_761_600)); // 2027-01-01
    // In UTC+03:00 the day began at 21:00 UTC the evening before.
    let msk = UtcOffset::from_hms(3, 0, 0).unwrap();
    assert_eq!(
        period_start(Reset::Day, NOW, msk),
        Some(1_796_169_600 - 3 * 3_600)
    );
    // A period's first second belongs to it; its last second does not belong to the next.
    let midnight = 1_796_169_600;
    assert_eq!(period_start(Reset::Day, midnight, utc()), Some(midnight));
    assert_eq!(
        period_start(Reset::Day, midnight - 1, utc()),
        Some(midnight - DAY)
    );
}

#[test]
fn a_user_over_the_limit_is_limited_until_the_next_reset() {
    let over = facts(limited(GIB, Reset::Day), GIB);
    let v = evaluate(&over, NOW, utc());
    assert_eq!(v.status, Status::Limited);
    assert_eq!(
        v.reason,
        Reason::Limited {
            used: GIB,
            limit: GIB
        }
    );
    assert_eq!(v.next_change, next_reset(Reset::Day, NOW, utc()));
    // One byte under is active; the remaining bytes are what the agents may still let through.
    let under = facts(limited(GIB, Reset::Day), GIB - 1);
    assert_eq!(evaluate(&under, NOW, utc()).status, Status::Active);
    assert_eq!(remaining(&under), Some(1));
    assert_eq!(remaining(&over), Some(0));
    assert_eq!(remaining(&facts(Limits::default(), 5 * GIB)), None);
}

#[test]
fn expiry_beats_the_limit_and_suspension_beats_everything() {
    let mut f = facts(
        Limits {
            expires_at: Some(NOW - 1),
            ..limited(GIB, Reset::Month)
        },
        2 * GIB,
    );
    assert_eq!(evaluate(&f, NOW, utc()).status, Status::Expired);
    assert_eq!(
        evaluate(&f, NOW, utc()).reason,
        Reason::Expired { at: NOW - 1 }
    );
    f.suspended = true;
    assert_eq!(evaluate(&f, NOW, utc()).status, Status::Suspended);
    // Before the expiry, the expiry is the next change unless a reset comes first.
    let soon = facts(
        Limits {
            expires_at: Some(NOW + 60),
            ..Limits::default()
        },
        0,
    );
    let v = evaluate(&soon, NOW, utc());
    assert_eq!((v.status, v.next_change), (Status::Active, Some(NOW + 60)));
}

#[test]
fn on_hold_starts_its_clock_at_first_use_or_at_the_timeout() {
    let hold = Limits {
        on_hold: Some(OnHold {
            duration: 30 * DAY,
            timeout_at: Some(NOW + 7 * DAY),
        }),
        ..Limits::default()
    };
    let waiting = facts(hold, 0);
    let v = evaluate(&waiting, NOW, utc());
    assert_eq!(v.status, Status::OnHold);
    assert_eq!(
        v.next_change,
        Some(NOW + 7 * DAY),
        "the timeout is the next change"
    );
    assert_eq!(v.starts_expiry, None);

    let used = Facts {
        first_use: Some(NOW + 100),
        used: 10,
        ..waiting
    };
    let v = evaluate(&used, NOW + 200, utc());
    assert_eq!(v.status, Status::Active);
    assert_eq!(v.starts_expiry, Some(NOW + 100 + 30 * DAY));
    assert_eq!(v.next_change, Some(NOW + 100 + 30 * DAY));

    let timed_out = evaluate(&waiting, NOW + 7 * DAY, utc());
    assert_eq!(timed_out.status, Status::Active);
    assert_eq!(timed_out.starts_expiry, Some(NOW + 37 * DAY));
    // Used once, then 30 days pass: expired.
    let v = evaluate(&used, NOW + 100 + 30 * DAY, utc());
    assert_eq!(v.status, Status::Expired);
    // An on-hold user whose expiry is stored already is judged by that expiry alone.
    let stored = Facts {
        limits: Limits {
            expires_at: Some(NOW + DAY),
            ..hold
        },
        ..used
    };
    assert_eq!(evaluate(&stored, NOW, utc()).starts_expiry, None);
    assert_eq!(evaluate(&stored, NOW, utc()).status, Status::Active);
}

#[test]
fn a_suspended_on_hold_user_stays_suspended() {
    let f = Facts {
        suspended: true,
        ..facts(
            Limits {
                on_hold: Some(OnHold {
                    duration: DAY,
                    timeout_at: None,
                }),
                ..Limits::default()
            },
            0,
        )
    };
    assert_eq!(evaluate(&f, NOW, utc()).status, Status::Suspended);
}

fn any_reset() -> impl Strategy<Value = Reset> {
    prop_oneof![
        Just(Reset::Day),
        Just(Reset::Week),
        Just(Reset::Month),
        Just(Reset::Year),
    ]
}

proptest! {
    /// Every moment lies in exactly one period: its start is at or before it, the next reset
    /// after it, and the next reset is the start of the following period.
    #[test]
    fn periods_tile_time(
        reset in any_reset(),
        t in 0i64..4_102_444_800,
        hours in -12i8..=14,
    ) {
        let offset = UtcOffset::from_hms(hours, 0, 0).unwrap();
        let start = period_start(reset, t, offset).unwrap();
        let next = next_reset(reset, t, offset).unwrap();
        prop_assert!(start <= t && t < next, "{start} <= {t} < {next}");
        prop_assert_eq!(period_start(reset, next, offset), Some(next));
        prop_assert_eq!(period_start(reset, next - 1, offset), Some(start));
        prop_assert!(next - start >= DAY - 3_600 && next - start <= 366 * DAY + 3_600);
    }

    /// Limited exactly when the limit is reached, whatever the numbers, and never while a
    /// suspension or an expiry decides instead.
    #[test]
    fn limited_exactly_at_the_limit(limit in 0u64..u64::MAX / 2, used in 0u64..u64::MAX / 2) {
        let v = evaluate(&facts(limited(limit, Reset::Month), used), NOW, utc());
        prop_assert_eq!(v.status == Status::Limited, used >= limit);
        prop_assert_eq!(remaining(&facts(limited(limit, Reset::Month), used)), Some(limit.saturating_sub(used)));
    }

    /// The verdict never changes between `now` and its `next_change`.
    #[test]
    fn nothing_changes_before_next_change(
        reset in any_reset(),
        expires in proptest::option::of(0i64..40 * DAY),
        dt in 0i64..400 * DAY,
        probe in 0.0f64..1.0,
    ) {
        let f = facts(
            Limits {
                expires_at: expires.map(|e| NOW + e),
                ..limited(GIB, reset)
            },
            GIB / 2,
        );
        let now = NOW + dt;
        let v = evaluate(&f, now, utc());
        if let Some(next) = v.next_change {
            prop_assert!(next > now);
            let mid = now + ((next - now - 1) as f64 * probe) as i64;
            prop_assert_eq!(evaluate(&f, mid, utc()).status, v.status);
        }
    }
}
