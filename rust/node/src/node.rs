//! The node: the engine running behind a sequencer and a journal, on its own threads.
//!
//! ```text
//!  Client ─ring─┐                                                        ┌─ring─► Client (acks)
//!  Client ─ring─┼─► sequencer + journal ─ring─► engine ─ring─► publisher ─┼─ring─► Client (acks)
//!  Client ─ring─┘   seq, timestamp,            apply,         event log   └──────► event readers
//!                   group commit (fsync)       snapshots
//! ```
//!
//! * **Sequencer + journal thread.** Drains every client's ring in turn, gives each command
//!   the next sequence number and a timestamp (the only clock read on the command path), and
//!   appends it to the journal batch. When the rings are drained (or the batch is full) it
//!   commits the batch — one write and, under `fsync`, one fdatasync — and only then passes
//!   the batch on. So the engine, and everything after it, only ever sees durable commands:
//!   no acknowledgement, event or market data can leave before its command is durable.
//! * **Engine thread.** Applies commands in sequence order and keeps the last reference per
//!   source ([`crate::references`]: what [`Node::last_reference`] answers); takes snapshots
//!   of both (the engine is paused only while its state is copied; writing happens on a
//!   background thread).
//! * **Publisher thread.** Appends each command's events to the event log and hands each
//!   client its acknowledgement. A client that does not read its acknowledgements loses them
//!   (it is told) rather than stalling anyone; the event log still has everything.
//!
//! Back-pressure is explicit: every ring is bounded; a client whose ring is full gets
//! [`SubmitError::Busy`] back with its command; the sequencer stops draining clients while
//! the engine's ring is full; the engine waits for the publisher's ring. The engine never
//! waits on a client.
//!
//! # Stages and pipeline modes
//!
//! Each of the three is a *stage* (`SequencerStage`, `EngineStage`, `PublisherStage`) with a
//! `step` that does one round of its work — drain the clients and commit one batch; apply one
//! burst and answer one control message; publish one burst — and reports whether it did
//! anything, or that it is finished. A step never blocks on another stage: where a stage's
//! output ring is full, it keeps what it could not hand on (the sequencer its durable batch,
//! the engine one applied output), takes nothing new, and returns; its next step hands that on
//! first. So "waits for the ring" above means "steps without progress until there is room".
//! [`NodeConfig::pipeline`](crate::config::Pipeline) decides how the steps are run; the rings
//! between the stages, and everything above, are the same in both modes:
//!
//! * **`threads`** (the default): one thread per stage (`bourse-sequencer`, `bourse-engine`,
//!   `bourse-publisher`), each `loop { step; idle by the wait strategy if it did nothing }`,
//!   parking on its own doorbell. The stages overlap — the engine applies one batch while
//!   the next is being written and synced — but every hop can cost a thread wake-up, and
//!   they need a core each to shine. Cores: `cores.sequencer`, `cores.engine`,
//!   `cores.publisher`.
//! * **`single`**: one thread (`bourse-pipeline`, pinned to `cores.sequencer`; the other two
//!   core settings are unused) runs the stages in turn: the sequencer stage commits a batch —
//!   taking no more than the engine's ring has room for, and that ring is empty whenever
//!   this stage runs, so the batch is always handed on whole — then the engine and publisher
//!   stages step alternately until both are idle, so everything durable is applied and
//!   published (event log, subscribers and their notify callbacks, acknowledgements) before
//!   the next commit; then back to the clients. The thread idles by the wait strategy only
//!   after a turn in which no stage did anything, on the one doorbell all three share in this
//!   mode (clients, registrations, control messages and stop all ring it). No wake-up
//!   between stages and two fewer runnable threads: for machines with fewer free cores than
//!   runnable threads (this 2-core box with a gateway and a load generator in front). The
//!   price: nothing overlaps, so under `fsync` no command is applied while a batch is being
//!   synced, and the thread's turn is the sum of the three stages' work.
//!
//! Either way a stage finishes in order: the sequencer once stopping and a drain found every
//! client ring empty (or the journal failed, or the engine is gone); the engine once the
//! sequencer finished and its ring is empty, after which it takes the final snapshot; the
//! publisher once the engine finished and its ring is empty. In `threads` mode a stage's done
//! flag is raised as its thread exits; in `single` mode as the stage finishes, and all of
//! them if the thread ends early. A panic in any stage stops the node (`StopOnPanic`); in
//! `single` mode it ends all three stages at once (commands durable but not yet applied are
//! applied by the next recovery; clients waiting for acknowledgements see `Stopped`).
//! Snapshot files are written by a background thread (`bourse-snapshots`) in both modes, so
//! the engine stage waits on it only for an asked-for snapshot, never on itself.
//!
//! Threads can be pinned to cores and idle with the configured [`crate::wait::WaitStrategy`].
//!
//! # Hooks (`single` pipeline only)
//!
//! [`Node::attach_hook`] hands the `single` pipeline thread a [`PipelineHook`] that it runs
//! once per turn, after the sequencer, engine and publisher steps, with the engine and the
//! last applied sequence number (everything up to it is published by then). It exists for
//! the embedded binary gateway (`bourse_gateway::server`, `GatewayConfig::embedded`): its
//! socket I/O runs on this thread, so a request goes socket → submission ring → journal →
//! engine → event log → socket without a thread wake-up. A turn reads the sockets and
//! submits; the next sequencer step commits what it submitted; the engine and publisher
//! steps apply and publish it; the hook's next turn routes the results and writes them.
//!
//! Rules: a hook never blocks on the node (no [`Node::query`]: the thread that would answer
//! is the one running it; it reads the engine it is handed instead). While a hook is
//! attached the thread **never parks** — a parked thread would not see socket traffic — so
//! an idle turn busy-spins under `busy_spin` and yields under `yield` and `spin_then_park`:
//! an embedded gateway is meant for a pipeline thread with a core of its own
//! (`cores.sequencer`). A hook returns [`HookTurn::Detach`] to be dropped. Detach hooks
//! before stopping the node (the gateway's `stop` does): one still attached when the stages
//! finish is dropped without a further turn.
//!
//! # Figures
//!
//! [`Node::stats`] reads relaxed atomics only (any thread, any time). What it costs the
//! command path: one relaxed add per submission (the `submitted` count behind
//! `sequencer_ring_depth`), one per journal batch (`sequenced`), and for the
//! [`crate::latency`] histograms one clock read and two relaxed adds per applied command
//! (`engine_apply_ns`) and two relaxed adds per group commit, which was already timed
//! (`journal_commit_ns`). The ring depths are derived from these counters and the sequence
//! numbers, not read from the rings.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bourse_engine::{Command, Engine, Event};
use serde::Serialize;
use thiserror::Error;

use crate::affinity::pin_current_thread;
use crate::config::{NodeConfig, Pipeline};
pub use crate::journal::Origin;
use crate::journal::{JournalConfig, JournalError, JournalWriter};
use crate::latency::{HistogramStats, LatencyHistogram};
use crate::recovery::{self, RecoveryReport};
use crate::references::LastReferences;
use crate::ring::{ring, CachePadded, Consumer, Doorbell, Producer};
use crate::snapfile;
use crate::wait::Idle;

/// A command as a client hands it in.
#[derive(Clone, Copy, Debug)]
pub struct Submission {
    /// The command.
    pub command: Command,
    /// The submitter, journaled with the command (see [`Origin::source`]).
    pub source: u64,
    /// The client's own reference, echoed in the acknowledgement and journaled as
    /// [`Origin::reference`].
    pub correlation: u64,
}

/// What a client gets back once its command is durable and applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ack {
    /// The client's reference.
    pub correlation: u64,
    /// The command's sequence number.
    pub seq: u64,
    /// The sequencer's timestamp, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// What the engine did.
    pub events: Vec<Event>,
}

/// One command's events, as the event log keeps them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandEvents {
    /// Sequence number.
    pub seq: u64,
    /// Sequencer timestamp, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Who submitted the command, as journaled with it.
    pub origin: Origin,
    /// The command itself (what was asked: consumers that render replies need its kind
    /// and account, e.g. to tell a cancel-all from a single cancel).
    pub command: Command,
    /// The events.
    pub events: Vec<Event>,
}

/// A live feed of the event stream: every command's events, in sequence order, from the
/// moment the publisher takes the subscription on (shortly after [`Node::subscribe`]; the
/// first entry's `seq` says where it starts, and [`Node::events_from`] fills anything before). Made by [`Node::subscribe`]. A subscriber that falls behind by more
/// than its ring loses entries and is told ([`Subscription::lagged`]); it catches up with
/// [`Node::events_from`].
pub struct Subscription {
    feed: Consumer<Arc<CommandEvents>>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// The next command's events, if published.
    pub fn try_next(&mut self) -> Option<Arc<CommandEvents>> {
        self.feed.pop()
    }

    /// Whether nothing is waiting to be taken right now.
    pub fn is_empty(&self) -> bool {
        self.feed.is_empty()
    }

    /// Whether entries were dropped because this subscriber fell behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Whether entries were dropped since the last call, clearing the flag in the same step
    /// (so a drop that happens while catching up is not forgotten).
    pub fn take_lag(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

/// A new subscriber's ring, for the publisher.
struct SubscriberRegistration {
    feed: Producer<Arc<CommandEvents>>,
    lagged: Arc<AtomicBool>,
    notify: Option<Notify>,
}

/// Called by the publisher after it pushed entries into a subscriber's ring (see
/// [`Node::subscribe_with_notify`]).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Why a submission was not taken.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// The client's ring is full: back-pressure. The command is handed back.
    #[error("node busy: the submission ring is full")]
    Busy(Submission),
    /// The node is stopping or stopped.
    #[error("node stopped")]
    Stopped,
    /// No acknowledgement came in time; the command may still be applied.
    #[error("no acknowledgement in time; the command may still be applied")]
    Timeout,
}

/// Why the node cannot start or go on.
#[derive(Debug, Error)]
pub enum NodeError {
    /// File system trouble.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The journal refused.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Recovery found something it will not guess about.
    #[error("recovery failed: {0}")]
    Recovery(String),
    /// The configuration is not usable.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The node stopped by itself (e.g. the journal failed); commands after the last
    /// acknowledged one may or may not be durable.
    #[error("node failed: {0}")]
    Failed(String),
    /// A pipeline thread panicked; the node stopped.
    #[error("node thread {0} panicked")]
    ThreadPanicked(String),
    /// A snapshot could not be taken or written.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// The node is not running.
    #[error("node stopped")]
    Stopped,
    /// Events asked for are no longer available.
    #[error("events from seq {0} are no longer available")]
    EventsGone(u64),
}

/// Counters, readable while the node runs.
#[derive(Debug, Default)]
struct Counters {
    durable_seq: AtomicU64,
    applied_seq: AtomicU64,
    published_seq: AtomicU64,
    commits: AtomicU64,
    commit_records: AtomicU64,
    last_commit_ns: AtomicU64,
    snapshots: AtomicU64,
    last_snapshot_seq: AtomicU64,
    last_snapshot_pause_ns: AtomicU64,
    last_snapshot_write_ns: AtomicU64,
    acks_dropped: AtomicU64,
    busy_rejections: AtomicU64,
    /// Commands handed into the clients' submission rings since start (one relaxed add per
    /// submission, by the submitting thread; on its own cache line).
    submitted: CachePadded<AtomicU64>,
    /// Commands the sequencer took from those rings since start (one add per batch).
    sequenced: AtomicU64,
    /// The engine stage's time per command (one clock read and two relaxed adds per
    /// command; see `EngineStage::step`).
    engine_apply: LatencyHistogram,
    /// Write + sync of each journal group commit (the sequencer already timed it).
    journal_commit: LatencyHistogram,
}

/// A point-in-time view of the node's counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStats {
    /// Highest durable sequence number.
    pub durable_seq: u64,
    /// Highest sequence number applied by the engine.
    pub applied_seq: u64,
    /// Highest sequence number whose events are in the event log.
    pub published_seq: u64,
    /// Journal group commits.
    pub commits: u64,
    /// Commands over all commits.
    pub commit_records: u64,
    /// Duration of the last commit (write + sync), ns.
    pub last_commit_ns: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Sequence number of the last snapshot.
    pub last_snapshot_seq: u64,
    /// How long the engine paused for the last snapshot, ns.
    pub last_snapshot_pause_ns: u64,
    /// How long writing the last snapshot took (off the engine thread), ns.
    pub last_snapshot_write_ns: u64,
    /// Acknowledgements dropped because a client's ring was full.
    pub acks_dropped: u64,
    /// Submissions refused because a client's ring was full.
    pub busy_rejections: u64,
    /// Commands waiting in the clients' submission rings for the sequencer (submitted since
    /// start minus taken by the sequencer; read without a common cut, so approximate while
    /// commands flow, exact at rest).
    pub sequencer_ring_depth: u64,
    /// Durable commands waiting for the engine (in its ring, or in the sequencer's batch
    /// waiting for room there): `durable_seq - applied_seq`.
    pub engine_ring_depth: u64,
    /// Applied commands waiting for the publisher: `applied_seq - published_seq`.
    pub publisher_ring_depth: u64,
    /// The engine stage's time per command: from taking it off its ring to handing its
    /// events to the publisher's (a periodic snapshot's copy counts towards the command it
    /// follows).
    pub engine_apply_ns: HistogramStats,
    /// Duration of each journal group commit (one write and, under `fsync`, one sync).
    pub journal_commit_ns: HistogramStats,
}

/// The in-memory tail of the event stream, with a condition variable for readers.
struct EventLog {
    window: Mutex<VecDeque<Arc<CommandEvents>>>,
    capacity: usize,
    published: Condvar,
    /// Readers waiting on `published`. Changed only under the `window` lock, so a publisher
    /// that appended under that lock and then sees 0 here has no one to wake: it skips the
    /// `notify_all`, which is a system call every time otherwise (once per burst).
    waiters: AtomicUsize,
}

/// A query job for the engine stage: the engine, and the last applied sequence number.
type EngineQuery = Box<dyn FnOnce(&Engine, u64) + Send>;

/// What one [`PipelineHook::turn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookTurn {
    /// Made progress: the pipeline thread turns again at once.
    Worked,
    /// Nothing to do this turn.
    Idle,
    /// Finished for good: the hook is dropped (on the pipeline thread) and never turned again.
    Detach,
}

/// Work run **on the `single` pipeline thread**, once per turn, between the stages' steps
/// (see [`Node::attach_hook`] and the module docs, "Hooks").
pub trait PipelineHook: Send {
    /// One round of the hook's work. `engine` is the engine as of `applied_seq` (every
    /// command up to it applied, and — between turns — published). It must never block on
    /// the node (no [`Node::query`], [`Node::snapshot_now`], waiting for an
    /// acknowledgement or for events to be published): the thread that would answer is the
    /// one running it. Submitting (which never blocks) and reading the event log with a zero
    /// timeout are fine.
    fn turn(&mut self, engine: &Engine, applied_seq: u64) -> HookTurn;
}

/// Engine-thread control messages (off the hot path).
enum Control {
    /// Run a closure against the engine between commands, with the sequence number of the
    /// last command applied.
    Query(EngineQuery),
    /// Run a closure against the last-reference table between commands.
    References(Box<dyn FnOnce(&LastReferences) + Send>),
    /// Take a snapshot now; reply with its sequence number.
    Snapshot(Sender<Result<u64, String>>),
}

/// A new client's submission ring, for the sequencer.
struct SequencerRegistration {
    id: u32,
    submissions: Consumer<Submission>,
}

/// A new client's acknowledgement ring, for the publisher.
struct PublisherRegistration {
    id: u32,
    acks: Producer<Ack>,
    acks_lost: Arc<AtomicBool>,
    /// `false` for a client that takes its results from a subscription instead.
    wants_acks: bool,
    /// Called after a burst pushed acknowledgements into this client's ring (see
    /// [`Node::client_with_notify`]).
    notify: Option<Notify>,
}

/// A sequenced command on its way to the engine.
#[derive(Clone, Copy, Debug)]
struct Sequenced {
    seq: u64,
    timestamp_ns: u64,
    client: u32,
    origin: Origin,
    command: Command,
}

/// An applied command on its way to the publisher.
struct Output {
    seq: u64,
    timestamp_ns: u64,
    client: u32,
    origin: Origin,
    command: Command,
    events: Vec<Event>,
}

/// A snapshot on its way to the writer thread.
struct SnapshotJob {
    seq: u64,
    hash: u128,
    snapshot: bourse_engine::Snapshot,
    /// The last-reference table at `seq`, unsorted (the writer sorts it).
    last_references: Vec<(u64, u64)>,
    reply: Option<Sender<Result<u64, String>>>,
}

/// Client id of commands with no client (none today; reserved for internal producers).
const NO_CLIENT: u32 = u32::MAX;
/// Publisher rounds between sweeps for dropped clients and subscribers.
const CLIENT_SWEEP_ROUNDS: u64 = 1024;
/// Outputs the publisher handles per lock of the event log.
const PUBLISH_BURST: usize = 256;
/// Commands per journal batch at most.
const MAX_BATCH: usize = 4096;

struct Shared {
    config: NodeConfig,
    stop: AtomicBool,
    sequencer_done: AtomicBool,
    engine_done: AtomicBool,
    publisher_done: AtomicBool,
    snapshots_done: AtomicBool,
    /// Set by [`Node::stop`]: the engine takes a final snapshot as it exits and reports here.
    final_snapshot: Mutex<Option<Sender<Result<u64, String>>>>,
    /// Why the node stopped by itself (a journal failure), for [`Node::stop`] to report.
    failure: Mutex<Option<String>>,
    counters: Counters,
    events: EventLog,
    sequencer_doorbell: Doorbell,
    engine_doorbell: Doorbell,
    publisher_doorbell: Doorbell,
}

/// A running node. Dropping it stops it (without the final snapshot; call [`Node::stop`]).
pub struct Node {
    shared: Arc<Shared>,
    recovery: RecoveryReport,
    register_sequencer: Mutex<Sender<SequencerRegistration>>,
    register_publisher: Mutex<Sender<PublisherRegistration>>,
    register_subscriber: Mutex<Sender<SubscriberRegistration>>,
    control: Mutex<Sender<Control>>,
    /// Hooks for the `single` pipeline thread (`None` in `threads` mode).
    hooks: Option<Mutex<Sender<Box<dyn PipelineHook>>>>,
    /// Where the final snapshot's outcome arrives, once [`Node::begin_stop`] asked for it.
    final_reply: Mutex<Option<Receiver<Result<u64, String>>>>,
    next_client: AtomicU64,
    threads: Vec<JoinHandle<()>>,
}

/// A producer of commands with its own rings: one to the sequencer, one back for acks.
/// One thread at a time (`&mut self`); it may move between threads, since waiting for an
/// acknowledgement polls rather than parking on a doorbell.
pub struct Client {
    id: u32,
    source: u64,
    shared: Arc<Shared>,
    submissions: Producer<Submission>,
    acks: Consumer<Ack>,
    acks_lost: Arc<AtomicBool>,
}

/// `now + timeout`, saturating far in the future instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

impl Node {
    /// Recover from `config.data_dir` (creating it if new) and start the threads.
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        std::fs::create_dir_all(&config.data_dir)?;
        let recovered = recovery::recover(&config)?;
        let engine = recovered.engine;
        let references = recovered.last_references;
        let report = recovered.report;
        let next_seq = report.next_seq;

        let sequencer_doorbell = Doorbell::new();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            sequencer_done: AtomicBool::new(false),
            engine_done: AtomicBool::new(false),
            publisher_done: AtomicBool::new(false),
            snapshots_done: AtomicBool::new(false),
            final_snapshot: Mutex::new(None),
            failure: Mutex::new(None),
            counters: Counters::default(),
            events: EventLog {
                window: Mutex::new(VecDeque::with_capacity(config.event_window.min(1 << 20))),
                capacity: config.event_window.max(1),
                published: Condvar::new(),
                waiters: AtomicUsize::new(0),
            },
            engine_doorbell: match config.pipeline {
                Pipeline::Threads => Doorbell::new(),
                // One thread idles for all three stages: one doorbell, whichever is rung.
                Pipeline::Single => sequencer_doorbell.clone(),
            },
            publisher_doorbell: match config.pipeline {
                Pipeline::Threads => Doorbell::new(),
                Pipeline::Single => sequencer_doorbell.clone(),
            },
            sequencer_doorbell,
            config: config.clone(),
        });
        {
            let mut window = shared.events.window.lock().expect("event log lock");
            for ce in recovered.replayed_events {
                if window.len() == shared.events.capacity {
                    window.pop_front();
                }
                window.push_back(Arc::new(ce));
            }
        }
        let last = next_seq - 1;
        for c in [&shared.counters.durable_seq, &shared.counters.applied_seq] {
            c.store(last, Ordering::Relaxed);
        }
        shared.counters.published_seq.store(last, Ordering::Relaxed);
        shared.counters.last_snapshot_seq.store(report.snapshot_seq, Ordering::Relaxed);

        let journal = JournalWriter::open(
            &JournalConfig {
                dir: config.data_dir.clone(),
                segment_bytes: config.segment_bytes,
                durability: config.durability,
                preallocate: config.preallocate_segments,
            },
            next_seq,
        )?;

        let (to_engine, engine_in) = ring::<Sequenced>(config.ring_capacity);
        let (to_publisher, publisher_in) = ring::<Output>(config.ring_capacity);
        let (recycle_tx, recycle_rx) = ring::<Vec<Event>>(config.ring_capacity);
        let (register_sequencer, sequencer_registrations) = mpsc::channel();
        let (register_publisher, publisher_registrations) = mpsc::channel();
        let (register_subscriber, subscriber_registrations) = mpsc::channel();
        let (control, control_rx) = mpsc::channel::<Control>();
        // Bounded: a periodic snapshot that finds the writer still busy with two is skipped
        // rather than queued (see `engine_loop`).
        let (snapshot_tx, snapshot_rx) = mpsc::sync_channel::<SnapshotJob>(2);
        engine.check_invariants().map_err(NodeError::Recovery)?;

        let mut threads = Vec::new();
        // If a thread cannot be started, stop the ones that were before reporting it.
        let abort = |threads: &mut Vec<JoinHandle<()>>, e: std::io::Error| {
            shared.stop.store(true, Ordering::Release);
            shared.wake_all();
            for t in threads.drain(..) {
                let _ = t.join();
            }
            NodeError::Io(e)
        };
        let last_ts = report.last_timestamp_ns;
        let sequencer = SequencerStage {
            shared: shared.clone(),
            next_seq: journal.durable_seq() + 1,
            journal,
            to_engine,
            registrations: sequencer_registrations,
            clients: Vec::new(),
            batch: Vec::with_capacity(MAX_BATCH),
            handed: 0,
            last_ts,
            start: 0,
            fit_to_ring: config.pipeline == Pipeline::Single,
        };
        let engine = EngineStage {
            shared: shared.clone(),
            engine,
            references,
            input: engine_in,
            output: to_publisher,
            recycled: recycle_rx,
            control: control_rx,
            snapshots: snapshot_tx,
            pending: None,
            applied: next_seq - 1,
            last_ts,
            last_snapshot_seq: report.snapshot_seq,
            last_snapshot_ts: last_ts,
        };
        let publisher = PublisherStage {
            shared: shared.clone(),
            input: publisher_in,
            recycle: recycle_tx,
            registrations: publisher_registrations,
            subscriber_registrations,
            clients: Vec::new(),
            subscribers: Vec::new(),
            burst: Vec::with_capacity(PUBLISH_BURST),
            entries: Vec::with_capacity(PUBLISH_BURST),
            notify_clients: Vec::new(),
            rounds: 0,
        };
        let mut hooks = None;
        match config.pipeline {
            Pipeline::Threads => {
                let (s, cores) = (shared.clone(), config.cores);
                let spawned = spawn("bourse-sequencer", move || {
                    run_stage_thread(
                        s,
                        sequencer,
                        |s| &s.sequencer_done,
                        cores.sequencer,
                        |s| &s.sequencer_doorbell,
                    )
                });
                let spawned = spawned.map_err(|e| abort(&mut threads, e))?;
                threads.push(spawned);
                let s = shared.clone();
                let spawned = spawn("bourse-engine", move || {
                    run_stage_thread(
                        s,
                        engine,
                        |s| &s.engine_done,
                        cores.engine,
                        |s| &s.engine_doorbell,
                    )
                });
                let spawned = spawned.map_err(|e| abort(&mut threads, e))?;
                threads.push(spawned);
                let s = shared.clone();
                let spawned = spawn("bourse-publisher", move || {
                    run_stage_thread(
                        s,
                        publisher,
                        |s| &s.publisher_done,
                        cores.publisher,
                        |s| &s.publisher_doorbell,
                    )
                });
                let spawned = spawned.map_err(|e| abort(&mut threads, e))?;
                threads.push(spawned);
            }
            Pipeline::Single => {
                let s = shared.clone();
                let (tx, hooks_rx) = mpsc::channel();
                hooks = Some(Mutex::new(tx));
                let spawned = spawn("bourse-pipeline", move || {
                    run_single_thread(s, sequencer, engine, publisher, hooks_rx)
                });
                let spawned = spawned.map_err(|e| abort(&mut threads, e))?;
                threads.push(spawned);
            }
        }
        let s = shared.clone();
        let spawned = spawn("bourse-snapshots", move || snapshot_writer_loop(s, snapshot_rx));
        let spawned = spawned.map_err(|e| abort(&mut threads, e))?;
        threads.push(spawned);

        Ok(Node {
            shared,
            recovery: report,
            register_sequencer: Mutex::new(register_sequencer),
            register_publisher: Mutex::new(register_publisher),
            register_subscriber: Mutex::new(register_subscriber),
            control: Mutex::new(control),
            hooks,
            final_reply: Mutex::new(None),
            next_client: AtomicU64::new(0),
            threads,
        })
    }

    /// What recovery found and did when this node started.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// A new client with its own rings, journaling its commands under source 0 (unnamed).
    pub fn client(&self) -> Result<Client, NodeError> {
        self.client_for(0)
    }

    /// A new client whose commands are journaled under `source` (see [`Origin::source`]).
    pub fn client_for(&self, source: u64) -> Result<Client, NodeError> {
        self.new_client(source, true, None)
    }

    /// [`Node::client_for`], and have the publisher call `notify` after each burst in which
    /// it pushed acknowledgements into this client's ring, so that a reader can sleep until
    /// then instead of polling. `notify` runs on the publisher thread and must be quick and
    /// never block for long (set a flag and signal a condition variable, typically).
    pub fn client_with_notify(&self, source: u64, notify: Notify) -> Result<Client, NodeError> {
        self.new_client(source, true, Some(notify))
    }

    /// A client that gets no acknowledgements: it learns what its commands did from a
    /// subscription ([`Node::subscribe`]), where every command's events appear with its
    /// origin. The publisher then builds no acknowledgement for it (no copy of the events,
    /// no allocation). [`Client::call`] and the ack readers return nothing for it.
    pub fn client_without_acks(&self, source: u64) -> Result<Client, NodeError> {
        self.new_client(source, false, None)
    }

    fn new_client(
        &self,
        source: u64,
        wants_acks: bool,
        notify: Option<Notify>,
    ) -> Result<Client, NodeError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        let id = self.next_client.fetch_add(1, Ordering::Relaxed) as u32;
        let cap = self.shared.config.ring_capacity;
        let (submissions, submissions_rx) = ring::<Submission>(cap);
        let (acks_tx, acks) = ring::<Ack>(if wants_acks { cap } else { 1 });
        let acks_lost = Arc::new(AtomicBool::new(false));
        // The publisher learns of the client first, so that no acknowledgement can arrive
        // for a client it does not know.
        self.register_publisher
            .lock()
            .expect("registration lock")
            .send(PublisherRegistration {
                id,
                acks: acks_tx,
                acks_lost: acks_lost.clone(),
                wants_acks,
                notify,
            })
            .map_err(|_| NodeError::Stopped)?;
        self.register_sequencer
            .lock()
            .expect("registration lock")
            .send(SequencerRegistration { id, submissions: submissions_rx })
            .map_err(|_| NodeError::Stopped)?;
        self.shared.publisher_doorbell.notify();
        self.shared.sequencer_doorbell.notify();
        Ok(Client { id, source, shared: self.shared.clone(), submissions, acks, acks_lost })
    }

    /// Subscribe to the event stream from now on, through a ring of `capacity` entries.
    pub fn subscribe(&self, capacity: usize) -> Result<Subscription, NodeError> {
        self.register_subscription(capacity, None)
    }

    /// [`Node::subscribe`], and have the publisher call `notify` after each burst it pushed
    /// into this subscriber's ring: a subscriber that sleeps in something other than the
    /// ring (an I/O thread in `epoll_wait`) is woken that way. `notify` runs on the
    /// publisher thread and must be quick and never block (an `eventfd` write, typically
    /// only when the subscriber said it is about to sleep).
    pub fn subscribe_with_notify(
        &self,
        capacity: usize,
        notify: Notify,
    ) -> Result<Subscription, NodeError> {
        self.register_subscription(capacity, Some(notify))
    }

    fn register_subscription(
        &self,
        capacity: usize,
        notify: Option<Notify>,
    ) -> Result<Subscription, NodeError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        let (feed, rx) = ring::<Arc<CommandEvents>>(capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        self.register_subscriber
            .lock()
            .expect("registration lock")
            .send(SubscriberRegistration { feed, lagged: lagged.clone(), notify })
            .map_err(|_| NodeError::Stopped)?;
        self.shared.publisher_doorbell.notify();
        Ok(Subscription { feed: rx, lagged })
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Downstream first, so that a depth is never made negative by a later read of the
        // stage feeding it (they are clamped at 0 all the same).
        let published_seq = l(&c.published_seq);
        let applied_seq = l(&c.applied_seq);
        let durable_seq = l(&c.durable_seq);
        let sequenced = l(&c.sequenced);
        let submitted = l(&c.submitted);
        NodeStats {
            durable_seq,
            applied_seq,
            published_seq,
            commits: l(&c.commits),
            commit_records: l(&c.commit_records),
            last_commit_ns: l(&c.last_commit_ns),
            snapshots: l(&c.snapshots),
            last_snapshot_seq: l(&c.last_snapshot_seq),
            last_snapshot_pause_ns: l(&c.last_snapshot_pause_ns),
            last_snapshot_write_ns: l(&c.last_snapshot_write_ns),
            acks_dropped: l(&c.acks_dropped),
            busy_rejections: l(&c.busy_rejections),
            sequencer_ring_depth: submitted.saturating_sub(sequenced),
            engine_ring_depth: durable_seq.saturating_sub(applied_seq),
            publisher_ring_depth: applied_seq.saturating_sub(published_seq),
            engine_apply_ns: c.engine_apply.snapshot(),
            journal_commit_ns: c.journal_commit.snapshot(),
        }
    }

    /// Run `f` on the engine thread between two commands and return its result.
    pub fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        self.query_at(move |e, _| f(e)).map(|(r, _)| r)
    }

    /// [`Node::query`], also returning the sequence number of the last command the engine
    /// had applied when `f` ran: the state `f` saw is exactly the result of commands
    /// `1..=seq` (a consumer of the event stream lines a snapshot up with it).
    pub fn query_at<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, u64) -> R + Send + 'static,
    ) -> Result<(R, u64), NodeError> {
        let (tx, rx) = mpsc::channel();
        let job: EngineQuery = Box::new(move |e, seq| {
            let _ = tx.send((f(e, seq), seq));
        });
        self.control
            .lock()
            .expect("control lock")
            .send(Control::Query(job))
            .map_err(|_| NodeError::Stopped)?;
        self.shared.engine_doorbell.notify();
        rx.recv().map_err(|_| NodeError::Stopped)
    }

    /// The highest [`Origin::reference`] sequenced for `source`: the maximum over every
    /// command journaled with that source (whatever the engine made of it), 0 if there is
    /// none, and always 0 for source 0. Durable: it survives restarts, snapshots and
    /// compaction (see [`crate::references`]).
    ///
    /// It reflects commands the engine has **applied**: commands still in flight (in a
    /// client's ring, being journaled, queued for the engine) are not counted yet. A
    /// submitter that may have commands in flight must also keep its own maximum of the
    /// references it handed in and continue above the larger of the two. Answered by the
    /// engine thread between two bursts of commands (like [`Node::query`]); meant for login
    /// time, not the command path.
    pub fn last_reference(&self, source: u64) -> Result<u64, NodeError> {
        if source == 0 {
            return Ok(0);
        }
        self.query_references(move |t| t.get(source))
    }

    /// The whole last-reference table as `(source, last reference)`, in increasing source
    /// order; sources with no entry (and source 0) are left out. Same caveats as
    /// [`Node::last_reference`].
    pub fn last_references(&self) -> Result<Vec<(u64, u64)>, NodeError> {
        self.query_references(LastReferences::to_sorted_vec)
    }

    fn query_references<R: Send + 'static>(
        &self,
        f: impl FnOnce(&LastReferences) -> R + Send + 'static,
    ) -> Result<R, NodeError> {
        let (tx, rx) = mpsc::channel();
        let job: Box<dyn FnOnce(&LastReferences) + Send> = Box::new(move |t| {
            let _ = tx.send(f(t));
        });
        self.control
            .lock()
            .expect("control lock")
            .send(Control::References(job))
            .map_err(|_| NodeError::Stopped)?;
        self.shared.engine_doorbell.notify();
        rx.recv().map_err(|_| NodeError::Stopped)
    }

    /// Run `hook` on the pipeline thread, once per turn, until it returns
    /// [`HookTurn::Detach`]. Only with `pipeline = single` ([`NodeError::Config`] otherwise);
    /// see the module docs, "Hooks": while a hook is attached the thread never parks (it
    /// busy-spins under `busy_spin`, yields otherwise), so it wants a core of its own.
    /// Detach every hook before stopping the node: one still attached when the stages
    /// finish is dropped without another turn.
    pub fn attach_hook(&self, hook: Box<dyn PipelineHook>) -> Result<(), NodeError> {
        let Some(hooks) = &self.hooks else {
            return Err(NodeError::Config("a pipeline hook needs pipeline = single".to_string()));
        };
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        hooks.lock().expect("hook lock").send(hook).map_err(|_| NodeError::Stopped)?;
        self.shared.sequencer_doorbell.notify();
        Ok(())
    }

    /// Take a snapshot now; returns its sequence number once it is written.
    pub fn snapshot_now(&self) -> Result<u64, NodeError> {
        let (tx, rx) = mpsc::channel();
        self.control
            .lock()
            .expect("control lock")
            .send(Control::Snapshot(tx))
            .map_err(|_| NodeError::Stopped)?;
        self.shared.engine_doorbell.notify();
        rx.recv().map_err(|_| NodeError::Stopped)?.map_err(NodeError::Snapshot)
    }

    /// Every command's events from `from_seq` up to, not including, `upto` (at most the
    /// published position), in order, handed to `f` (which returns `false` to stop). Entries
    /// still in the in-memory window come from it; older ones are re-derived in **one** pass
    /// over the journal from the newest snapshot before `from_seq` (where repeated
    /// [`Node::events_from`] calls would load the snapshot and re-apply the journal for every
    /// batch). Meant for long reads such as a session resuming from an old position; runs on
    /// the caller's thread and never holds up the pipeline.
    pub fn stream_events(
        &self,
        from_seq: u64,
        upto: u64,
        f: &mut dyn FnMut(&CommandEvents) -> bool,
    ) -> Result<(), NodeError> {
        let upto = upto.min(self.shared.counters.published_seq.load(Ordering::Acquire) + 1);
        let mut next = from_seq.max(1);
        while next < upto {
            let window_start = {
                let window = self.shared.events.window.lock().expect("event log lock");
                window.front().map(|e| e.seq)
            };
            match window_start {
                Some(start) if start <= next => {
                    let want = ((upto - next) as usize).min(4096);
                    let batch = self.events_from(next, want, Duration::ZERO)?;
                    if batch.is_empty() {
                        return Err(NodeError::EventsGone(next));
                    }
                    for entry in &batch {
                        if entry.seq >= upto {
                            return Ok(());
                        }
                        next = entry.seq + 1;
                        if !f(entry) {
                            return Ok(());
                        }
                    }
                }
                _ => {
                    // Up to where the window starts (or everything asked, if it is empty).
                    let disk_end = window_start.unwrap_or(upto).min(upto);
                    let mut stopped = false;
                    recovery::stream_replayed_events(
                        &self.shared.config,
                        next,
                        disk_end - 1,
                        &mut |entry| {
                            next = entry.seq + 1;
                            let go_on = f(entry);
                            stopped = !go_on;
                            go_on
                        },
                    )?;
                    if stopped {
                        return Ok(());
                    }
                    if next < disk_end {
                        return Err(NodeError::EventsGone(next));
                    }
                }
            }
        }
        Ok(())
    }

    /// Up to `max` commands' events from sequence number `from_seq` on, in order, waiting
    /// up to `timeout` for the first if none is published yet. Events older than the
    /// in-memory window are re-derived from the latest snapshot before them and the journal.
    pub fn events_from(
        &self,
        from_seq: u64,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<CommandEvents>, NodeError> {
        let from_seq = from_seq.max(1);
        let log = &self.shared.events;
        let deadline = deadline_after(timeout);
        let mut window = log.window.lock().expect("event log lock");
        loop {
            let published = self.shared.counters.published_seq.load(Ordering::Acquire);
            if from_seq <= published || self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            log.waiters.fetch_add(1, Ordering::Relaxed);
            let waited = log.published.wait_timeout(window, deadline - now);
            window = waited.expect("event log lock").0;
            log.waiters.fetch_sub(1, Ordering::Relaxed);
        }
        match window.front() {
            Some(first) if first.seq <= from_seq => {
                // Only reference counts are taken under the lock; copying happens after it is
                // released, so a large read never holds up the publisher.
                let start = (from_seq - first.seq) as usize;
                let entries: Vec<Arc<CommandEvents>> =
                    window.iter().skip(start).take(max).cloned().collect();
                drop(window);
                Ok(entries.iter().map(|c| CommandEvents::clone(c)).collect())
            }
            _ => {
                drop(window);
                let upto = self.shared.counters.published_seq.load(Ordering::Acquire);
                recovery::replay_events(&self.shared.config, from_seq, max, upto)
            }
        }
    }

    /// The oldest sequence number [`Node::events_from`] can still serve: the oldest entry of
    /// the in-memory event window, or from disk — 1 while the journal starts at seq 1, else
    /// one past the oldest snapshot the journal continues from (compaction deleted
    /// everything before it), whichever is older. Lists the data directory: meant for
    /// occasional callers (a session resuming from an old position), not the hot path.
    pub fn first_available_seq(&self) -> Result<u64, NodeError> {
        let in_memory = {
            let window = self.shared.events.window.lock().expect("event log lock");
            window.front().map(|e| e.seq)
        };
        let from_disk = self.first_replayable_seq()?;
        Ok(in_memory.map_or(from_disk, |m| m.min(from_disk)))
    }

    fn first_replayable_seq(&self) -> Result<u64, NodeError> {
        let dir = self.shared.config.data_dir.as_path();
        let segments = crate::journal::list_segments(dir)?;
        let first = segments.first().map_or(1, |s| s.first_seq);
        if first <= 1 {
            return Ok(1);
        }
        let snapshots = snapfile::list_snapshots(dir)
            .map_err(|e| NodeError::Recovery(format!("cannot list snapshots: {e}")))?;
        let oldest =
            snapshots.into_iter().filter(|info| info.seq + 1 >= first).map(|info| info.seq).min();
        Ok(match oldest {
            Some(seq) => seq + 1,
            None => self.shared.counters.published_seq.load(Ordering::Acquire) + 1,
        })
    }

    /// Stop: the sequencer takes what was already submitted, the engine applies all of it
    /// and then takes the final snapshot, the publisher publishes everything; then the
    /// threads are joined.
    pub fn stop(mut self) -> Result<NodeStats, NodeError> {
        self.begin_stop();
        self.halt()?;
        if let Some(why) = self.shared.failure.lock().expect("failure lock").take() {
            return Err(NodeError::Failed(why));
        }
        let rx = self.final_reply.lock().expect("final snapshot lock").take();
        match rx.map(|rx| rx.try_recv()) {
            Some(Ok(Ok(_))) => Ok(self.stats()),
            Some(Ok(Err(e))) => Err(NodeError::Snapshot(e)),
            _ => Err(NodeError::Snapshot("the engine stopped before the final snapshot".into())),
        }
    }

    /// Start stopping without waiting: no new submissions are taken, waiting readers and
    /// clients return, and the engine will take the final snapshot once it has applied what
    /// was already submitted. [`Node::stop`] (or dropping the node) finishes the job.
    pub fn begin_stop(&self) {
        let mut reply = self.final_reply.lock().expect("final snapshot lock");
        if reply.is_none() && !self.shared.stop.load(Ordering::Acquire) {
            let (tx, rx) = mpsc::channel();
            *self.shared.final_snapshot.lock().expect("final snapshot lock") = Some(tx);
            *reply = Some(rx);
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
    }

    fn halt(&mut self) -> Result<(), NodeError> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
        let mut panicked = Vec::new();
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                panicked.push(name);
            }
        }
        if panicked.is_empty() {
            Ok(())
        } else {
            Err(NodeError::ThreadPanicked(panicked.join(", ")))
        }
    }
}

impl Shared {
    /// Record why the node stops by itself, and stop it.
    fn fail(&self, why: String) {
        eprintln!("bourse-node: {why}; stopping");
        self.failure.lock().expect("failure lock").get_or_insert(why);
        self.stop.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        for d in [&self.sequencer_doorbell, &self.engine_doorbell, &self.publisher_doorbell] {
            d.notify();
        }
        self.events.published.notify_all();
    }
}

/// Held by each pipeline thread: if the thread ends by panicking, the whole node stops (and
/// the threads downstream of it finish), instead of leaving the others waiting for ever.
/// However it ends, the done flags of the stages it ran are raised.
struct StopOnPanic<'a> {
    shared: &'a Shared,
    done: Vec<&'a AtomicBool>,
}

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "bourse-node: thread {} panicked; stopping the node",
                std::thread::current().name().unwrap_or("?")
            );
            self.shared.stop.store(true, Ordering::Release);
        }
        for done in &self.done {
            done.store(true, Ordering::Release);
        }
        self.shared.wake_all();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            eprintln!("bourse-node: {e}");
        }
    }
}

impl Client {
    /// This client's id within the process.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The source this client's commands are journaled under (see [`Origin::source`]).
    pub fn source(&self) -> u64 {
        self.source
    }

    /// Hand in a command under this client's source. Never blocks: a full ring gives it
    /// back as [`SubmitError::Busy`].
    pub fn submit(&mut self, command: Command, correlation: u64) -> Result<(), SubmitError> {
        self.submit_from(self.source, command, correlation)
    }

    /// Hand in a command on behalf of `source` (a producer that multiplexes submitters, such
    /// as a gateway thread serving many sessions, names each one).
    pub fn submit_from(
        &mut self,
        source: u64,
        command: Command,
        correlation: u64,
    ) -> Result<(), SubmitError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        match self.submissions.push(Submission { command, source, correlation }) {
            Ok(()) => {
                self.shared.counters.submitted.fetch_add(1, Ordering::Relaxed);
                self.shared.sequencer_doorbell.notify();
                Ok(())
            }
            Err(full) => {
                self.shared.counters.busy_rejections.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Busy(full.0))
            }
        }
    }

    /// The next acknowledgement, if one is waiting.
    pub fn try_ack(&mut self) -> Option<Ack> {
        self.acks.pop()
    }

    /// Whether acknowledgements were dropped because this client did not read them in time.
    pub fn acks_lost(&self) -> bool {
        self.acks_lost.load(Ordering::Acquire)
    }

    /// Wait up to `timeout` for the next acknowledgement: spin, then yield, then poll every
    /// 20 µs. (A client may be used from different threads in turn, so it does not park on
    /// a doorbell.)
    pub fn ack_timeout(&mut self, timeout: Duration) -> Option<Ack> {
        let deadline = deadline_after(timeout);
        let mut polls = 0u32;
        loop {
            if let Some(a) = self.acks.pop() {
                return Some(a);
            }
            if Instant::now() >= deadline || self.shared.stop.load(Ordering::Acquire) {
                return self.acks.pop();
            }
            polls = polls.saturating_add(1);
            if polls < 2_000 {
                std::hint::spin_loop();
            } else if polls < 4_000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// Submit and wait for the acknowledgement (retrying while the node is busy).
    pub fn call(&mut self, command: Command, timeout: Duration) -> Result<Ack, SubmitError> {
        let correlation = now_ns();
        let deadline = deadline_after(timeout);
        let mut sub = Submission { command, source: self.source, correlation };
        loop {
            match self.submit(sub.command, sub.correlation) {
                Ok(()) => break,
                Err(SubmitError::Busy(s)) if Instant::now() < deadline => {
                    sub = s;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
        while let Some(ack) = self.ack_timeout(deadline.saturating_duration_since(Instant::now())) {
            if ack.correlation == correlation {
                return Ok(ack);
            }
        }
        if self.shared.stop.load(Ordering::Acquire) {
            Err(SubmitError::Stopped)
        } else {
            Err(SubmitError::Timeout)
        }
    }
}

// ----- stages ----------------------------------------------------------------------------

/// What one [`Stage::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Made progress: step again at once.
    Worked,
    /// Nothing to do right now (input empty, or output ring full): idle, or run another stage.
    Idle,
    /// Finished for good: [`Stage::finish`] it and never step it again.
    Done,
}

/// One pipeline stage. `step` never blocks on another stage: where the old loops waited for
/// room in their output ring, a stage keeps what it could not hand on and returns, so that
/// in the `single` pipeline the next stage (on the same thread) can make the room.
trait Stage {
    fn step(&mut self) -> Step;
    /// Runs once, after `step` returned [`Step::Done`] and before the stage's done flag is
    /// raised (which lets the next stage finish).
    fn finish(&mut self) {}
}

/// Sequencer + journal: drains the clients' rings, journals, commits, hands the durable batch
/// to the engine.
struct SequencerStage {
    shared: Arc<Shared>,
    journal: JournalWriter,
    to_engine: Producer<Sequenced>,
    registrations: Receiver<SequencerRegistration>,
    clients: Vec<(u32, Consumer<Submission>)>,
    /// The batch being journaled; once committed, what of it the engine's ring has not
    /// taken yet starts at `handed`.
    batch: Vec<Sequenced>,
    handed: usize,
    next_seq: u64,
    last_ts: u64,
    /// Where the next round-robin drain starts.
    start: usize,
    /// Take no more per batch than the engine's ring has room for (the `single` pipeline:
    /// there the ring is empty whenever this stage runs, so a batch is handed on whole and
    /// the thread goes on to apply it).
    fit_to_ring: bool,
}

impl SequencerStage {
    /// Push the durable batch into the engine's ring, as much as fits.
    fn hand_off(&mut self) -> Step {
        let mut pushed = false;
        while let Some(&s) = self.batch.get(self.handed) {
            if self.to_engine.push(s).is_err() {
                if self.shared.engine_done.load(Ordering::Acquire) {
                    // The engine is gone (it panicked): these durable commands are applied by
                    // the next recovery.
                    return Step::Done;
                }
                // Full: the engine rings this stage's doorbell after each burst it applied.
                self.shared.engine_doorbell.notify();
                return if pushed { Step::Worked } else { Step::Idle };
            }
            self.handed += 1;
            pushed = true;
        }
        self.batch.clear();
        self.handed = 0;
        self.shared.engine_doorbell.notify();
        Step::Worked
    }
}

impl Stage for SequencerStage {
    fn step(&mut self) -> Step {
        if !self.batch.is_empty() {
            // A durable batch the engine's ring could not take at once: hand it on before
            // draining anyone (the back-pressure reaches the clients' rings).
            return self.hand_off();
        }
        // New clients (off the hot path: a failed try_recv is one atomic load).
        while let Ok(r) = self.registrations.try_recv() {
            self.clients.push((r.id, r.submissions));
        }
        let limit =
            if self.fit_to_ring { MAX_BATCH.min(self.to_engine.free_slots()) } else { MAX_BATCH };
        // Drain clients round-robin (starting one further each time, so nobody is favoured).
        let n = self.clients.len();
        if n > 0 && limit > 0 {
            // Timestamps never go backwards, not even across a restart or a clock step.
            let now = now_ns().max(self.last_ts);
            self.last_ts = now;
            for k in 0..n {
                let (id, rx) = &mut self.clients[(self.start + k) % n];
                while self.batch.len() < limit {
                    let Some(sub) = rx.pop() else { break };
                    let origin = Origin { source: sub.source, reference: sub.correlation };
                    if let Err(e) =
                        self.journal.append_from(self.next_seq, now, origin, &sub.command)
                    {
                        // Nothing of this batch is durable or acknowledged; stop rather than
                        // run on without a journal.
                        self.shared.fail(format!("journal append failed: {e}"));
                        return Step::Done;
                    }
                    self.batch.push(Sequenced {
                        seq: self.next_seq,
                        timestamp_ns: now,
                        client: *id,
                        origin,
                        command: sub.command,
                    });
                    self.next_seq += 1;
                }
            }
            self.start = (self.start + 1) % n;
            self.clients.retain(|(_, rx)| !(rx.is_abandoned() && rx.is_empty()));
        }
        if self.batch.is_empty() {
            // Stopping ends this stage only once a drain found every client's ring empty
            // (with `limit == 0` nothing was looked at).
            return if limit > 0 && self.shared.stop.load(Ordering::Acquire) {
                Step::Done
            } else {
                Step::Idle
            };
        }
        self.shared.counters.sequenced.fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        let t = Instant::now();
        match self.journal.commit() {
            Ok(stats) => {
                let c = &self.shared.counters;
                let took = t.elapsed();
                c.commits.fetch_add(1, Ordering::Relaxed);
                c.commit_records.fetch_add(stats.records, Ordering::Relaxed);
                c.last_commit_ns.store(took.as_nanos() as u64, Ordering::Relaxed);
                c.journal_commit.record(took);
                c.durable_seq.store(stats.durable_seq, Ordering::Release);
                if let Some(e) = stats.roll_error {
                    // This batch is durable and goes on to be applied and acknowledged; the
                    // next one could not be written, so the node stops after it.
                    self.shared.fail(format!("journal segment roll failed: {e}"));
                }
            }
            Err(e) => {
                // Nothing of this batch was acknowledged. (It may still be on disk, in which
                // case the next recovery applies it: clients see `Stopped`, which means the
                // outcome is unknown.)
                self.shared.fail(format!("journal commit failed: {e}"));
                return Step::Done;
            }
        }
        // Only now, durable, does the batch go on to the engine.
        match self.hand_off() {
            Step::Done => Step::Done,
            _ => Step::Worked,
        }
    }
}

/// Commands the engine applies before it looks at its control channel again.
const ENGINE_BURST: usize = 1024;

/// The engine: applies durable commands in order, keeps the last-reference table, answers
/// control messages between bursts, takes snapshots.
struct EngineStage {
    shared: Arc<Shared>,
    engine: Engine,
    references: LastReferences,
    input: Consumer<Sequenced>,
    output: Producer<Output>,
    recycled: Consumer<Vec<Event>>,
    control: Receiver<Control>,
    snapshots: mpsc::SyncSender<SnapshotJob>,
    /// An applied command's output the publisher's ring had no room for; nothing more is
    /// applied until it is handed on.
    pending: Option<Output>,
    applied: u64,
    last_ts: u64,
    last_snapshot_seq: u64,
    last_snapshot_ts: u64,
}

/// The publisher is gone (it panicked).
struct PublisherGone;

impl EngineStage {
    /// Copy the engine and the last-reference table, both as of `applied`, and hand them to
    /// the snapshot writer.
    fn take_snapshot(&mut self, reply: Option<Sender<Result<u64, String>>>) {
        let t = Instant::now();
        let snapshot = self.engine.snapshot();
        let hash = self.engine.state_hash();
        let last_references = self.references.to_unsorted_vec();
        self.shared
            .counters
            .last_snapshot_pause_ns
            .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let job = SnapshotJob { seq: self.applied, hash, snapshot, last_references, reply };
        if job.reply.is_some() {
            // Asked for (on demand, or the final one): wait for room (the writer has its own
            // thread in both pipeline modes).
            let _ = self.snapshots.send(job);
        } else if let Err(mpsc::TrySendError::Full(job)) = self.snapshots.try_send(job) {
            eprintln!("bourse-node: snapshot writer busy; skipping the snapshot at {}", job.seq);
        }
        self.last_snapshot_seq = self.applied;
        self.last_snapshot_ts = self.last_ts;
    }

    /// Hand `out` to the publisher, or keep it in `pending` if the publisher's ring is full.
    fn emit(&mut self, out: Output) -> Result<(), PublisherGone> {
        match self.output.push(out) {
            Ok(()) => Ok(()),
            Err(full) => {
                if self.shared.publisher_done.load(Ordering::Acquire) {
                    // Nothing more can be published, so stop. Applied commands are durable;
                    // the next recovery applies them again.
                    self.shared.stop.store(true, Ordering::Release);
                    return Err(PublisherGone);
                }
                self.pending = Some(full.0);
                // The publisher rings this stage's doorbell after each burst it took.
                self.shared.publisher_doorbell.notify();
                Ok(())
            }
        }
    }

    fn apply(&mut self, s: Sequenced) -> Result<(), PublisherGone> {
        debug_assert_eq!(s.seq, self.applied + 1, "commands reach the engine in sequence");
        let mut events = self.recycled.pop().unwrap_or_default();
        events.clear();
        self.engine.apply(&s.command, &mut events);
        self.references.observe(s.origin);
        self.applied = s.seq;
        self.last_ts = s.timestamp_ns;
        self.emit(Output {
            seq: s.seq,
            timestamp_ns: s.timestamp_ns,
            client: s.client,
            origin: s.origin,
            command: s.command,
            events,
        })?;
        self.shared.counters.applied_seq.store(self.applied, Ordering::Release);
        let config = &self.shared.config;
        let by_count = config.snapshot_every_commands != 0
            && self.applied - self.last_snapshot_seq >= config.snapshot_every_commands;
        if self.last_snapshot_ts == 0 {
            // Nothing was replayed at start: count time from the first command.
            self.last_snapshot_ts = s.timestamp_ns;
        }
        // Time is command time (the sequencer's stamps): an idle node takes no snapshot.
        let by_time = config.snapshot_every_secs != 0
            && self.last_ts.saturating_sub(self.last_snapshot_ts)
                >= config.snapshot_every_secs.saturating_mul(1_000_000_000);
        if by_count || by_time {
            self.take_snapshot(None);
        }
        Ok(())
    }
}

impl Stage for EngineStage {
    fn step(&mut self) -> Step {
        let mut worked = false;
        if let Some(out) = self.pending.take() {
            if self.emit(out).is_err() {
                return Step::Done;
            }
            worked = self.pending.is_none();
        }
        if self.pending.is_none() {
            // Each command is timed from the end of the one before it (the first from the
            // first pop): one clock read per command, not two.
            let mut since: Option<Instant> = None;
            for _ in 0..ENGINE_BURST {
                let Some(s) = self.input.pop() else { break };
                worked = true;
                let start = *since.get_or_insert_with(Instant::now);
                if self.apply(s).is_err() {
                    return Step::Done;
                }
                let now = Instant::now();
                self.shared.counters.engine_apply.record(now.saturating_duration_since(start));
                since = Some(now);
                if self.pending.is_some() {
                    break;
                }
            }
        }
        if worked {
            // One wake-up per burst: a doorbell fence per command would cost more than the
            // command. The sequencer may be waiting for room in this stage's ring.
            self.shared.publisher_doorbell.notify();
            self.shared.sequencer_doorbell.notify();
        }
        match self.control.try_recv() {
            Ok(Control::Query(f)) => {
                f(&self.engine, self.applied);
                return Step::Worked;
            }
            Ok(Control::References(f)) => {
                f(&self.references);
                return Step::Worked;
            }
            Ok(Control::Snapshot(reply)) => {
                self.take_snapshot(Some(reply));
                return Step::Worked;
            }
            Err(_) => {}
        }
        if worked {
            Step::Worked
        } else if self.shared.sequencer_done.load(Ordering::Acquire)
            && self.input.is_empty()
            && self.pending.is_none()
        {
            // (`sequencer_done` first: everything it pushed happened before it was set.)
            Step::Done
        } else {
            Step::Idle
        }
    }

    fn finish(&mut self) {
        // A graceful stop: everything sequenced is applied; the final snapshot covers it all.
        let reply = self.shared.final_snapshot.lock().expect("final snapshot lock").take();
        if let Some(reply) = reply {
            self.take_snapshot(Some(reply));
        }
    }
}

/// The publisher: the event log, subscribers (and their notify callbacks), acknowledgements.
struct PublisherStage {
    shared: Arc<Shared>,
    input: Consumer<Output>,
    recycle: Producer<Vec<Event>>,
    registrations: Receiver<PublisherRegistration>,
    subscriber_registrations: Receiver<SubscriberRegistration>,
    clients: Vec<Option<PublisherRegistration>>,
    subscribers: Vec<SubscriberRegistration>,
    burst: Vec<Output>,
    entries: Vec<Arc<CommandEvents>>,
    /// Clients with a notify that got acknowledgements in the current burst (a few).
    notify_clients: Vec<u32>,
    rounds: u64,
}

impl PublisherStage {
    fn register_clients(&mut self) {
        while let Ok(r) = self.registrations.try_recv() {
            let id = r.id as usize;
            if self.clients.len() <= id {
                self.clients.resize_with(id + 1, || None);
            }
            self.clients[id] = Some(r);
        }
    }
}

impl Stage for PublisherStage {
    fn step(&mut self) -> Step {
        while let Ok(s) = self.subscriber_registrations.try_recv() {
            self.subscribers.push(s);
        }
        self.register_clients();
        self.rounds += 1;
        if self.rounds % CLIENT_SWEEP_ROUNDS == 0 {
            // Forget clients that were dropped, and subscribers that went away.
            for slot in self.clients.iter_mut() {
                if slot.as_ref().is_some_and(|c| c.acks.is_abandoned()) {
                    *slot = None;
                }
            }
            self.subscribers.retain(|s| !s.feed.is_abandoned());
        }
        while self.burst.len() < PUBLISH_BURST {
            let Some(out) = self.input.pop() else { break };
            self.burst.push(out);
        }
        let Some(last) = self.burst.last().map(|o| o.seq) else {
            return if self.shared.engine_done.load(Ordering::Acquire) && self.input.is_empty() {
                Step::Done
            } else {
                Step::Idle
            };
        };
        // The engine may be waiting for room in this stage's ring.
        self.shared.engine_doorbell.notify();
        // The event log and the subscribers first, so that a client holding an
        // acknowledgement always finds its command's events there.
        {
            let mut window = self.shared.events.window.lock().expect("event log lock");
            for out in &self.burst {
                if window.len() == self.shared.events.capacity {
                    window.pop_front();
                }
                let entry = Arc::new(CommandEvents {
                    seq: out.seq,
                    timestamp_ns: out.timestamp_ns,
                    origin: out.origin,
                    command: out.command,
                    events: out.events.clone(),
                });
                window.push_back(entry.clone());
                self.entries.push(entry);
            }
            self.shared.counters.published_seq.store(last, Ordering::Release);
        }
        // A reader's increment of `waiters` happens under the window lock, so it is visible
        // here (after this stage's own lock and unlock above) unless the reader had not yet
        // looked — and then it sees what was just published without waiting.
        if self.shared.events.waiters.load(Ordering::Relaxed) > 0 {
            self.shared.events.published.notify_all();
        }
        for s in &mut self.subscribers {
            for entry in &self.entries {
                if s.feed.push(entry.clone()).is_err() {
                    s.lagged.store(true, Ordering::Release);
                }
            }
            if let Some(notify) = &s.notify {
                notify();
            }
        }
        self.entries.clear();
        let mut burst = std::mem::take(&mut self.burst);
        for out in burst.drain(..) {
            if self.clients.get(out.client as usize).is_none_or(Option::is_none) {
                // A client registers here before the sequencer can see its ring, so one we
                // do not know yet is in the channel: look again.
                self.register_clients();
            }
            match self.clients.get_mut(out.client as usize) {
                Some(Some(c)) if !c.wants_acks => {}
                Some(Some(c)) => {
                    let ack = Ack {
                        correlation: out.origin.reference,
                        seq: out.seq,
                        timestamp_ns: out.timestamp_ns,
                        events: out.events.clone(),
                    };
                    if c.notify.is_some() && !self.notify_clients.contains(&out.client) {
                        self.notify_clients.push(out.client);
                    }
                    if c.acks.push(ack).is_err() && !c.acks.is_abandoned() {
                        self.shared.counters.acks_dropped.fetch_add(1, Ordering::Relaxed);
                        if !c.acks_lost.swap(true, Ordering::AcqRel) {
                            eprintln!(
                                "bourse-node: client {} does not read its acks; dropping",
                                c.id
                            );
                        }
                    }
                }
                _ if out.client == NO_CLIENT => {}
                _ => {
                    // Its client was dropped before the acknowledgement came back.
                }
            }
            let _ = self.recycle.push(out.events);
        }
        self.burst = burst;
        for id in self.notify_clients.drain(..) {
            if let Some(Some(PublisherRegistration { notify: Some(notify), .. })) =
                self.clients.get(id as usize)
            {
                notify();
            }
        }
        Step::Worked
    }

    fn finish(&mut self) {
        self.shared.events.published.notify_all();
    }
}

// ----- threads ---------------------------------------------------------------------------

/// `threads` pipeline: one stage on its own thread, idling on its own doorbell.
fn run_stage_thread<S: Stage>(
    shared: Arc<Shared>,
    mut stage: S,
    done: fn(&Shared) -> &AtomicBool,
    core: Option<usize>,
    doorbell: fn(&Shared) -> &Doorbell,
) {
    let _guard = StopOnPanic { shared: &shared, done: vec![done(&shared)] };
    if let Err(e) = pin_current_thread(core) {
        eprintln!(
            "bourse-node: {} not pinned: {e}",
            std::thread::current().name().unwrap_or("pipeline thread")
        );
    }
    let mut idle = Idle::new(shared.config.wait, doorbell(&shared));
    loop {
        match stage.step() {
            Step::Worked => idle.reset(),
            Step::Idle => idle.wait(),
            Step::Done => break,
        }
    }
    stage.finish();
}

/// Step `stage` once if it is still running; on [`Step::Done`], finish it and raise its done
/// flag. Whether it made progress (finishing counts).
fn step_in_turn(
    shared: &Shared,
    stage: &mut dyn Stage,
    running: &mut bool,
    done: &AtomicBool,
) -> bool {
    if !*running {
        return false;
    }
    match stage.step() {
        Step::Worked => true,
        Step::Idle => false,
        Step::Done => {
            stage.finish();
            *running = false;
            done.store(true, Ordering::Release);
            shared.wake_all();
            true
        }
    }
}

/// `single` pipeline: the three stages in turn on one thread. A turn: the sequencer drains
/// the clients and commits one batch (sized to fit the engine's ring, which is empty at this
/// point); then the engine and the publisher step alternately until both are idle, so
/// everything durable is applied and published before the next commit; then back. The thread
/// idles (on the one doorbell all three stages share in this mode) only after a turn in
/// which no stage did anything.
fn run_single_thread(
    shared: Arc<Shared>,
    mut sequencer: SequencerStage,
    mut engine: EngineStage,
    mut publisher: PublisherStage,
    hook_registrations: Receiver<Box<dyn PipelineHook>>,
) {
    let _guard = StopOnPanic {
        shared: &shared,
        done: vec![&shared.sequencer_done, &shared.engine_done, &shared.publisher_done],
    };
    if let Err(e) = pin_current_thread(shared.config.cores.sequencer) {
        eprintln!("bourse-node: pipeline thread not pinned: {e}");
    }
    let mut idle = Idle::new(shared.config.wait, &shared.sequencer_doorbell);
    let (mut sequencing, mut applying, mut publishing) = (true, true, true);
    let mut hooks: Vec<Box<dyn PipelineHook>> = Vec::new();
    let busy_spin = shared.config.wait == crate::wait::WaitStrategy::BusySpin;
    while publishing {
        let mut worked =
            step_in_turn(&shared, &mut sequencer, &mut sequencing, &shared.sequencer_done);
        loop {
            let applied = step_in_turn(&shared, &mut engine, &mut applying, &shared.engine_done);
            let published =
                step_in_turn(&shared, &mut publisher, &mut publishing, &shared.publisher_done);
            if !(applied || published) {
                break;
            }
            worked = true;
        }
        // Hooks (an embedded gateway): after the stages, so that what a hook submitted in
        // its last turn is committed, applied and published by the time it turns again.
        while let Ok(hook) = hook_registrations.try_recv() {
            hooks.push(hook);
        }
        if !hooks.is_empty() {
            let (e, applied) = (&engine.engine, engine.applied);
            hooks.retain_mut(|hook| match hook.turn(e, applied) {
                HookTurn::Worked => {
                    worked = true;
                    true
                }
                HookTurn::Idle => true,
                HookTurn::Detach => {
                    worked = true;
                    false
                }
            });
        }
        if worked {
            idle.reset();
        } else if hooks.is_empty() {
            idle.wait();
        } else if busy_spin {
            // A hook polls sockets: a parked thread would not see them.
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // Hooks still attached (the node was stopped first) are dropped here, without a turn.
    drop(hooks);
}

/// Make sure the journal is on disk through `seq` before a snapshot at `seq` is: otherwise a
/// power loss could leave a snapshot ahead of the journal. Under `fsync` it already is (the
/// engine sees only synced commands); under `write` the current segment may be unsynced, so
/// it is synced now, off the command path. Under `none` (tests only) records may still be in
/// the writer's buffer and nothing can be promised.
fn sync_journal_through(config: &NodeConfig, seq: u64) -> Result<(), String> {
    if config.durability != crate::journal::Durability::Write {
        return Ok(());
    }
    let segments = crate::journal::list_segments(&config.data_dir).map_err(|e| e.to_string())?;
    if let Some(last) = segments.iter().rev().find(|s| s.first_seq <= seq) {
        std::fs::File::open(&last.path)
            .and_then(|f| f.sync_data())
            .map_err(|e| format!("cannot sync {}: {e}", last.path.display()))?;
    }
    Ok(())
}

fn snapshot_writer_loop(shared: Arc<Shared>, jobs: Receiver<SnapshotJob>) {
    let _guard = StopOnPanic { shared: &shared, done: vec![&shared.snapshots_done] };
    let dir = shared.config.data_dir.clone();
    while let Ok(mut job) = jobs.recv() {
        let t = Instant::now();
        job.last_references.sort_unstable();
        let result = sync_journal_through(&shared.config, job.seq)
            .and_then(|()| {
                snapfile::write_snapshot(
                    &dir,
                    job.seq,
                    job.hash,
                    &job.snapshot,
                    &job.last_references,
                )
                .map_err(|e| e.to_string())
            })
            .map(|_| {
                // The snapshot is durable; failing to tidy up old files is only logged.
                if let Err(e) = recovery::compact(&shared.config) {
                    eprintln!("bourse-node: compaction after snapshot {} failed: {e}", job.seq);
                }
            });
        let c = &shared.counters;
        c.last_snapshot_write_ns.store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if result.is_ok() {
            c.snapshots.fetch_add(1, Ordering::Relaxed);
            c.last_snapshot_seq.store(job.seq, Ordering::Relaxed);
        } else if let Err(e) = &result {
            eprintln!("bourse-node: snapshot at seq {} failed: {e}", job.seq);
        }
        if let Some(reply) = job.reply {
            let _ = reply.send(result.map(|_| job.seq));
        }
    }
}
