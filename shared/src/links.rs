//! Client links that users paste into their apps.
//!
//! Shadowsocks uses SIP002: `ss://BASE64URL(method:password)@host:port#tag`, the form Outline
//! and the shadowsocks clients accept for AEAD ciphers.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Renders a SIP002 link. IPv6 hosts are bracketed; the tag is percent-encoded.
pub fn shadowsocks(method: &str, password: &str, host: &str, port: u16, tag: &str) -> String {
    let userinfo = URL_SAFE_NO_PAD.encode(format!("{method}:{password}"));
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("ss://{userinfo}@{host}:{port}#{}", percent_encode(tag))
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
}
