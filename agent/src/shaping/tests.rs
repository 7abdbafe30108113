//! Golden files for rendered batches (`golden/*.tc`), checked against a small simulation of the
//! kernel rules that matter (u32 replace keeps keys and needs the full handle; a class with
//! children or filters cannot be deleted; `class replace` cannot move a class).
//!
//! Run with `GOLDEN_UPDATE=1` to rewrite the files after an intended change, and read the diff.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use vpn_shared::model::{
    Bandwidth, Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
};

use super::ShapingError;
use super::plan::{Matcher, Rates, ServiceClass, ShapingPlan, UserClass, plan};
use super::render::{Capabilities, REDIRECT_PRIO, Target, render};
use super::snapshot::{
    ClassState, FilterState, IfbState, IngressHook, Key, Redirect, RootQdisc, Selector, Snapshot,
    TreeState, parse_handle, tc_rate_round, u32_node,
};

const DEV: &str = "eth0";
const IFB: &str = "ifb-eth0";

fn target(caps: Capabilities) -> Target<'static> {
    Target {
        dev: DEV,
        ifb: IFB,
        ceiling_bps: 1_000_000_000,
        caps,
    }
}

// ---------------------------------------------------------------------------------------------
// A toy kernel: applies rendered lines to per-device state with the kernel's refusals.

#[derive(Debug, Clone, Default)]
struct Device {
    up: bool,
    ours: bool,
    classes: BTreeMap<u16, ClassState>,
    filters: BTreeMap<(u16, u16), FilterState>,
    ingress: Option<BTreeMap<u16, Redirect>>,
}

#[derive(Debug, Clone, Default)]
struct Kernel {
    devs: BTreeMap<String, Device>,
}

fn selector(words: &[&str]) -> Selector {
    let port = |w: &str| w.parse::<u32>().unwrap();
    let v6 = |w: &str, off: i32| -> Vec<Key> {
        let a: Ipv6Addr = w.trim_end_matches("/128").parse().unwrap();
        a.octets()
            .chunks(4)
            .enumerate()
            .map(|(i, c)| Key {
                value: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                mask: u32::MAX,
                off: off + 4 * i as i32,
            })
            .collect()
    };
    let v4 = |w: &str, off: i32| {
        let a: Ipv4Addr = w.trim_end_matches("/32").parse().unwrap();
        vec![Key {
            value: u32::from(a),
            mask: u32::MAX,
            off,
        }]
    };
    let k = |value, mask, off| vec![Key { value, mask, off }];
    let keys = match words {
        ["ip", "sport", p, "0xffff"] => k(port(p) << 16, 0xffff_0000, 20),
        ["ip", "dport", p, "0xffff"] => k(port(p), 0xffff, 20),
        ["ip6", "sport", p, "0xffff"] => k(port(p) << 16, 0xffff_0000, 40),
        ["ip6", "dport", p, "0xffff"] => k(port(p), 0xffff, 40),
        ["ip", "dst", a] => v4(a, 16),
        ["ip", "src", a] => v4(a, 12),
        ["ip6", "dst", a] => v6(a, 24),
        ["ip6", "src", a] => v6(a, 8),
        ["u32", "0", "0"] => k(0, 0, 0),
        ["mark", v, "0xffffffff"] => {
            let v = u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
            return Selector {
                keys: Vec::new(),
                mark: Some((v, u32::MAX)),
            };
        }
        other => panic!("unknown match {other:?}"),
    };
    Selector { keys, mark: None }
}

fn value<'a>(t: &[&'a str], name: &str) -> &'a str {
    let i = t.iter().position(|w| *w == name).unwrap();
    t[i + 1]
}

fn minor(h: &str) -> u16 {
    parse_handle(h).unwrap().1
}

impl Kernel {
    fn run(&mut self, r: &super::render::Rendered) -> Result<(), String> {
        for l in &r.ip {
            let t: Vec<&str> = l.split_whitespace().collect();
            match t.as_slice() {
                ["link", "add", name, "type", "ifb"] => {
                    self.devs.insert(name.to_string(), Device::default());
                }
                ["link", "set", "dev", name, "up"] => {
                    self.devs.get_mut(*name).ok_or("no such device")?.up = true;
                }
                _ => return Err(format!("unknown ip line {l}")),
            }
        }
        for l in &r.tc {
            self.tc(l).map_err(|e| format!("{l}: {e}"))?;
        }
        Ok(())
    }

    fn tc(&mut self, l: &str) -> Result<(), String> {
        let t: Vec<&str> = l.split_whitespace().collect();
        let dev = self
            .devs
            .get_mut(value(&t, "dev"))
            .ok_or("cannot find device")?;
        match (t[0], t[1]) {
            ("qdisc", "add") if t.contains(&"ingress") => {
                if dev.ingress.is_some() {
                    return Err("exists".into());
                }
                dev.ingress = Some(BTreeMap::new());
            }
            ("qdisc", "del") if t.contains(&"ingress") => {
                dev.ingress.take().ok_or("no ingress qdisc")?;
            }
            ("qdisc", "add") => {
                if dev.ours {
                    return Err("exists".into());
                }
                dev.ours = true;
            }
            ("qdisc", "del") => {
                if !dev.ours {
                    return Err("no qdisc".into());
                }
                dev.ours = false;
                dev.classes.clear();
                dev.filters.clear();
            }
            ("class", "replace") => {
                let id = minor(value(&t, "classid"));
                let parent = minor(value(&t, "parent"));
                if parent != 0 && !dev.classes.contains_key(&parent) {
                    return Err("no parent".into());
                }
                if dev.classes.get(&id).is_some_and(|c| c.parent != parent) {
                    return Err("class replace cannot move a class".into());
                }
                let rate = |w: &str| tc_rate_round(w.trim_end_matches("bit").parse().unwrap());
                dev.classes.insert(
                    id,
                    ClassState {
                        parent,
                        rate_bps: rate(value(&t, "rate")),
                        ceil_bps: rate(value(&t, "ceil")),
                    },
                );
            }
            ("class", "del") => {
                let id = minor(value(&t, "classid"));
                if dev.classes.values().any(|c| c.parent == id)
                    || dev.filters.values().any(|f| f.flowid == Some(id))
                {
                    return Err("class busy".into());
                }
                dev.classes.remove(&id).ok_or("no class")?;
            }
            ("filter", op) => {
                let prio: u16 = value(&t, "prio").parse().unwrap();
                let handle = value(&t, "handle");
                let node = handle
                    .rsplit(':')
                    .next()
                    .map(|n| u16::from_str_radix(n, 16).unwrap())
                    .unwrap();
                if value(&t, "parent") == "ffff:" {
                    let hook = dev.ingress.as_mut().ok_or("no ingress qdisc")?;
                    if op == "del" {
                        hook.remove(&prio).ok_or("no filter")?;
                        return Ok(());
                    }
                    let start = t.iter().position(|w| *w == "match").unwrap();
                    let sel = selector(&t[start + 1..start + 4]);
                    let mut actions = Vec::new();
                    for (i, w) in t.iter().enumerate() {
                        if *w == "action" {
                            actions.push(t[i + 1].to_string());
                        }
                    }
                    hook.insert(
                        prio,
                        Redirect {
                            handle: format!("800::{node:x}"),
                            match_all: sel.keys
                                == [Key {
                                    value: 0,
                                    mask: 0,
                                    off: 0,
                                }],
                            actions,
                            to_dev: t.last().map(|s| s.to_string()),
                        },
                    );
                    return Ok(());
                }
                let key = (prio, node);
                if op == "del" {
                    let f = dev.filters.get(&key).ok_or("no filter")?;
                    if f.handle != handle {
                        return Err("handle mismatch".into());
                    }
                    dev.filters.remove(&key);
                    return Ok(());
                }
                let flow = minor(value(&t, "flowid"));
                let flowid = Some(flow);
                if !dev.classes.contains_key(&flow) {
                    return Err("flowid names no class".into());
                }
                let start = t.iter().position(|w| *w == "match").unwrap();
                let end = t.iter().position(|w| *w == "flowid").unwrap();
                let sel = selector(&t[start + 1..end]);
                match dev.filters.get_mut(&key) {
                    Some(f) if handle.starts_with("::") => {
                        let _ = f;
                        return Err("No space left on device".into());
                    }
                    // The kernel keeps the old keys on replace.
                    Some(f) => f.flowid = flowid,
                    None if handle.starts_with("::") => {
                        dev.filters.insert(
                            key,
                            FilterState {
                                handle: format!("{:x}::{node:x}", 0x800 + prio),
                                protocol: value(&t, "protocol").to_string(),
                                flowid,
                                selector: sel,
                            },
                        );
                    }
                    None => return Err("no such handle".into()),
                }
            }
            _ => return Err("unknown line".into()),
        }
        Ok(())
    }

    fn tree(dev: Option<&Device>) -> TreeState {
        match dev {
            Some(d) if d.ours => TreeState {
                root: RootQdisc::Ours,
                classes: d.classes.clone(),
                filters: d.filters.clone(),
            },
            _ => TreeState::default(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let eth = self.devs.get(DEV);
        let ingress = match eth.and_then(|d| d.ingress.as_ref()) {
            None => IngressHook::Absent,
            Some(hook) => IngressHook::Ingress {
                redirect: hook.get(&REDIRECT_PRIO).cloned(),
                others: hook.keys().any(|p| *p != REDIRECT_PRIO),
            },
        };
        Snapshot {
            egress: Kernel::tree(eth),
            ingress,
            ifb: self.devs.get(IFB).map(|d| IfbState {
                up: d.up,
                tree: Kernel::tree(Some(d)),
            }),
        }
    }

    fn fresh() -> Kernel {
        let mut k = Kernel::default();
        k.devs.insert(
            DEV.into(),
            Device {
                up: true,
                ..Default::default()
            },
        );
        k
    }
}

// ---------------------------------------------------------------------------------------------
// Desired states.

fn service(name: &str, bw: Bandwidth) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        protocol: Protocol::Shadowsocks,
        port: 8388,
        image: None,
        options: ServiceOptions::Shadowsocks {
            method: "chacha20-ietf-poly1305".into(),
        },
        bandwidth: bw,
        new_conn_rate: None,
    }
}

fn user(name: &str, port: u16, down: Option<u64>, up: Option<u64>) -> UserSpec {
    UserSpec {
        name: name.into(),
        id: format!("00000000-0000-4000-8000-{:012}", port),
        credentials: vec![Credential::Shadowsocks {
            service: "ss".into(),
            port,
            password: "pw".into(),
        }],
        bandwidth: Bandwidth {
            down_bps: down,
            up_bps: up,
        },
    }
}

fn state(cap: Bandwidth, users: Vec<UserSpec>) -> DesiredState {
    DesiredState {
        generation: 1,
        services: [("ss".to_string(), service("ss", cap))].into(),
        users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
        ..Default::default()
    }
}

const M8: Option<u64> = Some(8_000_000);
const M16: Option<u64> = Some(16_000_000);

fn one_limited() -> DesiredState {
    state(
        Bandwidth::default(),
        vec![user("alice", 9000, M8, M8), user("bob", 9001, None, None)],
    )
}

fn capped_two_users() -> DesiredState {
    state(
        Bandwidth {
            down_bps: Some(100_000_000),
            up_bps: Some(50_000_000),
        },
        vec![user("alice", 9000, M8, None), user("bob", 9001, None, None)],
    )
}

/// A plan with every matcher kind, as WireGuard and Xray services will produce.
fn all_matchers() -> ShapingPlan {
    let lim = |d, u| Rates {
        egress_bps: Some(d),
        ingress_bps: Some(u),
    };
    ShapingPlan {
        services: vec![
            ServiceClass {
                service: "wg".into(),
                id: 0x1234,
                rest_id: None,
                cap: Rates::default(),
                users: vec![UserClass {
                    user: "carol".into(),
                    id: 0x2345,
                    rates: lim(20_000_000, 10_000_000),
                    matchers: vec![
                        Matcher::TunnelAddr(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 2))),
                        Matcher::TunnelAddr("fd00:8::2".parse().unwrap()),
                    ],
                }],
            },
            ServiceClass {
                service: "vless".into(),
                id: 0x3456,
                rest_id: None,
                cap: Rates::default(),
                users: vec![UserClass {
                    user: "dave".into(),
                    id: 0x4567,
                    // Outbound view: egress is dave's upload.
                    rates: lim(5_000_000, 30_000_000),
                    matchers: vec![Matcher::Mark(0x1001)],
                }],
            },
            ServiceClass {
                service: "ss".into(),
                id: 0x5678,
                rest_id: None,
                cap: Rates::default(),
                users: vec![UserClass {
                    user: "erin".into(),
                    id: 0x6789,
                    rates: lim(8_000_000, 8_000_000),
                    matchers: vec![Matcher::ServerPort { port: 9100 }],
                }],
            },
        ],
        unplaced: Vec::new(),
    }
}

const HERE: Capabilities = Capabilities {
    egress: true,
    ingress: true,
    mark: false,
    connmark: false,
};

/// Renders `to` against a kernel that holds `from` (applied with the same capabilities), checks
/// that the lines apply cleanly and that rendering again is empty. Returns the lines.
fn step(from: &ShapingPlan, to: &ShapingPlan, caps: Capabilities) -> String {
    let t = target(caps);
    let mut k = Kernel::fresh();
    let first = render(from, &t, &k.snapshot()).unwrap();
    k.run(&first).unwrap();
    assert!(
        render(from, &t, &k.snapshot()).unwrap().is_empty(),
        "rendering twice is not idempotent"
    );
    let r = render(to, &t, &k.snapshot()).unwrap();
    k.run(&r).unwrap();
    let again = render(to, &t, &k.snapshot()).unwrap();
    assert!(again.is_empty(), "not converged:\n{}", again.to_text());
    r.to_text()
}

fn empty() -> ShapingPlan {
    ShapingPlan::default()
}

fn golden_cases() -> Vec<(&'static str, String)> {
    let one = plan(&one_limited());
    let mut faster = one_limited();
    faster.users.get_mut("alice").unwrap().bandwidth = Bandwidth {
        down_bps: M16,
        up_bps: M16,
    };
    let two = plan(&state(
        Bandwidth::default(),
        vec![user("alice", 9000, M8, M8), user("bob", 9001, M8, M8)],
    ));
    let bob_only = plan(&state(
        Bandwidth::default(),
        vec![user("bob", 9001, M8, M8)],
    ));
    vec![
        ("empty", step(&empty(), &empty(), HERE)),
        ("empty_after_limits", step(&one, &empty(), HERE)),
        ("one_limited_user", step(&empty(), &one, HERE)),
        (
            "service_cap_two_users",
            step(&empty(), &plan(&capped_two_users()), HERE),
        ),
        ("rate_change", step(&one, &plan(&faster), HERE)),
        ("user_removed", step(&two, &bob_only, HERE)),
        (
            "all_matchers",
            step(&empty(), &all_matchers(), Capabilities::ALL),
        ),
        (
            "all_matchers_without_mark",
            step(&empty(), &all_matchers(), HERE),
        ),
    ]
}

#[test]
fn rendered_batches_match_their_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/shaping/golden");
    let update = std::env::var_os("GOLDEN_UPDATE").is_some();
    let mut mismatches = Vec::new();
    for (name, text) in golden_cases() {
        let path = dir.join(format!("{name}.tc"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
        if expected != text {
            mismatches.push(format!("{name}:\n--- expected\n{expected}--- got\n{text}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn nothing_installed_and_nothing_wanted_renders_nothing() {
    let r = render(&empty(), &target(HERE), &Snapshot::default()).unwrap();
    assert!(r.is_empty());
}

#[test]
fn a_rate_change_replaces_only_that_users_classes() {
    let text = golden_cases()
        .into_iter()
        .find(|(n, _)| *n == "rate_change")
        .unwrap()
        .1;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let alice = plan(&one_limited()).services[0].users[0].id;
    for l in lines {
        assert!(l.starts_with("tc class replace"), "{l}");
        assert!(l.contains(&format!("classid 7a6e:{alice:x} ")), "{l}");
    }
}

#[test]
fn a_changed_port_is_deleted_and_added_not_replaced() {
    let before = plan(&one_limited());
    let mut moved = one_limited();
    moved.users.get_mut("alice").unwrap().credentials = vec![Credential::Shadowsocks {
        service: "ss".into(),
        port: 9500,
        password: "pw".into(),
    }];
    let text = step(&before, &plan(&moved), HERE);
    assert_eq!(text.matches("filter del").count(), 4, "{text}");
    assert_eq!(text.matches("handle ::").count(), 4, "{text}");
    assert!(!text.contains("class "), "{text}");
}

#[test]
fn a_moved_class_is_deleted_with_its_filters_and_added_back() {
    // The service's class id changes (a probe cluster moved): alice's class must move with it,
    // and HTB cannot re-parent a class in place.
    let p = plan(&one_limited());
    let mut q = p.clone();
    let alice = p.services[0].users[0].id;
    q.services[0].id = if alice == 0xabc { 0xabd } else { 0xabc };
    assert_ne!(q.services[0].id, p.services[0].id);
    let text = step(&p, &q, HERE);
    assert_eq!(text.matches("filter del").count(), 4, "{text}");
    assert_eq!(text.matches("class del").count(), 4, "{text}");
}

#[test]
fn a_foreign_root_qdisc_is_refused_and_left_alone() {
    let snap = Snapshot {
        egress: TreeState {
            root: RootQdisc::Foreign {
                kind: "htb".into(),
                handle: "1:".into(),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let err = render(&plan(&one_limited()), &target(HERE), &snap).unwrap_err();
    assert!(
        matches!(err, ShapingError::ForeignRootQdisc { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("eth0"));
    // Nothing wanted: nothing to say about someone else's qdisc.
    assert!(render(&empty(), &target(HERE), &snap).unwrap().is_empty());
}

#[test]
fn a_clsact_ingress_refuses_upload_limits() {
    let snap = Snapshot {
        ingress: IngressHook::Foreign {
            kind: "clsact".into(),
        },
        ..Default::default()
    };
    let err = render(&plan(&one_limited()), &target(HERE), &snap).unwrap_err();
    assert!(matches!(err, ShapingError::ForeignIngress { .. }), "{err}");
}

#[test]
fn a_shared_ingress_qdisc_keeps_other_filters_and_itself() {
    let mut k = Kernel::fresh();
    let t = target(HERE);
    let one = plan(&one_limited());
    k.run(&render(&one, &t, &k.snapshot()).unwrap()).unwrap();
    let hook = k.devs.get_mut(DEV).unwrap().ingress.as_mut().unwrap();
    hook.insert(
        10,
        Redirect {
            handle: "801::1".into(),
            match_all: false,
            actions: vec!["police".into()],
            to_dev: None,
        },
    );
    let r = render(&empty(), &t, &k.snapshot()).unwrap();
    assert!(
        r.tc.iter()
            .all(|l| !l.contains("qdisc del dev eth0 handle ffff:"))
    );
    k.run(&r).unwrap();
    assert!(k.devs[DEV].ingress.as_ref().unwrap().contains_key(&10));
}

#[test]
fn a_filter_handle_names_its_user() {
    let one = plan(&one_limited());
    let id = one.services[0].users[0].id;
    let text = step(&empty(), &one, HERE);
    let node = format!("handle ::{:x} ", id & 0xfff);
    assert_eq!(text.matches(&node).count(), 4, "{text}");
    assert_eq!(u32_node("800::1"), Some(1));
}

#[test]
fn without_ifb_only_download_is_shaped_and_the_gap_is_said() {
    let caps = Capabilities {
        ingress: false,
        ..HERE
    };
    let text = step(&empty(), &plan(&one_limited()), caps);
    assert!(!text.contains(IFB), "{text}");
    assert!(text.contains("ip sport 9000"), "{text}");
    assert!(
        text.contains("# skipped: all upload limits (kernel lacks sch_ingress, act_mirred or ifb)"),
        "{text}"
    );
}
