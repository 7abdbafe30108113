//! Argument parsing: valid command lines become the right request, bad ones are usage errors
//! that name the flag.

use clap::Parser;
use clap::error::ErrorKind;
use vpn_shared::model::Protocol;
use vpn_shared::proto::admin::{AddUser, AdminRequest, DeployService, Servers};

use super::{Cli, Format};
use crate::commands::to_request;

fn parse(args: &str) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("vpn").chain(args.split_whitespace()))
}

fn request(args: &str) -> AdminRequest {
    match parse(args) {
        Ok(cli) => to_request(&cli.command),
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
    assert_eq!(to_request(&cli.command), want);
    assert_eq!(request("-o json status"), AdminRequest::Status);
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
fn bad_output_format_and_missing_subcommand_are_usage_errors() {
    let (kind, _) = usage_error("-o xml status");
    assert_eq!(kind, ErrorKind::InvalidValue);
    let (kind, _) = usage_error("users");
    assert_eq!(kind, ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
}

#[test]
fn the_command_tree_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
