//! Engine benchmark: latency and throughput of [`Engine::apply`] on one thread.
//!
//! A run builds a [`Workload`] — setup commands (assets, a market, funded accounts, an
//! initial book) and the measured commands — entirely before any timing, from a
//! deterministic PRNG ([`SplitMix64`]) seeded by the caller. It then applies the commands
//! twice, each time on a fresh engine that has applied the setup:
//!
//! 1. **latency pass**: each `apply` is timed with [`Instant`] and recorded in an HDR
//!    histogram (1 ns to 60 s, 3 significant digits); one event buffer is reused and
//!    cleared before each command, outside the timed region;
//! 2. **throughput pass**: the same commands back to back with no per-command timing.
//!
//! Both passes must end in the same state hash (the engine is deterministic); the report
//! says so. Timer overhead (an empty `Instant` pair, median) is reported, not subtracted.
//!
//! Workloads ([`WORKLOADS`]):
//!
//! * `exchange-core` — shaped like exchange-core's published matching test: 1,000 funded
//!   accounts, about 1,000 resting orders within ±375 ticks of a fixed mid, and a mix of
//!   about 9% GTC limit orders, 3% IOC, 6% cancels and 82% amends (a new price, and a
//!   quarter of the time a smaller quantity too). GTC and amend prices may cross the mid by
//!   a few ticks, so both also trade. The generator runs a shadow engine and reads its
//!   events, so every cancel and amend names an order that is live at that point; a light
//!   feedback swaps a place for a cancel (or back) when the book drifts 10% from its
//!   target size, keeping it stationary.
//! * `liquibook` — liquibook's performance test: inserts only, alternating buy and sell
//!   limit orders, buys uniform over 1880–1889 and sells over 1884–1893 (so about half
//!   trade), quantity 100–1000 in steps of 100. The book grows with the run.
//!
//! Cost: generation is `O(ops)` (plus a shadow engine run for `exchange-core`), memory is
//! one [`Command`] per op (64 bytes), so [`build`] refuses more than [`MAX_OPS`].

use std::collections::BTreeMap;
use std::time::Instant;

use bourse_engine::{
    AccountId, AssetId, BookAction, Command, CommandKind, Engine, EngineConfig, Event, MarketId,
    NewOrder, OrderId, OrderRef, OrderType, Side, StpMode, TimeInForce,
};
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// The workloads [`build`] knows.
pub const WORKLOADS: &[&str] = &["exchange-core", "liquibook"];
/// Ops when the caller passes 0 to [`run`] or [`build`].
pub const DEFAULT_OPS: u64 = 5_000_000;
/// The most ops [`build`] accepts (the commands are held in memory).
pub const MAX_OPS: u64 = 50_000_000;

/// The benchmark's market.
pub const MARKET: MarketId = MarketId(1);
/// Its base asset.
pub const BASE: AssetId = AssetId(1);
/// Its quote asset.
pub const QUOTE: AssetId = AssetId(2);

/// A tiny, fast, deterministic PRNG (SplitMix64). Not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// Commands to replay: `setup` unmeasured, then `commands` measured.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Workload name.
    pub name: String,
    /// PRNG seed it was built from.
    pub seed: u64,
    /// Engine sizing for the run.
    pub config: EngineConfig,
    /// Listing, accounts, deposits, initial book.
    pub setup: Vec<Command>,
    /// The measured commands.
    pub commands: Vec<Command>,
}

impl Workload {
    /// A fresh engine with the setup applied; an error if the engine rejected any of it.
    pub fn engine(&self) -> Result<Engine, String> {
        let mut engine = Engine::new(self.config);
        let mut events = Vec::new();
        for cmd in &self.setup {
            events.clear();
            engine.apply(cmd, &mut events);
            if let Some(ev) = events.iter().find(|e| matches!(e, Event::Rejected { .. })) {
                return Err(format!("setup command {cmd:?} rejected: {ev:?}"));
            }
        }
        Ok(engine)
    }

    /// How many measured commands of each kind, by name.
    pub fn mix(&self) -> BTreeMap<&'static str, u64> {
        let mut mix = BTreeMap::new();
        for cmd in &self.commands {
            *mix.entry(command_label(cmd)).or_insert(0) += 1;
        }
        mix
    }
}

/// A short label for a measured command: `place_gtc`, `place_ioc`, `cancel`,
/// `amend_price`, `amend_price_qty`, `amend_qty`, or the command kind.
pub fn command_label(cmd: &Command) -> &'static str {
    match cmd {
        Command::PlaceOrder(o) => match o.time_in_force {
            TimeInForce::Gtc => "place_gtc",
            TimeInForce::Ioc => "place_ioc",
            TimeInForce::Fok => "place_fok",
        },
        Command::CancelOrder { .. } => "cancel",
        Command::AmendOrder { new_price, new_quantity, .. } => match (*new_price, *new_quantity) {
            (0, _) => "amend_qty",
            (_, 0) => "amend_price",
            _ => "amend_price_qty",
        },
        other => match other.kind() {
            CommandKind::Deposit => "deposit",
            CommandKind::Withdraw => "withdraw",
            CommandKind::CancelAll => "cancel_all",
            _ => "admin",
        },
    }
}

/// Build a workload by name. `ops == 0` means [`DEFAULT_OPS`].
pub fn build(workload: &str, ops: u64, seed: u64) -> Result<Workload, String> {
    let ops = if ops == 0 { DEFAULT_OPS } else { ops };
    if ops > MAX_OPS {
        return Err(format!("at most {MAX_OPS} ops per run, not {ops}"));
    }
    match workload {
        "exchange-core" => Ok(exchange_core(&ExchangeCoreParams::default(), ops, seed)),
        "liquibook" => Ok(liquibook(ops, seed)),
        other => Err(format!("unknown workload {other:?}; expected one of {WORKLOADS:?}")),
    }
}

/// Listing and funding shared by the workloads: base and quote with 0 and 2 decimals,
/// price decimals 2, tick 1, lot 1 (so a tick per lot is one quote atom).
fn market_setup(accounts: u64, base_each: u64, quote_each: u64) -> Vec<Command> {
    let mut setup = vec![
        Command::ListAsset { asset: BASE, decimals: 0 },
        Command::ListAsset { asset: QUOTE, decimals: 2 },
        Command::ListMarket {
            market: MARKET,
            base: BASE,
            quote: QUOTE,
            price_decimals: 2,
            tick_size: 1,
            lot_size: 1,
            min_notional: 0,
        },
    ];
    for a in 1..=accounts {
        let account = AccountId(a);
        setup.push(Command::CreateAccount { account, fee_tier: 0 });
        setup.push(Command::Deposit { account, asset: BASE, amount: base_each });
        setup.push(Command::Deposit { account, asset: QUOTE, amount: quote_each });
    }
    setup
}

/// A limit order with `stp: none` and no client id.
pub fn limit(account: u64, side: Side, price: u64, quantity: u64, tif: TimeInForce) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
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
    })
}

/// Knobs of the `exchange-core` workload.
#[derive(Clone, Copy, Debug)]
pub struct ExchangeCoreParams {
    /// Funded accounts.
    pub accounts: u64,
    /// Resting orders the book is kept near.
    pub target_orders: usize,
    /// The fixed mid price (ticks).
    pub mid: u64,
    /// Passive prices lie within this many ticks of the mid.
    pub half_range: u64,
    /// How far past the mid a GTC or amend price may reach (so some trade).
    pub cross: u64,
    /// How far past the mid an IOC is priced, at most.
    pub ioc_reach: u64,
    /// Largest order quantity (lots).
    pub max_quantity: u64,
    /// Percent of GTC places, IOC places and cancels; amends are the rest.
    pub mix_percent: [u64; 3],
}

impl Default for ExchangeCoreParams {
    fn default() -> Self {
        ExchangeCoreParams {
            accounts: 1_000,
            target_orders: 1_000,
            mid: 100_000,
            half_range: 375,
            cross: 3,
            ioc_reach: 20,
            max_quantity: 100,
            mix_percent: [9, 3, 6],
        }
    }
}

/// Live orders of the shadow engine, for picking cancel and amend targets in O(1).
#[derive(Default)]
struct LiveOrders {
    list: Vec<(OrderId, AccountId, Side, u64, u64)>,
    index: FxHashMap<OrderId, usize>,
    owner: FxHashMap<OrderId, AccountId>,
}

impl LiveOrders {
    fn absorb(&mut self, events: &[Event]) {
        for ev in events {
            match *ev {
                Event::Accepted { order_id, account, .. } => {
                    self.owner.insert(order_id, account);
                }
                Event::OrderDone { order_id, .. } => {
                    self.owner.remove(&order_id);
                }
                Event::Book { action, order_id, side, price, order_quantity, .. } => match action {
                    BookAction::Add => {
                        let account = self.owner[&order_id];
                        self.index.insert(order_id, self.list.len());
                        self.list.push((order_id, account, side, price, order_quantity));
                    }
                    BookAction::Fill | BookAction::Reduce if order_quantity > 0 => {
                        self.list[self.index[&order_id]].4 = order_quantity;
                    }
                    _ => {
                        let i = self.index.remove(&order_id).expect("live order");
                        self.list.swap_remove(i);
                        if let Some(moved) = self.list.get(i) {
                            self.index.insert(moved.0, i);
                        }
                    }
                },
                _ => {}
            }
        }
    }
}

/// The `exchange-core` workload (see the module docs).
pub fn exchange_core(p: &ExchangeCoreParams, ops: u64, seed: u64) -> Workload {
    let mut rng = SplitMix64::new(seed);
    let config = EngineConfig { order_capacity: p.target_orders * 4, levels_per_side: 1024 };
    let passive_price = |rng: &mut SplitMix64, side: Side| match side {
        Side::Buy => p.mid + p.cross - rng.range(0, p.half_range + p.cross - 1),
        Side::Sell => p.mid - p.cross + rng.range(0, p.half_range + p.cross - 1),
    };
    let random_side = |rng: &mut SplitMix64| {
        if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    };

    let mut setup = market_setup(p.accounts, 1 << 40, 1 << 50);
    // The initial book: non-crossing, within the range on each side.
    for i in 0..p.target_orders {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let offset = rng.range(1, p.half_range);
        let price = if side == Side::Buy { p.mid - offset } else { p.mid + offset };
        let account = rng.range(1, p.accounts);
        let qty = rng.range(1, p.max_quantity);
        setup.push(limit(account, side, price, qty, TimeInForce::Gtc));
    }

    // Shadow run: generate each command from the live state, then apply it.
    let mut shadow = Engine::new(config);
    let mut events = Vec::with_capacity(64);
    let mut live = LiveOrders::default();
    for cmd in &setup {
        events.clear();
        shadow.apply(cmd, &mut events);
        live.absorb(&events);
    }
    let [gtc, ioc, cancel] = p.mix_percent;
    let (low, high) = (p.target_orders * 9 / 10, p.target_orders * 11 / 10);
    let mut commands = Vec::with_capacity(ops as usize);
    for _ in 0..ops {
        let roll = rng.below(100);
        let mut action = if roll < gtc {
            0
        } else if roll < gtc + ioc {
            1
        } else if roll < gtc + ioc + cancel {
            2
        } else {
            3
        };
        if action == 0 && live.list.len() > high {
            action = 2;
        } else if action == 2 && live.list.len() < low {
            action = 0;
        }
        if live.list.is_empty() && action >= 2 {
            action = 0;
        }
        let cmd = match action {
            0 => {
                let side = random_side(&mut rng);
                let price = passive_price(&mut rng, side);
                let qty = rng.range(1, p.max_quantity);
                limit(rng.range(1, p.accounts), side, price, qty, TimeInForce::Gtc)
            }
            1 => {
                let side = random_side(&mut rng);
                let reach = rng.range(0, p.ioc_reach);
                let price = if side == Side::Buy { p.mid + reach } else { p.mid - reach };
                let qty = rng.range(1, p.max_quantity);
                limit(rng.range(1, p.accounts), side, price, qty, TimeInForce::Ioc)
            }
            2 => {
                let (id, account, ..) = live.list[rng.below(live.list.len() as u64) as usize];
                Command::CancelOrder { account, order: OrderRef::Id(id) }
            }
            _ => {
                let (id, account, side, price, leaves) =
                    live.list[rng.below(live.list.len() as u64) as usize];
                let mut new_price = passive_price(&mut rng, side);
                if new_price == price {
                    new_price = if side == Side::Buy { price - 1 } else { price + 1 };
                }
                let new_quantity =
                    if leaves > 1 && rng.below(4) == 0 { rng.range(1, leaves - 1) } else { 0 };
                Command::AmendOrder { account, order: OrderRef::Id(id), new_price, new_quantity }
            }
        };
        events.clear();
        shadow.apply(&cmd, &mut events);
        live.absorb(&events);
        commands.push(cmd);
    }
    Workload { name: "exchange-core".into(), seed, config, setup, commands }
}

/// The `liquibook` workload (see the module docs).
pub fn liquibook(ops: u64, seed: u64) -> Workload {
    const ACCOUNTS: u64 = 100;
    let mut rng = SplitMix64::new(seed);
    let setup = market_setup(ACCOUNTS, 1 << 50, 1 << 50);
    let commands = (0..ops)
        .map(|i| {
            let (side, price) = if i % 2 == 0 {
                (Side::Buy, rng.range(1880, 1889))
            } else {
                (Side::Sell, rng.range(1884, 1893))
            };
            let qty = 100 * rng.range(1, 10);
            limit(rng.range(1, ACCOUNTS), side, price, qty, TimeInForce::Gtc)
        })
        .collect();
    // Most orders rest: size the pool for all of them so it never grows mid-run.
    let config = EngineConfig { order_capacity: (ops as usize).max(1 << 16), levels_per_side: 64 };
    Workload { name: "liquibook".into(), seed, config, setup, commands }
}

/// What a benchmark run measured. Serialized as the JSON line [`run`] returns.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Workload name.
    pub workload: String,
    /// Measured commands.
    pub ops: u64,
    /// PRNG seed.
    pub seed: u64,
    /// Commands per second in the throughput pass (no per-command timing).
    pub ops_per_sec: f64,
    /// Commands per second in the latency pass, timer overhead included.
    pub ops_per_sec_timed: f64,
    /// Latency percentiles of one `apply`, in nanoseconds.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Slowest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median cost of an empty `Instant` pair, included in every latency above.
    pub timer_overhead_ns: u64,
    /// Measured commands by kind.
    pub commands: BTreeMap<&'static str, u64>,
    /// Trades made.
    pub trades: u64,
    /// Commands rejected.
    pub rejects: u64,
    /// Rejects by reason.
    pub reject_reasons: BTreeMap<String, u64>,
    /// Events emitted.
    pub events: u64,
    /// Resting orders at the end.
    pub open_orders: usize,
    /// Occupied bid levels at the end.
    pub bid_levels: usize,
    /// Occupied ask levels at the end.
    pub ask_levels: usize,
    /// Whether both passes ended in the same state hash.
    pub deterministic: bool,
    /// The final state hash, hex.
    pub state_hash: String,
    /// Time to build the workload.
    pub generate_ms: f64,
    /// Time of the latency pass.
    pub latency_pass_ms: f64,
    /// Time of the throughput pass.
    pub throughput_pass_ms: f64,
}

/// Run a workload by name (`ops == 0` for the default) and return one JSON line.
pub fn run(workload: &str, ops: u64, seed: u64) -> Result<String, String> {
    let started = Instant::now();
    let w = build(workload, ops, seed)?;
    let generate_ms = started.elapsed().as_secs_f64() * 1e3;
    let (mut report, engine) = measure(&w)?;
    report.generate_ms = generate_ms;
    engine.check_invariants().map_err(|e| format!("engine invariants broken: {e}"))?;
    serde_json::to_string(&report).map_err(|e| e.to_string())
}

/// Median cost of taking two `Instant`s back to back.
fn timer_overhead_ns() -> u64 {
    let mut samples: Vec<u64> = (0..10_001)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Run both passes over a built workload. Returns the report (without `generate_ms`)
/// and the engine of the latency pass, for further checks.
pub fn measure(w: &Workload) -> Result<(BenchReport, Engine), String> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let mut engine = w.engine()?;
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let (mut trades, mut rejects, mut event_count) = (0u64, 0u64, 0u64);
    let mut reject_reasons = BTreeMap::new();

    let pass = Instant::now();
    for cmd in &w.commands {
        events.clear();
        let t = Instant::now();
        engine.apply(cmd, &mut events);
        let ns = t.elapsed().as_nanos() as u64;
        hist.saturating_record(ns.max(1));
        event_count += events.len() as u64;
        for ev in &events {
            match ev {
                Event::Trade { .. } => trades += 1,
                Event::Rejected { reason, .. } => {
                    rejects += 1;
                    *reject_reasons.entry(format!("{reason:?}")).or_insert(0) += 1;
                }
                _ => {}
            }
        }
    }
    let latency_pass = pass.elapsed().as_secs_f64();

    let mut second = w.engine()?;
    let pass = Instant::now();
    for cmd in &w.commands {
        events.clear();
        second.apply(cmd, &mut events);
    }
    let throughput_pass = pass.elapsed().as_secs_f64();
    std::hint::black_box(&events);

    let ops = w.commands.len() as u64;
    let per_sec = |secs: f64| ops as f64 / secs.max(1e-9);
    let hash = engine.state_hash();
    let report = BenchReport {
        workload: w.name.clone(),
        ops,
        seed: w.seed,
        ops_per_sec: per_sec(throughput_pass),
        ops_per_sec_timed: per_sec(latency_pass),
        p50_ns: hist.value_at_quantile(0.5),
        p90_ns: hist.value_at_quantile(0.9),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        p9999_ns: hist.value_at_quantile(0.9999),
        max_ns: hist.max(),
        mean_ns: hist.mean(),
        timer_overhead_ns: timer_overhead_ns(),
        commands: w.mix(),
        trades,
        rejects,
        reject_reasons,
        events: event_count,
        open_orders: engine.open_order_count(),
        bid_levels: engine.depth(MARKET, Side::Buy, usize::MAX).len(),
        ask_levels: engine.depth(MARKET, Side::Sell, usize::MAX).len(),
        deterministic: hash == second.state_hash(),
        state_hash: format!("{hash:032x}"),
        generate_ms: 0.0,
        latency_pass_ms: latency_pass * 1e3,
        throughput_pass_ms: throughput_pass * 1e3,
    };
    Ok((report, engine))
}
