//! Events: everything the engine tells the world.
//!
//! Applying one command appends zero or more events to the caller's buffer, in the order
//! things happened. Every command yields at least one event: its effect, or a
//! [`Event::Rejected`] that says precisely why nothing changed. A rejected command never
//! changes state.
//!
//! Prices in events are price units and quantities base atoms, like commands; amounts are
//! atoms of the named asset. Balance events carry the new absolute balance, so a consumer
//! can apply them idempotently.
//!
//! Book changes are order-by-order ([`Event::Book`]); each also carries the total quantity
//! and order count of its price level after the change, so the same stream drives both an
//! order-by-order feed and a price-level feed. Every book change takes the next number of
//! its market's `book_seq`, starting at 1, with no gaps.
//!
//! Order events are self-sufficient for per-account execution reports: `Accepted`, `Trade`,
//! `Amended` and `OrderDone` name the account and client order id of every order they are
//! about, and `Trade` gives what each side still has open, so a consumer replaying the
//! event stream needs no other state.

use serde::{Deserialize, Serialize};

use crate::command::CommandKind;
use crate::types::*;

/// Why a command was refused. Codes are stable and appear on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u16)]
pub enum RejectReason {
    /// The asset id is not listed.
    UnknownAsset = 1,
    /// The asset id is already listed.
    AssetExists = 2,
    /// The market id is not listed.
    UnknownMarket = 3,
    /// The market id is already listed.
    MarketExists = 4,
    /// The market's tick, lot and decimals do not give a whole number of quote atoms per
    /// tick and lot, or a size is zero, or base equals quote, or decimals exceed 18.
    InvalidMarketSpec = 5,
    /// The account id is unknown.
    UnknownAccount = 6,
    /// The account id is taken.
    AccountExists = 7,
    /// The account is frozen.
    AccountFrozen = 8,
    /// The fee account cannot trade or be created.
    ReservedAccount = 9,
    /// The market is halted: cancels only.
    MarketHalted = 10,
    /// The market is delisted.
    MarketDelisted = 11,
    /// A quantity or amount is zero.
    ZeroQuantity = 12,
    /// A limit price is zero.
    ZeroPrice = 13,
    /// The price is not a multiple of the tick size.
    PriceOffTick = 14,
    /// The quantity is not a multiple of the lot size.
    QuantityOffLot = 15,
    /// The order's quote value is below the market's minimum.
    BelowMinNotional = 16,
    /// A value is too large to be represented.
    Overflow = 17,
    /// The free balance does not cover the amount to hold or withdraw.
    InsufficientBalance = 18,
    /// A post-only order would have taken liquidity.
    PostOnlyWouldTake = 19,
    /// The client order id is already used by one of the account's open orders.
    DuplicateClientOrderId = 20,
    /// No open order of this account has that id.
    OrderNotFound = 21,
    /// The combination of fields is not a valid order (e.g. a FOK market order, a quote
    /// quantity on a sell, post-only with IOC, a reserve price on a sell).
    InvalidOrder = 22,
    /// An amend would move a buy above its reserve price.
    PriceAboveReserve = 23,
    /// An amend changes nothing.
    AmendNoChange = 24,
    /// The fee tier is not defined.
    UnknownFeeTier = 25,
    /// A fee rate is above 10,000 bps.
    InvalidFee = 26,
    /// The market status change is not allowed (e.g. from delisted).
    InvalidStatusTransition = 27,
    /// Asset decimals above 18.
    InvalidDecimals = 28,
    /// The account already has [`MAX_OPEN_ORDERS_PER_ACCOUNT`](crate::MAX_OPEN_ORDERS_PER_ACCOUNT)
    /// open orders and the new order could rest (a GTC limit order, whether or not it would
    /// trade first). IOC, FOK and market orders, amends and cancels are not affected.
    TooManyOpenOrders = 29,
}

impl RejectReason {
    /// Every reason, in code order (codes 1, 2, 3, …).
    pub const ALL: [RejectReason; 29] = [
        RejectReason::UnknownAsset,
        RejectReason::AssetExists,
        RejectReason::UnknownMarket,
        RejectReason::MarketExists,
        RejectReason::InvalidMarketSpec,
        RejectReason::UnknownAccount,
        RejectReason::AccountExists,
        RejectReason::AccountFrozen,
        RejectReason::ReservedAccount,
        RejectReason::MarketHalted,
        RejectReason::MarketDelisted,
        RejectReason::ZeroQuantity,
        RejectReason::ZeroPrice,
        RejectReason::PriceOffTick,
        RejectReason::QuantityOffLot,
        RejectReason::BelowMinNotional,
        RejectReason::Overflow,
        RejectReason::InsufficientBalance,
        RejectReason::PostOnlyWouldTake,
        RejectReason::DuplicateClientOrderId,
        RejectReason::OrderNotFound,
        RejectReason::InvalidOrder,
        RejectReason::PriceAboveReserve,
        RejectReason::AmendNoChange,
        RejectReason::UnknownFeeTier,
        RejectReason::InvalidFee,
        RejectReason::InvalidStatusTransition,
        RejectReason::InvalidDecimals,
        RejectReason::TooManyOpenOrders,
    ];

    /// The stable numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// Why an order left the book (or never rested).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneReason {
    /// Completely filled.
    Filled,
    /// Cancelled by its owner (cancel or cancel-all).
    Cancelled,
    /// IOC or market remainder that found nothing more to trade.
    Expired,
    /// FOK that could not fill completely; it did not trade at all.
    FokUnfilled,
    /// Removed by self-trade prevention.
    SelfTrade,
    /// A market order reached its protection price with quantity left.
    ProtectionLimit,
    /// A market buy ran out of quote amount or balance before its quantity.
    BudgetExhausted,
    /// Cancelled because the market was delisted.
    Delisted,
}

/// What happened to an order in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookAction {
    /// The order now rests at the back of its level.
    Add,
    /// Its quantity went down without a trade (amend, self-trade decrement); priority kept.
    Reduce,
    /// Part or all of it traded.
    Fill,
    /// It left the book without trading (cancel, expiry, self-trade, delisting, or the
    /// first half of an amend that loses priority).
    Remove,
}

/// Something the engine did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A command was refused; nothing changed.
    Rejected {
        /// The command's kind.
        command: CommandKind,
        /// The account it named, if any (0 otherwise).
        account: AccountId,
        /// The order it named or would have created (0 if none).
        order_id: OrderId,
        /// The client order id it named (0 if none).
        client_order_id: ClientOrderId,
        /// Why.
        reason: RejectReason,
    },
    /// An asset was listed.
    AssetListed {
        /// Id.
        asset: AssetId,
        /// Decimals.
        decimals: u8,
    },
    /// A market was listed.
    MarketListed {
        /// Id.
        market: MarketId,
        /// Base asset.
        base: AssetId,
        /// Quote asset.
        quote: AssetId,
        /// Quote atoms per tick per lot.
        tick_value: u64,
    },
    /// A market changed status (on delisting, after its orders were cancelled).
    MarketStatusChanged {
        /// Which.
        market: MarketId,
        /// New status.
        status: MarketStatus,
        /// The market's book sequence number at this point.
        book_seq: u64,
    },
    /// A fee tier was set.
    FeeTierSet {
        /// Tier.
        tier: u8,
        /// Maker bps.
        maker_bps: u32,
        /// Taker bps.
        taker_bps: u32,
    },
    /// An account was opened.
    AccountCreated {
        /// Id.
        account: AccountId,
        /// Fee tier.
        fee_tier: u8,
    },
    /// An account's fee tier changed.
    AccountFeeTierSet {
        /// Id.
        account: AccountId,
        /// Tier.
        fee_tier: u8,
    },
    /// An account's status changed.
    AccountStatusChanged {
        /// Id.
        account: AccountId,
        /// New status.
        status: AccountStatus,
    },
    /// Funds came in.
    Deposited {
        /// Account.
        account: AccountId,
        /// Asset.
        asset: AssetId,
        /// Atoms.
        amount: u64,
    },
    /// Funds went out.
    Withdrawn {
        /// Account.
        account: AccountId,
        /// Asset.
        asset: AssetId,
        /// Atoms.
        amount: u64,
    },
    /// An account's balance in one asset changed; the new values.
    Balance {
        /// Account.
        account: AccountId,
        /// Asset.
        asset: AssetId,
        /// Available to trade or withdraw.
        free: u64,
        /// Held for open orders.
        held: u64,
    },
    /// An order passed every check and was given an id. Trades, a book add and/or a done
    /// event follow.
    Accepted {
        /// The new order id.
        order_id: OrderId,
        /// Owner.
        account: AccountId,
        /// Market.
        market: MarketId,
        /// Client id.
        client_order_id: ClientOrderId,
        /// Side.
        side: Side,
        /// Type.
        order_type: OrderType,
        /// Time in force.
        time_in_force: TimeInForce,
        /// Post-only, as asked.
        post_only: bool,
        /// Self-trade prevention mode, as asked.
        stp: StpMode,
        /// Limit (or protection) price; 0 for none.
        price: u64,
        /// Base quantity (0 for a market buy by quote amount).
        quantity: u64,
        /// Quote amount for a market buy by quote amount.
        quote_quantity: u64,
        /// Reserve price of a limit buy, as asked; 0 for none (the hold is then computed at
        /// the limit price).
        reserve_price: u64,
    },
    /// Two orders traded.
    Trade {
        /// Market.
        market: MarketId,
        /// Trade id.
        trade_id: TradeId,
        /// Price (the resting order's).
        price: u64,
        /// Base quantity.
        quantity: u64,
        /// Quote value, `price * quantity` in quote atoms.
        quote_quantity: u64,
        /// The incoming order's side.
        aggressor: Side,
        /// Resting order.
        maker_order_id: OrderId,
        /// Incoming order.
        taker_order_id: OrderId,
        /// Resting order's owner.
        maker_account: AccountId,
        /// Incoming order's owner.
        taker_account: AccountId,
        /// Resting order's client id (0 if none).
        maker_client_order_id: ClientOrderId,
        /// Incoming order's client id (0 if none).
        taker_client_order_id: ClientOrderId,
        /// Maker's fee in quote atoms.
        maker_fee: u64,
        /// Taker's fee in quote atoms.
        taker_fee: u64,
        /// Base quantity the resting order still has open after this fill (0: it is done,
        /// and its `OrderDone` follows).
        maker_leaves_quantity: u64,
        /// Base quantity the incoming order still has open after this fill (0: it is done,
        /// and its `OrderDone` follows). A market buy by quote amount has no base quantity
        /// and always reports 0, done or not: such an order's end is always its `OrderDone`.
        taker_leaves_quantity: u64,
    },
    /// An open order changed price or quantity by amend.
    Amended {
        /// Order.
        order_id: OrderId,
        /// Owner.
        account: AccountId,
        /// Market.
        market: MarketId,
        /// Client id.
        client_order_id: ClientOrderId,
        /// New price.
        price: u64,
        /// New remaining quantity.
        leaves_quantity: u64,
        /// Whether it kept its place in the queue.
        kept_priority: bool,
    },
    /// An order is finished: it will never trade again.
    OrderDone {
        /// Order.
        order_id: OrderId,
        /// Owner.
        account: AccountId,
        /// Market.
        market: MarketId,
        /// Client id.
        client_order_id: ClientOrderId,
        /// Why.
        reason: DoneReason,
        /// Base quantity traded over its life.
        filled_quantity: u64,
        /// Quantity that will never trade: what was still open (0 when filled), plus any
        /// quantity self-trade prevention removed earlier by decrement. Filled plus cancelled
        /// is the order's quantity (as last set by amend).
        cancelled_quantity: u64,
    },
    /// A cancel-all finished.
    MassCancelled {
        /// Owner.
        account: AccountId,
        /// Market, if the cancel was limited to one.
        market: Option<MarketId>,
        /// Side, if the cancel was limited to one.
        side: Option<Side>,
        /// How many orders were cancelled.
        count: u32,
    },
    /// An order-by-order change to a book, with the level's totals after it.
    Book {
        /// Market.
        market: MarketId,
        /// The market's book sequence number for this change.
        book_seq: u64,
        /// What happened.
        action: BookAction,
        /// Order.
        order_id: OrderId,
        /// Side of the order.
        side: Side,
        /// Price level.
        price: u64,
        /// The order's quantity in the book after the change (0 when it left).
        order_quantity: u64,
        /// Change in the order's quantity (base atoms, always positive).
        delta: u64,
        /// Total quantity at this level after the change.
        level_quantity: u64,
        /// Number of orders at this level after the change.
        level_orders: u32,
    },
}
