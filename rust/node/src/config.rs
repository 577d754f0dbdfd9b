//! Node configuration: where the data lives, how durable an acknowledgement is, and how the
//! threads are placed.
//!
//! Read from JSON or TOML by the Python front end (`bourse node`), with unknown keys
//! rejected; every field has a default suited to a small machine.

use std::path::PathBuf;

use bourse_engine::EngineConfig;
use serde::{Deserialize, Serialize};

use crate::journal::Durability;
use crate::wait::WaitStrategy;

/// Cores to pin the pipeline threads to; `None` leaves a thread to the scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cores {
    /// The sequencer and journal writer; in the `single` pipeline, the one pipeline thread.
    pub sequencer: Option<usize>,
    /// The engine (unused in the `single` pipeline).
    pub engine: Option<usize>,
    /// The publisher (acknowledgements and the event log; unused in the `single` pipeline).
    pub publisher: Option<usize>,
    /// The binary gateway's I/O thread, when a gateway runs in front of the node.
    pub gateway: Option<usize>,
}

/// How the pipeline's stages (sequencer + journal, engine, publisher) are put on threads.
/// See [`crate::node`] for what each mode does and when to use which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pipeline {
    /// One thread per stage, joined by rings and doorbells: the stages overlap (the engine
    /// applies one batch while the next is being made durable). For machines with a core per
    /// stage.
    #[default]
    Threads,
    /// One thread runs the three stages in turn (commit a batch, apply it, publish it, back
    /// to the clients): no wake-up between stages, and two fewer runnable threads. For small
    /// machines where the stages would otherwise fight over the cores. Pinned to
    /// `cores.sequencer`.
    Single,
}

impl std::str::FromStr for Pipeline {
    type Err = String;

    /// `threads` or `single`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "threads" => Ok(Pipeline::Threads),
            "single" => Ok(Pipeline::Single),
            other => Err(format!("unknown pipeline mode {other:?}: expected threads or single")),
        }
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pipeline::Threads => "threads",
            Pipeline::Single => "single",
        })
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Directory for journal segments and snapshots; created if missing.
    pub data_dir: PathBuf,
    /// When a command counts as durable (and may be acknowledged).
    pub durability: Durability,
    /// A journal segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Zero-fill each journal segment before use, so a group commit's `fdatasync` writes
    /// data only ([`crate::journal::JournalConfig::preallocate`]). Off by default because it
    /// writes `segment_bytes` of zeros at start-up and per segment; the shipped
    /// `bourse.toml` turns it on.
    pub preallocate_segments: bool,
    /// Take a snapshot after this many commands (0: never by count).
    pub snapshot_every_commands: u64,
    /// Take a snapshot when this many seconds of command time have passed (0: never by time).
    pub snapshot_every_secs: u64,
    /// Snapshots to keep; journal segments older than the oldest kept one are deleted.
    pub keep_snapshots: usize,
    /// Capacity of each ring between threads (rounded up to a power of two).
    pub ring_capacity: usize,
    /// How idle threads wait: `busy_spin` on dedicated cores, `spin_then_park` on a small
    /// machine.
    pub wait: WaitStrategy,
    /// Thread placement.
    pub cores: Cores,
    /// One thread per stage (`threads`, the default) or one thread for all three (`single`).
    pub pipeline: Pipeline,
    /// Orders the engine preallocates for.
    pub order_capacity: usize,
    /// Price levels per book side the engine preallocates for.
    pub levels_per_side: usize,
    /// Command results kept in memory for event consumers; older ones are re-derived from
    /// the journal.
    pub event_window: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("data/node"),
            durability: Durability::Fsync,
            segment_bytes: 64 << 20,
            preallocate_segments: false,
            snapshot_every_commands: 1_000_000,
            snapshot_every_secs: 300,
            keep_snapshots: 2,
            ring_capacity: 1 << 16,
            wait: WaitStrategy::SPIN_THEN_PARK,
            cores: Cores::default(),
            pipeline: Pipeline::default(),
            order_capacity: 1 << 20,
            levels_per_side: 4096,
            event_window: 1 << 16,
        }
    }
}

impl NodeConfig {
    /// The largest ring capacity accepted.
    pub const MAX_RING_CAPACITY: usize = 1 << 24;
    /// The largest in-memory event window accepted (commands).
    pub const MAX_EVENT_WINDOW: usize = 1 << 24;

    /// Refuse values that would exhaust memory or overflow.
    pub fn validate(&self) -> Result<(), String> {
        self.engine_config().validate()?;
        if self.ring_capacity == 0 || self.ring_capacity > Self::MAX_RING_CAPACITY {
            return Err(format!(
                "ring_capacity must be 1..={}, not {}",
                Self::MAX_RING_CAPACITY,
                self.ring_capacity
            ));
        }
        if self.event_window > Self::MAX_EVENT_WINDOW {
            return Err(format!(
                "event_window must be at most {}, not {}",
                Self::MAX_EVENT_WINDOW,
                self.event_window
            ));
        }
        if !(512..=1 << 40).contains(&self.segment_bytes) {
            return Err(format!("segment_bytes must be 512 B..=1 TiB, not {}", self.segment_bytes));
        }
        if self.snapshot_every_commands != 0 && self.snapshot_every_commands < 10 {
            return Err(format!(
                "snapshot_every_commands must be 0 (off) or at least 10, not {}",
                self.snapshot_every_commands
            ));
        }
        if self.snapshot_every_secs > u64::MAX / 1_000_000_000 {
            return Err(format!("snapshot_every_secs {} is too large", self.snapshot_every_secs));
        }
        Ok(())
    }

    /// The engine's preallocation.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig { order_capacity: self.order_capacity, levels_per_side: self.levels_per_side }
    }
}
