//! WireGuard links: a `.conf` is many lines, so `--conf` prints it verbatim, `table` as a titled
//! block, and `--qr` encodes all of it.

use vpn_shared::model::Protocol;
use vpn_shared::proto::admin::{AdminResponse, LinkInfo};

use super::{opts, show};
use crate::cli::Format;
use crate::render::artefacts;

const CONF: &str = "[Interface]\nPrivateKey = cHJpdmF0ZQ==\nAddress = 10.66.0.2/32\n\n\
    [Peer]\nPublicKey = cHVibGlj\nPresharedKey = cHNr\nEndpoint = 203.0.113.7:51820\n\
    AllowedIPs = 0.0.0.0/0, ::/0\n";

fn confs(n: usize) -> AdminResponse {
    AdminResponse::Links(
        ["fra-1", "ams-2"][..n]
            .iter()
            .map(|s| LinkInfo {
                server: (*s).into(),
                service: "wireguard".into(),
                protocol: Protocol::Wireguard,
                url: CONF.into(),
            })
            .collect(),
    )
}

#[test]
fn conf_prints_the_artefacts_verbatim_separated_by_a_blank_line() {
    let one = artefacts(&confs(1), &opts(Format::Table)).unwrap();
    assert_eq!(one, CONF);
    let two = artefacts(&confs(2), &opts(Format::Table)).unwrap();
    assert_eq!(two, format!("{CONF}\n{CONF}"));
}

#[test]
fn a_conf_in_a_table_is_a_titled_block_and_its_qr_encodes_it_whole() {
    let out = show(&confs(2), &opts(Format::Table));
    assert!(
        out.starts_with("fra-1 wireguard (wireguard)\n[Interface]\n"),
        "{out}"
    );
    assert!(
        out.contains("ams-2 wireguard (wireguard)\n[Interface]\n"),
        "{out}"
    );
    let mut qr = opts(Format::Table);
    qr.qr = true;
    let out = show(&confs(1), &qr);
    assert!(out.contains(CONF), "{out}");
    assert!(out.contains('▀') || out.contains('▄'), "no QR code:\n{out}");
}
