//! The script formats (`plain`, `json`, `yaml`), refusals and time helpers.

use super::*;

#[test]
fn servers_plain() {
    let want = "\
fra-1\tonline\t203.0.113.7\t0.1.0\t1738324797\t7\t7\tss\t12
ams-2\toffline\t-\t0.1.0\t1738317600\t6\t9\tss,ss-alt\t3
nyc-3\tnot-joined\t-\t-\t-\t-\t1\t-\t0
";
    assert_eq!(show(&servers(), &opts(Format::Plain)), want);
}

#[test]
fn json_and_yaml_are_the_payload_without_the_enum_wrapper() {
    let resp = AdminResponse::User(alice());
    let want = r#"{
  "name": "alice",
  "id": "8d0c5c1e",
  "email": "alice@example.com",
  "note": null,
  "status": "active",
  "all_servers": true,
  "servers": [],
  "protocols": null,
  "bandwidth": {
    "down_bps": 20000000,
    "up_bps": 1500000
  },
  "created_at": 1738238400,
  "updated_at": 1738324800
}
"#;
    assert_eq!(show(&resp, &opts(Format::Json)), want);
    let want = "\
name: alice
id: 8d0c5c1e
email: alice@example.com
note: null
status: active
all_servers: true
servers: []
protocols: null
bandwidth:
  down_bps: 20000000
  up_bps: 1500000
created_at: 1738238400
updated_at: 1738324800
";
    assert_eq!(show(&resp, &opts(Format::Yaml)), want);
}

#[test]
fn firewall_json_lists_fleet_wide_rules_with_a_null_server() {
    let out = show(&firewall(), &opts(Format::Json));
    let rules: serde_json::Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}\n{out}"),
    };
    assert_eq!(
        rules[0],
        serde_json::json!({"target": "10.0.0.0/8", "server": null, "created_at": 1738324740})
    );
    assert_eq!(rules[3]["server"], "ams-2");
}

#[test]
fn links_plain_is_one_url_per_line_and_nothing_else() {
    let want = "\
ss://Y2hhY2hhMjA@203.0.113.7:8388#fra-1
ss://Y2hhY2hhMjA@198.51.100.2:8388#ams-2
";
    assert_eq!(show(&links(), &opts(Format::Plain)), want);
    let qr_plain = Opts {
        qr: true,
        ..opts(Format::Plain)
    };
    assert_eq!(show(&links(), &qr_plain), want, "--qr does not touch plain");
}

#[test]
fn refusals_become_errors_with_their_exit_code_in_every_format() {
    let cases = [
        (ErrorKind::BadData, 65),
        (ErrorKind::Forbidden, 77),
        (ErrorKind::Internal, 70),
    ];
    for (kind, code) in cases {
        let resp = AdminResponse::Error {
            kind,
            message: "user alice not found".into(),
        };
        for format in [Format::Table, Format::Json, Format::Yaml, Format::Plain] {
            let Err(err) = render(&resp, &opts(format)) else {
                panic!("an Error answer must not render");
            };
            assert_eq!(err.exit_code(), code);
            assert_eq!(err.to_string(), "user alice not found");
        }
    }
}

#[test]
fn relative_times() {
    assert_eq!(ago(NOW, None), "never");
    assert_eq!(ago(NOW, Some(NOW + 5)), "just now");
    assert_eq!(ago(NOW, Some(NOW)), "0s ago");
    assert_eq!(ago(NOW, Some(NOW - 59)), "59s ago");
    assert_eq!(ago(NOW, Some(NOW - 60)), "1m ago");
    assert_eq!(ago(NOW, Some(NOW - 3 * 3600 - 5)), "3h ago");
    assert_eq!(ago(NOW, Some(NOW - 2 * 86400)), "2d ago");
}
