//! Client links that users paste into their apps.
//!
//! Shadowsocks uses SIP002: `ss://BASE64URL(method:password)@host:port#tag`, the form Outline
//! and the shadowsocks clients accept for AEAD ciphers. VLESS + Reality uses the de-facto
//! `vless://UUID@host:port?…#tag` form of v2rayN, Xray clients and shoes (SPEC §2.4).
//! Proxies are plain URLs, `http://user:pass@host:port` and `socks5://user:pass@host:port`, with
//! the user name and password percent-encoded (RFC 3986 userinfo), as curl, browsers' proxy
//! settings and proxy-aware apps take them; they carry no `#tag` (curl refuses a fragment).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Renders a SIP002 link. IPv6 hosts are bracketed; the tag is percent-encoded.
pub fn shadowsocks(method: &str, password: &str, host: &str, port: u16, tag: &str) -> String {
    let userinfo = URL_SAFE_NO_PAD.encode(format!("{method}:{password}"));
    format!(
        "ss://{userinfo}@{}:{port}#{}",
        bracket(host),
        percent_encode(tag)
    )
}

/// What a `vless://` Reality link carries besides the user's id and the server address.
#[derive(Debug, Clone, Copy)]
pub struct Reality<'a> {
    pub sni: &'a str,
    /// The service's X25519 public key, base64url without padding.
    pub public_key: &'a str,
    pub short_id: &'a str,
}

/// Renders a VLESS + Reality link with XTLS Vision over TCP and a Chrome fingerprint.
pub fn vless(uuid: &str, host: &str, port: u16, reality: Reality<'_>, tag: &str) -> String {
    format!(
        "vless://{uuid}@{}:{port}?encryption=none&flow={}&security=reality&sni={}&fp=chrome\
         &pbk={}&sid={}&type=tcp#{}",
        bracket(host),
        crate::model::VLESS_FLOW,
        percent_encode(reality.sni),
        percent_encode(reality.public_key),
        percent_encode(reality.short_id),
        percent_encode(tag)
    )
}

/// The two URL schemes of a proxy link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    Http,
    Socks5,
}

impl ProxyScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
        }
    }
}

/// Renders an HTTP or SOCKS5 proxy URL; user name and password are percent-encoded, IPv6
/// hosts bracketed.
pub fn proxy(scheme: ProxyScheme, username: &str, password: &str, host: &str, port: u16) -> String {
    format!(
        "{}://{}:{}@{}:{port}",
        scheme.as_str(),
        percent_encode(username),
        percent_encode(password),
        bracket(host)
    )
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip002_links_encode_userinfo_and_bracket_ipv6() {
        let l = shadowsocks(
            "chacha20-ietf-poly1305",
            "pw",
            "203.0.113.5",
            8388,
            "alice @ h1",
        );
        assert_eq!(
            l,
            "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpwdw@203.0.113.5:8388#alice%20%40%20h1"
        );
        assert!(shadowsocks("m", "p", "2001:db8::1", 1, "t").contains("@[2001:db8::1]:1#"));
    }

    #[test]
    fn vless_links_carry_every_reality_parameter_in_the_usual_order() {
        let reality = Reality {
            sni: "www.example.com",
            public_key: "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw",
            short_id: "6ba85179e30d4fc2",
        };
        let l = vless(
            "b831381d-6324-4d53-ad4f-8cda48b30811",
            "203.0.113.5",
            443,
            reality,
            "alice @ h1",
        );
        assert_eq!(
            l,
            "vless://b831381d-6324-4d53-ad4f-8cda48b30811@203.0.113.5:443?encryption=none\
             &flow=xtls-rprx-vision&security=reality&sni=www.example.com&fp=chrome\
             &pbk=Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw&sid=6ba85179e30d4fc2&type=tcp\
             #alice%20%40%20h1"
        );
        assert!(vless("u", "2001:db8::1", 1, reality, "t").contains("@[2001:db8::1]:1?"));
    }

    #[test]
    fn proxy_links_percent_encode_user_and_password() {
        assert_eq!(
            proxy(
                ProxyScheme::Http,
                "alice@corp",
                "p/w:x",
                "203.0.113.5",
                3128
            ),
            "http://alice%40corp:p%2Fw%3Ax@203.0.113.5:3128"
        );
        assert_eq!(
            proxy(ProxyScheme::Socks5, "bob", "Zm9v-_", "2001:db8::1", 1080),
            "socks5://bob:Zm9v-_@[2001:db8::1]:1080"
        );
    }
}
