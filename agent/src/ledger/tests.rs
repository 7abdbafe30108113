use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use super::delta::{Baselines, Count, Now, Reading, Reset};
use super::*;

fn now(secs: u64) -> Now {
    Now {
        unix_ms: 1_700_000_000_000 + i64::try_from(secs * 1000).unwrap(),
        mono: Duration::from_secs(secs),
    }
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ss(users: &[(&str, u64)]) -> Reading {
    Reading {
        service: "ss".into(),
        uptime: None,
        users: users
            .iter()
            .map(|(u, t)| ((*u).to_owned(), Count::Total(*t)))
            .collect(),
    }
}

fn read(l: &mut Ledger, users: &[(&str, u64)], at: u64) -> Result<Appended, LedgerError> {
    let ids: Vec<&str> = users.iter().map(|(u, _)| *u).collect();
    l.record(&[ss(users)], &names(&["ss"]), &names(&ids), now(at))
}

/// A ledger whose `ss` container the agent created (so every byte counts).
fn fresh(dir: &Path, limits: Limits) -> Ledger {
    let mut l = Ledger::open(dir, limits).unwrap();
    l.reset([Reset::Service("ss".into())].into(), now(0));
    l
}

fn total(l: &Ledger) -> u64 {
    l.entries().map(UsageEntry::total).sum()
}

/// Baselines as they come back from disk (the monotonic clock is not kept).
fn persisted(b: &Baselines) -> Baselines {
    let mut b = b.clone();
    for s in b.services.values_mut() {
        s.read_mono = None;
    }
    b
}

#[test]
fn a_reopened_ledger_keeps_its_epoch_seqs_and_baselines_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = fresh(dir.path(), Limits::default());
    let epoch = l.epoch();
    read(&mut l, &[("alice", 100), ("bob", 0)], 10).unwrap();
    read(&mut l, &[("alice", 250), ("bob", 40)], 20).unwrap();
    let seqs: Vec<u64> = l.entries().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let baselines = persisted(l.baselines());
    drop(l);

    let ledger_dir = dir.path().join("ledger");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ledger_dir), 0o700);
    assert_eq!(mode(&store::ledger_path(&ledger_dir)), 0o600);
    assert_eq!(mode(&store::sent_path(&ledger_dir)), 0o600);

    // The agent restarted: same ledger, and the counters it read before are not read again.
    let mut l = Ledger::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(l.epoch(), epoch);
    assert_eq!(l.backlog(), 3);
    assert_eq!(persisted(l.baselines()), baselines);
    read(&mut l, &[("alice", 260), ("bob", 40)], 30).unwrap();
    let last = l.entries().last().unwrap();
    assert_eq!(
        (last.seq, last.user.as_str(), last.undirected),
        (4, "alice", 10)
    );
    assert_eq!(total(&l), 260 + 40);
}

#[test]
fn a_torn_tail_record_is_ignored_and_cut_before_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = fresh(dir.path(), Limits::default());
    read(&mut l, &[("alice", 100)], 10).unwrap();
    let good = l.file_len();
    let baselines = persisted(l.baselines());
    drop(l);
    // A crash in the middle of the next write: half a frame at the end.
    let path = store::ledger_path(&dir.path().join("ledger"));
    let record = Record::Append {
        entries: Vec::new(),
        changes: Vec::new(),
    };
    let frame = store::frame(&record).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(&frame[..frame.len() - 1]);
    std::fs::write(&path, &bytes).unwrap();

    let mut l = Ledger::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(l.file_len(), good);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "cut back");
    assert_eq!(persisted(l.baselines()), baselines);
    read(&mut l, &[("alice", 150)], 20).unwrap();
    drop(l);
    let l = Ledger::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(total(&l), 150, "the record after the cut is read back");

    // A file that is not a ledger at all is moved aside; a new epoch begins.
    std::fs::write(&path, b"garbage").unwrap();
    let again = Ledger::open(dir.path(), Limits::default()).unwrap();
    assert_ne!(again.epoch(), l.epoch());
    assert_eq!(again.backlog(), 0);
    let aside = std::fs::read_dir(dir.path().join("ledger"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn acked_entries_leave_and_the_file_is_rewritten_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        compact_acked: 3,
        ..Limits::default()
    };
    let mut l = fresh(dir.path(), limits);
    for i in 1..=5u64 {
        read(&mut l, &[("alice", i * 100)], i * 10).unwrap();
    }
    let batch = l.next_batch(MAX_BATCH).unwrap();
    assert_eq!(batch.epoch, l.epoch());
    assert_eq!(batch.entries.len(), 5);
    assert!(batch.entries.windows(2).all(|w| w[0].seq < w[1].seq));
    let grown = l.file_len();
    // Another ledger's ack (one lost and made again) changes nothing.
    assert_eq!(l.ack(l.epoch() ^ 1, 5), 0);
    assert_eq!(l.backlog(), 5);
    assert_eq!(l.ack(l.epoch(), 2), 2);
    assert_eq!(l.ack(l.epoch(), 4), 2);
    assert!(l.file_len() < grown, "rewritten once 3 were acked");
    assert_eq!(l.entries().map(|e| e.seq).collect::<Vec<_>>(), [5]);
    drop(l);
    let mut l = Ledger::open(dir.path(), limits).unwrap();
    assert_eq!(l.backlog(), 1);
    // Resent from the oldest unacked after a reconnect.
    assert_eq!(l.next_batch(MAX_BATCH).unwrap().entries[0].seq, 5);
    // An ack that is only recorded (not compacted) survives a reopen too.
    assert_eq!(l.ack(l.epoch(), 5), 1);
    drop(l);
    let l = Ledger::open(dir.path(), limits).unwrap();
    assert_eq!(l.backlog(), 0);
}

#[test]
fn only_entries_never_sent_merge_and_the_merged_one_takes_the_highest_seq() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_entries: 6,
        ..Limits::default()
    };
    let mut l = fresh(dir.path(), limits);
    let mut counter = 0;
    let mut tick = |l: &mut Ledger, at: u64| {
        counter += 10;
        read(l, &[("alice", counter), ("bob", counter)], at).unwrap();
    };
    tick(&mut l, 10);
    // seqs 1 and 2 go to the controller; its ack is lost with the connection.
    assert_eq!(l.next_batch(MAX_BATCH).unwrap().entries.len(), 2);
    for at in [20, 30, 40] {
        tick(&mut l, at);
    }
    // Eight entries, past the bound of 6: merged at once.
    assert_eq!(l.backlog(), 7);
    let seqs: Vec<(u64, String, u64)> = l
        .entries()
        .map(|e| (e.seq, e.user.clone(), e.undirected))
        .collect();
    // Unsent were 3..=8; their older half (3, 4, 5) merged per user: alice 3+5, bob 4.
    assert_eq!(
        seqs,
        [
            (1, "alice".into(), 10),
            (2, "bob".into(), 10),
            (4, "bob".into(), 10),
            (5, "alice".into(), 20),
            (6, "bob".into(), 10),
            (7, "alice".into(), 10),
            (8, "bob".into(), 10),
        ]
    );
    assert_eq!(total(&l), 80, "merging moves no byte");
    drop(l);
    // The sent mark is on disk: after a restart, seqs 1 and 2 still never merge.
    let l = Ledger::open(dir.path(), limits).unwrap();
    assert_eq!(
        l.entries().take(2).map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(l.sent_up_to, 2);
}

/// A tmpfs of 64 KiB, unmounted on drop.
struct TinyDisk(tempfile::TempDir);

impl TinyDisk {
    fn mount() -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).output();
    }
}

#[test]
fn a_full_disk_is_a_reported_error_and_the_bytes_are_counted_once_it_has_room() {
    let disk = TinyDisk::mount();
    let mut l = fresh(disk.0.path(), Limits::default());
    read(&mut l, &[("alice", 100)], 10).unwrap();
    assert_eq!(l.result(), ResourceResult::ok(LEDGER_RESOURCE));
    let before = persisted(l.baselines());
    // Something else fills the disk.
    let filler = disk.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 << 10]);

    // A reading of many users: its record needs a new page of the file system.
    let many: Vec<(String, u64)> = (0..300).map(|i| (format!("user-{i:04}"), 1)).collect();
    let mut users: Vec<(&str, u64)> = many.iter().map(|(u, n)| (u.as_str(), *n)).collect();
    users.push(("alice", 4_000));
    let err = read(&mut l, &users, 20).unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(l.backlog(), 1, "no entry without its record");
    assert_eq!(persisted(l.baselines()), before, "baseline unmoved");
    let result = l.result();
    assert_eq!(result.resource, "host/ledger");
    assert!(
        matches!(&result.outcome, vpn_shared::proto::Outcome::Error(e) if e.contains("No space left")),
        "{result:?}"
    );
    // A reset the applier reports meanwhile is kept for the next record.
    l.reset(
        [Reset::User {
            service: "ss".into(),
            user: "bob".into(),
        }]
        .into(),
        now(21),
    );
    assert!(
        l.next_batch(MAX_BATCH).is_some(),
        "the sent mark is rewritten in place"
    );

    std::fs::remove_file(&filler).unwrap();
    users.pop();
    users.extend([("alice", 4_100), ("bob", 7)]);
    read(&mut l, &users, 30).unwrap();
    assert_eq!(l.result(), ResourceResult::ok(LEDGER_RESOURCE));
    assert_eq!(total(&l), 4_100 + 300 + 7, "counted once, late, not lost");
    drop(l);
    let l = Ledger::open(disk.0.path(), Limits::default()).unwrap();
    assert_eq!(total(&l), 4_407);
}
