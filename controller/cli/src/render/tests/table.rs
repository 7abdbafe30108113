//! The `table` format, and what the same answers look like in the other formats.

use super::*;

#[test]
fn servers_table() {
    let want = "\
NAME   STATUS      ADDRESS      VERSION  LAST SEEN  GENERATION  SERVICES   USERS
fra-1  online      203.0.113.7  0.1.0    3s ago     7/7         ss         12
ams-2  offline     -            0.1.0    2h ago     6/9         ss,ss-alt  3
nyc-3  not joined  -            -        never      -/1         -          0
";
    assert_eq!(show(&servers(), &opts(Format::Table)), want);
}

#[test]
fn users_table_and_plain() {
    let want = "\
NAME   STATUS     SERVERS      PROTOCOLS    DOWN       UP          CREATED
alice  active     all          all          20 Mbit/s  1.5 Mbit/s  2025-01-30
bob    suspended  fra-1,ams-2  shadowsocks  -          -           2025-01-31
";
    assert_eq!(show(&users(), &opts(Format::Table)), want);
    let want = "\
alice\tactive\tall\tall\t1738238400\t8d0c5c1e\talice@example.com\t20000000\t1500000
bob\tsuspended\tfra-1,ams-2\tshadowsocks\t1738324800\t77aa\t-\t-\t-
";
    assert_eq!(show(&users(), &opts(Format::Plain)), want);
}

#[test]
fn user_show_table() {
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
Created:         2025-01-30T12:00:00Z
Updated:         2025-01-31T12:00:00Z
";
    assert_eq!(
        show(&AdminResponse::User(alice()), &opts(Format::Table)),
        want
    );
}

#[test]
fn services_table_and_plain_show_caps_and_connection_rates() {
    let want = "\
NAME    PROTOCOL     PORTS      SERVERS  DOWN      UP        CONN/S  IMAGE
ss      shadowsocks  8388-9387  all      1 Gbit/s  1 Gbit/s  20/s    default
ss-alt  shadowsocks  9000       fra-1    -         -         -       local/ss:1
";
    assert_eq!(show(&services(), &opts(Format::Table)), want);
    let want = "\
ss\tshadowsocks\t8388\t1000\tall\t-\t1000000000\t1000000000\t20
ss-alt\tshadowsocks\t9000\t1\tfra-1\tlocal/ss:1\t-\t-\t-
";
    assert_eq!(show(&services(), &opts(Format::Plain)), want);
}

#[test]
fn service_show_table() {
    let AdminResponse::Services(list) = services() else {
        panic!("services() is a list");
    };
    let want = r#"Name:             ss
Protocol:         shadowsocks
Ports:            8388-9387
Servers:          all
Download cap:     1 Gbit/s
Upload cap:       1 Gbit/s
New connections:  20/s per source address
Image:            default
Method:           chacha20-ietf-poly1305
"#;
    let resp = AdminResponse::Service(list[0].clone());
    assert_eq!(show(&resp, &opts(Format::Table)), want);
}

#[test]
fn vless_service_show_names_the_public_reality_settings() {
    let AdminResponse::Services(list) = services() else {
        panic!("services() is a list");
    };
    let mut s = list[0].clone();
    s.name = "vless".into();
    s.protocol = vpn_shared::model::Protocol::Vless;
    s.port = 443;
    s.port_span = 1;
    s.options = r#"{"Vless":{"engine":"Xray","sni":"www.example.com","dest":"www.example.com:443","public_key":"Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw","short_ids":["6ba85179e30d4fc2","0123456789abcdef"]}}"#.into();
    let text = show(&AdminResponse::Service(s), &opts(Format::Table));
    for line in [
        "Engine:           xray",
        "SNI:              www.example.com",
        "Dest:             www.example.com:443",
        "Public key:       Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw",
        "Short ids:        6ba85179e30d4fc2,0123456789abcdef",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert!(!text.to_lowercase().contains("private"), "{text}");
}

#[test]
fn firewall_list_table_and_plain() {
    let want = "\
TARGET          SERVERS  CREATED
10.0.0.0/8      all      2025-01-31T11:59:00Z
203.0.113.7/32  all      2025-01-31T11:59:00Z
203.0.113.7/32  fra-1    2025-01-31T11:59:00Z
2001:db8::/32   ams-2    2025-01-31T11:59:00Z
";
    assert_eq!(show(&firewall(), &opts(Format::Table)), want);
    let want = "\
10.0.0.0/8\tall\t1738324740
203.0.113.7/32\tall\t1738324740
203.0.113.7/32\tfra-1\t1738324740
2001:db8::/32\tams-2\t1738324740
";
    assert_eq!(show(&firewall(), &opts(Format::Plain)), want);
    let empty = AdminResponse::Firewall(vec![]);
    assert_eq!(show(&empty, &opts(Format::Table)), "no firewall rules\n");
    assert_eq!(show(&empty, &opts(Format::Plain)), "");
}

#[test]
fn links_table_with_qr_prints_each_url_then_its_code() {
    let with_qr = Opts {
        qr: true,
        ..opts(Format::Table)
    };
    let out = show(&links(), &with_qr);
    let mut blocks = out.split("\n\n");
    for url in [
        "ss://Y2hhY2hhMjA@203.0.113.7:8388#fra-1",
        "ss://Y2hhY2hhMjA@198.51.100.2:8388#ams-2",
    ] {
        let Some(block) = blocks.next() else {
            panic!("missing block for {url} in\n{out}");
        };
        let mut lines = block.lines();
        assert!(
            lines
                .next()
                .is_some_and(|l| l.ends_with("ss (shadowsocks)"))
        );
        assert_eq!(lines.next(), Some(url));
        let code: Vec<&str> = lines.collect();
        assert!(code.len() > 10, "a QR code follows the URL:\n{block}");
        assert!(code.iter().all(|l| l.chars().all(|c| " ▀▄█".contains(c))));
    }
}

#[test]
fn qr_is_half_blocks_with_a_quiet_zone() {
    let code = crate::render::table::qr("ss://x");
    let lines: Vec<&str> = code.lines().collect();
    // Version 1 is 21 modules plus a 4-module quiet zone each side: 29 wide, 15 rows of two.
    assert_eq!(lines.len(), 15);
    assert!(lines.iter().all(|l| l.chars().count() == 29));
    // Light-on-dark: the quiet zone is solid blocks.
    assert!(lines[0].chars().all(|c| c == '█'));
}

#[test]
fn applied_lists_hosts_then_the_summary_and_failures_exit_1() {
    let want = "\
fra-1  applied gen 7
ams-2  pending gen 7 (offline or no ack yet)
nyc-3  failed gen 7: service ss: port 8388 in use
user alice added
";
    let resp = applied();
    assert_eq!(show(&resp, &opts(Format::Table)), want);
    let want = "\
fra-1\tapplied\t7
ams-2\tpending\t7
nyc-3\tfailed\t7\tservice ss: port 8388 in use
";
    assert_eq!(show(&resp, &opts(Format::Plain)), want);
    let err = host_failures(&resp).err();
    assert!(matches!(
        err,
        Some(CliError::HostsFailed {
            failed: 1,
            total: 3
        })
    ));
    assert_eq!(err.map(|e| e.exit_code()), Some(1));
}

#[test]
fn server_added_prints_the_join_string_and_the_agent_command() {
    let resp = AdminResponse::ServerAdded(ServerAdded {
        name: "fra-1".into(),
        host_id: "h-1".into(),
        join: "vpnj1.abc".into(),
        expires_at: NOW + 3600,
    });
    let want = "\
server fra-1 added; the join string is valid until 2025-01-31T13:00:00Z (1h)

join string:
  vpnj1.abc

run this on the new host as root:
  vpn-agent join vpnj1.abc
";
    assert_eq!(show(&resp, &opts(Format::Table)), want);
    let with_hints = Opts {
        hints: true,
        ..opts(Format::Table)
    };
    let hint = "\nthe host shows up in `vpn servers list` once it has joined\n";
    assert_eq!(show(&resp, &with_hints), format!("{want}{hint}"));
    assert_eq!(show(&resp, &opts(Format::Plain)), "vpnj1.abc\n");
}

#[test]
fn status_table() {
    let resp = AdminResponse::Status(StatusInfo {
        controller_version: "0.1.0".into(),
        hosts_total: 3,
        hosts_online: 2,
        services: 1,
        users_total: 10,
        users_active: 9,
    });
    let want = "\
Controller:  0.1.0
Hosts:       3 (2 online)
Services:    1
Users:       10 (9 active)
";
    assert_eq!(show(&resp, &opts(Format::Table)), want);
}

#[test]
fn empty_lists_say_so_in_table_and_print_nothing_in_plain() {
    let resp = AdminResponse::Users(vec![]);
    assert_eq!(show(&resp, &opts(Format::Table)), "no users\n");
    assert_eq!(show(&resp, &opts(Format::Plain)), "");
    assert_eq!(show(&resp, &opts(Format::Json)), "[]\n");
}

#[test]
fn server_show_puts_last_apply_failures_on_their_own_line() {
    let AdminResponse::Servers(mut all) = servers() else {
        unreachable!("servers() answers Servers");
    };
    let mut fra = all.remove(0);
    let shown = show(&AdminResponse::Server(fra.clone()), &opts(Format::Table));
    assert!(shown.contains("Missing features:  -"), "{shown}");
    assert!(
        !shown.contains("Last apply"),
        "no failures, no line:\n{shown}"
    );

    fra.health = vec![
        "cls_u32 missing: disables limits".into(),
        "last apply: host/state: applied but not saved: cannot write /var/lib/x".into(),
    ];
    let shown = show(&AdminResponse::Server(fra), &opts(Format::Table));
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in\n{shown}"))
            .to_string()
    };
    assert!(
        line("Missing features:").ends_with("cls_u32 missing: disables limits"),
        "{shown}"
    );
    assert!(
        line("Last apply:").ends_with("host/state: applied but not saved: cannot write /var/lib/x"),
        "{shown}"
    );
}
