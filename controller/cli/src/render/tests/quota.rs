//! Users with their quotas in every format: alice is active within a monthly 50 GiB, bob is
//! limited (his 1 MiB for life is used up), carol expired yesterday at midnight, dave is on
//! hold for 30 days from first use (or from a week from now), erin has no quota at all.

use vpn_shared::proto::admin::{OnHoldInfo, Reset, UserDetail, UserQuota};

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const DAY: i64 = 86400;
/// 2025-01-01T00:00:00Z and 2025-02-01T00:00:00Z: alice's period.
const JAN_1: i64 = 1_735_689_600;
const FEB_1: i64 = 1_738_368_000;
/// 2025-01-31T00:00:00Z.
const MIDNIGHT: i64 = NOW - DAY / 2;

fn no_quota() -> UserQuota {
    UserQuota {
        data_limit: None,
        reset: Reset::Never,
        used: 0,
        period_start: None,
        next_reset: None,
        expires_at: None,
        on_hold: None,
        first_use: None,
        reason: None,
    }
}

fn named(name: &str, status: &str) -> UserInfo {
    UserInfo {
        name: name.into(),
        id: format!("id-{name}"),
        email: None,
        bandwidth: Bandwidth::default(),
        status: status.into(),
        ..alice()
    }
}

fn active() -> UserDetail {
    UserDetail {
        user: alice(),
        quota: UserQuota {
            data_limit: Some(50 * GIB),
            reset: Reset::Month,
            used: 12 * GIB + 512 * MIB,
            period_start: Some(JAN_1),
            next_reset: Some(FEB_1),
            first_use: Some(NOW - 3 * DAY),
            ..no_quota()
        },
    }
}

fn limited() -> UserDetail {
    UserDetail {
        user: named("bob", "limited"),
        quota: UserQuota {
            data_limit: Some(MIB),
            used: MIB + 20,
            first_use: Some(NOW - 2 * 3600),
            reason: Some("limited: 1.0 MiB of 1 MiB used".into()),
            ..no_quota()
        },
    }
}

fn expired() -> UserDetail {
    UserDetail {
        user: named("carol", "expired"),
        quota: UserQuota {
            used: 5 * GIB,
            expires_at: Some(MIDNIGHT - DAY),
            first_use: Some(NOW - 20 * DAY),
            reason: Some("expired 2025-01-30 00:00 UTC".into()),
            ..no_quota()
        },
    }
}

fn on_hold() -> UserDetail {
    UserDetail {
        user: named("dave", "on_hold"),
        quota: UserQuota {
            data_limit: Some(100 * GIB),
            reset: Reset::Week,
            period_start: Some(NOW - 4 * DAY - DAY / 2),
            next_reset: Some(NOW + 3 * DAY - DAY / 2),
            on_hold: Some(OnHoldInfo {
                duration: 30 * DAY,
                timeout_at: Some(NOW + 7 * DAY),
            }),
            reason: Some("on_hold: starts at first use, 30d".into()),
            ..no_quota()
        },
    }
}

fn unlimited() -> UserDetail {
    UserDetail {
        user: named("erin", "active"),
        quota: UserQuota {
            used: 512,
            ..no_quota()
        },
    }
}

fn list() -> AdminResponse {
    AdminResponse::UsersDetail(vec![active(), limited(), expired(), on_hold(), unlimited()])
}

fn dump(resp: &AdminResponse, format: Format) -> String {
    show(resp, &opts(format))
}

#[test]
fn users_list_table_adds_used_reset_expires_and_the_status_with_its_reason() {
    let want = "\
NAME   USED               RESET  EXPIRES           SERVERS  PROTOCOLS  DOWN       UP          CREATED     STATUS
alice  12.5 GiB / 50 GiB  month  -                 all      all        20 Mbit/s  1.5 Mbit/s  2025-01-30  active
bob    1.0 MiB / 1 MiB    -      -                 all      all        -          -           2025-01-30  limited: 1.0 MiB of 1 MiB used
carol  5.0 GiB            -      2025-01-30 00:00  all      all        -          -           2025-01-30  expired 2025-01-30 00:00 UTC
dave   0 B / 100 GiB      week   on hold 30d       all      all        -          -           2025-01-30  on_hold: starts at first use, 30d
erin   512 B              -      -                 all      all        -          -           2025-01-30  active
";
    assert_eq!(dump(&list(), Format::Table), want);
    assert_eq!(
        dump(&AdminResponse::UsersDetail(vec![]), Format::Table),
        "no users\n"
    );
}

#[test]
fn a_reason_without_its_status_gets_it_and_an_empty_one_is_none() {
    let mut d = limited();
    d.quota.reason = Some("1.0 MiB of 1 MiB used".into());
    let out = dump(&AdminResponse::UsersDetail(vec![d.clone()]), Format::Table);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("  limited: 1.0 MiB of 1 MiB used")),
        "{out}"
    );
    d.quota.reason = Some(String::new());
    let out = dump(&AdminResponse::UsersDetail(vec![d]), Format::Table);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with("  limited")),
        "{out}"
    );
}

#[test]
fn users_show_of_an_active_user_has_the_period_and_first_use() {
    let want = "\
Name:            alice
ID:              8d0c5c1e
Status:          active
Email:           alice@example.com
Note:            -
Servers:         all
Protocols:       all
Download limit:  20 Mbit/s
Upload limit:    1.5 Mbit/s
Data used:       12.5 GiB / 50 GiB
Reset:           month
Period start:    2025-01-01T00:00:00Z
Next reset:      2025-02-01T00:00:00Z (in 12h)
Expires:         never
On hold:         -
First use:       2025-01-28T12:00:00Z (3d ago)
Created:         2025-01-30T12:00:00Z
Updated:         2025-01-31T12:00:00Z
";
    assert_eq!(
        dump(&AdminResponse::UserDetail(active()), Format::Table),
        want
    );
}

/// The lines of `users show` from `Status` to `First use`, minus the ones every fixture shares.
fn quota_lines(d: UserDetail) -> String {
    let out = dump(&AdminResponse::UserDetail(d), Format::Table);
    let shared = [
        "Name:",
        "ID:",
        "Email:",
        "Note:",
        "Servers:",
        "Protocols:",
        "Download",
        "Upload",
        "Created:",
        "Updated:",
    ];
    out.lines()
        .filter(|l| !shared.iter().any(|s| l.starts_with(s)))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn users_show_of_a_limited_user_says_the_limit_is_for_life() {
    let want = "\
Status:          limited: 1.0 MiB of 1 MiB used
Data used:       1.0 MiB / 1 MiB
Reset:           none (the limit is for the user's whole life)
Period start:    -
Next reset:      -
Expires:         never
On hold:         -
First use:       2025-01-31T10:00:00Z (2h ago)
";
    assert_eq!(quota_lines(limited()), want);
}

#[test]
fn users_show_of_an_expired_user_says_since_when() {
    let want = "\
Status:          expired 2025-01-30 00:00 UTC
Data used:       5.0 GiB (no data limit)
Reset:           -
Period start:    -
Next reset:      -
Expires:         2025-01-30T00:00:00Z (expired 1d ago)
On hold:         -
First use:       2025-01-11T12:00:00Z (20d ago)
";
    assert_eq!(quota_lines(expired()), want);
}

#[test]
fn users_show_of_a_user_on_hold_has_the_duration_and_the_timeout() {
    let want = "\
Status:          on_hold: starts at first use, 30d
Data used:       0 B / 100 GiB
Reset:           week
Period start:    2025-01-27T00:00:00Z
Next reset:      2025-02-03T00:00:00Z (in 2d)
Expires:         30d after first use
On hold:         until first use or 2025-02-07T12:00:00Z (in 7d), then 30d
First use:       never
";
    assert_eq!(quota_lines(on_hold()), want);
    let mut no_timeout = on_hold();
    no_timeout.quota.on_hold = Some(OnHoldInfo {
        duration: 5400,
        timeout_at: None,
    });
    let out = quota_lines(no_timeout);
    assert!(
        out.contains("On hold:         until first use, then 1h30m\n"),
        "{out}"
    );
    // Once used, the hold's clock runs: the expiry says when, the hold is over.
    let mut started = on_hold();
    started.quota.first_use = Some(NOW - DAY);
    started.quota.expires_at = Some(NOW + 29 * DAY);
    let out = quota_lines(started);
    assert!(
        out.contains("Expires:         2025-03-01T12:00:00Z (in 29d)\n"),
        "{out}"
    );
    assert!(out.contains("On hold:         -\n"), "{out}");
    let list = dump(
        &AdminResponse::UsersDetail(vec![on_hold(), {
            let mut s = on_hold();
            s.quota.expires_at = Some(NOW + 29 * DAY);
            s
        }]),
        Format::Table,
    );
    assert!(list.contains("  on hold 30d  "), "{list}");
    assert!(list.contains("  2025-03-01 12:00  "), "{list}");
}

#[test]
fn plain_appends_the_quota_to_todays_user_record() {
    let want = "\
alice\tactive\tall\tall\t1738238400\t8d0c5c1e\talice@example.com\t20000000\t1500000\t13421772800\t53687091200\tmonth\t1735689600\t1738368000\t-\t-\t-\t1738065600\t-
bob\tlimited\tall\tall\t1738238400\tid-bob\t-\t-\t-\t1048596\t1048576\tnone\t-\t-\t-\t-\t-\t1738317600\tlimited: 1.0 MiB of 1 MiB used
carol\texpired\tall\tall\t1738238400\tid-carol\t-\t-\t-\t5368709120\t-\tnone\t-\t-\t1738195200\t-\t-\t1736596800\texpired 2025-01-30 00:00 UTC
dave\ton_hold\tall\tall\t1738238400\tid-dave\t-\t-\t-\t0\t107374182400\tweek\t1737936000\t1738540800\t-\t2592000\t1738929600\t-\ton_hold: starts at first use, 30d
erin\tactive\tall\tall\t1738238400\tid-erin\t-\t-\t-\t512\t-\tnone\t-\t-\t-\t-\t-\t-\t-
";
    assert_eq!(dump(&list(), Format::Plain), want);
    // A script reading today's nine columns reads the same nine.
    let AdminResponse::UsersDetail(details) = list() else {
        panic!("list() is a UsersDetail");
    };
    let today = dump(
        &AdminResponse::Users(details.iter().map(|d| d.user.clone()).collect()),
        Format::Plain,
    );
    for (old, new) in today.lines().zip(want.lines()) {
        assert!(new.starts_with(&format!("{old}\t")), "{old} / {new}");
    }
    for d in [active(), limited(), expired(), on_hold()] {
        let line = dump(&AdminResponse::UserDetail(d.clone()), Format::Plain);
        let name = format!("{}\t", d.user.name);
        let from_list = want.lines().find(|l| l.starts_with(&name));
        assert_eq!(Some(line.trim_end()), from_list, "show is the list's line");
    }
}

#[test]
fn json_is_the_user_detail_as_it_is() {
    let want = r#"{
  "user": {
    "name": "dave",
    "id": "id-dave",
    "email": null,
    "note": null,
    "status": "on_hold",
    "all_servers": true,
    "servers": [],
    "protocols": null,
    "bandwidth": {
      "down_bps": null,
      "up_bps": null
    },
    "created_at": 1738238400,
    "updated_at": 1738324800
  },
  "quota": {
    "data_limit": 107374182400,
    "reset": "Week",
    "used": 0,
    "period_start": 1737936000,
    "next_reset": 1738540800,
    "expires_at": null,
    "on_hold": {
      "duration": 2592000,
      "timeout_at": 1738929600
    },
    "first_use": null,
    "reason": "on_hold: starts at first use, 30d"
  }
}
"#;
    assert_eq!(
        dump(&AdminResponse::UserDetail(on_hold()), Format::Json),
        want
    );
    let json = dump(&list(), Format::Json);
    let v: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}\n{json}"),
    };
    assert_eq!(v[0]["quota"]["reset"], "Month");
    assert_eq!(v[0]["quota"]["used"], 12 * GIB + 512 * MIB);
    assert_eq!(v[1]["quota"]["reason"], "limited: 1.0 MiB of 1 MiB used");
    assert_eq!(v[2]["quota"]["expires_at"], MIDNIGHT - DAY);
    assert_eq!(v[3]["quota"]["on_hold"]["duration"], 30 * DAY);
    assert_eq!(v[4]["quota"]["reason"], serde_json::Value::Null);
}

#[test]
fn yaml_is_the_user_detail_as_it_is() {
    let want = "\
user:
  name: bob
  id: id-bob
  email: null
  note: null
  status: limited
  all_servers: true
  servers: []
  protocols: null
  bandwidth:
    down_bps: null
    up_bps: null
  created_at: 1738238400
  updated_at: 1738324800
quota:
  data_limit: 1048576
  reset: Never
  used: 1048596
  period_start: null
  next_reset: null
  expires_at: null
  on_hold: null
  first_use: 1738317600
  reason: 'limited: 1.0 MiB of 1 MiB used'
";
    assert_eq!(
        dump(&AdminResponse::UserDetail(limited()), Format::Yaml),
        want
    );
    let yaml = dump(&AdminResponse::UsersDetail(vec![expired()]), Format::Yaml);
    assert!(yaml.starts_with("- user:\n    name: carol\n"), "{yaml}");
    assert!(yaml.contains("\n    expires_at: 1738195200\n"), "{yaml}");
    assert!(
        yaml.contains("\n    reason: expired 2025-01-30 00:00 UTC\n"),
        "{yaml}"
    );
}

#[test]
fn limits_show_as_typed_when_exact_and_spans_as_on_hold_takes_them() {
    use crate::render::{limit, minute, span};
    assert_eq!(limit(MIB), "1 MiB");
    assert_eq!(limit(50 * GIB), "50 GiB");
    assert_eq!(limit(3 << 39), "1.5 TiB");
    assert_eq!(limit(MIB + 1), "1.0 MiB", "not exact: shown as measured");
    assert_eq!(limit(1_000_000_000), "953.7 MiB");
    assert_eq!(limit(0), "0 B");
    assert_eq!(limit(1000), "1000 B");
    assert_eq!(span(30 * DAY), "30d");
    assert_eq!(span(5400), "1h30m");
    assert_eq!(span(DAY + 45), "1d45s");
    assert_eq!(span(0), "0s");
    assert_eq!(minute(MIDNIGHT), "2025-01-31 00:00");
    assert_eq!(minute(-5), "-5", "before 1970: the raw number, no panic");
}
