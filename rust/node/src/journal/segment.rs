//! Segment files in a journal directory: listing and compaction.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{
    segment_file_name, sync_dir, zeros_to_end, JournalError, SEGMENT_EXT, SEGMENT_HEADER_LEN,
};

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its path.
    pub path: PathBuf,
    /// The sequence number in its name (its first record's).
    pub first_seq: u64,
    /// Its length in bytes when listed.
    pub len: u64,
}

impl SegmentInfo {
    /// Whether it holds no record (only a header, or less).
    pub fn is_empty(&self) -> bool {
        self.len <= SEGMENT_HEADER_LEN as u64
    }
}

/// Parse a segment file name; `Ok(None)` if the name is not a segment's at all.
fn parse_name(name: &str) -> Result<Option<u64>, String> {
    let Some(stem) = name.strip_suffix(".journal") else {
        return Ok(None);
    };
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse::<u64>().map(Some).map_err(|_| format!("segment name {name:?} is out of range"))
    } else {
        Err(format!("segment name {name:?} is not 20 digits + \".{SEGMENT_EXT}\""))
    }
}

/// The segments in `dir`, by first sequence number. A missing directory has none.
///
/// A `*.journal` file whose name is not 20 digits is [`JournalError::Corrupt`]: silently
/// skipping it could hide records. Other files (including `*.journal.tmp`) are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, JournalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io("list directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        match parse_name(name) {
            Ok(None) => {}
            Ok(Some(first_seq)) => {
                let len =
                    entry.metadata().map_err(|e| JournalError::io("stat segment", &path, e))?.len();
                out.push(SegmentInfo { path, first_seq, len });
            }
            Err(reason) => return Err(JournalError::corrupt(&path, 0, reason)),
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Whether `segment` holds no record: it is a header at most, or a header followed by
/// nothing but zero bytes (a preallocated segment before its first record). Reads the file
/// past the header if it is longer, O(its length).
pub(crate) fn holds_no_records(segment: &SegmentInfo) -> Result<bool, JournalError> {
    if segment.is_empty() {
        return Ok(true);
    }
    let io = |e| JournalError::io("read segment", &segment.path, e);
    let mut file = std::fs::File::open(&segment.path).map_err(io)?;
    file.seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64)).map_err(io)?;
    Ok(zeros_to_end(&mut file, &mut vec![0u8; 1 << 20]).map_err(io)?.is_some())
}

/// Leftover `*.journal.tmp` files (segments whose creation a crash interrupted).
pub(crate) fn list_temp_files(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io("list directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("list directory", dir, e))?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(".journal.tmp")) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Delete the segments whose records all have sequence numbers below `seq` (compaction after
/// a snapshot of the state at `seq - 1` or later), oldest first, then `fsync` the directory.
///
/// A segment is deleted only if the next segment starts at or before `seq`, so the last
/// segment is never deleted and every record `>= seq` stays readable. Returns the deleted
/// paths. O(segments).
pub fn remove_segments_before(dir: &Path, seq: u64) -> Result<Vec<PathBuf>, JournalError> {
    let segments = list_segments(dir)?;
    let mut removed = Vec::new();
    for pair in segments.windows(2) {
        if pair[1].first_seq <= seq {
            std::fs::remove_file(&pair[0].path)
                .map_err(|e| JournalError::io("remove segment", &pair[0].path, e))?;
            removed.push(pair[0].path.clone());
        } else {
            break;
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// The path of the segment starting at `first_seq`.
pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(segment_file_name(first_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("00000000000000000001.journal"), Ok(Some(1)));
        assert_eq!(parse_name("00000000000000000001.journal.tmp"), Ok(None));
        assert_eq!(parse_name("snapshot-1.snap"), Ok(None));
        assert!(parse_name("1.journal").is_err());
        assert!(parse_name("99999999999999999999.journal").is_err());
        assert_eq!(segment_file_name(42), "00000000000000000042.journal");
    }
}
