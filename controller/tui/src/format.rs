//! Text of cells: ages, moments, rates, sparklines. Pure; `now` is always passed in.

use std::time::{Duration, UNIX_EPOCH};

/// Shown where a figure does not exist (yet): never a made-up number.
pub const NONE: &str = "—";

/// `5s`, `3m`, `2h`, `4d` since `t`; `now` when in the future by clock skew.
pub fn ago(now: i64, t: i64) -> String {
    let d = now.saturating_sub(t);
    if d <= 0 {
        return "now".into();
    }
    format!("{} ago", span(d))
}

/// `in 3d`, or `3d ago` for a moment that passed.
pub fn until(now: i64, t: i64) -> String {
    let d = t.saturating_sub(now);
    if d < 0 {
        return ago(now, t);
    }
    format!("in {}", span(d))
}

/// The largest unit only: `45s`, `12m`, `5h`, `30d`.
pub fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// `2026-12-07 23:44` (UTC).
pub fn moment(t: i64) -> String {
    let Ok(secs) = u64::try_from(t) else {
        return t.to_string();
    };
    let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    let text = text.to_string();
    text.get(..16).unwrap_or(&text).replacen('T', " ", 1)
}

/// `2026-12-07 23:44:05` (UTC).
pub fn moment_secs(t: i64) -> String {
    let Ok(secs) = u64::try_from(t) else {
        return t.to_string();
    };
    let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    let text = text.to_string();
    text.get(..19).unwrap_or(&text).replacen('T', " ", 1)
}

/// Bits per second, short: `12.4M`, `800k`, `0`.
pub fn bps(v: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    for (unit, name) in UNITS {
        if v >= unit {
            let tenths = v / (unit / 10);
            return if tenths >= 1000 {
                format!("{}{name}", tenths / 10)
            } else {
                format!("{}.{}{name}", tenths / 10, tenths % 10)
            };
        }
    }
    v.to_string()
}

/// A percentage or [`NONE`].
pub fn percent(v: Option<f32>) -> String {
    v.map_or_else(|| NONE.to_owned(), |v| format!("{v:.0}%"))
}

/// The last `width` samples as block characters, scaled to their own maximum.
pub fn sparkline(samples: impl DoubleEndedIterator<Item = u64> + Clone, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let last: Vec<u64> = samples.rev().take(width).collect();
    let max = last.iter().copied().max().unwrap_or(0);
    let mut out = String::with_capacity(width * 3);
    for _ in last.len()..width {
        out.push(' ');
    }
    for v in last.iter().rev() {
        if max == 0 {
            out.push(BARS[0]);
        } else {
            let i = usize::try_from(u128::from(*v) * 7 / u128::from(max)).unwrap_or(7);
            out.push(BARS[i.min(7)]);
        }
    }
    out
}

/// Cuts `s` to `width` characters, ending with `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_as_an_operator_expects() {
        assert_eq!(ago(100, 95), "5s ago");
        assert_eq!(ago(10_000, 100), "2h ago");
        assert_eq!(until(0, 3 * 86_400), "in 3d");
        assert_eq!(moment(1_738_324_800), "2025-01-31 12:00");
        assert_eq!(bps(12_400_000), "12.4M");
        assert_eq!(bps(800_000), "800k");
        assert_eq!(bps(999), "999");
        assert_eq!(percent(None), "—");
        assert_eq!(sparkline([0, 5, 10].into_iter(), 4), " ▁▄█");
        assert_eq!(fit("abcdef", 4), "abc…");
    }
}
