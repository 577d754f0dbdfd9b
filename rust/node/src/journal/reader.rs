//! Reading the journal: the validating record iterator and the recovery scan.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::segment::{list_segments, list_temp_files, SegmentInfo};
use super::{
    all_zero, decode_body, decode_segment_header, sync_dir, u32_at, u64_at, zeros_to_end,
    JournalError, Record, TornTail, MAX_BODY_LEN, MIN_BODY_LEN, READ_CHUNK, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

/// What a reader does at damage in the last segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// Any damage is [`JournalError::Corrupt`], a torn tail included (for checking a journal
    /// that was shut down cleanly).
    Strict,
    /// A torn tail (see [the rule](super#the-recovery-rule)) ends the iteration quietly and is
    /// reported by [`JournalReader::torn_tail`]; nothing is changed on disk. This is also how
    /// a follower reads a journal that is still being written: an incomplete last record
    /// simply is not there yet.
    #[default]
    StopAtTornTail,
}

/// A read position in one segment, over a reusable buffer.
struct Cursor {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    /// Where the segment's zero padding starts, once the cursor has ended there.
    padding_at: Option<u64>,
}

/// Why reading a segment stopped (boxed: the record path stays small and fast).
enum Stop {
    /// The segment ended cleanly.
    End,
    /// Damage at `offset`: maybe a torn tail.
    Damage { offset: u64, reason: String },
    /// Corruption that is never a torn tail, or an I/O error.
    Error(JournalError),
}

fn stop_damage(offset: u64, reason: String) -> Box<Stop> {
    Box::new(Stop::Damage { offset, reason })
}

impl From<JournalError> for Box<Stop> {
    fn from(e: JournalError) -> Self {
        Box::new(Stop::Error(e))
    }
}

impl Cursor {
    /// Open a segment and check its header against the `first_seq` in its name.
    fn open(seg: &SegmentInfo, buf: Vec<u8>) -> Result<Cursor, JournalError> {
        let file =
            File::open(&seg.path).map_err(|e| JournalError::io("open segment", &seg.path, e))?;
        let mut c = Cursor {
            path: seg.path.clone(),
            file,
            buf,
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
            padding_at: None,
        };
        let have = c.fill(SEGMENT_HEADER_LEN)?;
        let header = &c.buf[c.pos..c.end.min(c.pos + SEGMENT_HEADER_LEN)];
        let first_seq =
            decode_segment_header(header).map_err(|r| JournalError::corrupt(&seg.path, 0, r))?;
        debug_assert!(have);
        if first_seq != seg.first_seq {
            return Err(JournalError::corrupt(
                &seg.path,
                8,
                format!(
                    "segment header says first seq {first_seq}, its name says {}",
                    seg.first_seq
                ),
            ));
        }
        c.pos += SEGMENT_HEADER_LEN;
        Ok(c)
    }

    /// Make at least `need` unread bytes available; false if the file ends first.
    #[inline]
    fn fill(&mut self, need: usize) -> Result<bool, JournalError> {
        if self.end - self.pos >= need {
            return Ok(true);
        }
        self.refill(need)
    }

    #[cold]
    fn refill(&mut self, need: usize) -> Result<bool, JournalError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        while self.end < need && !self.eof {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(JournalError::io("read segment", &self.path, e)),
            }
        }
        Ok(self.end - self.pos >= need)
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The next record, which must have sequence number `expected`.
    #[inline]
    fn step(&mut self, expected: u64) -> Result<Record, Box<Stop>> {
        if !self.fill(RECORD_HEADER_LEN)? {
            return Err(self.short_header());
        }
        let len = u32_at(&self.buf, self.pos) as usize;
        if len == 0 && u32_at(&self.buf, self.pos + 4) == 0 {
            return Err(self.zero_header());
        }
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&len) {
            return Err(stop_damage(
                self.offset(),
                format!("invalid record length {len} (valid: {MIN_BODY_LEN}..={MAX_BODY_LEN})"),
            ));
        }
        let total = RECORD_HEADER_LEN + len;
        if !self.fill(total)? {
            let left = self.end - self.pos;
            return Err(stop_damage(
                self.offset(),
                format!(
                    "incomplete record: {total} bytes long, {left} bytes before the end of the file"
                ),
            ));
        }
        let stored = u32_at(&self.buf, self.pos + 4);
        let body = &self.buf[self.pos + RECORD_HEADER_LEN..self.pos + total];
        let crc = crc32c::crc32c(body);
        if crc != stored {
            return Err(stop_damage(
                self.offset(),
                format!("record CRC mismatch: stored {stored:#010x}, computed {crc:#010x}"),
            ));
        }
        let seq = u64_at(body, 0);
        if seq != expected {
            return Err(
                self.hard(format!("record has seq {seq}, expected {expected} (its CRC is good)"))
            );
        }
        match decode_body(body) {
            Ok(record) => {
                self.pos += total;
                Ok(record)
            }
            Err(e) => Err(self.hard(format!(
                "record seq {seq} has a good CRC but its command does not decode: {e}"
            ))),
        }
    }

    #[cold]
    fn short_header(&mut self) -> Box<Stop> {
        let left = self.end - self.pos;
        if left == 0 {
            return Box::new(Stop::End);
        }
        if all_zero(&self.buf[self.pos..self.end]) {
            self.padding_at = Some(self.offset());
            self.base += self.end as u64;
            self.pos = 0;
            self.end = 0;
            return Box::new(Stop::End);
        }
        stop_damage(
            self.offset(),
            format!("incomplete record header: {left} bytes before the end of the file"),
        )
    }

    /// A record header of eight zero bytes: the segment's preallocated padding if every byte
    /// from here to the end of the file is zero (the end of its records), damage otherwise.
    /// Reads the rest of the file.
    #[cold]
    fn zero_header(&mut self) -> Box<Stop> {
        let at = self.offset();
        match self.rest_is_zero() {
            Ok(true) => {
                self.padding_at = Some(at);
                Box::new(Stop::End)
            }
            Ok(false) => stop_damage(
                at,
                "invalid record length 0 (a zero record header, with non-zero bytes after it)"
                    .to_string(),
            ),
            Err(e) => Box::new(Stop::Error(e)),
        }
    }

    /// Whether every byte from the read position to the end of the file is zero. Consumes
    /// the buffer (the cursor is finished with the segment either way).
    fn rest_is_zero(&mut self) -> Result<bool, JournalError> {
        if !all_zero(&self.buf[self.pos..self.end]) {
            return Ok(false);
        }
        self.base += self.end as u64;
        self.pos = 0;
        self.end = 0;
        if self.eof {
            return Ok(true);
        }
        let zeros = zeros_to_end(&mut self.file, &mut self.buf)
            .map_err(|e| JournalError::io("read segment", &self.path, e))?;
        if let Some(read) = zeros {
            self.base += read;
            self.eof = true;
        }
        Ok(zeros.is_some())
    }

    #[cold]
    fn hard(&self, reason: String) -> Box<Stop> {
        Box::new(Stop::Error(JournalError::corrupt(&self.path, self.offset(), reason)))
    }

    /// Whether a valid record now starts at `offset`, reading the file afresh: a writer
    /// appended it while this cursor was reading (the cursor saw it half-copied, or still
    /// zero in a preallocated segment). Never true for damage on a disk nobody writes.
    #[cold]
    fn written_meanwhile(&self, offset: u64) -> bool {
        use std::os::unix::fs::FileExt;
        let mut header = [0u8; RECORD_HEADER_LEN];
        if self.file.read_exact_at(&mut header, offset).is_err() {
            return false;
        }
        let len = u32_at(&header, 0) as usize;
        if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&len) {
            return false;
        }
        let mut body = vec![0u8; len];
        self.file.read_exact_at(&mut body, offset + RECORD_HEADER_LEN as u64).is_ok()
            && crc32c::crc32c(&body) == u32_at(&header, 4)
    }

    /// The file length if this cursor has seen the end of the file.
    fn seen_len(&self) -> Option<u64> {
        self.eof.then_some(self.base + self.end as u64)
    }
}

/// The zero padding at the end of a preallocated segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentPadding {
    /// The segment.
    pub file: PathBuf,
    /// Where the padding starts: the end of the segment's records.
    pub offset: u64,
    /// The file's length.
    pub len: u64,
}

/// An iterator over validated records, in sequence order. Made by [`read_journal`].
///
/// Lists the segments when made; segments created later are not seen. After the first error
/// the iterator ends.
pub struct JournalReader {
    segments: Vec<SegmentInfo>,
    /// Index of the segment the cursor reads, or of the next one to open.
    index: usize,
    cursor: Option<Cursor>,
    spare: Vec<u8>,
    expected: u64,
    from_seq: u64,
    mode: ReadMode,
    torn: Option<TornTail>,
    /// The padding the last segment read ended at, if it ended at padding.
    padding: Option<SegmentPadding>,
    done: bool,
    records: u64,
    segments_read: usize,
}

/// Read the journal in `dir` from sequence number `from_seq` on (`0`: from the first record
/// still present), validating everything read (see [the rule](super#the-recovery-rule)).
///
/// Starts at the segment holding `from_seq`, so earlier segments are neither read nor
/// checked. A missing or empty directory yields nothing. If `from_seq` is before the first
/// segment (compacted away) this is [`JournalError::Compacted`]; past the end it yields
/// nothing.
///
/// Reading is sequential through a [`READ_CHUNK`] buffer; decoding a record is a CRC-32C of
/// its body and [`bourse_engine::Command::decode`].
pub fn read_journal(
    dir: &Path,
    from_seq: u64,
    mode: ReadMode,
) -> Result<JournalReader, JournalError> {
    let segments = list_segments(dir)?;
    let mut index = 0;
    if let Some(first) = segments.first() {
        if from_seq != 0 && from_seq < first.first_seq {
            return Err(JournalError::Compacted {
                requested: from_seq,
                first_available: first.first_seq,
            });
        }
        index = segments
            .iter()
            .rposition(|s| s.first_seq <= from_seq.max(first.first_seq))
            .unwrap_or(0);
    }
    let expected = segments.get(index).map_or(1, |s| s.first_seq);
    Ok(JournalReader {
        segments,
        index,
        cursor: None,
        spare: Vec::new(),
        expected,
        from_seq,
        mode,
        torn: None,
        padding: None,
        done: false,
        records: 0,
        segments_read: 0,
    })
}

impl JournalReader {
    /// The torn tail the reader stopped at ([`ReadMode::StopAtTornTail`] only).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// The sequence number after the last valid record read so far.
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    /// Valid records read so far, including those before `from_seq` that were skipped.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// The segments this reader covers (from the one holding `from_seq`).
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments[self.index.min(self.segments.len())..]
    }

    fn fail(&mut self, e: JournalError) -> Option<Result<Record, JournalError>> {
        self.done = true;
        self.cursor = None;
        Some(Err(e))
    }

    /// Open the segment at `self.index`, checking that it continues the sequence.
    fn open_next(&mut self) -> Result<Cursor, JournalError> {
        let seg = &self.segments[self.index];
        if self.segments_read > 0 && seg.first_seq != self.expected {
            let prev = &self.segments[self.index - 1];
            let reason = if seg.first_seq > self.expected {
                format!(
                    "sequence gap: expected a segment starting at seq {} (after {}, which ends at \
                     seq {}), found one starting at seq {}; a segment is missing",
                    self.expected,
                    prev.path.display(),
                    self.expected - 1,
                    seg.first_seq
                )
            } else {
                format!(
                    "sequence overlap: segment starts at seq {}, but {} already runs to seq {}",
                    seg.first_seq,
                    prev.path.display(),
                    self.expected - 1
                )
            };
            return Err(JournalError::corrupt(&seg.path, 0, reason));
        }
        let mut buf = std::mem::take(&mut self.spare);
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        Cursor::open(seg, buf)
    }

    /// Decide what damage at `offset` in the current segment is (see the module docs).
    fn classify(
        &mut self,
        cursor: &Cursor,
        offset: u64,
        reason: String,
    ) -> Result<TornTail, JournalError> {
        let last = self.index + 1 == self.segments.len();
        if !last {
            return Err(JournalError::corrupt(
                &cursor.path,
                offset,
                format!("{reason}; this is not the last segment, so it is not a torn tail"),
            ));
        }
        if let Some(at) = valid_record_after(&cursor.path, offset, cursor.seen_len())? {
            return Err(JournalError::corrupt(
                &cursor.path,
                offset,
                format!(
                    "{reason}; a valid record follows at offset {at}, so it is not a torn tail"
                ),
            ));
        }
        let len = match cursor.seen_len() {
            Some(len) => len,
            None => std::fs::metadata(&cursor.path)
                .map_err(|e| JournalError::io("stat segment", &cursor.path, e))?
                .len(),
        };
        let torn =
            TornTail { file: cursor.path.clone(), offset, bytes_dropped: len - offset, reason };
        if self.mode == ReadMode::Strict {
            return Err(JournalError::corrupt(
                &cursor.path,
                offset,
                format!(
                    "{}; torn tail of {} bytes (recovery would truncate it)",
                    torn.reason, torn.bytes_dropped
                ),
            ));
        }
        Ok(torn)
    }
}

impl Iterator for JournalReader {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let mut cursor = match self.cursor.take() {
                Some(c) => c,
                None => {
                    if self.index >= self.segments.len() {
                        self.done = true;
                        return None;
                    }
                    match self.open_next() {
                        Ok(c) => {
                            self.segments_read += 1;
                            c
                        }
                        Err(e) => return self.fail(e),
                    }
                }
            };
            match cursor.step(self.expected) {
                Ok(r) => {
                    self.expected += 1;
                    self.records += 1;
                    self.cursor = Some(cursor);
                    if r.seq >= self.from_seq {
                        return Some(Ok(r));
                    }
                }
                Err(stop) => match *stop {
                    Stop::End => {
                        self.padding = cursor.padding_at.map(|offset| SegmentPadding {
                            file: cursor.path.clone(),
                            offset,
                            len: cursor.base + cursor.end as u64,
                        });
                        self.spare = std::mem::take(&mut cursor.buf);
                        self.index += 1;
                    }
                    Stop::Damage { offset, reason } => {
                        // A reader following a live writer may have caught a record while it
                        // was being copied: if it is whole now, this pass ends there. Asked
                        // before the damage is judged and again after (the writer may finish
                        // that record and the next between the two looks).
                        let live = self.mode == ReadMode::StopAtTornTail
                            && self.index + 1 == self.segments.len();
                        if live && cursor.written_meanwhile(offset) {
                            self.done = true;
                            return None;
                        }
                        match self.classify(&cursor, offset, reason) {
                            Ok(torn) => {
                                self.torn = Some(torn);
                                self.done = true;
                                return None;
                            }
                            Err(_) if live && cursor.written_meanwhile(offset) => {
                                self.done = true;
                                return None;
                            }
                            Err(e) => return self.fail(e),
                        }
                    }
                    Stop::Error(e) => return self.fail(e),
                },
            }
        }
    }
}

/// The offset of the first byte position after `offset` (and before `limit`, if given) where
/// a record with a plausible length and a matching CRC starts.
fn valid_record_after(
    path: &Path,
    offset: u64,
    limit: Option<u64>,
) -> Result<Option<u64>, JournalError> {
    let mut file = File::open(path).map_err(|e| JournalError::io("open segment", path, e))?;
    let start = offset + 1;
    file.seek(SeekFrom::Start(start)).map_err(|e| JournalError::io("seek segment", path, e))?;
    let mut data = Vec::new();
    match limit {
        Some(limit) => file.take(limit.saturating_sub(start)).read_to_end(&mut data),
        None => file.read_to_end(&mut data),
    }
    .map_err(|e| JournalError::io("read segment", path, e))?;
    let mut y = 0;
    while y + RECORD_HEADER_LEN <= data.len() {
        if data[y..y + 4] == [0; 4] {
            // No record starts where its length's four bytes are zero: jump over zero runs
            // (a preallocated segment's padding) to three bytes before the next non-zero one.
            match data[y + 4..].iter().position(|&b| b != 0) {
                Some(at) => {
                    y = (y + 4 + at).saturating_sub(3).max(y + 1);
                    continue;
                }
                None => break,
            }
        }
        let len = u32_at(&data, y) as usize;
        if (MIN_BODY_LEN..=MAX_BODY_LEN).contains(&len) && y + RECORD_HEADER_LEN + len <= data.len()
        {
            let body = &data[y + RECORD_HEADER_LEN..y + RECORD_HEADER_LEN + len];
            if crc32c::crc32c(body) == u32_at(&data, y + 4) {
                return Ok(Some(start + y as u64));
            }
        }
        y += 1;
    }
    Ok(None)
}

/// What a recovery scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryScan {
    /// Sequence number of the first segment's first record (0: no segments).
    pub first_seq: u64,
    /// Sequence number of the last valid record; 0 for an empty journal. When the segments
    /// hold no record at all this is the last segment's `first_seq - 1`.
    pub last_seq: u64,
    /// Valid records in the journal.
    pub records: u64,
    /// Records passed to the callback of [`recover_journal_from`].
    pub replayed: u64,
    /// Segment files.
    pub segments: usize,
    /// The torn tail found, if any.
    pub torn_tail: Option<TornTail>,
    /// Whether the torn tail was cut off.
    pub truncated: bool,
    /// Zero padding after the last record of the last segment (a preallocated segment the
    /// writer had not filled), if any.
    pub padding: Option<SegmentPadding>,
    /// Whether that padding was cut off (so the segment ends at its last record again).
    pub padding_trimmed: bool,
    /// Leftover `*.journal.tmp` files deleted.
    pub removed_temp_files: Vec<PathBuf>,
}

impl RecoveryScan {
    /// The sequence number to continue at: `last_seq + 1`.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }
}

/// The recovery scan: [`recover_journal_from`] without replay.
pub fn recover_journal(dir: &Path, truncate_torn_tail: bool) -> Result<RecoveryScan, JournalError> {
    recover_journal_from(dir, truncate_torn_tail, u64::MAX, |_| Ok::<(), JournalError>(()))
}

/// Validate the whole journal in `dir` — every segment, every record — and pass each record
/// with `seq >= from_seq` to `on_record`, in order.
///
/// Applies [the recovery rule](super#the-recovery-rule): a torn tail is reported in
/// [`RecoveryScan::torn_tail`] and, if `truncate_torn_tail`, cut off (`ftruncate` + `fsync`),
/// and leftover `*.journal.tmp` files are deleted; any other damage is
/// [`JournalError::Corrupt`] and nothing on disk is changed. With `truncate_torn_tail` false
/// the scan changes nothing (a dry run for tools).
///
/// If `from_seq` is below the first segment's first sequence number (the records the caller
/// needs were compacted away) this is [`JournalError::Compacted`]. An empty or missing
/// directory is a fresh journal: `last_seq` 0. Records before the damage have been passed to
/// `on_record` when a `Corrupt` error is returned; the caller must then stop.
pub fn recover_journal_from<E, F>(
    dir: &Path,
    truncate_torn_tail: bool,
    from_seq: u64,
    mut on_record: F,
) -> Result<RecoveryScan, E>
where
    E: From<JournalError>,
    F: FnMut(Record) -> Result<(), E>,
{
    let mut reader = read_journal(dir, 0, ReadMode::StopAtTornTail)?;
    let mut scan = RecoveryScan {
        first_seq: reader.segments.first().map_or(0, |s| s.first_seq),
        segments: reader.segments.len(),
        ..RecoveryScan::default()
    };
    if scan.segments > 0 && from_seq != u64::MAX && from_seq.max(1) < scan.first_seq {
        return Err(JournalError::Compacted {
            requested: from_seq,
            first_available: scan.first_seq,
        }
        .into());
    }
    for r in reader.by_ref() {
        let r = r?;
        if r.seq >= from_seq {
            scan.replayed += 1;
            on_record(r)?;
        }
    }
    scan.records = reader.records;
    scan.last_seq = if scan.segments == 0 { 0 } else { reader.expected - 1 };
    scan.torn_tail = reader.torn.take();
    let last_segment = reader.segments.last().map(|s| s.path.clone());
    scan.padding = reader.padding.take().filter(|p| Some(&p.file) == last_segment.as_ref());
    if truncate_torn_tail {
        if let Some(padding) = &scan.padding {
            cut_segment(&padding.file, padding.offset, "trim segment padding")?;
            scan.padding_trimmed = true;
        }
        if let Some(torn) = &scan.torn_tail {
            cut_segment(&torn.file, torn.offset, "truncate torn tail")?;
            scan.truncated = true;
        }
        for tmp in list_temp_files(dir)? {
            std::fs::remove_file(&tmp)
                .map_err(|e| JournalError::io("remove temp segment", &tmp, e))?;
            scan.removed_temp_files.push(tmp);
        }
        if !scan.removed_temp_files.is_empty() {
            sync_dir(dir)?;
        }
    }
    Ok(scan)
}

/// Truncate a segment to `len` bytes and sync it (`op` names the step in an error).
fn cut_segment(path: &Path, len: u64, op: &'static str) -> Result<(), JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(len).and_then(|()| file.sync_all()))
        .map_err(|e| JournalError::io(op, path, e))
}
