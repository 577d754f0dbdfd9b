//! The gateway server: TCP sessions in front of a running [`Node`].
//!
//! ```text
//!              ┌──────────────────── gateway I/O thread ─────────────────────┐
//!  TCP ──────► │ read → FrameDecoder → Session → Client::submit_from ────────┼─ring─► sequencer
//!  sessions    │                                                             │
//!  ◄────────── │ write ◄─ per-session buffers ◄─ router ◄─ Subscription ◄────┼─ring── publisher
//!              └─────────────────────────────────────────────────────────────┘
//!                 replay workers (one thread per resuming session) read Node::stream_events
//! ```
//!
//! One I/O thread owns every connection (readiness polling with `mio`), a node
//! [`Client`](bourse_node::Client) whose commands are journaled under each session's API key
//! id with the request's `client_ref` as reference, and a node
//! [`Subscription`](bourse_node::Subscription) from which it routes every command's results:
//! execution reports to the order-entry and drop-copy sessions of the accounts involved
//! ([`render`]), book changes to market-data subscribers ([`md`]).
//!
//! # Invariants
//!
//! * The router applies the node's event stream in sequence order without gaps: a gap in
//!   the live feed (a lagging subscription) is filled from [`Node::events_from`] first.
//! * An account's messages reach a session in stream order, exactly once: a resuming
//!   session gets the replay of positions `[next_seq, live)` from a worker reading the
//!   durable log, while live messages from `live` on wait in its pending buffer; the
//!   pending buffer follows the replay.
//! * A session's outbound bytes are bounded (`outbound_buffer_bytes`, replay pending
//!   included): a client that does not read gets `ProtocolError SlowConsumer` and is
//!   disconnected; no other session waits for it. The I/O thread never blocks on a socket.
//! * Cancel-on-disconnect is never lost: if the node's ring is full it is retried on every
//!   turn of the loop until taken, and [`Gateway::stop`] waits for it before returning.
//! * Market-data subscribers get a snapshot cut by the engine after node command `E`
//!   (`Node::query_at`), then the market data of every command after `E`; that of commands
//!   up to `E` — book changes, trades, status changes — is already in the snapshot and
//!   skipped.
//!
//! # Waiting and placement
//!
//! The I/O thread follows the node's configuration unless told otherwise: it is pinned to
//! `cores.gateway`, and waits the way the node's threads do. Under `spin_then_park` it
//! sleeps in `epoll_wait` (after `spin_us` of polling, 0 by default); sockets wake it, and
//! so does the publisher: the thread announces its sleep in a flag, looks at its
//! subscription once more, and the publisher's notification (`Node::subscribe_with_notify`)
//! writes the `mio` waker's eventfd only when the flag is set — one syscall per burst, and
//! none while the thread is awake. Under `busy_spin` it never sleeps; under `yield` it
//! yields between empty polls.
//!
//! # Embedded
//!
//! With `embedded = true` (and the node's `pipeline = single`) there is no I/O thread: the
//! same loop runs as a hook on the node's pipeline thread (`Node::attach_hook`), one turn per
//! pipeline turn, polling with a zero timeout. A request's path is then socket → decoder →
//! submission ring → (next turn) journal → engine → event log → subscription → socket, all
//! on one thread, with no wake-up (~25 µs each on a small VM) between the request's bytes
//! and its response's. Differences from the threaded loop:
//!
//! * the pipeline thread never parks while the gateway is attached (it busy-spins under
//!   `busy_spin`, yields otherwise): meant for a pipeline thread with a core of its own;
//!   `core`, `spin_us` and `idle_poll_us` do not apply;
//! * a subscription snapshot is cut from the engine the hook is handed (same content, same
//!   `snapshot_node_seq` semantics) — a `Node::query_at` would wait for this very thread;
//! * [`Gateway::stop`] does not block the pipeline: the hook ends the sessions and submits
//!   their cancel-on-disconnect over the following turns (the sequencer takes them between
//!   turns), then closes the connections and detaches; replay workers are joined by
//!   `Gateway::stop`, off the pipeline thread. Stop the gateway before the node: a hook
//!   still attached when the node stops is dropped without shutting its sessions down;
//! * under `fsync` nothing is read or written while a batch is being synced.
//!
//! # Complexity
//!
//! Per command routed: O(events + messages); per message delivered: O(frame) to encode
//! into the session's buffer. A subscription snapshot is one engine query, O(book).

mod io;
mod keys;
pub mod md;
pub mod render;
mod replay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bourse_engine::{AccountId, Engine, MarketId, Side};
use bourse_node::{HookTurn, Node, NodeError, Pipeline, PipelineHook};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use keys::{KeyRegistry, KeysView};
pub use replay::message_seq;

use crate::session::{SessionConfig, SessionKinds};

/// Gateway settings. Read from JSON/TOML by the Python front end, unknown keys rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Connections served at once; more are closed on accept.
    pub max_sessions: usize,
    /// Connections that have not logged in yet, at most (each is closed after
    /// `login_timeout_ms`); more are closed on accept, so unauthenticated clients cannot
    /// take every slot.
    pub max_pending_logins: usize,
    /// Bytes a session may have waiting to be sent before it is cut as a slow consumer.
    pub outbound_buffer_bytes: usize,
    /// Book changes kept per market for retransmit requests.
    pub md_retention: usize,
    /// Market-data subscriptions per session.
    pub max_subscriptions: usize,
    /// Subscribe requests per session per second (each makes the engine cut a snapshot).
    pub subscribes_per_sec: u32,
    /// Smallest heartbeat interval a Login may ask for, ms.
    pub heartbeat_min_ms: u32,
    /// Largest heartbeat interval a Login may ask for, ms.
    pub heartbeat_max_ms: u32,
    /// Largest difference between a Login's timestamp and the server clock, ms.
    pub max_clock_skew_ms: u64,
    /// Time allowed between the Challenge and the Login, ms.
    pub login_timeout_ms: u64,
    /// Order requests per second per session (token bucket refill).
    pub throttle_per_sec: u32,
    /// Order request burst per session.
    pub throttle_burst: u32,
    /// Messages of any kind per second before a session is cut for flooding.
    pub flood_per_sec: u32,
    /// Message burst of any kind before a session is cut for flooding.
    pub flood_burst: u32,
    /// Keep polling without sleeping for this long after the last activity, µs (0, the
    /// default: sleep at once — the publisher and the sockets wake the thread, and on a
    /// small machine a spinning I/O thread only takes the core the pipeline needs).
    pub spin_us: u64,
    /// Longest sleep of an idle I/O thread, µs; 0 (the default) follows the node's wait
    /// strategy: never sleep under `busy_spin` or `yield`, sleep up to `park_timeout_us`
    /// under `spin_then_park`.
    pub idle_poll_us: u64,
    /// Core to pin the I/O thread to; `None` (the default) takes the node's `cores.gateway`.
    pub core: Option<usize>,
    /// Capacity of the I/O thread's event subscription ring (commands).
    pub event_ring: usize,
    /// Run the gateway's I/O on the node's pipeline thread instead of a thread of its own
    /// (see "Embedded" in the module docs). Needs the node's `pipeline = single`; `core`,
    /// `spin_us` and `idle_poll_us` then do not apply.
    pub embedded: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let s = SessionConfig::default();
        GatewayConfig {
            listen: "127.0.0.1:7001".into(),
            max_sessions: 1024,
            max_pending_logins: 64,
            outbound_buffer_bytes: 16 << 20,
            md_retention: 1 << 16,
            max_subscriptions: 64,
            subscribes_per_sec: 10,
            heartbeat_min_ms: s.heartbeat_min_ms,
            heartbeat_max_ms: s.heartbeat_max_ms,
            max_clock_skew_ms: s.max_clock_skew_ms,
            login_timeout_ms: s.login_timeout_ms,
            throttle_per_sec: s.throttle_per_sec,
            throttle_burst: s.throttle_burst,
            flood_per_sec: s.flood_per_sec,
            flood_burst: s.flood_burst,
            spin_us: 0,
            idle_poll_us: 0,
            core: None,
            event_ring: 1 << 16,
            embedded: false,
        }
    }
}

impl GatewayConfig {
    /// The session limits.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            heartbeat_min_ms: self.heartbeat_min_ms,
            heartbeat_max_ms: self.heartbeat_max_ms,
            max_clock_skew_ms: self.max_clock_skew_ms,
            login_timeout_ms: self.login_timeout_ms,
            throttle_per_sec: self.throttle_per_sec,
            throttle_burst: self.throttle_burst,
            flood_per_sec: self.flood_per_sec,
            flood_burst: self.flood_burst,
        }
    }

    /// Refuse values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_pending_logins == 0 {
            return Err("max_pending_logins must be positive".into());
        }
        if self.max_sessions == 0 || self.max_sessions > 1 << 20 {
            return Err(format!("max_sessions must be 1..=1048576, not {}", self.max_sessions));
        }
        if self.outbound_buffer_bytes < 64 << 10 {
            return Err(format!(
                "outbound_buffer_bytes must be at least 65536, not {}",
                self.outbound_buffer_bytes
            ));
        }
        if self.md_retention > 1 << 24 {
            return Err(format!(
                "md_retention must be at most 16777216, not {}",
                self.md_retention
            ));
        }
        if self.heartbeat_min_ms == 0 || self.heartbeat_min_ms > self.heartbeat_max_ms {
            return Err("heartbeat_min_ms must be 1..=heartbeat_max_ms".into());
        }
        if self.throttle_per_sec == 0 || self.throttle_burst == 0 {
            return Err("throttle_per_sec and throttle_burst must be positive".into());
        }
        if self.flood_per_sec == 0 || self.flood_burst == 0 {
            return Err("flood_per_sec and flood_burst must be positive".into());
        }
        if self.event_ring == 0 || self.event_ring > 1 << 24 {
            return Err(format!("event_ring must be 1..=16777216, not {}", self.event_ring));
        }
        if self.idle_poll_us > 1_000_000 {
            return Err("idle_poll_us must be 0 (follow the node) or at most 1000000".into());
        }
        Ok(())
    }
}

/// Why the gateway cannot start or stop cleanly.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// Socket trouble.
    #[error("gateway i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The node refused.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The configuration is not usable.
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// The I/O thread panicked.
    #[error("the gateway I/O thread panicked")]
    Panicked,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    logins: AtomicU64,
    login_failures: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    submitted: AtomicU64,
    busy_rejects: AtomicU64,
    protocol_errors: AtomicU64,
    slow_consumers: AtomicU64,
    replays: AtomicU64,
    routed_seq: AtomicU64,
    cancel_on_disconnect: AtomicU64,
}

/// A point-in-time view of the gateway's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GatewayStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Successful logins.
    pub logins: u64,
    /// Refused logins.
    pub login_failures: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Commands handed to the node.
    pub submitted: u64,
    /// Requests refused because the node's ring was full.
    pub busy_rejects: u64,
    /// Sessions ended by a protocol error.
    pub protocol_errors: u64,
    /// Sessions cut as slow consumers.
    pub slow_consumers: u64,
    /// Replays started.
    pub replays: u64,
    /// The last node sequence number routed.
    pub routed_seq: u64,
    /// Cancel-on-disconnect commands submitted.
    pub cancel_on_disconnect: u64,
}

impl Counters {
    fn snapshot(&self) -> GatewayStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GatewayStats {
            accepted: l(&self.accepted),
            active: l(&self.active),
            logins: l(&self.logins),
            login_failures: l(&self.login_failures),
            messages_in: l(&self.messages_in),
            messages_out: l(&self.messages_out),
            submitted: l(&self.submitted),
            busy_rejects: l(&self.busy_rejects),
            protocol_errors: l(&self.protocol_errors),
            slow_consumers: l(&self.slow_consumers),
            replays: l(&self.replays),
            routed_seq: l(&self.routed_seq),
            cancel_on_disconnect: l(&self.cancel_on_disconnect),
        }
    }
}

/// Requests to the I/O thread.
enum Control {
    /// End every session of the key (`EndOfSession Administrative`).
    Revoke(u64),
    /// End every session (`EndOfSession Shutdown`) and exit.
    Stop,
}

/// A running gateway. Stop it with [`Gateway::stop`] before stopping the node, so that
/// cancel-on-disconnect of the sessions it ends reaches the journal.
pub struct Gateway {
    node: Arc<Node>,
    keys: Arc<KeyRegistry>,
    counters: Arc<Counters>,
    control: Sender<Control>,
    waker: Arc<mio::Waker>,
    local_addr: SocketAddr,
    runner: Option<Runner>,
}

/// Where the I/O runs.
enum Runner {
    /// Its own thread.
    Thread(JoinHandle<()>),
    /// The node's pipeline thread ([`EmbeddedIo`]): the replay workers to join arrive here
    /// when it stops, and the channel closes once the hook is dropped.
    Embedded(Receiver<Vec<JoinHandle<()>>>),
}

/// The gateway's I/O as a hook of the node's `single` pipeline thread: one turn of the I/O
/// loop per pipeline turn, never waiting (poll timeout zero).
struct EmbeddedIo {
    // Dropped first (with its `Arc<Node>`), then `done`: once `Gateway::stop` sees the
    // channel close, the node has no owner left on the pipeline thread.
    io: io::Io,
    done: Sender<Vec<JoinHandle<()>>>,
}

impl PipelineHook for EmbeddedIo {
    fn turn(&mut self, engine: &Engine, applied_seq: u64) -> HookTurn {
        match self.io.turn(Some((engine, applied_seq)), Duration::ZERO) {
            io::Turn::Active => HookTurn::Worked,
            io::Turn::Idle => HookTurn::Idle,
            io::Turn::Stopped => {
                let _ = self.done.send(self.io.take_replay_workers());
                HookTurn::Detach
            }
        }
    }
}

impl Gateway {
    /// Listen on `config.listen` and serve sessions for `node`.
    pub fn start(node: Arc<Node>, config: GatewayConfig) -> Result<Gateway, GatewayError> {
        config.validate().map_err(GatewayError::Config)?;
        let embedded = config.embedded;
        if embedded && node.config().pipeline != Pipeline::Single {
            return Err(GatewayError::Config(
                "an embedded gateway needs the node's pipeline = single".into(),
            ));
        }
        let keys = Arc::new(KeyRegistry::new());
        let counters = Arc::new(Counters::default());
        let (control, control_rx) = mpsc::channel();
        let (io, waker, local_addr) =
            io::Io::new(node.clone(), config, keys.clone(), counters.clone(), control_rx)?;
        let runner = if embedded {
            // `Io::new` cut its market-data seed with a query while the pipeline ran as
            // usual; from here on the I/O runs on the pipeline thread.
            let (done, done_rx) = mpsc::channel();
            node.attach_hook(Box::new(EmbeddedIo { io, done }))?;
            Runner::Embedded(done_rx)
        } else {
            let thread = std::thread::Builder::new()
                .name("bourse-gateway".into())
                .spawn(move || io.run())
                .map_err(GatewayError::Io)?;
            Runner::Thread(thread)
        };
        Ok(Gateway { node, keys, counters, control, waker, local_addr, runner: Some(runner) })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node behind the gateway.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Add (or replace) an API key. Its last `client_ref` is read from the node's durable
    /// record, so idempotency holds across restarts.
    pub fn add_key(
        &self,
        key_id: u64,
        secret: &[u8],
        account: AccountId,
        kinds: SessionKinds,
    ) -> Result<(), GatewayError> {
        if key_id == 0 {
            return Err(GatewayError::Config("key id 0 is reserved (unnamed source)".into()));
        }
        if secret.is_empty() {
            return Err(GatewayError::Config("an API key secret must not be empty".into()));
        }
        let last = self.node.last_reference(key_id)?;
        self.keys.insert(key_id, secret, account, kinds, last);
        Ok(())
    }

    /// Revoke a key: no new logins, and its live sessions end (`EndOfSession
    /// Administrative`, which counts as a disconnect). `true` if the key existed.
    pub fn revoke_key(&self, key_id: u64) -> bool {
        let existed = self.keys.remove(key_id);
        if self.control.send(Control::Revoke(key_id)).is_ok() {
            let _ = self.waker.wake();
        }
        existed
    }

    /// The key table.
    pub fn keys(&self) -> &KeyRegistry {
        &self.keys
    }

    /// Counters.
    pub fn stats(&self) -> GatewayStats {
        self.counters.snapshot()
    }

    /// End every session (`EndOfSession Shutdown`; cancel-on-disconnect fires), wait until
    /// those cancels are acknowledged by the node, and join the I/O thread.
    pub fn stop(mut self) -> Result<GatewayStats, GatewayError> {
        self.halt()?;
        Ok(self.counters.snapshot())
    }

    fn halt(&mut self) -> Result<(), GatewayError> {
        let Some(runner) = self.runner.take() else { return Ok(()) };
        if self.control.send(Control::Stop).is_ok() {
            let _ = self.waker.wake();
        }
        match runner {
            Runner::Thread(thread) => thread.join().map_err(|_| GatewayError::Panicked),
            Runner::Embedded(done) => {
                // The hook ends the sessions, submits their cancel-on-disconnect on later
                // turns, closes the connections and detaches; its replay workers are joined
                // here, off the pipeline thread. (A node stopped first drops the hook
                // without another turn: the channel just closes.)
                let workers = done.recv().unwrap_or_default();
                for worker in workers {
                    let _ = worker.join();
                }
                while done.recv().is_ok() {}
                Ok(())
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            eprintln!("bourse-gateway: {e}");
        }
    }
}

/// A market-data subscription of one session.
#[derive(Clone, Copy, Debug)]
struct MdSub {
    market: MarketId,
    feed: crate::protocol::FeedKind,
    /// The snapshot showed the engine after this node command: market data of commands up
    /// to it is already in it and skipped (book changes, trades, status changes alike).
    snapshot_node_seq: u64,
}

/// The side of a book.
fn sides() -> [Side; 2] {
    [Side::Buy, Side::Sell]
}
