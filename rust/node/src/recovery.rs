//! Recovery: rebuild the engine from the newest valid snapshot and the journal after it.
//!
//! 1. Snapshots are tried newest first. One that cannot be read (bad checksum, bad header,
//!    wrong version) is skipped with a log line naming the file; one that reads but does not
//!    restore to exactly the state hash it recorded stops recovery — that is not damage in
//!    transit but a state the engine cannot vouch for.
//! 2. The journal is validated end to end (see [`crate::journal`]): a torn last record is
//!    cut off with a log line; any other damage stops recovery with the file and offset.
//! 3. Every record after the snapshot is applied, in order; the first must follow the
//!    snapshot's sequence number without a gap (else the segments it needs are missing).
//! 4. The node resumes at `last_seq + 1`.
//!
//! With no snapshot, replay starts from the first record, which must be sequence number 1.
//!
//! Cost: O(snapshot) + O(records after it); the replay rate is measured by
//! `bourse bench replay`.

use std::collections::VecDeque;
use std::time::Instant;

use bourse_engine::{Engine, Event};
use serde::Serialize;

use crate::config::NodeConfig;
use crate::journal::{recover_journal_from, remove_segments_before, JournalError, Record};
use crate::node::{CommandEvents, NodeError};
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
    let (mut engine, snapshot_seq) = newest_snapshot(config, &mut report)?;
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
            CommandEvents { seq: 0, timestamp_ns: 0, origin: r.origin, events: Vec::new() }
        };
        entry.seq = r.seq;
        entry.origin = r.origin;
        entry.timestamp_ns = r.timestamp_ns;
        entry.events.clear();
        engine.apply(&r.command, &mut entry.events);
        replayed_events.push_back(entry);
        Ok(())
    })
    .map_err(|e| match e {
        NodeError::Journal(JournalError::Compacted { requested, first_available }) => {
            NodeError::Recovery(format!(
                "the snapshot at seq {snapshot_seq} needs journal records from {requested}, \
                 but the journal starts at {first_available}"
            ))
        }
        other => other,
    })?;
    if let Some(torn) = &scan.torn_tail {
        eprintln!("bourse-node: recovery: {torn}");
        report.torn_tail = Some(torn.to_string());
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
    Ok(Recovered { engine, report, replayed_events: replayed_events.into() })
}

/// The newest snapshot that reads and restores, or a fresh engine at seq 0.
fn newest_snapshot(
    config: &NodeConfig,
    report: &mut RecoveryReport,
) -> Result<(Engine, u64), NodeError> {
    let dir = config.data_dir.as_path();
    let mut snapshots = snapfile::list_snapshots(dir)
        .map_err(|e| NodeError::Recovery(format!("cannot list snapshots: {e}")))?;
    snapshots.sort_by_key(|info| std::cmp::Reverse(info.seq));
    for snapfile::SnapshotInfo { seq, path } in snapshots {
        match snapfile::read_snapshot(&path) {
            Ok((read_seq, hash, snapshot)) => {
                let engine = Engine::from_snapshot(&snapshot, config.engine_config())
                    .map_err(|e| NodeError::Recovery(format!("{}: {e}", path.display())))?;
                if engine.state_hash() != hash || read_seq != seq {
                    return Err(NodeError::Recovery(format!(
                        "{}: restored state hash {:032x} differs from the recorded {hash:032x}",
                        path.display(),
                        engine.state_hash()
                    )));
                }
                report.snapshot_file = Some(path.display().to_string());
                return Ok((engine, seq));
            }
            Err(e) => {
                let line = format!("{}: {e}", path.display());
                eprintln!("bourse-node: recovery: skipping unreadable snapshot {line}");
                report.skipped_snapshots.push(line);
            }
        }
    }
    Ok((Engine::new(config.engine_config()), 0))
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
    let dir = config.data_dir.as_path();
    let mut base: Option<(u64, Engine)> = None;
    let mut snapshots = snapfile::list_snapshots(dir)
        .map_err(|e| NodeError::Recovery(format!("cannot list snapshots: {e}")))?;
    snapshots.sort_by_key(|info| std::cmp::Reverse(info.seq));
    for snapfile::SnapshotInfo { seq, path } in snapshots {
        if seq >= from_seq {
            continue;
        }
        if let Ok((_, _, snap)) = snapfile::read_snapshot(&path) {
            if let Ok(engine) = Engine::from_snapshot(&snap, config.engine_config()) {
                base = Some((seq, engine));
                break;
            }
        }
    }
    let (start, mut engine) = base.unwrap_or_else(|| (0, Engine::new(config.engine_config())));
    let mut out = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let reader =
        crate::journal::read_journal(dir, start + 1, crate::journal::ReadMode::StopAtTornTail)
            .map_err(|e| match e {
                JournalError::Compacted { .. } => NodeError::EventsGone(from_seq),
                other => NodeError::Journal(other),
            })?;
    for r in reader {
        let r = r?;
        if r.seq > upto || out.len() >= max {
            break;
        }
        events.clear();
        engine.apply(&r.command, &mut events);
        if r.seq >= from_seq {
            out.push(CommandEvents {
                origin: r.origin,
                seq: r.seq,
                timestamp_ns: r.timestamp_ns,
                events: events.clone(),
            });
        }
    }
    Ok(out)
}

/// Replay a whole journal directory (snapshot + records) into a fresh engine without changing
/// anything on disk; for tools and tests that check a node from another process.
pub fn replay_directory(config: &NodeConfig) -> Result<(Engine, RecoveryReport), NodeError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let (mut engine, snapshot_seq) = newest_snapshot(config, &mut report)?;
    let mut expected = snapshot_seq + 1;
    let mut events = Vec::new();
    let scan = recover_journal_from(config.data_dir.as_path(), false, expected, |r: Record| {
        if r.seq != expected {
            return Err(NodeError::Recovery(format!("gap before seq {}", r.seq)));
        }
        events.clear();
        engine.apply(&r.command, &mut events);
        expected += 1;
        report.last_timestamp_ns = r.timestamp_ns;
        Ok(())
    })?;
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
    Ok((engine, report))
}
