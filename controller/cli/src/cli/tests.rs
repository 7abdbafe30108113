//! Argument parsing: valid command lines become the right request, bad ones are usage errors
//! that name the flag.

use clap::error::ErrorKind;
use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::admin::{
    AddUser, AdminRequest, DeployService, EditService, EditUser, Servers, UsageBy, UsageQuery,
};

use super::{Cli, Format};
use crate::commands::to_request;

/// The clock of every request built here: 2025-01-31T12:00:00Z.
const NOW: i64 = 1_738_324_800;

fn parse(args: &str) -> Result<Cli, clap::Error> {
    Cli::try_parse_checked(std::iter::once("vpn").chain(args.split_whitespace()))
}

fn request(args: &str) -> AdminRequest {
    match parse(args) {
        Ok(cli) => to_request(&cli.command, NOW).expect("a remote command"),
        Err(e) => panic!("`vpn {args}` should parse: {e}"),
    }
}

/// The usage error for `args`, rendered without colors.
fn usage_error(args: &str) -> (ErrorKind, String) {
    match parse(args) {
        Ok(cli) => panic!("`vpn {args}` should fail, got {cli:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "usage errors exit 2: {e}");
            (e.kind(), e.render().to_string())
        }
    }
}

#[test]
fn servers_add_defaults_to_one_hour() {
    let want = AdminRequest::ServersAdd {
        name: "fra-1".into(),
        expires_secs: 3600,
    };
    assert_eq!(request("servers add fra-1"), want);
    let want = AdminRequest::ServersAdd {
        name: "fra-1".into(),
        expires_secs: 90 * 60,
    };
    assert_eq!(request("servers add fra-1 --expires 1h30m"), want);
}

#[test]
fn services_deploy_builds_the_request() {
    let want = AdminRequest::ServicesDeploy(DeployService {
        protocol: Protocol::Shadowsocks,
        name: Some("ss-main".into()),
        port: 8388,
        servers: Servers::Named(vec!["fra-1".into(), "ams-1".into(), "nyc-1".into()]),
        image: None,
        method: Some("aes-256-gcm".into()),
        bandwidth: Default::default(),
        new_conn_rate: None,
        wait: false,
    });
    let args = "services deploy ss --port 8388 --name ss-main --server fra-1 \
                --server ams-1,nyc-1 --method aes-256-gcm --no-wait";
    assert_eq!(request(args), want);
}

#[test]
fn users_add_with_all_servers_waits_by_default() {
    let want = AdminRequest::UsersAdd(AddUser {
        name: "alice".into(),
        email: Some("a@example.com".into()),
        note: None,
        protocols: Some(vec![Protocol::Shadowsocks]),
        servers: Servers::All,
        bandwidth: Default::default(),
        wait: true,
    });
    let args = "users add alice --email a@example.com --protocols shadowsocks --all-servers";
    assert_eq!(request(args), want);
    let AdminRequest::UsersAdd(add) = request("users add bob --all-servers") else {
        panic!("users add is UsersAdd");
    };
    assert_eq!(add.protocols, None, "no --protocols means every protocol");
}

#[test]
fn mutating_user_commands_honour_no_wait() {
    let want = AdminRequest::UsersSuspend {
        name: "alice".into(),
        wait: false,
    };
    assert_eq!(request("users suspend alice --no-wait"), want);
    let want = AdminRequest::UsersResume {
        name: "alice".into(),
        wait: true,
    };
    assert_eq!(request("users resume alice"), want);
    let want = AdminRequest::ServicesRemove {
        name: "ss".into(),
        wait: false,
    };
    assert_eq!(request("services remove ss --no-wait"), want);
}

#[test]
fn users_link_filters_and_output_flag_anywhere() {
    let cli = match parse("users link alice --server fra-1 --protocol ss --qr -o plain") {
        Ok(cli) => cli,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cli.output, Format::Plain);
    let want = AdminRequest::UsersLink {
        name: "alice".into(),
        server: Some("fra-1".into()),
        protocol: Some(Protocol::Shadowsocks),
    };
    assert_eq!(to_request(&cli.command, NOW), Some(want));
    assert_eq!(request("-o json status"), AdminRequest::StatusDetail);
}

#[test]
fn health_views_and_doctor_ask_with_the_detail_requests() {
    let name = || "fra-1".to_string();
    assert_eq!(request("servers list"), AdminRequest::ServersListDetail);
    assert_eq!(
        request("servers show fra-1"),
        AdminRequest::ServersShowDetail { name: name() }
    );
    assert_eq!(request("status"), AdminRequest::StatusDetail);
    assert_eq!(
        request("services show fra-1"),
        AdminRequest::ServicesShowDetail { name: name() }
    );
    assert_eq!(request("doctor -o json"), AdminRequest::Doctor);
}

#[test]
fn port_zero_is_rejected_naming_the_flag() {
    let (kind, msg) = usage_error("services deploy ss --port 0 --all-servers");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(
        msg.starts_with("error: invalid value '0' for '--port <N>': 0 is not in 1..=65535\n"),
        "{msg}"
    );
    let (_, msg) = usage_error("services deploy ss --port 70000 --all-servers");
    assert!(msg.contains("'--port <N>'"), "{msg}");
}

#[test]
fn all_servers_and_server_are_exclusive_and_one_is_required() {
    let (kind, msg) = usage_error("users add alice --all-servers --server fra-1");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(
        msg.starts_with(
            "error: the argument '--all-servers' cannot be used with '--server <NAME>'\n"
        ),
        "{msg}"
    );
    let (kind, msg) = usage_error("services deploy ss --port 8388");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(msg.contains("<--all-servers|--server <NAME>>"), "{msg}");
}

#[test]
fn unknown_protocol_and_bad_durations_name_the_argument() {
    let (_, msg) = usage_error("services deploy wireguard2 --port 1 --all-servers");
    assert!(
        msg.starts_with("error: invalid value 'wireguard2' for '<PROTOCOL>': unknown protocol"),
        "{msg}"
    );
    let (_, msg) = usage_error("users add alice --all-servers --protocols ss,nope");
    assert!(msg.contains("for '--protocols <P,...>'"), "{msg}");
    let (_, msg) = usage_error("servers add fra-1 --expires soon");
    assert!(msg.contains("for '--expires <DURATION>'"), "{msg}");
    let (_, msg) = usage_error("servers add fra-1 --expires 0s");
    assert!(msg.contains("must be longer than zero"), "{msg}");
}

#[test]
fn the_output_format_and_context_file_can_come_from_the_environment() {
    use clap::CommandFactory;
    // Only the binding is checked: the values belong to whoever runs the tests.
    let cmd = Cli::command();
    let env_of = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .and_then(|v| v.to_str())
            .map(str::to_owned)
    };
    assert_eq!(env_of("output").as_deref(), Some("VPN_OUTPUT"));
    assert_eq!(env_of("config").as_deref(), Some("VPN_CONFIG"));
    let cli = parse("status").unwrap();
    assert_eq!(
        (cli.output, cli.config),
        (Format::Table, None),
        "tests see no env"
    );
}

#[test]
fn bad_output_format_and_missing_subcommand_are_usage_errors() {
    let (kind, _) = usage_error("-o xml status");
    assert_eq!(kind, ErrorKind::InvalidValue);
    let (kind, _) = usage_error("users");
    assert_eq!(kind, ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
}

fn rates(down: Option<u64>, up: Option<u64>) -> Bandwidth {
    Bandwidth {
        down_bps: down,
        up_bps: up,
    }
}

fn add_bandwidth(args: &str) -> Bandwidth {
    match request(&format!("users add alice --all-servers {args}")) {
        AdminRequest::UsersAdd(a) => a.bandwidth,
        other => panic!("users add is UsersAdd, got {other:?}"),
    }
}

#[test]
fn users_add_takes_one_rate_or_one_per_direction() {
    assert_eq!(add_bandwidth(""), Bandwidth::default());
    let m20 = Some(20_000_000);
    assert_eq!(add_bandwidth("--bandwidth 20mbit"), rates(m20, m20));
    assert_eq!(
        add_bandwidth("--down 10mbps --up 800kbit"),
        rates(Some(80_000_000), Some(800_000))
    );
    assert_eq!(
        add_bandwidth("--down 1.5gbit"),
        rates(Some(1_500_000_000), None)
    );
    let (kind, msg) = usage_error("users add alice --all-servers --bandwidth 1mbit --up 1mbit");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(
        msg.contains("'--bandwidth <RATE>' cannot be used with '--up <RATE>'"),
        "{msg}"
    );
}

#[test]
fn bad_rates_are_usage_errors_naming_the_flag() {
    let (kind, msg) = usage_error("users add alice --all-servers --bandwidth fast");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(
        msg.starts_with("error: invalid value 'fast' for '--bandwidth <RATE>': unknown unit"),
        "{msg}"
    );
    let (_, msg) = usage_error("users add alice --all-servers --down 0");
    assert!(
        msg.contains("for '--down <RATE>': must be at least 1 bit/s"),
        "{msg}"
    );
    let (_, msg) = usage_error("users edit alice --down 1mbit --up 0kbit");
    assert!(msg.contains("for '--up <RATE>'"), "{msg}");
    let (_, msg) = usage_error("services deploy ss --port 1 --all-servers --bandwidth 20xbit");
    assert!(msg.contains("for '--bandwidth <RATE>'"), "{msg}");
    let (_, msg) = usage_error("services deploy ss --port 1 --all-servers --conn-rate 0");
    assert!(msg.contains("for '--conn-rate <N>'"), "{msg}");
    let (_, msg) = usage_error("services edit ss --conn-rate many");
    assert!(msg.contains("for '--conn-rate <N>'"), "{msg}");
}

#[test]
fn users_edit_builds_the_request() {
    let want = AdminRequest::UsersEdit(EditUser {
        name: "alice".into(),
        email: Some("new@example.com".into()),
        note: Some(String::new()),
        bandwidth: None,
        wait: true,
    });
    assert_eq!(
        request("users edit alice --email new@example.com --note="),
        want
    );
    let edit = |args: &str| match request(&format!("users edit alice {args}")) {
        AdminRequest::UsersEdit(e) => (e.bandwidth, e.wait),
        other => panic!("users edit is UsersEdit, got {other:?}"),
    };
    let m8 = Some(8_000_000);
    assert_eq!(edit("--bandwidth 8mbit"), (Some(rates(m8, m8)), true));
    assert_eq!(
        edit("--down 8mbit --up 1mbit --no-wait"),
        (Some(rates(m8, Some(1_000_000))), false)
    );
    assert_eq!(edit("--no-bandwidth"), (Some(Bandwidth::default()), true));
}

#[test]
fn users_edit_needs_a_change_and_a_whole_limit() {
    let (kind, msg) = usage_error("users edit alice");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(
        msg.contains("--email <E>|--note <T>|--bandwidth <RATE>"),
        "{msg}"
    );
    // The whole limit is replaced, so one direction alone would silently lift the other.
    let (kind, msg) = usage_error("users edit alice --down 8mbit");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(msg.contains("--up <RATE>"), "{msg}");
    let (kind, _) = usage_error("users edit alice --bandwidth 8mbit --no-bandwidth");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    let (kind, _) = usage_error("users edit alice --down 8mbit --up 8mbit --no-bandwidth");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
}

#[test]
fn services_deploy_and_edit_carry_caps_and_connection_rates() {
    let AdminRequest::ServicesDeploy(d) =
        request("services deploy ss --port 8388 --all-servers --bandwidth 1gbit --conn-rate 20")
    else {
        panic!("services deploy is ServicesDeploy");
    };
    let g1 = Some(1_000_000_000);
    assert_eq!((d.bandwidth, d.new_conn_rate), (rates(g1, g1), Some(20)));

    let want = AdminRequest::ServicesEdit(EditService {
        name: "ss".into(),
        bandwidth: Some(rates(g1, g1)),
        new_conn_rate: Some(None),
        wait: false,
    });
    let args = "services edit ss --bandwidth 1gbit --no-conn-rate --no-wait";
    assert_eq!(request(args), want);
    let want = AdminRequest::ServicesEdit(EditService {
        name: "ss".into(),
        bandwidth: Some(Bandwidth::default()),
        new_conn_rate: Some(Some(5)),
        wait: true,
    });
    assert_eq!(
        request("services edit ss --no-bandwidth --conn-rate 5"),
        want
    );
    let (kind, _) = usage_error("services edit ss");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    // An image edit needs the newer request; without one the older request stays.
    let want = AdminRequest::ServicesEditWith {
        edit: EditService {
            name: "ss".into(),
            bandwidth: None,
            new_conn_rate: None,
            wait: true,
        },
        image: Some(Some("vpn-fleet/shadowsocks-rust:next".into())),
    };
    assert_eq!(
        request("services edit ss --image vpn-fleet/shadowsocks-rust:next"),
        want
    );
    let AdminRequest::ServicesEditWith { image, .. } = request("services edit ss --default-image")
    else {
        panic!("--default-image is ServicesEditWith");
    };
    assert_eq!(image, Some(None));
    let (kind, _) = usage_error("services edit ss --image a --default-image");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    let (kind, _) = usage_error("services edit ss --conn-rate 5 --no-conn-rate");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
}

#[test]
fn firewall_commands_build_their_requests() {
    let want = AdminRequest::FirewallBlock {
        target: "203.0.113.7".into(),
        servers: Servers::Named(vec!["fra-1".into(), "ams-1".into()]),
        wait: true,
    };
    assert_eq!(
        request("firewall block 203.0.113.7 --server fra-1,ams-1"),
        want
    );
    let want = AdminRequest::FirewallUnblock {
        target: "2001:db8::/32".into(),
        servers: Servers::All,
        wait: false,
    };
    assert_eq!(
        request("firewall unblock 2001:db8::/32 --all-servers --no-wait"),
        want
    );
    assert_eq!(request("firewall list"), AdminRequest::FirewallList);
    let (kind, msg) = usage_error("firewall block 203.0.113.7");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(msg.contains("<--all-servers|--server <NAME>>"), "{msg}");
    let (kind, _) = usage_error("firewall unblock --all-servers");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
}

#[test]
fn the_command_tree_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn completions_are_answered_locally_and_unknown_shells_are_usage_errors() {
    let cli = parse("completions bash").unwrap();
    assert_eq!(to_request(&cli.command, NOW), None);
    assert_eq!(
        parse("completions tcsh").unwrap_err().exit_code(),
        2,
        "an unknown shell is a usage error"
    );
}

#[test]
fn services_deploy_vless_carries_reality_settings() {
    use vpn_shared::model::VlessEngine;
    use vpn_shared::proto::admin::{DeployOptions, DeployVless};
    let args = "services deploy vless --port 443 --sni www.example.com \
                --dest www.example.com:443 --short-ids 3 --engine shoes --all-servers";
    let AdminRequest::ServicesDeployWith { deploy, options } = request(args) else {
        panic!("vless deploys carry their options");
    };
    assert_eq!((deploy.protocol, deploy.port), (Protocol::Vless, 443));
    assert_eq!(deploy.servers, Servers::All);
    assert_eq!(
        options,
        DeployOptions::Vless(DeployVless {
            engine: Some(VlessEngine::Shoes),
            sni: "www.example.com".into(),
            dest: "www.example.com:443".into(),
            short_ids: Some(3),
        })
    );
    let args = "services deploy vless --port 443 --sni a.example --dest a.example:443 --server h";
    let AdminRequest::ServicesDeployWith { options, .. } = request(args) else {
        panic!("vless deploys carry their options");
    };
    let DeployOptions::Vless(v) = options else {
        panic!("vless options");
    };
    assert_eq!(
        (v.engine, v.short_ids),
        (None, None),
        "defaults are the controller's"
    );
}

#[test]
fn services_deploy_proxy_carries_its_kind() {
    use vpn_shared::model::ProxyKind;
    use vpn_shared::proto::admin::DeployOptions;
    for (flag, want) in [
        ("", None),
        ("--kind http", Some(ProxyKind::Http)),
        ("--kind socks5", Some(ProxyKind::Socks5)),
        ("--kind both", Some(ProxyKind::Both)),
    ] {
        let args = format!("services deploy proxy --port 3128 {flag} --server h1 --server h2");
        let AdminRequest::ServicesDeployWith { deploy, options } = request(&args) else {
            panic!("proxy deploys carry their options");
        };
        assert_eq!((deploy.protocol, deploy.port), (Protocol::Proxy, 3128));
        assert_eq!(
            deploy.servers,
            Servers::Named(vec!["h1".into(), "h2".into()])
        );
        assert_eq!(options, DeployOptions::Proxy { kind: want }, "{flag}");
    }
}

#[test]
fn a_bad_proxy_kind_or_a_foreign_flag_is_a_usage_error_naming_the_flag() {
    let base = "services deploy proxy --port 3128 --all-servers";
    let (kind, text) = usage_error(&format!("{base} --kind ftp"));
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(
        text.contains("--kind") && text.contains("http, socks5 or both"),
        "{text}"
    );
    for flag in ["--method aes-256-gcm", "--sni a.example", "--engine shoes"] {
        let (kind, text) = usage_error(&format!("{base} {flag}"));
        assert_eq!(kind, ErrorKind::ArgumentConflict, "{flag}");
        let name = flag.split(' ').next().unwrap_or_default();
        assert!(text.contains(name), "{text}");
    }
    let (kind, text) = usage_error("services deploy ss --port 8388 --all-servers --kind http");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(text.contains("--kind"), "{text}");
}

#[test]
fn vless_and_shadowsocks_flags_do_not_mix_and_vless_needs_sni_and_dest() {
    let base = "services deploy vless --port 443 --all-servers";
    let (kind, text) = usage_error(&format!("{base} --dest a.example:443"));
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(text.contains("--sni"), "{text}");
    let (kind, text) = usage_error(&format!("{base} --sni a.example"));
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(text.contains("--dest"), "{text}");
    let (kind, text) = usage_error(&format!(
        "{base} --sni a.example --dest a.example:443 --method aes-256-gcm"
    ));
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(text.contains("--method"), "{text}");
    let (kind, text) = usage_error("services deploy ss --port 8388 --all-servers --sni a.example");
    assert_eq!(kind, ErrorKind::ArgumentConflict);
    assert!(text.contains("--sni"), "{text}");
    let (kind, text) = usage_error(&format!(
        "{base} --sni a.example --dest a.example:443 --engine v2ray"
    ));
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(
        text.contains("--engine") && text.contains("xray or shoes"),
        "{text}"
    );
    for k in ["0", "17"] {
        let (kind, text) = usage_error(&format!(
            "{base} --sni a.example --dest a.example:443 --short-ids {k}"
        ));
        assert_eq!(kind, ErrorKind::ValueValidation, "--short-ids {k}");
        assert!(text.contains("--short-ids"), "{text}");
    }
}

fn usage(user: Option<&str>, since: Option<i64>, by: UsageBy) -> AdminRequest {
    AdminRequest::UsersUsage(UsageQuery {
        user: user.map(Into::into),
        since,
        by,
    })
}

#[test]
fn users_usage_asks_for_every_user_by_user_and_all_time_by_default() {
    assert_eq!(request("users usage"), usage(None, None, UsageBy::User));
    assert_eq!(
        request("users usage alice -o plain"),
        usage(Some("alice"), None, UsageBy::User)
    );
    for (flag, by) in [
        ("user", UsageBy::User),
        ("server", UsageBy::Server),
        ("service", UsageBy::Service),
        ("day", UsageBy::Day),
    ] {
        assert_eq!(
            request(&format!("users usage --by {flag}")),
            usage(None, None, by)
        );
    }
}

#[test]
fn users_usage_since_is_a_duration_back_from_now_or_a_utc_moment() {
    assert_eq!(
        request("users usage alice --since 24h --by server"),
        usage(Some("alice"), Some(NOW - 86400), UsageBy::Server)
    );
    assert_eq!(
        request("users usage --since 1h30m"),
        usage(None, Some(NOW - 5400), UsageBy::User)
    );
    assert_eq!(
        request("users usage --since 2025-01-01 --by day"),
        usage(None, Some(1_735_689_600), UsageBy::Day),
        "a date is midnight UTC"
    );
    assert_eq!(
        request("users usage --since 2025-01-31T10:00:00Z"),
        usage(None, Some(NOW - 2 * 3600), UsageBy::User)
    );
}

#[test]
fn bad_usage_flags_are_usage_errors_naming_the_flag() {
    let (kind, msg) = usage_error("users usage --since yesterday");
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(
        msg.starts_with(
            "error: invalid value 'yesterday' for '--since <WHEN>': `yesterday` is neither a \
             duration"
        ),
        "{msg}"
    );
    let (_, msg) = usage_error("users usage --since 2026-02-30");
    assert!(
        msg.contains("for '--since <WHEN>': `2026-02-30` is not a UTC date or time"),
        "{msg}"
    );
    let (_, msg) = usage_error("users usage --since 2026-12-01T10:00:00+01:00");
    assert!(msg.contains("only UTC: end it with Z"), "{msg}");
    let (_, msg) = usage_error("users usage --since 0s");
    assert!(
        msg.contains("for '--since <WHEN>': must be longer than zero"),
        "{msg}"
    );
    let (kind, msg) = usage_error("users usage --by host");
    assert_eq!(kind, ErrorKind::InvalidValue);
    assert!(msg.contains("for '--by <BY>'"), "{msg}");
    assert!(
        msg.contains("[possible values: user, server, service, day]"),
        "{msg}"
    );
    let (kind, _) = usage_error("users usage alice bob");
    assert_eq!(kind, ErrorKind::UnknownArgument);
}

mod ports;
mod quota;
mod wireguard;
