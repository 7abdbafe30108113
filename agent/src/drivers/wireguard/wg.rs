//! The pure half of peer changes: what `wg show IF dump` says, which peers to remove, add or
//! update, and the `wg set` command lines that do it. No IO here.
//!
//! Peers only ever change one by one (`wg set IF peer KEY …` / `peer KEY remove`), never with a
//! whole-interface `setconf`/`syncconf`, so peers that did not change keep their session and
//! counters (SPEC §2.3, the DefGuard issue in §5).

use std::collections::{BTreeMap, BTreeSet};

/// One desired peer: a user's public key, preshared key and allowed IPs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub user: String,
    pub public_key: String,
    pub preshared_key: String,
    pub allowed_ips: Vec<String>,
}

/// One peer as `wg show IF dump` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub public_key: String,
    /// `None` when the dump says `(none)`.
    pub preshared_key: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds of the latest handshake, 0 when none yet.
    pub latest_handshake: u64,
    /// Bytes received from the peer (the user's upload).
    pub rx: u64,
    /// Bytes sent to the peer (the user's download).
    pub tx: u64,
}

/// Why a dump could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("wg show dump line {line}: expected {expected} tab-separated fields, got {got}")]
    Fields {
        line: usize,
        expected: usize,
        got: usize,
    },
    #[error("wg show dump line {line}: {field} {value:?} is not a number")]
    Number {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("wg show dump is empty")]
    Empty,
}

/// Parses `wg show IF dump`: the interface line (private key, public key, listen port, fwmark)
/// then one line per peer (public key, preshared key, endpoint, allowed ips, latest handshake,
/// rx, tx, persistent keepalive). Returns the peers; the interface line is checked only for
/// its shape (it holds the private key, which is never kept or logged).
pub fn parse_dump(dump: &str) -> Result<Vec<Listed>, DumpError> {
    let mut lines = dump
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or(DumpError::Empty)?;
    let got = first.split('\t').count();
    if got != 4 {
        return Err(DumpError::Fields {
            line: 1,
            expected: 4,
            got,
        });
    }
    let mut peers = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 8 {
            return Err(DumpError::Fields {
                line: i + 1,
                expected: 8,
                got: f.len(),
            });
        }
        let num = |field: &'static str, value: &str| {
            value.parse::<u64>().map_err(|_| DumpError::Number {
                line: i + 1,
                field,
                value: value.to_owned(),
            })
        };
        peers.push(Listed {
            public_key: f[0].to_owned(),
            preshared_key: (f[1] != "(none)").then(|| f[1].to_owned()),
            allowed_ips: split_ips(f[3]),
            latest_handshake: num("latest-handshake", f[4])?,
            rx: num("transfer-rx", f[5])?,
            tx: num("transfer-tx", f[6])?,
        });
    }
    Ok(peers)
}

fn split_ips(s: &str) -> Vec<String> {
    if s == "(none)" {
        return Vec::new();
    }
    s.split(',').map(|ip| ip.trim().to_owned()).collect()
}

/// Peer changes that bring the listed peers to the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Public keys of peers to remove: not desired any more.
    pub removes: Vec<String>,
    /// Peers that are not on the interface: added, their counters start from zero.
    pub adds: Vec<Peer>,
    /// Peers on the interface with another preshared key or other allowed IPs: changed in
    /// place, their session and counters kept.
    pub updates: Vec<Peer>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.adds.is_empty() && self.updates.is_empty()
    }
}

/// Compares by public key; preshared keys and allowed IPs (as sets) decide an update.
pub fn plan(desired: &[Peer], listed: &[Listed]) -> Plan {
    let on: BTreeMap<&str, &Listed> = listed.iter().map(|l| (l.public_key.as_str(), l)).collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.public_key.as_str()).collect();
    let mut plan = Plan {
        removes: on
            .keys()
            .filter(|k| !wanted.contains(*k))
            .map(|k| (*k).to_owned())
            .collect(),
        ..Plan::default()
    };
    for d in desired {
        match on.get(d.public_key.as_str()) {
            None => plan.adds.push(d.clone()),
            Some(l) => {
                let same_ips = l.allowed_ips.iter().collect::<BTreeSet<_>>()
                    == d.allowed_ips.iter().collect::<BTreeSet<_>>();
                if !same_ips || l.preshared_key.as_deref() != Some(d.preshared_key.as_str()) {
                    plan.updates.push(d.clone());
                }
            }
        }
    }
    plan
}

/// Most peers changed by one `wg set` (its argument list stays far below the kernel's limit).
pub const PEERS_PER_COMMAND: usize = 200;

/// The `wg set` command lines of a plan: removes first (an address handed from a removed user
/// to a new one is free on the interface before it is claimed), then adds and updates. Each
/// added or updated peer reads its preshared key from the file `psk_path(i)` names, `i`
/// counting those peers from 0, so no key is on a command line.
pub fn commands(iface: &str, plan: &Plan, psk_path: impl Fn(usize) -> String) -> Vec<Vec<String>> {
    let mut words: Vec<Vec<String>> = Vec::new();
    for key in &plan.removes {
        words.push(vec!["peer".into(), key.clone(), "remove".into()]);
    }
    for (i, p) in plan.adds.iter().chain(&plan.updates).enumerate() {
        let ips = if p.allowed_ips.is_empty() {
            // `wg` clears a peer's allowed IPs with an empty list.
            String::new()
        } else {
            p.allowed_ips.join(",")
        };
        words.push(vec![
            "peer".into(),
            p.public_key.clone(),
            "preshared-key".into(),
            psk_path(i),
            "allowed-ips".into(),
            ips,
        ]);
    }
    words
        .chunks(PEERS_PER_COMMAND)
        .map(|chunk| {
            let mut cmd = vec!["wg".to_owned(), "set".to_owned(), iface.to_owned()];
            cmd.extend(chunk.iter().flatten().cloned());
            cmd
        })
        .collect()
}
