//! Checks of operator input before anything is written, so a bad value is refused with the
//! field it came from and nothing is half-written (SPEC §4 item 6). Pure functions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vpn_shared::model::{Bandwidth, Protocol, ServiceOptions, VlessEngine, VlessOptions};

use super::error::{Result, StoreError};

/// A host name: `[a-z0-9][a-z0-9-]{0,62}` (a DNS label, so it can name containers and files).
pub(crate) fn host_name(name: &str) -> Result<()> {
    pattern(
        name,
        63,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c == '-',
    )
    .map_err(|reason| StoreError::invalid("name", format!("server name {name:?} {reason}")))
}

/// A service name: `[a-z0-9][a-z0-9-]{0,31}` (it names the agent's container).
pub(crate) fn service_name(name: &str) -> Result<()> {
    pattern(
        name,
        32,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c == '-',
    )
    .map_err(|reason| StoreError::invalid("name", format!("service name {name:?} {reason}")))
}

/// A user name: `[A-Za-z0-9][A-Za-z0-9._@-]{0,63}` (it becomes the Xray email and link label).
pub(crate) fn user_name(name: &str) -> Result<()> {
    pattern(
        name,
        64,
        |c| c.is_ascii_alphanumeric(),
        |c| matches!(c, '.' | '_' | '@' | '-'),
    )
    .map_err(|reason| StoreError::invalid("name", format!("user name {name:?} {reason}")))
}

/// `first` must hold for the first character; the others may also match `extra`.
fn pattern(
    value: &str,
    max: usize,
    first: impl Fn(char) -> bool,
    extra: impl Fn(char) -> bool,
) -> Result<(), String> {
    let mut chars = value.chars();
    let Some(c) = chars.next() else {
        return Err("is empty".into());
    };
    if !first(c) {
        return Err(format!("must start with a letter or digit, not {c:?}"));
    }
    if let Some(bad) = chars.find(|&c| !first(c) && !extra(c)) {
        return Err(format!("contains {bad:?}"));
    }
    if value.chars().count() > max {
        return Err(format!("is longer than {max} characters"));
    }
    Ok(())
}

/// An optional email: one `@` with text on both sides, no spaces, at most 254 characters.
pub(crate) fn email(email: Option<&str>) -> Result<()> {
    let Some(email) = email else { return Ok(()) };
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

/// An optional free-text note: at most 1024 characters, no control characters but newlines.
pub(crate) fn note(note: Option<&str>) -> Result<()> {
    let Some(note) = note else { return Ok(()) };
    if note.chars().count() > 1024 {
        return Err(StoreError::invalid(
            "note",
            "is longer than 1024 characters",
        ));
    }
    if note
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(StoreError::invalid("note", "contains control characters"));
    }
    Ok(())
}

/// A service's port range `port ..= port + span - 1` must fit in 1..=65535. `span_field` names
/// where the span came from (`ports` when the operator chose it, `port` for the default span),
/// so a range pushed past 65535 is blamed on the flag that did it.
pub(crate) fn port_range(port: u16, span: u16, span_field: &'static str) -> Result<()> {
    if port == 0 {
        return Err(StoreError::invalid("port", "must be between 1 and 65535"));
    }
    if span == 0 {
        return Err(StoreError::invalid("ports", "must be at least 1"));
    }
    let last = u32::from(port) + u32::from(span) - 1;
    if last > u32::from(u16::MAX) {
        return Err(StoreError::invalid(
            span_field,
            format!("the range {port}-{last} ({span} ports) goes past 65535"),
        ));
    }
    Ok(())
}

/// An optional container image reference: non-empty, no whitespace.
pub(crate) fn image(image: Option<&str>) -> Result<()> {
    match image {
        Some(i) if i.is_empty() || i.len() > 255 || i.chars().any(char::is_whitespace) => Err(
            StoreError::invalid("image", format!("{i:?} is not an image reference")),
        ),
        _ => Ok(()),
    }
}

/// The options must belong to the service's protocol.
pub(crate) fn options(protocol: Protocol, options: &ServiceOptions) -> Result<()> {
    match (protocol, options) {
        (Protocol::Shadowsocks, ServiceOptions::Shadowsocks { method }) => {
            if method.is_empty() || method.chars().any(|c| c.is_whitespace()) {
                return Err(StoreError::invalid(
                    "method",
                    format!("{method:?} is not a cipher"),
                ));
            }
            Ok(())
        }
        (Protocol::Vless, ServiceOptions::Vless(v)) => vless(v),
        (Protocol::Proxy, ServiceOptions::Proxy(_)) => Ok(()),
        (Protocol::Wireguard, ServiceOptions::Wireguard(w)) => wireguard(w),
        (protocol, _) => Err(StoreError::invalid(
            "options",
            format!("the options are not those of a {protocol} service"),
        )),
    }
}

/// The MTU range a WireGuard interface accepts here: IPv6's minimum up to jumbo frames.
pub(crate) const WIREGUARD_MTU: std::ops::RangeInclusive<u16> = 1280..=9000;

/// A WireGuard service's settings: a subnet that holds a server and a peer, an IPv6 subnet that
/// is IPv6, DNS servers that are IP addresses, and an MTU in [`WIREGUARD_MTU`].
fn wireguard(w: &vpn_shared::model::WireguardOptions) -> Result<()> {
    use vpn_shared::wireguard::Subnet;
    let subnet =
        Subnet::parse(&w.subnet).map_err(|e| StoreError::invalid("subnet", e.to_string()))?;
    if !subnet.is_ipv4() {
        return Err(StoreError::invalid(
            "subnet",
            format!(
                "{} is not an IPv4 subnet (use --ipv6-subnet for IPv6)",
                w.subnet
            ),
        ));
    }
    if let Some(v6) = &w.ipv6_subnet {
        let parsed =
            Subnet::parse(v6).map_err(|e| StoreError::invalid("ipv6-subnet", e.to_string()))?;
        if parsed.is_ipv4() {
            return Err(StoreError::invalid(
                "ipv6-subnet",
                format!("{v6} is not an IPv6 subnet"),
            ));
        }
    }
    for d in &w.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(StoreError::invalid(
                "dns",
                format!("{d:?} is not an IP address"),
            ));
        }
    }
    if let Some(mtu) = w.mtu
        && !WIREGUARD_MTU.contains(&mtu)
    {
        return Err(StoreError::invalid(
            "mtu",
            format!(
                "{mtu} is outside {}..={}",
                WIREGUARD_MTU.start(),
                WIREGUARD_MTU.end()
            ),
        ));
    }
    Ok(())
}

/// Most short ids a service may have (each one is another accepted value, so a handful will do).
pub(crate) const MAX_SHORT_IDS: usize = 16;

/// A VLESS + Reality service's settings: a DNS name to present, a `host:port` destination, keys
/// of 32 bytes in base64url, and 1–16 short ids of 8–16 hex characters (an even count, as Xray
/// parses them as bytes).
fn vless(v: &VlessOptions) -> Result<()> {
    dns_name(&v.sni)
        .map_err(|reason| StoreError::invalid("sni", format!("{:?} {reason}", v.sni)))?;
    dest(&v.dest)?;
    if v.engine == VlessEngine::Shoes && !dest_has_host_name(&v.dest) {
        return Err(StoreError::invalid(
            "dest",
            format!(
                "{:?}: the shoes engine needs a host name, not an IP address",
                v.dest
            ),
        ));
    }
    for (field, key) in [
        ("private key", &v.private_key),
        ("public key", &v.public_key),
    ] {
        let ok = URL_SAFE_NO_PAD.decode(key).is_ok_and(|b| b.len() == 32);
        if !ok {
            return Err(StoreError::invalid(
                "reality key",
                format!("the {field} is not 32 bytes of base64url"),
            ));
        }
    }
    if v.short_ids.is_empty() || v.short_ids.len() > MAX_SHORT_IDS {
        return Err(StoreError::invalid(
            "short-ids",
            format!(
                "between 1 and {MAX_SHORT_IDS} short ids, not {}",
                v.short_ids.len()
            ),
        ));
    }
    for id in &v.short_ids {
        let hex = id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if !hex || !(8..=16).contains(&id.len()) || id.len() % 2 != 0 {
            return Err(StoreError::invalid(
                "short-ids",
                format!("{id:?} is not 8-16 lower-case hex characters of an even count"),
            ));
        }
    }
    Ok(())
}

/// Whether a valid `dest` names its host by name (shoes signs the name into its certificate).
fn dest_has_host_name(dest: &str) -> bool {
    dest.rsplit_once(':')
        .is_some_and(|(host, _)| !host.starts_with('[') && host.parse::<Ipv4Addr>().is_err())
}

/// Reality's destination: `host:port`, the host a DNS name or an IP address (IPv6 in brackets).
pub(crate) fn dest(value: &str) -> Result<()> {
    let bad = |reason: &str| StoreError::invalid("dest", format!("{value:?} {reason}"));
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad(
            "needs a port (host:port, for example www.example.com:443)",
        ));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("has no valid port (1-65535)")),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad("has an invalid IPv6 address"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    dns_name(host).map_err(|reason| bad(&format!("has a host that {reason}")))
}

/// A DNS name as a TLS client sends it in SNI: labels of letters, digits and `-`, 1-63
/// characters each, at most 253 in all, not an IP address.
pub(crate) fn dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("is an IP address, not a host name".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!("has an invalid label {label:?}"));
        }
    }
    Ok(())
}

/// `Some` must name at least one protocol (`None` is the way to say "all"); duplicates go.
pub(crate) fn protocols(protocols: Option<Vec<Protocol>>) -> Result<Option<Vec<Protocol>>> {
    let Some(mut list) = protocols else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(StoreError::invalid(
            "protocols",
            "the list is empty; leave it out to allow every protocol",
        ));
    }
    list.sort();
    list.dedup();
    Ok(Some(list))
}

/// Rates are stored in signed 64-bit columns; anything above is a typo anyway (9 Ebit/s).
const MAX_RATE_BPS: u64 = i64::MAX as u64;

/// Each direction of a limit, when set, is at least 1 bit/s.
pub(crate) fn bandwidth(b: &Bandwidth) -> Result<()> {
    for (direction, rate) in [("down", b.down_bps), ("up", b.up_bps)] {
        match rate {
            Some(0) => {
                return Err(StoreError::invalid(
                    "bandwidth",
                    format!(
                        "the {direction} rate must be more than 0 bit/s; leave it out for no limit"
                    ),
                ));
            }
            Some(r) if r > MAX_RATE_BPS => {
                return Err(StoreError::invalid(
                    "bandwidth",
                    format!("the {direction} rate {r} bit/s is out of range"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Longest data limit and hold: past these, the numbers are typos (and a limit must fit the
/// store's signed integers with room to add usage).
pub(crate) const MAX_DATA_LIMIT: u64 = 1 << 60;
pub(crate) const MAX_HOLD_SECS: i64 = 100 * 366 * 86_400;

/// A quota's settings: sizes the store can hold, a hold of positive length, not both an expiry
/// and a hold (the hold's clock sets the expiry).
pub(crate) fn quota(q: &super::rows::QuotaSettings) -> Result<()> {
    if let Some(limit) = q.data_limit
        && limit > MAX_DATA_LIMIT
    {
        return Err(StoreError::Invalid {
            field: "data-limit",
            reason: format!("{limit} bytes is more than 1 EiB"),
        });
    }
    if let Some(hold) = q.on_hold {
        if hold.duration <= 0 || hold.duration > MAX_HOLD_SECS {
            return Err(StoreError::Invalid {
                field: "on-hold",
                reason: format!(
                    "{} s is not a duration between 1 s and 100 years",
                    hold.duration
                ),
            });
        }
        if q.expires_at.is_some() {
            return Err(StoreError::Invalid {
                field: "on-hold",
                reason: "an on-hold user gets its expiry at first use; give --expires or --on-hold, not both".into(),
            });
        }
    }
    Ok(())
}

/// A new-connection rate, when set, admits at least one connection per second.
pub(crate) fn new_conn_rate(rate: Option<u32>) -> Result<()> {
    if rate == Some(0) {
        return Err(StoreError::invalid(
            "new_conn_rate",
            "must be at least 1 connection per second; leave it out for no limit",
        ));
    }
    Ok(())
}

/// Normalizes a block-list target to CIDR: `203.0.113.7` → `203.0.113.7/32`, `2001:DB8::1` →
/// `2001:db8::1/128`, an IPv4-mapped IPv6 network → its IPv4 network.
///
/// A network with host bits set (`10.1.2.3/8`) is refused rather than normalized: silently
/// widening a typo to a /8, or narrowing it to one address, would block something other than what
/// the operator meant. `/0` is refused too: it would cut every client off every service.
pub(crate) fn firewall_target(target: &str) -> Result<String> {
    let bad = |reason: String| StoreError::invalid("target", reason);
    let (addr, prefix) = match target.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (target, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad(format!("{target:?} is not an IP address or a CIDR network")))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                bad(format!(
                    "prefix length {p:?} of {target:?} is not 0 to {max}"
                ))
            })?,
    };
    let (ip, prefix, max) = match ip {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix - 96, 32),
            None => (ip, prefix, max),
        },
        _ => (ip, prefix, max),
    };
    if prefix == 0 {
        return Err(bad(format!("{target:?} would block every address")));
    }
    let network = network_of(ip, prefix);
    if network != ip {
        return Err(bad(format!(
            "{target:?} has host bits set: write {network}/{prefix} for the network or {ip}/{max} \
             for the address"
        )));
    }
    Ok(format!("{ip}/{prefix}"))
}

/// `ip` with every bit past `prefix` (1 ..= the address width) cleared.
fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - u32::from(prefix));
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - u32::from(prefix));
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A join token's SHA-256, as 64 lowercase hex digits.
pub(crate) fn token_hash(hash: &str) -> Result<()> {
    if hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "token",
            "expected a SHA-256 as 64 lowercase hex digits",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn names_follow_their_patterns() {
        host_name("edge-1").unwrap();
        host_name(&"a".repeat(63)).unwrap();
        assert!(reason(host_name(&"a".repeat(64))).contains("longer than 63"));
        assert!(reason(host_name("-edge")).starts_with("invalid name: server name"));
        assert!(reason(host_name("Edge")).contains("must start"));
        assert!(reason(host_name("")).contains("is empty"));
        service_name("ss-1").unwrap();
        assert!(reason(service_name(&"s".repeat(33))).contains("longer than 32"));
        user_name("Alice.B_c@d-e").unwrap();
        assert!(reason(user_name(".alice")).contains("must start"));
        assert!(reason(user_name("al ice")).contains("' '"));
    }

    #[test]
    fn port_ranges_fit_in_sixteen_bits() {
        port_range(8388, 1000, "port").unwrap();
        port_range(65535, 1, "port").unwrap();
        port_range(1, u16::MAX, "ports").unwrap();
        assert!(reason(port_range(0, 1, "port")).starts_with("invalid port:"));
        assert!(reason(port_range(1, 0, "port")).starts_with("invalid ports: must be at least 1"));
        assert_eq!(
            reason(port_range(65000, 1000, "port")),
            "invalid port: the range 65000-65999 (1000 ports) goes past 65535"
        );
        assert_eq!(
            reason(port_range(50000, 20000, "ports")),
            "invalid ports: the range 50000-69999 (20000 ports) goes past 65535"
        );
    }

    #[test]
    fn free_text_fields_are_checked() {
        email(Some("a@b.example")).unwrap();
        assert!(reason(email(Some("a b@c"))).starts_with("invalid email"));
        assert!(reason(email(Some("@c"))).starts_with("invalid email"));
        note(Some("line\nline")).unwrap();
        assert!(reason(note(Some("\u{7}"))).starts_with("invalid note"));
        assert!(reason(image(Some(""))).starts_with("invalid image"));
        let err = protocols(Some(vec![])).unwrap_err().to_string();
        assert!(err.starts_with("invalid protocols"));
        token_hash(&"ab".repeat(32)).unwrap();
        assert!(reason(token_hash("AB")).starts_with("invalid token"));
    }

    #[test]
    fn rates_are_positive() {
        let b = |down, up| Bandwidth {
            down_bps: down,
            up_bps: up,
        };
        bandwidth(&b(None, None)).unwrap();
        bandwidth(&b(Some(1), Some(20_000_000))).unwrap();
        let err = reason(bandwidth(&b(Some(8), Some(0))));
        assert!(err.starts_with("invalid bandwidth: the up rate"), "{err}");
        let err = reason(bandwidth(&b(Some(u64::MAX), None)));
        assert!(err.starts_with("invalid bandwidth: the down rate"), "{err}");
        new_conn_rate(None).unwrap();
        new_conn_rate(Some(1)).unwrap();
        assert!(reason(new_conn_rate(Some(0))).starts_with("invalid new_conn_rate"));
    }

    #[test]
    fn firewall_targets_are_normalized_to_cidr() {
        let ok = |t: &str| firewall_target(t).unwrap();
        assert_eq!(ok("203.0.113.7"), "203.0.113.7/32");
        assert_eq!(ok("203.0.113.0/24"), "203.0.113.0/24");
        assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(ok("2001:DB8:0:0::1"), "2001:db8::1/128");
        assert_eq!(ok("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(ok("::ffff:198.51.100.9"), "198.51.100.9/32");
        assert_eq!(ok("::ffff:198.51.100.0/120"), "198.51.100.0/24");
        assert_eq!(ok("1.2.3.4/32"), "1.2.3.4/32");
    }

    #[test]
    fn bad_firewall_targets_name_the_field() {
        let err = |t: &str| reason(firewall_target(t).map(drop));
        for bad in [
            "",
            "example.com",
            "1.2.3",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/+8",
            "1.2.3.4/-1",
            "2001:db8::/129",
            "fe80::1%eth0",
            " 1.2.3.4",
            "1.2.3.4/8/8",
            "01.2.3.4",
        ] {
            assert!(
                err(bad).starts_with("invalid target: "),
                "{bad:?}: {}",
                err(bad)
            );
        }
        assert_eq!(
            err("10.1.2.3/8"),
            "invalid target: \"10.1.2.3/8\" has host bits set: write 10.0.0.0/8 for the network \
             or 10.1.2.3/32 for the address"
        );
        assert!(err("2001:db8::1/64").contains("2001:db8::/64"));
        assert!(err("0.0.0.0/0").contains("would block every address"));
        assert!(err("::/0").contains("would block every address"));
    }
}
