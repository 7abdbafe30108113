use super::*;

/// RFC 7748 §6.1 Alice's pair in the standard base64 `wg pubkey` reads and prints.
const RFC7748_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
const RFC7748_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

#[test]
fn derives_the_rfc7748_public_key_in_standard_base64() {
    assert_eq!(
        public_key_from_private(RFC7748_PRIVATE).unwrap(),
        RFC7748_PUBLIC
    );
}

#[test]
fn generated_keys_are_44_characters_of_padded_base64_and_belong_together() {
    let a = generate_key_pair().unwrap();
    let b = generate_key_pair().unwrap();
    assert_ne!(a.private_key, b.private_key);
    assert_eq!(a.private_key.len(), 44);
    assert!(a.private_key.ends_with('='));
    assert_eq!(
        public_key_from_private(&a.private_key).unwrap(),
        a.public_key
    );
    let psk = generate_preshared_key().unwrap();
    assert_eq!(decode_key(&psk).unwrap().len(), KEY_LEN);
    assert!(!format!("{a:?}").contains(&a.private_key), "debug redacts");
    assert_eq!(decode_key("not base64"), Err(WireguardError::Key));
    assert_eq!(decode_key("AAAA"), Err(WireguardError::Key));
}

#[test]
fn subnets_parse_and_refuse_what_cannot_hold_a_server_and_a_peer() {
    let s = Subnet::parse("10.66.0.0/16").unwrap();
    assert_eq!(s.to_string(), "10.66.0.0/16");
    assert_eq!(s.server_address().to_string(), "10.66.0.1");
    assert_eq!(s.nth(2).unwrap().to_string(), "10.66.0.2");
    assert_eq!(s.last_peer_index(), 65534);
    let v6 = Subnet::parse("fd66::/64").unwrap();
    assert_eq!(v6.server_address().to_string(), "fd66::1");
    assert_eq!(Subnet::parse("10.66.0.0/30").unwrap().last_peer_index(), 2);
    for (bad, reason) in [
        ("10.66.0.0", "expected ADDRESS/PREFIX"),
        ("10.66.0.1/16", "host bits are set"),
        ("10.66.0.0/33", "prefix longer than 32 bits"),
        ("10.66.0.0/31", "too small for a server and a peer"),
        ("ten/8", "not an IP address"),
        ("10.0.0.0/x", "prefix is not a number"),
    ] {
        let err = Subnet::parse(bad).unwrap_err().to_string();
        assert!(err.contains(reason), "{bad}: {err}");
        assert!(err.contains(bad), "{bad}: {err}");
    }
    assert_eq!(s.index_of("10.66.1.0".parse().unwrap()), Some(256));
    assert_eq!(s.index_of("10.67.0.1".parse().unwrap()), None);
    assert_eq!(s.index_of("fd66::1".parse().unwrap()), None);
}

#[test]
fn the_allocator_takes_the_lowest_free_index_and_never_a_held_one() {
    let subnet = Subnet::parse("10.66.0.0/16").unwrap();
    let mut a = Allocator::new("wg", subnet, [2, 3, 5]);
    assert_eq!(a.allocate().unwrap(), 4);
    assert_eq!(a.allocate().unwrap(), 6);
    a.release(3);
    assert_eq!(a.allocate().unwrap(), 3, "freed only by a release");
    assert_eq!(a.allocate().unwrap(), 7);
}

#[test]
fn exhaustion_is_an_error_naming_the_service_and_the_subnet() {
    let subnet = Subnet::parse("10.66.0.0/29").unwrap(); // .2 ..= .6 for peers
    let mut a = Allocator::new("wg-eu", subnet, []);
    let got: Vec<u128> = (0..5).map(|_| a.allocate().unwrap()).collect();
    assert_eq!(got, [2, 3, 4, 5, 6]);
    let err = a.allocate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free tunnel address left in subnet 10.66.0.0/29 of service wg-eu"
    );
    assert!(a.allocate().is_err(), "stays exhausted, no panic");
}

#[test]
fn peer_addresses_use_the_same_index_in_both_subnets() {
    let v4 = Subnet::parse("10.66.0.0/16").unwrap();
    let v6 = Subnet::parse("fd66::/112").unwrap();
    let got = peer_addresses("wg", &v4, Some(&v6), 258).unwrap();
    let got: Vec<String> = got.iter().map(|a| Subnet::host_route(*a)).collect();
    assert_eq!(got, ["10.66.1.2/32", "fd66::102/128"]);
    let small = Subnet::parse("fd66::/120").unwrap();
    let err = peer_addresses("wg", &v4, Some(&small), 300).unwrap_err();
    assert!(err.to_string().contains("fd66::/120"), "{err}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever was held before and whatever is released between, two holders never share
        /// an index and every index stays inside the subnet's peer range.
        #[test]
        fn two_holders_never_share_an_index(
            held in proptest::collection::btree_set(2u128..60, 0..40),
            ops in proptest::collection::vec(any::<Option<u8>>(), 1..80),
        ) {
            let subnet = Subnet::parse("10.0.0.0/26").unwrap();
            let mut a = Allocator::new("wg", subnet, held.iter().copied());
            let mut holding: BTreeSet<u128> = held.clone();
            for op in ops {
                match op {
                    None => match a.allocate() {
                        Ok(i) => {
                            prop_assert!(holding.insert(i), "{i} handed out twice");
                            prop_assert!((FIRST_PEER_INDEX..=subnet.last_peer_index()).contains(&i));
                        }
                        Err(_) => prop_assert_eq!(holding.len() as u128, subnet.last_peer_index() - 1),
                    },
                    Some(k) => {
                        if let Some(&i) = holding.iter().nth(usize::from(k) % holding.len().max(1)) {
                            holding.remove(&i);
                            a.release(i);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_client_conf_renders_to_its_golden_text() {
    let conf = ClientConf {
        private_key: RFC7748_PRIVATE.into(),
        addresses: vec!["10.66.0.2/32".into(), "fd66::2/128".into()],
        dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
        mtu: Some(1380),
        server_public_key: RFC7748_PUBLIC.into(),
        preshared_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        endpoint: endpoint("2001:db8::1", 51820),
    };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wireguard/golden/client.conf");
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, conf.render()).unwrap();
    }
    assert_eq!(conf.render(), std::fs::read_to_string(&path).unwrap());
    assert!(
        !format!("{conf:?}").contains(RFC7748_PRIVATE),
        "debug redacts"
    );
    let bare = ClientConf {
        dns: vec![],
        mtu: None,
        endpoint: endpoint("vpn.example.com", 1),
        ..conf
    };
    assert!(!bare.render().contains("DNS"));
    assert!(bare.render().contains("Endpoint = vpn.example.com:1\n"));
}
