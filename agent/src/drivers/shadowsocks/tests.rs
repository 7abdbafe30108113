//! Unit tests of the pure half of the Shadowsocks driver: render, desired ports and the plan.

use std::path::Path;

use vpn_shared::model::{
    Credential, DesiredState, Protocol, ServiceOptions, ServiceSpec, UserSpec,
};
use vpn_shared::proto::{Outcome, ResourceResult};

use super::manager::ListedPort;
use super::*;

fn service(method: &str) -> ServiceSpec {
    ServiceSpec {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: 39000,
        image: None,
        options: ServiceOptions::Shadowsocks {
            method: method.into(),
        },
        bandwidth: Default::default(),
        new_conn_rate: None,
    }
}

fn user(name: &str, port: u16, password: &str) -> UserSpec {
    UserSpec {
        name: name.into(),
        id: format!("id-{name}"),
        credentials: vec![Credential::Shadowsocks {
            service: "ss".into(),
            port,
            password: password.into(),
        }],
        bandwidth: Default::default(),
    }
}

fn up(user: &str, port: u16, password: &str) -> UserPort {
    UserPort {
        user: user.into(),
        port,
        password: password.into(),
    }
}

fn listed(port: u16, password: &str) -> ListedPort {
    ListedPort {
        port,
        password: password.into(),
    }
}

#[test]
fn render_runs_ssmanager_on_a_socket_in_the_run_dir() {
    let run = Path::new("/var/lib/vpn-agent/run/ss");
    let spec = render(&service("aes-256-gcm"), "vpn-h1-ss", run, "host").unwrap();
    assert_eq!(spec.name, "vpn-h1-ss");
    assert_eq!(spec.image, DEFAULT_IMAGE);
    assert_eq!(spec.network_mode, "host");
    assert_eq!(
        spec.binds,
        vec!["/var/lib/vpn-agent/run/ss:/var/lib/vpn-agent/run/ss"]
    );
    assert_eq!(
        spec.cmd.join(" "),
        "ssmanager --manager-addr /var/lib/vpn-agent/run/ss/manager.sock \
         --server-host 0.0.0.0 -U --encrypt-method aes-256-gcm \
         --acl /var/lib/vpn-agent/run/ss/outbound.acl"
    );
    assert_eq!(
        spec.labels.get("vpn-fleet.service").map(String::as_str),
        Some("ss")
    );
}

#[test]
fn the_acl_blocks_the_hosts_own_addresses_and_its_digest_is_in_the_spec() {
    let lines: Vec<&str> = OUTBOUND_ACL.lines().collect();
    let [head, rest @ ..] = &lines[..] else {
        panic!("empty acl");
    };
    assert!(head.starts_with('#'));
    assert_eq!(rest.first(), Some(&"[outbound_block_list]"));
    for rule in [
        "127.0.0.0/8",
        "::1/128",
        "0.0.0.0/8",
        "::/128",
        "::ffff:127.0.0.0/104",
    ] {
        assert!(rest.contains(&rule), "{rule} missing");
    }
    // Every rule must be a network: anything else would become a host regex to the parser.
    for rule in &rest[1..] {
        assert!(
            rule.parse::<std::net::IpAddr>().is_ok() || rule.contains('/'),
            "{rule:?}"
        );
        assert_eq!(rule.trim(), *rule);
    }
    let spec = render(&service("aes-256-gcm"), "c", Path::new("/d"), "host").unwrap();
    let digest = spec.labels.get(LABEL_ACL).unwrap();
    assert_eq!(digest.len(), 16);
}

#[test]
fn write_acl_puts_the_acl_where_the_command_line_points() {
    let dir = tempfile::tempdir().unwrap();
    write_acl(dir.path()).unwrap();
    write_acl(dir.path()).unwrap(); // idempotent
    let written = std::fs::read_to_string(acl_path(dir.path())).unwrap();
    assert_eq!(written, OUTBOUND_ACL);
    let spec = render(&service("aes-256-gcm"), "c", dir.path(), "host").unwrap();
    let at = spec.cmd.iter().position(|a| a == "--acl").unwrap();
    assert_eq!(Path::new(&spec.cmd[at + 1]), acl_path(dir.path()));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["outbound.acl"]);
}

#[test]
fn render_honours_the_image_and_the_method_changes_the_hash() {
    let run = Path::new("/d/run/ss");
    let mut s = service("chacha20-ietf-poly1305");
    let a = render(&s, "c", run, "host").unwrap();
    s.image = Some("example/ss:1".into());
    let b = render(&s, "c", run, "host").unwrap();
    assert_eq!(b.image, "example/ss:1");
    assert_ne!(a.spec_hash(), b.spec_hash());
    let c = render(&service("aes-128-gcm"), "c", run, "host").unwrap();
    assert_ne!(a.spec_hash(), c.spec_hash());
    // Same input, same spec: the basis of idempotent applies.
    assert_eq!(
        a,
        render(&service("chacha20-ietf-poly1305"), "c", run, "host").unwrap()
    );
}

#[test]
fn render_refuses_unknown_methods_and_colon_paths() {
    let err = render(&service("rc4-md5"), "c", Path::new("/d"), "host").unwrap_err();
    assert_eq!(
        err.to_string(),
        "service ss: unsupported shadowsocks method rc4-md5"
    );
    let err = render(&service("aes-128-gcm"), "c", Path::new("/d:x"), "host").unwrap_err();
    assert!(matches!(err, DriverError::BadPath(_)));
}

#[test]
fn desired_ports_reports_a_port_held_twice() {
    let mut state = DesiredState::default();
    for u in [
        user("alice", 39001, "a"),
        user("bob", 39001, "b"),
        user("carol", 39002, "c"),
    ] {
        state.users.insert(u.name.clone(), u);
    }
    let (ports, conflicts) = desired_ports(&state, "ss");
    assert_eq!(
        ports,
        vec![up("alice", 39001, "a"), up("carol", 39002, "c")]
    );
    assert_eq!(
        conflicts,
        vec![ResourceResult::error(
            "user/bob@ss",
            "port 39001 is already held by user alice"
        )]
    );
    assert!(desired_ports(&state, "other").0.is_empty());
}

#[test]
fn plan_adds_missing_and_removes_unwanted() {
    let desired = [up("a", 1, "pa"), up("b", 2, "pb")];
    let p = plan(&desired, &[listed(2, "pb"), listed(3, "px")]);
    assert_eq!(p.removes, vec![3]);
    assert_eq!(p.adds, vec![up("a", 1, "pa")]);
}

#[test]
fn plan_of_a_changed_password_touches_that_port_only() {
    let desired = [up("a", 1, "new"), up("b", 2, "pb")];
    let p = plan(&desired, &[listed(1, "old"), listed(2, "pb")]);
    assert_eq!(p.removes, vec![1]);
    assert_eq!(p.adds, vec![up("a", 1, "new")]);
}

#[test]
fn plan_of_a_matching_manager_is_empty() {
    let desired = [up("a", 1, "pa"), up("b", 2, "pb")];
    assert!(plan(&desired, &[listed(2, "pb"), listed(1, "pa")]).is_empty());
    assert!(plan(&[], &[]).is_empty());
    // A restarted manager has nothing open: everything comes back.
    assert_eq!(plan(&desired, &[]).adds.len(), 2);
}

#[tokio::test]
async fn apply_service_without_a_manager_fails_every_resource() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = DesiredState::default();
    state
        .users
        .insert("alice".into(), user("alice", 39001, "a"));
    let report = apply_service(&state, &service("aes-128-gcm"), dir.path(), Duration::ZERO).await;
    assert_eq!(report.adds + report.removes, 0);
    let mut names: Vec<_> = report.results.iter().map(|r| r.resource.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["service/ss", "user/alice@ss"]);
    assert!(
        report
            .results
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Error(_)))
    );
}

/// A service of 20,000 ports: one manager per block of 1,000 that holds a user, the service's
/// own container first and exactly as `render` makes it (so an agent upgrade recreates no
/// running service), the others on a socket and a name of their own.
#[test]
fn a_wide_range_runs_one_manager_per_block_of_ports_in_use() {
    let run = Path::new("/var/lib/vpn-agent/run/ss");
    let svc = ServiceSpec {
        port: 20_000,
        ..service("chacha20-ietf-poly1305")
    };
    let mut state = DesiredState::default();
    state.services.insert("ss".into(), svc.clone());
    for (name, port) in [("a", 20_000), ("b", 20_999), ("c", 21_000), ("d", 39_999)] {
        state.users.insert(name.into(), user(name, port, name));
    }
    let ctx = ServiceCtx {
        container: "vpn-h1-ss",
        run_dir: run,
        network_mode: "host",
    };
    let rendered = Shadowsocks.render(&svc, &state, &ctx).unwrap();
    let names: Vec<&str> = rendered.iter().map(|r| r.spec.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "vpn-h1-ss",
            "vpn-h1-ss.ports-21000-21999",
            "vpn-h1-ss.ports-39000-39999"
        ]
    );
    assert_eq!(
        rendered[0].spec,
        render(&svc, "vpn-h1-ss", run, "host").unwrap()
    );
    assert!(
        rendered.iter().all(|r| r.user.is_none()),
        "each serves many"
    );
    let last = &rendered[2].spec;
    assert!(
        last.cmd
            .join(" ")
            .contains("--manager-addr /var/lib/vpn-agent/run/ss/manager-39000.sock"),
        "{:?}",
        last.cmd
    );
    assert_eq!(
        last.labels.get(LABEL_PORTS).map(String::as_str),
        Some("39000-39999")
    );
    assert_eq!(last.binds, rendered[0].spec.binds, "one run directory");

    let (desired, _) = desired_ports(&state, "ss");
    let blocks = blocks_of(&svc, &desired);
    let by_block: Vec<(u16, Vec<u16>)> = blocks
        .iter()
        .map(|(b, ports)| (b.index, ports.iter().map(|p| p.port).collect()))
        .collect();
    assert_eq!(
        by_block,
        [
            (0, vec![20_000, 20_999]),
            (1, vec![21_000]),
            (19, vec![39_999])
        ]
    );
    // Without users the service's own manager still runs, alone.
    let empty = DesiredState {
        users: Default::default(),
        ..state
    };
    let rendered = Shadowsocks.render(&svc, &empty, &ctx).unwrap();
    assert_eq!(rendered.len(), 1);
}
