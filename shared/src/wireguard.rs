//! WireGuard keys, tunnel subnets and the address allocator (SPEC §2.4).
//!
//! Keys are X25519, written as standard base64 with padding (44 characters), the text `wg
//! genkey` / `wg pubkey` / `wg genpsk` print and `wg set` reads. Tunnel addresses are per user
//! **per server**: within one service on one host, the server takes the subnet's first host
//! address and peers the following ones, always the lowest free one, never one still held.
//!
//! Everything here is pure (no IO besides the system random source), so the controller's store
//! and tests use the same allocator.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};

/// Length of a WireGuard key (private, public or preshared) in bytes.
pub const KEY_LEN: usize = 32;

/// A WireGuard key pair, both halves standard base64 with padding.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub private_key: String,
    pub public_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("private_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// Why a key, subnet or address could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireguardError {
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// A key that is not standard base64 of 32 bytes.
    #[error("wireguard key is not base64 of {KEY_LEN} bytes")]
    Key,
    /// A subnet that is not `ADDRESS/PREFIX`, or leaves no room for a server and a peer.
    #[error("invalid subnet {subnet:?}: {reason}")]
    Subnet { subnet: String, reason: String },
    /// Every peer address of the subnet is held.
    #[error("no free tunnel address left in subnet {subnet} of service {service}")]
    Exhausted { service: String, subnet: String },
}

/// A fresh key pair from the system's random source, the private half clamped (as `wg genkey`).
pub fn generate_key_pair() -> Result<KeyPair, WireguardError> {
    let mut secret = random_key()?;
    secret[0] &= 248;
    secret[31] &= 127;
    secret[31] |= 64;
    let public = PublicKey::from(&StaticSecret::from(secret));
    Ok(KeyPair {
        private_key: STANDARD.encode(secret),
        public_key: STANDARD.encode(public.as_bytes()),
    })
}

/// A fresh preshared key (as `wg genpsk`).
pub fn generate_preshared_key() -> Result<String, WireguardError> {
    Ok(STANDARD.encode(random_key()?))
}

/// The public key of a private key (as `wg pubkey`).
pub fn public_key_from_private(private_key: &str) -> Result<String, WireguardError> {
    let secret = decode_key(private_key)?;
    let public = PublicKey::from(&StaticSecret::from(secret));
    Ok(STANDARD.encode(public.as_bytes()))
}

/// Decodes a standard-base64 key and checks it is 32 bytes.
pub fn decode_key(key: &str) -> Result<[u8; KEY_LEN], WireguardError> {
    let bytes = STANDARD.decode(key).map_err(|_| WireguardError::Key)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| WireguardError::Key)
}

fn random_key() -> Result<[u8; KEY_LEN], WireguardError> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| WireguardError::Random)?;
    Ok(key)
}

/// A tunnel subnet: its network address and prefix length, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// Parses `10.66.0.0/16` or `fd66::/64`. Host bits must be zero, and the subnet must hold a
    /// server and at least one peer.
    pub fn parse(s: &str) -> Result<Subnet, WireguardError> {
        let bad = |reason: &str| WireguardError::Subnet {
            subnet: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let network: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        let bits = Self::bits_of(network);
        if prefix > bits {
            return Err(bad(&format!("prefix longer than {bits} bits")));
        }
        let subnet = Subnet { network, prefix };
        if subnet.value(network) & subnet.host_mask() != 0 {
            return Err(bad("host bits are set"));
        }
        if subnet.last_peer_index() < FIRST_PEER_INDEX {
            return Err(bad("too small for a server and a peer"));
        }
        Ok(subnet)
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The server's tunnel address: the first host address.
    pub fn server_address(&self) -> IpAddr {
        self.nth(SERVER_INDEX).unwrap_or(self.network)
    }

    /// The address at `index` from the network address, if inside the subnet.
    pub fn nth(&self, index: u128) -> Option<IpAddr> {
        if index > self.host_mask() {
            return None;
        }
        let v = self.value(self.network) | index;
        Some(match self.network {
            IpAddr::V4(_) => IpAddr::V4(u32::try_from(v).ok()?.into()),
            IpAddr::V6(_) => IpAddr::V6(v.into()),
        })
    }

    /// The index of `addr` inside the subnet, if it is inside.
    pub fn index_of(&self, addr: IpAddr) -> Option<u128> {
        if addr.is_ipv4() != self.is_ipv4() {
            return None;
        }
        let v = self.value(addr);
        (v & !self.host_mask() == self.value(self.network)).then_some(v & self.host_mask())
    }

    /// The largest index a peer may take: IPv4 keeps its broadcast address free.
    pub fn last_peer_index(&self) -> u128 {
        match self.network {
            IpAddr::V4(_) => self.host_mask().saturating_sub(1),
            IpAddr::V6(_) => self.host_mask(),
        }
    }

    /// A single address of the subnet as a host route (`10.66.0.2/32`).
    pub fn host_route(addr: IpAddr) -> String {
        format!("{addr}/{}", Self::bits_of(addr))
    }

    fn bits_of(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    fn host_mask(&self) -> u128 {
        let host_bits = u32::from(Self::bits_of(self.network) - self.prefix);
        1u128.checked_shl(host_bits).map_or(u128::MAX, |v| v - 1)
    }

    fn value(&self, addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Index of the server's address in its subnet.
pub const SERVER_INDEX: u128 = 1;
/// Index of the first peer address.
pub const FIRST_PEER_INDEX: u128 = 2;

/// Hands out the lowest free peer indices of one service's subnet on one host.
///
/// Built from the indices already held there; a batch of `n` allocations costs O((held + n)
/// log held), so deploying a service to many users does not rescan per user.
#[derive(Debug, Clone)]
pub struct Allocator {
    service: String,
    subnet: Subnet,
    held: BTreeSet<u128>,
    cursor: u128,
}

impl Allocator {
    pub fn new(service: &str, subnet: Subnet, held: impl IntoIterator<Item = u128>) -> Allocator {
        Allocator {
            service: service.to_owned(),
            subnet,
            held: held.into_iter().collect(),
            cursor: FIRST_PEER_INDEX,
        }
    }

    /// The lowest free peer index, now held; a clear error naming the service and the subnet
    /// when none is left.
    pub fn allocate(&mut self) -> Result<u128, WireguardError> {
        while self.held.contains(&self.cursor) {
            self.cursor += 1;
        }
        if self.cursor > self.subnet.last_peer_index() {
            return Err(WireguardError::Exhausted {
                service: self.service.clone(),
                subnet: self.subnet.to_string(),
            });
        }
        let index = self.cursor;
        self.held.insert(index);
        self.cursor += 1;
        Ok(index)
    }

    /// Gives an index back (its holder was removed); later allocations may take it again.
    pub fn release(&mut self, index: u128) {
        if self.held.remove(&index) && index < self.cursor {
            self.cursor = index.max(FIRST_PEER_INDEX);
        }
    }
}

/// A peer's allowed IPs on the server, and its `Address` in the client's `.conf`: the address
/// at `index` of the subnet, and of the IPv6 subnet when the service has one.
pub fn peer_addresses(
    service: &str,
    subnet: &Subnet,
    ipv6: Option<&Subnet>,
    index: u128,
) -> Result<Vec<IpAddr>, WireguardError> {
    let exhausted = |s: &Subnet| WireguardError::Exhausted {
        service: service.to_owned(),
        subnet: s.to_string(),
    };
    let mut out = vec![subnet.nth(index).ok_or_else(|| exhausted(subnet))?];
    if let Some(v6) = ipv6 {
        if index > v6.last_peer_index() {
            return Err(exhausted(v6));
        }
        out.push(v6.nth(index).ok_or_else(|| exhausted(v6))?);
    }
    Ok(out)
}

/// What a client's `.conf` carries: the `wg-quick` format every WireGuard app imports.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConf {
    /// The client's private key (the controller keeps it to print this file).
    pub private_key: String,
    /// The client's tunnel addresses as host routes (`10.66.0.2/32`, `fd66::2/128`).
    pub addresses: Vec<String>,
    pub dns: Vec<String>,
    pub mtu: Option<u16>,
    /// The host's interface public key.
    pub server_public_key: String,
    pub preshared_key: String,
    /// `host:port` (IPv6 hosts bracketed).
    pub endpoint: String,
}

impl std::fmt::Debug for ClientConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConf")
            .field("addresses", &self.addresses)
            .field("endpoint", &self.endpoint)
            .field("server_public_key", &self.server_public_key)
            .finish_non_exhaustive()
    }
}

/// Every route through the tunnel: a full-tunnel VPN.
pub const CLIENT_ALLOWED_IPS: &str = "0.0.0.0/0, ::/0";

impl ClientConf {
    /// The `.conf` text, `[Interface]` then `[Peer]`, lines in `wg-quick`'s order.
    pub fn render(&self) -> String {
        let mut out = String::from("[Interface]\n");
        out.push_str(&format!("PrivateKey = {}\n", self.private_key));
        out.push_str(&format!("Address = {}\n", self.addresses.join(", ")));
        if !self.dns.is_empty() {
            out.push_str(&format!("DNS = {}\n", self.dns.join(", ")));
        }
        if let Some(mtu) = self.mtu {
            out.push_str(&format!("MTU = {mtu}\n"));
        }
        out.push_str("\n[Peer]\n");
        out.push_str(&format!("PublicKey = {}\n", self.server_public_key));
        out.push_str(&format!("PresharedKey = {}\n", self.preshared_key));
        out.push_str(&format!("Endpoint = {}\n", self.endpoint));
        out.push_str(&format!("AllowedIPs = {CLIENT_ALLOWED_IPS}\n"));
        out
    }
}

/// `host:port` with an IPv6 host bracketed, as `Endpoint =` expects.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
