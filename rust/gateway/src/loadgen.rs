//! A native, open-loop load generator over the binary protocol, and the `bench gateway`
//! harness around it ([`bench_gateway`]: node + gateway + load, one report).
//!
//! # Model
//!
//! * **Sessions.** Each session is its own TCP connection, API key and account, logged in
//!   as an order-entry session (HMAC-SHA256 over [`Login::signing_payload`]).
//! * **Open loop.** A fixed total offered rate `R` is split across the sessions. Request `j`
//!   of a sender is *scheduled* at `t0 + phase + j / R_sender`; it is sent as soon as the
//!   sender gets to it, and its latency is measured **from the scheduled time** to the first
//!   response carrying its `client_ref` (`OrderAccepted`, `OrderRejected`, `OrderCancelled`,
//!   `OrderAmended`, `MassCancelReport`). A sender that falls behind sends at once and the
//!   wait it caused is part of the latency, so there is no coordinated omission. How far
//!   the senders themselves lagged their schedule is reported separately (`send_lag_*`), to
//!   tell a slow client from a slow server.
//! * **Warm-up.** Requests scheduled before `warmup` are sent and answered but not recorded.
//!   The measured window is `[warmup, warmup + duration)` of the schedule.
//! * **Mix** (per session, deterministic, seeded per session with an in-house SplitMix64):
//!   ~60 % passive limit GTC orders a few ticks from a fixed mid, both sides, 30 % of them
//!   post-only; ~20 % cancels of the session's own resting orders; ~12 % amends of them
//!   (half reduce the quantity, keeping priority; half move the price within the band);
//!   ~8 % aggressive IOC orders that cross the mid and sweep a few resting orders. A
//!   session keeps at most `max_resting` orders: past that a new-order slot becomes a
//!   cancel (quote refresh), which keeps the book bounded; the mix actually sent is
//!   reported.
//! * **Own orders** are tracked from the responses: `OrderAccepted` (GTC) adds,
//!   `OrderExecuted` with `leaves_quantity` 0 and `OrderCancelled` remove, `OrderAmended`
//!   updates. An order with a cancel or amend in flight is not picked again until it is
//!   answered. Cancels can still race fills (the engine answers `OrderNotFound`): those
//!   show up in `reject_codes`.
//!
//! # Threads
//!
//! Not one writer and one reader thread per session: on a small machine (the target has
//! two cores shared with the node's and the gateway's threads) `2 × sessions` client
//! threads would turn scheduler noise into the measurement. Instead `client_threads`
//! (default 1) *pairs* of threads serve every session (or, with [`LoadConfig::spin_core`],
//! one pinned thread that does both and never sleeps): a **sender** owns the write halves
//! (non-blocking sockets with a per-session output buffer, so one session's full socket
//! never blocks the others) and keeps the schedule, sleeping until the next request is due
//! and sending everything due when it wakes; a **receiver** owns the read halves
//! (`try_clone`d, registered with an epoll-backed `mio::Poll`), decodes frames with a
//! [`FrameDecoder`] per session and records the latencies. On the wire this is exactly `n`
//! independent clients. The per-session state the two threads share (the in-flight
//! requests and the resting orders) sits behind a mutex that is uncontended in practice.
//!
//! # Complexity
//!
//! Per request O(1) (a hash-map update, a frame encode); per response O(1) (a deque slot and
//! a histogram record). Memory is O(in-flight requests + resting orders).

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bourse_engine::{
    AccountId, AssetId, Command, Event, MarketId, OrderRef, OrderType, Side, StpMode, TimeInForce,
};
use bourse_node::{Cores, Durability, Node, NodeConfig, NodeStats, Pipeline, WaitStrategy};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use serde::Serialize;
use sha2::Sha256;

use crate::protocol::{
    AmendOrder, CancelOrder, FrameDecoder, Heartbeat, Liquidity, Login, LoginFlags, Logout,
    Message, NewOrder, Nonce, RejectCode, SessionKind, Signature,
};
use crate::server::{Gateway, GatewayConfig, GatewayStats};
use crate::session::SessionKinds;

const NS_PER_SEC: u64 = 1_000_000_000;
/// Requests a sender encodes before it flushes, when it is behind its schedule.
const SEND_BATCH: usize = 256;
/// A sender spins instead of sleeping when the next request is due sooner than this.
const SPIN_BELOW_NS: u64 = 5_000;
/// Longest wait of a receiver in `epoll_wait` (it wakes at once when data arrives).
const RECV_POLL: Duration = Duration::from_millis(2);
/// How long login and logout may take per session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

// ---- Configuration and report ----------------------------------------------------------------

/// One session's credentials.
#[derive(Clone, Debug)]
pub struct SessionKey {
    /// The API key id.
    pub key_id: u64,
    /// Its HMAC-SHA256 secret.
    pub secret: Vec<u8>,
}

/// The market the load trades and the shape of the flow.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Total offered rate, requests per second over all sessions.
    pub rate: u64,
    /// Scheduled time before the measured window (sent, not recorded).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// After the last scheduled request, how long to wait for outstanding responses.
    pub drain: Duration,
    /// Seed; session `i` uses a generator derived from it and `i`.
    pub seed: u64,
    /// The market.
    pub market: MarketId,
    /// The fixed mid price (price units); quotes sit 1..=`levels` ticks away from it.
    pub mid: u64,
    /// The market's tick size (price units).
    pub tick: u64,
    /// The market's lot size (base atoms).
    pub lot: u64,
    /// How many ticks either side of the mid quotes spread over.
    pub levels: u64,
    /// Resting orders a session keeps at most (new-order slots become cancels past it).
    pub max_resting: usize,
    /// Sender/receiver thread pairs; sessions are dealt round-robin to them.
    pub client_threads: usize,
    /// Heartbeat interval asked for at login, ms (the senders send one when a session idles).
    pub heartbeat_ms: u32,
    /// `Some(core)`: instead of sender/receiver pairs, one client thread pinned to `core`
    /// sends and receives in a loop that never sleeps — for a machine that can give the
    /// client a core of its own, so that neither timer slack nor a thread wake-up is
    /// measured (`client_threads` is then 1).
    pub spin_core: Option<usize>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            rate: 10_000,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            seed: 1,
            market: MarketId(1),
            mid: 100_000,
            tick: 1,
            lot: 1,
            levels: 8,
            max_resting: 256,
            client_threads: 1,
            heartbeat_ms: 10_000,
            spin_core: None,
        }
    }
}

/// How many requests of each kind were sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MixCounts {
    /// Passive limit GTC orders (post-only included).
    pub new: u64,
    /// Of which post-only.
    pub post_only: u64,
    /// Cancels.
    pub cancel: u64,
    /// Amends that only reduce the quantity (keep priority).
    pub amend_reduce: u64,
    /// Amends that move the price.
    pub amend_price: u64,
    /// Aggressive IOC orders.
    pub ioc: u64,
}

impl MixCounts {
    fn add(&mut self, o: &MixCounts) {
        self.new += o.new;
        self.post_only += o.post_only;
        self.cancel += o.cancel;
        self.amend_reduce += o.amend_reduce;
        self.amend_price += o.amend_price;
        self.ioc += o.ioc;
    }
}

/// Session-level rejects (`seq` 0: never reached the engine).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionRejects {
    /// `Throttled`.
    pub throttled: u64,
    /// `ServerBusy` (the node's ring was full).
    pub busy: u64,
    /// Any other session-level reject (`DuplicateClientRef`, `NotPermitted`, …).
    pub other: u64,
}

/// What a load run measured. Latencies are from the scheduled send time to the first
/// response carrying the request's `client_ref`, for requests scheduled in the measured
/// window.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Sessions (connections, keys, accounts).
    pub sessions: usize,
    /// Sender/receiver thread pairs.
    pub client_threads: usize,
    /// Offered rate, requests per second.
    pub offered_rate: u64,
    /// Responses received per second during the measured window.
    pub achieved_rate: f64,
    /// The measured window, s.
    pub duration_s: f64,
    /// The warm-up before it, s.
    pub warmup_s: f64,
    /// Requests sent (warm-up included).
    pub sent: u64,
    /// Requests answered (warm-up included).
    pub answered: u64,
    /// Requests never answered within the drain time (timeouts).
    pub unanswered: u64,
    /// Requests not sent because their session had ended.
    pub not_sent: u64,
    /// Latencies recorded (requests scheduled in the measured window and answered).
    pub measured: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Mean, µs.
    pub mean_us: f64,
    /// The latency split at the sequencer (the responses' `timestamp_ns`, same machine's
    /// clock): scheduled send → sequenced (client lag, TCP, gateway input, submission ring),
    /// median, µs.
    pub inbound_p50_us: f64,
    /// Scheduled send → sequenced, 99th percentile, µs.
    pub inbound_p99_us: f64,
    /// Sequenced → response received (journal write/fsync, engine, publisher, gateway
    /// routing and output, TCP, client wake-up), median, µs.
    pub outbound_p50_us: f64,
    /// Sequenced → response received, 99th percentile, µs.
    pub outbound_p99_us: f64,
    /// How late the senders sent after the schedule (client-side lag, part of the latency):
    /// 99th percentile, µs.
    pub send_lag_p99_us: f64,
    /// Maximum sender lag, µs.
    pub send_lag_max_us: f64,
    /// Rejected requests, engine and session level.
    pub rejects: u64,
    /// Rejects by code name (engine and session level).
    pub reject_codes: BTreeMap<String, u64>,
    /// Session-level rejects.
    pub session_rejects: SessionRejects,
    /// Trades (executions reported to the taker).
    pub trades: u64,
    /// Execution reports received (maker and taker).
    pub executions: u64,
    /// The requests sent, by kind.
    pub mix: MixCounts,
    /// Messages received from the gateway.
    pub messages_received: u64,
    /// Messages carrying a `client_ref` this client never sent (a gateway bug if not 0).
    pub unmatched: u64,
    /// Sessions that ended early (ProtocolError, EndOfSession, lost connection).
    pub disconnects: u64,
    /// Why they ended (`ProtocolError SlowConsumer`, `EndOfSession Shutdown`, …).
    pub disconnect_reasons: BTreeMap<String, u64>,
    /// Own orders resting at the end (as tracked from the responses).
    pub open_orders: u64,
}

// ---- Randomness -------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and good enough to drive a workload deterministically.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn side(&mut self) -> Side {
        if self.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

// ---- Per-session shared state -----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqKind {
    New,
    Ioc,
    Cancel,
    Amend,
}

/// A request in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Scheduled send time, ns after `t0`.
    sched_ns: u64,
    kind: ReqKind,
    /// The order a cancel or amend names.
    order_id: u64,
}

const NOT_PICKABLE: usize = usize::MAX;

#[derive(Clone, Copy, Debug)]
struct Resting {
    side: Side,
    price: u64,
    leaves: u64,
    /// Index in `Book::pickable`, or [`NOT_PICKABLE`] while a cancel or amend is in flight.
    slot: usize,
}

/// What the sender and the receiver of one session share.
#[derive(Debug)]
struct Book {
    /// `client_ref` of `pending[0]`.
    first_ref: u64,
    /// Requests by `client_ref - first_ref`; `None` once answered. Invariant:
    /// `first_ref + pending.len()` is the next `client_ref` to send, and the front is `Some`.
    pending: VecDeque<Option<Pending>>,
    resting: FxHashMap<u64, Resting>,
    pickable: Vec<u64>,
}

impl Book {
    fn new() -> Book {
        Book {
            first_ref: 1,
            pending: VecDeque::new(),
            resting: FxHashMap::default(),
            pickable: Vec::new(),
        }
    }

    fn next_ref(&self) -> u64 {
        self.first_ref + self.pending.len() as u64
    }

    fn in_flight(&self) -> u64 {
        self.pending.iter().filter(|p| p.is_some()).count() as u64
    }

    fn push_pending(&mut self, p: Pending) -> u64 {
        let client_ref = self.next_ref();
        self.pending.push_back(Some(p));
        client_ref
    }

    fn take_pending(&mut self, client_ref: u64) -> Option<Pending> {
        let i = client_ref.checked_sub(self.first_ref)? as usize;
        let p = self.pending.get_mut(i)?.take()?;
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
            self.first_ref += 1;
        }
        Some(p)
    }

    fn add_resting(&mut self, order_id: u64, side: Side, price: u64, leaves: u64) {
        if let Some(r) = self.resting.get_mut(&order_id) {
            (r.side, r.price, r.leaves) = (side, price, leaves);
            return;
        }
        let slot = self.pickable.len();
        self.resting.insert(order_id, Resting { side, price, leaves, slot });
        self.pickable.push(order_id);
    }

    fn unpick(&mut self, order_id: u64) {
        let Some(r) = self.resting.get_mut(&order_id) else { return };
        let slot = std::mem::replace(&mut r.slot, NOT_PICKABLE);
        if slot == NOT_PICKABLE {
            return;
        }
        self.pickable.swap_remove(slot);
        if let Some(&moved) = self.pickable.get(slot) {
            if let Some(m) = self.resting.get_mut(&moved) {
                m.slot = slot;
            }
        }
    }

    fn make_pickable(&mut self, order_id: u64) {
        let Some(r) = self.resting.get_mut(&order_id) else { return };
        if r.slot == NOT_PICKABLE {
            r.slot = self.pickable.len();
            self.pickable.push(order_id);
        }
    }

    fn remove_resting(&mut self, order_id: u64) {
        self.unpick(order_id);
        self.resting.remove(&order_id);
    }

    /// A random pickable order, taken out of the pickable set.
    fn pick(&mut self, rng: &mut SplitMix64) -> Option<(u64, Resting)> {
        if self.pickable.is_empty() {
            return None;
        }
        let id = self.pickable[rng.below(self.pickable.len() as u64) as usize];
        let r = *self.resting.get(&id)?;
        self.unpick(id);
        Some((id, r))
    }
}

struct Shared {
    book: Mutex<Book>,
    /// The session ended (the sender stops sending on it).
    dead: AtomicBool,
}

fn lock(m: &Mutex<Book>) -> MutexGuard<'_, Book> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- Request generation -----------------------------------------------------------------------

/// The next request of a session: its message (with `client_ref` set) and kind, registered
/// as in flight. Pure apart from the book and the generator, so it can be tested offline.
fn plan_request(
    book: &mut Book,
    rng: &mut SplitMix64,
    cfg: &LoadConfig,
    sched_ns: u64,
    mix: &mut MixCounts,
) -> Message {
    let roll = rng.below(100);
    let mut kind = match roll {
        0..=59 => ReqKind::New,
        60..=79 => ReqKind::Cancel,
        80..=91 => ReqKind::Amend,
        _ => ReqKind::Ioc,
    };
    if kind == ReqKind::New && book.resting.len() >= cfg.max_resting {
        kind = ReqKind::Cancel;
    }
    let target = match kind {
        ReqKind::Cancel | ReqKind::Amend => book.pick(rng),
        _ => None,
    };
    if target.is_none() && matches!(kind, ReqKind::Cancel | ReqKind::Amend) {
        kind = ReqKind::New;
    }
    let order_id = target.map_or(0, |t| t.0);
    let client_ref = book.push_pending(Pending { sched_ns, kind, order_id });
    let (mid, tick, lot) = (cfg.mid, cfg.tick, cfg.lot);
    let price_at = |side: Side, offset: u64| match side {
        Side::Buy => mid - offset * tick,
        Side::Sell => mid + offset * tick,
    };
    match (kind, target) {
        (ReqKind::Cancel, Some((id, _))) => {
            mix.cancel += 1;
            Message::CancelOrder(CancelOrder { client_ref, order: OrderRef::Id(id) })
        }
        (ReqKind::Amend, Some((id, r))) => {
            let (new_price, new_quantity) = if r.leaves / lot >= 2 && rng.below(2) == 0 {
                mix.amend_reduce += 1;
                (0, lot * rng.range(1, r.leaves / lot - 1))
            } else {
                mix.amend_price += 1;
                let current = mid.abs_diff(r.price) / tick;
                let mut offset = rng.range(1, cfg.levels);
                if offset == current {
                    offset = if offset < cfg.levels { offset + 1 } else { offset - 1 };
                }
                (price_at(r.side, offset.max(1)), 0)
            };
            Message::AmendOrder(AmendOrder {
                client_ref,
                order: OrderRef::Id(id),
                new_price,
                new_quantity,
            })
        }
        (ReqKind::Ioc, _) => {
            mix.ioc += 1;
            let side = rng.side();
            let reach = rng.range(cfg.levels.div_ceil(2), cfg.levels);
            let price = match side {
                Side::Buy => mid + reach * tick,
                Side::Sell => mid - reach * tick,
            };
            Message::NewOrder(NewOrder {
                client_ref,
                market: cfg.market,
                client_order_id: 0,
                side,
                order_type: OrderType::Limit,
                time_in_force: TimeInForce::Ioc,
                post_only: false,
                stp: StpMode::ExpireMaker,
                price,
                quantity: lot * rng.range(15, 30),
                quote_quantity: 0,
                reserve_price: 0,
            })
        }
        _ => {
            mix.new += 1;
            let side = rng.side();
            let post_only = rng.below(100) < 30;
            mix.post_only += post_only as u64;
            Message::NewOrder(NewOrder {
                client_ref,
                market: cfg.market,
                client_order_id: 0,
                side,
                order_type: OrderType::Limit,
                time_in_force: TimeInForce::Gtc,
                post_only,
                stp: StpMode::ExpireMaker,
                price: price_at(side, rng.range(1, cfg.levels)),
                quantity: lot * rng.range(1, 10),
                // Buys reserve up to the top of the band, so a price amend up is covered.
                reserve_price: if side == Side::Buy { mid - tick } else { 0 },
                quote_quantity: 0,
            })
        }
    }
}

// ---- Response handling -------------------------------------------------------------------------

/// What a receiver accumulates.
struct RecvStats {
    hist: Histogram<u64>,
    inbound: Histogram<u64>,
    outbound: Histogram<u64>,
    answered: u64,
    window_answers: u64,
    rejects: FxHashMap<u16, u64>,
    session_rejects: SessionRejects,
    trades: u64,
    executions: u64,
    messages: u64,
    unmatched: u64,
    disconnects: u64,
    disconnect_reasons: FxHashMap<String, u64>,
}

impl RecvStats {
    fn new() -> Result<RecvStats, String> {
        Ok(RecvStats {
            hist: new_histogram()?,
            inbound: new_histogram()?,
            outbound: new_histogram()?,
            answered: 0,
            window_answers: 0,
            rejects: FxHashMap::default(),
            session_rejects: SessionRejects::default(),
            trades: 0,
            executions: 0,
            messages: 0,
            unmatched: 0,
            disconnects: 0,
            disconnect_reasons: FxHashMap::default(),
        })
    }

    /// A session ended early, for `why`.
    fn ended(&mut self, why: String) {
        self.disconnects += 1;
        *self.disconnect_reasons.entry(why).or_default() += 1;
    }
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 60 * NS_PER_SEC, 3).map_err(|e| e.to_string())
}

/// The measured window, ns after `t0`.
#[derive(Clone, Copy, Debug)]
struct Window {
    start_ns: u64,
    end_ns: u64,
    /// The wall clock at `t0`, ns since the Unix epoch (to compare with the sequencer's
    /// timestamps, taken from the same machine's clock).
    t0_wall_ns: u64,
}

/// Apply one message from the gateway to a session's book; `false` if the session ended.
fn on_response(
    book: &mut Book,
    msg: &Message,
    now_ns: u64,
    window: Window,
    stats: &mut RecvStats,
    outstanding: &AtomicI64,
) -> bool {
    stats.messages += 1;
    // `sequenced_ns`: the response's sequencer timestamp (wall clock), 0 for a session-level
    // reject (stamped by the gateway instead).
    let answer = |book: &mut Book, client_ref: u64, sequenced_ns: u64, stats: &mut RecvStats| {
        let p = book.take_pending(client_ref);
        match p {
            Some(p) => {
                outstanding.fetch_sub(1, Ordering::Relaxed);
                stats.answered += 1;
                if p.sched_ns >= window.start_ns && p.sched_ns < window.end_ns {
                    stats.hist.saturating_record(now_ns.saturating_sub(p.sched_ns).max(1));
                    if sequenced_ns != 0 {
                        let sched_wall = window.t0_wall_ns + p.sched_ns;
                        let recv_wall = window.t0_wall_ns + now_ns;
                        let inbound = sequenced_ns.saturating_sub(sched_wall);
                        stats.inbound.saturating_record(inbound.max(1));
                        stats
                            .outbound
                            .saturating_record(recv_wall.saturating_sub(sequenced_ns).max(1));
                    }
                }
                if now_ns >= window.start_ns && now_ns < window.end_ns {
                    stats.window_answers += 1;
                }
            }
            // Later messages of an answered request (an IOC's expiry, the self-trade
            // cancels it caused) carry its client_ref too; only one never sent is unmatched.
            None if client_ref >= book.next_ref() => stats.unmatched += 1,
            None => {}
        }
        p
    };
    match *msg {
        Message::OrderAccepted(a) => {
            if let Some(p) = answer(book, a.client_ref, a.timestamp_ns, stats) {
                if p.kind == ReqKind::New && a.time_in_force == TimeInForce::Gtc {
                    book.add_resting(a.order_id, a.side, a.price, a.quantity);
                }
            }
        }
        Message::OrderExecuted(x) => {
            stats.executions += 1;
            if x.liquidity == Liquidity::Taker {
                stats.trades += 1;
            }
            if x.leaves_quantity == 0 {
                book.remove_resting(x.order_id);
            } else if let Some(r) = book.resting.get_mut(&x.order_id) {
                r.leaves = x.leaves_quantity;
            }
        }
        Message::OrderCancelled(c) => {
            book.remove_resting(c.order_id);
            answer(book, c.client_ref, c.timestamp_ns, stats);
        }
        Message::OrderAmended(a) => {
            if let Some(r) = book.resting.get_mut(&a.order_id) {
                r.price = a.price;
                r.leaves = a.leaves_quantity;
            }
            if let Some(p) = answer(book, a.client_ref, a.timestamp_ns, stats) {
                book.make_pickable(p.order_id);
            }
        }
        Message::OrderRejected(r) => {
            *stats.rejects.entry(r.reason as u16).or_default() += 1;
            if r.seq == 0 {
                match r.reason {
                    RejectCode::Throttled => stats.session_rejects.throttled += 1,
                    RejectCode::ServerBusy => stats.session_rejects.busy += 1,
                    _ => stats.session_rejects.other += 1,
                }
            }
            let sequenced = if r.seq == 0 { 0 } else { r.timestamp_ns };
            if let Some(p) = answer(book, r.client_ref, sequenced, stats) {
                if r.reason == RejectCode::OrderNotFound {
                    book.remove_resting(p.order_id);
                } else {
                    book.make_pickable(p.order_id);
                }
            }
        }
        Message::MassCancelReport(m) => {
            answer(book, m.client_ref, m.timestamp_ns, stats);
        }
        Message::ProtocolError(e) => {
            stats.ended(format!("ProtocolError {:?}", e.reason));
            return false;
        }
        Message::EndOfSession(e) => {
            stats.ended(format!("EndOfSession {:?}", e.reason));
            return false;
        }
        Message::LoginRejected(e) => {
            stats.ended(format!("LoginRejected {:?}", e.reason));
            return false;
        }
        _ => {}
    }
    true
}

// ---- Connections ------------------------------------------------------------------------------

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn ns_since(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

/// Read from a blocking stream until a frame decodes; the decoder keeps what follows.
fn read_message(stream: &mut TcpStream, decoder: &mut FrameDecoder) -> Result<Message, String> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Message::decode(frame).map_err(|e| e.to_string()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match stream.read(decoder.spare()) {
            Ok(0) => return Err("the gateway closed the connection".into()),
            Ok(n) => decoder.commit(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the gateway: {e}")),
        }
    }
}

/// Connect and log in one order-entry session; the stream is left blocking.
fn login(
    addr: SocketAddr,
    key: &SessionKey,
    heartbeat_ms: u32,
) -> Result<(TcpStream, FrameDecoder), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(256 << 10);
    let nonce: Nonce = match read_message(&mut stream, &mut decoder)? {
        Message::Challenge(c) => c.nonce,
        other => return Err(format!("expected Challenge, got {other:?}")),
    };
    let mut login = Login {
        key_id: key.key_id,
        timestamp_ns: wall_ns(),
        nonce,
        signature: Signature([0; 32]),
        heartbeat_ms,
        session_kind: SessionKind::OrderEntry,
        flags: LoginFlags::empty(),
        next_seq: 0,
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).map_err(|e| e.to_string())?;
    mac.update(&login.signing_payload());
    let mut signature = [0u8; 32];
    signature.copy_from_slice(&mac.finalize().into_bytes());
    login.signature = Signature(signature);
    let mut buf = Vec::new();
    Message::Login(login).append_to(&mut buf);
    stream.write_all(&buf).map_err(|e| format!("sending Login: {e}"))?;
    match read_message(&mut stream, &mut decoder)? {
        Message::LoginAccepted(_) => Ok((stream, decoder)),
        other => Err(format!("key {}: login refused: {other:?}", key.key_id)),
    }
}

/// Log out cleanly (no cancel-on-disconnect) and wait a little for `EndOfSession`.
fn logout(mut stream: TcpStream, deadline: Instant) {
    let _ = stream.set_nonblocking(false);
    let mut buf = Vec::new();
    Message::Logout(Logout {}).append_to(&mut buf);
    if stream.write_all(&buf).is_err() {
        return;
    }
    let mut sink = [0u8; 64 << 10];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

// ---- Sender -----------------------------------------------------------------------------------

struct SendSession {
    stream: TcpStream,
    shared: Arc<Shared>,
    rng: SplitMix64,
    out: Vec<u8>,
    written: usize,
    last_write_ns: u64,
}

impl SendSession {
    /// Write what is buffered; `Ok(true)` when all of it went out.
    fn flush(&mut self) -> std::io::Result<bool> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(true)
    }
}

struct SenderResult {
    sessions: Vec<TcpStream>,
    sent: u64,
    not_sent: u64,
    mix: MixCounts,
    lag: Histogram<u64>,
}

struct SenderPlan {
    sessions: Vec<SendSession>,
    /// Offset of this sender's schedule, ns.
    phase_ns: u64,
    /// Requests per second of this sender (numerator / denominator, exact).
    rate_num: u128,
    rate_den: u128,
    window: Window,
    cfg: LoadConfig,
    t0: Instant,
    outstanding: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

/// What one turn of a sender did.
enum SendTurn {
    /// Sent (or flushed) something: turn again at once.
    Worked,
    /// Nothing due for this many ns.
    Wait(u64),
    /// A socket is full: try again shortly.
    Unflushed,
    /// The schedule is done and everything is written (or the run was stopped).
    Done,
}

/// A sender's state between turns (see [`run_sender`] and [`run_spinning`]).
struct Sender {
    plan: SenderPlan,
    lag: Histogram<u64>,
    mix: MixCounts,
    sent: u64,
    not_sent: u64,
    heartbeat_ns: u64,
    last_heartbeat_check: u64,
    j: u64,
    dirty: Vec<bool>,
    unflushed: bool,
}

impl Sender {
    fn new(plan: SenderPlan) -> Result<Sender, String> {
        let n = plan.sessions.len();
        Ok(Sender {
            heartbeat_ns: plan.cfg.heartbeat_ms as u64 * 1_000_000 / 3,
            plan,
            lag: new_histogram()?,
            mix: MixCounts::default(),
            sent: 0,
            not_sent: 0,
            last_heartbeat_check: 0,
            j: 0,
            dirty: vec![false; n],
            unflushed: false,
        })
    }

    fn sched(&self, j: u64) -> u64 {
        let p = &self.plan;
        p.phase_ns + (j as u128 * NS_PER_SEC as u128 * p.rate_den / p.rate_num) as u64
    }

    /// Send everything due (up to a batch), flush, send heartbeats; never sleeps.
    fn turn(&mut self) -> SendTurn {
        if self.plan.stop.load(Ordering::Relaxed) {
            return SendTurn::Done;
        }
        let n = self.plan.sessions.len();
        let end_ns = self.plan.window.end_ns;
        let mut now = ns_since(self.plan.t0);
        let mut next = self.sched(self.j);
        if next >= end_ns && !self.unflushed {
            return SendTurn::Done;
        }
        let mut batch = 0;
        while next <= now && next < end_ns && batch < SEND_BATCH {
            let k = (self.j % n as u64) as usize;
            let s = &mut self.plan.sessions[k];
            if s.shared.dead.load(Ordering::Relaxed) {
                self.not_sent += 1;
            } else {
                let msg = {
                    let mut book = lock(&s.shared.book);
                    plan_request(&mut book, &mut s.rng, &self.plan.cfg, next, &mut self.mix)
                };
                msg.append_to(&mut s.out);
                self.plan.outstanding.fetch_add(1, Ordering::Relaxed);
                self.dirty[k] = true;
                self.sent += 1;
                if next >= self.plan.window.start_ns {
                    self.lag.saturating_record(now.saturating_sub(next).max(1));
                }
            }
            self.j += 1;
            batch += 1;
            next = self.sched(self.j);
            if batch % 32 == 0 {
                now = ns_since(self.plan.t0);
            }
        }
        self.unflushed = false;
        for (k, s) in self.plan.sessions.iter_mut().enumerate() {
            if !self.dirty[k] {
                continue;
            }
            match s.flush() {
                Ok(true) => {
                    self.dirty[k] = false;
                    s.last_write_ns = now;
                }
                Ok(false) => self.unflushed = true,
                Err(_) => {
                    self.dirty[k] = false;
                    s.shared.dead.store(true, Ordering::Relaxed);
                }
            }
        }
        if now >= self.last_heartbeat_check + 50_000_000 {
            self.last_heartbeat_check = now;
            for (k, s) in self.plan.sessions.iter_mut().enumerate() {
                if now.saturating_sub(s.last_write_ns) >= self.heartbeat_ns {
                    let hb = Heartbeat { timestamp_ns: wall_ns() };
                    Message::Heartbeat(hb).append_to(&mut s.out);
                    self.dirty[k] = true;
                    s.last_write_ns = now;
                }
            }
        }
        if batch > 0 {
            SendTurn::Worked
        } else if self.unflushed {
            SendTurn::Unflushed
        } else {
            SendTurn::Wait(next.saturating_sub(ns_since(self.plan.t0)))
        }
    }

    fn finish(self) -> SenderResult {
        let sessions = self.plan.sessions.into_iter().map(|s| s.stream).collect();
        SenderResult {
            sessions,
            sent: self.sent,
            not_sent: self.not_sent,
            mix: self.mix,
            lag: self.lag,
        }
    }
}

fn run_sender(plan: SenderPlan) -> Result<SenderResult, String> {
    let mut sender = Sender::new(plan)?;
    loop {
        // Sleep rather than spin or yield: on a machine with fewer cores than busy threads a
        // spinning client steals the server's CPU, and `yield_now` to a spinning thread can
        // cost a whole scheduler tick. A sleep overshoots by the timer slack (~50-60 µs),
        // which shows in `send_lag_*` and, being measured from the schedule, in the latency
        // ([`LoadConfig::spin_core`] avoids it on a core of the client's own).
        match sender.turn() {
            SendTurn::Done => break,
            SendTurn::Worked => {}
            SendTurn::Unflushed => std::thread::sleep(Duration::from_micros(20)),
            SendTurn::Wait(wait) if wait > SPIN_BELOW_NS => {
                std::thread::sleep(Duration::from_nanos(wait));
            }
            SendTurn::Wait(_) => std::hint::spin_loop(),
        }
    }
    Ok(sender.finish())
}

// ---- Receiver ---------------------------------------------------------------------------------

struct RecvSession {
    stream: mio::net::TcpStream,
    decoder: FrameDecoder,
    shared: Arc<Shared>,
    done: bool,
}

struct ReceiverPlan {
    sessions: Vec<RecvSession>,
    window: Window,
    t0: Instant,
    outstanding: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

/// Decode and apply every complete frame buffered for a session (marking it done if it ended).
fn drain_frames(s: &mut RecvSession, now_ns: u64, plan: &ReceiverPlan, stats: &mut RecvStats) {
    let mut book = lock(&s.shared.book);
    loop {
        let msg = match s.decoder.next_frame() {
            Ok(Some(frame)) => Message::decode(frame).map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let alive = match msg {
            Ok(m) => on_response(&mut book, &m, now_ns, plan.window, stats, &plan.outstanding),
            Err(e) => {
                stats.ended(format!("undecodable frame: {e}"));
                false
            }
        };
        if !alive {
            s.done = true;
            s.shared.dead.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// A receiver's state between turns (see [`run_receiver`] and [`run_spinning`]).
struct Receiver {
    plan: ReceiverPlan,
    sessions: Vec<RecvSession>,
    poll: mio::Poll,
    events: mio::Events,
    stats: RecvStats,
}

impl Receiver {
    fn new(mut plan: ReceiverPlan) -> Result<Receiver, String> {
        let mut stats = RecvStats::new()?;
        let poll = mio::Poll::new().map_err(|e| e.to_string())?;
        let mut sessions = std::mem::take(&mut plan.sessions);
        for (i, s) in sessions.iter_mut().enumerate() {
            poll.registry()
                .register(&mut s.stream, mio::Token(i), mio::Interest::READABLE)
                .map_err(|e| e.to_string())?;
            // Frames that arrived with the LoginAccepted.
            drain_frames(s, ns_since(plan.t0), &plan, &mut stats);
        }
        Ok(Receiver { plan, sessions, poll, events: mio::Events::with_capacity(256), stats })
    }

    fn stopped(&self) -> bool {
        self.plan.stop.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` for readable sessions and take in everything they have.
    fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(format!("poll: {e}"));
        }
        for event in self.events.iter() {
            let Some(s) = self.sessions.get_mut(event.token().0) else { continue };
            while !s.done {
                match s.stream.read(s.decoder.spare()) {
                    Ok(0) => {
                        self.stats.ended("connection closed".into());
                        s.done = true;
                        s.shared.dead.store(true, Ordering::Relaxed);
                    }
                    Ok(n) => {
                        s.decoder.commit(n);
                        let now = ns_since(self.plan.t0);
                        drain_frames(s, now, &self.plan, &mut self.stats);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.stats.ended(format!("read error: {}", e.kind()));
                        s.done = true;
                        s.shared.dead.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(())
    }
}

fn run_receiver(plan: ReceiverPlan) -> Result<RecvStats, String> {
    let mut receiver = Receiver::new(plan)?;
    while !receiver.stopped() {
        receiver.turn(RECV_POLL)?;
    }
    Ok(receiver.stats)
}

/// The one client thread of [`LoadConfig::spin_core`]: pinned, it sends and receives in one
/// loop that never sleeps (a socket read costs a poll with no timeout), so neither a timer's
/// slack nor a wake-up is in the measured latency. Signals `sending_done` when the schedule
/// is done, then receives until the receivers' stop.
fn run_spinning(
    send: SenderPlan,
    recv: ReceiverPlan,
    core: usize,
    sending_done: Arc<AtomicBool>,
) -> Result<(SenderResult, RecvStats), String> {
    bourse_node::affinity::pin_current_thread(Some(core))?;
    let mut sender = Sender::new(send)?;
    let mut receiver = Receiver::new(recv)?;
    let mut sending = true;
    loop {
        if sending && matches!(sender.turn(), SendTurn::Done) {
            sending = false;
            sending_done.store(true, Ordering::Release);
        }
        receiver.turn(Duration::ZERO)?;
        if !sending && receiver.stopped() {
            break;
        }
        std::hint::spin_loop();
    }
    Ok((sender.finish(), receiver.stats))
}

// ---- The run ----------------------------------------------------------------------------------

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn join<T>(h: JoinHandle<Result<T, String>>, what: &str) -> Result<T, String> {
    h.join().map_err(|_| format!("the {what} thread panicked"))?
}

/// Drive the load against a gateway at `addr`, one order-entry session per key (the keys
/// must be registered, each for its own funded account). See the [module docs](self).
pub fn run_load(
    addr: SocketAddr,
    keys: &[SessionKey],
    cfg: &LoadConfig,
) -> Result<LoadReport, String> {
    if keys.is_empty() {
        return Err("at least one session is needed".into());
    }
    if cfg.rate == 0 {
        return Err("the rate must be positive".into());
    }
    if cfg.levels == 0 || cfg.tick == 0 || cfg.lot == 0 || cfg.mid <= cfg.levels * cfg.tick {
        return Err(
            "the price band must lie above 0 (mid > levels × tick, tick and lot > 0)".into()
        );
    }
    let threads = if cfg.spin_core.is_some() { 1 } else { cfg.client_threads.clamp(1, keys.len()) };
    let mut conns = Vec::with_capacity(keys.len());
    for key in keys {
        conns.push(login(addr, key, cfg.heartbeat_ms)?);
    }
    let warmup_ns = cfg.warmup.as_nanos() as u64;
    let mut window = Window {
        start_ns: warmup_ns,
        end_ns: warmup_ns + cfg.duration.as_nanos() as u64,
        t0_wall_ns: 0,
    };
    let outstanding = Arc::new(AtomicI64::new(0));
    let stop_senders = Arc::new(AtomicBool::new(false));
    let stop_receivers = Arc::new(AtomicBool::new(false));
    let mut send_sets: Vec<Vec<SendSession>> = (0..threads).map(|_| Vec::new()).collect();
    let mut recv_sets: Vec<Vec<RecvSession>> = (0..threads).map(|_| Vec::new()).collect();
    let mut shared_all = Vec::with_capacity(keys.len());
    for (i, (stream, decoder)) in conns.into_iter().enumerate() {
        let reader = stream.try_clone().map_err(|e| e.to_string())?;
        // O_NONBLOCK is shared by both handles (one open file): the sender handles WouldBlock.
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let shared =
            Arc::new(Shared { book: Mutex::new(Book::new()), dead: AtomicBool::new(false) });
        shared_all.push(shared.clone());
        let seed = cfg.seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
        send_sets[i % threads].push(SendSession {
            stream,
            shared: shared.clone(),
            rng: SplitMix64::new(seed),
            out: Vec::with_capacity(64 << 10),
            written: 0,
            last_write_ns: 0,
        });
        recv_sets[i % threads].push(RecvSession {
            stream: mio::net::TcpStream::from_std(reader),
            decoder,
            shared,
            done: false,
        });
    }
    let t0 = Instant::now();
    window.t0_wall_ns = wall_ns();
    let n = keys.len() as u128;
    let mut receiver_plans = Vec::with_capacity(threads);
    for sessions in recv_sets {
        receiver_plans.push(ReceiverPlan {
            sessions,
            window,
            t0,
            outstanding: outstanding.clone(),
            stop: stop_receivers.clone(),
        });
    }
    let mut sender_plans = Vec::with_capacity(threads);
    for (p, sessions) in send_sets.into_iter().enumerate() {
        let m = sessions.len() as u128;
        sender_plans.push(SenderPlan {
            sessions,
            phase_ns: (p as u128 * NS_PER_SEC as u128 / (cfg.rate as u128 * threads as u128))
                as u64,
            // This sender's share: rate × m / n requests per second.
            rate_num: cfg.rate as u128 * m,
            rate_den: n,
            window,
            cfg: cfg.clone(),
            t0,
            outstanding: outstanding.clone(),
            stop: stop_senders.clone(),
        });
    }
    let mut send_results = Vec::with_capacity(threads);
    let mut recv_results = Vec::with_capacity(threads);
    let mut first_error = None;
    let drain = |first_error: &Option<String>| {
        // Wait for every response (or the drain time), then stop the receivers.
        let drain_deadline = Instant::now() + cfg.drain;
        while first_error.is_none()
            && outstanding.load(Ordering::Relaxed) > 0
            && Instant::now() < drain_deadline
            && !shared_all.iter().all(|s| s.dead.load(Ordering::Relaxed))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop_receivers.store(true, Ordering::Relaxed);
    };
    if let Some(core) = cfg.spin_core {
        let (Some(send), Some(recv)) = (sender_plans.pop(), receiver_plans.pop()) else {
            return Err("no client plan".into());
        };
        let sending_done = Arc::new(AtomicBool::new(false));
        let done = sending_done.clone();
        let h = std::thread::Builder::new()
            .name("loadgen-spin".into())
            .spawn(move || run_spinning(send, recv, core, done))
            .map_err(|e| e.to_string())?;
        while !sending_done.load(Ordering::Acquire) && !h.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drain(&first_error);
        match join(h, "client") {
            Ok((sent, received)) => {
                send_results.push(sent);
                recv_results.push(received);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    } else {
        let mut receivers = Vec::with_capacity(threads);
        for (p, plan) in receiver_plans.into_iter().enumerate() {
            let h = std::thread::Builder::new()
                .name(format!("loadgen-recv-{p}"))
                .spawn(move || run_receiver(plan))
                .map_err(|e| e.to_string())?;
            receivers.push(h);
        }
        let mut senders = Vec::with_capacity(threads);
        for (p, plan) in sender_plans.into_iter().enumerate() {
            let h = std::thread::Builder::new()
                .name(format!("loadgen-send-{p}"))
                .spawn(move || run_sender(plan))
                .map_err(|e| e.to_string())?;
            senders.push(h);
        }
        for h in senders {
            match join(h, "sender") {
                Ok(r) => send_results.push(r),
                Err(e) => {
                    stop_senders.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        drain(&None);
        for h in receivers {
            match join(h, "receiver") {
                Ok(r) => recv_results.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let logout_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    for r in &mut send_results {
        for stream in r.sessions.drain(..) {
            logout(stream, logout_deadline);
        }
    }

    let mut hist = new_histogram()?;
    let mut inbound = new_histogram()?;
    let mut outbound = new_histogram()?;
    let mut lag = new_histogram()?;
    let mut mix = MixCounts::default();
    let (mut sent, mut not_sent) = (0, 0);
    for r in &send_results {
        lag.add(&r.lag).map_err(|e| e.to_string())?;
        mix.add(&r.mix);
        sent += r.sent;
        not_sent += r.not_sent;
    }
    let mut codes: FxHashMap<u16, u64> = FxHashMap::default();
    let mut session_rejects = SessionRejects::default();
    let (mut answered, mut window_answers, mut trades, mut executions) = (0, 0, 0, 0);
    let (mut messages, mut unmatched, mut disconnects) = (0, 0, 0);
    let mut disconnect_reasons = BTreeMap::new();
    for r in &recv_results {
        hist.add(&r.hist).map_err(|e| e.to_string())?;
        inbound.add(&r.inbound).map_err(|e| e.to_string())?;
        outbound.add(&r.outbound).map_err(|e| e.to_string())?;
        for (&c, &k) in &r.rejects {
            *codes.entry(c).or_default() += k;
        }
        session_rejects.throttled += r.session_rejects.throttled;
        session_rejects.busy += r.session_rejects.busy;
        session_rejects.other += r.session_rejects.other;
        answered += r.answered;
        window_answers += r.window_answers;
        trades += r.trades;
        executions += r.executions;
        messages += r.messages;
        unmatched += r.unmatched;
        disconnects += r.disconnects;
        for (why, &k) in &r.disconnect_reasons {
            *disconnect_reasons.entry(why.clone()).or_default() += k;
        }
    }
    let (mut unanswered, mut open_orders) = (0, 0);
    for s in &shared_all {
        let book = lock(&s.book);
        unanswered += book.in_flight();
        open_orders += book.resting.len() as u64;
    }
    let reject_codes: BTreeMap<String, u64> = codes
        .iter()
        .map(|(&c, &k)| {
            let name = reject_name(c);
            (name, k)
        })
        .collect();
    let duration_s = cfg.duration.as_secs_f64();
    let quantile = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0.0
        } else {
            us(h.value_at_quantile(p))
        }
    };
    let q = |p: f64| quantile(&hist, p);
    Ok(LoadReport {
        sessions: keys.len(),
        client_threads: threads,
        offered_rate: cfg.rate,
        achieved_rate: if duration_s > 0.0 { window_answers as f64 / duration_s } else { 0.0 },
        duration_s,
        warmup_s: cfg.warmup.as_secs_f64(),
        sent,
        answered,
        unanswered,
        not_sent,
        measured: hist.len(),
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if hist.is_empty() { 0.0 } else { us(hist.max()) },
        mean_us: if hist.is_empty() { 0.0 } else { hist.mean() / 1e3 },
        inbound_p50_us: quantile(&inbound, 0.5),
        inbound_p99_us: quantile(&inbound, 0.99),
        outbound_p50_us: quantile(&outbound, 0.5),
        outbound_p99_us: quantile(&outbound, 0.99),
        send_lag_p99_us: quantile(&lag, 0.99),
        send_lag_max_us: if lag.is_empty() { 0.0 } else { us(lag.max()) },
        rejects: codes.values().sum(),
        reject_codes,
        session_rejects,
        trades,
        executions,
        mix,
        messages_received: messages,
        unmatched,
        disconnects,
        disconnect_reasons,
        open_orders,
    })
}

/// `RejectCode` name for a wire code (the number itself if it names none).
fn reject_name(code: u16) -> String {
    use crate::protocol::WireField;
    match RejectCode::get(&code.to_le_bytes()) {
        Ok(c) => format!("{c:?}"),
        Err(_) => code.to_string(),
    }
}

// ---- The bench harness ------------------------------------------------------------------------

/// `bench gateway`: what to run.
#[derive(Clone, Debug)]
pub struct GatewayBenchConfig {
    /// Total offered rate, requests per second.
    pub rate: u64,
    /// The measured window, s.
    pub duration_s: f64,
    /// Warm-up before it, s.
    pub warmup_s: f64,
    /// Sessions (connections, keys, accounts).
    pub sessions: usize,
    /// The node's durability policy.
    pub policy: Durability,
    /// Workload seed.
    pub seed: u64,
    /// Resting orders a session keeps at most.
    pub max_resting: usize,
    /// Load generator sender/receiver thread pairs.
    pub client_threads: usize,
    /// One spinning client thread pinned to this core instead ([`LoadConfig::spin_core`]).
    pub client_spin_core: Option<usize>,
    /// How long to wait for outstanding responses after the last request, s.
    pub drain_s: f64,
    /// Core to pin the gateway's I/O thread to.
    pub gateway_core: Option<usize>,
    /// The gateway's spin after activity, µs (`None`: its default).
    pub gateway_spin_us: Option<u64>,
    /// Cores to pin the node's threads to.
    pub node_cores: Cores,
    /// How the node's idle threads wait (`None`: the node's default).
    pub node_wait: Option<WaitStrategy>,
    /// The node's pipeline mode (`threads` or `single`).
    pub node_pipeline: Pipeline,
    /// Run the gateway's I/O on the node's pipeline thread (`GatewayConfig::embedded`);
    /// implies `node_pipeline = single`, and `gateway_core`/`gateway_spin_us` do not apply.
    pub gateway_embedded: bool,
    /// Zero-fill journal segments before use (`NodeConfig::preallocate_segments`), as the
    /// shipped configuration does; on by default.
    pub preallocate_segments: bool,
}

impl Default for GatewayBenchConfig {
    fn default() -> Self {
        GatewayBenchConfig {
            rate: 10_000,
            duration_s: 10.0,
            warmup_s: 1.0,
            sessions: 8,
            policy: Durability::Fsync,
            seed: 1,
            max_resting: 256,
            client_threads: 1,
            client_spin_core: None,
            drain_s: 5.0,
            gateway_core: None,
            gateway_spin_us: None,
            node_cores: Cores::default(),
            node_wait: None,
            node_pipeline: Pipeline::default(),
            gateway_embedded: false,
            preallocate_segments: true,
        }
    }
}

/// The result of `bench gateway`: the load report's fields, plus the setup and the
/// gateway's and node's counters at the end.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayBenchReport {
    /// Always "gateway".
    pub bench: &'static str,
    /// Durability policy.
    pub policy: &'static str,
    /// Whether journal segments were preallocated.
    pub preallocate_segments: bool,
    /// What the load generator measured.
    #[serde(flatten)]
    pub load: LoadReport,
    /// The gateway's counters after it stopped.
    pub gateway: GatewayStats,
    /// The node's counters after it stopped.
    pub node: NodeStats,
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        let dir =
            std::env::temp_dir().join(format!("bourse-{tag}-{}-{}", std::process::id(), wall_ns()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BASE: AssetId = AssetId(1);
const QUOTE: AssetId = AssetId(2);
const MARKET: MarketId = MarketId(1);

fn seconds(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("{what} must be a finite number ≥ 0, not {s}"))
}

/// Run `bench gateway`: a node in a temporary directory (the given durability policy), one
/// market, one funded account and API key per session, a gateway on `127.0.0.1:0` with its
/// throttle and flood limits above the offered rate, then [`run_load`] against it; the
/// gateway and the node are stopped before the report is returned.
pub fn bench_gateway(cfg: GatewayBenchConfig) -> Result<GatewayBenchReport, String> {
    if cfg.sessions == 0 || cfg.sessions > 1000 {
        return Err(format!("sessions must be 1..=1000, not {}", cfg.sessions));
    }
    if cfg.rate == 0 {
        return Err("rate must be positive".into());
    }
    let load = LoadConfig {
        rate: cfg.rate,
        warmup: seconds(cfg.warmup_s, "warmup")?,
        duration: seconds(cfg.duration_s, "duration")?,
        drain: seconds(cfg.drain_s, "drain")?,
        seed: cfg.seed,
        market: MARKET,
        max_resting: cfg.max_resting.max(1),
        client_threads: cfg.client_threads.max(1),
        spin_core: cfg.client_spin_core,
        ..LoadConfig::default()
    };
    let tmp = TempDir::new("bench-gateway")?;
    let node_config = NodeConfig {
        data_dir: tmp.0.clone(),
        durability: cfg.policy,
        preallocate_segments: cfg.preallocate_segments,
        snapshot_every_commands: 0,
        snapshot_every_secs: 0,
        order_capacity: (cfg.sessions * load.max_resting * 2).next_power_of_two().max(1 << 16),
        levels_per_side: 1024,
        ring_capacity: 1 << 16,
        event_window: 1 << 16,
        cores: cfg.node_cores,
        wait: cfg.node_wait.unwrap_or_default(),
        pipeline: if cfg.gateway_embedded { Pipeline::Single } else { cfg.node_pipeline },
        ..NodeConfig::default()
    };
    let node = Arc::new(Node::start(node_config).map_err(|e| e.to_string())?);
    let mut setup = vec![
        Command::ListAsset { asset: BASE, decimals: 0 },
        Command::ListAsset { asset: QUOTE, decimals: 2 },
        Command::ListMarket {
            market: MARKET,
            base: BASE,
            quote: QUOTE,
            price_decimals: 2,
            tick_size: load.tick,
            lot_size: load.lot,
            min_notional: 0,
        },
    ];
    let mut keys = Vec::with_capacity(cfg.sessions);
    for i in 1..=cfg.sessions as u64 {
        let account = AccountId(i);
        setup.push(Command::CreateAccount { account, fee_tier: 0 });
        setup.push(Command::Deposit { account, asset: BASE, amount: 1_000_000_000_000 });
        setup.push(Command::Deposit { account, asset: QUOTE, amount: 1_000_000_000_000_000 });
        keys.push(SessionKey { key_id: i, secret: format!("loadgen-secret-{i}").into_bytes() });
    }
    {
        let mut client = node.client().map_err(|e| e.to_string())?;
        for cmd in &setup {
            let ack = client.call(*cmd, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            if let Some(Event::Rejected { .. }) = ack.events.first() {
                return Err(format!("setup command {cmd:?} was rejected: {:?}", ack.events));
            }
        }
    }
    let per_session = (cfg.rate / cfg.sessions as u64).max(1);
    let limit =
        per_session.saturating_mul(4).saturating_add(10_000).min(u32::MAX as u64 / 4) as u32;
    let gateway_config = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        throttle_per_sec: limit,
        throttle_burst: limit,
        flood_per_sec: limit * 2,
        flood_burst: limit * 2,
        core: cfg.gateway_core,
        spin_us: cfg.gateway_spin_us.unwrap_or(GatewayConfig::default().spin_us),
        embedded: cfg.gateway_embedded,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::start(node.clone(), gateway_config).map_err(|e| e.to_string())?;
    for (i, key) in keys.iter().enumerate() {
        gateway
            .add_key(key.key_id, &key.secret, AccountId(i as u64 + 1), SessionKinds::ALL)
            .map_err(|e| e.to_string())?;
    }
    let result = run_load(gateway.local_addr(), &keys, &load);
    let gateway_stats = gateway.stop().map_err(|e| e.to_string())?;
    let node_stats = match Arc::try_unwrap(node) {
        Ok(node) => node.stop().map_err(|e| e.to_string())?,
        Err(node) => node.stats(),
    };
    Ok(GatewayBenchReport {
        bench: "gateway",
        policy: cfg.policy.as_str(),
        preallocate_segments: cfg.preallocate_segments,
        load: result?,
        gateway: gateway_stats,
        node: node_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond_accept(book: &mut Book, client_ref: u64, msg: &Message, order_id: u64) {
        let Message::NewOrder(o) = *msg else { return };
        let p = book.take_pending(client_ref).expect("pending");
        if p.kind == ReqKind::New {
            book.add_resting(order_id, o.side, o.price, o.quantity);
        }
    }

    /// Offline: the mix is close to 60/20/12/8 while the book is below its cap, and the
    /// pending table and the pickable set stay consistent.
    #[test]
    fn mix_and_bookkeeping() {
        let cfg = LoadConfig { max_resting: 1_000_000, ..LoadConfig::default() };
        let mut book = Book::new();
        let mut rng = SplitMix64::new(7);
        let mut mix = MixCounts::default();
        let mut next_id = 1;
        for i in 0..100_000u64 {
            let msg = plan_request(&mut book, &mut rng, &cfg, i, &mut mix);
            let client_ref = book.next_ref() - 1;
            match msg {
                Message::NewOrder(o) => {
                    assert!(o.price > 0 && o.quantity > 0);
                    respond_accept(&mut book, client_ref, &msg, next_id);
                    next_id += 1;
                }
                Message::CancelOrder(c) => {
                    let OrderRef::Id(id) = c.order else { panic!("by id") };
                    book.remove_resting(id);
                    book.take_pending(client_ref).expect("pending");
                }
                Message::AmendOrder(a) => {
                    let OrderRef::Id(id) = a.order else { panic!("by id") };
                    let r = book.resting[&id];
                    assert!(a.new_price != 0 || a.new_quantity < r.leaves);
                    assert!(a.new_price == 0 || a.new_price != r.price);
                    let p = book.take_pending(client_ref).expect("pending");
                    book.make_pickable(p.order_id);
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(book.pending.is_empty());
        }
        let total = 100_000.0;
        let share = |k: u64| k as f64 / total * 100.0;
        assert!((share(mix.new) - 60.0).abs() < 1.5, "{mix:?}");
        assert!((share(mix.cancel) - 20.0).abs() < 1.5, "{mix:?}");
        assert!((share(mix.amend_reduce + mix.amend_price) - 12.0).abs() < 1.5, "{mix:?}");
        assert!((share(mix.ioc) - 8.0).abs() < 1.0, "{mix:?}");
        assert_eq!(book.pickable.len(), book.resting.len());
        for (i, id) in book.pickable.iter().enumerate() {
            assert_eq!(book.resting[id].slot, i);
        }
    }

    #[test]
    fn the_cap_turns_new_orders_into_cancels() {
        let cfg = LoadConfig { max_resting: 10, ..LoadConfig::default() };
        let mut book = Book::new();
        let mut rng = SplitMix64::new(3);
        let mut mix = MixCounts::default();
        for id in 1..=10 {
            book.add_resting(id, Side::Buy, cfg.mid - 1, 5);
        }
        for i in 0..1000 {
            let msg = plan_request(&mut book, &mut rng, &cfg, i, &mut mix);
            let client_ref = book.next_ref() - 1;
            let p = book.take_pending(client_ref).expect("pending");
            assert!(!matches!(msg, Message::NewOrder(o) if o.time_in_force == TimeInForce::Gtc));
            book.make_pickable(p.order_id);
        }
        assert_eq!(mix.new, 0);
    }

    #[test]
    fn out_of_order_answers_advance_the_pending_window() {
        let mut book = Book::new();
        let p = Pending { sched_ns: 0, kind: ReqKind::New, order_id: 0 };
        for _ in 0..4 {
            book.push_pending(p);
        }
        assert!(book.take_pending(3).is_some());
        assert!(book.take_pending(3).is_none());
        assert_eq!(book.first_ref, 1);
        assert!(book.take_pending(1).is_some());
        assert_eq!(book.first_ref, 2);
        assert!(book.take_pending(2).is_some());
        assert_eq!(book.first_ref, 4);
        assert_eq!(book.in_flight(), 1);
        assert_eq!(book.next_ref(), 5);
        assert!(book.take_pending(0).is_none());
        assert!(book.take_pending(99).is_none());
    }
}
