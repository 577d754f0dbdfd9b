//! LOBSTER replay: drive the engine with real NASDAQ order flow and check its book after
//! every message.
//!
//! A LOBSTER sample is a zip holding `<T>_<date>_..._message_<L>.csv` (one event per line:
//! `time, type, order_id, size, price, direction`) and `..._orderbook_<L>.csv` (the top `L`
//! levels of both sides after each message: `askP1, askS1, bidP1, bidS1, askP2, ...`).
//! Prices are USD × 10 000 and are used unchanged as engine price units (one market with
//! `price_decimals = 4`, `tick_size = 1`; a few prices are not whole cents, so the tick
//! cannot be 100); sizes are shares, one lot each.
//!
//! # The harness
//!
//! * **Seeding.** Row 0 of the orderbook file is the book *after* message 0, and the book
//!   before it cannot be derived in general (in the AAPL file, message 0 adds a bid at a new
//!   best price, so the bid it displaced lies beyond the 1-level view). So the book is seeded
//!   from row 0 and replay starts at message 1. Every level of row 0 becomes one *synthetic*
//!   order of the seed account (its real orders have unknown ids), except that when message 0
//!   is a visible add, that order is split off and placed behind its level's synthetic
//!   order under its own id, so later messages about it find it.
//! * **Messages.** Type 1 is a passive GTC limit order of the maker account. Types 2 and 3
//!   reduce (an amend to the new remaining quantity, which keeps priority) or cancel the
//!   named order. Type 4 is an IOC limit order of the taker account on the opposite side, at
//!   the message's price and size; it is a *FIFO hit* when the engine filled exactly the
//!   named order for the whole size. Types 5 (hidden execution), 6 (cross trade) and 7
//!   (halt) do not change the visible book and are only counted. All orders use
//!   `stp: none`, and the taker is a different account from every maker.
//! * **Unknown ids.** An `L`-level file omits every event deeper than `L` levels, so some
//!   orders are never seen. A type 2, 3 or 4 message naming an unknown id at a visible price
//!   acts on the synthetic quantity at that price: a reduction is taken from the level's
//!   synthetic orders, newest first (then, if they fall short, from its known orders, newest
//!   first); an execution is an IOC like any other, counted as a *synthetic hit* when it
//!   filled only synthetic orders. Such a message at a price beyond the previous row's
//!   view is ignored (counted; it never happens in the samples, whose messages all touch
//!   the visible book).
//! * **Levels entering the view.** When the engine's top `L` of a side differs from the
//!   file's after a message, and the previous row showed `L` levels on that side, the part
//!   of the book beyond that previous view is reconciled: levels the file shows there are
//!   set to the file's quantity (a shortfall is seeded as a synthetic order at the back of
//!   the level, an excess is reduced as above), and engine levels there that the file does
//!   not show, up to the file's last level, are dropped (events on them were omitted while
//!   they were out of view). Whatever still differs is a *book mismatch*; nothing inside the
//!   previous view is ever adjusted.
//!
//! # Reading the FIFO figures
//!
//! `fifo_hits / executions_known_id` measures price-time priority where the harness knows
//! the queue. In the 1-level files about 40% of executions name orders that were added
//! out of view (`executions_unknown_id`), so `fifo_hits / executions` cannot approach 1
//! there; `fifo_hit_rate` counts those as hits when they filled only synthetic quantity.
//! The remaining misses come from the data, not the engine: a known order that leaves the
//! view keeps its place even if it was cancelled and replaced unseen, and the files also
//! show executions that skip an older order that is visible the whole time (AAPL message
//! 1222 executes order 19300157 while 19300155, added two messages earlier at the same
//! price, still rests).
//!
//! # Cost
//!
//! Per message: one engine command (plus one per synthetic adjustment), two
//! `depth(L)` queries and an `O(L)` comparison; reconciling touches only the levels that
//! entered the view. Reductions scan one price level (`O(orders at the level)`). Memory is
//! the two decompressed CSV files plus the live orders. Overall `O(messages × L)`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;
use std::time::Instant;

use bourse_engine::{
    AccountId, AssetId, Command, Engine, EngineConfig, Event, MarketId, NewOrder, OrderId,
    OrderRef, OrderType, Side, StpMode, TimeInForce,
};
use rustc_hash::FxHashMap;
use serde::Serialize;

/// The one market the replay uses.
pub const MARKET: MarketId = MarketId(1);
/// Shares: 0 decimals.
pub const BASE: AssetId = AssetId(1);
/// US dollars with 4 decimals, so that a price unit times a share is one quote atom.
pub const QUOTE: AssetId = AssetId(2);
/// Owner of synthetic orders (seeded from the file, unknown ids).
pub const SEED_ACCOUNT: AccountId = AccountId(1);
/// Owner of the orders LOBSTER shows being added (type 1).
pub const MAKER_ACCOUNT: AccountId = AccountId(2);
/// Sends the IOC orders that replay executions (type 4).
pub const TAKER_ACCOUNT: AccountId = AccountId(3);

const BASE_DEPOSIT: u64 = 1_000_000_000_000;
const QUOTE_DEPOSIT: u64 = 100_000_000_000_000_000;
/// How many mismatches and rejects the report describes in full.
const REPORTED_DETAILS: usize = 5;

/// One line of a LOBSTER message file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Event type, 1 to 7.
    #[serde(rename = "type")]
    pub kind: u8,
    /// LOBSTER order id (0 for hidden executions and halts).
    pub order_id: u64,
    /// Shares.
    pub size: u64,
    /// USD × 10 000 (negative for halts).
    pub price: i64,
    /// 1 buy, -1 sell; for executions, the side of the resting order.
    pub direction: i8,
}

impl Message {
    /// Parse `time,type,order_id,size,price,direction`.
    pub fn parse(line: &str) -> Result<Message, String> {
        let mut f = line.trim_end().split(',');
        let mut next = |name: &str| f.next().ok_or_else(|| format!("missing field `{name}`"));
        next("time")?;
        let kind = next("type")?;
        let order_id = next("order_id")?;
        let size = next("size")?;
        let price = next("price")?;
        let direction = next("direction")?;
        let bad = |name: &str, v: &str| format!("bad {name} {v:?}");
        Ok(Message {
            kind: kind.parse().map_err(|_| bad("type", kind))?,
            order_id: order_id.parse().map_err(|_| bad("order_id", order_id))?,
            size: size.parse().map_err(|_| bad("size", size))?,
            price: price.parse().map_err(|_| bad("price", price))?,
            direction: direction.parse().map_err(|_| bad("direction", direction))?,
        })
    }

    /// The side of the order it names (the resting order, for executions).
    pub fn side(&self) -> Side {
        if self.direction > 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

/// One row of a LOBSTER orderbook file: the occupied levels, best first, as
/// `(price, size)`. Dummy levels (size 0) are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BookRow {
    /// Ask levels, lowest price first.
    pub asks: Vec<(u64, u64)>,
    /// Bid levels, highest price first.
    pub bids: Vec<(u64, u64)>,
}

impl BookRow {
    /// Parse a row of `4 × levels` fields into `self`, reusing its buffers.
    pub fn parse_into(&mut self, line: &str, levels: usize) -> Result<(), String> {
        self.asks.clear();
        self.bids.clear();
        let mut fields = line.trim_end().split(',');
        let mut num = || -> Result<i64, String> {
            let s = fields.next().ok_or("orderbook row is too short")?;
            s.parse().map_err(|_| format!("bad orderbook field {s:?}"))
        };
        for _ in 0..levels {
            let (ask_price, ask_size, bid_price, bid_size) = (num()?, num()?, num()?, num()?);
            for (price, size, out) in
                [(ask_price, ask_size, &mut self.asks), (bid_price, bid_size, &mut self.bids)]
            {
                if size > 0 {
                    let price = u64::try_from(price).map_err(|_| format!("bad price {price}"))?;
                    out.push((price, size as u64));
                }
            }
        }
        if fields.next().is_some() {
            return Err(format!("orderbook row has more than {} fields", 4 * levels));
        }
        Ok(())
    }

    /// The levels of one side, best first.
    pub fn side(&self, side: Side) -> &[(u64, u64)] {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
}

/// A message after which the engine's book differed from the file's.
#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    /// Index of the message (and row) in the files.
    pub index: u64,
    /// The message.
    pub message: Message,
    /// The engine's top levels, `(price, quantity)` best first.
    pub engine: BookRow,
    /// The file's row.
    pub file: BookRow,
}

/// What a replay found. Serialized as the JSON line [`replay_path`] returns.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    /// The zip (or `"-"` for in-memory input).
    pub file: String,
    /// The ticker, from the message file's name.
    pub ticker: String,
    /// Book levels per side in the file.
    pub levels: usize,
    /// Messages processed, message 0 included.
    pub messages: u64,
    /// Messages by type (index 0 counts unknown types).
    pub messages_by_type: [u64; 8],
    /// Rows (after message 1 onwards) where the engine's top levels differed from the file's.
    pub book_mismatches: u64,
    /// Type 4 messages replayed.
    pub executions: u64,
    /// Executions whose IOC filled exactly the named order, for the whole size.
    pub fifo_hits: u64,
    /// Executions naming an order the harness knows (added by a type 1 message).
    pub executions_known_id: u64,
    /// `fifo_hits / executions_known_id`.
    pub fifo_hit_rate_known: f64,
    /// Executions naming an order never seen (it sits in synthetic quantity).
    pub executions_unknown_id: u64,
    /// Unknown-id executions whose IOC filled only synthetic orders, for the whole size.
    pub synthetic_hits: u64,
    /// `(fifo_hits + synthetic_hits) / executions`.
    pub fifo_hit_rate: f64,
    /// Executions whose IOC found less than the message's size.
    pub executions_short: u64,
    /// Synthetic orders placed: seeded from row 0 plus levels entering the view.
    pub synthetic_orders: u64,
    /// Of which seeded from row 0.
    pub seed_orders: u64,
    /// Levels entering the view with more engine quantity than the file shows.
    pub level_reductions: u64,
    /// Engine levels beyond the view dropped because the file no longer shows them.
    pub stale_levels_dropped: u64,
    /// Orders cancelled with those levels.
    pub stale_orders_dropped: u64,
    /// Type 2/3 messages naming an unknown id, applied to synthetic quantity.
    pub unknown_id_reductions: u64,
    /// Reductions that had to take quantity from known orders.
    pub reductions_from_known: u64,
    /// Type 2/3/4 messages for unknown ids beyond the view, ignored.
    pub ignored_beyond_view: u64,
    /// Type 2/3 messages removing more than the named order had left in the engine.
    pub known_short: u64,
    /// Type 3 messages removing less than the named order had left in the engine (the
    /// rest is kept as synthetic quantity).
    pub known_excess: u64,
    /// Passive (type 1) orders that traded on arrival.
    pub passive_crosses: u64,
    /// Trades the engine made.
    pub trades: u64,
    /// Commands the engine rejected (should be 0).
    pub rejects: u64,
    /// The first rejects, in full.
    pub first_rejects: Vec<String>,
    /// The first mismatches, in full.
    pub first_mismatches: Vec<Mismatch>,
    /// Orders resting at the end.
    pub open_orders: usize,
    /// Whether the engine's `check_invariants` passed at the end.
    pub invariants_ok: bool,
    /// Its error, if not.
    pub invariant_error: Option<String>,
    /// The engine's state hash at the end, hex.
    pub state_hash: String,
    /// Time to read and decompress the zip.
    pub read_ms: f64,
    /// Time to parse and replay (engine, harness and comparisons).
    pub elapsed_ms: f64,
    /// `messages / elapsed`.
    pub messages_per_sec: f64,
}

/// Replay a LOBSTER sample zip and return the report as one line of JSON.
pub fn replay_path(path: &Path, max_messages: Option<u64>) -> Result<String, String> {
    let report = replay_zip(path, max_messages)?;
    serde_json::to_string(&report).map_err(|e| e.to_string())
}

/// Replay a LOBSTER sample zip.
pub fn replay_zip(path: &Path, max_messages: Option<u64>) -> Result<ReplayReport, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut report = replay_reader(BufReader::new(file), max_messages)?;
    report.file = path.display().to_string();
    Ok(report)
}

/// Replay a LOBSTER sample zip from any seekable reader.
pub fn replay_reader<R: Read + Seek>(
    reader: R,
    max_messages: Option<u64>,
) -> Result<ReplayReport, String> {
    let started = Instant::now();
    let sample = read_sample(reader)?;
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut report = replay_csv(&sample.messages, &sample.orderbook, sample.levels, max_messages)?;
    report.ticker = sample.ticker;
    report.read_ms = read_ms;
    Ok(report)
}

/// The two CSV files of a sample, decompressed.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Ticker, from the message file's name.
    pub ticker: String,
    /// Levels per side, from the orderbook file's name.
    pub levels: usize,
    /// The message file.
    pub messages: String,
    /// The orderbook file.
    pub orderbook: String,
}

/// Read the message and orderbook files out of a LOBSTER sample zip.
pub fn read_sample<R: Read + Seek>(reader: R) -> Result<Sample, String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a zip: {e}"))?;
    let mut messages = None;
    let mut orderbook = None;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry.name().rsplit('/').next().unwrap_or_default().to_string();
        let slot = if name.contains("_message_") && name.ends_with(".csv") {
            &mut messages
        } else if name.contains("_orderbook_") && name.ends_with(".csv") {
            &mut orderbook
        } else {
            continue;
        };
        let mut text = String::with_capacity(entry.size() as usize);
        entry.read_to_string(&mut text).map_err(|e| format!("{name}: {e}"))?;
        *slot = Some((name, text));
    }
    let (message_name, messages) = messages.ok_or("no *_message_<L>.csv in the zip")?;
    let (book_name, orderbook) = orderbook.ok_or("no *_orderbook_<L>.csv in the zip")?;
    let levels = book_name
        .trim_end_matches(".csv")
        .rsplit('_')
        .next()
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .ok_or_else(|| format!("no level count in {book_name:?}"))?;
    let ticker = message_name.split('_').next().unwrap_or_default().to_string();
    Ok(Sample { ticker, levels, messages, orderbook })
}

/// Replay in-memory message and orderbook files with `levels` levels per side.
pub fn replay_csv(
    messages: &str,
    orderbook: &str,
    levels: usize,
    max_messages: Option<u64>,
) -> Result<ReplayReport, String> {
    let started = Instant::now();
    let limit = max_messages.unwrap_or(u64::MAX);
    let mut msgs = messages.lines().filter(|l| !l.trim().is_empty());
    let mut rows = orderbook.lines().filter(|l| !l.trim().is_empty());
    let mut harness = Harness::new(levels);
    let mut prev = BookRow::default();
    let mut row = BookRow::default();
    let mut index = 0u64;
    while index < limit {
        let (line, row_line) = match (msgs.next(), rows.next()) {
            (Some(m), Some(r)) => (m, r),
            (None, None) => break,
            _ => return Err("message and orderbook files differ in length".into()),
        };
        let at = |e: String| format!("line {}: {e}", index + 1);
        let message = Message::parse(line).map_err(at)?;
        row.parse_into(row_line, levels).map_err(at)?;
        harness.count(&message);
        if index == 0 {
            harness.seed(&message, &row);
            harness.check(index, &message, &row, None);
        } else {
            harness.replay(&message, &prev);
            harness.check(index, &message, &row, Some(&prev));
        }
        std::mem::swap(&mut prev, &mut row);
        index += 1;
    }
    let mut report = harness.finish();
    report.messages = index;
    report.file = "-".into();
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    report.messages_per_sec = index as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(report)
}

/// What the harness knows about one resting engine order.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    side: Side,
    price: u64,
    /// Open quantity, from the engine's book events.
    leaves: u64,
    /// LOBSTER id, or 0 for synthetic quantity (unknown ids).
    lobster: u64,
    account: AccountId,
}

/// An order about to be placed, described before the engine gives it an id.
#[derive(Clone, Copy, Debug)]
struct Pending {
    lobster: u64,
    account: AccountId,
}

/// One fill of the last command, maker side.
#[derive(Clone, Copy, Debug)]
struct Fill {
    maker: OrderId,
    quantity: u64,
    synthetic: bool,
}

/// Replay state: the engine plus a mirror of its resting orders, kept from its events.
struct Harness {
    engine: Engine,
    levels: usize,
    events: Vec<Event>,
    orders: FxHashMap<OrderId, Tracked>,
    by_lobster: FxHashMap<u64, OrderId>,
    /// Resting order ids per price in queue order: `[bids, asks]`.
    queues: [BTreeMap<u64, Vec<OrderId>>; 2],
    pending: Option<Pending>,
    fills: Vec<Fill>,
    report: ReplayReport,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

/// Whether `a` is a worse price than `b` on `side`.
fn worse(side: Side, a: u64, b: u64) -> bool {
    match side {
        Side::Buy => a < b,
        Side::Sell => a > b,
    }
}

impl Harness {
    fn new(levels: usize) -> Self {
        let mut h = Harness {
            engine: Engine::new(EngineConfig { order_capacity: 1 << 16, levels_per_side: 4096 }),
            levels,
            events: Vec::with_capacity(64),
            orders: FxHashMap::default(),
            by_lobster: FxHashMap::default(),
            queues: [BTreeMap::new(), BTreeMap::new()],
            pending: None,
            fills: Vec::new(),
            report: ReplayReport { levels, ..ReplayReport::default() },
        };
        let mut setup = vec![
            Command::ListAsset { asset: BASE, decimals: 0 },
            Command::ListAsset { asset: QUOTE, decimals: 4 },
            Command::ListMarket {
                market: MARKET,
                base: BASE,
                quote: QUOTE,
                price_decimals: 4,
                tick_size: 1,
                lot_size: 1,
                min_notional: 0,
            },
        ];
        for account in [SEED_ACCOUNT, MAKER_ACCOUNT, TAKER_ACCOUNT] {
            setup.push(Command::CreateAccount { account, fee_tier: 0 });
            setup.push(Command::Deposit { account, asset: BASE, amount: BASE_DEPOSIT });
            setup.push(Command::Deposit { account, asset: QUOTE, amount: QUOTE_DEPOSIT });
        }
        for cmd in &setup {
            h.apply(cmd);
        }
        h
    }

    /// Apply one command and mirror its effect from the events.
    fn apply(&mut self, cmd: &Command) {
        self.events.clear();
        self.fills.clear();
        self.engine.apply(cmd, &mut self.events);
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            match *ev {
                Event::Accepted { order_id, side, price, .. } => {
                    if let Some(p) = self.pending.take() {
                        let t = Tracked {
                            side,
                            price,
                            leaves: 0,
                            lobster: p.lobster,
                            account: p.account,
                        };
                        self.orders.insert(order_id, t);
                        if p.lobster != 0 {
                            self.by_lobster.insert(p.lobster, order_id);
                        }
                    }
                }
                Event::Trade { maker_order_id, quantity, .. } => {
                    self.report.trades += 1;
                    let synthetic =
                        self.orders.get(&maker_order_id).is_some_and(|t| t.lobster == 0);
                    self.fills.push(Fill { maker: maker_order_id, quantity, synthetic });
                }
                Event::Book { action, order_id, side, price, order_quantity, .. } => {
                    use bourse_engine::BookAction;
                    match action {
                        BookAction::Add => {
                            if let Some(t) = self.orders.get_mut(&order_id) {
                                t.leaves = order_quantity;
                            }
                            self.queues[side_index(side)].entry(price).or_default().push(order_id);
                        }
                        BookAction::Fill | BookAction::Reduce if order_quantity > 0 => {
                            if let Some(t) = self.orders.get_mut(&order_id) {
                                t.leaves = order_quantity;
                            }
                        }
                        _ => self.forget(order_id, side, price),
                    }
                }
                Event::Rejected { .. } => {
                    self.report.rejects += 1;
                    if self.report.first_rejects.len() < REPORTED_DETAILS {
                        self.report.first_rejects.push(format!("{cmd:?} -> {ev:?}"));
                    }
                }
                _ => {}
            }
        }
        self.pending = None;
        self.events = events;
    }

    /// An order left the book.
    fn forget(&mut self, id: OrderId, side: Side, price: u64) {
        let queues = &mut self.queues[side_index(side)];
        if let Some(q) = queues.get_mut(&price) {
            if let Some(i) = q.iter().position(|&o| o == id) {
                q.remove(i);
            }
            if q.is_empty() {
                queues.remove(&price);
            }
        }
        if let Some(t) = self.orders.remove(&id) {
            if t.lobster != 0 && self.by_lobster.get(&t.lobster) == Some(&id) {
                self.by_lobster.remove(&t.lobster);
            }
        }
    }

    fn place(
        &mut self,
        account: AccountId,
        lobster: u64,
        side: Side,
        price: u64,
        quantity: u64,
        tif: TimeInForce,
    ) {
        self.pending = (tif == TimeInForce::Gtc).then_some(Pending { lobster, account });
        self.apply(&Command::PlaceOrder(NewOrder {
            account,
            market: MARKET,
            client_order_id: 0,
            side,
            order_type: OrderType::Limit,
            time_in_force: tif,
            post_only: false,
            stp: StpMode::None,
            price,
            quantity,
            quote_quantity: 0,
            reserve_price: 0,
        }));
    }

    fn place_synthetic(&mut self, side: Side, price: u64, quantity: u64) {
        self.report.synthetic_orders += 1;
        self.place(SEED_ACCOUNT, 0, side, price, quantity, TimeInForce::Gtc);
    }

    fn cancel(&mut self, id: OrderId) {
        let account = self.orders[&id].account;
        self.apply(&Command::CancelOrder { account, order: OrderRef::Id(id) });
    }

    /// Set a resting order's open quantity to `leaves` (smaller, so it keeps priority).
    fn reduce_to(&mut self, id: OrderId, leaves: u64) {
        let account = self.orders[&id].account;
        self.apply(&Command::AmendOrder {
            account,
            order: OrderRef::Id(id),
            new_price: 0,
            new_quantity: leaves,
        });
    }

    /// Take `by` off one order: an amend, or a cancel when nothing would be left.
    fn take_off(&mut self, id: OrderId, by: u64) {
        let leaves = self.orders[&id].leaves;
        if by >= leaves {
            self.cancel(id);
        } else {
            self.reduce_to(id, leaves - by);
        }
    }

    /// Total open quantity the harness sees at a price.
    fn level_quantity(&self, side: Side, price: u64) -> u64 {
        self.queues[side_index(side)]
            .get(&price)
            .map_or(0, |q| q.iter().map(|id| self.orders[id].leaves).sum())
    }

    /// Remove `quantity` from a level whose orders are not named: synthetic orders first,
    /// newest first, then known orders, newest first. Returns what was removed.
    fn reduce_level(&mut self, side: Side, price: u64, quantity: u64) -> u64 {
        let Some(queue) = self.queues[side_index(side)].get(&price) else {
            return 0;
        };
        let (synthetic, known): (Vec<OrderId>, Vec<OrderId>) =
            queue.iter().rev().partition(|id| self.orders[id].lobster == 0);
        let mut left = quantity;
        let mut touched_known = false;
        for id in synthetic.into_iter().chain(known) {
            if left == 0 {
                break;
            }
            let t = self.orders[&id];
            touched_known |= t.lobster != 0;
            let by = left.min(t.leaves);
            self.take_off(id, by);
            left -= by;
        }
        self.report.reductions_from_known += u64::from(touched_known);
        quantity - left
    }

    /// Seed the book from row 0 (the book after message 0).
    fn seed(&mut self, first: &Message, row: &BookRow) {
        for side in [Side::Sell, Side::Buy] {
            for &(price, size) in row.side(side) {
                let own = first.kind == 1
                    && first.side() == side
                    && first.price == price as i64
                    && first.size <= size;
                let synthetic = if own { size - first.size } else { size };
                if synthetic > 0 {
                    self.report.seed_orders += 1;
                    self.place_synthetic(side, price, synthetic);
                }
                if own {
                    self.place(
                        MAKER_ACCOUNT,
                        first.order_id,
                        side,
                        price,
                        first.size,
                        TimeInForce::Gtc,
                    );
                }
            }
        }
    }

    fn count(&mut self, m: &Message) {
        let k = if (1..=7).contains(&m.kind) { m.kind as usize } else { 0 };
        self.report.messages_by_type[k] += 1;
    }

    /// Whether `price` lies beyond the previous row's view on `side`.
    fn beyond_view(&self, prev: &BookRow, side: Side, price: u64) -> bool {
        let levels = prev.side(side);
        levels.len() == self.levels && worse(side, price, levels[self.levels - 1].0)
    }

    /// Apply message `m` (not message 0); `prev` is the row before it.
    fn replay(&mut self, m: &Message, prev: &BookRow) {
        let side = m.side();
        let Ok(price) = u64::try_from(m.price) else {
            return;
        };
        let known = self
            .by_lobster
            .get(&m.order_id)
            .copied()
            .filter(|id| self.orders[id].price == price && self.orders[id].side == side);
        match m.kind {
            1 => {
                self.place(MAKER_ACCOUNT, m.order_id, side, price, m.size, TimeInForce::Gtc);
                if !self.fills.is_empty() {
                    self.report.passive_crosses += 1;
                }
            }
            2 | 3 => match known {
                Some(id) => {
                    let leaves = self.orders[&id].leaves;
                    if leaves > m.size && m.kind == 3 {
                        // The engine's order is bigger than LOBSTER's: an earlier execution
                        // filled another order at this price instead. Keep the rest as
                        // synthetic quantity so unnamed reductions can find it.
                        self.report.known_excess += 1;
                        self.reduce_to(id, leaves - m.size);
                        if let Some(t) = self.orders.get_mut(&id) {
                            t.lobster = 0;
                        }
                        self.by_lobster.remove(&m.order_id);
                    } else {
                        self.take_off(id, m.size);
                        if leaves < m.size {
                            self.report.known_short += 1;
                            self.reduce_level(side, price, m.size - leaves);
                        }
                    }
                }
                None if self.beyond_view(prev, side, price) => self.report.ignored_beyond_view += 1,
                None => {
                    self.report.unknown_id_reductions += 1;
                    self.reduce_level(side, price, m.size);
                }
            },
            4 => {
                if known.is_none() && self.beyond_view(prev, side, price) {
                    self.report.ignored_beyond_view += 1;
                    return;
                }
                self.report.executions += 1;
                self.place(TAKER_ACCOUNT, 0, side.opposite(), price, m.size, TimeInForce::Ioc);
                let filled: u64 = self.fills.iter().map(|f| f.quantity).sum();
                let whole = filled == m.size;
                if !whole {
                    self.report.executions_short += 1;
                }
                match known {
                    Some(id) => {
                        self.report.executions_known_id += 1;
                        if whole && self.fills.iter().all(|f| f.maker == id) {
                            self.report.fifo_hits += 1;
                        }
                    }
                    None => {
                        self.report.executions_unknown_id += 1;
                        if whole && self.fills.iter().all(|f| f.synthetic) {
                            self.report.synthetic_hits += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether the engine's top levels of `side` equal the file's.
    fn side_matches(&self, side: Side, file: &[(u64, u64)]) -> bool {
        let depth = self.engine.depth(MARKET, side, self.levels);
        depth.len() == file.len()
            && depth.iter().zip(file).all(|(l, &(p, q))| l.price == p && l.quantity == q)
    }

    /// Compare the engine with row `index`, first reconciling whatever entered the view
    /// from beyond the previous row's depth.
    fn check(&mut self, index: u64, m: &Message, row: &BookRow, prev: Option<&BookRow>) {
        let mut ok = true;
        for side in [Side::Sell, Side::Buy] {
            let file = row.side(side);
            if self.side_matches(side, file) {
                continue;
            }
            if let Some(prev) = prev {
                let before = prev.side(side);
                if before.len() == self.levels {
                    self.reconcile(side, before[self.levels - 1].0, file);
                }
            }
            ok &= self.side_matches(side, file);
        }
        if !ok {
            self.report.book_mismatches += 1;
            if self.report.first_mismatches.len() < REPORTED_DETAILS {
                let engine = self.engine_row();
                self.report.first_mismatches.push(Mismatch {
                    index,
                    message: *m,
                    engine,
                    file: row.clone(),
                });
            }
        }
    }

    /// Make the engine's book beyond `view_end` (the previous row's last price on `side`)
    /// agree with the file's levels there.
    fn reconcile(&mut self, side: Side, view_end: u64, file: &[(u64, u64)]) {
        let beyond: Vec<(u64, u64)> =
            file.iter().copied().filter(|&(p, _)| worse(side, p, view_end)).collect();
        // The file's last level bounds what it tells us, unless it shows fewer than `levels`.
        let bound = (file.len() == self.levels).then(|| file[self.levels - 1].0);
        let queues = &self.queues[side_index(side)];
        let candidates: Vec<u64> = match (side, bound) {
            (_, Some(b)) if !worse(side, b, view_end) => Vec::new(),
            (Side::Buy, _) => queues.range(bound.unwrap_or(0)..view_end).map(|(&p, _)| p).collect(),
            (Side::Sell, Some(b)) => queues.range(view_end + 1..=b).map(|(&p, _)| p).collect(),
            (Side::Sell, None) => queues.range(view_end + 1..).map(|(&p, _)| p).collect(),
        };
        for price in candidates {
            if !beyond.iter().any(|&(p, _)| p == price) {
                self.report.stale_levels_dropped += 1;
                let ids = self.queues[side_index(side)][&price].clone();
                self.report.stale_orders_dropped += ids.len() as u64;
                for id in ids {
                    self.cancel(id);
                }
            }
        }
        for (price, quantity) in beyond {
            let have = self.level_quantity(side, price);
            if have < quantity {
                self.place_synthetic(side, price, quantity - have);
            } else if have > quantity {
                self.report.level_reductions += 1;
                self.reduce_level(side, price, have - quantity);
            }
        }
    }

    fn engine_row(&self) -> BookRow {
        let levels = |side| {
            self.engine
                .depth(MARKET, side, self.levels)
                .iter()
                .map(|l| (l.price, l.quantity))
                .collect()
        };
        BookRow { asks: levels(Side::Sell), bids: levels(Side::Buy) }
    }

    fn finish(self) -> ReplayReport {
        let mut r = self.report;
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        r.fifo_hit_rate_known = ratio(r.fifo_hits, r.executions_known_id);
        r.fifo_hit_rate = ratio(r.fifo_hits + r.synthetic_hits, r.executions);
        r.open_orders = self.engine.open_order_count();
        match self.engine.check_invariants() {
            Ok(()) => r.invariants_ok = true,
            Err(e) => r.invariant_error = Some(e),
        }
        r.state_hash = format!("{:032x}", self.engine.state_hash());
        r
    }
}
