//! Identifiers and small value types shared by commands, events and the book.
//!
//! Units. Every amount is an integer:
//! * an asset amount is in *atoms*, `10^-decimals` of one whole unit of the asset;
//! * an order quantity is in base atoms and must be a whole number of the market's lots;
//! * a price is in *price units*, `10^-price_decimals` of one quote unit per whole base unit,
//!   and must be a whole number of the market's ticks.
//!
//! Inside the book prices are held as ticks and quantities as lots, so that the quote
//! value of a fill is the exact integer `ticks * lots * tick_value` (see
//! [`crate::risk::tick_value`]).

use serde::{Deserialize, Serialize};

/// An asset (currency or token), chosen by whoever lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AssetId(pub u32);

/// A market (a base/quote pair), chosen by whoever lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MarketId(pub u32);

/// An account, chosen by the control plane. [`FEE_ACCOUNT`] is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub u64);

/// The account that receives every fee. It exists from the start and cannot trade.
pub const FEE_ACCOUNT: AccountId = AccountId(0);

/// An order id, assigned by the engine: 1, 2, 3, … in command order across all markets.
pub type OrderId = u64;
/// A client's own id for an order; unique among the account's open orders. 0 means none.
pub type ClientOrderId = u64;
/// A trade id, assigned by the engine: 1, 2, 3, … across all markets.
pub type TradeId = u64;

/// Which side of the book an order is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A bid: buys base, pays quote.
    Buy,
    /// An ask: sells base, receives quote.
    Sell,
}

impl Side {
    /// The other side.
    #[inline]
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// Limit or market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// Trades at the limit price or better; may rest (GTC).
    Limit,
    /// Trades against the book now, never rests. Optional protection price bounds how far it walks.
    Market,
}

/// How long an order may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancelled: the remainder rests on the book.
    Gtc,
    /// Immediate or cancel: trade what can be traded now, expire the rest.
    Ioc,
    /// Fill or kill: trade the whole quantity now, or nothing at all.
    Fok,
}

/// What to do when an order would trade against an order of the same account.
/// The taker's mode decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StpMode {
    /// Allow the self-trade.
    None,
    /// Expire the rest of the incoming order.
    ExpireTaker,
    /// Cancel the resting order and keep matching.
    ExpireMaker,
    /// Cancel the resting order and expire the incoming one.
    ExpireBoth,
    /// Reduce both orders by the smaller remaining quantity without a trade; an order that
    /// reaches zero is done with reason self-trade, the other goes on.
    Decrement,
}

/// Trading status of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketStatus {
    /// Orders are accepted and matched.
    Trading,
    /// Only cancels are accepted; resting orders stay.
    Halted,
    /// Closed for good: every resting order was cancelled and nothing is accepted.
    Delisted,
}

/// Whether an account may place orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Normal.
    Active,
    /// Cancels and deposits only: no new orders, amends or withdrawals.
    Frozen,
}

/// Basis points in a whole: a fee of `bps` takes `notional * bps / 10_000`, rounded down.
pub const BPS_DENOMINATOR: u64 = 10_000;
