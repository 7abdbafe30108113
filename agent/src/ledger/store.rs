//! The ledger's files under `<data_dir>/ledger/` (directory 0700, files 0600):
//!
//! - `ledger.bin`: the magic [`MAGIC`], then framed records, append-only. A frame is the
//!   payload's length (`u32`, little endian), the first 8 bytes of its SHA-256, and the payload
//!   (postcard of a [`Record`]). The first record is always a [`Snapshot`]; each later one is
//!   replayed over it in order. A frame that is short or whose checksum is wrong is a torn tail
//!   (a crash in the middle of a write): it and anything after it are ignored, and the file is
//!   cut back to the last whole record before anything is appended again.
//! - `sent`: 24 bytes rewritten in place (no new blocks, so it works on a full disk): the epoch,
//!   the highest seq ever handed to a session, and a checksum. Only entries above it may be
//!   merged (SPEC §2.6: an entry that was sent may be stored on the controller already).
//!
//! Compaction writes a new snapshot to a temporary file, fsyncs it, renames it over
//! `ledger.bin` and fsyncs the directory ([`vpn_shared::fsutil::write_atomic`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vpn_shared::fsutil::{SECRET_MODE, write_atomic};
use vpn_shared::proto::UsageEntry;

use super::LedgerError;
use super::delta::{Baselines, Change};

/// The first bytes of `ledger.bin`; the digit is the format's version.
pub const MAGIC: &[u8; 8] = b"VPNLEDG1";
const HEADER: usize = 4 + 8;
/// A record larger than this is not one the agent wrote (a frame of 100,000 entries and as
/// many baselines is some 20 MiB).
const MAX_RECORD: usize = 256 << 20;

/// One record of `ledger.bin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The whole ledger: the first record of every file.
    Snapshot(Snapshot),
    /// One reading (or a reset by the agent): its entries and the baseline changes they come
    /// with, in one fsynced write, so an entry and the baseline move it accounts for are on
    /// disk together or not at all.
    Append {
        entries: Vec<UsageEntry>,
        changes: Vec<Change>,
    },
    /// The controller stored every entry up to `up_to` (best effort: a lost one only means a
    /// resend the controller ignores).
    Acked { up_to: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub epoch: u64,
    /// The seq the next entry gets (seqs start at 1).
    pub next_seq: u64,
    pub acked_up_to: u64,
    pub baselines: Baselines,
    /// Unacked entries, ascending seq.
    pub entries: Vec<UsageEntry>,
}

/// The ledger as recovered from disk.
#[derive(Debug)]
pub struct Recovered {
    pub snapshot: Snapshot,
    /// Records after the snapshot, in order.
    pub records: Vec<Record>,
    /// Bytes of whole records; anything after was a torn tail.
    pub good_len: u64,
    pub torn_bytes: u64,
}

pub fn ledger_path(dir: &Path) -> PathBuf {
    dir.join("ledger.bin")
}

pub fn sent_path(dir: &Path) -> PathBuf {
    dir.join("sent")
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> LedgerError + 'a {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let d = ring::digest::digest(&ring::digest::SHA256, payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.as_ref()[..8]);
    out
}

/// One record as its frame.
pub fn frame(record: &Record) -> Result<Vec<u8>, LedgerError> {
    let payload = postcard::to_allocvec(record).map_err(|e| LedgerError::Encode(e.to_string()))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_RECORD)
        .ok_or(LedgerError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend(len.to_le_bytes());
    out.extend(checksum(&payload));
    out.extend(payload);
    Ok(out)
}

/// The records of a file's bytes, up to the first torn or damaged frame.
pub fn parse(bytes: &[u8]) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return (records, 0);
    }
    let mut at = MAGIC.len();
    while let Some(head) = bytes.get(at..at + HEADER) {
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[..4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if head[4..] != checksum(payload) {
            break;
        }
        let Ok(record) = postcard::from_bytes::<Record>(payload) else {
            break;
        };
        records.push(record);
        at += HEADER + len;
    }
    (records, at as u64)
}

/// Reads `ledger.bin`; `Ok(None)` when there is none. A file whose first record is not a
/// whole snapshot is [`LedgerError::Unusable`].
pub fn recover(dir: &Path) -> Result<Option<Recovered>, LedgerError> {
    let path = ledger_path(dir);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io(&path, "reading"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, "opening")(e)),
    };
    let (mut records, good_len) = parse(&bytes);
    let snapshot = match records.first() {
        Some(Record::Snapshot(_)) => match records.remove(0) {
            Record::Snapshot(s) => s,
            _ => return Err(LedgerError::Unusable(path)),
        },
        _ => return Err(LedgerError::Unusable(path)),
    };
    Ok(Some(Recovered {
        snapshot,
        records,
        good_len,
        torn_bytes: bytes.len() as u64 - good_len,
    }))
}

/// Writes a whole new `ledger.bin` holding `snapshot` (atomically) and returns its length.
pub fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<u64, LedgerError> {
    let path = ledger_path(dir);
    let mut bytes = MAGIC.to_vec();
    bytes.extend(frame(&Record::Snapshot(snapshot.clone()))?);
    write_atomic(&path, &bytes, SECRET_MODE).map_err(io(&path, "writing a snapshot"))?;
    Ok(bytes.len() as u64)
}

/// `ledger.bin` open for appending whole frames, cut back to its last whole record.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: File,
    len: u64,
}

impl AppendFile {
    /// Opens the file and cuts it to `good_len` (a torn tail goes before anything follows it).
    pub fn open(dir: &Path, good_len: u64) -> Result<AppendFile, LedgerError> {
        let path = ledger_path(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(SECRET_MODE)
            .open(&path)
            .map_err(io(&path, "opening"))?;
        let mut f = AppendFile {
            path,
            file,
            len: good_len,
        };
        f.cut_back()?;
        Ok(f)
    }

    /// Bytes of whole records (the magic included).
    pub fn bytes(&self) -> u64 {
        self.len
    }

    fn cut_back(&mut self) -> Result<(), LedgerError> {
        let on_disk = self.file.metadata().map_err(io(&self.path, "stat"))?.len();
        if on_disk != self.len {
            self.file
                .set_len(self.len)
                .map_err(io(&self.path, "cutting a torn tail"))?;
            self.file
                .sync_all()
                .map_err(io(&self.path, "fsync after cutting"))?;
        }
        Ok(())
    }

    /// Appends one frame and fsyncs it. On any error the file is cut back to where it was, so
    /// a half-written frame never sits before the next one.
    pub fn append(&mut self, frame: &[u8]) -> Result<(), LedgerError> {
        // A previous failure may have left bytes behind that could not be cut then.
        self.cut_back()?;
        let written = self
            .file
            .write_all_at(frame, self.len)
            .map_err(io(&self.path, "appending"))
            .and_then(|()| self.file.sync_data().map_err(io(&self.path, "fsync")));
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }
}

/// `sent` as read: `None` when missing, damaged or of another epoch.
pub fn read_sent(dir: &Path, epoch: u64) -> Option<u64> {
    let mut buf = [0u8; 24];
    File::open(sent_path(dir)).ok()?.read_exact(&mut buf).ok()?;
    if buf[16..] != checksum(&buf[..16]) {
        return None;
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[i..i + 8]);
        u64::from_le_bytes(w)
    };
    (word(0) == epoch).then(|| word(8))
}

/// Rewrites `sent` in place (created at first) and fsyncs it.
pub fn write_sent(dir: &Path, epoch: u64, up_to: u64) -> Result<(), LedgerError> {
    let path = sent_path(dir);
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&epoch.to_le_bytes());
    buf[8..16].copy_from_slice(&up_to.to_le_bytes());
    let sum = checksum(&buf[..16]);
    buf[16..].copy_from_slice(&sum);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(SECRET_MODE)
        .open(&path)
        .map_err(io(&path, "opening"))?;
    f.write_all_at(&buf, 0).map_err(io(&path, "writing"))?;
    f.flush().map_err(io(&path, "writing"))?;
    f.sync_data().map_err(io(&path, "fsync"))
}
