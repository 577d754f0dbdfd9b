//! The journal: the write-ahead log of sequenced commands.
//!
//! Every command the sequencer orders is appended here, with its sequence number and the
//! timestamp the sequencer stamped on it, before anything about it leaves the process. The
//! journal is the source of truth: the engine state is a pure function of the records in it
//! (plus, after compaction, the snapshot they continue from).
//!
//! * [`JournalWriter`]: appends records into an in-memory batch and group-commits it (one
//!   `write(2)` and at most one `fdatasync(2)` per batch), rolling to a new segment file when
//!   the current one is full.
//! * [`read_journal`] / [`JournalReader`]: an iterator over validated [`Record`]s from any
//!   sequence number onward.
//! * [`recover_journal`] / [`recover_journal_from`]: the recovery scan. Validates every
//!   segment, truncates a torn tail (see [the rule](#the-recovery-rule)) and reports where the
//!   journal ends.
//! * [`remove_segments_before`]: compaction after a snapshot.
//! * [`fsync_latency`] / [`replay_speed`]: benchmark helpers for `bourse bench`.
//!
//! # Files
//!
//! A journal is a directory of segment files named `{first_seq:020}.journal` (the sequence
//! number of the segment's first record, zero-padded to 20 digits so that names sort like
//! numbers). Other names are ignored, except that a `*.journal` name that is not 20 digits is
//! corruption. A segment is created as `{first_seq:020}.journal.tmp`, given its header, synced
//! and renamed into place, so a segment file either does not exist or has a complete header;
//! leftover `.journal.tmp` files are ignored by readers and deleted by a truncating recovery.
//!
//! All integers are little-endian.
//!
//! Segment header ([`SEGMENT_HEADER_LEN`] = 20 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `BRSJ` |
//! | 4 | 4 | format version, `u32` ([`JOURNAL_VERSION`]) |
//! | 8 | 8 | `first_seq`, `u64`: the sequence number of the first record; equals the file name |
//! | 16 | 4 | CRC-32C of bytes 0..16 |
//!
//! Then records, back to back, until the end of the file or until **zero padding** (below):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `body_len`, `u32`: bytes in the body, [`MIN_BODY_LEN`]..=[`MAX_BODY_LEN`] |
//! | 4 | 4 | CRC-32C (Castagnoli) of the body |
//! | 8 | 8 | body: `seq`, `u64` |
//! | 16 | 8 | body: `timestamp_ns`, `u64` (stamped by the sequencer) |
//! | 24 | 8 | body: `origin.source`, `u64`: who submitted it (e.g. an API key id; 0: unnamed) |
//! | 32 | 8 | body: `origin.reference`, `u64`: the submitter's own reference (e.g. a client ref) |
//! | 40 | `body_len - 32` | body: the command, [`Command::encode`] |
//!
//! # Preallocated segments
//!
//! With [`JournalConfig::preallocate`] (under [`Durability::Fsync`], the one policy that
//! syncs per commit) every segment is zero-filled to `segment_bytes` and synced *before*
//! records go into it; records then overwrite zeros from the front. A commit's `fdatasync`
//! only has data blocks to write: the file's size and block map do not change, so the
//! filesystem has no metadata to commit (on the reference machine's ext4 this cut `write` +
//! `fdatasync` of a batch from 160–200 to 100–140 µs at p50 and from 300–480 to 180–260 µs
//! at p99). The first segment is zero-filled in [`JournalWriter::open`]; while it fills up,
//! a background thread prepares the next one as a spare file ([`SPARE_SEGMENT_PREFIX`]…,
//! ending in `.journal.tmp`) — 64 KiB at a time,
//! each written out to the device without a cache flush, paced at 32 MiB/s so that no
//! commit's `fdatasync` has to persist more than a few kilobytes of it — and a roll installs
//! the spare (header written over its first bytes, synced, renamed into place, directory
//! synced) if it is ready, or creates a plain segment if it is not.
//!
//! So a segment may end in zero bytes after its last record. A reader that meets a record
//! header of eight zero bytes (`body_len` 0 is never valid), or fewer than eight bytes left
//! that are all zero, checks that **every** byte from there to the end of the file is zero;
//! if so that is the end of the segment's records — a writer that has not got that far yet,
//! a preallocated segment a crash left part-full, or a file that grew before its data
//! arrived — otherwise it is damage under the rule below. (Sequence continuity across
//! segments still catches any record lost this way in a segment that is not the last.) A truncating recovery cuts the last
//! segment's padding off ([`RecoveryScan::padding_trimmed`]), so a restarted writer sees the
//! segment as it would without preallocation.
//!
//! # Invariants
//!
//! * Sequence numbers start at 1 and are consecutive, with no gap and no repeat, within a
//!   segment and across segments: a segment's `first_seq` is one more than the last sequence
//!   number of the segment before it (an empty segment holds only its header and has
//!   `first_seq` = the next sequence number).
//! * Only the last segment is ever written to. A segment is finished (and, unless the policy
//!   is [`Durability::None`], synced) before the next one is created, so after a crash only
//!   the tail of the last segment can be incomplete.
//! * Compaction deletes whole segments, oldest first, so a crash part-way through it leaves a
//!   contiguous suffix of the journal, never a gap.
//!
//! # The recovery rule
//!
//! Reading a segment stops at its end, at zero padding (see above), or at the first
//! *damage*: fewer than 8 bytes left for a record header, a zero record header with a
//! non-zero byte after it, a `body_len` outside [`MIN_BODY_LEN`]..=[`MAX_BODY_LEN`], a body
//! running past the end of the file, or a body whose CRC does not match. Damage is a **torn tail** — the trace
//! of a crash in the middle of a write — if and only if all of these hold:
//!
//! 1. it is in the **last** segment, and
//! 2. **no valid record follows it**: at no byte offset after the damaged record's start is
//!    there a plausible `body_len` whose body fits in the file and matches its CRC.
//!
//! A torn tail is cut off ([`recover_journal`] with `truncate_torn_tail`: `ftruncate` to the
//! damaged record's offset, then `fsync`) and reported as a [`TornTail`] (file, offset, bytes
//! dropped) so the caller can log it. Everything else is [`JournalError::Corrupt`], naming
//! the file and the byte offset, and nothing is changed on disk:
//!
//! * damage with a valid record after it (e.g. a flipped byte mid-segment);
//! * damage in a segment that is not the last (e.g. trailing garbage after its last record);
//! * a missing, short or invalid segment header (magic, version, CRC, `first_seq` different
//!   from the file name);
//! * a record whose CRC is good but whose sequence number is not the next one, or whose
//!   command does not decode;
//! * a gap between segments (a missing segment): the error names the expected sequence
//!   number, the segment that ends before it and the one that starts after it.
//!
//! A reader that follows a journal still being written ([`ReadMode::StopAtTornTail`]) can
//! meet a record the writer is copying at that moment: half of it, or, in a preallocated
//! segment, zeros where it is about to be. Before calling damage in the last segment
//! anything, such a reader reads the record at that offset again; if a valid record is there
//! now, the pass ends quietly at it (the next pass reads it). On a journal nobody writes the
//! second read sees the same bytes, so recovery is unaffected.
//!
//! A corruption confined to the very last record of the last segment cannot be told apart
//! from a torn write and is treated as one. With [`Durability::Fsync`] that record may have
//! been acknowledged; no checksum scheme can recover it, only a replica can.
//!
//! # Durability
//!
//! | [`Durability`] | [`JournalWriter::commit`] returns after | survives |
//! |---|---|---|
//! | `fsync` (default) | `write(2)` of the batch and `fdatasync(2)` | process crash, power loss |
//! | `write` | `write(2)` of the batch (the segment is synced when it is finished) | process crash |
//! | `none` | copying into a user-space buffer, written every [`NONE_FLUSH_BYTES`] | nothing (tests only) |
//!
//! # Complexity
//!
//! * [`JournalWriter::append`]: O(command size), no allocation once the batch buffer has grown
//!   to the largest batch. [`JournalWriter::commit`]: one `write(2)` of the batch, at most one
//!   `fdatasync(2)`; a roll adds a file creation (or a spare's installation), a rename and
//!   two more syncs. Preallocation adds `segment_bytes` of zero writes per segment, off the
//!   writer's thread except for the first.
//! * Reading: O(bytes), sequential, through a [`READ_CHUNK`]-byte buffer reused across
//!   segments; CRC-32C is hardware-accelerated where the CPU has it.
//! * Recovery: reads every segment once; the torn-tail test reads the rest of the last segment
//!   after the damage once more, O(tail bytes), skipping zero runs. Zero padding is read
//!   once to check that it is all zero, O(padding bytes).
//! * Compaction: O(segments) directory operations.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bourse_engine::{Command, DecodeError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

mod bench;
mod reader;
mod segment;
mod writer;

pub use bench::{fsync_latency, replay_speed, FsyncLatency};
pub use reader::{
    read_journal, recover_journal, recover_journal_from, JournalReader, ReadMode, RecoveryScan,
    SegmentPadding,
};
pub use segment::{list_segments, remove_segments_before, SegmentInfo};
pub(crate) use writer::create_private;
pub use writer::{CommitStats, JournalConfig, JournalWriter, SPARE_SEGMENT_PREFIX};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 4] = *b"BRSJ";
/// Segment format version written and read by this code.
pub const JOURNAL_VERSION: u32 = 2;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 20;
/// Bytes before a record's body (`body_len` and CRC).
pub const RECORD_HEADER_LEN: usize = 8;
/// Smallest valid body: sequence number, timestamp, origin and a one-byte command tag.
pub const MIN_BODY_LEN: usize = 33;
/// Largest valid body. Commands are far smaller; a larger length is damage.
pub const MAX_BODY_LEN: usize = 4096;
/// With [`Durability::None`], committed records are written once this many bytes are buffered.
pub const NONE_FLUSH_BYTES: usize = 1 << 20;
/// Size of the read buffer used by readers.
pub const READ_CHUNK: usize = 4 << 20;
/// Extension of segment files.
pub const SEGMENT_EXT: &str = "journal";

/// When a commit counts as done. See [the table](self#durability).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The batch is written and `fdatasync`'d before [`JournalWriter::commit`] returns.
    #[default]
    Fsync,
    /// The batch is written (`write(2)`) before [`JournalWriter::commit`] returns.
    Write,
    /// The batch is only buffered in memory (tests and benchmarks only).
    None,
}

impl Durability {
    /// The configuration name: `fsync`, `write` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Write => "write",
            Durability::None => "none",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Durability`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unknown durability policy {0:?}: expected fsync, write or none")]
pub struct ParseDurabilityError(pub String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "write" => Ok(Durability::Write),
            "none" => Ok(Durability::None),
            other => Err(ParseDurabilityError(other.to_string())),
        }
    }
}

/// Who submitted a command, journaled with it so that replies can be matched to requests
/// even after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The submitter: a stable id its producer chooses (an API key id, a control-plane
    /// service id); 0 when unnamed.
    pub source: u64,
    /// The submitter's own reference for the command (a client reference, a request id).
    pub reference: u64,
}

/// One journaled command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number (from 1, consecutive).
    pub seq: u64,
    /// The sequencer's timestamp, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Who submitted it.
    pub origin: Origin,
    /// The command.
    pub command: Command,
}

/// The torn tail a recovery found (and, if asked, cut off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment (always the last one).
    pub file: PathBuf,
    /// Where the damaged record starts: the file's length after truncation.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes_dropped: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn journal tail in {} at offset {}: {}; {} bytes dropped",
            self.file.display(),
            self.offset,
            self.reason,
            self.bytes_dropped
        )
    }
}

/// What can go wrong with the journal.
#[derive(Debug, Error)]
pub enum JournalError {
    /// An operating-system call failed.
    #[error("journal I/O error: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The journal on disk is damaged in a way that is not a torn tail. Nothing was changed.
    #[error("journal corrupt: {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment.
        file: PathBuf,
        /// Byte offset in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// [`JournalWriter::append`] was given a sequence number that is not the next one.
    #[error("journal append out of sequence: expected seq {expected}, got {got}")]
    OutOfSequence {
        /// The next sequence number.
        expected: u64,
        /// The one given.
        got: u64,
    },
    /// A read asked for records that compaction has removed.
    #[error(
        "journal records before seq {first_available} were compacted; seq {requested} requested"
    )]
    Compacted {
        /// The first sequence number asked for.
        requested: u64,
        /// The first one still in the journal.
        first_available: u64,
    },
    /// The directory's contents contradict what the writer was asked to do.
    #[error("journal conflict at {}: {reason}", path.display())]
    Conflict {
        /// The file in the way.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An earlier write or sync failed; the on-disk state of the batch is unknown, so the
    /// writer refuses to go on. Restart and recover.
    #[error("journal writer stopped after an earlier I/O error")]
    Poisoned,
    /// A configuration value is out of range.
    #[error("invalid journal configuration: {0}")]
    Config(String),
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        JournalError::Io { op, path: path.to_path_buf(), source }
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> Self {
        JournalError::Corrupt { file: file.to_path_buf(), offset, reason: reason.into() }
    }
}

/// The file name of the segment starting at `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// Encode a segment header.
pub(crate) fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Check a segment header; the `first_seq` it holds, or why it is bad.
pub(crate) fn decode_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(format!("segment header truncated: {} of {SEGMENT_HEADER_LEN} bytes", h.len()));
    }
    if h[0..4] != SEGMENT_MAGIC {
        return Err(format!("bad segment magic {:02x?}, expected \"BRSJ\"", &h[0..4]));
    }
    let stored = u32_at(h, 16);
    let crc = crc32c::crc32c(&h[0..16]);
    if stored != crc {
        return Err(format!(
            "segment header CRC mismatch: stored {stored:#010x}, computed {crc:#010x}"
        ));
    }
    let version = u32_at(h, 4);
    if version != JOURNAL_VERSION {
        return Err(format!(
            "unsupported journal format version {version}, this build reads {JOURNAL_VERSION}"
        ));
    }
    Ok(u64_at(h, 8))
}

/// Decode a record body whose CRC has been checked.
pub(crate) fn decode_body(body: &[u8]) -> Result<Record, DecodeError> {
    let seq = u64_at(body, 0);
    let timestamp_ns = u64_at(body, 8);
    let origin = Origin { source: u64_at(body, 16), reference: u64_at(body, 24) };
    let command = Command::decode(&body[32..])?;
    Ok(Record { seq, timestamp_ns, origin, command })
}

#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Whether `bytes` are all zero (OR-folded in blocks, which vectorizes).
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.chunks(4096).all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Read `source` to its end through `buf`: `Some(bytes read)` if every one was zero, `None`
/// at the first non-zero byte. The zero-padding check of preallocated segments.
pub(crate) fn zeros_to_end(source: &mut impl io::Read, buf: &mut [u8]) -> io::Result<Option<u64>> {
    let mut read = 0u64;
    loop {
        match source.read(buf) {
            Ok(0) => return Ok(Some(read)),
            Ok(n) if all_zero(&buf[..n]) => read += n as u64,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `fsync` a directory, so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io("fsync directory", dir, e))
}
