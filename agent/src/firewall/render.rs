//! Desired state → the `nft -f` transaction that replaces table `inet vpn_agent` (pure).
//!
//! The output is one atomic transaction: `table inet vpn_agent {}` (so the delete below never
//! fails on a fresh host), `delete table inet vpn_agent`, then the full definition. Nothing in it
//! names another table, and both base chains have `policy accept`, so the table can only ever
//! drop what it matches itself.
//!
//! What the table holds:
//! - `service_ports`: every managed port — each service's port and its users' ports, TCP and UDP.
//!   Port sets are interval sets although they hold single ports: the kernel builds a 10,000-port
//!   interval set in a tenth of the time of a hash set (0.05 s against 0.4 s measured here), and
//!   that time is part of the window in which counted traffic is lost (see [`super::apply`]).
//! - `blocked_v4` / `blocked_v6`: the block list, validated with `std::net`, host bits cleared,
//!   and networks inside another entry dropped, so the interval sets never see an overlap (nft
//!   refuses overlapping intervals without `auto-merge`, and auto-merge rewrites the elements,
//!   which would make the installed set differ from what we rendered).
//! - `input` (hook input, priority `filter - 10`, before the host's usual filter chains):
//!   1. packets from a blocked source to a managed port are dropped — all of them, not only new
//!      connections, so a block also ends open sessions;
//!   2. per rate-limited service, new connections (`ct state new`) above N per second **per
//!      source address** are dropped: a dynamic set per address family keyed by `saddr`, each
//!      element carrying its own `limit` (the modern form of a meter); elements expire a minute
//!      after a source's last new connection, and at most 65,535 sources are tracked per service
//!      and family — when the set is full a new source is not limited (fails open);
//!   3. what is left is counted per port in named counters (`port_<N>_up`) via a counter map.
//! - `output` (hook output): replies leaving a managed port are counted (`port_<N>_down`).
//!
//! Only managed ports are filtered, not the whole host: the table must never cut the host off
//! (SSH, the agent's own control channel, DNS, the host's other services), and an operator's
//! mistaken block of their own network must not lock them out of the machine. SPEC §2.5 asks that
//! a blocked address reach no *service*; every service port is a managed port, so that holds.
//!
//! Counters count after our own drops but before the host's later chains decide; a packet the
//! host's own firewall drops afterwards is still counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use vpn_shared::model::DesiredState;

use super::counters::{Direction, counter_name};
use super::{TABLE_FAMILY, TABLE_NAME};

/// Why a desired state cannot become a ruleset. Nothing is applied when rendering fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A block-list entry that is not an address or a CIDR network.
    #[error("blocked entry {entry:?} is not an address or network: {reason}")]
    InvalidBlocked { entry: String, reason: &'static str },
    /// A new-connection rate of zero cannot be expressed as a limit.
    #[error("service {service}: new-connection rate must be at least 1 per second")]
    ZeroRate { service: String },
    /// A WireGuard service's tunnel subnet that is not a network.
    #[error("service {service}: tunnel subnet {subnet:?} is not a network: {reason}")]
    InvalidSubnet {
        service: String,
        subnet: String,
        reason: &'static str,
    },
}

/// What the kernel lets us render (see [`super::apply::Firewall::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Render per-source new-connection limits; off when the kernel lacks dynamic sets or
    /// `limit`. There is deliberately no global-limit fallback: one busy client would then
    /// starve every other user of the service.
    pub rate_limits: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { rate_limits: true }
    }
}

/// An IPv4 or IPv6 network with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Network {
    v6: bool,
    addr: u128,
    prefix: u8,
}

impl Network {
    fn width(v6: bool) -> u8 {
        if v6 { 128 } else { 32 }
    }

    fn mask(v6: bool, prefix: u8) -> u128 {
        let width = Network::width(v6);
        let full = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        if prefix == 0 {
            0
        } else {
            (full << (width - prefix)) & full
        }
    }

    /// Parses `203.0.113.7`, `203.0.113.0/24`, `2001:db8::1` or `2001:db8::/32`.
    pub fn parse(entry: &str) -> Result<Network, RenderError> {
        let invalid = |reason| RenderError::InvalidBlocked {
            entry: entry.to_owned(),
            reason,
        };
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid("bad address"))?;
        let (v6, bits) = match addr {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let width = Network::width(v6);
        let prefix = match prefix {
            None => width,
            // `u8::from_str` would also take `+8`.
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(invalid("bad prefix length"));
            }
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => return Err(invalid("prefix length out of range")),
            },
        };
        Ok(Network {
            v6,
            addr: bits & Network::mask(v6, prefix),
            prefix,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// Whether `other` lies inside `self` (a network contains itself).
    pub fn contains(&self, other: &Network) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && other.addr & Network::mask(self.v6, self.prefix) == self.addr
    }
}

impl fmt::Display for Network {
    /// nft syntax: a bare address for a single host, `addr/len` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr: IpAddr = if self.v6 {
            std::net::Ipv6Addr::from(self.addr).into()
        } else {
            // The high bits are zero for v4 by construction.
            std::net::Ipv4Addr::from(self.addr as u32).into()
        };
        if self.prefix == Network::width(self.v6) {
            write!(f, "{addr}")
        } else {
            write!(f, "{addr}/{}", self.prefix)
        }
    }
}

/// Parses every entry and drops duplicates and networks inside another entry.
///
/// Sorted by family, address, then prefix, a network comes right before everything it contains,
/// so comparing with the last kept network is enough: CIDR blocks either nest or are disjoint.
pub fn normalize_blocked(entries: &[String]) -> Result<Vec<Network>, RenderError> {
    let mut nets = entries
        .iter()
        .map(|e| Network::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    nets.sort();
    let mut kept: Vec<Network> = Vec::with_capacity(nets.len());
    for net in nets {
        if kept.last().is_some_and(|last| last.contains(&net)) {
            continue;
        }
        kept.push(net);
    }
    Ok(kept)
}

/// A per-source new-connection limit on a set of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Names the limit's sets (`limited_<port>`): the service's own port.
    pub port: u16,
    pub per_second: u32,
    pub ports: BTreeSet<u16>,
}

/// The validated content of the table, before it becomes nft text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Every managed port: services' ports and their users' ports.
    pub ports: BTreeSet<u16>,
    pub blocked: Vec<Network>,
    pub limits: Vec<RateLimit>,
    /// WireGuard interfaces and their tunnel subnets: forwarded and masqueraded.
    pub tunnels: Vec<Tunnel>,
}

/// One WireGuard service's interface and the subnets its peers hold addresses of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub iface: String,
    pub subnets: Vec<Network>,
}

impl Ruleset {
    /// Validates `state` and collects what the table needs.
    ///
    /// Users' credentials for a service the state does not hold are ignored: no container
    /// listens for them. Two services on the same port (a conflict the driver reports) share
    /// one limit, the stricter one.
    pub fn from_state(state: &DesiredState) -> Result<Ruleset, RenderError> {
        let mut ports = BTreeSet::new();
        let mut limits: BTreeMap<u16, RateLimit> = BTreeMap::new();
        for service in state.services.values() {
            let mut own = BTreeSet::from([service.port]);
            if service.port_per_user() {
                own.extend(state.users_of(&service.name).map(|(_, c)| c.port()));
            }
            if let Some(rate) = service.new_conn_rate {
                if rate == 0 {
                    return Err(RenderError::ZeroRate {
                        service: service.name.clone(),
                    });
                }
                let limit = limits.entry(service.port).or_insert_with(|| RateLimit {
                    port: service.port,
                    per_second: rate,
                    ports: BTreeSet::new(),
                });
                limit.per_second = limit.per_second.min(rate);
                limit.ports.extend(&own);
            }
            ports.extend(own);
        }
        Ok(Ruleset {
            ports,
            blocked: normalize_blocked(&state.firewall.blocked)?,
            limits: limits.into_values().collect(),
            tunnels: tunnels(state)?,
        })
    }

    /// The names of the named counters the table defines.
    pub fn counter_names(&self) -> BTreeSet<String> {
        self.ports
            .iter()
            .flat_map(|p| [Direction::Up, Direction::Down].map(|d| counter_name(*p, d)))
            .collect()
    }

    /// The `nft -f` transaction.
    pub fn render(&self, opts: RenderOptions) -> String {
        let limits: &[RateLimit] = if opts.rate_limits { &self.limits } else { &[] };
        let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
        let mut out = format!(
            "# Managed by vpn-agent: the whole table is replaced on every change.\n\
             table {table} {{}}\ndelete table {table}\ntable {table} {{\n"
        );
        self.write_objects(&mut out, limits);
        self.write_chains(&mut out, limits);
        out.push_str("}\n");
        out
    }

    /// Counters, sets and maps.
    fn write_objects(&self, out: &mut String, limits: &[RateLimit]) {
        for port in &self.ports {
            for d in [Direction::Up, Direction::Down] {
                push_block(out, "counter", &counter_name(*port, d), &[], "");
            }
        }
        let (v6, v4): (Vec<&Network>, Vec<&Network>) = self.blocked.iter().partition(|n| n.v6);
        for (name, ty, nets) in [
            ("blocked_v4", "ipv4_addr", v4),
            ("blocked_v6", "ipv6_addr", v6),
        ] {
            let elements = join(nets.iter().map(|n| n.to_string()));
            push_block(
                out,
                "set",
                name,
                &[&format!("type {ty}"), "flags interval"],
                &elements,
            );
        }
        let ports = join(self.ports.iter().map(|p| p.to_string()));
        let port_set = ["type inet_service", "flags interval"];
        push_block(out, "set", "service_ports", &port_set, &ports);
        for (map, d) in [
            ("traffic_up", Direction::Up),
            ("traffic_down", Direction::Down),
        ] {
            let elements = join(
                self.ports
                    .iter()
                    .map(|p| format!("{p} : \"{}\"", counter_name(*p, d))),
            );
            push_block(out, "map", map, &["type inet_service : counter"], &elements);
        }
        for limit in limits {
            let ports = join(limit.ports.iter().map(|p| p.to_string()));
            let name = format!("limited_{}", limit.port);
            push_block(out, "set", &name, &port_set, &ports);
            for (fam, ty) in [("v4", "ipv4_addr"), ("v6", "ipv6_addr")] {
                let name = format!("sources_{}_{fam}", limit.port);
                let ty = format!("type {ty}");
                let lines = [
                    ty.as_str(),
                    "size 65535",
                    "flags dynamic,timeout",
                    "timeout 1m",
                ];
                push_block(out, "set", &name, &lines, "");
            }
        }
    }

    /// The input (filter and count) and output (count) chains.
    fn write_chains(&self, out: &mut String, limits: &[RateLimit]) {
        let l4 = "meta l4proto { tcp, udp }";
        let mut input = vec![
            format!("ip saddr @blocked_v4 {l4} th dport @service_ports drop"),
            format!("ip6 saddr @blocked_v6 {l4} th dport @service_ports drop"),
        ];
        for limit in limits {
            for (fam, saddr) in [("v4", "ip saddr"), ("v6", "ip6 saddr")] {
                // Burst of one second's worth: clients that open a few connections at once
                // (a browser behind the proxy) are not cut at their first page load.
                input.push(format!(
                    "{l4} th dport @limited_{port} ct state new update @sources_{port}_{fam} \
                     {{ {saddr} limit rate over {rate}/second burst {rate} packets }} drop",
                    port = limit.port,
                    rate = limit.per_second,
                ));
            }
        }
        input.push(format!("{l4} counter name th dport map @traffic_up"));
        let output = [format!("{l4} counter name th sport map @traffic_down")];
        let mut chains = vec![
            ("input", "filter hook input priority filter - 10", input),
            (
                "output",
                "filter hook output priority filter - 10",
                output.to_vec(),
            ),
        ];
        if !self.tunnels.is_empty() {
            let (forward, postrouting) = self.tunnel_rules();
            chains.push((
                "forward",
                "filter hook forward priority filter - 10",
                forward,
            ));
            chains.push((
                "postrouting",
                "nat hook postrouting priority srcnat - 10",
                postrouting,
            ));
        }
        for (name, hook, rules) in chains {
            out.push_str(&format!(
                "\tchain {name} {{\n\t\ttype {hook}; policy accept;\n"
            ));
            for rule in rules {
                out.push_str(&format!("\t\t{rule}\n"));
            }
            out.push_str("\t}\n");
        }
    }

    /// WireGuard: peers never reach each other through the server (`forward`), and their
    /// traffic leaving by any other interface is masqueraded to the host's address
    /// (`postrouting`). Accepting in our own `forward` chain cannot override a drop of the
    /// host's firewall, so a host with a dropping forward policy must allow the tunnel itself
    /// (docs/WIREGUARD.md); IP forwarding is switched on by the WireGuard driver.
    fn tunnel_rules(&self) -> (Vec<String>, Vec<String>) {
        let mut forward = Vec::new();
        let mut postrouting = Vec::new();
        for t in &self.tunnels {
            let iface = &t.iface;
            forward.push(format!("iifname \"{iface}\" oifname \"{iface}\" drop"));
            for n in &t.subnets {
                let fam = if n.is_v6() { "ip6" } else { "ip" };
                postrouting.push(format!("{fam} saddr {n} oifname != \"{iface}\" masquerade"));
            }
        }
        (forward, postrouting)
    }
}

/// `\tKIND NAME {` with one line per `lines` entry and the elements, or `{}` when empty.
fn push_block(out: &mut String, kind: &str, name: &str, lines: &[&str], elements: &str) {
    if lines.is_empty() && elements.is_empty() {
        out.push_str(&format!("\t{kind} {name} {{}}\n"));
        return;
    }
    out.push_str(&format!("\t{kind} {name} {{\n"));
    for line in lines {
        out.push_str(&format!("\t\t{line}\n"));
    }
    // nft refuses `elements = { }`: an empty set simply has no elements line.
    if !elements.is_empty() {
        out.push_str(&format!("\t\telements = {{ {elements} }}\n"));
    }
    out.push_str("\t}\n");
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// The WireGuard services' interfaces and subnets, in service order.
fn tunnels(state: &DesiredState) -> Result<Vec<Tunnel>, RenderError> {
    let mut out = Vec::new();
    for service in state.services.values() {
        let vpn_shared::model::ServiceOptions::Wireguard(o) = &service.options else {
            continue;
        };
        let mut subnets = Vec::new();
        for subnet in std::iter::once(&o.subnet).chain(o.ipv6_subnet.as_ref()) {
            let n = Network::parse(subnet).map_err(|e| match e {
                RenderError::InvalidBlocked { reason, .. } => RenderError::InvalidSubnet {
                    service: service.name.clone(),
                    subnet: subnet.clone(),
                    reason,
                },
                other => other,
            })?;
            subnets.push(n);
        }
        out.push(Tunnel {
            iface: crate::drivers::wireguard::interface_name(&service.name),
            subnets,
        });
    }
    Ok(out)
}

/// Validates `state` and renders the transaction that replaces our table.
pub fn render(state: &DesiredState) -> Result<String, RenderError> {
    render_with(state, RenderOptions::default())
}

/// [`render`] for a kernel that lacks some features.
pub fn render_with(state: &DesiredState, opts: RenderOptions) -> Result<String, RenderError> {
    Ok(Ruleset::from_state(state)?.render(opts))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vpn_shared::model::{
        Bandwidth, Credential, FirewallSpec, Protocol, ServiceOptions, ServiceSpec, UserSpec,
    };

    use super::*;

    fn service(name: &str, port: u16, rate: Option<u32>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            protocol: Protocol::Shadowsocks,
            port,
            image: None,
            options: ServiceOptions::Shadowsocks {
                method: "chacha20-ietf-poly1305".into(),
            },
            bandwidth: Bandwidth::default(),
            new_conn_rate: rate,
        }
    }

    fn user(name: &str, service: &str, port: u16) -> UserSpec {
        UserSpec {
            name: name.into(),
            id: format!("id-{name}"),
            credentials: vec![Credential::Shadowsocks {
                service: service.into(),
                port,
                password: "pw".into(),
            }],
            bandwidth: Bandwidth::default(),
        }
    }

    fn state(services: Vec<ServiceSpec>, users: Vec<UserSpec>, blocked: &[&str]) -> DesiredState {
        DesiredState {
            generation: 1,
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            firewall: FirewallSpec {
                blocked: blocked.iter().map(|b| b.to_string()).collect(),
            },
        }
    }

    fn cases() -> Vec<(&'static str, DesiredState)> {
        vec![
            ("empty", DesiredState::default()),
            (
                "service_with_users",
                state(
                    vec![service("ss", 39000, None)],
                    vec![user("alice", "ss", 39001), user("bob", "ss", 39002)],
                    &[],
                ),
            ),
            (
                "blocked_overlapping",
                state(
                    vec![service("ss", 39000, None)],
                    vec![],
                    &[
                        "203.0.113.0/24",
                        "203.0.113.7",
                        "203.0.113.128/25",
                        "198.51.100.9/16",
                        "192.0.2.1",
                        "192.0.2.1",
                        "2001:db8::/32",
                        "2001:db8:1::/48",
                        "2001:db8::1",
                        "fd00::17",
                    ],
                ),
            ),
            ("wireguard", {
                let mut wg = service("wireguard", 51820, None);
                wg.protocol = Protocol::Wireguard;
                wg.options = ServiceOptions::Wireguard(vpn_shared::model::WireguardOptions {
                    subnet: "10.66.0.0/16".into(),
                    ipv6_subnet: Some("fd66::/64".into()),
                    dns: vec![],
                    mtu: None,
                    private_key: "k".into(),
                });
                state(vec![wg, service("ss", 39000, None)], vec![], &[])
            }),
            (
                "rate_limit",
                state(
                    vec![service("ss", 39000, Some(20)), service("open", 40000, None)],
                    vec![user("alice", "ss", 39001), user("carol", "open", 40001)],
                    &[],
                ),
            ),
        ]
    }

    /// `GOLDEN_UPDATE=1` rewrites `golden/*.nft`; review the diff like code.
    #[test]
    fn golden_rulesets() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/firewall/golden");
        let update = std::env::var_os("GOLDEN_UPDATE").is_some();
        let mut mismatches = Vec::new();
        for (name, state) in cases() {
            let path = dir.join(format!("{name}.nft"));
            let actual = render(&state).unwrap();
            if update {
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
            if expected != actual {
                mismatches.push(format!("{name}:\n{actual}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "golden mismatch:\n{}",
            mismatches.join("\n")
        );
    }

    #[test]
    fn only_our_table_is_named() {
        for (name, state) in cases() {
            let text = render(&state).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.trim_start().strip_prefix("table ") {
                    assert!(rest.starts_with("inet vpn_agent "), "{name}: {line}");
                }
                if let Some(rest) = line.trim_start().strip_prefix("delete ") {
                    assert_eq!(rest, "table inet vpn_agent", "{name}");
                }
            }
            let chains = text.matches("\tchain ").count();
            assert!(chains >= 2, "{name}");
            assert_eq!(text.matches("policy accept;").count(), chains, "{name}");
            assert!(!text.contains("policy drop"), "{name}");
        }
    }

    #[test]
    fn parses_and_canonicalizes_networks() {
        let n = |s: &str| Network::parse(s).unwrap().to_string();
        assert_eq!(n("10.1.2.3"), "10.1.2.3");
        assert_eq!(n("10.1.2.3/32"), "10.1.2.3");
        assert_eq!(n("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(n("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(n("2001:DB8:0:0::1/128"), "2001:db8::1");
        assert_eq!(n("2001:db8::ff/64"), "2001:db8::/64");
        assert_eq!(n("::/0"), "::/0");
    }

    #[test]
    fn rejects_junk_naming_the_entry() {
        for bad in [
            "",
            " 10.0.0.1",
            "10.0.0.1 ",
            "10.0.0.256",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "2001:db8::/129",
            "fe80::1%eth0",
            "example.com",
            "10.0.0.1; flush ruleset",
            "10.0.0.0/8 }\ndelete table inet host_fw",
        ] {
            let err = normalize_blocked(&["192.0.2.1".into(), bad.into()]).unwrap_err();
            let RenderError::InvalidBlocked { entry, .. } = &err else {
                panic!("{bad:?}: {err:?}");
            };
            assert_eq!(entry, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn normalization_keeps_only_outermost_networks() {
        let blocked: Vec<String> = [
            "10.0.0.0/24",
            "10.0.0.0/8",
            "10.0.0.5",
            "11.0.0.0/8",
            "10.255.255.255",
            "9.255.255.255",
            "::/0",
            "2001:db8::1",
        ]
        .map(String::from)
        .to_vec();
        let got: Vec<String> = normalize_blocked(&blocked)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, ["9.255.255.255", "10.0.0.0/8", "11.0.0.0/8", "::/0"]);
    }

    #[test]
    fn zero_rate_is_refused() {
        let s = state(vec![service("ss", 1, Some(0))], vec![], &[]);
        assert_eq!(
            render(&s).unwrap_err(),
            RenderError::ZeroRate {
                service: "ss".into()
            }
        );
    }

    #[test]
    fn rate_limits_can_be_left_out() {
        let s = state(vec![service("ss", 39000, Some(5))], vec![], &[]);
        let with = render(&s).unwrap();
        let without = render_with(&s, RenderOptions { rate_limits: false }).unwrap();
        assert!(with.contains("limit rate over 5/second"));
        assert!(!without.contains("limit rate"));
        assert!(!without.contains("limited_39000"));
    }

    #[test]
    fn ports_are_unioned_and_stale_credentials_ignored() {
        let s = state(
            vec![service("ss", 39000, None)],
            vec![
                user("alice", "ss", 39000),
                user("bob", "ss", 39005),
                user("zed", "gone", 41000),
            ],
            &[],
        );
        let r = Ruleset::from_state(&s).unwrap();
        assert_eq!(r.ports, BTreeSet::from([39000, 39005]));
        assert_eq!(r.counter_names().len(), 4);
        assert!(r.counter_names().contains("port_39005_down"));
    }
}
