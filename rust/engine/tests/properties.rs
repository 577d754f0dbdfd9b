//! Property tests: the engine against a naive reference model (`tests/model`).
//!
//! Random command streams over a small universe (3 assets, 2 markets with different
//! tick/lot/decimals, a few accounts including the fee account and unknown ids, fee tiers
//! with non-zero and asymmetric rates) are applied to the engine and to the model. For
//! every command:
//! * the engine's events equal the model's, in order and in every field;
//! * `check_invariants` holds (money conservation, holds, book structure);
//! * a second engine with tiny preallocation gets the same events and the same state hash,
//!   and is rebuilt from a snapshot of the first every few commands
//!   (determinism, and independence from pool sizes and slot reuse);
//! * a command answered by a single `Rejected` leaves the state hash unchanged;
//! * the full visible state (balances, open orders, depth, book orders, markets, order
//!   lookups) equals the model's.

mod model;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use bourse_engine::*;
use model::Model;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ----- the universe ---------------------------------------------------------------------

const BTC: AssetId = AssetId(1); // 8 decimals
const USD: AssetId = AssetId(2); // 6 decimals
const CENTS: AssetId = AssetId(3); // 2 decimals
const M1: MarketId = MarketId(10); // BTC/USD: price 2 decimals, tick 25, lot 2000, tick value 5
const M2: MarketId = MarketId(20); // USD/CENTS: price 1 decimal, tick 10, lot 10000, tick value 1

const ACCOUNTS: [u64; 6] = [0, 1, 2, 3, 4, 77];
const ASSETS: [u32; 5] = [1, 2, 3, 4, 9];
const MARKETS: [u32; 4] = [10, 20, 30, 99];

/// Commands every stream starts with.
fn setup() -> Vec<Command> {
    let mut v = vec![
        Command::ListAsset { asset: BTC, decimals: 8 },
        Command::ListAsset { asset: USD, decimals: 6 },
        Command::ListAsset { asset: CENTS, decimals: 2 },
        Command::ListMarket {
            market: M1,
            base: BTC,
            quote: USD,
            price_decimals: 2,
            tick_size: 25,
            lot_size: 2000,
            min_notional: 1000,
        },
        Command::ListMarket {
            market: M2,
            base: USD,
            quote: CENTS,
            price_decimals: 1,
            tick_size: 10,
            lot_size: 10_000,
            min_notional: 0,
        },
        Command::SetFeeTier { tier: 1, maker_bps: 10, taker_bps: 30 },
        Command::SetFeeTier { tier: 2, maker_bps: 45, taker_bps: 7 },
        Command::CreateAccount { account: AccountId(1), fee_tier: 1 },
        Command::CreateAccount { account: AccountId(2), fee_tier: 2 },
        Command::CreateAccount { account: AccountId(3), fee_tier: 0 },
    ];
    // Rich, middling and poor, so that budgets and balances run out now and then.
    for (a, scale) in [(1, 100), (2, 10), (3, 1)] {
        let account = AccountId(a);
        v.push(Command::Deposit { account, asset: BTC, amount: 4_000 * scale });
        v.push(Command::Deposit { account, asset: USD, amount: 60_000 * scale });
        v.push(Command::Deposit { account, asset: CENTS, amount: 300 * scale });
    }
    v
}

/// Mid price (in ticks) around which a market's orders cluster.
fn mid_ticks(market: MarketId) -> u64 {
    match market.0 {
        10 => 100,
        20 => 50,
        _ => 20,
    }
}

// ----- abstract operations, made concrete against the model's state -------------------

#[derive(Clone, Copy, Debug)]
enum PriceSel {
    Near(i8),
    OffTick(i8),
    Zero,
    OneTick,
    Max,
    MaxOnTick,
    /// An amend's target's own price.
    Same,
}

#[derive(Clone, Copy, Debug)]
enum QtySel {
    Lots(u64),
    OffLot(u64),
    Zero,
    Max,
    MaxOnLot,
    Big(u64),
    /// An amend's target's leaves less this many lots (an increase when it would be ≤ 0).
    ReduceBy(u64),
    /// An amend's target's leaves plus this many lots.
    IncreaseBy(u64),
    /// The largest whole number of lots in u64 atoms, divided by this.
    Share(u64),
    /// An amend's target: the largest quantity its filled and decremented lots leave room
    /// for, plus this many lots (0: just fits, 1: one lot too many).
    ToOrderLimit(u64),
    /// The largest quantity the other orders on its book side leave room for, plus this
    /// many lots.
    ToSideLimit(u64),
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Own { nth: usize, by_client: bool },
    Any { nth: usize },
    Stale(u64),
    Client(u64),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Limit,
    MarketQty {
        protected: bool,
    },
    /// With `exact: Some(n)`, the quote amount is what the first `n` lots of the asks cost
    /// (all of them for 0), so that it is spent exactly, often emptying the book.
    MarketQuote {
        protected: bool,
        exact: Option<u8>,
    },
}

#[derive(Clone, Copy, Debug)]
struct PlaceOp {
    account: u64,
    market: u32,
    client: u64,
    side: Side,
    kind: Kind,
    tif: TimeInForce,
    post_only: bool,
    stp: StpMode,
    price: PriceSel,
    qty: QtySel,
    quote: u64,
    /// Reserve price as ticks above the price (None: no reserve); `Some(-1)` is below it.
    reserve: Option<i8>,
    /// Scramble the shape: market fields on limits and so on.
    garbage: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        account: u64,
        asset: u32,
        amount: u64,
    },
    Withdraw {
        account: u64,
        asset: u32,
        amount: u64,
    },
    Place(PlaceOp),
    Cancel {
        account: u64,
        target: Target,
    },
    CancelAll {
        account: u64,
        market: Option<u32>,
        side: Option<Side>,
    },
    Amend {
        account: u64,
        target: Target,
        price: Option<PriceSel>,
        qty: Option<QtySel>,
    },
    MarketStatus {
        market: u32,
        status: MarketStatus,
    },
    FeeTier {
        tier: u8,
        maker: u32,
        taker: u32,
    },
    AccountTier {
        account: u64,
        tier: u8,
    },
    AccountStatus {
        account: u64,
        status: AccountStatus,
    },
    CreateAccount {
        account: u64,
        tier: u8,
    },
    ListAsset {
        asset: u32,
        decimals: u8,
    },
    ListMarket {
        market: u32,
        base: u32,
        quote: u32,
        price_decimals: u8,
        tick: u64,
        lot: u64,
        min: u64,
    },
}

fn tick_lot(model: &Model, market: MarketId) -> (u64, u64) {
    model.markets.get(&market).map_or((1, 1), |m| (m.tick, m.lot))
}

fn price_of(sel: PriceSel, tick: u64, mid: u64, same: u64) -> u64 {
    let near = |d: i8| ((mid as i64 + i64::from(d)).max(1) as u64).saturating_mul(tick);
    match sel {
        PriceSel::Near(d) => near(d),
        PriceSel::OffTick(d) => near(d).saturating_add(1),
        PriceSel::Zero => 0,
        PriceSel::OneTick => tick,
        PriceSel::Max => u64::MAX,
        PriceSel::MaxOnTick => u64::MAX / tick * tick,
        PriceSel::Same => same,
    }
}

/// A concrete quantity. `leaves` is an amend's target's leaves (one lot for a place),
/// `used` its filled plus decremented quantity (0 for a place) and `others` the leaves of the
/// other orders on its book side.
fn qty_of(sel: QtySel, lot: u64, leaves: u64, used: u64, others: u64) -> u64 {
    let max_lots = u64::MAX / lot;
    let up_to = |taken: u64, k: u64| max_lots.saturating_sub(taken / lot).saturating_add(k);
    match sel {
        QtySel::Lots(n) => n.saturating_mul(lot),
        QtySel::OffLot(n) => n.saturating_mul(lot).saturating_add(1),
        QtySel::Zero => 0,
        QtySel::Max => u64::MAX,
        QtySel::MaxOnLot => u64::MAX / lot * lot,
        QtySel::Big(n) => n.saturating_mul(lot).saturating_mul(1000),
        QtySel::ReduceBy(n) => {
            let by = n.saturating_mul(lot);
            if leaves > by {
                leaves - by
            } else {
                leaves.saturating_add(lot)
            }
        }
        QtySel::IncreaseBy(n) => leaves.saturating_add(n.saturating_mul(lot)),
        QtySel::Share(k) => max_lots / k.max(1) * lot,
        QtySel::ToOrderLimit(k) => up_to(used, k).saturating_mul(lot),
        QtySel::ToSideLimit(k) => up_to(others, k).saturating_mul(lot),
    }
}

/// What the first `lots` lots offered in a market cost, best first (all of them for 0);
/// saturating.
fn asks_value(model: &Model, market: MarketId, lots: u8) -> u64 {
    let Some(m) = model.markets.get(&market) else {
        return 0;
    };
    let mut want = if lots == 0 { u64::MAX } else { u64::from(lots) };
    let mut total = 0u64;
    for o in model.book_orders(market, Side::Sell) {
        let n = (o.leaves_quantity / m.lot).min(want);
        let value = risk::notional(n, o.price / m.tick, m.tick_value).unwrap_or(u64::MAX);
        total = total.saturating_add(value);
        want -= n;
        if want == 0 {
            break;
        }
    }
    total
}

/// The leaves of every order on one side of a book, in base atoms.
fn side_total(model: &Model, market: MarketId, side: Side) -> u64 {
    u64::try_from(model.side_total(market, side)).expect("a side's total fits in u64")
}

fn order_ref(model: &Model, account: AccountId, target: Target) -> OrderRef {
    match target {
        Target::Own { nth, by_client } => {
            let own = model.open_orders(account);
            if own.is_empty() {
                return OrderRef::Id(model.next_order_id.saturating_sub(nth as u64 % 3));
            }
            let o = own[nth % own.len()];
            if by_client && o.client_order_id != 0 {
                OrderRef::Client(o.client_order_id)
            } else {
                OrderRef::Id(o.order_id)
            }
        }
        Target::Any { nth } => {
            let all = model.open_ids();
            if all.is_empty() {
                OrderRef::Id(nth as u64)
            } else {
                OrderRef::Id(all[nth % all.len()].0)
            }
        }
        Target::Stale(id) => OrderRef::Id(id),
        Target::Client(c) => OrderRef::Client(c),
    }
}

fn concretize(op: &Op, model: &Model) -> Command {
    match *op {
        Op::Deposit { account, asset, amount } => {
            Command::Deposit { account: AccountId(account), asset: AssetId(asset), amount }
        }
        Op::Withdraw { account, asset, amount } => {
            Command::Withdraw { account: AccountId(account), asset: AssetId(asset), amount }
        }
        Op::Place(p) => {
            let market = MarketId(p.market);
            let (tick, lot) = tick_lot(model, market);
            let mid = mid_ticks(market);
            // Offsets are aggressiveness: a buy at +d and a sell at -d cross a book at mid.
            let sel = match (p.price, p.side) {
                (PriceSel::Near(d), Side::Sell) => PriceSel::Near(d.saturating_neg()),
                (PriceSel::OffTick(d), Side::Sell) => PriceSel::OffTick(d.saturating_neg()),
                (sel, _) => sel,
            };
            let price = price_of(sel, tick, mid, mid.saturating_mul(tick));
            let side = match p.kind {
                Kind::MarketQuote { .. } => Side::Buy,
                _ => p.side,
            };
            let others = side_total(model, market, side);
            let quantity = qty_of(p.qty, lot, lot, 0, others);
            let reserve = |price: u64| match p.reserve {
                None => 0,
                Some(-1) => price.saturating_sub(tick),
                Some(k) => price.saturating_add((k.unsigned_abs() as u64).saturating_mul(tick)),
            };
            let mut o = NewOrder {
                account: AccountId(p.account),
                market,
                client_order_id: p.client,
                side: p.side,
                order_type: OrderType::Limit,
                time_in_force: p.tif,
                post_only: p.post_only,
                stp: p.stp,
                price,
                quantity,
                quote_quantity: 0,
                reserve_price: 0,
            };
            match p.kind {
                Kind::Limit if p.side == Side::Buy => o.reserve_price = reserve(price),
                Kind::Limit => {}
                Kind::MarketQty { protected } => {
                    o.order_type = OrderType::Market;
                    o.post_only = false;
                    if !protected {
                        o.price = 0;
                    }
                }
                Kind::MarketQuote { protected, exact } => {
                    o.order_type = OrderType::Market;
                    o.post_only = false;
                    o.side = Side::Buy;
                    o.quantity = 0;
                    o.quote_quantity = match exact.map(|n| asks_value(model, market, n)) {
                        Some(v) if v != 0 => v,
                        _ => p.quote,
                    };
                    if !protected {
                        o.price = 0;
                    }
                }
            }
            if p.garbage {
                // Keep the requested flags and add the fields of other kinds of order.
                o.post_only = p.post_only;
                o.quote_quantity = p.quote;
                o.reserve_price = reserve(price);
                o.quantity = quantity;
            }
            Command::PlaceOrder(o)
        }
        Op::Cancel { account, target } => {
            let account = AccountId(account);
            Command::CancelOrder { account, order: order_ref(model, account, target) }
        }
        Op::CancelAll { account, market, side } => {
            Command::CancelAll { account: AccountId(account), market: market.map(MarketId), side }
        }
        Op::Amend { account, target, price, qty } => {
            let account = AccountId(account);
            let order = order_ref(model, account, target);
            let target = match order {
                OrderRef::Id(id) => model.orders.get(&id),
                OrderRef::Client(c) => {
                    model.orders.values().find(|o| o.account == account && o.client_id == c)
                }
            };
            let (market, cur_price, leaves, used, others) = target.map_or((M1, 0, 0, 0, 0), |o| {
                let side = side_total(model, o.market, o.side);
                (o.market, o.price, o.leaves, o.filled + o.decremented, side - o.leaves)
            });
            let (tick, lot) = tick_lot(model, market);
            let new_price = price.map_or(0, |s| price_of(s, tick, mid_ticks(market), cur_price));
            let new_quantity = qty.map_or(0, |s| qty_of(s, lot, leaves, used, others));
            Command::AmendOrder { account, order, new_price, new_quantity }
        }
        Op::MarketStatus { market, status } => {
            Command::SetMarketStatus { market: MarketId(market), status }
        }
        Op::FeeTier { tier, maker, taker } => {
            Command::SetFeeTier { tier, maker_bps: maker, taker_bps: taker }
        }
        Op::AccountTier { account, tier } => {
            Command::SetAccountFeeTier { account: AccountId(account), fee_tier: tier }
        }
        Op::AccountStatus { account, status } => {
            Command::SetAccountStatus { account: AccountId(account), status }
        }
        Op::CreateAccount { account, tier } => {
            Command::CreateAccount { account: AccountId(account), fee_tier: tier }
        }
        Op::ListAsset { asset, decimals } => Command::ListAsset { asset: AssetId(asset), decimals },
        Op::ListMarket { market, base, quote, price_decimals, tick, lot, min } => {
            Command::ListMarket {
                market: MarketId(market),
                base: AssetId(base),
                quote: AssetId(quote),
                price_decimals,
                tick_size: tick,
                lot_size: lot,
                min_notional: min,
            }
        }
    }
}

// ----- strategies -----------------------------------------------------------------------

fn account() -> impl Strategy<Value = u64> {
    prop_oneof![8 => Just(1u64), 8 => Just(2), 8 => Just(3), 1 => Just(4), 1 => Just(0), 1 => Just(77)]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn trading_market() -> impl Strategy<Value = u32> {
    prop_oneof![12 => Just(10u32), 12 => Just(20), 1 => Just(30), 1 => Just(99)]
}

fn price_sel() -> impl Strategy<Value = PriceSel> {
    prop_oneof![
        40 => (-5i8..=4).prop_map(PriceSel::Near),
        2 => (-6i8..=6).prop_map(PriceSel::OffTick),
        1 => Just(PriceSel::Zero),
        1 => Just(PriceSel::OneTick),
        1 => Just(PriceSel::Max),
        1 => Just(PriceSel::MaxOnTick),
    ]
}

fn qty_sel() -> impl Strategy<Value = QtySel> {
    prop_oneof![
        40 => (1u64..=12).prop_map(QtySel::Lots),
        2 => (1u64..=5).prop_map(QtySel::OffLot),
        1 => Just(QtySel::Zero),
        1 => Just(QtySel::Max),
        1 => Just(QtySel::MaxOnLot),
        2 => (1u64..=50).prop_map(QtySel::Big),
    ]
}

fn amend_qty_sel() -> impl Strategy<Value = QtySel> {
    prop_oneof![
        6 => (1u64..=4).prop_map(QtySel::ReduceBy),
        4 => (1u64..=6).prop_map(QtySel::IncreaseBy),
        4 => qty_sel(),
    ]
}

fn amend_price_sel() -> impl Strategy<Value = PriceSel> {
    prop_oneof![6 => price_sel(), 1 => Just(PriceSel::Same)]
}

fn stp() -> impl Strategy<Value = StpMode> {
    prop_oneof![
        6 => Just(StpMode::None),
        2 => Just(StpMode::ExpireTaker),
        2 => Just(StpMode::ExpireMaker),
        2 => Just(StpMode::ExpireBoth),
        2 => Just(StpMode::Decrement),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        8 => (0usize..16, any::<bool>()).prop_map(|(nth, by_client)| Target::Own { nth, by_client }),
        2 => (0usize..16).prop_map(|nth| Target::Any { nth }),
        1 => (0u64..400).prop_map(Target::Stale),
        1 => (0u64..8).prop_map(Target::Client),
    ]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => 1u64..100_000,
        4 => 100_000u64..50_000_000,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => (u64::MAX / 4)..u64::MAX,
    ]
}

fn quote_amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => 1u64..20_000,
        3 => 20_000u64..5_000_000,
        1 => Just(u64::MAX),
        1 => (u64::MAX / 2)..u64::MAX,
    ]
}

fn bps() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(0u32),
        4 => 1u32..100,
        1 => Just(10_000u32),
        1 => Just(10_001u32),
        1 => any::<u32>(),
    ]
}

/// A place. `clean` keeps to known accounts and markets, prices near the mid and whole lots:
/// orders that are mostly accepted, for deep books and many trades.
fn place_op(clean: bool) -> impl Strategy<Value = PlaceOp> {
    let (account, market, price, qty, garbage) = if clean {
        (
            (1u64..=3).boxed(),
            prop_oneof![Just(10u32), Just(20)].boxed(),
            prop_oneof![30 => (-4i8..=4).prop_map(PriceSel::Near), 1 => Just(PriceSel::OneTick)]
                .boxed(),
            (1u64..=8).prop_map(QtySel::Lots).boxed(),
            Just(false).boxed(),
        )
    } else {
        (
            account().boxed(),
            trading_market().boxed(),
            price_sel().boxed(),
            qty_sel().boxed(),
            prop::bool::weighted(0.04).boxed(),
        )
    };
    place_with(account, market, price, qty, quote_amount().boxed(), garbage)
}

/// A place made of the given parts, the rest drawn as for every place.
fn place_with(
    account: BoxedStrategy<u64>,
    market: BoxedStrategy<u32>,
    price: BoxedStrategy<PriceSel>,
    qty: BoxedStrategy<QtySel>,
    quote: BoxedStrategy<u64>,
    garbage: BoxedStrategy<bool>,
) -> impl Strategy<Value = PlaceOp> {
    let kind = prop_oneof![
        14 => Just(Kind::Limit),
        2 => any::<bool>().prop_map(|protected| Kind::MarketQty { protected }),
        2 => (any::<bool>(), prop::option::weighted(0.4, 0u8..4))
            .prop_map(|(protected, exact)| Kind::MarketQuote { protected, exact }),
    ];
    // (limit tif, market tif, post-only draw): post-only mostly on GTC limits, FOK rarely on
    // market orders, both only as often as it takes to cover their rejects.
    let tif = (
        prop_oneof![12 => Just(TimeInForce::Gtc), 4 => Just(TimeInForce::Ioc), 3 => Just(TimeInForce::Fok)],
        prop_oneof![6 => Just(TimeInForce::Ioc), 3 => Just(TimeInForce::Gtc), 1 => Just(TimeInForce::Fok)],
        0u8..40,
    );
    let reserve = prop_oneof![
        12 => Just(None),
        3 => (0i8..=4).prop_map(Some),
        1 => Just(Some(-1i8)),
    ];
    let client = prop_oneof![3 => Just(0u64), 2 => 1u64..=6];
    ((account, market, client, side(), kind), (tif, stp(), price, qty), (quote, reserve, garbage))
        .prop_map(
            |(
                (account, market, client, side, kind),
                ((limit_tif, market_tif, po), stp, price, qty),
                (quote, reserve, garbage),
            )| {
                let tif = if matches!(kind, Kind::Limit) { limit_tif } else { market_tif };
                let post_only = (tif == TimeInForce::Gtc && po < 6) || po == 0;
                PlaceOp {
                    account,
                    market,
                    client,
                    side,
                    kind,
                    tif,
                    post_only,
                    stp,
                    price,
                    qty,
                    quote,
                    reserve,
                    garbage,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let asset =
        prop_oneof![4 => Just(1u32), 4 => Just(2), 4 => Just(3), 1 => Just(4), 1 => Just(9)];
    let any_market = prop::sample::select(MARKETS.to_vec());
    prop_oneof![
        8 => (account(), asset.clone(), amount())
            .prop_map(|(account, asset, amount)| Op::Deposit { account, asset, amount }),
        4 => (account(), asset.clone(), amount())
            .prop_map(|(account, asset, amount)| Op::Withdraw { account, asset, amount }),
        50 => place_op(false).prop_map(Op::Place),
        10 => (account(), target()).prop_map(|(account, target)| Op::Cancel { account, target }),
        3 => (account(), prop::option::of(any_market.clone()), prop::option::of(side()))
            .prop_map(|(account, market, side)| Op::CancelAll { account, market, side }),
        16 => (account(), target(), prop::option::weighted(0.6, amend_price_sel()),
               prop::option::weighted(0.6, amend_qty_sel()))
            .prop_map(|(account, target, price, qty)| Op::Amend { account, target, price, qty }),
        8 => (prop_oneof![4 => Just(10u32), 4 => Just(20), 1 => Just(30), 1 => Just(99)], prop_oneof![
                30 => Just(MarketStatus::Trading),
                5 => Just(MarketStatus::Halted),
                1 => Just(MarketStatus::Delisted)])
            .prop_map(|(market, status)| Op::MarketStatus { market, status }),
        1 => (0u8..5, bps(), bps()).prop_map(|(tier, maker, taker)| Op::FeeTier { tier, maker, taker }),
        1 => (account(), 0u8..6).prop_map(|(account, tier)| Op::AccountTier { account, tier }),
        2 => (account(), prop_oneof![3 => Just(AccountStatus::Active), 1 => Just(AccountStatus::Frozen)])
            .prop_map(|(account, status)| Op::AccountStatus { account, status }),
        1 => (account(), 0u8..6).prop_map(|(account, tier)| Op::CreateAccount { account, tier }),
        1 => (0u32..6, 0u8..21).prop_map(|(asset, decimals)| Op::ListAsset { asset, decimals }),
        1 => (
                prop::sample::select(vec![10u32, 20, 30, 31]),
                (0u32..5, 0u32..5),
                0u8..20,
                prop::sample::select(vec![0u64, 1, 5, 100, 1_000, u64::MAX]),
                prop::sample::select(vec![0u64, 1, 10, 1_000, 1_000_000, u64::MAX]),
                0u64..100,
            )
            .prop_map(|(market, (base, quote), price_decimals, tick, lot, min)| Op::ListMarket {
                market, base, quote, price_decimals, tick, lot, min
            }),
    ]
}

// ----- checks ---------------------------------------------------------------------------

fn show(cmds: &[Command]) -> String {
    cmds.iter().enumerate().map(|(i, c)| format!("  [{i}] {c:?}\n")).collect()
}

fn show_events(events: &[Event]) -> String {
    events.iter().map(|e| format!("    {e:?}\n")).collect()
}

/// Everything observable through the engine's queries equals the model's.
fn compare_state(engine: &Engine, model: &Model) -> Result<(), String> {
    let mut accounts: Vec<AccountId> = engine.accounts();
    accounts.sort();
    let model_accounts: Vec<AccountId> = model.accounts.keys().copied().collect();
    if accounts != model_accounts {
        return Err(format!("accounts: engine {accounts:?}, model {model_accounts:?}"));
    }
    let mut assets = engine.assets();
    assets.sort();
    let model_assets: Vec<(AssetId, u8)> = model.assets.iter().map(|(&a, &d)| (a, d)).collect();
    if assets != model_assets {
        return Err(format!("assets: engine {assets:?}, model {model_assets:?}"));
    }
    for &a in ACCOUNTS.iter() {
        let account = AccountId(a);
        for &s in ASSETS.iter() {
            let asset = AssetId(s);
            let (e, m) = (engine.balance(account, asset), model.balance(account, asset));
            if e != m {
                return Err(format!(
                    "balance of {account:?} in {asset:?}: engine {e:?}, model {m:?}"
                ));
            }
        }
        let (e, m) = (engine.open_orders(account), model.open_orders(account));
        if e != m {
            return Err(format!("open orders of {account:?}:\n engine {e:#?}\n model {m:#?}"));
        }
    }
    for &s in ASSETS.iter() {
        let asset = AssetId(s);
        let (e, m) = (engine.net_funding(asset), model.net.get(&asset).copied());
        if e != m {
            return Err(format!("net funding of {asset:?}: engine {e:?}, model {m:?}"));
        }
    }
    for &mk in MARKETS.iter() {
        let market = MarketId(mk);
        let (e, m) = (engine.market(market), model.market_view(market));
        if e != m {
            return Err(format!("market {market:?}: engine {e:?}, model {m:?}"));
        }
        for side in [Side::Buy, Side::Sell] {
            let (e, m) = (engine.depth(market, side, usize::MAX), model.depth(market, side));
            if e != m {
                return Err(format!("depth {market:?} {side:?}: engine {e:?}, model {m:?}"));
            }
            if engine.best_level(market, side) != m.first().copied() {
                return Err(format!("best level {market:?} {side:?} disagrees with depth"));
            }
            let (e, m) = (engine.book_orders(market, side), model.book_orders(market, side));
            if e != m {
                return Err(format!(
                    "book orders {market:?} {side:?}:\n engine {e:#?}\n model {m:#?}"
                ));
            }
        }
    }
    if engine.open_order_count() != model.orders.len() {
        return Err(format!(
            "open order count: engine {}, model {}",
            engine.open_order_count(),
            model.orders.len()
        ));
    }
    for o in model.orders.values() {
        let view = Some(model.view(o));
        if engine.order(o.id) != view {
            return Err(format!("order {} lookup by id differs", o.id));
        }
        if o.client_id != 0 && engine.order_by_client_id(o.account, o.client_id) != view {
            return Err(format!("order {} lookup by client id differs", o.id));
        }
    }
    Ok(())
}

/// Coverage counters, printed by `coverage_report` when `BOURSE_PROPTEST_STATS` is set.
static STATS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn record(events: &[Event], cmd: &Command, model: &Model) {
    if std::env::var_os("BOURSE_PROPTEST_STATS").is_none() {
        return;
    }
    let mut stats = STATS.lock().unwrap();
    let mut bump = |k: String| *stats.entry(k).or_default() += 1;
    bump(format!("cmd {:?}", cmd.kind()));
    for note in &model.notes {
        bump(format!("model: {note}"));
    }
    for e in events {
        match e {
            Event::Rejected { reason, command, .. } => {
                bump(format!("reject {command:?} {reason:?}"))
            }
            Event::OrderDone { reason, .. } => bump(format!("done {reason:?}")),
            Event::Book { action, .. } => bump(format!("book {action:?}")),
            Event::Amended { kept_priority, .. } => bump(format!("amended kept={kept_priority}")),
            Event::Trade { maker_fee, taker_fee, maker_account, taker_account, .. } => {
                bump("trade".into());
                if maker_fee + taker_fee > 0 {
                    bump("trade with fee".into());
                }
                if maker_account == taker_account {
                    bump("trade self".into());
                }
            }
            Event::MarketStatusChanged { status, .. } => bump(format!("status {status:?}")),
            Event::MassCancelled { count, side, .. } => {
                bump(format!("mass cancel side={side:?} n>0={}", *count > 0))
            }
            _ => {}
        }
    }
    if let Command::AmendOrder { .. } = cmd {
        if events.iter().any(|e| matches!(e, Event::Trade { .. })) {
            bump("amend that trades".into());
        }
    }
    if let Command::PlaceOrder(o) = cmd {
        if matches!(events.first(), Some(Event::Accepted { .. })) {
            bump(format!("place accepted {:?}", o.market));
            if events.iter().any(|e| matches!(e, Event::Trade { .. })) {
                bump(format!("place traded {:?}", o.market));
            }
        }
        if o.time_in_force == TimeInForce::Fok
            && events
                .iter()
                .any(|e| matches!(e, Event::OrderDone { reason: DoneReason::Filled, .. }))
        {
            bump("fok filled".into());
        }
        if matches!(events.first(), Some(Event::Accepted { .. })) {
            bump(format!(
                "accepted {:?} {:?} stp={:?} quote={} prot={}",
                o.order_type,
                o.time_in_force,
                o.stp,
                o.quote_quantity != 0,
                o.order_type == OrderType::Market && o.price != 0
            ));
        }
    }
}

/// With `BOURSE_PROPTEST_STATS=1` (or `=dense`, `=huge` for those generators), run the
/// property once more and print how often each command, event and reject occurred:
/// `BOURSE_PROPTEST_STATS=1 cargo test -p bourse-engine --test properties coverage_report -- --nocapture`
#[test]
fn coverage_report() {
    let Some(mode) = std::env::var_os("BOURSE_PROPTEST_STATS") else {
        return;
    };
    let config = ProptestConfig { cases: 256, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    if mode == "dense" {
        runner.run(&prop::collection::vec(trading_op(), 1..300), |ops| run(&ops)).unwrap();
    } else if mode == "huge" {
        runner.run(&prop::collection::vec(whale_op(), 1..120), |ops| run(&ops)).unwrap();
    } else {
        runner.run(&prop::collection::vec(op(), 1..200), |ops| run(&ops)).unwrap();
    }
    for (k, v) in STATS.lock().unwrap().iter() {
        eprintln!("{v:>8}  {k}");
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Apply setup + ops to two engines and the model, checking everything after each command.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let setup = setup();
    drive(setup.len() + ops.len(), |i, model| {
        if i < setup.len() {
            setup[i]
        } else {
            concretize(&ops[i - setup.len()], model)
        }
    })
}

/// The same checks for a fixed list of commands.
fn run_commands(commands: &[Command]) -> Result<(), TestCaseError> {
    drive(commands.len(), |i, _| commands[i])
}

/// Apply `total` commands, the `i`th made by `next(i, &model)`, to two engines and the
/// model, checking everything after each.
fn drive(
    total: usize,
    mut next: impl FnMut(usize, &Model) -> Command,
) -> Result<(), TestCaseError> {
    let mut engine = Engine::default();
    let mut small = Engine::new(EngineConfig { order_capacity: 1, levels_per_side: 1 });
    let mut model = Model::new();
    let mut cmds: Vec<Command> = Vec::new();
    for i in 0..total {
        let cmd = next(i, &model);
        cmds.push(cmd);
        let hash_before = engine.state_hash();
        let expected = match catch_unwind(AssertUnwindSafe(|| model.apply(&cmd))) {
            Ok(events) => events,
            Err(p) => {
                return Err(fail(format!(
                    "model panicked ({}) at command [{i}]\ncommands:\n{}",
                    panic_text(&p),
                    show(&cmds)
                )))
            }
        };
        let mut events = Vec::new();
        catch_unwind(AssertUnwindSafe(|| engine.apply(&cmd, &mut events))).map_err(|p| {
            fail(format!(
                "engine panicked ({}) at command [{i}]\nmodel events:\n{}commands:\n{}",
                panic_text(&p),
                show_events(&expected),
                show(&cmds)
            ))
        })?;
        if events != expected {
            return Err(fail(format!(
                "events differ at command [{i}] {cmd:?}\nengine:\n{}model:\n{}commands:\n{}",
                show_events(&events),
                show_events(&expected),
                show(&cmds)
            )));
        }
        record(&events, &cmd, &model);
        if let Err(e) = engine.check_invariants() {
            return Err(fail(format!(
                "invariant broken after [{i}]: {e}\ncommands:\n{}",
                show(&cmds)
            )));
        }
        let mut small_events = Vec::new();
        small.apply(&cmd, &mut small_events);
        prop_assert_eq!(
            &events,
            &small_events,
            "engines with different capacities disagree at [{}]",
            i
        );
        prop_assert_eq!(
            engine.state_hash(),
            small.state_hash(),
            "state hashes differ after [{}]",
            i
        );
        // Every so often the twin is rebuilt from a snapshot (through its serde form): it
        // must carry on exactly like the original.
        if i % 7 == 3 {
            let snap = engine.snapshot();
            let json = serde_json::to_string(&snap).expect("snapshot serialises");
            let back: Snapshot = serde_json::from_str(&json).expect("snapshot deserialises");
            prop_assert_eq!(&back, &snap);
            small = Engine::from_snapshot(
                &back,
                EngineConfig { order_capacity: 1, levels_per_side: 1 },
            )
            .map_err(|e| fail(format!("snapshot after [{i}] does not restore: {e}")))?;
            prop_assert_eq!(small.state_hash(), engine.state_hash(), "restored hash after [{}]", i);
            prop_assert_eq!(small.snapshot(), snap, "restored snapshot after [{}]", i);
        }
        if let [Event::Rejected { .. }] = events.as_slice() {
            prop_assert_eq!(
                hash_before,
                engine.state_hash(),
                "rejected command [{}] changed the state",
                i
            );
        }
        if let Err(e) = compare_state(&engine, &model) {
            return Err(fail(format!(
                "state differs after [{i}] {cmd:?}: {e}\ncommands:\n{}",
                show(&cmds)
            )));
        }
    }
    prop_assert!(small.check_invariants().is_ok());
    // Replaying the recorded commands into a fresh engine reproduces the state.
    let mut replay = Engine::default();
    let mut sink = Vec::new();
    for c in &cmds {
        replay.apply(c, &mut sink);
    }
    prop_assert_eq!(replay.state_hash(), engine.state_hash());
    Ok(())
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

/// `cases` cases, unless `PROPTEST_CASES` asks for another number (for long bug hunts).
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        default
    } else {
        ProptestConfig { cases, ..default }
    }
}

/// Mostly valid trading: deep books, many trades, amends that cross, self-trades.
fn trading_op() -> impl Strategy<Value = Op> {
    let trader = 1u64..=3;
    let own =
        (0usize..32, any::<bool>()).prop_map(|(nth, by_client)| Target::Own { nth, by_client });
    let markets = prop::option::of(prop_oneof![Just(10u32), Just(20)]);
    prop_oneof![
        70 => place_op(true).prop_map(Op::Place),
        8 => (trader.clone(), own.clone())
            .prop_map(|(account, target)| Op::Cancel { account, target }),
        16 => (
            trader.clone(),
            own,
            prop::option::weighted(0.6, amend_price_sel()),
            prop::option::weighted(0.6, amend_qty_sel()),
        )
            .prop_map(|(account, target, price, qty)| Op::Amend { account, target, price, qty }),
        4 => (trader.clone(), 1u32..=3, 1u64..200_000)
            .prop_map(|(account, asset, amount)| Op::Deposit { account, asset, amount }),
        1 => (trader.clone(), 1u32..=3, 1u64..20_000)
            .prop_map(|(account, asset, amount)| Op::Withdraw { account, asset, amount }),
        1 => (trader.clone(), markets, prop::option::of(side()))
            .prop_map(|(account, market, side)| Op::CancelAll { account, market, side }),
        1 => (trader, 0u8..3).prop_map(|(account, tier)| Op::AccountTier { account, tier }),
    ]
}

/// Trading at the limits of `u64`: balances near the cap of an asset, orders for a large
/// share of `u64::MAX` base atoms, and places and amends aimed exactly at, or one lot past,
/// the side-total and order-quantity limits; with self-trade prevention and market buys by
/// quote amount mixed in.
fn whale_op() -> impl Strategy<Value = Op> {
    let trader = 1u64..=3;
    let own =
        (0usize..8, any::<bool>()).prop_map(|(nth, by_client)| Target::Own { nth, by_client });
    let big = || {
        prop_oneof![
            2 => 1u64..200_000,
            3 => (u64::MAX / 16)..(u64::MAX / 3),
        ]
    };
    let qty = prop_oneof![
        4 => (1u64..=8).prop_map(QtySel::Lots),
        4 => (1u64..=4).prop_map(QtySel::Share),
        2 => (0u64..=1).prop_map(QtySel::ToSideLimit),
        1 => Just(QtySel::MaxOnLot),
    ];
    let amend_qty = prop_oneof![
        2 => (1u64..=4).prop_map(QtySel::ReduceBy),
        1 => (1u64..=4).prop_map(QtySel::IncreaseBy),
        3 => (0u64..=1).prop_map(QtySel::ToOrderLimit),
        3 => (0u64..=1).prop_map(QtySel::ToSideLimit),
        2 => (1u64..=4).prop_map(QtySel::Share),
    ];
    let price = prop_oneof![
        6 => (-3i8..=3).prop_map(PriceSel::Near),
        2 => Just(PriceSel::OneTick),
    ];
    let place = place_with(
        trader.clone().boxed(),
        prop_oneof![Just(10u32), Just(20)].boxed(),
        price.boxed(),
        qty.boxed(),
        prop_oneof![1 => 1u64..20_000, 2 => big()].boxed(),
        Just(false).boxed(),
    );
    prop_oneof![
        10 => place.prop_map(Op::Place),
        4 => (trader.clone(), 1u32..=3, big())
            .prop_map(|(account, asset, amount)| Op::Deposit { account, asset, amount }),
        1 => (trader.clone(), 1u32..=3, big())
            .prop_map(|(account, asset, amount)| Op::Withdraw { account, asset, amount }),
        5 => (
            trader.clone(),
            own.clone(),
            prop::option::weighted(0.2, (-3i8..=3).prop_map(PriceSel::Near)),
            prop::option::weighted(0.9, amend_qty),
        )
            .prop_map(|(account, target, price, qty)| Op::Amend { account, target, price, qty }),
        1 => (trader, own).prop_map(|(account, target)| Op::Cancel { account, target }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Everything: invalid ids and values, reference data, halts, freezes, delistings.
    #[test]
    fn engine_matches_reference_model(ops in prop::collection::vec(op(), 1..200)) {
        run(&ops)?;
    }

    /// Dense, mostly valid trading on the two markets.
    #[test]
    fn engine_matches_reference_model_dense_trading(
        ops in prop::collection::vec(trading_op(), 1..300)
    ) {
        run(&ops)?;
    }

    /// Huge balances and quantities, up to and just past the limits.
    #[test]
    fn engine_matches_reference_model_huge_quantities(
        ops in prop::collection::vec(whale_op(), 1..120)
    ) {
        run(&ops)?;
    }
}

#[test]
fn setup_alone_matches_model() {
    run(&[]).unwrap();
}

// ----- regressions and known issues -------------------------------------------------------

/// A market buy by quantity without protection price holds all free quote as its budget.
/// When it filled completely the engine returned early and kept the unspent budget held
/// forever (found by `engine_matches_reference_model`; fixed in `finish_incoming`).
#[test]
fn regression_completed_budget_buy_releases_the_rest() {
    let mut cmds = setup();
    let sell = NewOrder {
        account: AccountId(1),
        market: M1,
        client_order_id: 0,
        side: Side::Sell,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        stp: StpMode::None,
        price: 2500,
        quantity: 4000,
        quote_quantity: 0,
        reserve_price: 0,
    };
    let buy = NewOrder {
        account: AccountId(2),
        side: Side::Buy,
        order_type: OrderType::Market,
        time_in_force: TimeInForce::Ioc,
        price: 0,
        quantity: 2000,
        ..sell
    };
    cmds.push(Command::PlaceOrder(sell));
    cmds.push(Command::PlaceOrder(buy));
    run_commands(&cmds).unwrap();
    let mut engine = Engine::default();
    let mut out = Vec::new();
    for c in &cmds {
        engine.apply(c, &mut out);
    }
    assert_eq!(engine.balance(AccountId(2), USD).unwrap().held, 0);
}

/// A market market whose lot costs one quote atom per tick, no fees, and a budget of exactly
/// `u64::MAX`: `risk::affordable_lots` computed `lots + 1` with `lots == u64::MAX` (a panic
/// in debug builds; in release the wrapped value made it return 0, so the order expired
/// without trading). Fixed with `checked_add`.
#[test]
fn regression_affordable_lots_at_u64_max() {
    assert_eq!(risk::affordable_lots(u64::MAX, 1, 0), u64::MAX);
    assert_eq!(risk::affordable_lots(u64::MAX, 2, 0), u64::MAX / 2);
    let (base, quote, market) = (AssetId(1), AssetId(2), MarketId(1));
    let (buyer, seller) = (AccountId(1), AccountId(2));
    let sell = NewOrder {
        account: seller,
        market,
        client_order_id: 0,
        side: Side::Sell,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        stp: StpMode::None,
        price: 1,
        quantity: 5,
        quote_quantity: 0,
        reserve_price: 0,
    };
    let by_quote = NewOrder {
        account: buyer,
        side: Side::Buy,
        order_type: OrderType::Market,
        time_in_force: TimeInForce::Ioc,
        price: 0,
        quantity: 0,
        quote_quantity: u64::MAX,
        ..sell
    };
    let by_quantity = NewOrder { quantity: 3, quote_quantity: 0, ..by_quote };
    run_commands(&[
        Command::ListAsset { asset: base, decimals: 0 },
        Command::ListAsset { asset: quote, decimals: 0 },
        Command::ListMarket {
            market,
            base,
            quote,
            price_decimals: 0,
            tick_size: 1,
            lot_size: 1,
            min_notional: 0,
        },
        Command::CreateAccount { account: buyer, fee_tier: 0 },
        Command::CreateAccount { account: seller, fee_tier: 0 },
        Command::Deposit { account: buyer, asset: quote, amount: u64::MAX },
        Command::Deposit { account: seller, asset: base, amount: 10 },
        Command::PlaceOrder(sell),
        Command::PlaceOrder(by_quote),
        Command::PlaceOrder(sell),
        // Free quote is now u64::MAX - 5: the whole of it is the budget.
        Command::PlaceOrder(by_quantity),
    ])
    .unwrap();
}

/// Buys are bounded by quote funds, not by the base supply, so before the overflow rules the
/// base-atom quantities the engine reports could exceed `u64::MAX` (found by
/// `engine_matches_reference_model`; the engine computed `lots * lot_size` unchecked):
/// * a price level's total (`Event::Book::level_quantity`, `LevelView::quantity`): two bids
///   of 10^19 base atoms at one level, costing 10^18 quote atoms each here;
/// * an order's quantity (`OrderView::quantity`) after a partly filled buy is amended up to a
///   huge quantity.
///
/// Now a book side's total leaves, and an order's filled + decremented + leaves, stay within
/// `u64` atoms: a GTC limit order or an amend that would take them past it is refused with
/// `Overflow`. Each case also runs through `run_commands` (the reference model agrees on
/// every event and query, and every reject leaves the state hash unchanged).
#[test]
fn regression_base_quantities_stay_within_u64() {
    let (base, quote, market) = (AssetId(1), AssetId(2), MarketId(1));
    let (alice, bob) = (AccountId(1), AccountId(2));
    // The largest whole number of lots, in atoms.
    let max_qty = u64::MAX / 10 * 10;
    let setup = vec![
        Command::ListAsset { asset: base, decimals: 1 },
        Command::ListAsset { asset: quote, decimals: 0 },
        // 10 base atoms (one lot) at one tick cost one quote atom.
        Command::ListMarket {
            market,
            base,
            quote,
            price_decimals: 0,
            tick_size: 1,
            lot_size: 10,
            min_notional: 0,
        },
        Command::CreateAccount { account: alice, fee_tier: 0 },
        Command::CreateAccount { account: bob, fee_tier: 0 },
        Command::Deposit { account: alice, asset: quote, amount: 4_000_000_000_000_000_000 },
        Command::Deposit { account: alice, asset: base, amount: 10 },
        Command::Deposit { account: bob, asset: base, amount: 100 },
    ];
    let bid = NewOrder {
        account: alice,
        market,
        client_order_id: 0,
        side: Side::Buy,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        stp: StpMode::None,
        price: 1,
        quantity: 10_000_000_000_000_000_000,
        quote_quantity: 0,
        reserve_price: 0,
    };
    let amend = |order: OrderId, new_quantity: u64| Command::AmendOrder {
        account: alice,
        order: OrderRef::Id(order),
        new_price: 0,
        new_quantity,
    };
    // Applies `steps` after the setup, checked against the model; returns the engine and
    // every step's events.
    let play = |steps: &[Command]| {
        let all: Vec<Command> = setup.iter().chain(steps).copied().collect();
        run_commands(&all).unwrap();
        let mut engine = Engine::default();
        let mut out = Vec::new();
        for c in &setup {
            engine.apply(c, &mut out);
        }
        let replies: Vec<Vec<Event>> = steps
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                engine.apply(c, &mut out);
                out
            })
            .collect();
        (engine, replies)
    };
    let overflow = |events: &[Event]| {
        matches!(events, [Event::Rejected { reason: RejectReason::Overflow, .. }])
    };
    let accepted = |events: &[Event]| matches!(events.first(), Some(Event::Accepted { .. }));

    // 1. Place: the bid side holds at most u64::MAX atoms, summed over its levels.
    let rest = NewOrder { quantity: max_qty - bid.quantity, price: 2, ..bid };
    let one_lot = NewOrder { quantity: 10, ..bid };
    let (engine, r) = play(&[
        Command::PlaceOrder(bid),
        // Same level: 2 * 10^19 atoms.
        Command::PlaceOrder(bid),
        // Another level, up to the largest total that fits: accepted.
        Command::PlaceOrder(rest),
        // One lot more anywhere on the side: refused.
        Command::PlaceOrder(one_lot),
        Command::PlaceOrder(NewOrder { price: 3, ..one_lot }),
        // Orders that do not rest are not limited by it, nor is the other side.
        Command::PlaceOrder(NewOrder { time_in_force: TimeInForce::Ioc, ..bid }),
        Command::PlaceOrder(NewOrder { account: bob, side: Side::Sell, price: 5, ..one_lot }),
    ]);
    assert!(accepted(&r[0]), "{:?}", r[0]);
    assert!(overflow(&r[1]), "a second bid past u64::MAX atoms: {:?}", r[1]);
    assert!(accepted(&r[2]), "{:?}", r[2]);
    assert!(overflow(&r[3]), "one lot past the side's limit: {:?}", r[3]);
    assert!(overflow(&r[4]), "one lot past the side's limit: {:?}", r[4]);
    assert!(
        r[5].contains(&Event::OrderDone {
            order_id: 3,
            account: alice,
            market,
            client_order_id: 0,
            reason: DoneReason::Expired,
            filled_quantity: 0,
            cancelled_quantity: bid.quantity,
        }),
        "an IOC bid is not held to the side's limit: {:?}",
        r[5]
    );
    assert!(accepted(&r[6]), "{:?}", r[6]);
    let depth = engine.depth(market, Side::Buy, usize::MAX);
    assert_eq!(depth.iter().map(|l| l.quantity).sum::<u64>(), max_qty, "{depth:?}");

    // 2. Amend, side total: the other orders on the side plus the new quantity must fit.
    let (engine, r) = play(&[
        Command::PlaceOrder(bid),
        Command::PlaceOrder(rest),
        amend(1, bid.quantity + 10),
        amend(2, rest.quantity + 10),
        // Down and back up again is fine.
        amend(1, bid.quantity - 10),
        amend(1, bid.quantity),
    ]);
    assert!(overflow(&r[2]), "{:?}", r[2]);
    assert!(overflow(&r[3]), "{:?}", r[3]);
    assert!(matches!(r[4][0], Event::Book { .. }), "{:?}", r[4]);
    assert!(r[5].iter().any(|e| matches!(e, Event::Amended { .. })), "{:?}", r[5]);
    assert_eq!(engine.order(1).unwrap().quantity, bid.quantity);

    // 3. Amend, order quantity: filled + leaves must fit. Bob fills one lot of the bid.
    let sell = NewOrder { account: bob, side: Side::Sell, ..one_lot };
    let (engine, r) = play(&[
        Command::PlaceOrder(bid),
        Command::PlaceOrder(sell),
        amend(1, max_qty),
        amend(1, max_qty - 10),
    ]);
    assert!(overflow(&r[2]), "an amend that takes filled + leaves past u64::MAX: {:?}", r[2]);
    assert!(r[3].iter().any(|e| matches!(e, Event::Amended { .. })), "{:?}", r[3]);
    let view = engine.order(1).unwrap();
    assert_eq!(
        (view.quantity, view.filled_quantity, view.leaves_quantity),
        (max_qty, 10, max_qty - 10)
    );

    // 4. The same with a lot taken by self-trade prevention instead of a trade: Alice's own
    //    sell decrements her bid, and decremented + leaves must fit too.
    let (engine, r) = play(&[
        Command::PlaceOrder(bid),
        Command::PlaceOrder(NewOrder { side: Side::Sell, stp: StpMode::Decrement, ..one_lot }),
        amend(1, max_qty),
        amend(1, max_qty - 10),
    ]);
    assert!(
        r[1].iter()
            .any(|e| matches!(e, Event::Book { action: BookAction::Reduce, order_id: 1, .. })),
        "{:?}",
        r[1]
    );
    assert!(overflow(&r[2]), "an amend that takes decremented + leaves past u64::MAX: {:?}", r[2]);
    let view = engine.order(1).unwrap();
    assert_eq!(
        (view.quantity, view.filled_quantity, view.leaves_quantity),
        (max_qty, 0, max_qty - 10)
    );
}
