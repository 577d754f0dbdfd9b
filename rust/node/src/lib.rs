//! # bourse-node
//!
//! The durable pipeline around the engine: one sequencer giving every command a sequence
//! number and a timestamp, a journal that makes it durable before anything is acknowledged,
//! snapshots, crash recovery, and the threads (joined by lock-free rings) that run them.

pub mod affinity;
pub mod bench;
pub mod config;
pub mod journal;
pub mod latency;
pub mod node;
pub mod recovery;
pub mod references;
pub mod ring;
pub mod snapfile;
pub mod wait;

pub use config::{Cores, NodeConfig, Pipeline};
pub use journal::Durability;
pub use latency::HistogramStats;
pub use node::{
    Ack, Client, CommandEvents, HookTurn, Node, NodeError, NodeStats, Notify, Origin, PipelineHook,
    SubmitError, Subscription,
};
pub use recovery::RecoveryReport;
pub use references::LastReferences;
pub use wait::WaitStrategy;
