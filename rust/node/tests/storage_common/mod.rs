//! Shared helpers for the journal and snapshot-file tests.

#![allow(dead_code)]

use bourse_engine::*;

pub const BTC: AssetId = AssetId(1);
pub const USDT: AssetId = AssetId(2);
pub const BTC_USDT: MarketId = MarketId(1);

/// Commands that set up one market and two funded accounts.
pub fn setup() -> Vec<Command> {
    vec![
        Command::ListAsset { asset: BTC, decimals: 8 },
        Command::ListAsset { asset: USDT, decimals: 6 },
        Command::ListMarket {
            market: BTC_USDT,
            base: BTC,
            quote: USDT,
            price_decimals: 2,
            tick_size: 100,
            lot_size: 10_000,
            min_notional: 1_000_000,
        },
        Command::CreateAccount { account: AccountId(1), fee_tier: 0 },
        Command::CreateAccount { account: AccountId(2), fee_tier: 0 },
        Command::Deposit { account: AccountId(1), asset: USDT, amount: 10_000_000_000_000 },
        Command::Deposit { account: AccountId(2), asset: BTC, amount: 100_000_000_000 },
    ]
}

/// The `i`-th command of a varied stream: resting orders on both sides that never cross,
/// cancels and amends (some of them rejected by an engine, which does not matter here).
pub fn command(i: u64) -> Command {
    let side_buy = i % 2 == 0;
    match i % 7 {
        5 => Command::CancelOrder { account: AccountId(1 + i % 2), order: OrderRef::Id(i / 3 + 1) },
        6 => Command::AmendOrder {
            account: AccountId(1 + i % 2),
            order: OrderRef::Client(i / 2),
            new_price: 0,
            new_quantity: 10_000,
        },
        _ => Command::PlaceOrder(NewOrder {
            account: AccountId(if side_buy { 1 } else { 2 }),
            market: BTC_USDT,
            client_order_id: i,
            side: if side_buy { Side::Buy } else { Side::Sell },
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            stp: StpMode::None,
            // Buys at $20,000-$20,999, sells at $30,000-$30,999: never crossing.
            price: if side_buy {
                2_000_000 + (i % 1000) * 100
            } else {
                3_000_000 + (i % 1000) * 100
            },
            quantity: 10_000 * (1 + i % 5),
            quote_quantity: 0,
            reserve_price: 0,
        }),
    }
}

/// The `seq`-th command (from 1) of a journal: the setup, then [`command`].
pub fn journal_command(seq: u64) -> Command {
    let s = setup();
    if (seq as usize) <= s.len() {
        s[seq as usize - 1]
    } else {
        command(seq)
    }
}

/// The timestamp the tests stamp on `seq`.
pub fn ts(seq: u64) -> u64 {
    1_700_000_000_000_000_000 + seq * 1_000
}
