//! Journal files: round trips, durability modes, and every documented corruption outcome.

mod storage_common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bourse_node::journal::*;
use storage_common::{journal_command, ts};

fn config(dir: &Path, segment_bytes: u64, durability: Durability) -> JournalConfig {
    JournalConfig { dir: dir.to_path_buf(), segment_bytes, durability, preallocate: false }
}

fn preallocating(dir: &Path, segment_bytes: u64, durability: Durability) -> JournalConfig {
    JournalConfig { preallocate: true, ..config(dir, segment_bytes, durability) }
}

/// Wait (up to 30 s) until the writer's spare segment is zero-filled and synced.
fn wait_for_spare(w: &JournalWriter) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w.spare_ready() {
        assert!(Instant::now() < deadline, "the spare segment was never ready");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Append `from..=to` in batches of 1, 2, 3, ... records, committing each.
fn append_range(w: &mut JournalWriter, from: u64, to: u64) {
    let mut seq = from;
    let mut batch = 1;
    while seq <= to {
        let end = (seq + batch - 1).min(to);
        for s in seq..=end {
            w.append(s, ts(s), &journal_command(s)).unwrap();
        }
        let stats = w.commit().unwrap();
        assert_eq!(stats.records, end - seq + 1);
        assert_eq!(stats.durable_seq, end);
        assert_eq!(w.durable_seq(), end);
        seq = end + 1;
        batch = batch % 17 + 1;
    }
}

/// A journal of records `1..=n` in segments of about `segment_bytes`.
fn write_journal(dir: &Path, n: u64, segment_bytes: u64) {
    let mut w = JournalWriter::open(&config(dir, segment_bytes, Durability::Write), 1).unwrap();
    append_range(&mut w, 1, n);
}

/// Read everything from `from_seq` on and check it is exactly `from_seq..=to`.
fn assert_reads(dir: &Path, from_seq: u64, to: u64) {
    let records: Vec<Record> =
        read_journal(dir, from_seq, ReadMode::Strict).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len() as u64, to + 1 - from_seq, "record count from {from_seq}");
    for (r, seq) in records.iter().zip(from_seq..) {
        assert_eq!(r.seq, seq);
        assert_eq!(r.timestamp_ns, ts(seq));
        assert_eq!(r.command, journal_command(seq));
    }
}

/// `(offset, length)` of each record in a segment, walking the length fields (up to zero
/// padding).
fn record_spans(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize + 8;
        if len == 8 || at + len > bytes.len() {
            break;
        }
        out.push((at as u64, len as u64));
        at += len;
    }
    out
}

fn segments(dir: &Path) -> Vec<SegmentInfo> {
    list_segments(dir).unwrap()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn corrupt_parts(e: JournalError) -> (PathBuf, u64, String) {
    match e {
        JournalError::Corrupt { file, offset, reason } => (file, offset, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// The first error reading the whole journal in `mode`.
fn read_error(dir: &Path, mode: ReadMode) -> JournalError {
    read_journal(dir, 0, mode).unwrap().find_map(Result::err).expect("reading should fail")
}

#[test]
fn roundtrip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000;
    write_journal(dir.path(), n, 16 << 10);
    let segs = segments(dir.path());
    assert!(segs.len() >= 10, "expected many segments, got {}", segs.len());
    assert_eq!(segs[0].first_seq, 1);
    assert_eq!(segs[0].path.file_name().unwrap(), "00000000000000000001.journal");
    // Only the owner reads the journal (every account's orders and transfers are in it).
    use std::os::unix::fs::PermissionsExt;
    for s in &segs {
        assert_eq!(std::fs::metadata(&s.path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    for s in &segs[..segs.len() - 1] {
        // Each finished segment reached the roll size, and exceeds it by less than one batch.
        assert!(s.len >= 16 << 10 && s.len < (16 << 10) + 17 * 100, "segment size {}", s.len);
    }
    assert_reads(dir.path(), 1, n);
    // From the middle of a segment, from a segment boundary, from the last record, past it.
    assert_reads(dir.path(), 2_345, n);
    assert_reads(dir.path(), segs[3].first_seq, n);
    assert_reads(dir.path(), n, n);
    assert_eq!(read_journal(dir.path(), n + 1, ReadMode::Strict).unwrap().count(), 0);

    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!(scan.first_seq, 1);
    assert_eq!(scan.last_seq, n);
    assert_eq!(scan.records, n);
    assert_eq!(scan.segments, segs.len());
    assert_eq!(scan.torn_tail, None);
    assert!(!scan.truncated);

    // Continue after recovery, in a new segment, and read it all back.
    let mut w =
        JournalWriter::open(&config(dir.path(), 16 << 10, Durability::Fsync), scan.next_seq())
            .unwrap();
    append_range(&mut w, n + 1, n + 100);
    drop(w);
    assert_reads(dir.path(), 1, n + 100);
    let mut seen = Vec::new();
    let scan = recover_journal_from(dir.path(), true, n - 10, |r| {
        seen.push(r.seq);
        Ok::<(), JournalError>(())
    })
    .unwrap();
    assert_eq!(scan.last_seq, n + 100);
    assert_eq!(scan.replayed, 111);
    assert_eq!(seen, (n - 10..=n + 100).collect::<Vec<_>>());
}

#[test]
fn empty_directory_is_a_fresh_journal() {
    let dir = tempfile::tempdir().unwrap();
    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!((scan.first_seq, scan.last_seq, scan.records, scan.segments), (0, 0, 0, 0));
    assert_eq!(scan.next_seq(), 1);
    let missing = dir.path().join("nope");
    assert_eq!(recover_journal(&missing, false).unwrap().last_seq, 0);
    assert_eq!(read_journal(&missing, 0, ReadMode::Strict).unwrap().count(), 0);
    // A writer that committed nothing leaves one empty segment; it continues the sequence.
    drop(JournalWriter::open(&config(dir.path(), 1 << 20, Durability::Fsync), 1).unwrap());
    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!((scan.first_seq, scan.last_seq, scan.records, scan.segments), (1, 0, 0, 1));
    // ...which says where the journal ends: opening elsewhere would leave a gap.
    let cfg = config(dir.path(), 1 << 20, Durability::Fsync);
    assert!(matches!(JournalWriter::open(&cfg, 2), Err(JournalError::Conflict { .. })));
    // ...and a writer may reopen over that empty segment.
    let mut w = JournalWriter::open(&config(dir.path(), 1 << 20, Durability::Fsync), 1).unwrap();
    append_range(&mut w, 1, 10);
    drop(w);
    assert_reads(dir.path(), 1, 10);
}

#[test]
fn each_durability_mode() {
    for durability in [Durability::Fsync, Durability::Write, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = JournalWriter::open(&config(dir.path(), 8 << 10, durability), 1).unwrap();
        assert_eq!(w.durability(), durability);
        let mut synced = false;
        for seq in 1..=600 {
            w.append(seq, ts(seq), &journal_command(seq)).unwrap();
            if seq % 10 == 0 {
                let stats = w.commit().unwrap();
                assert_eq!(stats.records, 10);
                assert_eq!(stats.durable_seq, seq);
                synced |= stats.sync_ns > 0;
                match durability {
                    Durability::Fsync => assert!(stats.write_ns > 0),
                    Durability::Write => assert_eq!(stats.sync_ns, 0),
                    Durability::None => assert_eq!((stats.write_ns, stats.sync_ns), (0, 0)),
                }
            }
        }
        assert_eq!(synced, durability == Durability::Fsync, "{durability}");
        // An empty commit does nothing.
        assert_eq!(w.commit().unwrap(), CommitStats { durable_seq: 600, ..Default::default() });
        if durability != Durability::None {
            // Everything committed is already readable while the writer is open.
            assert_reads(dir.path(), 1, 600);
        }
        // Appended but never committed: not written, even by drop.
        w.append(601, ts(601), &journal_command(601)).unwrap();
        drop(w);
        assert_reads(dir.path(), 1, 600);
        assert!(segments(dir.path()).len() > 3);
    }
}

#[test]
fn durability_names() {
    for (name, d) in
        [("fsync", Durability::Fsync), ("write", Durability::Write), ("none", Durability::None)]
    {
        assert_eq!(name.parse::<Durability>().unwrap(), d);
        assert_eq!(d.to_string(), name);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Durability>(&format!("\"{name}\"")).unwrap(), d);
    }
    assert!("FSYNC".parse::<Durability>().is_err());
    assert_eq!(Durability::default(), Durability::Fsync);
}

#[test]
fn append_out_of_sequence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = JournalWriter::open(&config(dir.path(), 1 << 20, Durability::None), 5).unwrap();
    assert_eq!(w.next_seq(), 5);
    assert_eq!(w.durable_seq(), 4);
    for bad in [4, 6, 0] {
        match w.append(bad, 0, &journal_command(10)) {
            Err(JournalError::OutOfSequence { expected: 5, got }) => assert_eq!(got, bad),
            other => panic!("{other:?}"),
        }
    }
    w.append(5, 0, &journal_command(10)).unwrap();
    w.append(6, 0, &journal_command(10)).unwrap();
    assert_eq!(w.pending_records(), 2);
    assert!(JournalWriter::open(&config(dir.path(), 1 << 20, Durability::None), 0).is_err());
}

#[test]
fn open_refuses_to_overwrite_records() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 100, 1 << 20);
    // The segment starting at 1 holds records: reopening at 1 would lose them.
    let cfg = config(dir.path(), 1 << 20, Durability::Fsync);
    assert!(matches!(JournalWriter::open(&cfg, 1), Err(JournalError::Conflict { .. })));
    // Opening at 101 starts a new segment.
    let mut w = JournalWriter::open(&cfg, 101).unwrap();
    append_range(&mut w, 101, 120);
    drop(w);
    // A segment starting after next_seq is a conflict too.
    assert!(matches!(JournalWriter::open(&cfg, 50), Err(JournalError::Conflict { .. })));
    assert_reads(dir.path(), 1, 120);
}

#[test]
fn flipped_byte_mid_segment_is_corrupt_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 3_000, 16 << 10);
    let segs = segments(dir.path());
    let before: Vec<Vec<u8>> = segs.iter().map(|s| std::fs::read(&s.path).unwrap()).collect();

    // In a middle segment (inside record 40's body), and in the last segment with records
    // after the damaged one (inside record 3's length field).
    for (seg, record, at) in [(&segs[2], 40, 20), (segs.last().unwrap(), 3, 1)] {
        let spans = record_spans(&seg.path);
        let (offset, _) = spans[record];
        flip_byte(&seg.path, offset + at);
        for mode in [ReadMode::Strict, ReadMode::StopAtTornTail] {
            let (file, off, reason) = corrupt_parts(read_error(dir.path(), mode));
            assert_eq!((file.as_path(), off), (seg.path.as_path(), offset), "{reason}");
        }
        let (file, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
        assert_eq!((file.as_path(), off), (seg.path.as_path(), offset), "{reason}");
        assert!(reason.contains("not a torn tail"), "{reason}");
        // The message names the file and the offset.
        let msg = JournalError::Corrupt { file, offset: off, reason }.to_string();
        assert!(msg.contains(seg.path.to_str().unwrap()) && msg.contains(&offset.to_string()));
        // Nothing on disk was changed.
        for (s, b) in segs.iter().zip(&before) {
            if s.path != seg.path {
                assert_eq!(&std::fs::read(&s.path).unwrap(), b);
            }
        }
        flip_byte(&seg.path, offset + at);
    }
    assert_reads(dir.path(), 1, 3_000);
}

#[test]
fn good_crc_but_wrong_content_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 50, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let spans = record_spans(&seg.path);
    let rewrite = |record: usize, edit: &dyn Fn(&mut [u8])| {
        let mut bytes = std::fs::read(&seg.path).unwrap();
        let (off, len) = spans[record];
        let body = &mut bytes[off as usize + 8..(off + len) as usize];
        edit(body);
        let crc = crc32c::crc32c(body);
        bytes[off as usize + 4..off as usize + 8].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg.path, &bytes).unwrap();
    };
    let original = std::fs::read(&seg.path).unwrap();
    // An unknown command tag, even in the very last record: not a torn tail.
    rewrite(49, &|body| body[32] = 0xEE);
    let (file, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
    assert_eq!((file, off), (seg.path.clone(), spans[49].0));
    assert!(reason.contains("does not decode"), "{reason}");
    std::fs::write(&seg.path, &original).unwrap();
    // A wrong sequence number.
    rewrite(10, &|body| body[0] = 99);
    let (_, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
    assert_eq!(off, spans[10].0);
    assert!(reason.contains("seq 99, expected 11"), "{reason}");
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 1_000, 8 << 10);
    let last = segments(dir.path()).pop().unwrap();
    let spans = record_spans(&last.path);
    let (last_off, last_len) = *spans.last().unwrap();
    // Cut in the middle of the last record.
    let file = OpenOptions::new().write(true).open(&last.path).unwrap();
    file.set_len(last_off + last_len / 2).unwrap();
    drop(file);

    // Strict reading calls it corruption; tolerant reading stops before it.
    let (f, off, _) = corrupt_parts(read_error(dir.path(), ReadMode::Strict));
    assert_eq!((f, off), (last.path.clone(), last_off));
    let mut reader = read_journal(dir.path(), 0, ReadMode::StopAtTornTail).unwrap();
    assert_eq!(reader.by_ref().map(Result::unwrap).count(), 999);
    assert_eq!(reader.torn_tail().unwrap().offset, last_off);
    assert_eq!(reader.next_seq(), 1_000);

    // A dry run reports and changes nothing.
    let scan = recover_journal(dir.path(), false).unwrap();
    let torn = scan.torn_tail.clone().unwrap();
    assert!(!scan.truncated);
    assert_eq!(std::fs::metadata(&last.path).unwrap().len(), last_off + last_len / 2);

    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!(scan.last_seq, 999);
    assert_eq!(scan.records, 999);
    assert!(scan.truncated);
    let t = scan.torn_tail.unwrap();
    assert_eq!(t, torn);
    assert_eq!(
        (t.file.as_path(), t.offset, t.bytes_dropped),
        (last.path.as_path(), last_off, last_len / 2)
    );
    assert!(t.reason.contains("incomplete record"), "{}", t.reason);
    assert!(t.to_string().contains("torn journal tail"));
    assert_eq!(std::fs::metadata(&last.path).unwrap().len(), last_off);

    // A second recovery finds a clean journal; appends continue at 1000.
    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!((scan.last_seq, scan.torn_tail), (999, None));
    let mut w =
        JournalWriter::open(&config(dir.path(), 8 << 10, Durability::Fsync), 1_000).unwrap();
    append_range(&mut w, 1_000, 1_200);
    drop(w);
    assert_reads(dir.path(), 1, 1_200);

    // Zero bytes after the last record (the file grew before its data arrived, or a
    // preallocated segment's padding), fewer than a record header or more, end the records:
    // padding, which a truncating recovery trims.
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last.path).unwrap().len();
    for zeros in [5, 200] {
        OpenOptions::new()
            .append(true)
            .open(&last.path)
            .unwrap()
            .write_all(&vec![0; zeros])
            .unwrap();
        assert_reads(dir.path(), 1, 1_200);
        let scan = recover_journal(dir.path(), true).unwrap();
        assert_eq!(scan.torn_tail, None);
        let padding = scan.padding.unwrap();
        assert_eq!(
            (padding.file.as_path(), padding.offset, padding.len),
            (last.path.as_path(), len, len + zeros as u64)
        );
        assert!(scan.padding_trimmed);
        assert_eq!((scan.last_seq, std::fs::metadata(&last.path).unwrap().len()), (1_200, len));
    }

    // A zero record header with something after it is damage: here a torn tail.
    OpenOptions::new().append(true).open(&last.path).unwrap().write_all(&[0; 12]).unwrap();
    OpenOptions::new().append(true).open(&last.path).unwrap().write_all(&[7; 3]).unwrap();
    let scan = recover_journal(dir.path(), true).unwrap();
    let t = scan.torn_tail.unwrap();
    assert_eq!((t.offset, t.bytes_dropped), (len, 15));
    assert!(t.reason.contains("zero record header"), "{}", t.reason);

    // A last record with a bad CRC is a torn tail too.
    let (off, _) = *record_spans(&last.path).last().unwrap();
    flip_byte(&last.path, off + 30);
    let scan = recover_journal(dir.path(), true).unwrap();
    assert!(scan.torn_tail.unwrap().reason.contains("CRC mismatch"));
    assert_eq!(scan.last_seq, 1_199);
    let mut w =
        JournalWriter::open(&config(dir.path(), 8 << 10, Durability::Fsync), 1_200).unwrap();
    append_range(&mut w, 1_200, 1_300);
    drop(w);
    assert_reads(dir.path(), 1, 1_300);
}

#[test]
fn missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 2_000, 8 << 10);
    let segs = segments(dir.path());
    assert!(segs.len() >= 5);
    std::fs::remove_file(&segs[2].path).unwrap();
    let expected = segs[2].first_seq;
    for e in [
        read_error(dir.path(), ReadMode::StopAtTornTail),
        recover_journal(dir.path(), true).unwrap_err(),
    ] {
        let (file, off, reason) = corrupt_parts(e);
        assert_eq!((file.as_path(), off), (segs[3].path.as_path(), 0));
        assert!(
            reason.contains(&format!("expected a segment starting at seq {expected}")),
            "{reason}"
        );
        assert!(reason.contains(segs[1].path.to_str().unwrap()), "{reason}");
        assert!(reason.contains("missing"), "{reason}");
    }
    // Reading from after the gap works: those records are intact.
    assert_reads(dir.path(), segs[3].first_seq, 2_000);
}

#[test]
fn trailing_garbage_in_a_non_last_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 1_000, 8 << 10);
    let segs = segments(dir.path());
    let seg = &segs[1];
    let len = std::fs::metadata(&seg.path).unwrap().len();
    for garbage in [&[0xABu8; 3][..], &[0xAB; 100][..], &[0, 0, 0, 0, 0, 0, 0, 0, 1][..]] {
        OpenOptions::new().append(true).open(&seg.path).unwrap().write_all(garbage).unwrap();
        let (file, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
        assert_eq!((file.as_path(), off), (seg.path.as_path(), len));
        assert!(reason.contains("not the last segment"), "{reason}");
        assert_eq!(std::fs::metadata(&seg.path).unwrap().len(), len + garbage.len() as u64);
        OpenOptions::new().write(true).open(&seg.path).unwrap().set_len(len).unwrap();
    }
    // Zeros after its last record are padding (a preallocated segment), in any segment.
    OpenOptions::new().append(true).open(&seg.path).unwrap().write_all(&[0; 300]).unwrap();
    assert_reads(dir.path(), 1, 1_000);
    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!((scan.last_seq, scan.torn_tail, scan.padding), (1_000, None, None));
    OpenOptions::new().write(true).open(&seg.path).unwrap().set_len(len).unwrap();
    // A segment cut short (a record missing at its end) is a gap at the next one.
    let (off, _) = *record_spans(&seg.path).last().unwrap();
    OpenOptions::new().write(true).open(&seg.path).unwrap().set_len(off).unwrap();
    let (file, _, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
    assert_eq!(file, segs[2].path);
    assert!(reason.contains("sequence gap"), "{reason}");
}

#[test]
fn bad_segment_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 500, 8 << 10);
    let segs = segments(dir.path());
    for (seg, at, what) in
        [(&segs[0], 0, "magic"), (&segs[1], 5, "CRC"), (segs.last().unwrap(), 9, "CRC")]
    {
        flip_byte(&seg.path, at);
        let (file, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
        assert_eq!((file.as_path(), off), (seg.path.as_path(), 0));
        assert!(reason.contains(what), "{reason}");
        flip_byte(&seg.path, at);
    }
    // A header that disagrees with the file name: segment 1's bytes where seq 501 belongs.
    let next = dir.path().join(segment_file_name(501));
    std::fs::copy(&segs[1].path, &next).unwrap();
    let (file, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
    assert_eq!((file.as_path(), off), (next.as_path(), 8));
    assert!(reason.contains(&format!("header says first seq {}", segs[1].first_seq)), "{reason}");
    // A segment file shorter than a header (segments are created whole, so never a torn tail).
    std::fs::write(&next, b"BRSJ").unwrap();
    let (file, off, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
    assert_eq!((file.as_path(), off), (next.as_path(), 0));
    assert!(reason.contains("header truncated"), "{reason}");
    std::fs::remove_file(&next).unwrap();
    assert_eq!(recover_journal(dir.path(), true).unwrap().last_seq, 500);
    // A *.journal name that is not a segment name.
    std::fs::write(dir.path().join("7.journal"), b"x").unwrap();
    assert!(matches!(recover_journal(dir.path(), true), Err(JournalError::Corrupt { .. })));
}

#[test]
fn leftover_temp_segment_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 300, 1 << 20);
    let tmp = dir.path().join(format!("{}.tmp", segment_file_name(301)));
    std::fs::write(&tmp, b"BRSJ partial").unwrap();
    assert_reads(dir.path(), 1, 300);
    let scan = recover_journal(dir.path(), false).unwrap();
    assert!(scan.removed_temp_files.is_empty() && tmp.exists());
    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!(scan.removed_temp_files, vec![tmp.clone()]);
    assert!(!tmp.exists());
    assert_eq!(scan.last_seq, 300);
}

#[test]
fn remove_segments_before_keeps_everything_from_seq() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), 3_000, 8 << 10);
    let segs = segments(dir.path());
    let n = segs.len();
    // Nothing before the first segment.
    assert!(remove_segments_before(dir.path(), 1).unwrap().is_empty());
    // A seq in the middle of segment 4: segments 0..4 go, 4 stays.
    let seq = segs[4].first_seq + 3;
    let removed = remove_segments_before(dir.path(), seq).unwrap();
    assert_eq!(removed, segs[..4].iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    assert_reads(dir.path(), seq, 3_000);
    assert_reads(dir.path(), segs[4].first_seq, 3_000);
    assert!(matches!(
        read_journal(dir.path(), 5, ReadMode::Strict),
        Err(JournalError::Compacted { requested: 5, first_available }) if first_available == segs[4].first_seq
    ));
    // Recovery validates what is left and replays from the snapshot point.
    let scan = recover_journal_from(dir.path(), true, seq, |_| Ok::<(), JournalError>(())).unwrap();
    assert_eq!(
        (scan.first_seq, scan.last_seq, scan.replayed),
        (segs[4].first_seq, 3_000, 3_001 - seq)
    );
    assert!(matches!(
        recover_journal_from(dir.path(), true, 2, |_| Ok::<(), JournalError>(())),
        Err(JournalError::Compacted { .. })
    ));
    // A seq at a segment boundary removes the segment ending just before it.
    let removed = remove_segments_before(dir.path(), segs[6].first_seq).unwrap();
    assert_eq!(removed.len(), 2);
    assert_reads(dir.path(), segs[6].first_seq, 3_000);
    // Far past the end: only the last segment is left, still readable.
    let mut w =
        JournalWriter::open(&config(dir.path(), 8 << 10, Durability::Fsync), 3_001).unwrap();
    w.append(3_001, ts(3_001), &journal_command(3_001)).unwrap();
    w.commit().unwrap();
    let removed = w.remove_segments_before(u64::MAX).unwrap();
    assert_eq!(removed.len(), n - 6);
    assert_eq!(segments(dir.path()).len(), 1);
    assert_reads(dir.path(), 3_001, 3_001);
    assert_eq!(recover_journal(dir.path(), true).unwrap().last_seq, 3_001);
}

#[test]
fn bench_helpers() {
    let dir = tempfile::tempdir().unwrap();
    for preallocated in [false, true] {
        let lat = fsync_latency(dir.path(), 20, 512, preallocated).unwrap();
        assert_eq!(lat.write_sync_ns.len(), 20);
        let json = lat.to_json();
        assert!(json["p50_ns"].as_u64().unwrap() > 0);
        assert!(json["p999_ns"].as_u64().unwrap() >= json["p50_ns"].as_u64().unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "bench file removed");
    }
    write_journal(dir.path(), 2_000, 1 << 20);
    let (records, secs) = replay_speed(dir.path()).unwrap();
    assert_eq!(records, 2_000);
    assert!(secs > 0.0);
}

#[test]
fn preallocated_segments_roll_read_and_recover() {
    // Only `fsync` syncs per commit; the other policies ignore preallocation.
    for durability in [Durability::Write, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let w = JournalWriter::open(&preallocating(dir.path(), 16 << 10, durability), 1).unwrap();
        assert_eq!(file_len(w.current_segment()), SEGMENT_HEADER_LEN as u64);
        assert!(!w.spare_ready() && w.spare_segment().is_none());
    }
    {
        let durability = Durability::Fsync;
        let dir = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let mut w = JournalWriter::open(&preallocating(dir.path(), seg, durability), 1).unwrap();
        // The first segment is zero-filled to the roll size before any record goes in, and
        // the next one is prepared beside it.
        assert_eq!(file_len(w.current_segment()), seg);
        wait_for_spare(&w);
        let spare = w.spare_segment().unwrap().to_path_buf();
        assert!(spare.file_name().unwrap().to_str().unwrap().starts_with(SPARE_SEGMENT_PREFIX));
        assert_eq!(file_len(&spare), seg);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&spare).unwrap().permissions().mode() & 0o777, 0o600);
        let (mut rolls, mut preallocated_rolls) = (0, 0);
        for first in (1..=3_000).step_by(10) {
            for s in first..first + 10 {
                w.append(s, ts(s), &journal_command(s)).unwrap();
            }
            let stats = w.commit().unwrap();
            assert_eq!(stats.durable_seq, first + 9);
            if stats.rolled {
                rolls += 1;
                preallocated_rolls += u32::from(stats.rolled_preallocated);
                // A roll installs the spare: the new segment is full-size from the start.
                assert_eq!(file_len(w.current_segment()), seg);
                wait_for_spare(&w);
            }
        }
        assert!(rolls >= 5, "{rolls} rolls");
        assert_eq!(preallocated_rolls, rolls, "every roll found its spare ready");
        // Finished segments were filled past their preallocation; the current one is padded.
        let segs = segments(dir.path());
        for s in &segs[..segs.len() - 1] {
            assert!(s.len >= seg, "finished segment of {} bytes", s.len);
        }
        let current = w.current_segment().to_path_buf();
        assert_eq!(file_len(&current), seg);
        // Readers stop at the padding, strict ones included: it is the end of the records.
        assert_reads(dir.path(), 1, 3_000);
        assert_reads(dir.path(), 2_990, 3_000);

        // Dropped without a clean shutdown: the spare goes, the padding stays, recovery
        // trims it.
        let spare = w.spare_segment().unwrap().to_path_buf();
        drop(w);
        assert!(!spare.exists());
        let scan = recover_journal(dir.path(), true).unwrap();
        assert_eq!((scan.last_seq, scan.records, scan.torn_tail.clone()), (3_000, 3_000, None));
        let padding = scan.padding.clone().unwrap();
        assert_eq!((padding.file.as_path(), padding.len), (current.as_path(), seg));
        assert!(scan.padding_trimmed);
        assert_eq!(file_len(&current), padding.offset);
        let again = recover_journal(dir.path(), true).unwrap();
        assert_eq!((again.last_seq, again.padding, again.padding_trimmed), (3_000, None, false));

        // Appends continue after recovery, preallocated again.
        let mut w =
            JournalWriter::open(&preallocating(dir.path(), seg, durability), 3_001).unwrap();
        append_range(&mut w, 3_001, 3_500);
        drop(w);
        assert_reads(dir.path(), 1, 3_500);
    }
}

#[test]
fn preallocated_segment_crash_cases() {
    let seg = 64 << 10;
    // A crash right after opening: a padded segment with no records, and a leftover spare.
    let dir = tempfile::tempdir().unwrap();
    let w = JournalWriter::open(&preallocating(dir.path(), seg, Durability::Fsync), 1).unwrap();
    wait_for_spare(&w);
    drop(w);
    let leftover = dir.path().join(format!("{SPARE_SEGMENT_PREFIX}1-0.journal.tmp"));
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    let scan = recover_journal(dir.path(), true).unwrap();
    assert_eq!((scan.last_seq, scan.torn_tail), (0, None));
    assert!(scan.padding_trimmed);
    assert_eq!(scan.removed_temp_files, vec![leftover]);
    assert_eq!(segments(dir.path())[0].len, SEGMENT_HEADER_LEN as u64);
    // The empty segment is taken over, as without preallocation...
    let w = JournalWriter::open(&preallocating(dir.path(), seg, Durability::Fsync), 1).unwrap();
    // ...and so it is without a recovery in between: a header and zeros hold no records.
    drop(w);
    assert_eq!(file_len(&segments(dir.path())[0].path), seg);
    let gap = JournalWriter::open(&preallocating(dir.path(), seg, Durability::Fsync), 5);
    assert!(matches!(gap, Err(JournalError::Conflict { .. })), "{gap:?}");
    let mut w = JournalWriter::open(&preallocating(dir.path(), seg, Durability::Fsync), 1).unwrap();
    append_range(&mut w, 1, 100);
    let path = w.current_segment().to_path_buf();
    drop(w);
    assert_reads(dir.path(), 1, 100);

    // A torn write into the padding: half a record, then zeros.
    let spans = record_spans(&path);
    let (last_off, last_len) = *spans.last().unwrap();
    let end = last_off + last_len;
    let bytes = std::fs::read(&path).unwrap();
    let half = &bytes[last_off as usize..(last_off + last_len / 2) as usize];
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, half, end).unwrap();
    drop(file);
    let (f, off, _) = corrupt_parts(read_error(dir.path(), ReadMode::Strict));
    assert_eq!((f.as_path(), off), (path.as_path(), end));
    let scan = recover_journal(dir.path(), true).unwrap();
    let torn = scan.torn_tail.unwrap();
    assert_eq!((torn.offset, torn.bytes_dropped), (end, seg - end));
    assert!(scan.truncated && scan.padding.is_none());
    assert_eq!((scan.last_seq, file_len(&path)), (100, end));

    // A record zeroed in the middle, with good records after it, is corruption, not padding.
    let dir = tempfile::tempdir().unwrap();
    let mut w = JournalWriter::open(&preallocating(dir.path(), seg, Durability::Fsync), 1).unwrap();
    append_range(&mut w, 1, 100);
    let path = w.current_segment().to_path_buf();
    drop(w);
    let (off, len) = record_spans(&path)[49];
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0u8; len as usize], off).unwrap();
    drop(file);
    let (f, at, reason) = corrupt_parts(recover_journal(dir.path(), true).unwrap_err());
    assert_eq!((f.as_path(), at), (path.as_path(), off));
    assert!(reason.contains("a valid record follows"), "{reason}");
    assert_eq!(file_len(&path), seg, "nothing changed on disk");
}

#[test]
fn a_follower_reading_while_records_are_written_stops_quietly() {
    let seg = 64 << 10;
    // Records 11 and 12 as the writer lays them out (from a twin journal).
    let twin = tempfile::tempdir().unwrap();
    let mut w =
        JournalWriter::open(&preallocating(twin.path(), seg, Durability::Fsync), 1).unwrap();
    append_range(&mut w, 1, 12);
    let twin_path = w.current_segment().to_path_buf();
    drop(w);
    let twin_bytes = std::fs::read(&twin_path).unwrap();
    let spans = record_spans(&twin_path);
    let (at, _) = spans[10];
    let (end12, len12) = spans[11];
    let tail = &twin_bytes[at as usize..(end12 + len12) as usize];

    let dir = tempfile::tempdir().unwrap();
    let mut w = JournalWriter::open(&preallocating(dir.path(), seg, Durability::Fsync), 1).unwrap();
    append_range(&mut w, 1, 10);
    let path = w.current_segment().to_path_buf();
    assert_eq!(record_spans(&path).last().map(|(o, l)| o + l), Some(at));
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    // The follower's read catches record 11 half copied...
    std::os::unix::fs::FileExt::write_all_at(&file, &tail[..20], at).unwrap();
    let mut reader = read_journal(dir.path(), 0, ReadMode::StopAtTornTail).unwrap();
    assert_eq!(reader.by_ref().take(10).map(Result::unwrap).count(), 10);
    // ...and by the time it looks again, 11 is whole and 12 follows: the end of this pass,
    // not a corruption (and not a torn tail).
    std::os::unix::fs::FileExt::write_all_at(&file, &tail[20..], at + 20).unwrap();
    assert!(reader.next().is_none());
    assert_eq!(reader.torn_tail(), None);
    // The next pass sees both.
    assert_reads(dir.path(), 1, 12);
    drop(w);
}

#[test]
fn writers_replacing_each_other_keep_their_own_spares() {
    // `w = JournalWriter::open(..)` opens the new writer before the old one is dropped: for
    // a moment two writers (and two spares) share the directory.
    let dir = tempfile::tempdir().unwrap();
    let seg = 16 << 10;
    let config = preallocating(dir.path(), seg, Durability::Fsync);
    let mut w = JournalWriter::open(&config, 1).unwrap();
    append_range(&mut w, 1, 10);
    wait_for_spare(&w);
    drop(w);
    let _ = recover_journal(dir.path(), true).unwrap();
    let mut w = JournalWriter::open(&config, 11).unwrap();
    wait_for_spare(&w);
    let first_spare = w.spare_segment().unwrap().to_path_buf();
    // The first writer's segment holds no record yet: the second takes it over.
    w = JournalWriter::open(&config, 11).unwrap();
    assert!(!first_spare.exists(), "the dropped writer removed its own spare");
    wait_for_spare(&w);
    let mut rolled_preallocated = 0;
    for s in 11..=400 {
        w.append(s, ts(s), &journal_command(s)).unwrap();
        let stats = w.commit().unwrap();
        if stats.rolled {
            rolled_preallocated += u32::from(stats.rolled_preallocated);
            wait_for_spare(&w);
        }
    }
    assert!(rolled_preallocated > 0);
    drop(w);
    assert_reads(dir.path(), 1, 400);
}
