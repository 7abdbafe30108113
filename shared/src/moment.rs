//! A WHEN as operators write it (`vpn` flags, `vpn tui` forms): a duration (`24h`, `7d`, `1h30m`) or a moment in UTC
//! (`2026-12-01`, `2026-12-01T10:00:00Z`). `users usage --since` counts the duration back from
//! now; `users add/edit --expires` and `--on-hold-timeout` count it forward, on the controller's
//! clock.
//!
//! Parsing does not read the clock: a duration stays a duration until [`Moment::back_from`] is
//! given "now" (or it travels as [`When::In`] for the controller to resolve), so request-mapping
//! tests pin their own time.

use std::time::{Duration, UNIX_EPOCH};

use crate::proto::admin::When;

/// A parsed WHEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// This long from when the command runs (back for `--since`, ahead for `--expires`).
    Span(Duration),
    /// Unix seconds (UTC).
    At(i64),
}

impl Moment {
    /// Unix seconds this long before `now`; a duration longer than the epoch is the epoch.
    pub fn back_from(self, now: i64) -> i64 {
        match self {
            Moment::At(t) => t,
            Moment::Span(d) => now.saturating_sub(secs(d)).max(0),
        }
    }

    /// The moment as the wire says it: a duration is counted from the controller's now.
    pub fn ahead(self) -> When {
        match self {
            Moment::At(t) => When::At(t),
            Moment::Span(d) => When::In(secs(d)),
        }
    }
}

/// Whole seconds of a duration, saturating ([`parse`] refuses what would saturate).
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Parses a duration (humantime: `24h`, `7d`, `2w`, `1h30m`), a date (`2026-12-01`, midnight
/// UTC) or a date and time in UTC (`2026-12-01T10:00:00Z`, `Z` optional, a space for the `T`).
pub fn parse(s: &str) -> Result<Moment, String> {
    let s = s.trim();
    if looks_like_a_date(s) {
        return moment(s).map(Moment::At);
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!(
            "`{s}` is neither a duration like 24h or 7d ({e}) nor a UTC date like 2026-12-01 \
             or 2026-12-01T10:00:00Z"
        )
    })?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if i64::try_from(d.as_secs()).is_err() {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Moment::Span(d))
}

/// `YYYY-` at the start: a date was meant, so its errors speak of dates.
fn looks_like_a_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

fn moment(s: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!("`{s}` is not a UTC date or time ({why}); write 2026-12-01 or 2026-12-01T10:00:00Z")
    };
    // humantime reads `+02:00` as a bad format; say what is wrong instead.
    let zone = s.get(19..).unwrap_or_default();
    if zone.contains(['+', '-']) && !zone.ends_with("+00:00") {
        return Err(bad("only UTC: end it with Z"));
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|e| bad(&e.to_string()))?;
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad("before 1970"))?
        .as_secs();
    i64::try_from(secs).map_err(|_| bad("too far ahead"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-01-31T12:00:00Z.
    const NOW: i64 = 1_738_324_800;

    fn at(s: &str) -> i64 {
        match parse(s) {
            Ok(Moment::At(t)) => t,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse("24h"), Ok(Moment::Span(Duration::from_secs(86400))));
        assert_eq!(parse("1h30m").map(|s| s.back_from(NOW)), Ok(NOW - 5400));
        assert_eq!(parse("7d").map(|s| s.back_from(NOW)), Ok(NOW - 7 * 86400));
        assert_eq!(
            parse("1000years").map(|s| s.back_from(NOW)),
            Ok(0),
            "before the epoch: everything recorded"
        );
    }

    #[test]
    fn counted_ahead_a_duration_is_left_to_the_controllers_clock() {
        assert_eq!(parse("30d").map(Moment::ahead), Ok(When::In(30 * 86400)));
        assert_eq!(
            parse("2027-01-31").map(Moment::ahead),
            Ok(When::At(1_801_353_600))
        );
        assert_eq!(
            parse("2025-01-31T12:00:00Z").map(Moment::ahead),
            Ok(When::At(NOW))
        );
        let e = parse("300000000000years").unwrap_err();
        assert_eq!(e, "`300000000000years` is too long");
    }

    #[test]
    fn dates_are_midnight_utc_and_times_are_utc() {
        assert_eq!(at("2025-01-31"), NOW - 12 * 3600);
        assert_eq!(at("2025-01-31T12:00:00Z"), NOW);
        assert_eq!(at("2025-01-31T12:00:00"), NOW);
        assert_eq!(at("2025-01-31 12:00:00"), NOW);
        assert_eq!(at("2025-01-31T12:00:00+00:00"), NOW);
        assert_eq!(at("1970-01-01"), 0);
        assert_eq!(Moment::At(NOW).back_from(0), NOW, "a moment does not move");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let e = parse("yesterday").unwrap_err();
        assert!(e.starts_with("`yesterday` is neither a duration"), "{e}");
        assert!(e.contains("2026-12-01T10:00:00Z"), "{e}");
        assert_eq!(parse("0s"), Err("must be longer than zero".into()));
        let e = parse("2026-13-01").unwrap_err();
        assert!(
            e.starts_with("`2026-13-01` is not a UTC date or time"),
            "{e}"
        );
        let e = parse("2026-12-01T10:00:00+02:00").unwrap_err();
        assert!(e.contains("only UTC: end it with Z"), "{e}");
        let e = parse("2026-12-01T10:00").unwrap_err();
        assert!(
            e.contains("write 2026-12-01 or 2026-12-01T10:00:00Z"),
            "{e}"
        );
        let e = parse("1969-12-31").unwrap_err();
        assert!(e.starts_with("`1969-12-31` is not a UTC date"), "{e}");
        assert!(parse("-5h").is_err());
        assert!(
            parse("2026-12-01T10:00:0\u{e9}").is_err(),
            "no panic on a non-ASCII tail"
        );
        assert!(parse("").is_err());
    }
}
