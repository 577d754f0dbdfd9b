//! The journal writer: batching, group commit and segment rolls.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bourse_engine::Command;
use serde::{Deserialize, Serialize};

use super::segment::{holds_no_records, list_segments, remove_segments_before, segment_path};
use super::{
    encode_segment_header, sync_dir, Durability, JournalError, Origin, NONE_FLUSH_BYTES,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Where and how to write the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalConfig {
    /// The journal directory (created if missing).
    pub dir: PathBuf,
    /// Roll to a new segment once the current one holds at least this many bytes (checked
    /// after each commit, so a segment exceeds it by at most one batch).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// When a commit counts as done.
    #[serde(default)]
    pub durability: Durability,
    /// Under [`Durability::Fsync`], zero-fill every segment to `segment_bytes` before
    /// records go into it (see [the module docs](super#preallocated-segments)): each commit
    /// then overwrites blocks the file already has, so `fdatasync` writes only data and no
    /// file-size metadata (a quarter to a third less per sync on the reference machine).
    /// Costs `segment_bytes` of extra writes per segment, the first synchronously in
    /// [`JournalWriter::open`], the rest paced on a background thread. Ignored under the
    /// other policies, which do not sync per commit.
    #[serde(default)]
    pub preallocate: bool,
}

fn default_segment_bytes() -> u64 {
    JournalConfig::DEFAULT_SEGMENT_BYTES
}

impl JournalConfig {
    /// Default segment size: 64 MiB (about 900 k records).
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

    /// A configuration with the default segment size and [`Durability::Fsync`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            durability: Durability::Fsync,
            preallocate: false,
        }
    }
}

/// What one [`JournalWriter::commit`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStats {
    /// Records in the batch.
    pub records: u64,
    /// Bytes in the batch.
    pub bytes: u64,
    /// Time spent in `write(2)`, nanoseconds (0 if nothing was written).
    pub write_ns: u64,
    /// Time spent in `fdatasync(2)`, nanoseconds (0 if not synced).
    pub sync_ns: u64,
    /// Every record up to this sequence number is durable under the policy.
    pub durable_seq: u64,
    /// Whether the commit finished the segment and started a new one.
    pub rolled: bool,
    /// Whether the new segment (if `rolled`) was a preallocated one. False on a roll means
    /// preallocation is off, or the spare was not ready yet (the segment then grows as it is
    /// written, as without preallocation).
    pub rolled_preallocated: bool,
    /// The batch is durable, but starting the next segment failed: the writer is poisoned
    /// and the node must stop after acknowledging this batch.
    pub roll_error: Option<String>,
}

/// Appends records to the journal and group-commits them.
///
/// Single-threaded: one writer per journal directory. After any I/O error the writer is
/// poisoned (every later call returns [`JournalError::Poisoned`]): the state of the failed
/// batch on disk is unknown and retrying an `fsync` after a failure is not safe, so the node
/// must stop and recover.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    segment_bytes: u64,
    durability: Durability,
    /// [`JournalConfig::preallocate`], and the policy is [`Durability::Fsync`].
    preallocate: bool,
    file: File,
    path: PathBuf,
    /// Bytes of the current segment, header and committed records (buffered ones included).
    segment_len: u64,
    /// Encoded records: `batch[..committed_len]` committed but not yet written (only with
    /// [`Durability::None`]), the rest appended since the last commit.
    batch: Vec<u8>,
    committed_len: usize,
    batch_records: u64,
    next_seq: u64,
    durable_seq: u64,
    poisoned: bool,
    /// Under [`Durability::Write`]: the `fdatasync` of the last finished segment, running on
    /// its own thread so that a roll does not stall the sequencer for the whole segment's
    /// sync. At most one is in flight; its failure poisons the writer like any other.
    retired_sync: Option<(PathBuf, JoinHandle<std::io::Result<()>>)>,
    /// With [`JournalConfig::preallocate`]: the next segment, being zero-filled on its own
    /// thread (named [`SPARE_SEGMENT_PREFIX`]…) while this one fills up.
    spare: Option<SpareSegment>,
}

/// Names of the zero-filled files preallocating writers keep ready for their next segment
/// start with this: `spare-{pid}-{n}.journal.tmp`, one name per preparation (so two writers
/// never share a file). They end in `.journal.tmp`, so readers ignore them and a truncating
/// recovery deletes leftovers.
pub const SPARE_SEGMENT_PREFIX: &str = "spare-";

/// A fresh spare file name in `dir`.
fn spare_path(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{SPARE_SEGMENT_PREFIX}{}-{n}.journal.tmp", std::process::id()))
}

/// Bytes zero-filled per `write(2)` when a segment is preallocated in [`JournalWriter::open`].
const ZERO_FILL_CHUNK: usize = 1 << 20;

/// A spare segment is zero-filled in pieces this large, each pushed to the device...
const SPARE_CHUNK: usize = 64 << 10;

/// ...at this pace (bytes per second). Every `fdatasync` makes the device persist whatever
/// was written to it since the last one, so a spare written in bursts makes the live
/// segment's next commit pay for the burst (a 1 MiB burst measured ~1–2 ms on the reference
/// machine). Paced, each commit carries only a few kilobytes of it; a 64 MiB spare takes
/// ~2 s, far less than a segment takes to fill at any rate the node sustains (if it is not
/// ready, the roll creates a plain segment).
const SPARE_BYTES_PER_SEC: u64 = 32 << 20;

/// A spare segment being prepared (or ready) on a background thread.
#[derive(Debug)]
struct SpareSegment {
    path: PathBuf,
    handle: JoinHandle<std::io::Result<File>>,
    /// Set to make the preparation stop early (the writer is being dropped).
    cancel: Arc<AtomicBool>,
}

impl SpareSegment {
    /// Start zero-filling a new spare file in `dir` to `len` bytes on a new thread, paced
    /// (see [`SPARE_BYTES_PER_SEC`]), then sync it.
    fn prepare(dir: &Path, len: u64) -> std::io::Result<SpareSegment> {
        let path = spare_path(dir);
        let cancel = Arc::new(AtomicBool::new(false));
        let handle = {
            let (path, cancel) = (path.clone(), cancel.clone());
            std::thread::Builder::new().name("bourse-journal-spare".into()).spawn(move || {
                let file = create_private(&path)?;
                paced_zero_fill(&file, len, &cancel)?;
                if cancel.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("spare segment preparation cancelled"));
                }
                file.sync_all()?;
                Ok(file)
            })?
        };
        Ok(SpareSegment { path, handle, cancel })
    }
}

/// Zero-fill `file` to `len` bytes in [`SPARE_CHUNK`]s at [`SPARE_BYTES_PER_SEC`], writing
/// each chunk out to the device (`sync_file_range`, no cache flush) before the next; stops
/// early once `cancel` is set.
fn paced_zero_fill(file: &File, len: u64, cancel: &AtomicBool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let zeros = vec![0u8; SPARE_CHUNK];
    let start = Instant::now();
    let mut at = 0u64;
    while at < len && !cancel.load(Ordering::Relaxed) {
        let n = (len - at).min(SPARE_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open
        // (borrowed from `file` for the duration of the call).
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                at as libc::off64_t,
                n as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        at += n as u64;
        let due = std::time::Duration::from_secs_f64(at as f64 / SPARE_BYTES_PER_SEC as f64);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    Ok(())
}

/// Write `len` zero bytes at the start of `file` in [`ZERO_FILL_CHUNK`]s, as fast as the
/// page cache takes them (the caller syncs).
fn zero_fill(file: &File, len: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(ZERO_FILL_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl JournalWriter {
    /// Start writing at `next_seq` in a **new** segment `{next_seq:020}.journal`.
    ///
    /// After a restart, first run [`super::recover_journal`] (which validates the old segments
    /// and truncates a torn tail) and pass its `last_seq + 1`. The only existing segment this
    /// may replace is an empty one (header only) with the same name, left by a crash just
    /// after a roll; a segment starting after `next_seq`, one at `next_seq` holding records,
    /// or an empty last segment at another seq (a gap) is a [`JournalError::Conflict`].
    pub fn open(config: &JournalConfig, next_seq: u64) -> Result<Self, JournalError> {
        if next_seq == 0 {
            return Err(JournalError::Config("sequence numbers start at 1".into()));
        }
        if config.segment_bytes == 0 {
            return Err(JournalError::Config("segment_bytes must be positive".into()));
        }
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::io("create directory", &dir, e))?;
        if let Some(last) = list_segments(&dir)?.last() {
            // Header only, or header and zero padding (a preallocated segment a crash left
            // before its first record, when no truncating recovery has trimmed it).
            let holds_records = !holds_no_records(last)?;
            if last.first_seq > next_seq {
                return Err(JournalError::Conflict {
                    path: last.path.clone(),
                    reason: format!(
                        "segment starts at seq {}, after next seq {next_seq}",
                        last.first_seq
                    ),
                });
            }
            if !holds_records && last.first_seq != next_seq {
                return Err(JournalError::Conflict {
                    path: last.path.clone(),
                    reason: format!(
                        "the journal ends at seq {} (empty last segment), next seq {next_seq} \
                         would leave a gap",
                        last.first_seq - 1
                    ),
                });
            }
            if last.first_seq == next_seq && holds_records {
                return Err(JournalError::Conflict {
                    path: last.path.clone(),
                    reason: format!("segment for next seq {next_seq} already holds records"),
                });
            }
        }
        let preallocate = config.preallocate && config.durability == Durability::Fsync;
        let prealloc_len = preallocate.then_some(config.segment_bytes);
        let (file, path) = create_segment(&dir, next_seq, config.durability, prealloc_len)?;
        let spare = if preallocate {
            Some(
                SpareSegment::prepare(&dir, config.segment_bytes)
                    .map_err(|e| JournalError::io("start preparing a spare segment", &dir, e))?,
            )
        } else {
            None
        };
        Ok(JournalWriter {
            dir,
            segment_bytes: config.segment_bytes,
            durability: config.durability,
            preallocate,
            file,
            path,
            segment_len: SEGMENT_HEADER_LEN as u64,
            batch: Vec::with_capacity(64 << 10),
            committed_len: 0,
            batch_records: 0,
            next_seq,
            durable_seq: next_seq - 1,
            poisoned: false,
            retired_sync: None,
            spare,
        })
    }

    /// Add a record to the current batch. `seq` must be [`Self::next_seq`]. Nothing is
    /// written until [`Self::commit`]. No allocation once the batch buffer has grown.
    #[inline]
    pub fn append(
        &mut self,
        seq: u64,
        timestamp_ns: u64,
        command: &Command,
    ) -> Result<(), JournalError> {
        self.append_from(seq, timestamp_ns, Origin::default(), command)
    }

    /// [`Self::append`] with the submitter's [`Origin`].
    #[inline]
    pub fn append_from(
        &mut self,
        seq: u64,
        timestamp_ns: u64,
        origin: Origin,
        command: &Command,
    ) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if seq != self.next_seq {
            return Err(JournalError::OutOfSequence { expected: self.next_seq, got: seq });
        }
        let start = self.batch.len();
        self.batch.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
        self.batch.extend_from_slice(&seq.to_le_bytes());
        self.batch.extend_from_slice(&timestamp_ns.to_le_bytes());
        self.batch.extend_from_slice(&origin.source.to_le_bytes());
        self.batch.extend_from_slice(&origin.reference.to_le_bytes());
        command.encode(&mut self.batch);
        let body = &self.batch[start + RECORD_HEADER_LEN..];
        let len = body.len() as u32;
        let crc = crc32c::crc32c(body);
        self.batch[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.batch[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.next_seq += 1;
        self.batch_records += 1;
        Ok(())
    }

    /// Group commit: make every appended record durable under the policy — one `write(2)` of
    /// the batch and, with [`Durability::Fsync`], one `fdatasync(2)` — then roll to a new
    /// segment if the current one has reached `segment_bytes`. An empty batch is a no-op.
    pub fn commit(&mut self) -> Result<CommitStats, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if self.retired_sync.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            self.finish_retired_sync()?;
        }
        let records = self.batch_records;
        if records == 0 {
            return Ok(CommitStats { durable_seq: self.durable_seq, ..CommitStats::default() });
        }
        let bytes = (self.batch.len() - self.committed_len) as u64;
        let mut stats = CommitStats { records, bytes, ..CommitStats::default() };
        match self.durability {
            Durability::Fsync | Durability::Write => {
                let t = Instant::now();
                let r = self.file.write_all(&self.batch);
                stats.write_ns = t.elapsed().as_nanos() as u64;
                self.check(r, "write segment")?;
                self.batch.clear();
                if self.durability == Durability::Fsync {
                    let t = Instant::now();
                    let r = self.file.sync_data();
                    stats.sync_ns = t.elapsed().as_nanos() as u64;
                    self.check(r, "fdatasync segment")?;
                }
            }
            Durability::None => {
                self.committed_len = self.batch.len();
                if self.committed_len >= NONE_FLUSH_BYTES {
                    let t = Instant::now();
                    self.flush()?;
                    stats.write_ns = t.elapsed().as_nanos() as u64;
                }
            }
        }
        self.segment_len += bytes;
        self.batch_records = 0;
        self.durable_seq = self.next_seq - 1;
        stats.durable_seq = self.durable_seq;
        if self.segment_len >= self.segment_bytes {
            match self.roll() {
                Ok(preallocated) => {
                    stats.rolled = true;
                    stats.rolled_preallocated = preallocated;
                }
                Err(e) => {
                    self.poisoned = true;
                    stats.roll_error = Some(e.to_string());
                }
            }
        }
        Ok(stats)
    }

    /// Write out records committed under [`Durability::None`] and still buffered. A no-op
    /// under the other policies (their commits write immediately).
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if self.committed_len > 0 {
            let r = self.file.write_all(&self.batch[..self.committed_len]);
            self.check(r, "write segment")?;
            self.batch.drain(..self.committed_len);
            self.committed_len = 0;
        }
        Ok(())
    }

    /// [`Self::flush`], then `fdatasync` the current segment whatever the policy (for a clean
    /// shutdown).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.flush()?;
        self.finish_retired_sync()?;
        let r = self.file.sync_data();
        self.check(r, "fdatasync segment")
    }

    /// Finish the current segment (write out buffered records; under `write` sync it in the
    /// background — under `fsync` every commit already did) and start a new one at the next
    /// sequence number: the spare segment if preallocation is on and it is ready, otherwise a
    /// new empty file. Whether the new segment is a preallocated one.
    fn roll(&mut self) -> Result<bool, JournalError> {
        self.flush()?;
        // One background sync at a time: the previous one must have succeeded first.
        self.finish_retired_sync()?;
        let created = match self.take_ready_spare() {
            Some((spare_file, spare_path)) => {
                install_spare(&self.dir, self.next_seq, self.durability, spare_file, &spare_path)
                    .map(|(file, path)| (file, path, true))
            }
            None => create_segment(&self.dir, self.next_seq, self.durability, None)
                .map(|(file, path)| (file, path, false)),
        };
        let (file, path, preallocated) = match created {
            Ok(created) => created,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        let finished = std::mem::replace(&mut self.file, file);
        let finished_path = std::mem::replace(&mut self.path, path);
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        if self.durability == Durability::Write {
            // Its records are written; syncing it is not on any acknowledgement's path under
            // `write`, so it happens off the sequencer thread.
            let spawned = std::thread::Builder::new()
                .name("bourse-journal-sync".into())
                .spawn(move || finished.sync_data());
            match spawned {
                Ok(handle) => self.retired_sync = Some((finished_path, handle)),
                Err(e) => {
                    self.poisoned = true;
                    return Err(JournalError::io("spawn segment sync", &finished_path, e));
                }
            }
        }
        if self.preallocate && self.spare.is_none() {
            // A spare that cannot be started only costs speed: the next roll creates a plain
            // segment and tries again.
            self.spare = SpareSegment::prepare(&self.dir, self.segment_bytes).ok();
        }
        Ok(preallocated)
    }

    /// The spare segment's file and path if its preparation has finished; `None` (leaving it
    /// to finish) if it is still running. A failed preparation is dropped (and retried after
    /// the roll).
    fn take_ready_spare(&mut self) -> Option<(File, PathBuf)> {
        if !self.spare.as_ref()?.handle.is_finished() {
            return None;
        }
        let spare = self.spare.take()?;
        match spare.handle.join() {
            Ok(Ok(file)) => Some((file, spare.path)),
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "its thread panicked".to_string(),
                };
                // Only speed is lost (this roll creates a plain segment); say so, since a
                // lasting cause (a full disk) would otherwise turn preallocation off unseen.
                eprintln!(
                    "bourse-journal: preparing the spare segment {} failed: {why}",
                    spare.path.display()
                );
                let _ = std::fs::remove_file(&spare.path);
                None
            }
        }
    }

    /// Wait for the background sync of the last finished segment, if any; its failure
    /// poisons the writer.
    fn finish_retired_sync(&mut self) -> Result<(), JournalError> {
        let Some((path, handle)) = self.retired_sync.take() else { return Ok(()) };
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the segment sync thread panicked")));
        result.map_err(|e| {
            self.poisoned = true;
            JournalError::io("fdatasync finished segment", &path, e)
        })
    }

    fn check(&mut self, r: std::io::Result<()>, op: &'static str) -> Result<(), JournalError> {
        r.map_err(|e| {
            self.poisoned = true;
            JournalError::io(op, &self.path, e)
        })
    }

    /// The sequence number the next [`Self::append`] must use.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every record up to this sequence number is durable under the policy (0: none yet).
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Records appended since the last commit.
    pub fn pending_records(&self) -> u64 {
        self.batch_records
    }

    /// Whether the spare segment's preparation has finished (false without preallocation).
    /// A spare that failed counts as finished: the next roll reports it, creates a plain
    /// segment and starts another.
    pub fn spare_ready(&self) -> bool {
        self.spare.as_ref().is_some_and(|spare| spare.handle.is_finished())
    }

    /// The policy.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment being written.
    pub fn current_segment(&self) -> &Path {
        &self.path
    }

    /// The spare segment's file, while one is being prepared or is ready.
    pub fn spare_segment(&self) -> Option<&Path> {
        self.spare.as_ref().map(|spare| spare.path.as_path())
    }

    /// Compaction: delete the segments whose records are all below `seq` (see
    /// [`super::remove_segments_before`]). The current segment is never deleted.
    pub fn remove_segments_before(&self, seq: u64) -> Result<Vec<PathBuf>, JournalError> {
        remove_segments_before(&self.dir, seq)
    }
}

impl Drop for JournalWriter {
    /// Writes out records committed under [`Durability::None`] (best effort). Records
    /// appended but never committed are dropped.
    fn drop(&mut self) {
        if !self.poisoned && self.committed_len > 0 {
            let _ = self.file.write_all(&self.batch[..self.committed_len]);
        }
        if let Some((path, handle)) = self.retired_sync.take() {
            if !matches!(handle.join(), Ok(Ok(()))) {
                eprintln!("bourse-journal: syncing the finished segment {} failed", path.display());
            }
        }
        if let Some(spare) = self.spare.take() {
            spare.cancel.store(true, Ordering::Relaxed);
            let _ = spare.handle.join();
            let _ = std::fs::remove_file(&spare.path);
        }
    }
}

/// Create `{first_seq:020}.journal` atomically: write the header to a `.tmp` file (after
/// zero-filling it to `preallocate` bytes, if given), sync it, rename it into place and sync
/// the directory (no syncs with [`Durability::None`]). The file position is left just after
/// the header.
fn create_segment(
    dir: &Path,
    first_seq: u64,
    durability: Durability,
    preallocate: Option<u64>,
) -> Result<(File, PathBuf), JournalError> {
    let path = segment_path(dir, first_seq);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = create_private(&tmp).map_err(|e| JournalError::io("create segment", &tmp, e))?;
    if let Some(len) = preallocate {
        zero_fill(&file, len).map_err(|e| JournalError::io("zero-fill segment", &tmp, e))?;
    }
    file.write_all(&encode_segment_header(first_seq))
        .map_err(|e| JournalError::io("write segment header", &tmp, e))?;
    let sync = durability != Durability::None;
    if sync {
        file.sync_all().map_err(|e| JournalError::io("fsync segment", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io("rename segment", &tmp, e))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok((file, path))
}

/// Turn a ready spare (zero-filled and synced) into `{first_seq:020}.journal`: write the
/// header over its first bytes, sync that, rename it into place and sync the directory. The
/// file position is left just after the header.
fn install_spare(
    dir: &Path,
    first_seq: u64,
    durability: Durability,
    mut file: File,
    spare_path: &Path,
) -> Result<(File, PathBuf), JournalError> {
    let path = segment_path(dir, first_seq);
    file.write_all_at(&encode_segment_header(first_seq), 0)
        .and_then(|()| file.seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64)).map(|_| ()))
        .map_err(|e| JournalError::io("write segment header", spare_path, e))?;
    if durability != Durability::None {
        file.sync_data().map_err(|e| JournalError::io("fsync segment", spare_path, e))?;
    }
    std::fs::rename(spare_path, &path)
        .map_err(|e| JournalError::io("rename spare segment", spare_path, e))?;
    if durability != Durability::None {
        sync_dir(dir)?;
    }
    Ok((file, path))
}

/// Create (or truncate) a file only its owner can read or write: the journal holds every
/// account's orders and transfers.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}
