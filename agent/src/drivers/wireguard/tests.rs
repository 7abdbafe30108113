use std::path::Path;

use vpn_shared::model::{Bandwidth, UserSpec};

use super::wg::{Listed, Peer, commands, parse_dump, plan};
use super::*;

const KEY_A: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
const KEY_B: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";

fn service() -> ServiceSpec {
    ServiceSpec {
        name: "wireguard".into(),
        protocol: Protocol::Wireguard,
        port: 51820,
        image: None,
        options: ServiceOptions::Wireguard(WireguardOptions {
            subnet: "10.66.0.0/16".into(),
            ipv6_subnet: Some("fd66::/64".into()),
            dns: vec!["1.1.1.1".into()],
            mtu: Some(1380),
            private_key: "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=".into(),
        }),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/drivers/wireguard/golden")
        .join(name);
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(
        actual, expected,
        "{name} changed (GOLDEN_UPDATE=1 rewrites)"
    );
}

fn peer(user: &str, key: &str, ip: u8) -> Peer {
    Peer {
        user: user.into(),
        public_key: key.into(),
        preshared_key: format!("psk-{user}"),
        allowed_ips: vec![format!("10.66.0.{ip}/32"), format!("fd66::{ip}/128")],
    }
}

fn listed(p: &Peer) -> Listed {
    Listed {
        public_key: p.public_key.clone(),
        preshared_key: Some(p.preshared_key.clone()),
        allowed_ips: p.allowed_ips.clone(),
        latest_handshake: 0,
        rx: 0,
        tx: 0,
    }
}

#[test]
fn the_start_script_and_container_are_pinned() {
    let run = Path::new("/var/lib/vpn-agent/run/wireguard");
    let script = start_script(&service(), run).unwrap();
    golden("start.sh", &script);
    let ctx = ServiceCtx {
        container: "vpn-h1-wireguard",
        run_dir: run,
        network_mode: "host",
    };
    let r = render(&service(), &ctx).unwrap();
    assert_eq!(r.spec.cap_add, ["NET_ADMIN"]);
    assert_eq!(r.spec.devices, ["/dev/net/tun"]);
    assert_eq!(
        r.spec.cmd,
        ["sh", "/var/lib/vpn-agent/run/wireguard/start.sh"]
    );
    let key = r.files.iter().find(|f| f.name == KEY_FILE).unwrap();
    assert_eq!(
        key.contents,
        b"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n"
    );
    assert!(
        !script.contains("dwdtCnMYp"),
        "the key is a file, not in the script"
    );

    let mut other = service();
    if let ServiceOptions::Wireguard(o) = &mut other.options {
        o.private_key = KEY_B.into();
    }
    let r2 = render(&other, &ctx).unwrap();
    assert_ne!(
        r.spec.spec_hash(),
        r2.spec.spec_hash(),
        "a new key recreates"
    );
}

#[test]
fn a_service_without_its_host_key_is_refused_by_name() {
    let mut s = service();
    if let ServiceOptions::Wireguard(o) = &mut s.options {
        o.private_key.clear();
    }
    let ctx = ServiceCtx {
        container: "c",
        run_dir: Path::new("/run/x"),
        network_mode: "host",
    };
    let err = render(&s, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("service wireguard") && err.contains("private key"),
        "{err}"
    );
}

#[test]
fn interface_names_fit_linux() {
    assert_eq!(interface_name("wireguard"), "wg0");
    assert_eq!(interface_name("wg-eu"), "wg-wg-eu");
    let long = interface_name("a-very-long-service-name");
    assert!(long.len() <= 15 && long.starts_with("wg-"), "{long}");
}

#[test]
fn wg_set_command_lines_are_pinned() {
    let (a, b, c) = (
        peer("alice", KEY_A, 2),
        peer("bob", KEY_B, 3),
        peer("carol", "C=", 4),
    );
    let mut b_moved = b.clone();
    b_moved.allowed_ips = vec!["10.66.0.9/32".into()];
    let old = Listed {
        public_key: "OLD=".into(),
        ..listed(&a)
    };
    let p = plan(&[a.clone(), b_moved, c], &[listed(&a), listed(&b), old]);
    assert_eq!(p.removes, ["OLD="]);
    assert_eq!(
        p.adds.iter().map(|p| p.user.as_str()).collect::<Vec<_>>(),
        ["carol"]
    );
    assert_eq!(
        p.updates
            .iter()
            .map(|p| p.user.as_str())
            .collect::<Vec<_>>(),
        ["bob"]
    );
    let cmds = commands("wg0", &p, |i| format!("/run/wg/psk/{i}.psk"));
    let text: String = cmds.iter().map(|c| c.join(" ") + "\n").collect();
    golden("wg_set.txt", &text);
    assert!(!text.contains("psk-"), "no preshared key on a command line");

    assert!(
        plan(std::slice::from_ref(&a), &[listed(&a)]).is_empty(),
        "nothing to do twice"
    );
}

#[test]
fn a_big_plan_is_split_into_bounded_commands() {
    let peers: Vec<Peer> = (0..450)
        .map(|i| peer(&format!("u{i}"), &format!("K{i}="), 2))
        .collect();
    let p = plan(&peers, &[]);
    let cmds = commands("wg0", &p, |i| format!("{i}"));
    assert_eq!(cmds.len(), 3);
    assert!(cmds.iter().all(|c| c[..3] == ["wg", "set", "wg0"]));
}

#[test]
fn dumps_parse_and_bad_ones_name_the_line() {
    let dump = "PRIVATE=\tPUBLIC=\t51820\toff\n\
        hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\tPSK=\t192.0.2.1:40000\t10.66.0.2/32,fd66::2/128\t1700000000\t1234\t5678\toff\n\
        B=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n";
    let peers = parse_dump(dump).unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].allowed_ips, ["10.66.0.2/32", "fd66::2/128"]);
    assert_eq!((peers[0].rx, peers[0].tx), (1234, 5678));
    assert_eq!(peers[1].preshared_key, None);
    assert!(peers[1].allowed_ips.is_empty());
    let err = parse_dump("a\tb\tc\td\nx\ty\n").unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    let err = parse_dump("a\tb\tc\td\nk\tp\te\ti\tnow\t1\t2\toff\n").unwrap_err();
    assert!(err.to_string().contains("latest-handshake"), "{err}");
    assert!(parse_dump("").is_err());
}

#[test]
fn two_users_with_one_address_on_a_host_are_a_named_conflict() {
    let mut state = DesiredState::default();
    state.services.insert("wireguard".into(), service());
    for (name, key) in [("alice", KEY_A), ("bob", KEY_B)] {
        state.users.insert(
            name.into(),
            UserSpec {
                name: name.into(),
                id: format!("id-{name}"),
                credentials: vec![Credential::Wireguard {
                    service: "wireguard".into(),
                    port: 51820,
                    public_key: key.into(),
                    preshared_key: "psk".into(),
                    allowed_ips: vec!["10.66.0.2/32".into()],
                }],
                bandwidth: Bandwidth::default(),
            },
        );
    }
    let (peers, conflicts) = desired_peers(&state, "wireguard");
    assert_eq!(peers.len(), 1);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].resource, "user/bob@wireguard");
}
