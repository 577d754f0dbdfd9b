//! Benchmark helpers for `bourse bench`: the disk's sync latency and journal read speed.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::{read_journal, JournalError, ReadMode};

/// Latency of appending a record and `fdatasync`ing it on one disk.
#[derive(Clone, Debug)]
pub struct FsyncLatency {
    /// Samples taken.
    pub samples: u64,
    /// Bytes appended per sample.
    pub record_bytes: usize,
    /// `write(2)` + `fdatasync(2)`, nanoseconds.
    pub write_sync_ns: Histogram<u64>,
    /// `write(2)` alone, nanoseconds.
    pub write_ns: Histogram<u64>,
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "min_ns": h.min(),
        "p50_ns": h.value_at_quantile(0.50),
        "p90_ns": h.value_at_quantile(0.90),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "max_ns": h.max(),
        "mean_ns": h.mean().round() as u64,
    })
}

impl FsyncLatency {
    /// A JSON summary: top-level percentiles of write + fdatasync (`p50_ns`, `p99_ns`,
    /// `p999_ns`, ...), `ops_per_sec` (syncs per second, one at a time) and the write-only
    /// percentiles under `write`.
    pub fn to_json(&self) -> Value {
        let mut v = summary(&self.write_sync_ns);
        let mean = self.write_sync_ns.mean();
        v["bench"] = json!("fsync");
        v["samples"] = json!(self.samples);
        v["record_bytes"] = json!(self.record_bytes);
        v["ops_per_sec"] = json!(if mean > 0.0 { (1e9 / mean).round() } else { 0.0 });
        v["write"] = summary(&self.write_ns);
        v
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits; the bounds are valid, so this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Measure `samples` writes of `record_bytes` bytes to a new file in `dir`, each followed by
/// `fdatasync` — the cost of one group commit under [`super::Durability::Fsync`]. The file
/// grows as a journal segment does, or, if `preallocated`, is zero-filled and synced first
/// and then overwritten from the front, as a preallocated segment is (see
/// [`super::JournalConfig::preallocate`]). Deleted afterwards.
pub fn fsync_latency(
    dir: &Path,
    samples: u64,
    record_bytes: usize,
    preallocated: bool,
) -> Result<FsyncLatency, JournalError> {
    std::fs::create_dir_all(dir).map_err(|e| JournalError::io("create directory", dir, e))?;
    let path = dir.join(format!("fsync-bench-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&path).map_err(|e| JournalError::io("create", &path, e))?;
        let record = vec![0xA5u8; record_bytes.max(1)];
        if preallocated {
            let zeros = vec![0u8; 1 << 20];
            let mut left = samples * record.len() as u64;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n]).map_err(|e| JournalError::io("zero-fill", &path, e))?;
                left -= n as u64;
            }
            file.sync_all()
                .and_then(|()| file.rewind())
                .map_err(|e| JournalError::io("zero-fill", &path, e))?;
        }
        let mut write_sync_ns = histogram();
        let mut write_ns = histogram();
        for _ in 0..samples {
            let t = Instant::now();
            file.write_all(&record).map_err(|e| JournalError::io("write", &path, e))?;
            let w = t.elapsed().as_nanos() as u64;
            file.sync_data().map_err(|e| JournalError::io("fdatasync", &path, e))?;
            let ws = t.elapsed().as_nanos() as u64;
            write_ns.saturating_record(w.max(1));
            write_sync_ns.saturating_record(ws.max(1));
        }
        Ok(FsyncLatency { samples, record_bytes, write_sync_ns, write_ns })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Read and decode the whole journal in `dir` (every record validated, as on recovery, but
/// not applied): `(records, seconds)`. Stops quietly at a torn tail.
pub fn replay_speed(dir: &Path) -> Result<(u64, f64), JournalError> {
    let t = Instant::now();
    let mut records = 0u64;
    let mut check = 0u64;
    for r in read_journal(dir, 0, ReadMode::StopAtTornTail)? {
        let r = r?;
        records += 1;
        check = check.wrapping_add(r.timestamp_ns);
    }
    std::hint::black_box(check);
    Ok((records, t.elapsed().as_secs_f64()))
}
