//! What the kernel holds that this agent owns, parsed from `tc` and `ip` output: pure, no IO.
//!
//! Qdiscs, filters, links and routes come from `-j` (JSON) output. HTB classes come from the
//! text of `tc class show`, because iproute2 6.1 prints classes as text even with `-j`; the
//! class line format has been stable for decades. Filter JSON repeats the `match` key once per
//! u32 key, so filters are read with a visitor that keeps every occurrence.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use super::plan::ClassId;

/// The kernel state render compares against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The egress interface's root tree.
    pub egress: TreeState,
    /// The egress interface's ingress hook.
    pub ingress: IngressHook,
    /// The IFB device; `None` when it does not exist.
    pub ifb: Option<IfbState>,
}

/// One device's root qdisc and, when it is ours, its classes and filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeState {
    pub root: RootQdisc,
    /// By class minor.
    pub classes: BTreeMap<ClassId, ClassState>,
    /// By (preference, u32 node id).
    pub filters: BTreeMap<(u16, u16), FilterState>,
}

/// Who owns a device's root qdisc.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RootQdisc {
    /// The kernel's default (handle `0:`), or none: ours may be added.
    #[default]
    Default,
    /// Our HTB at the agent's handle.
    Ours,
    /// Anyone else's.
    Foreign { kind: String, handle: String },
}

/// An installed HTB class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassState {
    /// The parent class minor; 0 for a class directly under the qdisc.
    pub parent: ClassId,
    /// As `tc` reports them (rounded the way [`tc_rate_round`] rounds).
    pub rate_bps: u64,
    pub ceil_bps: u64,
}

/// An installed u32 filter node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterState {
    /// The full `htid:hash:node` handle, needed to change or delete it.
    pub handle: String,
    pub protocol: String,
    /// The class minor it sends packets to, if it names one under our major.
    pub flowid: Option<ClassId>,
    pub selector: Selector,
}

/// What a u32 node matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub keys: Vec<Key>,
    /// `(value, mask)` of a `match mark`.
    pub mark: Option<(u32, u32)>,
}

/// One 32-bit u32 key: `(packet[off..off+4] & mask) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub value: u32,
    pub mask: u32,
    pub off: i32,
}

/// The egress interface's ingress hook.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IngressHook {
    /// No ingress qdisc.
    #[default]
    Absent,
    /// A plain `ingress` qdisc (shared: anyone may add filters to it).
    Ingress {
        /// Our redirect filter, if installed.
        redirect: Option<Redirect>,
        /// Whether filters other than ours are attached (then the qdisc is left in place).
        others: bool,
    },
    /// Some other qdisc on the ingress hook (e.g. `clsact`).
    Foreign { kind: String },
}

/// Our redirect-to-IFB filter on the ingress hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub handle: String,
    /// Whether it matches everything (`u32 match u32 0 0`).
    pub match_all: bool,
    /// The action kinds in order, e.g. `["connmark", "mirred"]`.
    pub actions: Vec<String>,
    /// Where the mirred action sends packets.
    pub to_dev: Option<String>,
}

/// The IFB device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IfbState {
    pub up: bool,
    pub tree: TreeState,
}

/// One qdisc as `tc -j qdisc show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Qdisc {
    pub kind: String,
    pub handle: String,
    #[serde(default)]
    pub root: bool,
    #[serde(default)]
    pub parent: Option<String>,
}

/// Parses `tc -j qdisc show dev X`.
pub fn parse_qdiscs(json: &str) -> Result<Vec<Qdisc>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// Who owns the root qdisc among `qdiscs`, given our handle (`7a6e:`).
pub fn root_qdisc(qdiscs: &[Qdisc], ours: &str) -> RootQdisc {
    let Some(root) = qdiscs.iter().find(|q| q.root) else {
        return RootQdisc::Default;
    };
    if root.handle == ours && root.kind == "htb" {
        RootQdisc::Ours
    } else if root.handle == "0:" {
        RootQdisc::Default
    } else {
        RootQdisc::Foreign {
            kind: root.kind.clone(),
            handle: root.handle.clone(),
        }
    }
}

/// The qdisc on the ingress hook, if any: `Ok(true)` for a plain `ingress` qdisc, `Err(kind)`
/// for another kind, `Ok(false)` for none.
pub fn ingress_qdisc(qdiscs: &[Qdisc]) -> Result<bool, String> {
    match qdiscs.iter().find(|q| q.handle == "ffff:") {
        None => Ok(false),
        Some(q) if q.kind == "ingress" => Ok(true),
        Some(q) => Err(q.kind.clone()),
    }
}

/// One entry of `tc -j filter show`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FilterEntry {
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub pref: Option<u16>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub options: Option<U32Options>,
}

/// The `options` of a u32 filter entry.
#[derive(Debug, Clone, Default)]
pub struct U32Options {
    pub fh: Option<String>,
    pub flowid: Option<String>,
    pub keys: Vec<Key>,
    pub mark: Option<(u32, u32)>,
    pub actions: Vec<Action>,
}

/// One action of a filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Action {
    pub kind: String,
    #[serde(default)]
    pub to_dev: Option<String>,
}

#[derive(Deserialize)]
struct KeyJson {
    value: String,
    mask: String,
    off: i32,
}

impl<'de> Deserialize<'de> for U32Options {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = U32Options;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("u32 filter options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<U32Options, A::Error> {
                let mut o = U32Options::default();
                let mut mark_value = None;
                let mut mark_mask = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "fh" => o.fh = Some(map.next_value()?),
                        "flowid" => o.flowid = Some(map.next_value()?),
                        "match" => {
                            let kj: KeyJson = map.next_value()?;
                            o.keys.push(Key {
                                value: hex_u32(&kj.value).map_err(de::Error::custom)?,
                                mask: hex_u32(&kj.mask).map_err(de::Error::custom)?,
                                off: kj.off,
                            });
                        }
                        "fwmark_value" => mark_value = Some(json_u32(map.next_value()?)?),
                        "fwmark_mask" => mark_mask = Some(json_u32(map.next_value()?)?),
                        "actions" => o.actions = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if let Some(v) = mark_value {
                    o.mark = Some((v, mark_mask.unwrap_or(u32::MAX)));
                }
                Ok(o)
            }
        }
        d.deserialize_map(V)
    }
}

fn hex_u32(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0x");
    u32::from_str_radix(t, 16).map_err(|e| format!("bad hex {s:?}: {e}"))
}

fn json_u32<E: de::Error>(v: serde_json::Value) -> Result<u32, E> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| E::custom(format!("bad mark {n}"))),
        serde_json::Value::String(s) => hex_u32(&s).map_err(E::custom),
        other => Err(E::custom(format!("bad mark {other}"))),
    }
}

/// Parses `tc -j filter show dev X parent P`.
pub fn parse_filters(json: &str) -> Result<Vec<FilterEntry>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// A `major:minor` handle in hex; `major:` gives minor 0.
pub fn parse_handle(s: &str) -> Option<(u16, u16)> {
    let (maj, min) = s.split_once(':')?;
    let maj = u16::from_str_radix(maj, 16).ok()?;
    let min = if min.is_empty() {
        0
    } else {
        u16::from_str_radix(min, 16).ok()?
    };
    Some((maj, min))
}

/// The node id of a u32 handle `htid:hash:node` (`None` for hash-table entries like `800:`).
pub fn u32_node(fh: &str) -> Option<u16> {
    let mut parts = fh.split(':');
    let (_, _, node) = (parts.next()?, parts.next()?, parts.next()?);
    let node = u16::from_str_radix(node, 16).ok()?;
    (node != 0).then_some(node)
}

/// Keeps the u32 nodes of `entries` whose flowid is under `major`, keyed by (pref, node).
pub fn filters_by_node(entries: &[FilterEntry], major: u16) -> BTreeMap<(u16, u16), FilterState> {
    let mut out = BTreeMap::new();
    for e in entries {
        let (Some(pref), Some(opts)) = (e.pref, &e.options) else {
            continue;
        };
        let Some(fh) = &opts.fh else { continue };
        let Some(node) = u32_node(fh) else { continue };
        let flowid = opts
            .flowid
            .as_deref()
            .and_then(parse_handle)
            .filter(|(maj, _)| *maj == major)
            .map(|(_, min)| min);
        out.insert(
            (pref, node),
            FilterState {
                handle: fh.clone(),
                protocol: e.protocol.clone().unwrap_or_default(),
                flowid,
                selector: Selector {
                    keys: opts.keys.clone(),
                    mark: opts.mark,
                },
            },
        );
    }
    out
}

/// Reads the ingress hook's filters: ours at `prio`, and whether anyone else has one.
pub fn ingress_hook(entries: &[FilterEntry], prio: u16) -> IngressHook {
    let mut redirect = None;
    let mut others = false;
    for e in entries {
        if e.pref != Some(prio) {
            others |= e.pref.is_some();
            continue;
        }
        let Some(opts) = &e.options else { continue };
        let Some(fh) = &opts.fh else { continue };
        if u32_node(fh).is_none() {
            continue;
        }
        redirect = Some(Redirect {
            handle: fh.clone(),
            match_all: opts.keys
                == [Key {
                    value: 0,
                    mask: 0,
                    off: 0,
                }],
            actions: opts.actions.iter().map(|a| a.kind.clone()).collect(),
            to_dev: opts.actions.iter().find_map(|a| a.to_dev.clone()),
        });
    }
    IngressHook::Ingress { redirect, others }
}

/// Parses `tc -d class show dev X` (text), keeping HTB classes under `major`.
pub fn parse_classes(text: &str, major: u16) -> Result<BTreeMap<ClassId, ClassState>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.first() != Some(&"class") || tokens.get(1) != Some(&"htb") {
            continue;
        }
        let Some((maj, minor)) = tokens.get(2).and_then(|t| parse_handle(t)) else {
            return Err(format!("bad class line {line:?}"));
        };
        if maj != major {
            continue;
        }
        let mut parent = None;
        let mut rate = None;
        let mut ceil = None;
        let mut it = tokens[3..].iter();
        while let Some(t) = it.next() {
            match *t {
                "root" => parent = Some(0),
                "parent" => {
                    parent = it
                        .next()
                        .and_then(|p| parse_handle(p))
                        .map(|(pm, pn)| if pm == major { pn } else { 0 });
                }
                "rate" => rate = it.next().and_then(|r| parse_rate(r)),
                "ceil" => ceil = it.next().and_then(|r| parse_rate(r)),
                _ => {}
            }
        }
        let (Some(parent), Some(rate_bps), Some(ceil_bps)) = (parent, rate, ceil) else {
            return Err(format!("incomplete class line {line:?}"));
        };
        out.insert(
            minor,
            ClassState {
                parent,
                rate_bps,
                ceil_bps,
            },
        );
    }
    Ok(out)
}

/// Parses a rate as `tc` prints it (`8Mbit`, `64Kbit`, `1234bit`) into bits per second.
pub fn parse_rate(s: &str) -> Option<u64> {
    let num = s.strip_suffix("bit")?;
    let (digits, mult) = match num.chars().last()? {
        'K' => (&num[..num.len() - 1], 1_000),
        'M' => (&num[..num.len() - 1], 1_000_000),
        'G' => (&num[..num.len() - 1], 1_000_000_000),
        'T' => (&num[..num.len() - 1], 1_000_000_000_000),
        _ => (num, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// What `tc` reports back for a rate configured as `{bps}bit`: the kernel keeps whole bytes per
/// second, and `tc` prints with a unit that drops digits past the first six significant ones.
pub fn tc_rate_round(bps: u64) -> u64 {
    let mut rate = (bps / 8) * 8;
    let mut mult = 1u64;
    for _ in 0..4 {
        if rate < 1000 || (!rate.is_multiple_of(1000) && rate < 1_000_000) {
            break;
        }
        rate /= 1000;
        mult *= 1000;
    }
    rate * mult
}

/// Whether `ip -j link show dev X` says the device is up.
pub fn link_is_up(json: &str) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct Link {
        #[serde(default)]
        flags: Vec<String>,
    }
    let links: Vec<Link> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links
        .first()
        .is_some_and(|l| l.flags.iter().any(|f| f == "UP")))
}

/// The device of the first default route in `ip -j route show default`.
pub fn default_route_dev(json: &str) -> Result<Option<String>, String> {
    #[derive(Deserialize)]
    struct Route {
        #[serde(default)]
        dev: Option<String>,
    }
    if json.trim().is_empty() {
        return Ok(None);
    }
    let routes: Vec<Route> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(routes.into_iter().find_map(|r| r.dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAJOR: u16 = 0x7a6e;

    #[test]
    fn classes_are_read_from_text_with_and_without_details() {
        let text = "class htb 7a6e:201 parent 7a6e:200 prio 0 rate 64Kbit ceil 8Mbit burst 1600b cburst 1600b \n \
Sent 3551918 bytes 2347 pkt (dropped 0, overlimits 136 requeues 0) \n \
lended: 3 borrowed: 134 giants: 0\n\
class htb 7a6e:1 root rate 10Gbit ceil 10Gbit linklayer ethernet burst 0b/1 mpu 0b cburst 0b/1 mpu 0b level 7 \n\
class htb 1:10 parent 1:1 prio 0 rate 8Mbit ceil 8Mbit burst 1600b cburst 1600b \n";
        let c = parse_classes(text, MAJOR).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[&0x201],
            ClassState {
                parent: 0x200,
                rate_bps: 64_000,
                ceil_bps: 8_000_000
            }
        );
        assert_eq!(c[&1].parent, 0);
        assert_eq!(c[&1].ceil_bps, 10_000_000_000);
    }

    #[test]
    fn rates_round_like_tc_prints_them() {
        assert_eq!(tc_rate_round(8_000_000), 8_000_000);
        assert_eq!(tc_rate_round(8_500_000), 8_500_000);
        assert_eq!(tc_rate_round(1_234_567_891), 1_234_000_000);
        assert_eq!(tc_rate_round(8_000_001), 8_000_000);
        assert_eq!(parse_rate("8500Kbit"), Some(8_500_000));
        assert_eq!(parse_rate("999bit"), Some(999));
        assert_eq!(parse_rate("8Mbps"), None);
    }

    #[test]
    fn filters_keep_every_match_key_and_the_mark() {
        let json = r#"[{"parent":"7a6e:","protocol":"ipv6","pref":148,"kind":"u32","chain":0},
{"parent":"7a6e:","protocol":"ipv6","pref":148,"kind":"u32","chain":0,"options":{"fh":"803:","ht_divisor":1}},
{"parent":"7a6e:","protocol":"ipv6","pref":148,"kind":"u32","chain":0,"options":{"fh":"803::7","order":7,"key_ht":"803","bkt":"0","flowid":"7a6e:107","not_in_hw":true,"match":{"value":"20010db8","mask":"ffffffff","offmask":"","off":24},"match":{"value":"0","mask":"ffffffff","offmask":"","off":28}}},
{"parent":"7a6e:","protocol":"all","pref":164,"kind":"u32","chain":0,"options":{"fh":"804::9","flowid":"7a6e:109","fwmark_value":"0x2a","fwmark_mask":"0xffffffff"}}]"#;
        let entries = parse_filters(json).unwrap();
        let f = filters_by_node(&entries, MAJOR);
        assert_eq!(f.len(), 2);
        let v6 = &f[&(148, 7)];
        assert_eq!(v6.handle, "803::7");
        assert_eq!(v6.flowid, Some(0x107));
        assert_eq!(v6.selector.keys.len(), 2);
        assert_eq!(v6.selector.keys[0].value, 0x2001_0db8);
        assert_eq!(f[&(164, 9)].selector.mark, Some((42, u32::MAX)));
    }

    #[test]
    fn the_redirect_filter_is_found_by_its_preference() {
        let json = r#"[{"protocol":"all","pref":65000,"kind":"u32","chain":0},
{"protocol":"all","pref":65000,"kind":"u32","chain":0,"options":{"fh":"800::1","order":1,"key_ht":"800","bkt":"0","not_in_hw":true,"match":{"value":"0","mask":"0","offmask":"","off":0},"actions":[{"order":1,"kind":"mirred","mirred_action":"redirect","direction":"egress","to_dev":"ifb-x","control_action":{"type":"stolen"},"index":1,"ref":1,"bind":1}]}},
{"protocol":"ip","pref":10,"kind":"u32","chain":0}]"#;
        let hook = ingress_hook(&parse_filters(json).unwrap(), 65000);
        let IngressHook::Ingress { redirect, others } = hook else {
            panic!("not an ingress hook")
        };
        assert!(others);
        let r = redirect.unwrap();
        assert!(r.match_all);
        assert_eq!(r.actions, vec!["mirred".to_string()]);
        assert_eq!(r.to_dev.as_deref(), Some("ifb-x"));
    }

    #[test]
    fn root_ownership() {
        let q = |kind: &str, handle: &str| Qdisc {
            kind: kind.into(),
            handle: handle.into(),
            root: true,
            parent: None,
        };
        assert_eq!(root_qdisc(&[], "7a6e:"), RootQdisc::Default);
        assert_eq!(
            root_qdisc(&[q("noqueue", "0:")], "7a6e:"),
            RootQdisc::Default
        );
        assert_eq!(root_qdisc(&[q("htb", "7a6e:")], "7a6e:"), RootQdisc::Ours);
        assert!(matches!(
            root_qdisc(&[q("htb", "1:")], "7a6e:"),
            RootQdisc::Foreign { .. }
        ));
        let qd = parse_qdiscs(r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}},{"kind":"clsact","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#).unwrap();
        assert_eq!(ingress_qdisc(&qd), Err("clsact".to_string()));
    }

    #[test]
    fn links_and_routes() {
        assert!(
            link_is_up(r#"[{"ifname":"ifb0","flags":["BROADCAST","NOARP","UP","LOWER_UP"]}]"#)
                .unwrap()
        );
        assert!(!link_is_up(r#"[{"ifname":"ifb0","flags":["BROADCAST","NOARP"]}]"#).unwrap());
        assert_eq!(
            default_route_dev(
                r#"[{"dst":"default","gateway":"10.0.0.1","dev":"eth0","flags":[]}]"#
            )
            .unwrap()
            .as_deref(),
            Some("eth0")
        );
        assert_eq!(default_route_dev("[]").unwrap(), None);
    }
}
