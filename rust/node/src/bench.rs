//! Benchmarks of the durable pipeline: `bourse bench pipeline` and `bourse bench replay`.
//!
//! * **pipeline**: a node in a temporary directory, the exchange-core workload of
//!   [`bourse_tools::bench`] submitted by one client thread that keeps up to `window`
//!   commands in flight; every command's submit-to-ack time goes into an HdrHistogram. An
//!   ack means the command was journaled under the chosen durability policy, applied, and
//!   its events published.
//! * **replay**: the same workload written to a journal, then timed through recovery
//!   (read, checksum, decode, apply) — the restart speed. Also reports this disk's
//!   write + fdatasync latency for context.
//!
//! Each prints one JSON line with `ops_per_sec`, `p50_ns`, `p99_ns`, `p999_ns` (and more).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bourse_engine::Event;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::NodeConfig;
use crate::journal::{fsync_latency, Durability, JournalConfig, JournalWriter};
use crate::node::{Node, SubmitError};
use crate::recovery;

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("bourse-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The result of `bench pipeline`.
#[derive(Debug, Serialize)]
pub struct PipelineReport {
    /// Always "pipeline".
    pub bench: &'static str,
    /// Durability policy.
    pub policy: &'static str,
    /// Commands measured.
    pub ops: u64,
    /// Commands in flight at most.
    pub window: usize,
    /// Throughput, commands acknowledged per second.
    pub ops_per_sec: f64,
    /// Submit-to-ack latency percentiles, ns.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
    /// Journal group commits.
    pub commits: u64,
    /// Mean commands per commit.
    pub mean_batch: f64,
    /// Times the submission ring was full.
    pub busy: u64,
    /// Rejected commands (0 for a correct workload).
    pub rejects: u64,
    /// Engine state hash at the end.
    pub state_hash: String,
}

fn percentiles(h: &Histogram<u64>) -> (u64, u64, u64, u64, u64) {
    (
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    )
}

/// Run the pipeline benchmark; one JSON line.
pub fn pipeline(policy: Durability, ops: u64, window: usize, seed: u64) -> Result<String, String> {
    let workload = bourse_tools::bench::build("exchange-core", ops, seed)?;
    let tmp = TempDir::new("bench-pipeline")?;
    let config = NodeConfig {
        data_dir: tmp.0.clone(),
        durability: policy,
        snapshot_every_commands: 0,
        snapshot_every_secs: 0,
        order_capacity: workload.config.order_capacity,
        levels_per_side: workload.config.levels_per_side,
        event_window: 1 << 16,
        ..NodeConfig::default()
    };
    let node = Node::start(config).map_err(|e| e.to_string())?;
    let mut client = node.client().map_err(|e| e.to_string())?;
    for cmd in &workload.setup {
        client.call(*cmd, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    }
    let window = window.clamp(1, node.config().ring_capacity);
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut sent_at: Vec<Instant> = Vec::with_capacity(workload.commands.len());
    let (mut next, mut acked, mut busy, mut rejects) = (0usize, 0usize, 0u64, 0u64);
    let total = workload.commands.len();
    let commits_before = node.stats().commits;
    let started = Instant::now();
    while acked < total {
        while next < total && next - acked < window {
            match client.submit(workload.commands[next], next as u64) {
                Ok(()) => {
                    sent_at.push(Instant::now());
                    next += 1;
                }
                Err(SubmitError::Busy(_)) => {
                    busy += 1;
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let ack = if next - acked >= window || next == total {
            client.ack_timeout(Duration::from_secs(30))
        } else {
            client.try_ack()
        };
        if let Some(ack) = ack {
            let at = sent_at[ack.correlation as usize];
            hist.saturating_record(at.elapsed().as_nanos() as u64);
            if matches!(ack.events.first(), Some(Event::Rejected { .. })) {
                rejects += 1;
            }
            acked += 1;
        } else if next - acked >= window || next == total {
            return Err(format!("no acknowledgement within 30 s ({acked} of {total})"));
        }
    }
    let elapsed = started.elapsed();
    let stats = node.stats();
    let state_hash =
        node.query(|e| format!("{:032x}", e.state_hash())).map_err(|e| e.to_string())?;
    drop(client);
    drop(node);
    let commits = stats.commits - commits_before;
    let (p50, p90, p99, p999, max) = percentiles(&hist);
    let report = PipelineReport {
        bench: "pipeline",
        policy: policy.as_str(),
        ops: total as u64,
        window,
        ops_per_sec: total as f64 / elapsed.as_secs_f64(),
        p50_ns: p50,
        p90_ns: p90,
        p99_ns: p99,
        p999_ns: p999,
        max_ns: max,
        commits,
        mean_batch: total as f64 / commits.max(1) as f64,
        busy,
        rejects,
        state_hash,
    };
    serde_json::to_string(&report).map_err(|e| e.to_string())
}

/// The result of `bench replay`.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// Always "replay".
    pub bench: &'static str,
    /// Commands replayed.
    pub ops: u64,
    /// Replay speed on restart (read, checksum, decode, apply), commands per second.
    pub ops_per_sec: f64,
    /// Journal bytes read.
    pub journal_bytes: u64,
    /// Recovery wall time, ms.
    pub elapsed_ms: f64,
    /// Time to replay one record (read, checksum, decode, apply), timed one by one in a
    /// second pass: median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Maximum, ns.
    pub max_ns: u64,
    /// This disk's write + fdatasync latency for one small record, for context: median, ns.
    pub fsync_p50_ns: u64,
    /// 99th percentile, ns.
    pub fsync_p99_ns: u64,
    /// 99.9th percentile, ns.
    pub fsync_p999_ns: u64,
    /// Maximum, ns.
    pub fsync_max_ns: u64,
    /// The same into a zero-filled file (a preallocated segment): median, ns.
    pub fsync_preallocated_p50_ns: u64,
    /// 99th percentile, ns.
    pub fsync_preallocated_p99_ns: u64,
    /// 99.9th percentile, ns.
    pub fsync_preallocated_p999_ns: u64,
    /// Maximum, ns.
    pub fsync_preallocated_max_ns: u64,
    /// How long the engine pauses to take a snapshot of the replayed state, ns.
    pub snapshot_pause_ns: u64,
    /// Writing that snapshot (encode, write, fsync, rename; off the engine thread), ms.
    pub snapshot_write_ms: f64,
    /// Open orders in that state.
    pub open_orders: usize,
    /// State hash after replay; equals a direct apply of the same commands.
    pub state_hash: String,
    /// Whether it does.
    pub deterministic: bool,
}

/// Run the replay benchmark; one JSON line.
pub fn replay(ops: u64, seed: u64, fsync_samples: usize) -> Result<String, String> {
    let workload = bourse_tools::bench::build("exchange-core", ops, seed)?;
    let tmp = TempDir::new("bench-replay")?;
    let journal_config = JournalConfig {
        dir: tmp.0.clone(),
        segment_bytes: 256 << 20,
        durability: Durability::None,
        preallocate: false,
    };
    let mut writer = JournalWriter::open(&journal_config, 1).map_err(|e| e.to_string())?;
    let mut seq = 1u64;
    for cmd in workload.setup.iter().chain(&workload.commands) {
        writer.append(seq, seq, cmd).map_err(|e| e.to_string())?;
        seq += 1;
        if seq % 4096 == 0 {
            writer.commit().map_err(|e| e.to_string())?;
        }
    }
    writer.commit().map_err(|e| e.to_string())?;
    writer.sync().map_err(|e| e.to_string())?;
    drop(writer);
    let journal_bytes = std::fs::read_dir(&tmp.0)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();

    let config = NodeConfig {
        data_dir: tmp.0.clone(),
        order_capacity: workload.config.order_capacity,
        levels_per_side: workload.config.levels_per_side,
        // The node's own default: recovery refills the in-memory event window as it replays.
        ..NodeConfig::default()
    };
    let started = Instant::now();
    let recovered = recovery::recover(&config).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let replayed = recovered.report.replayed;

    let mut direct = workload.engine()?;
    let mut events = Vec::new();
    for cmd in &workload.commands {
        events.clear();
        direct.apply(cmd, &mut events);
    }
    let hash = recovered.engine.state_hash();
    let t = Instant::now();
    let snapshot = recovered.engine.snapshot();
    let snapshot_hash = recovered.engine.state_hash();
    let snapshot_pause_ns = t.elapsed().as_nanos() as u64;
    let t = Instant::now();
    let last_references = recovered.last_references.to_sorted_vec();
    crate::snapfile::write_snapshot(&tmp.0, replayed, snapshot_hash, &snapshot, &last_references)
        .map_err(|e| e.to_string())?;
    let snapshot_write_ms = t.elapsed().as_secs_f64() * 1e3;
    let lat = fsync_latency(&tmp.0, fsync_samples as u64, 64, false).map_err(|e| e.to_string())?;
    let h = &lat.write_sync_ns;
    let pre = fsync_latency(&tmp.0, fsync_samples as u64, 64, true).map_err(|e| e.to_string())?;
    let hp = &pre.write_sync_ns;
    // Per-record replay time: a second, timed pass over the same journal.
    let mut per_record =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    {
        let mut engine = bourse_engine::Engine::new(workload.config);
        let mut reader = crate::journal::read_journal(&tmp.0, 0, crate::journal::ReadMode::Strict)
            .map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        loop {
            let t = Instant::now();
            let Some(r) = reader.next() else { break };
            let r = r.map_err(|e| e.to_string())?;
            events.clear();
            engine.apply(&r.command, &mut events);
            per_record.saturating_record(t.elapsed().as_nanos() as u64);
        }
    }
    let (p50, _, p99, p999, max) = percentiles(&per_record);
    let report = ReplayReport {
        bench: "replay",
        ops: replayed,
        ops_per_sec: replayed as f64 / elapsed.as_secs_f64(),
        journal_bytes,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        p50_ns: p50,
        p99_ns: p99,
        p999_ns: p999,
        max_ns: max,
        fsync_p50_ns: h.value_at_quantile(0.50),
        fsync_p99_ns: h.value_at_quantile(0.99),
        fsync_p999_ns: h.value_at_quantile(0.999),
        fsync_max_ns: h.max(),
        fsync_preallocated_p50_ns: hp.value_at_quantile(0.50),
        fsync_preallocated_p99_ns: hp.value_at_quantile(0.99),
        fsync_preallocated_p999_ns: hp.value_at_quantile(0.999),
        fsync_preallocated_max_ns: hp.max(),
        snapshot_pause_ns,
        snapshot_write_ms,
        open_orders: recovered.engine.open_order_count(),
        state_hash: format!("{hash:032x}"),
        deterministic: hash == direct.state_hash(),
    };
    serde_json::to_string(&report).map_err(|e| e.to_string())
}
