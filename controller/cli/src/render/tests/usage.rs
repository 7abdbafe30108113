//! `users usage` in every format: alice browses through VLESS on fra-1 (Xray counts each
//! direction) and Shadowsocks on ams-2 (ssmanager counts only a port total, so those bytes are
//! undirected); bob sent a little; carol has not connected since the window opened.

use vpn_shared::proto::admin::{UsageBy, UsageInfo, UsageRow};

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn row(user: &str, key: Option<&str>, up: u64, down: u64, undirected: u64) -> UsageRow {
    UsageRow {
        user: user.into(),
        key: key.map(Into::into),
        up,
        down,
        undirected,
        total: up + down + undirected,
    }
}

fn usage(by: UsageBy, rows: Vec<UsageRow>) -> AdminResponse {
    AdminResponse::Usage(UsageInfo {
        since: Some(NOW - 86400),
        by,
        rows,
    })
}

fn by_server() -> AdminResponse {
    usage(
        UsageBy::Server,
        vec![
            row("alice", Some("fra-1"), 300 * MIB, 12 * GIB + 512 * MIB, 0),
            row("alice", Some("ams-2"), 0, 0, 3 * GIB),
            row("bob", Some("fra-1"), 4096, 1000, 0),
        ],
    )
}

#[test]
fn by_server_shows_iec_sizes_a_total_row_and_the_window() {
    let want = "\
USER     SERVER         UP      DOWN  UNDIRECTED     TOTAL
alice    fra-1   300.0 MiB  12.5 GiB         0 B  12.8 GiB
alice    ams-2         0 B       0 B     3.0 GiB   3.0 GiB
bob      fra-1     4.0 KiB    1000 B         0 B   5.0 KiB
(total)          300.0 MiB  12.5 GiB     3.0 GiB  15.8 GiB
2 users, since 2025-01-30T12:00:00Z
";
    assert_eq!(show(&by_server(), &opts(Format::Table)), want);
}

#[test]
fn a_person_at_a_terminal_is_told_what_undirected_means() {
    let hints = Opts {
        hints: true,
        ..opts(Format::Table)
    };
    let out = show(&by_server(), &hints);
    assert!(
        out.ends_with(
            "UNDIRECTED: bytes counted without a direction (Shadowsocks reports one total per \
             port)\n"
        ),
        "{out}"
    );
    // Without undirected bytes there is nothing to explain.
    let directed = usage(UsageBy::User, vec![row("bob", None, 1, 2, 0)]);
    assert!(!show(&directed, &hints).contains("UNDIRECTED:"));
}

#[test]
fn by_user_has_no_key_column_and_all_time_says_so() {
    let resp = AdminResponse::Usage(UsageInfo {
        since: None,
        by: UsageBy::User,
        rows: vec![row("alice", None, 5 * GIB, 50 * GIB, 0)],
    });
    let want = "\
USER          UP      DOWN  UNDIRECTED     TOTAL
alice    5.0 GiB  50.0 GiB         0 B  55.0 GiB
(total)  5.0 GiB  50.0 GiB         0 B  55.0 GiB
1 user, in all recorded traffic
";
    assert_eq!(show(&resp, &opts(Format::Table)), want);
}

#[test]
fn by_day_and_by_service_name_their_column() {
    let day = usage(
        UsageBy::Day,
        vec![row("bob", Some("2025-01-30"), 0, 0, 1536)],
    );
    let want = "\
USER     DAY          UP  DOWN  UNDIRECTED    TOTAL
bob      2025-01-30  0 B   0 B     1.5 KiB  1.5 KiB
(total)              0 B   0 B     1.5 KiB  1.5 KiB
1 user, since 2025-01-30T12:00:00Z
";
    assert_eq!(show(&day, &opts(Format::Table)), want);
    let service = usage(UsageBy::Service, vec![row("bob", Some("ss"), 1, 0, 0)]);
    let out = show(&service, &opts(Format::Table));
    assert!(out.starts_with("USER     SERVICE   UP  DOWN"), "{out}");
}

#[test]
fn no_rows_is_no_traffic_recorded() {
    assert_eq!(
        show(&usage(UsageBy::Server, vec![]), &opts(Format::Table)),
        "no traffic recorded since 2025-01-30T12:00:00Z\n"
    );
    let all_time = AdminResponse::Usage(UsageInfo {
        since: None,
        by: UsageBy::User,
        rows: vec![],
    });
    assert_eq!(
        show(&all_time, &opts(Format::Table)),
        "no traffic recorded\n"
    );
    assert_eq!(
        show(&all_time, &opts(Format::Plain)),
        "",
        "scripts get no lines"
    );
}

#[test]
fn a_total_past_u64_is_shown_as_the_largest_size_not_a_wrap() {
    let huge = usage(
        UsageBy::User,
        vec![
            row("alice", None, u64::MAX / 2, 0, 0),
            row("bob", None, u64::MAX / 2 + 2, 0, 0),
        ],
    );
    let out = show(&huge, &opts(Format::Table));
    assert!(out.contains("(total)  15.9 EiB"), "{out}");
}

#[test]
fn plain_is_raw_byte_counts_for_scripts() {
    let want = "\
alice\tfra-1\t314572800\t13421772800\t0\t13736345600
alice\tams-2\t0\t0\t3221225472\t3221225472
bob\tfra-1\t4096\t1000\t0\t5096
";
    assert_eq!(show(&by_server(), &opts(Format::Plain)), want);
    let by_user = usage(UsageBy::User, vec![row("bob", None, 1, 2, 3)]);
    assert_eq!(show(&by_user, &opts(Format::Plain)), "bob\t-\t1\t2\t3\t6\n");
}

#[test]
fn json_and_yaml_are_the_usage_info() {
    let json = show(&by_server(), &opts(Format::Json));
    let v: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}\n{json}"),
    };
    assert_eq!(v["since"], NOW - 86400);
    assert_eq!(v["by"], "server");
    assert_eq!(
        v["rows"][1],
        serde_json::json!({"user": "alice", "key": "ams-2", "up": 0, "down": 0,
                           "undirected": 3_221_225_472_u64, "total": 3_221_225_472_u64})
    );
    let yaml = show(
        &usage(UsageBy::Day, vec![row("bob", Some("2025-01-30"), 1, 2, 0)]),
        &opts(Format::Yaml),
    );
    let want = "\
since: 1738238400
by: day
rows:
- user: bob
  key: 2025-01-30
  up: 1
  down: 2
  undirected: 0
  total: 3
";
    assert_eq!(yaml, want);
}
