//! Recovery: rebuild the engine from the newest valid snapshot and the journal after it.
//!
//! 1. Snapshots are tried newest first. One that cannot be read (bad checksum, bad header,
//!    another format version — format 1, which has no last-reference table, included) is
//!    skipped with a log line naming the file; one that reads but does not restore to
//!    exactly the state hash it recorded stops recovery — that is not damage in transit but
//!    a state the engine cannot vouch for. The engine and the last-reference table
//!    ([`crate::references`]) both start from the snapshot.
//! 2. The journal is validated end to end (see [`crate::journal`]): a torn last record is
//!    cut off with a log line; any other damage stops recovery with the file and offset.
//! 3. Every record after the snapshot is applied, in order, and its origin observed by the
//!    last-reference table; the first must follow the snapshot's sequence number without a
//!    gap (else the segments it needs are missing — the error then names the snapshots that
//!    were passed over).
//! 4. The node resumes at `last_seq + 1`.
//!
//! With no snapshot, replay starts from the first record, which must be sequence number 1.
//! Either way the engine and the last-reference table end up exactly as a replay of the
//! whole journal from seq 1 would leave them.
//!
//! Cost: O(snapshot) + O(records after it); the replay rate is measured by
//! `bourse bench replay`.

use std::collections::VecDeque;
use std::time::Instant;

use bourse_engine::{Command, Engine};
use serde::Serialize;

use crate::config::NodeConfig;
use crate::journal::{recover_journal_from, remove_segments_before, JournalError, Record};
use crate::node::{CommandEvents, NodeError};
use crate::references::LastReferences;
use crate::snapfile;

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// Sequence number of the snapshot started from (0: none).
    pub snapshot_seq: u64,
    /// Its file, if any.
    pub snapshot_file: Option<String>,
    /// Snapshot files that could not be read and were passed over, with the reason.
    pub skipped_snapshots: Vec<String>,
    /// Journal records applied after the snapshot.
    pub replayed: u64,
    /// The torn tail cut off, if any (as a log line).
    pub torn_tail: Option<String>,
    /// Bytes of zero padding cut off the last journal segment (a preallocated segment the
    /// node had not filled; 0 if none).
    pub padding_trimmed: u64,
    /// The sequence number the node continues at.
    pub next_seq: u64,
    /// Timestamp of the last command applied (0 if none).
    pub last_timestamp_ns: u64,
    /// The engine's state hash after recovery, 32 hex digits.
    pub state_hash: String,
    /// How long recovery took, ms.
    pub elapsed_ms: f64,
}

/// The outcome of [`recover`].
pub struct Recovered {
    /// The engine, ready to go on.
    pub engine: Engine,
    /// What happened.
    pub report: RecoveryReport,
    /// The events of the replayed commands (the tail of the event stream), oldest first.
    pub replayed_events: Vec<CommandEvents>,
    /// The last reference per source after the last command applied.
    pub last_references: LastReferences,
}

/// Rebuild the engine from `config.data_dir`. See the module docs.
pub fn recover(config: &NodeConfig) -> Result<Recovered, NodeError> {
    let started = Instant::now();
    let dir = config.data_dir.as_path();
    let mut report = RecoveryReport::default();
    // Snapshots a crash left half-written (never renamed into place) are rubbish.
    for stale in snapfile::remove_stale_temp_files(dir)
        .map_err(|e| NodeError::Recovery(format!("cannot remove stale snapshot files: {e}")))?
    {
        eprintln!("bourse-node: recovery: removed unfinished snapshot {}", stale.display());
    }
    let (mut engine, snapshot_seq, mut references) = newest_snapshot(config, &mut report)?;
    report.snapshot_seq = snapshot_seq;
    let keep_events = config.event_window;
    let mut replayed_events = VecDeque::new();
    let mut expected = snapshot_seq + 1;
    let mut events = Vec::with_capacity(64);
    let scan = recover_journal_from(dir, true, expected, |r: Record| {
        if r.seq != expected {
            return Err(NodeError::Recovery(format!(
                "journal resumes at seq {} but the snapshot needs {expected} next",
                r.seq
            )));
        }
        expected += 1;
        report.last_timestamp_ns = r.timestamp_ns;
        references.observe(r.origin);
        if keep_events == 0 {
            events.clear();
            engine.apply(&r.command, &mut events);
            return Ok(());
        }
        // Keep the newest `keep_events` commands' events for consumers, reusing the buffer
        // of the entry that falls out of the window: no allocation once the window is full.
        let mut entry = if replayed_events.len() == keep_events {
            replayed_events.pop_front().expect("the window is full")
        } else {
            CommandEvents {
                seq: 0,
                timestamp_ns: 0,
                origin: r.origin,
                command: r.command,
                events: Vec::new(),
            }
        };
        entry.seq = r.seq;
        entry.command = r.command;
        entry.origin = r.origin;
        entry.timestamp_ns = r.timestamp_ns;
        entry.events.clear();
        engine.apply(&r.command, &mut entry.events);
        replayed_events.push_back(entry);
        Ok(())
    })
    .map_err(|e| compacted_error(e, snapshot_seq, &report))?;
    if let Some(torn) = &scan.torn_tail {
        eprintln!("bourse-node: recovery: {torn}");
        report.torn_tail = Some(torn.to_string());
    }
    if let Some(padding) = scan.padding.as_ref().filter(|_| scan.padding_trimmed) {
        report.padding_trimmed = padding.len - padding.offset;
    }
    if scan.last_seq + 1 < expected {
        // The journal ends before the snapshot: only possible if records were lost.
        return Err(NodeError::Recovery(format!(
            "the snapshot is at seq {snapshot_seq} but the journal ends at {}",
            scan.last_seq
        )));
    }
    report.replayed = scan.replayed;
    report.next_seq = expected;
    report.state_hash = format!("{:032x}", engine.state_hash());
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(Recovered {
        engine,
        report,
        replayed_events: replayed_events.into(),
        last_references: references,
    })
}

/// Say which records are missing when the journal was compacted past the snapshot recovery
/// could use, and which snapshots were passed over (e.g. damaged, or of an older format).
fn compacted_error(e: NodeError, snapshot_seq: u64, report: &RecoveryReport) -> NodeError {
    match e {
        NodeError::Journal(JournalError::Compacted { requested, first_available }) => {
            let start = if snapshot_seq == 0 {
                "with no usable snapshot, recovery".to_string()
            } else {
                format!("the snapshot at seq {snapshot_seq}")
            };
            let mut msg = format!(
                "{start} needs journal records from {requested}, but the journal starts at \
                 {first_available}"
            );
            if !report.skipped_snapshots.is_empty() {
                msg.push_str("; snapshots passed over: ");
                msg.push_str(&report.skipped_snapshots.join("; "));
            }
            NodeError::Recovery(msg)
        }
        other => other,
    }
}

/// The newest snapshot that reads and restores, with its last-reference table; or a fresh
/// engine and an empty table at seq 0.
fn newest_snapshot(
    config: &NodeConfig,
    report: &mut RecoveryReport,
) -> Result<(Engine, u64, LastReferences), NodeError> {
    let dir = config.data_dir.as_path();
    let mut snapshots = snapfile::list_snapshots(dir)
        .map_err(|e| NodeError::Recovery(format!("cannot list snapshots: {e}")))?;
    snapshots.sort_by_key(|info| std::cmp::Reverse(info.seq));
    for snapfile::SnapshotInfo { seq, path } in snapshots {
        match snapfile::read_snapshot(&path) {
            Ok(contents) => {
                let hash = contents.state_hash;
                let engine = Engine::from_snapshot(&contents.snapshot, config.engine_config())
                    .map_err(|e| NodeError::Recovery(format!("{}: {e}", path.display())))?;
                if engine.state_hash() != hash || contents.seq != seq {
                    return Err(NodeError::Recovery(format!(
                        "{}: restored state hash {:032x} differs from the recorded {hash:032x}",
                        path.display(),
                        engine.state_hash()
                    )));
                }
                // `read_snapshot` checked the entries.
                let references = LastReferences::from_entries(&contents.last_references)
                    .map_err(|e| NodeError::Recovery(format!("{}: {e}", path.display())))?;
                report.snapshot_file = Some(path.display().to_string());
                return Ok((engine, seq, references));
            }
            Err(e) => {
                let line = format!("{}: {e}", path.display());
                eprintln!("bourse-node: recovery: skipping unreadable snapshot {line}");
                report.skipped_snapshots.push(line);
            }
        }
    }
    Ok((Engine::new(config.engine_config()), 0, LastReferences::new()))
}

/// After a snapshot: keep the newest `keep_snapshots` snapshots and delete the journal
/// segments that only hold records older than the oldest one kept.
pub fn compact(config: &NodeConfig) -> Result<(), NodeError> {
    let dir = config.data_dir.as_path();
    let keep = config.keep_snapshots.max(1);
    snapfile::remove_snapshots_except_newest(dir, keep)
        .map_err(|e| NodeError::Recovery(format!("cannot remove old snapshots: {e}")))?;
    let oldest = snapfile::list_snapshots(dir)
        .map_err(|e| NodeError::Recovery(format!("cannot list snapshots: {e}")))?
        .into_iter()
        .map(|info| info.seq)
        .min();
    if let Some(seq) = oldest {
        remove_segments_before(dir, seq + 1)?;
    }
    Ok(())
}

/// Events of up to `max` commands from `from_seq` (≤ `upto`), re-derived by replaying the
/// journal from the newest snapshot at or before `from_seq - 1`.
pub fn replay_events(
    config: &NodeConfig,
    from_seq: u64,
    max: usize,
    upto: u64,
) -> Result<Vec<CommandEvents>, NodeError> {
    // Compaction may delete a segment or a snapshot between listing the directory and opening
    // it; that shows as an I/O error, or as the records after an older snapshot being gone. A
    // second look sees the directory as it now is, with the newer snapshot.
    let mut attempt = 0;
    loop {
        match replay_events_once(config, from_seq, max, upto) {
            Err(NodeError::Journal(JournalError::Io { .. }) | NodeError::EventsGone(_))
                if attempt < 2 =>
            {
                attempt += 1
            }
            other => return other,
        }
    }
}

fn replay_events_once(
    config: &NodeConfig,
    from_seq: u64,
    max: usize,
    upto: u64,
) -> Result<Vec<CommandEvents>, NodeError> {
    let mut out = Vec::new();
    for_each_replayed(config, from_seq, upto, &mut |entry: &CommandEvents| {
        out.push(entry.clone());
        out.len() < max
    })?;
    Ok(out)
}

/// The events of the commands `from_seq..=upto`, re-derived in one pass over the journal
/// from the newest snapshot before `from_seq` and handed to `f` in order (`f` returns
/// `false` to stop). Unlike repeated [`replay_events`] calls, a long range costs one
/// snapshot load and one read of the journal.
pub fn stream_replayed_events(
    config: &NodeConfig,
    from_seq: u64,
    upto: u64,
    f: &mut dyn FnMut(&CommandEvents) -> bool,
) -> Result<(), NodeError> {
    for_each_replayed(config, from_seq, upto, f)
}

fn for_each_replayed(
    config: &NodeConfig,
    from_seq: u64,
    upto: u64,
    f: &mut dyn FnMut(&CommandEvents) -> bool,
) -> Result<(), NodeError> {
    let dir = config.data_dir.as_path();
    let mut base: Option<(u64, Engine)> = None;
    let mut snapshots = snapfile::list_snapshots(dir)
        .map_err(|e| NodeError::Recovery(format!("cannot list snapshots: {e}")))?;
    snapshots.sort_by_key(|info| std::cmp::Reverse(info.seq));
    for snapfile::SnapshotInfo { seq, path } in snapshots {
        if seq >= from_seq {
            continue;
        }
        if let Ok(contents) = snapfile::read_snapshot(&path) {
            if let Ok(engine) = Engine::from_snapshot(&contents.snapshot, config.engine_config()) {
                base = Some((seq, engine));
                break;
            }
        }
    }
    let (start, mut engine) = base.unwrap_or_else(|| (0, Engine::new(config.engine_config())));
    let reader =
        crate::journal::read_journal(dir, start + 1, crate::journal::ReadMode::StopAtTornTail)
            .map_err(|e| match e {
                JournalError::Compacted { .. } => NodeError::EventsGone(from_seq),
                other => NodeError::Journal(other),
            })?;
    let mut entry = CommandEvents {
        seq: 0,
        timestamp_ns: 0,
        origin: Default::default(),
        command: Command::ListAsset { asset: bourse_engine::AssetId(0), decimals: 0 },
        events: Vec::new(),
    };
    for r in reader {
        let r = r?;
        if r.seq > upto {
            break;
        }
        entry.events.clear();
        engine.apply(&r.command, &mut entry.events);
        if r.seq >= from_seq {
            entry.seq = r.seq;
            entry.timestamp_ns = r.timestamp_ns;
            entry.origin = r.origin;
            entry.command = r.command;
            if !f(&entry) {
                break;
            }
        }
    }
    Ok(())
}

/// Replay a whole journal directory (snapshot + records) into a fresh engine without changing
/// anything on disk; for tools and tests that check a node from another process.
pub fn replay_directory(config: &NodeConfig) -> Result<(Engine, RecoveryReport), NodeError> {
    replay_directory_state(config).map(|r| (r.engine, r.report))
}

/// What [`replay_directory_state`] rebuilt.
pub struct Replayed {
    /// The engine after the last record.
    pub engine: Engine,
    /// What the replay found and did.
    pub report: RecoveryReport,
    /// The last reference per source after the last record.
    pub last_references: LastReferences,
}

/// [`replay_directory`], with the last-reference table as well.
pub fn replay_directory_state(config: &NodeConfig) -> Result<Replayed, NodeError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let (mut engine, snapshot_seq, mut references) = newest_snapshot(config, &mut report)?;
    let mut expected = snapshot_seq + 1;
    let mut events = Vec::new();
    let scan = recover_journal_from(config.data_dir.as_path(), false, expected, |r: Record| {
        if r.seq != expected {
            return Err(NodeError::Recovery(format!("gap before seq {}", r.seq)));
        }
        events.clear();
        engine.apply(&r.command, &mut events);
        references.observe(r.origin);
        expected += 1;
        report.last_timestamp_ns = r.timestamp_ns;
        Ok(())
    })
    .map_err(|e| compacted_error(e, snapshot_seq, &report))?;
    if scan.last_seq < snapshot_seq {
        return Err(NodeError::Recovery(format!(
            "the snapshot is at seq {snapshot_seq} but the journal ends at {}",
            scan.last_seq
        )));
    }
    report.snapshot_seq = snapshot_seq;
    report.replayed = scan.replayed;
    report.torn_tail = scan.torn_tail.map(|t| t.to_string());
    report.next_seq = expected;
    report.state_hash = format!("{:032x}", engine.state_hash());
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(Replayed { engine, report, last_references: references })
}
