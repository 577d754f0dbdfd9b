//! Criterion benches of the book operations, through `Engine::apply` (validation, holds,
//! events and all).
//!
//! The resting book: one market (tick value 1), 500 bid and 500 ask levels two ticks apart
//! around a mid of 10,000 with 4 orders of 10 lots each. Every bench times only its operation:
//! setup (placing the orders to cancel or amend, rebuilding what a sweep took) and cleanup run
//! outside the timed region, through `iter_custom`. Cheap operations are timed in chunks of
//! [`CHUNK`] to keep the clock's own cost out; a sweep is timed one at a time.
//!
//! Run: `cargo bench -p bourse-engine --bench book -- --quick`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bourse_engine::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MARKET: MarketId = MarketId(1);
const MID: u64 = 10_000;
const LEVELS: u64 = 500;
const ORDERS_PER_LEVEL: u64 = 4;
const QTY: u64 = 10;
/// The account whose orders the benches place and cancel.
const TRADER: AccountId = AccountId(9);
/// Operations timed per clock reading.
const CHUNK: u64 = 100;

struct Fixture {
    engine: Engine,
    out: Vec<Event>,
    cmds: Vec<Command>,
    ids: Vec<OrderId>,
}

impl Fixture {
    /// The market and funded accounts 1..=4 and [`TRADER`], with `levels` levels of
    /// `per_level` orders on each side: bids at MID-2, MID-4, ...; asks at
    /// MID+ask_gap+2, MID+ask_gap+4, ...
    fn new(levels: u64, per_level: u64, ask_gap: u64) -> Self {
        let mut f = Fixture {
            engine: Engine::new(EngineConfig { order_capacity: 1 << 16, levels_per_side: 2048 }),
            out: Vec::with_capacity(1 << 14),
            cmds: Vec::with_capacity(CHUNK as usize),
            ids: Vec::with_capacity(CHUNK as usize),
        };
        f.run(Command::ListAsset { asset: AssetId(1), decimals: 0 });
        f.run(Command::ListAsset { asset: AssetId(2), decimals: 0 });
        f.run(Command::ListMarket {
            market: MARKET,
            base: AssetId(1),
            quote: AssetId(2),
            price_decimals: 0,
            tick_size: 1,
            lot_size: 1,
            min_notional: 0,
        });
        f.run(Command::SetFeeTier { tier: 1, maker_bps: 10, taker_bps: 20 });
        for a in [1, 2, 3, 4, TRADER.0] {
            f.run(Command::CreateAccount { account: AccountId(a), fee_tier: 1 });
            for asset in [1, 2] {
                f.run(Command::Deposit {
                    account: AccountId(a),
                    asset: AssetId(asset),
                    amount: 1 << 58,
                });
            }
        }
        for level in 1..=levels {
            for i in 0..per_level {
                let account = AccountId(1 + i % 4);
                f.run(limit(account, Side::Buy, MID - 2 * level, QTY));
                f.run(limit(account, Side::Sell, MID + ask_gap + 2 * level, QTY));
            }
        }
        f
    }

    /// Apply a command that must not be rejected; the id of the order it placed, if any.
    fn run(&mut self, cmd: Command) -> OrderId {
        self.out.clear();
        self.engine.apply(&cmd, &mut self.out);
        match self.out.first() {
            Some(Event::Rejected { reason, .. }) => panic!("{cmd:?} rejected: {reason:?}"),
            Some(Event::Accepted { order_id, .. }) => *order_id,
            _ => 0,
        }
    }

    /// Apply `self.cmds` with the clock running.
    fn timed(&mut self) -> Duration {
        let start = Instant::now();
        for cmd in &self.cmds {
            self.out.clear();
            self.engine.apply(black_box(cmd), &mut self.out);
        }
        let elapsed = start.elapsed();
        black_box(&self.out);
        elapsed
    }

    /// Place `self.cmds` untimed, remembering the order ids.
    fn place_untimed(&mut self) {
        self.ids.clear();
        for i in 0..self.cmds.len() {
            let id = self.run(self.cmds[i]);
            self.ids.push(id);
        }
    }

    fn cancel_trader_orders(&mut self) {
        self.run(Command::CancelAll { account: TRADER, market: None, side: None });
    }
}

fn limit(account: AccountId, side: Side, price: u64, quantity: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        account,
        market: MARKET,
        client_order_id: 0,
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        stp: StpMode::None,
        price,
        quantity,
        quote_quantity: 0,
        reserve_price: 0,
    })
}

/// The i-th existing bid level among the top 100.
fn existing_bid(i: u64) -> u64 {
    MID - 2 * (1 + i % 100)
}

/// A price between the i-th and (i+1)-th bid levels among the top 100: a new level.
fn new_bid(i: u64) -> u64 {
    existing_bid(i) - 1
}

/// Run `iters` operations in chunks: `prepare` fills `cmds` (and may place orders) untimed,
/// the commands are applied timed, and `cleanup` runs untimed.
fn chunked(
    f: &mut Fixture,
    iters: u64,
    mut prepare: impl FnMut(&mut Fixture, u64),
    mut to_time: impl FnMut(&mut Fixture),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        f.cmds.clear();
        prepare(f, n);
        to_time(f);
        total += f.timed();
        f.cancel_trader_orders();
        done += n;
    }
    total
}

fn add(c: &mut Criterion) {
    let mut g = c.benchmark_group("add");
    g.throughput(Throughput::Elements(1));
    let mut f = Fixture::new(LEVELS, ORDERS_PER_LEVEL, 0);
    g.bench_function("existing_level", |b| {
        b.iter_custom(|iters| {
            chunked(
                &mut f,
                iters,
                |f, n| {
                    f.cmds.extend((0..n).map(|i| limit(TRADER, Side::Buy, existing_bid(i), QTY)))
                },
                |_| {},
            )
        })
    });
    g.bench_function("new_level", |b| {
        b.iter_custom(|iters| {
            chunked(
                &mut f,
                iters,
                |f, n| f.cmds.extend((0..n).map(|i| limit(TRADER, Side::Buy, new_bid(i), QTY))),
                |_| {},
            )
        })
    });
    g.finish();
}

fn cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("cancel");
    g.throughput(Throughput::Elements(1));
    let mut f = Fixture::new(LEVELS, ORDERS_PER_LEVEL, 0);
    for (name, price) in
        [("level_stays", existing_bid as fn(u64) -> u64), ("level_empties", new_bid)]
    {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                chunked(
                    &mut f,
                    iters,
                    |f, n| {
                        f.cmds.extend((0..n).map(|i| limit(TRADER, Side::Buy, price(i), QTY)));
                        f.place_untimed();
                    },
                    |f| {
                        f.cmds.clear();
                        let ids = &f.ids;
                        f.cmds.extend(ids.iter().map(|&id| Command::CancelOrder {
                            account: TRADER,
                            order: OrderRef::Id(id),
                        }));
                    },
                )
            })
        });
    }
    g.finish();
}

fn amend(c: &mut Criterion) {
    let mut g = c.benchmark_group("amend");
    g.throughput(Throughput::Elements(1));
    let mut f = Fixture::new(LEVELS, ORDERS_PER_LEVEL, 0);
    // Reduce: keeps priority, O(1).
    g.bench_function("reduce", |b| {
        b.iter_custom(|iters| {
            chunked(
                &mut f,
                iters,
                |f, n| {
                    f.cmds.extend((0..n).map(|i| limit(TRADER, Side::Buy, existing_bid(i), QTY)));
                    f.place_untimed();
                },
                |f| {
                    f.cmds.clear();
                    let ids = &f.ids;
                    f.cmds.extend(ids.iter().map(|&id| Command::AmendOrder {
                        account: TRADER,
                        order: OrderRef::Id(id),
                        new_price: 0,
                        new_quantity: QTY / 2,
                    }));
                },
            )
        })
    });
    // Move to another existing level 50 levels away (no cross): loses priority.
    g.bench_function("move", |b| {
        b.iter_custom(|iters| {
            chunked(
                &mut f,
                iters,
                |f, n| {
                    f.cmds.extend((0..n).map(|i| limit(TRADER, Side::Buy, existing_bid(i), QTY)));
                    f.place_untimed();
                },
                |f| {
                    f.cmds.clear();
                    let ids = &f.ids;
                    f.cmds.extend(ids.iter().enumerate().map(|(i, &id)| Command::AmendOrder {
                        account: TRADER,
                        order: OrderRef::Id(id),
                        new_price: existing_bid(i as u64 + 50),
                        new_quantity: 0,
                    }));
                },
            )
        })
    });
    g.finish();
}

fn sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("sweep");
    for levels in [1u64, 10, 100] {
        // Throughput in fills (one per level).
        g.throughput(Throughput::Elements(levels));
        // The full book with its asks moved 1,000 ticks away, and in front of them `levels`
        // ask levels of one order each (MID+1, MID+2, ...), rebuilt before every sweep. The
        // sweep is an IOC buy for exactly their quantity, limited at the last of them.
        let mut f = Fixture::new(LEVELS, ORDERS_PER_LEVEL, 1_000);
        let rebuild: Vec<Command> =
            (1..=levels).map(|k| limit(AccountId(2), Side::Sell, MID + k, QTY)).collect();
        let Command::PlaceOrder(mut order) = limit(TRADER, Side::Buy, MID + levels, QTY * levels)
        else {
            unreachable!()
        };
        order.time_in_force = TimeInForce::Ioc;
        let taker = Command::PlaceOrder(order);
        // Check once that the sweep does what it says.
        for cmd in &rebuild {
            f.run(*cmd);
        }
        f.run(taker);
        let trades = f.out.iter().filter(|e| matches!(e, Event::Trade { .. })).count() as u64;
        assert_eq!(trades, levels);
        assert_eq!(f.engine.best_level(MARKET, Side::Sell).unwrap().price, MID + 1_002);

        g.bench_with_input(BenchmarkId::from_parameter(levels), &levels, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for cmd in &rebuild {
                        f.run(*cmd);
                    }
                    f.out.clear();
                    let start = Instant::now();
                    f.engine.apply(black_box(&taker), &mut f.out);
                    total += start.elapsed();
                }
                black_box(&f.out);
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, add, cancel, amend, sweep);
criterion_main!(benches);
