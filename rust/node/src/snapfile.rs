//! Snapshot files: the engine state at a sequence number, written atomically.
//!
//! A snapshot file holds one [`Snapshot`] of the engine after applying every journal record up
//! to and including `seq`, with the engine's state hash at that point so that recovery can
//! check the restored engine, and the node's last-reference table at that point (the highest
//! `Origin::reference` sequenced per source, see [`crate::references`]). Recovery loads the
//! newest valid snapshot and replays the journal from `seq + 1`.
//!
//! # Files
//!
//! Named `snapshot-{seq:020}.snap` in the snapshot directory (20 digits so that names sort
//! like numbers). Written as `snapshot-{seq:020}.snap.tmp`, synced, renamed into place and
//! the directory synced, so a `.snap` file is always complete; a leftover `.snap.tmp` (a crash
//! mid-write) is ignored by [`list_snapshots`] and deleted by [`remove_stale_temp_files`].
//!
//! All integers are little-endian. Header ([`SNAPSHOT_HEADER_LEN`] = 48 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `BRSS` |
//! | 4 | 4 | file format version, `u32` ([`SNAPSHOT_FILE_VERSION`]) |
//! | 8 | 8 | `seq`, `u64`: the last journal record applied; equals the file name |
//! | 16 | 16 | `state_hash`, `u128`: [`bourse_engine::Engine::state_hash`] at `seq` |
//! | 32 | 8 | `payload_len`, `u64` |
//! | 40 | 4 | CRC-32C of the payload |
//! | 44 | 4 | CRC-32C of header bytes 0..44 |
//!
//! Then the payload: exactly `payload_len` bytes in [postcard](https://docs.rs/postcard) 1.x
//! (a compact, stable serde binary format: varint integers, length-prefixed sequences, no
//! field names), one after the other:
//!
//! 1. the engine's [`Snapshot`];
//! 2. the last-reference table as a `Vec<(u64, u64)>`: a varint count, then that many
//!    `(source, reference)` varint pairs, sources strictly increasing, neither ever 0 (see
//!    [`crate::references::check_entries`]).
//!
//! Nothing may follow the table, and nothing may follow the payload.
//!
//! # Versions
//!
//! * **2** (current): engine snapshot + last-reference table.
//! * **1**: the engine snapshot alone. Refused by this build
//!   ([`SnapshotFileError::UnsupportedVersion`], naming the file), because a table cannot be made up for it: treating it as empty would hand
//!   submitters references they already used. Recovery passes such a file over like any
//!   unreadable snapshot and falls back to an older one or to the journal from seq 1, which
//!   rebuilds the table exactly; if compaction already deleted the records that needs,
//!   recovery stops and names the files it passed over.
//!
//! # Invariants and checks
//!
//! [`read_snapshot`] refuses, with a [`SnapshotFileError::Corrupt`] naming the file: a short
//! header, a bad magic or header CRC, a `seq` different from the file name, a file length
//! other than header + `payload_len`, a payload CRC mismatch, a payload that does not decode
//! or has bytes after the table, and a table that breaks its rules. A header that checks but
//! carries another format version is [`SnapshotFileError::UnsupportedVersion`], naming the
//! file and the version. It does not check that the snapshot describes a valid engine state;
//! that is [`bourse_engine::Engine::from_snapshot`]'s job, and recovery then compares the
//! restored engine's state hash with the one in the header.
//!
//! # Complexity
//!
//! Writing and reading are O(state): one serialization into memory, one sequential write (or
//! read), one CRC pass. [`list_snapshots`] and the removals are O(files in the directory).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bourse_engine::Snapshot;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::references::check_entries;

/// Magic bytes at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"BRSS";
/// Snapshot file format version written and read by this code.
pub const SNAPSHOT_FILE_VERSION: u32 = 2;
/// Bytes in a snapshot file header.
pub const SNAPSHOT_HEADER_LEN: usize = 48;

/// What can go wrong with snapshot files.
#[derive(Debug, Error)]
pub enum SnapshotFileError {
    /// An operating-system call failed.
    #[error("snapshot I/O error: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is damaged or is not a snapshot this build can read.
    #[error("snapshot file {} is corrupt: {reason}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is intact (its header checksum holds) but written in a format version this
    /// build does not read.
    #[error(
        "snapshot file {} has format version {version}, which this build does not read (it \
         reads {SNAPSHOT_FILE_VERSION}){}",
        file.display(),
        version_note(*version)
    )]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Its format version.
        version: u32,
    },
    /// The snapshot could not be serialized.
    #[error("cannot serialize snapshot: {0}")]
    Encode(String),
}

fn version_note(version: u32) -> &'static str {
    if version == 1 {
        ": format 1 has no last-reference table, and one cannot be made up for it"
    } else {
        ""
    }
}

/// Why a header does not decode.
enum HeaderError {
    Corrupt(String),
    Version(u32),
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SnapshotFileError + 'a {
    move |source| SnapshotFileError::Io { op, path: path.to_path_buf(), source }
}

fn corrupt(file: &Path, reason: impl Into<String>) -> SnapshotFileError {
    SnapshotFileError::Corrupt { file: file.to_path_buf(), reason: reason.into() }
}

/// One snapshot file in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The last journal record it includes (from its name).
    pub seq: u64,
    /// Its path.
    pub path: PathBuf,
}

/// The header of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The last journal record applied.
    pub seq: u64,
    /// The engine's state hash then.
    pub state_hash: u128,
    /// Bytes of payload.
    pub payload_len: u64,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
}

impl SnapshotHeader {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut h = [0u8; SNAPSHOT_HEADER_LEN];
        h[0..4].copy_from_slice(&SNAPSHOT_MAGIC);
        h[4..8].copy_from_slice(&SNAPSHOT_FILE_VERSION.to_le_bytes());
        h[8..16].copy_from_slice(&self.seq.to_le_bytes());
        h[16..32].copy_from_slice(&self.state_hash.to_le_bytes());
        h[32..40].copy_from_slice(&self.payload_len.to_le_bytes());
        h[40..44].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..44]);
        h[44..48].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn decode(h: &[u8], path: &Path) -> Result<SnapshotHeader, SnapshotFileError> {
        SnapshotHeader::decode_inner(h).map_err(|e| match e {
            HeaderError::Corrupt(reason) => corrupt(path, reason),
            HeaderError::Version(version) => {
                SnapshotFileError::UnsupportedVersion { file: path.to_path_buf(), version }
            }
        })
    }

    fn decode_inner(h: &[u8]) -> Result<SnapshotHeader, HeaderError> {
        if h.len() < SNAPSHOT_HEADER_LEN {
            return Err(HeaderError::Corrupt(format!(
                "header truncated: {} of {SNAPSHOT_HEADER_LEN} bytes",
                h.len()
            )));
        }
        if h[0..4] != SNAPSHOT_MAGIC {
            return Err(HeaderError::Corrupt(format!(
                "bad magic {:02x?}, expected \"BRSS\"",
                &h[0..4]
            )));
        }
        let le32 = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let le64 = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let stored = le32(44);
        let crc = crc32c::crc32c(&h[0..44]);
        if stored != crc {
            return Err(HeaderError::Corrupt(format!(
                "header checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
            )));
        }
        let version = le32(4);
        if version != SNAPSHOT_FILE_VERSION {
            return Err(HeaderError::Version(version));
        }
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&h[16..32]);
        Ok(SnapshotHeader {
            seq: le64(8),
            state_hash: u128::from_le_bytes(hash),
            payload_len: le64(32),
            payload_crc: le32(40),
        })
    }
}

/// The file name of the snapshot at `seq`.
pub fn snapshot_file_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// The payload as written (borrowed).
#[derive(Serialize)]
struct PayloadRef<'a> {
    engine: &'a Snapshot,
    last_references: &'a [(u64, u64)],
}

/// The payload as read.
#[derive(Deserialize)]
struct Payload {
    engine: Snapshot,
    last_references: Vec<(u64, u64)>,
}

/// What a snapshot file holds, as [`read_snapshot`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotContents {
    /// The last journal record applied.
    pub seq: u64,
    /// The engine's state hash at `seq`.
    pub state_hash: u128,
    /// The engine state.
    pub snapshot: Snapshot,
    /// The last-reference table at `seq`: `(source, reference)`, sources strictly increasing.
    pub last_references: Vec<(u64, u64)>,
}

/// Serialize an engine snapshot and a last-reference table (in increasing source order, as
/// [`check_entries`] requires) into the payload format.
pub fn encode_snapshot(
    snapshot: &Snapshot,
    last_references: &[(u64, u64)],
) -> Result<Vec<u8>, SnapshotFileError> {
    check_entries(last_references).map_err(SnapshotFileError::Encode)?;
    postcard::to_stdvec(&PayloadRef { engine: snapshot, last_references })
        .map_err(|e| SnapshotFileError::Encode(e.to_string()))
}

/// Write the snapshot of the state after record `seq`, with its `state_hash` and the
/// last-reference table then (`(source, reference)` in increasing source order), atomically
/// into `dir` (created if missing): `.tmp` file → header + payload → `fsync` → rename →
/// `fsync` the directory. Returns the final path. Replaces an existing snapshot at the same
/// `seq`.
///
/// Needs no engine: it can run on a background thread while the engine goes on.
pub fn write_snapshot(
    dir: &Path,
    seq: u64,
    state_hash: u128,
    snapshot: &Snapshot,
    last_references: &[(u64, u64)],
) -> Result<PathBuf, SnapshotFileError> {
    let payload = encode_snapshot(snapshot, last_references)?;
    write_snapshot_payload(dir, seq, state_hash, &payload)
}

/// [`write_snapshot`] for an already serialized payload ([`encode_snapshot`]).
pub fn write_snapshot_payload(
    dir: &Path,
    seq: u64,
    state_hash: u128,
    payload: &[u8],
) -> Result<PathBuf, SnapshotFileError> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let header = SnapshotHeader {
        seq,
        state_hash,
        payload_len: payload.len() as u64,
        payload_crc: crc32c::crc32c(payload),
    };
    let path = dir.join(snapshot_file_name(seq));
    let tmp = dir.join(format!("{}.tmp", snapshot_file_name(seq)));
    let write = || -> io::Result<()> {
        let mut f = crate::journal::create_private(&tmp)?;
        f.write_all(&header.encode())?;
        f.write_all(payload)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(SnapshotFileError::Io { op: "write snapshot", path: tmp, source: e });
    }
    std::fs::rename(&tmp, &path).map_err(io_err("rename snapshot", &tmp))?;
    sync_dir(dir)?;
    Ok(path)
}

/// The snapshots in `dir`, oldest first. Only complete files (`snapshot-{seq:020}.snap`) are
/// listed; `.tmp` files and other names are ignored. A missing directory has none.
pub fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotInfo>, SnapshotFileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_name) {
            out.push(SnapshotInfo { seq, path: entry.path() });
        }
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Read and check a snapshot file's header only.
pub fn read_snapshot_header(path: &Path) -> Result<SnapshotHeader, SnapshotFileError> {
    let mut f = File::open(path).map_err(io_err("open snapshot", path))?;
    let mut h = Vec::with_capacity(SNAPSHOT_HEADER_LEN);
    (&mut f)
        .take(SNAPSHOT_HEADER_LEN as u64)
        .read_to_end(&mut h)
        .map_err(io_err("read snapshot", path))?;
    SnapshotHeader::decode(&h, path)
}

/// Read a snapshot file and check it (see the [module docs](self#invariants-and-checks)).
pub fn read_snapshot(path: &Path) -> Result<SnapshotContents, SnapshotFileError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err("read snapshot", path))?;
    let header = SnapshotHeader::decode(&bytes, path)?;
    if let Some(seq) = path.file_name().and_then(|n| n.to_str()).and_then(parse_name) {
        if seq != header.seq {
            return Err(corrupt(
                path,
                format!("header says seq {}, the file name says {seq}", header.seq),
            ));
        }
    }
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() as u64 != header.payload_len {
        return Err(corrupt(
            path,
            format!("payload is {} bytes, the header says {}", payload.len(), header.payload_len),
        ));
    }
    let crc = crc32c::crc32c(payload);
    if crc != header.payload_crc {
        return Err(corrupt(
            path,
            format!(
                "payload checksum mismatch: stored {:#010x}, computed {crc:#010x}",
                header.payload_crc
            ),
        ));
    }
    let (decoded, rest) = postcard::take_from_bytes::<Payload>(payload).map_err(|e| {
        corrupt(path, format!("payload has a good checksum but does not decode: {e}"))
    })?;
    if !rest.is_empty() {
        return Err(corrupt(
            path,
            format!("payload has a good checksum but {} bytes follow the table", rest.len()),
        ));
    }
    check_entries(&decoded.last_references).map_err(|r| corrupt(path, r))?;
    Ok(SnapshotContents {
        seq: header.seq,
        state_hash: header.state_hash,
        snapshot: decoded.engine,
        last_references: decoded.last_references,
    })
}

/// Delete all but the newest `keep` snapshots in `dir` (oldest first), then `fsync` the
/// directory. Returns the deleted paths. `.tmp` files are left alone (one may be being
/// written); see [`remove_stale_temp_files`].
pub fn remove_snapshots_except_newest(
    dir: &Path,
    keep: usize,
) -> Result<Vec<PathBuf>, SnapshotFileError> {
    let snaps = list_snapshots(dir)?;
    let n = snaps.len().saturating_sub(keep);
    let mut removed = Vec::with_capacity(n);
    for s in &snaps[..n] {
        std::fs::remove_file(&s.path).map_err(io_err("remove snapshot", &s.path))?;
        removed.push(s.path.clone());
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Delete leftover `*.snap.tmp` files (snapshots a crash interrupted). Call at start-up,
/// before any snapshot is being written. Returns the deleted paths.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>, SnapshotFileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".snap.tmp"))
        {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err("remove temp snapshot", &path))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    removed.sort();
    Ok(removed)
}

/// A snapshot loaded by [`load_newest_snapshot`].
#[derive(Debug)]
pub struct LoadedSnapshot {
    /// Its file.
    pub path: PathBuf,
    /// The last journal record it includes.
    pub seq: u64,
    /// The engine's state hash at `seq`.
    pub state_hash: u128,
    /// The state.
    pub snapshot: Snapshot,
    /// The last-reference table at `seq` (sources strictly increasing).
    pub last_references: Vec<(u64, u64)>,
}

/// Load the newest snapshot in `dir` that reads and checks cleanly (`None` if there is none),
/// trying older ones when a newer one is damaged. Also returns the newer files that failed,
/// newest first, with why, so the caller can log them or refuse to go on.
///
/// Falling back to an older snapshot is only sound if the journal still holds every record
/// after it, which compaction must allow for (compact only up to the oldest snapshot kept).
#[allow(clippy::type_complexity)]
pub fn load_newest_snapshot(
    dir: &Path,
) -> Result<(Option<LoadedSnapshot>, Vec<(PathBuf, SnapshotFileError)>), SnapshotFileError> {
    let mut skipped = Vec::new();
    for info in list_snapshots(dir)?.into_iter().rev() {
        match read_snapshot(&info.path) {
            Ok(SnapshotContents { seq, state_hash, snapshot, last_references }) => {
                let loaded =
                    LoadedSnapshot { path: info.path, seq, state_hash, snapshot, last_references };
                return Ok((Some(loaded), skipped));
            }
            Err(e) => skipped.push((info.path, e)),
        }
    }
    Ok((None, skipped))
}
