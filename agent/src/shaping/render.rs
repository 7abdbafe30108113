//! Plan + snapshot → the `ip -batch` and `tc -batch` lines that make the kernel match the plan:
//! pure, no IO.
//!
//! The root qdisc, the IFB device and the ingress redirect are created only when missing;
//! classes are `class replace`d only when their parent, rate or ceil differ; filters are
//! `filter replace`d with explicit preferences and node ids derived from the class id, so the
//! same user always lands on the same filter. When nothing differs nothing is rendered.
//!
//! # Kernel rules the ordering follows
//!
//! - A u32 `filter replace` of an existing node updates its flowid and actions but keeps the old
//!   match keys, and needs the node's full `htid:hash:node` handle (a bare `::node` that exists
//!   fails with "No space left on device"). So a changed match is a delete plus a fresh add, and
//!   existing nodes are always addressed by the handle the snapshot read.
//! - An HTB class cannot be deleted while a filter points at it or while it has children, and
//!   `class replace` does not move a class to another parent. So: filter deletions first, then
//!   class deletions (deepest first, a moved class is deleted and re-added), then class
//!   replaces (parents first), then filter replaces.
//!
//! # Filter layout
//!
//! Every matcher kind has its own preferences (IPv4 and IPv6 need separate `protocol ip` /
//! `protocol ipv6` filters anyway), 16 per kind: the class id's top four bits pick the
//! preference, its low 12 bits are the u32 node id (at most 0xfff nodes fit one u32 table, and
//! ids with zero low bits are never allocated). Preference `100 + 16 × kind + (id >> 12)`,
//! handle `::(id & 0xfff)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use super::ShapingError;
use super::plan::{ClassId, Direction, Matcher, ShapingPlan};
use super::snapshot::{IngressHook, Key, RootQdisc, Selector, Snapshot, TreeState, tc_rate_round};

/// The major of every qdisc handle and class id the agent owns.
pub const ROOT_MAJOR: u16 = 0x7a6e;
/// [`ROOT_MAJOR`] as `tc` prints a qdisc handle.
pub const ROOT_HANDLE: &str = "7a6e:";
/// The class directly under the qdisc, at the link ceiling.
pub const ROOT_CLASS: ClassId = 1;
/// Where unclassified traffic goes: unlimited up to the ceiling.
pub const DEFAULT_CLASS: ClassId = 2;
/// The first filter preference the agent uses under its root qdisc.
pub const FILTER_PRIO_BASE: u16 = 100;
/// The preference of the redirect-to-IFB filter on the ingress hook: late, so that filters of
/// other tools on a shared `ingress` qdisc run first.
pub const REDIRECT_PRIO: u16 = 65000;
/// The assured rate of user and rest classes. It is small on purpose: HTB lets a class send up
/// to its rate without asking its parent, so the children's rates must not add up past a
/// service cap; above it they borrow, and the ceil is the limit.
pub const LEAF_GUARANTEE_BPS: u64 = 64_000;

/// Which parts of the kernel the rendering may rely on (see [`super::kernel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `sch_htb` and `cls_u32`: download limits at all.
    pub egress: bool,
    /// `sch_ingress`, `act_mirred`, `ifb`: upload limits.
    pub ingress: bool,
    /// u32 `match mark` (`CONFIG_CLS_U32_MARK`). Without it the kernel accepts the filter and
    /// silently ignores the mark, so the filter would catch every packet: never render it then.
    pub mark: bool,
    /// `act_connmark`: restores the connection mark on ingress for mark matchers.
    pub connmark: bool,
}

impl Capabilities {
    /// Everything available.
    pub const ALL: Capabilities = Capabilities {
        egress: true,
        ingress: true,
        mark: true,
        connmark: true,
    };
}

/// Where and how to shape.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The egress interface.
    pub dev: &'a str,
    /// The IFB device its ingress is redirected to.
    pub ifb: &'a str,
    /// The link's rate: the root class and the default class's ceil.
    pub ceiling_bps: u64,
    pub caps: Capabilities,
}

/// The batches to run, and what could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// Lines for `ip -batch -` (run first).
    pub ip: Vec<String>,
    /// Lines for `tc -batch -`.
    pub tc: Vec<String>,
    /// Human-readable notes on matchers or directions left out for lack of kernel support.
    pub skipped: Vec<String>,
}

impl Rendered {
    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.ip.is_empty() && self.tc.is_empty()
    }

    /// One line per command, prefixed with its program; the golden-file format.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for l in &self.ip {
            let _ = writeln!(s, "ip {l}");
        }
        for l in &self.tc {
            let _ = writeln!(s, "tc {l}");
        }
        for l in &self.skipped {
            let _ = writeln!(s, "# skipped: {l}");
        }
        s
    }
}

/// A u32 filter family: one per matcher kind and IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    PortV4,
    PortV6,
    AddrV4,
    AddrV6,
    Mark,
}

impl FilterKind {
    fn index(self) -> u16 {
        match self {
            FilterKind::PortV4 => 0,
            FilterKind::PortV6 => 1,
            FilterKind::AddrV4 => 2,
            FilterKind::AddrV6 => 3,
            FilterKind::Mark => 4,
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            FilterKind::PortV4 | FilterKind::AddrV4 => "ip",
            FilterKind::PortV6 | FilterKind::AddrV6 => "ipv6",
            FilterKind::Mark => "all",
        }
    }

    fn prio(self, id: ClassId) -> u16 {
        FILTER_PRIO_BASE + self.index() * 16 + (id >> 12)
    }
}

fn node(id: ClassId) -> u16 {
    id & 0xfff
}

/// One filter's match, as tc syntax and as the selector the kernel will report.
struct Spec {
    kind: FilterKind,
    text: String,
    selector: Selector,
}

fn key(value: u32, mask: u32, off: i32) -> Key {
    Key { value, mask, off }
}

/// The u32 matches for one matcher in one direction.
fn specs(m: &Matcher, dir: Direction) -> Vec<Spec> {
    let egress = dir == Direction::Egress;
    match *m {
        Matcher::ServerPort { port } => {
            let (word, value, mask) = if egress {
                ("sport", u32::from(port) << 16, 0xffff_0000)
            } else {
                ("dport", u32::from(port), 0x0000_ffff)
            };
            vec![
                Spec {
                    kind: FilterKind::PortV4,
                    text: format!("ip {word} {port} 0xffff"),
                    selector: Selector {
                        keys: vec![key(value, mask, 20)],
                        mark: None,
                    },
                },
                Spec {
                    kind: FilterKind::PortV6,
                    text: format!("ip6 {word} {port} 0xffff"),
                    selector: Selector {
                        keys: vec![key(value, mask, 40)],
                        mark: None,
                    },
                },
            ]
        }
        Matcher::TunnelAddr(IpAddr::V4(a)) => {
            let (word, off) = if egress { ("dst", 16) } else { ("src", 12) };
            vec![Spec {
                kind: FilterKind::AddrV4,
                text: format!("ip {word} {a}/32"),
                selector: Selector {
                    keys: vec![key(u32::from(a), u32::MAX, off)],
                    mark: None,
                },
            }]
        }
        Matcher::TunnelAddr(IpAddr::V6(a)) => {
            let (word, off) = if egress { ("dst", 24) } else { ("src", 8) };
            let octets = a.octets();
            let keys = (0..4)
                .map(|i| {
                    let mut w = [0u8; 4];
                    w.copy_from_slice(&octets[i * 4..i * 4 + 4]);
                    key(u32::from_be_bytes(w), u32::MAX, off + 4 * i as i32)
                })
                .collect();
            vec![Spec {
                kind: FilterKind::AddrV6,
                text: format!("ip6 {word} {a}/128"),
                selector: Selector { keys, mark: None },
            }]
        }
        Matcher::Mark(mark) => vec![Spec {
            kind: FilterKind::Mark,
            text: format!("mark {mark:#x} 0xffffffff"),
            selector: Selector {
                keys: Vec::new(),
                mark: Some((mark, u32::MAX)),
            },
        }],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WantClass {
    parent: ClassId,
    rate: u64,
    ceil: u64,
}

struct WantFilter {
    kind: FilterKind,
    text: String,
    selector: Selector,
    flowid: ClassId,
}

/// One direction's wanted tree.
#[derive(Default)]
struct Wanted {
    classes: BTreeMap<ClassId, WantClass>,
    filters: BTreeMap<(u16, u16), WantFilter>,
}

impl Wanted {
    fn has_mark(&self) -> bool {
        self.filters.values().any(|f| f.kind == FilterKind::Mark)
    }
}

/// The tree `plan` wants in `dir`.
fn wanted(
    plan: &ShapingPlan,
    dir: Direction,
    target: &Target<'_>,
    skipped: &mut Vec<String>,
) -> Wanted {
    let ceiling = target.ceiling_bps;
    let mut w = Wanted::default();
    let dir_name = match dir {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    };
    for svc in &plan.services {
        let cap = svc.cap.get(dir);
        let limited: Vec<_> = svc
            .users
            .iter()
            .filter(|u| u.rates.get(dir).is_some())
            .collect();
        if cap.is_none() && limited.is_empty() {
            continue;
        }
        let top = cap.unwrap_or(ceiling);
        w.classes.insert(
            svc.id,
            WantClass {
                parent: ROOT_CLASS,
                rate: top,
                ceil: top,
            },
        );
        let rest = match (cap, svc.rest_id) {
            (Some(cap), Some(rest)) if limited.len() < svc.users.len() => {
                w.classes.insert(
                    rest,
                    WantClass {
                        parent: svc.id,
                        rate: LEAF_GUARANTEE_BPS.min(cap),
                        ceil: cap,
                    },
                );
                Some(rest)
            }
            _ => None,
        };
        for user in &svc.users {
            let flowid = match user.rates.get(dir) {
                Some(limit) => {
                    w.classes.insert(
                        user.id,
                        WantClass {
                            parent: svc.id,
                            rate: LEAF_GUARANTEE_BPS.min(limit),
                            ceil: limit,
                        },
                    );
                    user.id
                }
                None => match rest {
                    Some(rest) => rest,
                    None => continue,
                },
            };
            for m in &user.matchers {
                if matches!(m, Matcher::Mark(_)) {
                    let missing = if !target.caps.mark {
                        Some("u32 mark matching")
                    } else if dir == Direction::Ingress && !target.caps.connmark {
                        Some("act_connmark")
                    } else {
                        None
                    };
                    if let Some(missing) = missing {
                        skipped.push(format!(
                            "{dir_name} mark matcher of {} on {} (kernel lacks {missing})",
                            user.user, svc.service
                        ));
                        continue;
                    }
                }
                for spec in specs(m, dir) {
                    let key = (spec.kind.prio(user.id), node(user.id));
                    if w.filters.contains_key(&key) {
                        skipped.push(format!(
                            "{dir_name} {} matcher {} of {} on {}: one per kind and user",
                            spec.kind.protocol(),
                            spec.text,
                            user.user,
                            svc.service
                        ));
                        continue;
                    }
                    w.filters.insert(
                        key,
                        WantFilter {
                            kind: spec.kind,
                            text: spec.text,
                            selector: spec.selector,
                            flowid,
                        },
                    );
                }
            }
        }
    }
    if !w.classes.is_empty() {
        for (id, parent) in [(ROOT_CLASS, 0), (DEFAULT_CLASS, ROOT_CLASS)] {
            w.classes.insert(
                id,
                WantClass {
                    parent,
                    rate: ceiling,
                    ceil: ceiling,
                },
            );
        }
    }
    w
}

/// Renders the lines that move the kernel from `snap` to `plan`.
pub fn render(
    plan: &ShapingPlan,
    target: &Target<'_>,
    snap: &Snapshot,
) -> Result<Rendered, ShapingError> {
    let mut out = Rendered::default();
    let mut trees = [Wanted::default(), Wanted::default()];
    for (i, dir) in Direction::BOTH.into_iter().enumerate() {
        let (supported, what, needs) = match dir {
            Direction::Egress => (target.caps.egress, "download", "sch_htb or cls_u32"),
            Direction::Ingress => (
                target.caps.egress && target.caps.ingress,
                "upload",
                "sch_ingress, act_mirred or ifb",
            ),
        };
        if !supported {
            if plan.wants(dir) {
                out.skipped
                    .push(format!("all {what} limits (kernel lacks {needs})"));
            }
            continue;
        }
        trees[i] = wanted(plan, dir, target, &mut out.skipped);
    }
    let [egress, ingress] = trees;

    render_tree(target.dev, &egress, &snap.egress, &mut out.tc)?;
    render_ingress(target, &ingress, snap, &mut out)?;
    Ok(out)
}

/// The IFB device, its tree, and the redirect on the interface's ingress hook.
fn render_ingress(
    target: &Target<'_>,
    want: &Wanted,
    snap: &Snapshot,
    out: &mut Rendered,
) -> Result<(), ShapingError> {
    let (dev, ifb) = (target.dev, target.ifb);
    let empty = TreeState::default();
    let ifb_tree = snap.ifb.as_ref().map_or(&empty, |s| &s.tree);
    if want.classes.is_empty() {
        // Tear down what is ours: the redirect first, so nothing lands on a half-removed tree.
        if let IngressHook::Ingress {
            redirect: Some(r),
            others,
        } = &snap.ingress
        {
            out.tc.push(format!(
                "filter del dev {dev} parent ffff: protocol all prio {REDIRECT_PRIO} handle {} u32",
                r.handle
            ));
            if !others {
                out.tc
                    .push(format!("qdisc del dev {dev} handle ffff: ingress"));
            }
        }
        if snap.ifb.is_some() {
            render_tree(ifb, want, ifb_tree, &mut out.tc)?;
        }
        return Ok(());
    }
    if let IngressHook::Foreign { kind } = &snap.ingress {
        return Err(ShapingError::ForeignIngress {
            dev: dev.to_owned(),
            kind: kind.clone(),
        });
    }
    match &snap.ifb {
        None => {
            out.ip.push(format!("link add {ifb} type ifb"));
            out.ip.push(format!("link set dev {ifb} up"));
        }
        Some(s) if !s.up => out.ip.push(format!("link set dev {ifb} up")),
        Some(_) => {}
    }
    render_tree(ifb, want, ifb_tree, &mut out.tc)?;

    let actions: Vec<String> = if want.has_mark() {
        vec!["connmark".into(), "mirred".into()]
    } else {
        vec!["mirred".into()]
    };
    let action_text: String = actions
        .iter()
        .map(|a| match a.as_str() {
            "mirred" => format!("action mirred egress redirect dev {ifb}"),
            other => format!("action {other} "),
        })
        .collect();
    let line = |handle: &str| {
        format!(
            "filter replace dev {dev} parent ffff: protocol all prio {REDIRECT_PRIO} handle \
             {handle} u32 match u32 0 0 {action_text}"
        )
    };
    match &snap.ingress {
        IngressHook::Absent => {
            out.tc
                .push(format!("qdisc add dev {dev} handle ffff: ingress"));
            out.tc.push(line("::1"));
        }
        IngressHook::Ingress { redirect: None, .. } => out.tc.push(line("::1")),
        IngressHook::Ingress {
            redirect: Some(r), ..
        } => {
            if !r.match_all {
                out.tc.push(format!(
                    "filter del dev {dev} parent ffff: protocol all prio {REDIRECT_PRIO} handle {} u32",
                    r.handle
                ));
                out.tc.push(line("::1"));
            } else if r.actions != actions || r.to_dev.as_deref() != Some(ifb) {
                out.tc.push(line(&r.handle));
            }
        }
        IngressHook::Foreign { .. } => {}
    }
    Ok(())
}

/// How deep `id` sits under the qdisc, following `parent_of`.
fn depth(id: ClassId, parent_of: impl Fn(ClassId) -> Option<ClassId>) -> usize {
    let mut d = 0;
    let mut cur = id;
    // Bounded: HTB trees are at most 8 levels, and a corrupt loop must not hang us.
    while let Some(p) = parent_of(cur) {
        if p == 0 || d > 16 {
            break;
        }
        d += 1;
        cur = p;
    }
    d
}

/// One device's root tree.
/// An explicit burst for fast classes. tc derives the default burst from the rate and the
/// kernel clock, and above about 4 Gbit/s that default rounds down to 0 bytes; one millisecond
/// of the rate keeps a 10 Gbit/s class able to send. Slow classes keep tc's default, which
/// keeps limits tight.
fn burst(rate: u64, ceil: u64) -> String {
    const MIN: u64 = 1_000_000_000;
    let bytes = |bps: u64| (bps / 8 / 1000).max(1600);
    if rate < MIN && ceil < MIN {
        return String::new();
    }
    let mut out = String::new();
    if rate >= MIN {
        out.push_str(&format!(" burst {}", bytes(rate)));
    }
    if ceil >= MIN {
        out.push_str(&format!(" cburst {}", bytes(ceil)));
    }
    out
}

fn render_tree(
    dev: &str,
    want: &Wanted,
    have: &TreeState,
    out: &mut Vec<String>,
) -> Result<(), ShapingError> {
    let ours = match &have.root {
        RootQdisc::Ours => true,
        RootQdisc::Default => false,
        RootQdisc::Foreign { kind, handle } => {
            if want.classes.is_empty() {
                return Ok(());
            }
            return Err(ShapingError::ForeignRootQdisc {
                dev: dev.to_owned(),
                kind: kind.clone(),
                handle: handle.clone(),
            });
        }
    };
    if want.classes.is_empty() {
        if ours {
            out.push(format!("qdisc del dev {dev} root handle {ROOT_HANDLE}"));
        }
        return Ok(());
    }
    let empty = TreeState::default();
    let have = if ours { have } else { &empty };
    if !ours {
        out.push(format!(
            "qdisc add dev {dev} root handle {ROOT_HANDLE} htb default {DEFAULT_CLASS:x}"
        ));
    }

    // Classes that must go: unwanted, moved to another parent, or under one that goes.
    let mut gone: BTreeSet<ClassId> = have
        .classes
        .iter()
        .filter(|(id, c)| want.classes.get(id).is_none_or(|w| w.parent != c.parent))
        .map(|(id, _)| *id)
        .collect();
    loop {
        let more: Vec<ClassId> = have
            .classes
            .iter()
            .filter(|(id, c)| !gone.contains(id) && gone.contains(&c.parent))
            .map(|(id, _)| *id)
            .collect();
        if more.is_empty() {
            break;
        }
        gone.extend(more);
    }

    // Filters: delete the unwanted, the rematched and those pointing at a class that goes.
    let mut fresh: BTreeSet<(u16, u16)> = want
        .filters
        .keys()
        .filter(|k| !have.filters.contains_key(k))
        .copied()
        .collect();
    let mut retarget = Vec::new();
    for (k, f) in &have.filters {
        let stale = match want.filters.get(k) {
            None => true,
            Some(w) => {
                w.selector != f.selector
                    || w.kind.protocol() != f.protocol
                    || f.flowid.is_some_and(|c| gone.contains(&c))
            }
        };
        if stale {
            out.push(format!(
                "filter del dev {dev} parent {ROOT_HANDLE} protocol {} prio {} handle {} u32",
                f.protocol, k.0, f.handle
            ));
            if want.filters.contains_key(k) {
                fresh.insert(*k);
            }
        } else if let Some(w) = want.filters.get(k)
            && f.flowid != Some(w.flowid)
        {
            retarget.push((*k, f.handle.clone()));
        }
    }

    let mut gone_order: Vec<ClassId> = gone.iter().copied().collect();
    gone_order.sort_by_key(|id| {
        std::cmp::Reverse(depth(*id, |c| have.classes.get(&c).map(|s| s.parent)))
    });
    for id in gone_order {
        out.push(format!("class del dev {dev} classid {ROOT_HANDLE}{id:x}"));
    }

    let mut add_order: Vec<(&ClassId, &WantClass)> = want.classes.iter().collect();
    add_order.sort_by_key(|(id, _)| depth(**id, |c| want.classes.get(&c).map(|w| w.parent)));
    for (id, w) in add_order {
        let same = !gone.contains(id)
            && have.classes.get(id).is_some_and(|c| {
                c.rate_bps == tc_rate_round(w.rate) && c.ceil_bps == tc_rate_round(w.ceil)
            });
        if same {
            continue;
        }
        let parent = if w.parent == 0 {
            ROOT_HANDLE.to_owned()
        } else {
            format!("{ROOT_HANDLE}{:x}", w.parent)
        };
        let quantum = (w.ceil / 80).clamp(1514, 200_000);
        out.push(format!(
            "class replace dev {dev} parent {parent} classid {ROOT_HANDLE}{id:x} htb rate {}bit \
             ceil {}bit quantum {quantum}{}",
            w.rate,
            w.ceil,
            burst(w.rate, w.ceil)
        ));
    }

    let filter_line = |k: &(u16, u16), w: &WantFilter, handle: &str| {
        format!(
            "filter replace dev {dev} parent {ROOT_HANDLE} protocol {} prio {} handle {handle} \
             u32 match {} flowid {ROOT_HANDLE}{:x}",
            w.kind.protocol(),
            k.0,
            w.text,
            w.flowid
        )
    };
    for (k, handle) in &retarget {
        if let Some(w) = want.filters.get(k) {
            out.push(filter_line(k, w, handle));
        }
    }
    for k in &fresh {
        if let Some(w) = want.filters.get(k) {
            out.push(filter_line(k, w, &format!("::{:x}", k.1)));
        }
    }
    Ok(())
}
