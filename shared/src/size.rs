//! Byte sizes as operators write and read them: parsed from `--data-limit 50GiB` into bytes,
//! shown as `50.0 GiB`. Pure functions.
//!
//! Both unit families are accepted, because both are typed: IEC (`KiB`, `MiB`, `GiB`, `TiB`,
//! `PiB`, `EiB`: powers of 1024) and SI (`kB`, `MB`, `GB`, `TB`, `PB`, `EB`: powers of 1000).
//! A bare prefix (`50G`) is refused rather than guessed, since tools disagree about what it
//! means. Sizes are always *shown* in IEC units, the way the kernel and `ip -s` count.

/// Multipliers to bytes, by unit, lower case.
const UNITS: &[(&str, u128)] = &[
    ("", 1),
    ("b", 1),
    ("byte", 1),
    ("bytes", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
    ("eib", 1 << 60),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("eb", 1_000_000_000_000_000_000),
];

/// Digits after the point beyond this add nothing a limit could use.
const MAX_DECIMALS: usize = 9;

/// Why a size was refused. The messages are written to follow the flag's name in clap's
/// "invalid value … for '--data-limit <SIZE>': …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing, a unit without a number, or something that is no number at all (`NaN`, `1.2.3`).
    #[error("`{0}` is not a size; write a number and a unit, like 50GiB, 1.5TiB or 0")]
    NotANumber(String),
    /// A minus sign: traffic cannot be negative.
    #[error("`{0}` is negative; a size is 0 or more")]
    Negative(String),
    /// A unit outside both families.
    #[error(
        "unknown unit `{0}`; use B, KiB, MiB, GiB, TiB, PiB, EiB (powers of 1024) or kB, MB, GB, \
         TB, PB, EB (powers of 1000)"
    )]
    UnknownUnit(String),
    /// `50G`: could mean either family.
    #[error("unit `{unit}` is ambiguous; write {iec} (powers of 1024) or {si} (powers of 1000)")]
    AmbiguousUnit {
        unit: String,
        iec: String,
        si: String,
    },
    /// More decimals than [`MAX_DECIMALS`].
    #[error("more than {MAX_DECIMALS} decimals")]
    TooManyDecimals,
    /// More than `u64::MAX` bytes.
    #[error(
        "is too large; the largest size is {} bytes (just under 16 EiB)",
        u64::MAX
    )]
    TooLarge,
}

/// Parses a size (`50GiB`, `1.5TiB`, `512 MiB`, `10kB`, `0`, `1048576`) into bytes. The unit is
/// case-insensitive and may follow a space, so the `50.0 GiB` this crate prints parses back;
/// a fraction of a byte is rounded to the nearest byte.
pub fn parse(s: &str) -> Result<u64, SizeError> {
    let text = s.trim();
    let not_a_number = || SizeError::NotANumber(text.to_owned());
    if text.starts_with('-') {
        return Err(SizeError::Negative(text.to_owned()));
    }
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(not_a_number());
    }
    let multiplier = multiplier(unit.trim_start())?;
    if fraction.len() > MAX_DECIMALS {
        return Err(SizeError::TooManyDecimals);
    }
    // Exact integer arithmetic: `1.5TiB` is 15 × 2⁴⁰ / 10, with no float in between.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| SizeError::TooLarge)?
    };
    let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| SizeError::TooLarge)?);
    let bytes = mantissa
        .checked_mul(multiplier)
        .ok_or(SizeError::TooLarge)?
        .checked_add(scale / 2)
        .ok_or(SizeError::TooLarge)?
        / scale;
    u64::try_from(bytes).map_err(|_| SizeError::TooLarge)
}

fn multiplier(unit: &str) -> Result<u128, SizeError> {
    let lower = unit.to_ascii_lowercase();
    if let Some(&(_, m)) = UNITS.iter().find(|(name, _)| *name == lower) {
        return Ok(m);
    }
    if let [prefix @ (b'k' | b'm' | b'g' | b't' | b'p' | b'e')] = lower.as_bytes() {
        let upper = char::from(prefix.to_ascii_uppercase());
        let si = if upper == 'K' { 'k' } else { upper };
        return Err(SizeError::AmbiguousUnit {
            unit: unit.to_owned(),
            iec: format!("{upper}iB"),
            si: format!("{si}B"),
        });
    }
    Err(SizeError::UnknownUnit(unit.to_owned()))
}

/// Display units, largest first.
const SHOWN: &[(u64, &str)] = &[
    (1 << 60, "EiB"),
    (1 << 50, "PiB"),
    (1 << 40, "TiB"),
    (1 << 30, "GiB"),
    (1 << 20, "MiB"),
    (1 << 10, "KiB"),
];

/// `512 B` below 1 KiB; otherwise the largest IEC unit that fits, always with one decimal
/// (`50.0 GiB`, `1.5 TiB`, `1023.9 MiB`) so that columns of sizes line up and read alike.
/// A value that rounds up to 1024 of a unit is shown in the next one (`1.0 GiB`); the very
/// largest ones round down (`15.9 EiB`), since `16.0 EiB` would not parse back.
pub fn show(bytes: u64) -> String {
    let Some(index) = SHOWN.iter().position(|(unit, _)| bytes >= *unit) else {
        return format!("{bytes} B");
    };
    let tenths = |unit: u64| (u128::from(bytes) * 10 + u128::from(unit) / 2) / u128::from(unit);
    let (mut unit, mut name) = SHOWN[index];
    if tenths(unit) >= 10_240 && index > 0 {
        (unit, name) = SHOWN[index - 1];
    }
    let mut t = tenths(unit);
    if t * u128::from(unit) / 10 > u128::from(u64::MAX) {
        t -= 1;
    }
    format!("{}.{} {name}", t / 10, t % 10)
}

/// A size an operator set, as they would have typed it: `1 MiB`, `50 GiB` when exact, else as
/// [`show`] (`1.5 TiB`, `953.7 MiB`), so `1.0 MiB of 1 MiB used` tells the measured from the set.
pub fn show_set(bytes: u64) -> String {
    let shown = show(bytes);
    let whole = shown.replacen(".0 ", " ", 1);
    if whole != shown && parse(&whole) == Ok(bytes) {
        whole
    } else {
        shown
    }
}

/// A length of time as the CLI's duration flags take it: `30d`, `12h`, `1h30m`, `45s`; `0s`
/// for none.
pub fn show_span(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    let mut rest = secs;
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn set_sizes_and_spans_read_as_typed() {
        assert_eq!(show_set(1 << 20), "1 MiB");
        assert_eq!(show_set(50 << 30), "50 GiB");
        assert_eq!(show_set((1 << 20) + 1), "1.0 MiB");
        assert_eq!(show_set(0), "0 B");
        assert_eq!(show_span(30 * 86_400), "30d");
        assert_eq!(show_span(5_400), "1h30m");
        assert_eq!(show_span(0), "0s");
    }

    fn ok(s: &str) -> u64 {
        match parse(s) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(v) => panic!("{s:?} should fail, got {v}"),
            Err(e) => e.to_string(),
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn operators_write_iec_or_si_units_or_plain_bytes() {
        assert_eq!(ok("50GiB"), 50 * GIB);
        assert_eq!(ok("1.5TiB"), 3 << 39);
        assert_eq!(ok("512MiB"), 512 << 20);
        assert_eq!(ok("10kB"), 10_000);
        assert_eq!(ok("1MB"), 1_000_000);
        assert_eq!(ok("2GB"), 2_000_000_000);
        assert_eq!(ok("1048576"), 1 << 20);
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("0GiB"), 0);
        assert_eq!(ok("100B"), 100);
        assert_eq!(ok("100 bytes"), 100);
        assert_eq!(ok("15EiB"), 15 << 60);
        assert_eq!(ok(".5KiB"), 512);
        assert_eq!(ok("8."), 8);
    }

    #[test]
    fn case_and_a_space_before_the_unit_do_not_matter() {
        assert_eq!(ok("50gib"), 50 * GIB);
        assert_eq!(ok("50GIB"), 50 * GIB);
        assert_eq!(ok(" 50 GiB "), 50 * GIB);
        assert_eq!(ok("10KB"), 10_000);
        assert_eq!(ok("10 kib"), 10 << 10);
    }

    #[test]
    fn fractions_are_exact_and_round_to_the_nearest_byte() {
        assert_eq!(ok("1.5KiB"), 1536);
        assert_eq!(ok("0.3KiB"), 307, "307.2 rounds down");
        assert_eq!(ok("0.5B"), 1, "half a byte rounds up");
        assert_eq!(ok("0.4B"), 0);
        assert_eq!(ok("1.000000001GB"), 1_000_000_001);
        assert_eq!(ok("0000000000000000000000000000000000000000001"), 1);
    }

    #[test]
    fn what_this_module_prints_parses_back() {
        for s in ["50.0 GiB", "1.5 TiB", "512 B", "1023.9 MiB", "15.9 EiB"] {
            let printed = show(ok(s));
            assert_eq!(printed, s, "{s} shows as itself");
        }
    }

    #[test]
    fn junk_negative_and_overflow_are_refused_with_a_reason() {
        assert_eq!(err("-5GiB"), "`-5GiB` is negative; a size is 0 or more");
        assert_eq!(err("-0"), "`-0` is negative; a size is 0 or more");
        assert!(err("NaN").starts_with("`NaN` is not a size"));
        assert!(err("inf").starts_with("`inf` is not a size"));
        assert!(err("").starts_with("`` is not a size"));
        assert!(err("GiB").starts_with("`GiB` is not a size"));
        assert!(err("+5GiB").starts_with("`+5GiB` is not a size"));
        assert!(err("1.2.3GiB").starts_with("`1.2.3GiB` is not a size"));
        assert!(err("1e9").starts_with("unknown unit `e9`"));
        assert!(err("5 parsecs").starts_with("unknown unit `parsecs`; use B, KiB"));
        assert!(err("10mbit").starts_with("unknown unit `mbit`"));
        assert_eq!(
            err("50G"),
            "unit `G` is ambiguous; write GiB (powers of 1024) or GB (powers of 1000)"
        );
        assert_eq!(
            err("10k"),
            "unit `k` is ambiguous; write KiB (powers of 1024) or kB (powers of 1000)"
        );
        assert_eq!(err("1.0000000001GiB"), "more than 9 decimals");
        let too_large = "is too large; the largest size is 18446744073709551615 bytes \
                         (just under 16 EiB)";
        assert_eq!(err("16EiB"), too_large);
        assert_eq!(err("18446744073709551616"), too_large);
        assert_eq!(err(&"9".repeat(40)), too_large);
        assert_eq!(err("99999999999999999999EB"), too_large);
        assert_eq!(ok("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn sizes_show_in_the_largest_iec_unit_with_one_decimal() {
        assert_eq!(show(0), "0 B");
        assert_eq!(show(512), "512 B");
        assert_eq!(show(1023), "1023 B");
        assert_eq!(show(1024), "1.0 KiB");
        assert_eq!(show(1536), "1.5 KiB");
        assert_eq!(show(50 * GIB), "50.0 GiB");
        assert_eq!(show(3 << 39), "1.5 TiB");
        assert_eq!(show(1_000_000_000), "953.7 MiB");
        assert_eq!(show(GIB - 1), "1.0 GiB", "1024.0 MiB moves up a unit");
        assert_eq!(show((1 << 20) * 1023 + (1 << 20) * 9 / 10), "1023.9 MiB");
        assert_eq!(show(u64::MAX), "15.9 EiB", "16.0 EiB would not parse");
    }

    proptest! {
        /// Shown with one decimal of its unit, a size parses back within half a tenth of that
        /// unit (plus the byte the parser may round); within a whole tenth from 15.95 EiB up,
        /// where [`show`] rounds down to stay parseable.
        #[test]
        fn print_then_parse_stays_within_the_rounding(bytes in any::<u64>()) {
            let printed = show(bytes);
            let back = parse(&printed);
            prop_assert!(back.is_ok(), "{printed}: {back:?}");
            let back = back.unwrap_or_default();
            let unit = SHOWN.iter().map(|(u, _)| *u).find(|u| back.max(bytes) >= *u).unwrap_or(1);
            let tolerance = match unit {
                1 => 0,
                _ if printed == "15.9 EiB" => unit / 10 + 1,
                _ => unit / 20 + 1,
            };
            prop_assert!(back.abs_diff(bytes) <= tolerance, "{bytes} -> {printed} -> {back}");
        }

        /// Whatever an operator types, the parser answers, never panics.
        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = parse(&s);
        }

        /// Plain byte counts parse to themselves.
        #[test]
        fn plain_numbers_are_bytes(n in any::<u64>()) {
            prop_assert_eq!(parse(&n.to_string()), Ok(n));
        }
    }
}
