//! Prometheus text exposition (format 0.0.4), parsed strictly: what the tests of both daemons
//! and the end-to-end stories use to prove a `/metrics` page is valid, not merely present, and
//! to read its values.

use std::collections::{BTreeMap, HashMap};

/// A scrape, checked against the text exposition format (version 0.0.4) as it is parsed:
/// metric and label names, escaped label values, numbers, `# TYPE` before a family's samples
/// and only once, no sample repeated, and histograms with `le` buckets that are cumulative and
/// end in `+Inf` equal to `_count`.
pub struct Exposition {
    pub types: HashMap<String, String>,
    /// Sample name → sorted labels → value.
    pub samples: BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>>,
}

impl Exposition {
    /// The value of `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        key.sort();
        self.samples.get(name)?.get(&key).copied()
    }

    /// The `# TYPE` of a family.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }

    /// Parses and checks a whole scrape.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut m = Exposition {
            types: HashMap::new(),
            samples: BTreeMap::new(),
        };
        let mut seen_families: Vec<String> = Vec::new();
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the last line has no newline".into());
        }
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("HELP"), Some(name), _) => check_name(name).map_err(at)?,
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        check_name(name).map_err(at)?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(at(format!("unknown type {kind}")));
                        }
                        if m.types.insert(name.into(), kind.into()).is_some() {
                            return Err(at(format!("second TYPE for {name}")));
                        }
                        if seen_families.iter().any(|f| f == name) {
                            return Err(at(format!("TYPE for {name} after its samples")));
                        }
                    }
                    _ => {} // other comments are allowed
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = split_sample(line).map_err(at)?;
            let value = rest.split(' ').next().unwrap_or_default();
            let value = parse_value(value).map_err(at)?;
            let family = family_of(&name, &m.types);
            if !m.types.contains_key(&family) {
                return Err(at(format!("sample of {family} without a TYPE")));
            }
            if seen_families.last() != Some(&family) {
                if seen_families.contains(&family) {
                    return Err(at(format!("samples of {family} are not together")));
                }
                seen_families.push(family);
            }
            if m.samples
                .entry(name)
                .or_default()
                .insert(labels, value)
                .is_some()
            {
                return Err(at("sample repeated".into()));
            }
        }
        m.check_histograms()?;
        Ok(m)
    }

    fn check_histograms(&self) -> Result<(), String> {
        for (family, _) in self.types.iter().filter(|(_, k)| *k == "histogram") {
            let buckets = self
                .samples
                .get(&format!("{family}_bucket"))
                .cloned()
                .unwrap_or_default();
            let counts = self
                .samples
                .get(&format!("{family}_count"))
                .cloned()
                .unwrap_or_default();
            for (labels, count) in &counts {
                let mut series: Vec<(f64, f64)> = buckets
                    .iter()
                    .filter_map(|(bl, v)| {
                        let le = bl.iter().find(|(k, _)| k == "le")?;
                        let rest: Vec<_> = bl.iter().filter(|(k, _)| k != "le").cloned().collect();
                        (rest == *labels).then(|| (parse_value(&le.1).unwrap_or(f64::NAN), *v))
                    })
                    .collect();
                series.sort_by(|a, b| a.0.total_cmp(&b.0));
                let Some(&(last_le, last)) = series.last() else {
                    return Err(format!("{family}{labels:?}: no buckets"));
                };
                if last_le != f64::INFINITY || last != *count {
                    return Err(format!(
                        "{family}{labels:?}: +Inf bucket {last} vs count {count}"
                    ));
                }
                if series.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?}: buckets not cumulative"));
                }
            }
        }
        Ok(())
    }
}

/// The family a sample belongs to: histogram and summary samples carry a suffix.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return base.to_string();
        }
    }
    name.to_string()
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("invalid metric name {name:?}"))
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("invalid value {v:?}")),
    }
}

type Sample = (String, Vec<(String, String)>, String);

/// `name{label="value",...} value`: the name, the sorted labels and what follows.
fn split_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if inner[start..].starts_with('}') {
                rest = &inner[start + 1..];
                break;
            }
            let eq = inner[start..].find("=\"").ok_or("label without =\"")? + start;
            let label = &inner[start..eq];
            if label.is_empty() || label.contains(':') || check_name(label).is_err() {
                return Err(format!("invalid label name {label:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i < eq + 2) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")? {
                    (_, '"') => break,
                    (_, '\\') => match chars.next().ok_or("dangling escape")? {
                        (_, '\\') => value.push('\\'),
                        (_, '"') => value.push('"'),
                        (_, 'n') => value.push('\n'),
                        (_, c) => return Err(format!("invalid escape \\{c}")),
                    },
                    (_, '\n') => return Err("newline in a label value".into()),
                    (_, c) => value.push(c),
                }
            }
            if labels.iter().any(|(k, _): &(String, String)| k == label) {
                return Err(format!("label {label} repeated"));
            }
            labels.push((label.to_string(), value));
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err("expected , or } after a label".into()),
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    labels.sort();
    Ok((name.to_string(), labels, rest.to_string()))
}
