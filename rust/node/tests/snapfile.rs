//! Snapshot files: round trip through a real engine, atomic writes, and every check.

mod storage_common;

use std::path::Path;

use bourse_engine::{Engine, EngineConfig, Snapshot};
use bourse_node::snapfile::*;
use storage_common::{command, setup};

/// An engine with a few thousand resting orders, and its snapshot and hash.
fn engine_state(orders: u64) -> (Snapshot, u128) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut events = Vec::new();
    for c in setup() {
        engine.apply(&c, &mut events);
    }
    for i in 0..orders {
        engine.apply(&command(i), &mut events);
        events.clear();
    }
    (engine.snapshot(), engine.state_hash())
}

fn corrupt_reason(e: SnapshotFileError, file: &Path) -> String {
    let msg = e.to_string();
    match e {
        SnapshotFileError::Corrupt { file: f, reason } => {
            assert_eq!(f, file);
            assert!(msg.contains(file.to_str().unwrap()), "{msg}");
            reason
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn roundtrip_restores_the_same_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, hash) = engine_state(3_000);
    assert!(snap.markets[0].bids.len() > 100 && snap.markets[0].asks.len() > 100);
    let path = write_snapshot(dir.path(), 3_007, hash, &snap, &[]).unwrap();
    // Only the owner reads a snapshot (every account's balances and orders are in it).
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(path, dir.path().join("snapshot-00000000000000003007.snap"));
    let back = read_snapshot(&path).unwrap();
    assert_eq!((back.seq, back.state_hash), (3_007, hash));
    assert_eq!(back.snapshot, snap);
    assert!(back.last_references.is_empty());
    let engine = Engine::from_snapshot(&back.snapshot, EngineConfig::default()).unwrap();
    assert_eq!(engine.state_hash(), hash);
    let header = read_snapshot_header(&path).unwrap();
    assert_eq!((header.seq, header.state_hash), (3_007, hash));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        SNAPSHOT_HEADER_LEN as u64 + header.payload_len
    );
    // Only the final file is left.
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
    // Rewriting the same seq replaces the file.
    write_snapshot(dir.path(), 3_007, hash, &snap, &[]).unwrap();
    assert_eq!(list_snapshots(dir.path()).unwrap().len(), 1);
}

#[test]
fn bad_checksum_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, hash) = engine_state(500);
    let path = write_snapshot(dir.path(), 42, hash, &snap, &[]).unwrap();
    let good = std::fs::read(&path).unwrap();
    let len = good.len();

    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        edit(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        corrupt_reason(read_snapshot(&path).unwrap_err(), &path)
    };
    // A flipped payload byte.
    let r = with(&|b| b[len / 2] ^= 1);
    assert!(r.contains("payload checksum mismatch"), "{r}");
    let r = with(&|b| b[len - 1] ^= 0x80);
    assert!(r.contains("payload checksum mismatch"), "{r}");
    // A flipped header byte (seq, hash, length, payload CRC): the header checksum.
    for at in [8, 20, 33, 41] {
        let r = with(&|b| b[at] ^= 1);
        assert!(r.contains("header checksum mismatch"), "{r}");
    }
    // Bad magic, truncated, too long.
    assert!(with(&|b| b[0] = b'X').contains("bad magic"));
    assert!(with(&|b| b.truncate(30)).contains("header truncated"));
    assert!(with(&|b| b.truncate(len - 1)).contains("payload is"));
    assert!(with(&|b| b.push(0)).contains("payload is"));
    // A file renamed to another seq.
    std::fs::write(&path, &good).unwrap();
    let other = dir.path().join(snapshot_file_name(43));
    std::fs::rename(&path, &other).unwrap();
    let r = corrupt_reason(read_snapshot(&other).unwrap_err(), &other);
    assert!(r.contains("header says seq 42"), "{r}");
    std::fs::rename(&other, &path).unwrap();
    assert!(read_snapshot(&path).is_ok());
}

#[test]
fn payload_with_good_checksum_that_does_not_decode_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_snapshot_payload(dir.path(), 7, 1, &[0xFF; 3]).unwrap();
    let r = corrupt_reason(read_snapshot(&path).unwrap_err(), &path);
    assert!(r.contains("does not decode"), "{r}");
}

#[test]
fn atomic_write_leaves_no_partial_file_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, hash) = engine_state(100);
    write_snapshot(dir.path(), 10, hash, &snap, &[]).unwrap();
    // A crash mid-write leaves only a .tmp, which nothing lists or loads.
    let full = encode_snapshot(&snap, &[]).unwrap();
    let tmp = dir.path().join(format!("{}.tmp", snapshot_file_name(20)));
    std::fs::write(&tmp, &full[..full.len() / 2]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("snapshot-5.snap"), b"x").unwrap();
    let list = list_snapshots(dir.path()).unwrap();
    assert_eq!(list, vec![SnapshotInfo { seq: 10, path: dir.path().join(snapshot_file_name(10)) }]);
    let (loaded, skipped) = load_newest_snapshot(dir.path()).unwrap();
    assert_eq!(loaded.unwrap().seq, 10);
    assert!(skipped.is_empty());
    // Retention ignores it; start-up clean-up deletes it.
    assert!(remove_snapshots_except_newest(dir.path(), 1).unwrap().is_empty());
    assert!(tmp.exists());
    assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), vec![tmp.clone()]);
    assert!(!tmp.exists());
    assert!(list_snapshots(&dir.path().join("missing")).unwrap().is_empty());
}

#[test]
fn retention_and_fallback_to_an_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for (i, orders) in [10u64, 20, 30, 40, 50].into_iter().enumerate() {
        let (snap, hash) = engine_state(orders);
        let table = [(7, i as u64 + 1), (1 << 40, 99)];
        write_snapshot(dir.path(), (i as u64 + 1) * 100, hash, &snap, &table).unwrap();
        hashes.push(hash);
    }
    let removed = remove_snapshots_except_newest(dir.path(), 2).unwrap();
    assert_eq!(removed.len(), 3);
    let seqs: Vec<u64> = list_snapshots(dir.path()).unwrap().iter().map(|s| s.seq).collect();
    assert_eq!(seqs, vec![400, 500]);
    // Damage the newest: the loader falls back and says why.
    let newest = dir.path().join(snapshot_file_name(500));
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xFF;
    std::fs::write(&newest, bytes).unwrap();
    let (loaded, skipped) = load_newest_snapshot(dir.path()).unwrap();
    let loaded = loaded.unwrap();
    assert_eq!((loaded.seq, loaded.state_hash), (400, hashes[3]));
    assert_eq!(loaded.last_references, vec![(7, 4), (1 << 40, 99)]);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, newest);
    assert!(skipped[0].1.to_string().contains("checksum"));
    // Nothing readable at all.
    std::fs::remove_file(dir.path().join(snapshot_file_name(400))).unwrap();
    let (loaded, skipped) = load_newest_snapshot(dir.path()).unwrap();
    assert!(loaded.is_none());
    assert_eq!(skipped.len(), 1);
    assert!(remove_snapshots_except_newest(dir.path(), 0).unwrap().len() == 1);
    assert!(list_snapshots(dir.path()).unwrap().is_empty());
}

#[test]
fn the_last_reference_table_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, hash) = engine_state(200);
    let table = vec![(1, 1), (2, u64::MAX), (77, 12_345), (u64::MAX, 3)];
    let path = write_snapshot(dir.path(), 99, hash, &snap, &table).unwrap();
    let back = read_snapshot(&path).unwrap();
    assert_eq!(
        back,
        SnapshotContents {
            seq: 99,
            state_hash: hash,
            snapshot: snap.clone(),
            last_references: table.clone()
        }
    );
    // The table follows the engine snapshot in the payload.
    let without = encode_snapshot(&snap, &[]).unwrap();
    let with = encode_snapshot(&snap, &table).unwrap();
    assert_eq!(with[..without.len() - 1], without[..without.len() - 1]);
    let (loaded, _) = load_newest_snapshot(dir.path()).unwrap();
    assert_eq!(loaded.unwrap().last_references, table);
}

#[test]
fn a_table_that_breaks_its_rules_is_not_written_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, hash) = engine_state(10);
    for (table, why) in [
        (vec![(2, 1), (1, 1)], "increasing"),
        (vec![(1, 1), (1, 2)], "increasing"),
        (vec![(0, 1)], "source 0"),
        (vec![(5, 0)], "reference 0"),
    ] {
        let e = write_snapshot(dir.path(), 5, hash, &snap, &table).unwrap_err();
        assert!(matches!(&e, SnapshotFileError::Encode(m) if m.contains(why)), "{e}");
        // The same table, written by hand behind a good checksum, is refused on reading.
        let mut payload = encode_snapshot(&snap, &[]).unwrap();
        assert_eq!(payload.pop(), Some(0), "an empty table is one zero count byte");
        payload.extend(postcard::to_stdvec(&table).unwrap());
        let path = write_snapshot_payload(dir.path(), 5, hash, &payload).unwrap();
        let r = corrupt_reason(read_snapshot(&path).unwrap_err(), &path);
        assert!(r.contains(why), "{r}");
    }
    // Bytes after the table.
    let mut payload = encode_snapshot(&snap, &[(1, 2)]).unwrap();
    payload.push(0);
    let path = write_snapshot_payload(dir.path(), 6, hash, &payload).unwrap();
    let r = corrupt_reason(read_snapshot(&path).unwrap_err(), &path);
    assert!(r.contains("1 bytes follow the table"), "{r}");
}

/// Rewrite a snapshot file's header version (and the header checksum, so only the version
/// is wrong).
fn set_version(path: &Path, version: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[4..8].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn format_1_snapshots_are_refused_by_name() {
    assert_eq!(SNAPSHOT_FILE_VERSION, 2);
    let dir = tempfile::tempdir().unwrap();
    let (snap, hash) = engine_state(10);
    let old = write_snapshot(dir.path(), 10, hash, &snap, &[(3, 4)]).unwrap();
    let new = write_snapshot(dir.path(), 20, hash, &snap, &[(3, 5)]).unwrap();
    set_version(&new, 1);
    for e in [read_snapshot(&new).unwrap_err(), read_snapshot_header(&new).unwrap_err()] {
        let msg = e.to_string();
        assert!(
            matches!(&e, SnapshotFileError::UnsupportedVersion { file, version: 1 } if *file == new),
            "{e:?}"
        );
        assert!(msg.contains(new.to_str().unwrap()), "{msg}");
        assert!(
            msg.contains("format version 1") && msg.contains("no last-reference table"),
            "{msg}"
        );
    }
    // The loader passes it over like any unreadable snapshot.
    let (loaded, skipped) = load_newest_snapshot(dir.path()).unwrap();
    let loaded = loaded.unwrap();
    assert_eq!((loaded.path, loaded.last_references), (old, vec![(3, 4)]));
    assert_eq!(skipped.len(), 1);
    // Some future version: refused too, without the note.
    set_version(&new, 3);
    let msg = read_snapshot(&new).unwrap_err().to_string();
    assert!(msg.contains("format version 3") && !msg.contains("last-reference"), "{msg}");
}
