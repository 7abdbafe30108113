//! Bandwidth rates as operators write and read them: parsed from `--bandwidth 20mbit` into bits
//! per second, shown as `20 Mbit/s`. Pure functions.
//!
//! Units follow `tc`: decimal prefixes (k = 1,000), `bit` units in bits per second and `bps`
//! units in bytes per second (`10mbps` is 80 Mbit/s). A plain number is bits per second.

/// Multipliers to bits per second, by unit.
const UNITS: &[(&str, u128)] = &[
    ("", 1),
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
    ("bps", 8),
    ("kbps", 8_000),
    ("mbps", 8_000_000),
    ("gbps", 8_000_000_000),
    ("tbps", 8_000_000_000_000),
];

/// Digits after the point beyond this add nothing a limit could use.
const MAX_DECIMALS: usize = 9;

/// Parses a rate (`20mbit`, `1.5gbit`, `800kbit`, `10mbps`, `64000`) into bits per second,
/// refusing junk, zero and rates that do not fit. Case and a trailing `/s` are ignored, so the
/// `20 Mbit/s` this CLI prints parses back.
pub fn parse(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let text = match lower.strip_suffix("/s") {
        Some(t) if t.ends_with("bit") => t,
        _ => lower.as_str(),
    };
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let unit = unit.trim_start();
    let Some(&(_, multiplier)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown unit `{unit}`; use bit, kbit, mbit, gbit, tbit (bits per second) or bps, \
             kbps, mbps, gbps, tbps (bytes per second)"
        ));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!(
            "`{}` is not a rate; write a number and a unit, like 20mbit",
            s.trim()
        ));
    }
    if fraction.len() > MAX_DECIMALS {
        return Err(format!("more than {MAX_DECIMALS} decimals"));
    }
    let too_large = || "is too large".to_string();
    let mantissa: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| too_large())?;
    let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(0));
    let bps = mantissa
        .checked_mul(multiplier)
        .map(|v| v / scale)
        .ok_or_else(too_large)?;
    if bps == 0 {
        return Err("must be at least 1 bit/s; leave the flag out for no limit".into());
    }
    u64::try_from(bps).map_err(|_| too_large())
}

/// Display units, largest first.
const SHOWN: &[(u64, &str)] = &[
    (1_000_000_000_000, "Tbit/s"),
    (1_000_000_000, "Gbit/s"),
    (1_000_000, "Mbit/s"),
    (1_000, "kbit/s"),
];

/// `20 Mbit/s`, `1.5 Gbit/s`, `12.35 Mbit/s` (two decimals at most), `500 bit/s`; `-` for none.
pub fn show(bps: Option<u64>) -> String {
    let Some(bps) = bps else {
        return "-".into();
    };
    let Some(&(unit, name)) = SHOWN.iter().find(|(unit, _)| bps >= *unit) else {
        return format!("{bps} bit/s");
    };
    let hundredths = (u128::from(bps) * 100 + u128::from(unit) / 2) / u128::from(unit);
    let (whole, cents) = (hundredths / 100, hundredths % 100);
    match cents {
        0 => format!("{whole} {name}"),
        c if c % 10 == 0 => format!("{whole}.{} {name}", c / 10),
        c => format!("{whole}.{c:02} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> u64 {
        match parse(s) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(v) => panic!("{s:?} should fail, got {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn units_are_decimal_bits_or_bytes_per_second() {
        assert_eq!(ok("20mbit"), 20_000_000);
        assert_eq!(ok("1.5gbit"), 1_500_000_000);
        assert_eq!(ok("800kbit"), 800_000);
        assert_eq!(ok("10mbps"), 80_000_000);
        assert_eq!(ok("64000"), 64_000);
        assert_eq!(ok("1bit"), 1);
        assert_eq!(ok("2tbit"), 2_000_000_000_000);
        assert_eq!(ok("1kbps"), 8_000);
        assert_eq!(ok("0.5mbit"), 500_000);
        assert_eq!(ok(".5mbit"), 500_000);
        assert_eq!(ok("8."), 8);
    }

    #[test]
    fn case_spaces_and_a_per_second_suffix_are_accepted() {
        assert_eq!(ok("20MBit"), 20_000_000);
        assert_eq!(ok(" 20 mbit "), 20_000_000);
        assert_eq!(ok("20 Mbit/s"), 20_000_000);
        assert_eq!(ok("1.5 Gbit/s"), 1_500_000_000);
        assert_eq!(ok("500 bit/s"), 500);
    }

    #[test]
    fn junk_zero_and_overflow_are_refused() {
        assert!(err("20xbit").starts_with("unknown unit `xbit`"));
        assert!(err("fast").starts_with("unknown unit `fast`"));
        assert!(err("mbit").contains("is not a rate"));
        assert!(err("").contains("is not a rate"));
        assert!(err("1.2.3mbit").contains("is not a rate"));
        assert!(err("-5mbit").starts_with("unknown unit"));
        assert!(err("20mbps/s").starts_with("unknown unit"));
        assert!(err("0").starts_with("must be at least 1 bit/s"));
        assert!(err("0mbit").starts_with("must be at least 1 bit/s"));
        assert!(err("0.1bit").starts_with("must be at least 1 bit/s"));
        assert_eq!(err("99999999999tbps"), "is too large");
        assert_eq!(err(&"9".repeat(40)), "is too large");
        assert!(err("1.0000000001mbit").starts_with("more than 9 decimals"));
    }

    #[test]
    fn rates_show_in_the_largest_whole_unit() {
        assert_eq!(show(None), "-");
        assert_eq!(show(Some(20_000_000)), "20 Mbit/s");
        assert_eq!(show(Some(1_500_000_000)), "1.5 Gbit/s");
        assert_eq!(show(Some(800_000)), "800 kbit/s");
        assert_eq!(show(Some(12_345_678)), "12.35 Mbit/s");
        assert_eq!(show(Some(1_005_000)), "1.01 Mbit/s");
        assert_eq!(show(Some(999)), "999 bit/s");
        assert_eq!(show(Some(u64::MAX)), "18446744.07 Tbit/s");
        for s in ["20mbit", "1.5gbit", "800kbit", "10mbps"] {
            assert_eq!(
                ok(&show(Some(ok(s)))),
                ok(s),
                "{s} round-trips through its display"
            );
        }
    }
}
