//! Property tests: the engine against a naive reference model (`tests/model`).
//!
//! Random command streams over a small universe (3 assets, 2 markets with different
//! tick/lot/decimals, a few accounts including the fee account and unknown ids, fee tiers
//! with non-zero and asymmetric rates) are applied to the engine and to the model. For
//! every command:
//! * the engine's events equal the model's, in order and in every field;
//! * `check_invariants` holds (money conservation, holds, book structure);
//! * a second engine with tiny preallocation gets the same events and the same state hash
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
        Command::ListAsset {
            asset: BTC,
            decimals: 8,
        },
        Command::ListAsset {
            asset: USD,
            decimals: 6,
        },
        Command::ListAsset {
            asset: CENTS,
            decimals: 2,
        },
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
        Command::SetFeeTier {
            tier: 1,
            maker_bps: 10,
            taker_bps: 30,
        },
        Command::SetFeeTier {
            tier: 2,
            maker_bps: 45,
            taker_bps: 7,
        },
        Command::CreateAccount {
            account: AccountId(1),
            fee_tier: 1,
        },
        Command::CreateAccount {
            account: AccountId(2),
            fee_tier: 2,
        },
        Command::CreateAccount {
            account: AccountId(3),
            fee_tier: 0,
        },
    ];
    // Rich, middling and poor, so that budgets and balances run out now and then.
    for (a, scale) in [(1, 100), (2, 10), (3, 1)] {
        let account = AccountId(a);
        v.push(Command::Deposit {
            account,
            asset: BTC,
            amount: 4_000 * scale,
        });
        v.push(Command::Deposit {
            account,
            asset: USD,
            amount: 60_000 * scale,
        });
        v.push(Command::Deposit {
            account,
            asset: CENTS,
            amount: 300 * scale,
        });
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
    MarketQty { protected: bool },
    MarketQuote { protected: bool },
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
    model
        .markets
        .get(&market)
        .map_or((1, 1), |m| (m.tick, m.lot))
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

fn qty_of(sel: QtySel, lot: u64, leaves: u64) -> u64 {
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
    }
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
        Op::Deposit {
            account,
            asset,
            amount,
        } => Command::Deposit {
            account: AccountId(account),
            asset: AssetId(asset),
            amount,
        },
        Op::Withdraw {
            account,
            asset,
            amount,
        } => Command::Withdraw {
            account: AccountId(account),
            asset: AssetId(asset),
            amount,
        },
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
            let quantity = qty_of(p.qty, lot, lot);
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
                Kind::MarketQuote { protected } => {
                    o.order_type = OrderType::Market;
                    o.post_only = false;
                    o.side = Side::Buy;
                    o.quantity = 0;
                    o.quote_quantity = p.quote;
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
            Command::CancelOrder {
                account,
                order: order_ref(model, account, target),
            }
        }
        Op::CancelAll { account, market } => Command::CancelAll {
            account: AccountId(account),
            market: market.map(MarketId),
        },
        Op::Amend {
            account,
            target,
            price,
            qty,
        } => {
            let account = AccountId(account);
            let order = order_ref(model, account, target);
            let target = match order {
                OrderRef::Id(id) => model.orders.get(&id),
                OrderRef::Client(c) => model
                    .orders
                    .values()
                    .find(|o| o.account == account && o.client_id == c),
            };
            let (market, cur_price, leaves) =
                target.map_or((M1, 0, 0), |o| (o.market, o.price, o.leaves));
            let (tick, lot) = tick_lot(model, market);
            let new_price = price.map_or(0, |s| price_of(s, tick, mid_ticks(market), cur_price));
            let new_quantity = qty.map_or(0, |s| qty_of(s, lot, leaves));
            Command::AmendOrder {
                account,
                order,
                new_price,
                new_quantity,
            }
        }
        Op::MarketStatus { market, status } => Command::SetMarketStatus {
            market: MarketId(market),
            status,
        },
        Op::FeeTier { tier, maker, taker } => Command::SetFeeTier {
            tier,
            maker_bps: maker,
            taker_bps: taker,
        },
        Op::AccountTier { account, tier } => Command::SetAccountFeeTier {
            account: AccountId(account),
            fee_tier: tier,
        },
        Op::AccountStatus { account, status } => Command::SetAccountStatus {
            account: AccountId(account),
            status,
        },
        Op::CreateAccount { account, tier } => Command::CreateAccount {
            account: AccountId(account),
            fee_tier: tier,
        },
        Op::ListAsset { asset, decimals } => Command::ListAsset {
            asset: AssetId(asset),
            decimals,
        },
        Op::ListMarket {
            market,
            base,
            quote,
            price_decimals,
            tick,
            lot,
            min,
        } => Command::ListMarket {
            market: MarketId(market),
            base: AssetId(base),
            quote: AssetId(quote),
            price_decimals,
            tick_size: tick,
            lot_size: lot,
            min_notional: min,
        },
    }
}

// ----- strategies -----------------------------------------------------------------------

fn account() -> impl Strategy<Value = u64> {
    prop_oneof![8 => Just(1u64), 8 => Just(2), 8 => Just(3), 1 => Just(4), 1 => Just(0), 1 => Just(77)]
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
    let kind = prop_oneof![
        14 => Just(Kind::Limit),
        2 => any::<bool>().prop_map(|protected| Kind::MarketQty { protected }),
        2 => any::<bool>().prop_map(|protected| Kind::MarketQuote { protected }),
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
    (
        (
            account,
            market,
            client,
            prop_oneof![Just(Side::Buy), Just(Side::Sell)],
            kind,
        ),
        (tif, stp(), price, qty),
        (quote_amount(), reserve, garbage),
    )
        .prop_map(
            |(
                (account, market, client, side, kind),
                ((limit_tif, market_tif, po), stp, price, qty),
                (quote, reserve, garbage),
            )| {
                let tif = if matches!(kind, Kind::Limit) {
                    limit_tif
                } else {
                    market_tif
                };
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
        3 => (account(), prop::option::of(any_market.clone()))
            .prop_map(|(account, market)| Op::CancelAll { account, market }),
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
    cmds.iter()
        .enumerate()
        .map(|(i, c)| format!("  [{i}] {c:?}\n"))
        .collect()
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
        return Err(format!(
            "accounts: engine {accounts:?}, model {model_accounts:?}"
        ));
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
            let (e, m) = (
                engine.balance(account, asset),
                model.balance(account, asset),
            );
            if e != m {
                return Err(format!(
                    "balance of {account:?} in {asset:?}: engine {e:?}, model {m:?}"
                ));
            }
        }
        let (e, m) = (engine.open_orders(account), model.open_orders(account));
        if e != m {
            return Err(format!(
                "open orders of {account:?}:\n engine {e:#?}\n model {m:#?}"
            ));
        }
    }
    for &s in ASSETS.iter() {
        let asset = AssetId(s);
        let (e, m) = (engine.net_funding(asset), model.net.get(&asset).copied());
        if e != m {
            return Err(format!(
                "net funding of {asset:?}: engine {e:?}, model {m:?}"
            ));
        }
    }
    for &mk in MARKETS.iter() {
        let market = MarketId(mk);
        let (e, m) = (engine.market(market), model.market_view(market));
        if e != m {
            return Err(format!("market {market:?}: engine {e:?}, model {m:?}"));
        }
        for side in [Side::Buy, Side::Sell] {
            let (e, m) = (
                engine.depth(market, side, usize::MAX),
                model.depth(market, side),
            );
            if e != m {
                return Err(format!(
                    "depth {market:?} {side:?}: engine {e:?}, model {m:?}"
                ));
            }
            if engine.best_level(market, side) != m.first().copied() {
                return Err(format!(
                    "best level {market:?} {side:?} disagrees with depth"
                ));
            }
            let (e, m) = (
                engine.book_orders(market, side),
                model.book_orders(market, side),
            );
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

fn record(events: &[Event], cmd: &Command) {
    if std::env::var_os("BOURSE_PROPTEST_STATS").is_none() {
        return;
    }
    let mut stats = STATS.lock().unwrap();
    let mut bump = |k: String| *stats.entry(k).or_default() += 1;
    bump(format!("cmd {:?}", cmd.kind()));
    for e in events {
        match e {
            Event::Rejected {
                reason, command, ..
            } => bump(format!("reject {command:?} {reason:?}")),
            Event::OrderDone { reason, .. } => bump(format!("done {reason:?}")),
            Event::Book { action, .. } => bump(format!("book {action:?}")),
            Event::Amended { kept_priority, .. } => bump(format!("amended kept={kept_priority}")),
            Event::Trade {
                maker_fee,
                taker_fee,
                maker_account,
                taker_account,
                ..
            } => {
                bump("trade".into());
                if maker_fee + taker_fee > 0 {
                    bump("trade with fee".into());
                }
                if maker_account == taker_account {
                    bump("trade self".into());
                }
            }
            Event::MarketStatusChanged { status, .. } => bump(format!("status {status:?}")),
            Event::MassCancelled { count, .. } => bump(format!("mass cancel n>0={}", *count > 0)),
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
            && events.iter().any(|e| {
                matches!(
                    e,
                    Event::OrderDone {
                        reason: DoneReason::Filled,
                        ..
                    }
                )
            })
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

/// With `BOURSE_PROPTEST_STATS=1` (or `=dense` for the dense-trading generator), run the
/// property once more and print how often each command, event and reject occurred:
/// `BOURSE_PROPTEST_STATS=1 cargo test -p bourse-engine --test properties coverage_report -- --nocapture`
#[test]
fn coverage_report() {
    let Some(mode) = std::env::var_os("BOURSE_PROPTEST_STATS") else {
        return;
    };
    let config = ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    if mode == "dense" {
        runner
            .run(&prop::collection::vec(trading_op(), 1..300), |ops| {
                run(&ops)
            })
            .unwrap();
    } else {
        runner
            .run(&prop::collection::vec(op(), 1..200), |ops| run(&ops))
            .unwrap();
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
    let mut small = Engine::new(EngineConfig {
        order_capacity: 1,
        levels_per_side: 1,
    });
    let mut model = Model::new();
    let mut cmds: Vec<Command> = Vec::new();
    for i in 0..total {
        let cmd = next(i, &model);
        cmds.push(cmd);
        let hash_before = engine.state_hash();
        // The model goes first: it recognises states whose quantities the engine cannot
        // represent (a known engine limitation, see `level_quantity_overflow_reproduction`),
        // and the case stops there, everything before it having been checked.
        let expected = match catch_unwind(AssertUnwindSafe(|| model.apply(&cmd))) {
            Ok(events) => events,
            Err(p) if panic_text(&p).starts_with(model::UNREPRESENTABLE) => {
                if std::env::var_os("BOURSE_PROPTEST_STATS").is_some() {
                    *STATS
                        .lock()
                        .unwrap()
                        .entry(format!("stopped: {}", panic_text(&p)))
                        .or_default() += 1;
                }
                return Ok(());
            }
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
        record(&events, &cmd);
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
        1 => (trader.clone(), markets)
            .prop_map(|(account, market)| Op::CancelAll { account, market }),
        1 => (trader, 0u8..3).prop_map(|(account, tier)| Op::AccountTier { account, tier }),
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
    let by_quantity = NewOrder {
        quantity: 3,
        quote_quantity: 0,
        ..by_quote
    };
    run_commands(&[
        Command::ListAsset {
            asset: base,
            decimals: 0,
        },
        Command::ListAsset {
            asset: quote,
            decimals: 0,
        },
        Command::ListMarket {
            market,
            base,
            quote,
            price_decimals: 0,
            tick_size: 1,
            lot_size: 1,
            min_notional: 0,
        },
        Command::CreateAccount {
            account: buyer,
            fee_tier: 0,
        },
        Command::CreateAccount {
            account: seller,
            fee_tier: 0,
        },
        Command::Deposit {
            account: buyer,
            asset: quote,
            amount: u64::MAX,
        },
        Command::Deposit {
            account: seller,
            asset: base,
            amount: 10,
        },
        Command::PlaceOrder(sell),
        Command::PlaceOrder(by_quote),
        Command::PlaceOrder(sell),
        // Free quote is now u64::MAX - 5: the whole of it is the budget.
        Command::PlaceOrder(by_quantity),
    ])
    .unwrap();
}

/// KNOWN ENGINE ISSUE (not fixed: it needs a decision on limits). Buys are bounded by quote
/// funds, not by the base supply, so the base-atom quantities the engine reports can exceed
/// `u64::MAX`:
/// * a price level's total (`Event::Book::level_quantity`, `LevelView::quantity`): two bids
///   of 10^19 base atoms at one level, costing 10^18 quote atoms each here;
/// * an order's `filled + leaves` (`OrderView::quantity`) after a partly filled buy is
///   amended up to a huge quantity (and so, over time, `filled_quantity`).
///
/// The engine computes `lots * lot_size` unchecked: a panic in debug builds, a wrapped,
/// wrong number in release builds. One possible rule: reject with `Overflow` any place or
/// amend after which its level's total or the order's total quantity would not fit.
/// `engine_matches_reference_model` stops a case when the model sees such a state.
#[test]
#[ignore = "known engine issue: base-atom quantities of bids can exceed u64::MAX"]
fn level_quantity_overflow_reproduction() {
    let (base, quote, market) = (AssetId(1), AssetId(2), MarketId(1));
    let setup = [
        Command::ListAsset {
            asset: base,
            decimals: 1,
        },
        Command::ListAsset {
            asset: quote,
            decimals: 0,
        },
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
        Command::CreateAccount {
            account: AccountId(1),
            fee_tier: 0,
        },
        Command::CreateAccount {
            account: AccountId(2),
            fee_tier: 0,
        },
        Command::Deposit {
            account: AccountId(1),
            asset: quote,
            amount: 4_000_000_000_000_000_000,
        },
        Command::Deposit {
            account: AccountId(2),
            asset: base,
            amount: 10,
        },
    ];
    let bid = NewOrder {
        account: AccountId(1),
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
    let apply = |engine: &mut Engine, cmd: Command| {
        let mut out = Vec::new();
        engine.apply(&cmd, &mut out);
        out
    };

    // 1. Level total: the second bid is accepted and its Book event overflows.
    let mut engine = Engine::default();
    for c in setup {
        apply(&mut engine, c);
    }
    apply(&mut engine, Command::PlaceOrder(bid));
    let out = apply(&mut engine, Command::PlaceOrder(bid));
    assert!(
        matches!(
            out.as_slice(),
            [Event::Rejected {
                reason: RejectReason::Overflow,
                ..
            }]
        ),
        "a second bid that takes the level past u64::MAX base atoms: {out:?}"
    );

    // 2. Order total: fill 10 atoms, then amend the leaves up to the largest whole lot.
    let mut engine = Engine::default();
    for c in setup {
        apply(&mut engine, c);
    }
    apply(&mut engine, Command::PlaceOrder(bid));
    let sell = NewOrder {
        account: AccountId(2),
        side: Side::Sell,
        quantity: 10,
        ..bid
    };
    apply(&mut engine, Command::PlaceOrder(sell));
    let out = apply(
        &mut engine,
        Command::AmendOrder {
            account: AccountId(1),
            order: OrderRef::Id(1),
            new_price: 0,
            new_quantity: u64::MAX / 10 * 10,
        },
    );
    let views = engine.open_orders(AccountId(1));
    assert!(
        matches!(
            out.as_slice(),
            [Event::Rejected {
                reason: RejectReason::Overflow,
                ..
            }]
        ),
        "an amend that takes filled + leaves past u64::MAX: {out:?} {views:?}"
    );
}
