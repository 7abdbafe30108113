//! Parsing `nft -j` counter output (pure).
//!
//! `nft -j reset counters table inet vpn_agent` (and `list counters …`) prints one JSON document:
//! `{"nftables": [{"metainfo": …}, {"counter": {"family", "name", "table", "handle", "packets",
//! "bytes"}}, …]}`. Only named counters of our own table are kept; everything else in the
//! document (metainfo, objects of other kinds or tables) is ignored, so a newer nft that adds
//! fields or entries still parses.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{TABLE_FAMILY, TABLE_NAME};

/// One named counter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// Named counters by name (`port_8388_up`, …).
pub type Counters = BTreeMap<String, Count>;

/// Which way traffic on a managed port flows, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the user to the host: packets arriving with the port as destination.
    Up,
    /// From the host to the user: packets leaving with the port as source.
    Down,
}

impl Direction {
    fn suffix(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// The name of the counter of `port` in `direction`: `port_8388_up`, `port_8388_down`.
pub fn counter_name(port: u16, direction: Direction) -> String {
    format!("port_{port}_{}", direction.suffix())
}

/// The port and direction a counter name stands for; `None` for a name we do not render.
pub fn parse_counter_name(name: &str) -> Option<(u16, Direction)> {
    let rest = name.strip_prefix("port_")?;
    let (port, dir) = rest.split_once('_')?;
    let direction = match dir {
        "up" => Direction::Up,
        "down" => Direction::Down,
        _ => return None,
    };
    // `u16::from_str` accepts a leading `+`; a name we render never has one.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((port.parse().ok()?, direction))
}

/// Both directions of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortTraffic {
    pub up: Count,
    pub down: Count,
}

/// Groups named counters by port; names that are not port counters are skipped.
pub fn by_port(counters: &Counters) -> BTreeMap<u16, PortTraffic> {
    let mut out: BTreeMap<u16, PortTraffic> = BTreeMap::new();
    for (name, count) in counters {
        let Some((port, direction)) = parse_counter_name(name) else {
            continue;
        };
        let entry = out.entry(port).or_default();
        match direction {
            Direction::Up => entry.up = *count,
            Direction::Down => entry.down = *count,
        }
    }
    out
}

/// Why `nft -j` output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// The output is not the JSON document nft prints.
    #[error("nft json output is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The same counter appeared twice.
    #[error("counter {0} appears twice in nft output")]
    Duplicate(String),
}

#[derive(Deserialize)]
struct Document {
    nftables: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct CounterObject {
    family: String,
    table: String,
    name: String,
    packets: u64,
    bytes: u64,
}

/// Parses the named counters of table `inet vpn_agent` out of an `nft -j` document.
pub fn parse(json: &str) -> Result<Counters, CountersError> {
    let doc: Document = serde_json::from_str(json)?;
    let mut out = Counters::new();
    for entry in doc.nftables {
        let Some(counter) = entry.get("counter") else {
            continue;
        };
        let c = CounterObject::deserialize(counter)?;
        if c.family != TABLE_FAMILY || c.table != TABLE_NAME {
            continue;
        }
        let count = Count {
            packets: c.packets,
            bytes: c.bytes,
        };
        if out.insert(c.name.clone(), count).is_some() {
            return Err(CountersError::Duplicate(c.name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from this project's machine (nftables v1.0.6) with `nft -j reset counters table
    // inet vpn_agent`, after 100,000 bytes were sent to port 8388 and 1,000 bytes answered.
    const RESET_AFTER_TRAFFIC: &str = include_str!("golden/nft_reset_after_traffic.json");
    // The same table reset again right after: every counter is zero.
    const RESET_ZERO: &str = include_str!("golden/nft_reset_zero.json");
    // A table without counters (the empty state).
    const RESET_EMPTY: &str = include_str!("golden/nft_reset_empty.json");

    #[test]
    fn parses_captured_reset_output() {
        let c = parse(RESET_AFTER_TRAFFIC).unwrap();
        let up = c["port_8388_up"];
        assert!(up.bytes >= 100_000, "{up:?}");
        assert!(up.packets > 0);
        assert!(c["port_8388_down"].bytes >= 1_000);
        assert_eq!(c["port_8389_up"], Count::default());
        let ports = by_port(&c);
        assert_eq!(ports.keys().copied().collect::<Vec<_>>(), vec![8388, 8389]);
        assert_eq!(ports[&8388].up, up);
    }

    #[test]
    fn parses_zero_and_empty_output() {
        let zero = parse(RESET_ZERO).unwrap();
        assert!(!zero.is_empty());
        assert!(zero.values().all(|c| *c == Count::default()));
        assert!(parse(RESET_EMPTY).unwrap().is_empty());
    }

    #[test]
    fn ignores_other_tables_and_objects() {
        let json = r#"{"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"counter": {"family": "inet", "name": "port_1_up", "table": "host_fw",
                         "handle": 3, "packets": 9, "bytes": 9}},
            {"counter": {"family": "ip", "name": "port_1_up", "table": "vpn_agent",
                         "handle": 3, "packets": 9, "bytes": 9}},
            {"quota": {"family": "inet", "name": "q", "table": "vpn_agent"}},
            {"counter": {"family": "inet", "name": "port_1_up", "table": "vpn_agent",
                         "handle": 4, "packets": 2, "bytes": 120, "future": true}}
        ]}"#;
        let c = parse(json).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c["port_1_up"],
            Count {
                packets: 2,
                bytes: 120
            }
        );
    }

    #[test]
    fn rejects_malformed_output() {
        assert!(matches!(parse(""), Err(CountersError::Malformed(_))));
        assert!(matches!(parse("{}"), Err(CountersError::Malformed(_))));
        let negative = r#"{"nftables": [{"counter": {"family": "inet", "name": "x",
            "table": "vpn_agent", "packets": -1, "bytes": 0}}]}"#;
        assert!(matches!(parse(negative), Err(CountersError::Malformed(_))));
        let one = r#"{"counter": {"family": "inet", "name": "x", "table": "vpn_agent",
            "packets": 1, "bytes": 1}}"#;
        let twice = format!(r#"{{"nftables": [{one}, {one}]}}"#);
        assert!(matches!(parse(&twice), Err(CountersError::Duplicate(n)) if n == "x"));
    }

    #[test]
    fn counter_names_round_trip() {
        for port in [0, 1, 8388, 65535] {
            for d in [Direction::Up, Direction::Down] {
                assert_eq!(parse_counter_name(&counter_name(port, d)), Some((port, d)));
            }
        }
        for bad in [
            "port_8388",
            "port__up",
            "port_+1_up",
            "port_70000_up",
            "x_1_up",
            "port_1_in",
        ] {
            assert_eq!(parse_counter_name(bad), None, "{bad}");
        }
    }
}
