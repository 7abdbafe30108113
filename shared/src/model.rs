//! The desired-state model: what the controller wants a host to run.
//!
//! The controller renders one [`DesiredState`] per host; the agent persists the last one it
//! applied and re-applies it at start without the controller (SPEC §2.3). While connected the
//! controller sends [`Change`]s against a base generation instead of the whole state.
//!
//! Postcard has no schema evolution: enums here only ever gain variants at the end, and golden
//! bytes in `proto::tests` pin the encoding.

use std::collections::BTreeMap;

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

/// The VPN protocols a service can run. New protocols are appended, never inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// Shadowsocks through shadowsocks-rust's `ssmanager`, one port per user.
    Shadowsocks,
    /// VLESS with XTLS Vision over Reality: Xray-core (one port, users through its gRPC API) or
    /// shoes (one listener, and so one port, per user). See [`VlessEngine`].
    Vless,
    /// An HTTP and/or SOCKS5 proxy (shoes), one listener and port per user. See [`ProxyKind`].
    Proxy,
    /// WireGuard (`wireguard-go` or the kernel module, driven with `wg`): one UDP port per host
    /// for every user, peers changed with `wg set`.
    Wireguard,
}

impl Protocol {
    /// The name operators type on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Shadowsocks => "shadowsocks",
            Protocol::Vless => "vless",
            Protocol::Proxy => "proxy",
            Protocol::Wireguard => "wireguard",
        }
    }

    /// Parses an operator-supplied protocol name.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "shadowsocks" | "ss" => Some(Protocol::Shadowsocks),
            "vless" | "reality" | "vless-reality" => Some(Protocol::Vless),
            "proxy" | "http" | "socks" | "socks5" => Some(Protocol::Proxy),
            "wireguard" | "wg" => Some(Protocol::Wireguard),
            _ => None,
        }
    }

    /// Every protocol, in declaration order.
    pub const ALL: &'static [Protocol] = &[
        Protocol::Shadowsocks,
        Protocol::Vless,
        Protocol::Proxy,
        Protocol::Wireguard,
    ];
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One VPN service on a host: a container the agent owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Fleet-wide service name, unique (for example `shadowsocks`). Names the container.
    pub name: String,
    pub protocol: Protocol,
    /// The service's first port; per-user ports are allocated upwards from it.
    pub port: u16,
    /// Container image; `None` means the driver's default image.
    pub image: Option<String>,
    pub options: ServiceOptions,
    /// Cap on the whole service's traffic on a host.
    pub bandwidth: Bandwidth,
    /// New connections per second admitted per source address, if limited.
    pub new_conn_rate: Option<u32>,
}

impl ServiceSpec {
    /// Whether the engine listens on each user's own port (Shadowsocks, VLESS on shoes), or
    /// serves every user on the service port (VLESS on Xray).
    pub fn port_per_user(&self) -> bool {
        self.options.port_per_user()
    }
}

/// A rate limit in bits per second, per direction as seen by the user: `down` is traffic to the
/// user (host egress), `up` is traffic from the user (host ingress). `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Bandwidth {
    pub down_bps: Option<u64>,
    pub up_bps: Option<u64>,
}

impl Bandwidth {
    pub fn is_unlimited(&self) -> bool {
        self.down_bps.is_none() && self.up_bps.is_none()
    }
}

/// The host firewall's policy (SPEC §2.5): addresses and networks refused on every service port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FirewallSpec {
    /// CIDR networks or single addresses (`203.0.113.0/24`, `2001:db8::1`), sorted, unique.
    pub blocked: Vec<String>,
}

/// Protocol-specific service settings. New protocols are appended, never inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceOptions {
    Shadowsocks {
        /// AEAD cipher, for example `chacha20-ietf-poly1305` (Outline-compatible).
        method: String,
    },
    Vless(VlessOptions),
    Proxy(ProxyOptions),
    Wireguard(WireguardOptions),
}

impl ServiceOptions {
    /// See [`ServiceSpec::port_per_user`].
    pub fn port_per_user(&self) -> bool {
        match self {
            ServiceOptions::Shadowsocks { .. } => true,
            ServiceOptions::Vless(v) => v.engine.port_per_user(),
            ServiceOptions::Proxy(_) => true,
            ServiceOptions::Wireguard(_) => false,
        }
    }
}

/// An HTTP / SOCKS5 proxy service: each user has a listener of their own on their own port,
/// with their own user name and password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyOptions {
    pub kind: ProxyKind,
}

/// What a proxy service speaks on each user's port. Kinds are appended, never inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyKind {
    /// An HTTP proxy (`CONNECT` and plain requests), Basic `Proxy-Authorization`.
    Http,
    /// SOCKS5 with user name / password authentication (RFC 1929).
    Socks5,
    /// Both on the same port: the engine tells them apart by the first byte of a connection
    /// (a SOCKS5 greeting starts with 0x05), so a user has one port and two links.
    Both,
}

impl ProxyKind {
    /// The name operators type (`--kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Both => "both",
        }
    }

    /// Parses an operator-supplied kind.
    pub fn parse(s: &str) -> Option<ProxyKind> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(ProxyKind::Http),
            "socks5" | "socks" => Some(ProxyKind::Socks5),
            "both" | "http+socks5" | "mixed" => Some(ProxyKind::Both),
            _ => None,
        }
    }

    /// Whether clients reach the port as an HTTP proxy.
    pub fn http(self) -> bool {
        matches!(self, ProxyKind::Http | ProxyKind::Both)
    }

    /// Whether clients reach the port as a SOCKS5 proxy.
    pub fn socks5(self) -> bool {
        matches!(self, ProxyKind::Socks5 | ProxyKind::Both)
    }
}

impl std::fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which program serves a VLESS + Reality service. Engines are appended, never inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VlessEngine {
    /// Xray-core: one inbound on the service port for every user, users added and removed
    /// through its gRPC HandlerService, per-user counters from its StatsService.
    Xray,
    /// shoes: one VLESS listener holds one user, so every user has a port of their own.
    Shoes,
}

impl VlessEngine {
    /// The name operators type (`--engine`).
    pub fn as_str(self) -> &'static str {
        match self {
            VlessEngine::Xray => "xray",
            VlessEngine::Shoes => "shoes",
        }
    }

    /// Parses an operator-supplied engine name.
    pub fn parse(s: &str) -> Option<VlessEngine> {
        match s.to_ascii_lowercase().as_str() {
            "xray" => Some(VlessEngine::Xray),
            "shoes" => Some(VlessEngine::Shoes),
            _ => None,
        }
    }

    /// Whether every user gets a port of their own (else all share the service port).
    pub fn port_per_user(self) -> bool {
        matches!(self, VlessEngine::Shoes)
    }
}

impl std::fmt::Display for VlessEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VLESS + Reality service: the Reality key pair is per service (SPEC §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlessOptions {
    pub engine: VlessEngine,
    /// The server name clients send (`sni=` in links, Xray's `serverNames`).
    pub sni: String,
    /// Where Reality forwards handshakes that are not ours: `host:port` of a real TLS 1.3 site.
    pub dest: String,
    /// X25519 private key, base64url without padding (Xray's `privateKey`). Never shown to
    /// operators; only the service's hosts receive it.
    pub private_key: String,
    /// The matching public key (`pbk=` in links).
    pub public_key: String,
    /// Reality short ids, 8–16 hex characters each; links carry the first.
    pub short_ids: Vec<String>,
}

/// A WireGuard service: one interface (`wg0`) per host listening on the service's UDP port.
///
/// The controller stores the service with an empty `private_key` and fills in each host's own
/// interface key when it renders that host's state: keys are per host and service.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardOptions {
    /// The tunnel subnet (`10.66.0.0/16`); the server takes its first host address on every
    /// host, peers the following ones (allocated per host).
    pub subnet: String,
    /// An optional IPv6 tunnel subnet (`fd66::/64`); a peer's IPv6 address has the same index.
    pub ipv6_subnet: Option<String>,
    /// DNS servers for clients' `.conf` (`DNS =`), in order.
    pub dns: Vec<String>,
    /// Interface MTU on both ends; `None` keeps WireGuard's default (1420).
    pub mtu: Option<u16>,
    /// This host's interface private key, standard base64; empty outside a host's state.
    pub private_key: String,
}

impl std::fmt::Debug for WireguardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireguardOptions")
            .field("subnet", &self.subnet)
            .field("ipv6_subnet", &self.ipv6_subnet)
            .field("dns", &self.dns)
            .field("mtu", &self.mtu)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The only VLESS flow this product serves (XTLS Vision).
pub const VLESS_FLOW: &str = "xtls-rprx-vision";

/// One user as a host needs to know it: only users that are active and assigned to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    /// Unique user name.
    pub name: String,
    /// Stable user id (UUID), also the VLESS id once that protocol exists.
    pub id: String,
    /// One credential per service the user may use on this host.
    pub credentials: Vec<Credential>,
    /// The user's own rate limit on this host.
    pub bandwidth: Bandwidth,
}

/// A user's credential for one service. New protocols are appended, never inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    Shadowsocks {
        /// The service this credential belongs to.
        service: String,
        /// The user's own port on that service.
        port: u16,
        password: String,
    },
    Vless {
        service: String,
        /// The port the user's client dials: the user's own (shoes listens on it for this user
        /// alone) or the service's (Xray serves everyone there), see
        /// [`ServiceSpec::port_per_user`].
        port: u16,
        /// The user's VLESS id.
        uuid: String,
    },
    Proxy {
        service: String,
        /// The user's own port: their listener alone is there.
        port: u16,
        /// What the client sends as the user name (the user's name).
        username: String,
        password: String,
    },
    /// A WireGuard peer on this host: the host never sees the peer's private key.
    Wireguard {
        service: String,
        /// The service's UDP port.
        port: u16,
        /// The peer's public key, standard base64.
        public_key: String,
        /// The peer's preshared key, standard base64.
        preshared_key: String,
        /// The peer's tunnel addresses as host routes (`10.66.0.2/32`, `fd66::2/128`): its
        /// allowed IPs on the server, also what tc matches the user by.
        allowed_ips: Vec<String>,
    },
}

impl Credential {
    /// The service this credential belongs to.
    pub fn service(&self) -> &str {
        match self {
            Credential::Shadowsocks { service, .. }
            | Credential::Vless { service, .. }
            | Credential::Proxy { service, .. }
            | Credential::Wireguard { service, .. } => service,
        }
    }

    /// The port the user's client dials: their own, or the service's where users share it.
    pub fn port(&self) -> u16 {
        match self {
            Credential::Shadowsocks { port, .. }
            | Credential::Vless { port, .. }
            | Credential::Proxy { port, .. }
            | Credential::Wireguard { port, .. } => *port,
        }
    }
}

/// One edit of a host's desired state, sent in a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    UpsertService(ServiceSpec),
    RemoveService {
        name: String,
    },
    UpsertUser(UserSpec),
    RemoveUser {
        name: String,
    },
    /// Replaces the host's whole firewall policy.
    SetFirewall(FirewallSpec),
}

/// An order-independent digest of a desired state (generation excluded).
///
/// It is the XOR of the SHA-256 of every item's encoding, so both sides can keep it up to date
/// per change in O(1) instead of rehashing every user of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Toggles one item in or out of the digest.
    pub fn toggle(&mut self, item: &Item<'_>) {
        let bytes = postcard::to_stdvec(item).unwrap_or_default();
        let h = digest(&SHA256, &bytes);
        for (a, b) in self.0.iter_mut().zip(h.as_ref()) {
            *a ^= b;
        }
    }

    /// Short hex form for logs and the CLI.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// Digests combine by XOR: `a ^ b` toggles every item of `b` in or out of `a`, so the digest
/// after a change is the digest before it `^` the change's step (the old items' hashes and the
/// new ones').
impl std::ops::BitXor for Digest {
    type Output = Digest;
    fn bitxor(mut self, rhs: Digest) -> Digest {
        self ^= rhs;
        self
    }
}

impl std::ops::BitXorAssign for Digest {
    fn bitxor_assign(&mut self, rhs: Digest) {
        for (a, b) in self.0.iter_mut().zip(rhs.0) {
            *a ^= b;
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What one digest entry hashes: a service or a user, tagged so the two never collide.
#[derive(Debug, Serialize)]
pub enum Item<'a> {
    Service(&'a ServiceSpec),
    User(&'a UserSpec),
    Firewall(&'a FirewallSpec),
}

/// The whole desired state of one host at one generation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DesiredState {
    /// Monotonic per host; bumped by the controller on every change that touches the host.
    pub generation: u64,
    pub services: BTreeMap<String, ServiceSpec>,
    pub users: BTreeMap<String, UserSpec>,
    pub firewall: FirewallSpec,
}

/// Why a delta could not be applied to a state; the agent answers with a resync request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta was computed against another generation than the one held.
    #[error("delta base generation {base} does not match held generation {held}")]
    Gap { base: u64, held: u64 },
}

impl DesiredState {
    /// The digest of every service and user, independent of order and generation.
    pub fn digest(&self) -> Digest {
        let mut d = Digest::default();
        for s in self.services.values() {
            d.toggle(&Item::Service(s));
        }
        for u in self.users.values() {
            d.toggle(&Item::User(u));
        }
        d.toggle(&Item::Firewall(&self.firewall));
        d
    }

    /// Applies a delta computed against `base`, moving to `generation`.
    pub fn apply_delta(
        &mut self,
        base: u64,
        generation: u64,
        changes: &[Change],
    ) -> Result<(), DeltaError> {
        if base != self.generation {
            return Err(DeltaError::Gap {
                base,
                held: self.generation,
            });
        }
        for change in changes {
            self.apply_change(change.clone());
        }
        self.generation = generation;
        Ok(())
    }

    /// Applies one change in place (no generation bookkeeping).
    pub fn apply_change(&mut self, change: Change) {
        match change {
            Change::UpsertService(s) => {
                self.services.insert(s.name.clone(), s);
            }
            Change::RemoveService { name } => {
                self.services.remove(&name);
                for u in self.users.values_mut() {
                    u.credentials.retain(|c| c.service() != name);
                }
            }
            Change::UpsertUser(u) => {
                self.users.insert(u.name.clone(), u);
            }
            Change::RemoveUser { name } => {
                self.users.remove(&name);
            }
            Change::SetFirewall(f) => self.firewall = f,
        }
    }

    /// The users holding a credential for `service`, with that credential.
    pub fn users_of<'a>(
        &'a self,
        service: &'a str,
    ) -> impl Iterator<Item = (&'a UserSpec, &'a Credential)> + 'a {
        self.users.values().flat_map(move |u| {
            u.credentials
                .iter()
                .filter(move |c| c.service() == service)
                .map(move |c| (u, c))
        })
    }
}

/// A desired state with its digest kept up to date change by change.
///
/// Both the controller's session (to know the digest the agent must answer with) and the agent
/// use it; a change costs O(1) digest work instead of rehashing the whole state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedState {
    state: DesiredState,
    digest: Digest,
}

impl Default for TrackedState {
    fn default() -> Self {
        TrackedState::new(DesiredState::default())
    }
}

impl TrackedState {
    pub fn new(state: DesiredState) -> Self {
        let digest = state.digest();
        TrackedState { state, digest }
    }

    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// Applies a delta (see [`DesiredState::apply_delta`]) and updates the digest.
    pub fn apply_delta(
        &mut self,
        base: u64,
        generation: u64,
        changes: &[Change],
    ) -> Result<(), DeltaError> {
        if base != self.state.generation {
            return Err(DeltaError::Gap {
                base,
                held: self.state.generation,
            });
        }
        for change in changes {
            self.apply_change(change.clone());
        }
        self.state.generation = generation;
        Ok(())
    }

    fn apply_change(&mut self, change: Change) {
        match &change {
            Change::UpsertService(s) => {
                if let Some(old) = self.state.services.get(&s.name) {
                    self.digest.toggle(&Item::Service(old));
                }
                self.digest.toggle(&Item::Service(s));
            }
            Change::RemoveService { .. } => {
                // Credentials of the service disappear from every user: rehash once.
                self.state.apply_change(change);
                self.digest = self.state.digest();
                return;
            }
            Change::UpsertUser(u) => {
                if let Some(old) = self.state.users.get(&u.name) {
                    self.digest.toggle(&Item::User(old));
                }
                self.digest.toggle(&Item::User(u));
            }
            Change::RemoveUser { name } => {
                if let Some(old) = self.state.users.get(name) {
                    self.digest.toggle(&Item::User(old));
                }
            }
            Change::SetFirewall(f) => {
                self.digest.toggle(&Item::Firewall(&self.state.firewall));
                self.digest.toggle(&Item::Firewall(f));
            }
        }
        self.state.apply_change(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ss(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            protocol: Protocol::Shadowsocks,
            port: 8388,
            image: None,
            options: ServiceOptions::Shadowsocks {
                method: "chacha20-ietf-poly1305".into(),
            },
            bandwidth: Bandwidth::default(),
            new_conn_rate: None,
        }
    }

    fn user(name: &str, port: u16) -> UserSpec {
        UserSpec {
            name: name.into(),
            id: format!("id-{name}"),
            credentials: vec![Credential::Shadowsocks {
                service: "ss".into(),
                port,
                password: format!("pw-{name}"),
            }],
            bandwidth: Bandwidth::default(),
        }
    }

    #[test]
    fn digest_ignores_order_and_generation_but_sees_content() {
        let mut a = DesiredState::default();
        a.apply_change(Change::UpsertService(ss("ss")));
        a.apply_change(Change::UpsertUser(user("alice", 8388)));
        a.apply_change(Change::UpsertUser(user("bob", 8389)));
        let mut b = DesiredState {
            generation: 9,
            ..Default::default()
        };
        b.apply_change(Change::UpsertUser(user("bob", 8389)));
        b.apply_change(Change::UpsertUser(user("alice", 8388)));
        b.apply_change(Change::UpsertService(ss("ss")));
        assert_eq!(a.digest(), b.digest());
        b.apply_change(Change::UpsertUser(user("bob", 8390)));
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn delta_on_the_wrong_base_is_a_gap_and_changes_nothing() {
        let mut s = DesiredState {
            generation: 4,
            ..Default::default()
        };
        let err = s
            .apply_delta(3, 5, &[Change::UpsertUser(user("alice", 1))])
            .unwrap_err();
        assert_eq!(err, DeltaError::Gap { base: 3, held: 4 });
        assert!(s.users.is_empty());
        s.apply_delta(4, 5, &[Change::UpsertUser(user("alice", 1))])
            .unwrap();
        assert_eq!(s.generation, 5);
    }

    #[test]
    fn tracked_digest_matches_a_full_rehash_after_every_change() {
        let mut t = TrackedState::default();
        let changes = [
            Change::UpsertService(ss("ss")),
            Change::UpsertUser(user("alice", 8388)),
            Change::UpsertUser(user("bob", 8389)),
            Change::UpsertUser(user("alice", 8390)),
            Change::RemoveUser { name: "bob".into() },
            Change::RemoveUser {
                name: "nobody".into(),
            },
            Change::RemoveService { name: "ss".into() },
        ];
        for (i, c) in changes.iter().enumerate() {
            let g = i as u64;
            t.apply_delta(g, g + 1, std::slice::from_ref(c)).unwrap();
            assert_eq!(t.digest(), t.state().digest(), "after {c:?}");
        }
    }

    #[test]
    fn removing_a_service_drops_its_credentials() {
        let mut s = DesiredState::default();
        s.apply_change(Change::UpsertService(ss("ss")));
        s.apply_change(Change::UpsertUser(user("alice", 8388)));
        s.apply_change(Change::RemoveService { name: "ss".into() });
        assert!(s.users_of("ss").next().is_none());
    }
}
