//! Checks of form fields, with the rules and the messages the CLI and the controller use, so
//! a value the form accepts is one `vpn users add` would accept. Sizes and rates are parsed by
//! `vpn_shared` itself, and so is a WHEN (`vpn_shared::moment`, the CLI's own parser); the
//! user-name and email rules repeat the controller's (`controller/daemon/src/store/validate.rs`),
//! which lives outside `vpn_shared` today — the controller stays the judge and its error comes
//! back into the form.

use vpn_shared::model::Protocol;
use vpn_shared::proto::admin::{Reset, Servers, When};

/// `[A-Za-z0-9][A-Za-z0-9._@-]{0,63}`, as the controller checks it.
pub fn user_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let mut chars = name.chars();
    let Some(c) = chars.next() else {
        return Err("is empty".into());
    };
    if !c.is_ascii_alphanumeric() {
        return Err(format!("must start with a letter or digit, not {c:?}"));
    }
    if let Some(bad) =
        chars.find(|&c| !c.is_ascii_alphanumeric() && !matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(format!("contains {bad:?}"));
    }
    if name.chars().count() > 64 {
        return Err("is longer than 64 characters".into());
    }
    Ok(name.to_owned())
}

/// Empty: none; else one `@` with text on both sides, no spaces, at most 254 characters.
pub fn email(email: &str) -> Result<Option<String>, String> {
    let email = email.trim();
    if email.is_empty() {
        return Ok(None);
    }
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains('@'));
    if ok {
        Ok(Some(email.to_owned()))
    } else {
        Err(format!("{email:?} is not an email address"))
    }
}

/// `all`, or server names separated by commas, each one the fleet knows.
pub fn servers(text: &str, known: impl Fn(&str) -> bool) -> Result<Servers, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(Servers::All);
    }
    let names: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err("write all, or server names separated by commas".into());
    }
    if let Some(unknown) = names.iter().find(|n| !known(n)) {
        return Err(format!("server {unknown} not found"));
    }
    Ok(Servers::Named(names))
}

/// `all` (`None`), or protocol names separated by commas.
pub fn protocols(text: &str) -> Result<Option<Vec<Protocol>>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    let mut out = Vec::new();
    for p in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let proto = Protocol::parse(p).ok_or_else(|| format!("unknown protocol `{p}`"))?;
        if !out.contains(&proto) {
            out.push(proto);
        }
    }
    Ok(Some(out))
}

/// Empty: unlimited; else a size as `--data-limit` takes it.
pub fn data_limit(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.is_empty() || text == "∞" {
        return Ok(None);
    }
    vpn_shared::size::parse(text)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Empty: `none`.
pub fn reset(text: &str) -> Result<Reset, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Reset::Never);
    }
    Reset::parse(text).ok_or_else(|| format!("`{text}` is not one of none, day, week, month, year"))
}

/// Empty: unlimited; else a rate as `--bandwidth` takes it.
pub fn rate(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.is_empty() || text == "∞" {
        return Ok(None);
    }
    vpn_shared::rate::parse(text).map(Some)
}

/// Empty: never; a duration counts from the controller's now (`30d`), a date is UTC.
pub fn expires(text: &str) -> Result<Option<When>, String> {
    let s = text.trim();
    if s.is_empty() || s == "never" {
        return Ok(None);
    }
    vpn_shared::moment::parse(s).map(|m| Some(m.ahead()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_the_cli_rules() {
        assert_eq!(user_name("alice"), Ok("alice".into()));
        assert_eq!(user_name(""), Err("is empty".into()));
        assert_eq!(user_name("al ice"), Err("contains ' '".into()));
        assert_eq!(
            user_name("-x"),
            Err("must start with a letter or digit, not '-'".into())
        );
        assert_eq!(email(""), Ok(None));
        assert!(email("a@").is_err());
        assert_eq!(data_limit("50GiB"), Ok(Some(50 << 30)));
        assert!(data_limit("50G").unwrap_err().contains("ambiguous"));
        assert_eq!(rate("10mbit"), Ok(Some(10_000_000)));
        assert!(rate("fast").is_err());
        assert_eq!(expires("30d"), Ok(Some(When::In(30 * 86_400))));
        assert_eq!(expires("2027-01-31"), Ok(Some(When::At(1_801_353_600))));
        assert!(
            expires("soon")
                .unwrap_err()
                .starts_with("`soon` is neither a duration")
        );
        assert_eq!(reset("month"), Ok(Reset::Month));
        assert!(reset("daily").is_err());
        assert_eq!(
            protocols("ss, vless"),
            Ok(Some(vec![Protocol::Shadowsocks, Protocol::Vless]))
        );
        assert_eq!(servers("all", |_| false), Ok(Servers::All));
        assert_eq!(
            servers("fra-1,x", |n| n == "fra-1"),
            Err("server x not found".into())
        );
    }
}
