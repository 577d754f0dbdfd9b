//! Steady state allocates nothing: once the engine has been built with enough capacity and
//! warmed up (pools, ladders, hash maps and the caller's event buffer at working size),
//! placing, matching, amending and cancelling never touch the allocator.
//!
//! A counting global allocator (this test binary only) counts allocations made by the
//! current thread, so the test harness's other threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bourse_engine::*;
use rustc_hash::FxHashMap;

struct Counting;

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may be gone while a thread shuts down. A const-initialised
    // `Cell<u64>` needs no destructor and no lazy allocation, so this never recurses.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only a thread-local integer.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A small deterministic random generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ACCOUNTS: u64 = 16;
const MARKETS: [MarketId; 2] = [MarketId(1), MarketId(2)];
/// Both markets: 0-decimal assets, tick 1, lot 1, so tick value 1.
const MID: u64 = 10_000;
/// Live order ids the workload keeps track of, at most.
const MAX_TRACKED: usize = 4_000;

const STPS: [StpMode; 5] = [
    StpMode::None,
    StpMode::ExpireTaker,
    StpMode::ExpireMaker,
    StpMode::ExpireBoth,
    StpMode::Decrement,
];

/// The engine, the caller's event buffer and the workload's memory, all preallocated.
struct Bench {
    engine: Engine,
    out: Vec<Event>,
    rng: Lcg,
    /// (order id, account) of GTC orders placed; may include orders already gone.
    ids: Vec<(OrderId, AccountId)>,
    next_cid: u64,
    trades: u64,
    book_events: u64,
    rejects: u64,
    max_events: usize,
}

impl Bench {
    fn new() -> Self {
        let mut engine =
            Engine::new(EngineConfig { order_capacity: 1 << 16, levels_per_side: 1024 });
        let mut out = Vec::new();
        let mut setup = vec![
            Command::SetFeeTier { tier: 1, maker_bps: 10, taker_bps: 20 },
            Command::ListAsset { asset: AssetId(1), decimals: 0 },
            Command::ListAsset { asset: AssetId(2), decimals: 0 },
            Command::ListAsset { asset: AssetId(3), decimals: 0 },
        ];
        for (i, m) in MARKETS.into_iter().enumerate() {
            setup.push(Command::ListMarket {
                market: m,
                base: AssetId(1 + i as u32),
                quote: AssetId(3),
                price_decimals: 0,
                tick_size: 1,
                lot_size: 1,
                min_notional: 1,
            });
        }
        for a in 1..=ACCOUNTS {
            setup.push(Command::CreateAccount { account: AccountId(a), fee_tier: (a % 2) as u8 });
            for asset in 1..=3 {
                setup.push(Command::Deposit {
                    account: AccountId(a),
                    asset: AssetId(asset),
                    amount: 1 << 50,
                });
            }
        }
        for cmd in &setup {
            out.clear();
            engine.apply(cmd, &mut out);
            assert!(!matches!(out[0], Event::Rejected { .. }), "{cmd:?}: {out:?}");
        }
        out.clear();
        // The caller's buffer: large enough for any single command of this workload.
        out.reserve(1 << 16);
        Bench {
            engine,
            out,
            rng: Lcg(0x5eed),
            ids: Vec::with_capacity(MAX_TRACKED + 16),
            next_cid: 1,
            trades: 0,
            book_events: 0,
            rejects: 0,
            max_events: 0,
        }
    }

    fn place(&mut self, account: AccountId, market: MarketId) -> Command {
        let r = &mut self.rng;
        let side = if r.below(2) == 0 { Side::Buy } else { Side::Sell };
        let qty = 1 + r.below(10);
        let stp = STPS[r.below(5) as usize];
        let cid = if r.below(4) == 0 {
            self.next_cid += 1;
            self.next_cid
        } else {
            0
        };
        let mut o = NewOrder {
            account,
            market,
            client_order_id: cid,
            side,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            stp,
            price: 0,
            quantity: qty,
            quote_quantity: 0,
            reserve_price: 0,
        };
        match r.below(100) {
            // Passive: rests on its own side of the mid.
            0..=59 => {
                let off = 1 + r.below(100);
                o.price = if side == Side::Buy { MID - off } else { MID + off };
                o.post_only = r.below(8) == 0;
                if side == Side::Buy && r.below(4) == 0 {
                    o.reserve_price = o.price + r.below(10);
                }
            }
            // Aggressive IOC through a few levels.
            60..=79 => {
                let off = r.below(20);
                o.price = if side == Side::Buy { MID + off } else { MID - off };
                o.quantity = 1 + r.below(40);
                o.time_in_force = TimeInForce::Ioc;
            }
            // Aggressive FOK.
            80..=87 => {
                let off = r.below(10);
                o.price = if side == Side::Buy { MID + off } else { MID - off };
                o.quantity = 1 + r.below(30);
                o.time_in_force = TimeInForce::Fok;
            }
            // Market: by quantity, with or without protection, or by quote amount.
            88..=95 => {
                o.order_type = OrderType::Market;
                o.time_in_force = TimeInForce::Ioc;
                o.quantity = 1 + r.below(30);
                if r.below(2) == 0 {
                    let off = r.below(20);
                    o.price = if side == Side::Buy { MID + off } else { MID - off };
                } else if side == Side::Buy && r.below(2) == 0 {
                    o.quantity = 0;
                    o.quote_quantity = MID * (1 + r.below(30));
                }
            }
            // Crossing GTC: trades, then rests its remainder.
            _ => {
                let off = r.below(5);
                o.price = if side == Side::Buy { MID + off } else { MID - off };
                o.quantity = 1 + r.below(20);
            }
        }
        Command::PlaceOrder(o)
    }

    /// A tracked order, removed from tracking if `remove`.
    fn pick(&mut self, remove: bool) -> Option<(OrderId, AccountId)> {
        if self.ids.is_empty() {
            return None;
        }
        let i = self.rng.below(self.ids.len() as u64) as usize;
        Some(if remove { self.ids.swap_remove(i) } else { self.ids[i] })
    }

    fn next_command(&mut self) -> Command {
        let account = AccountId(1 + self.rng.below(ACCOUNTS));
        let market = MARKETS[self.rng.below(2) as usize];
        let roll = self.rng.below(1000);
        let full = self.ids.len() >= MAX_TRACKED;
        let thin = self.ids.len() < 1_000;
        match roll {
            0..=399 if !full => self.place(account, market),
            0..=649 if !thin => {
                let (id, account) = self.pick(true).expect("not thin");
                if self.rng.below(4) == 0 {
                    if let Some(o) = self.engine.order(id) {
                        if o.client_order_id != 0 {
                            return Command::CancelOrder {
                                account,
                                order: OrderRef::Client(o.client_order_id),
                            };
                        }
                    }
                }
                Command::CancelOrder { account, order: OrderRef::Id(id) }
            }
            650..=849 => {
                let Some((id, account)) = self.pick(false) else {
                    return self.place(account, market);
                };
                let Some(o) = self.engine.order(id) else {
                    // Gone: an amend of it is refused.
                    return Command::AmendOrder {
                        account,
                        order: OrderRef::Id(id),
                        new_price: 0,
                        new_quantity: 1,
                    };
                };
                let r = &mut self.rng;
                let (new_price, new_quantity) = match r.below(4) {
                    0 => (0, (o.leaves_quantity / 2).max(1)),
                    1 => (0, o.leaves_quantity + 1 + r.below(3)),
                    2 => {
                        let step = 1 + r.below(3);
                        let p = if r.below(2) == 0 { o.price + step } else { o.price - step };
                        (p, 0)
                    }
                    // Across the mid: trades.
                    _ => (if o.side == Side::Buy { MID + r.below(3) } else { MID - r.below(3) }, 0),
                };
                Command::AmendOrder { account, order: OrderRef::Id(id), new_price, new_quantity }
            }
            999 => {
                let side = [None, Some(Side::Buy), Some(Side::Sell)][self.rng.below(3) as usize];
                Command::CancelAll { account, market: Some(market), side }
            }
            _ => self.place(account, market),
        }
    }

    fn step(&mut self) {
        let cmd = self.next_command();
        self.out.clear();
        self.engine.apply(&cmd, &mut self.out);
        self.max_events = self.max_events.max(self.out.len());
        for e in &self.out {
            match *e {
                Event::Rejected { .. } => self.rejects += 1,
                Event::Trade { .. } => self.trades += 1,
                Event::Book { .. } => self.book_events += 1,
                Event::Accepted { order_id, account, time_in_force: TimeInForce::Gtc, .. }
                    if self.ids.len() < self.ids.capacity() =>
                {
                    self.ids.push((order_id, account));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn steady_state_trading_does_not_allocate() {
    let mut b = Bench::new();
    // Warm up: the book reaches working size, the hash maps and ladders their working capacity.
    for _ in 0..300_000 {
        b.step();
    }
    b.engine.check_invariants().unwrap();
    let warm = (b.trades, b.book_events, b.rejects);

    const MEASURED: u64 = 100_000;
    let before = allocations();
    let mut first_allocating: Option<u64> = None;
    for i in 0..MEASURED {
        let at = allocations();
        b.step();
        if first_allocating.is_none() && allocations() != at {
            first_allocating = Some(i);
        }
    }
    let allocated = allocations() - before;

    b.engine.check_invariants().unwrap();
    let (trades, book_events, rejects) =
        (b.trades - warm.0, b.book_events - warm.1, b.rejects - warm.2);
    println!(
        "{MEASURED} commands: {trades} trades, {book_events} book events, {rejects} rejects, \
         {} open orders, at most {} events per command, {allocated} allocations",
        b.engine.open_order_count(),
        b.max_events,
    );
    assert!(trades > 10_000 && book_events > 50_000, "the workload trades");
    assert!(b.engine.open_order_count() > 500, "the book has depth");
    assert_eq!(allocated, 0, "first allocating command: #{first_allocating:?} of the measured run");
}

/// `FxHashMap` (hashbrown) with a reserved capacity: inserting fresh keys and removing old ones
/// forever leaves tombstones, and when they use up the spare room the table is rehashed in
/// place (it stays under half full), never reallocated.
#[test]
fn a_reserved_hash_map_under_churn_does_not_allocate() {
    // The counter works: one fresh vector is one allocation.
    let before = allocations();
    std::hint::black_box(Vec::<u64>::with_capacity(8));
    assert_eq!(allocations() - before, 1);

    let mut map: FxHashMap<u64, u32> = FxHashMap::default();
    map.reserve(1 << 12);
    let live = 1_500u64;
    for k in 0..live {
        map.insert(k, k as u32);
    }
    let before = allocations();
    for k in live..2_000_000 {
        map.insert(k, k as u32);
        map.remove(&(k - live));
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(map.len() as u64, live);
}
