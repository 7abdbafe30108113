//! The agent's opt-in `/metrics` endpoint as a scraper sees it: started on a loopback port,
//! scraped over plain TCP, parsed by a strict reader of the Prometheus text format (0.0.4), and
//! the counters move as the agent records an apply with a failing service, a reconcile that
//! repaired a container, and a report sent.

// Test code: a panic is the failure report (clippy's in-test allowances skip helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpn_agent::metrics::{self, Metrics};
use vpn_shared::proto::{Repair, ResourceResult};

/// One sample: metric name and its labels, sorted.
type Key = (String, BTreeMap<String, String>);

async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
    }
}

/// `a="x",b="y\"z"}` (after the `{`) → labels and the rest of the line after `}`.
fn labels(mut s: &str) -> (BTreeMap<String, String>, &str) {
    let mut out = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return (out, rest);
        }
        let (name, rest) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label in {s:?}"));
        assert!(is_name(name, false), "label name {name:?}");
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => v.push('\\'),
                    Some((_, '"')) => v.push('"'),
                    Some((_, 'n')) => v.push('\n'),
                    other => panic!("bad escape {other:?}"),
                },
                Some((_, c)) => v.push(c),
                None => panic!("unterminated label value"),
            }
        };
        assert!(
            out.insert(name.to_owned(), v).is_none(),
            "label {name} twice"
        );
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Parses text exposition strictly: every sample belongs to a family declared by `# TYPE`
/// before it, families are contiguous and declared once, names and labels are well-formed,
/// histogram buckets are cumulative and end in `+Inf` equal to `_count`.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            match kw {
                "HELP" => assert!(is_name(name, true), "{line}"),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    assert!(types.insert(name.into(), t.into()).is_none(), "{line}");
                    if let Some(prev) = current.replace(name.into()) {
                        done.insert(prev);
                    }
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("no value: {line}"),
        };
        assert!(is_name(name, true), "{line}");
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => labels(r),
            None => (BTreeMap::new(), rest),
        };
        let mut fields = rest.trim_start().split(' ');
        let v = value(fields.next().unwrap());
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().unwrap();
        }
        assert!(fields.next().is_none(), "{line}");
        let family = current
            .clone()
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        assert!(!done.contains(&family), "family {family} not contiguous");
        let ok = match types[&family].as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_owned()),
            _ => name == family,
        };
        assert!(ok, "{name} outside its family {family}");
        assert!(
            samples.insert((name.to_owned(), labels), v).is_none(),
            "{line}"
        );
    }
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut last = 0.0;
        let mut inf = None;
        for ((n, l), v) in &samples {
            if n == &bucket {
                let le = l.get("le").expect("bucket without le");
                if le == "+Inf" {
                    inf = Some(*v);
                }
            }
        }
        let mut bounds: Vec<(f64, f64)> = samples
            .iter()
            .filter(|((n, _), _)| n == &bucket)
            .map(|((_, l), v)| (value(&l["le"]), *v))
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, v) in bounds {
            assert!(v >= last, "{family} buckets not cumulative");
            last = v;
        }
        let count = samples[&(format!("{family}_count"), BTreeMap::new())];
        assert_eq!(inf, Some(count), "{family}: +Inf bucket != count");
    }
    samples
}

fn get(samples: &BTreeMap<Key, f64>, name: &str, label: Option<(&str, &str)>) -> f64 {
    let labels = label
        .map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())]))
        .unwrap_or_default();
    *samples
        .get(&(name.to_owned(), labels))
        .unwrap_or_else(|| panic!("{name} {label:?} missing"))
}

#[tokio::test]
async fn the_metrics_endpoint_parses_and_its_counters_move() {
    let m = Metrics::new();
    let (addr, _task) = metrics::serve("127.0.0.1:0".parse().unwrap(), &m)
        .await
        .unwrap();

    let (head, body) = scrape(addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let before = parse(&body);
    assert_eq!(get(&before, "vpn_agent_applies_total", None), 0.0);
    let failures = ("kind", "service");
    assert_eq!(
        get(&before, "vpn_agent_apply_failures_total", Some(failures)),
        0.0,
        "kinds are present before the first failure"
    );

    // An apply whose service cannot run, a reconcile that recreated the container, a report.
    m.applied(
        Duration::from_millis(120),
        &[
            ResourceResult::error("service/ss", "no such image: vpn-fleet/missing:local"),
            ResourceResult::ok("host/state"),
        ],
    );
    let repair = Repair {
        resource: "service/ss".into(),
        action: "container vpn-h1-ss was missing; created".into(),
        at: 1,
    };
    m.reconciled(&[ResourceResult::ok("service/ss")], &[repair]);
    m.report_sent();

    let (_, body) = scrape(addr).await;
    let after = parse(&body);
    assert_eq!(get(&after, "vpn_agent_applies_total", None), 1.0);
    assert_eq!(
        get(&after, "vpn_agent_apply_failures_total", Some(failures)),
        1.0
    );
    assert_eq!(
        get(&after, "vpn_agent_apply_duration_seconds_count", None),
        1.0
    );
    assert_eq!(
        get(
            &after,
            "vpn_agent_apply_duration_seconds_bucket",
            Some(("le", "0.25"))
        ),
        1.0
    );
    assert_eq!(get(&after, "vpn_agent_reconcile_runs_total", None), 1.0);
    assert_eq!(
        get(
            &after,
            "vpn_agent_reconcile_repairs_total",
            Some(("kind", "service"))
        ),
        1.0
    );
    // The reconcile found the service working again.
    assert_eq!(
        get(
            &after,
            "vpn_agent_failing_resources",
            Some(("kind", "service"))
        ),
        0.0
    );
    assert_eq!(get(&after, "vpn_agent_reports_sent_total", None), 1.0);

    // Anything but /metrics is a 404.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
}
