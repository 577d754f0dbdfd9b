//! The engine: assets, markets, accounts, books and the rules that change them.
//!
//! [`Engine::apply`] takes one [`Command`] and appends its [`Event`]s. It reads no clock,
//! no randomness and never iterates a hash map, so the same commands always give the same
//! events and the same [`Engine::state_hash`].
//!
//! Every handler validates fully before it changes anything: a command either passes every
//! check and takes effect, or is answered by one `Rejected` event and changes nothing.
//!
//! Money (see `crate::risk` for the hold formulas)
//! * Per account and asset there is a free and a held balance, both `u64` atoms.
//! * A resting buy holds `hold(leaves, hold_price)` quote; a resting sell holds its base.
//! * Fees are charged in quote, in basis points of each fill's quote value, rounded down;
//!   they go to the fee account ([`FEE_ACCOUNT`]).
//! * Conservation: for each asset, the sum over all accounts (the fee account included) of
//!   free + held equals deposits − withdrawals. The total of an asset is capped at
//!   `u64::MAX`, so no balance can overflow.
//!
//! Open orders per account
//! * An account has at most [`MAX_OPEN_ORDERS_PER_ACCOUNT`] open (resting) orders, across all
//!   markets. A new order that could rest (a GTC limit order, post-only or not, whether or not
//!   it would trade first) is rejected with [`RejectReason::TooManyOpenOrders`] when its
//!   account already has that many, before it matches. IOC, FOK and market orders never rest,
//!   so they are not counted against the limit; an amend never adds an order, and cancels only
//!   remove them.
//! * Precedence: the check comes after every check of the order itself (shape, tick and lot,
//!   size and overflow, minimum notional, duplicate client order id, post-only) and before
//!   funds (`InsufficientBalance`).
//!
//! Costs: placing, cancelling and amending are O(1) plus the ladder work described in
//! [`crate::book`] and O(1) per fill; a cancel-all is O(orders of the account).

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::book::{Book, Ladder, LevelPool, OrderPool, OrderSlot, Slot, NIL};
use crate::command::{Command, NewOrder, OrderRef};
use crate::event::{BookAction, DoneReason, Event, RejectReason};
use crate::index::OrderIdIndex;
use crate::risk;
use crate::types::*;

mod snapshot;
pub use snapshot::{
    AccountState, AssetState, MarketState, OrderState, Snapshot, SnapshotError, SNAPSHOT_VERSION,
};

/// The most open (resting) orders one account may have, across all markets.
///
/// Why: the binary gateway numbers an account's messages `node_seq << 16 | index`, where
/// `index` counts the messages one command produced for that account, so no command may
/// produce more than 65,536 messages for one account. The largest fan-outs are bounded by the
/// account's open orders: a cancel-all (one `OrderCancelled` per order and a
/// `MassCancelReport`), a delisting (one `OrderCancelled` per order), and an order (or a
/// crossing amend) sweeping resting orders of its own account with self-trade prevention off
/// (two `OrderExecuted` per trade, plus its acceptance and end). With this limit the worst is
/// 2 × 32,000 + a few < 65,536.
///
/// A compile-time constant, not configuration: replaying a journal must give the same events
/// on every run, so the rule cannot depend on a runtime setting. Changing it changes which
/// commands are rejected, so a journal written under one value replays exactly only under it.
pub const MAX_OPEN_ORDERS_PER_ACCOUNT: usize = 32_000;

/// Sizes to preallocate. Exceeding them is allowed; it only costs an allocation.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Orders the pool holds before it grows.
    pub order_capacity: usize,
    /// Price levels per book side before a side grows.
    pub levels_per_side: usize,
}

impl EngineConfig {
    /// The most orders that may be preallocated (about 100 bytes each).
    pub const MAX_ORDER_CAPACITY: usize = 1 << 26;
    /// The most levels per book side that may be preallocated.
    pub const MAX_LEVELS_PER_SIDE: usize = 1 << 20;

    /// Refuse sizes that would exhaust memory or overflow when preallocated.
    pub fn validate(&self) -> Result<(), String> {
        if self.order_capacity > Self::MAX_ORDER_CAPACITY {
            return Err(format!(
                "order_capacity {} is above the maximum {}",
                self.order_capacity,
                Self::MAX_ORDER_CAPACITY
            ));
        }
        if self.levels_per_side > Self::MAX_LEVELS_PER_SIDE {
            return Err(format!(
                "levels_per_side {} is above the maximum {}",
                self.levels_per_side,
                Self::MAX_LEVELS_PER_SIDE
            ));
        }
        Ok(())
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { order_capacity: 1 << 16, levels_per_side: 1024 }
    }
}

/// One account's balance in one asset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Available.
    pub free: u64,
    /// Held for open orders.
    pub held: u64,
}

/// An open order, as the outside world sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OrderView {
    /// Engine id.
    pub order_id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Market.
    pub market: MarketId,
    /// Client id.
    pub client_order_id: ClientOrderId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: u64,
    /// Quantity: filled plus open.
    pub quantity: u64,
    /// Open quantity.
    pub leaves_quantity: u64,
    /// Traded quantity.
    pub filled_quantity: u64,
    /// Hold ceiling set by the client for a buy, or 0.
    pub reserve_price: u64,
    /// Post-only.
    pub post_only: bool,
    /// Self-trade prevention mode.
    pub stp: StpMode,
}

/// A price level, as the outside world sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LevelView {
    /// Price.
    pub price: u64,
    /// Total open quantity.
    pub quantity: u64,
    /// Number of orders.
    pub orders: u32,
}

/// A market's specification and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MarketView {
    /// Id.
    pub market: MarketId,
    /// Base asset.
    pub base: AssetId,
    /// Quote asset.
    pub quote: AssetId,
    /// Price decimals.
    pub price_decimals: u8,
    /// Tick size (price units).
    pub tick_size: u64,
    /// Lot size (base atoms).
    pub lot_size: u64,
    /// Minimum quote value.
    pub min_notional: u64,
    /// Quote atoms per tick per lot.
    pub tick_value: u64,
    /// Status.
    pub status: MarketStatus,
    /// Number of book changes so far.
    pub book_seq: u64,
}

#[derive(Clone, Debug)]
struct Asset {
    id: AssetId,
    decimals: u8,
    deposited: u128,
    withdrawn: u128,
}

#[derive(Clone, Debug)]
struct Market {
    id: MarketId,
    base: u32,
    quote: u32,
    price_decimals: u8,
    tick_size: u64,
    lot_size: u64,
    tick_value: u64,
    min_notional: u64,
    status: MarketStatus,
    book_seq: u64,
    book: Book,
}

#[derive(Clone, Debug)]
struct Account {
    id: AccountId,
    status: AccountStatus,
    fee_tier: u8,
    balances: Vec<Balance>,
    /// Per asset: the number of the last command that changed this balance (not state:
    /// bookkeeping for reporting each changed balance once per command, in O(1)).
    touched_by: Vec<u64>,
    orders_head: Slot,
    orders_tail: Slot,
    /// Length of the list from `orders_head`: the account's open orders (at most
    /// [`MAX_OPEN_ORDERS_PER_ACCOUNT`]). Derived, so neither hashed nor in snapshots.
    open_orders: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FeeTier {
    maker_bps: u32,
    taker_bps: u32,
}

/// A refusal on its way to becoming a `Rejected` event.
struct Reject {
    reason: RejectReason,
    order_id: OrderId,
}

impl From<RejectReason> for Reject {
    fn from(reason: RejectReason) -> Self {
        Reject { reason, order_id: 0 }
    }
}

type Outcome = Result<(), Reject>;

/// How an incoming buy pays for its fills.
#[derive(Clone, Copy, Debug)]
enum Funding {
    /// The quote hold always equals `risk::buy_hold(leaves, hold_price)` (limit buys, and
    /// market buys by quantity with a protection price), or the base hold equals the
    /// leaves (sells).
    Tracked,
    /// A market buy spends from a held budget; `notional_cap` limits quote value
    /// (a buy by quote amount).
    Budget { remaining: u64, notional_cap: Option<u64> },
}

/// Why the matching loop stopped before the incoming order was complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Complete,
    NoLiquidity,
    LimitReached,
    BudgetExhausted,
    SelfTrade,
}

/// What happens to an incoming order when matching stops.
#[derive(Clone, Copy, Debug)]
struct Finish {
    /// A GTC limit order: the remainder rests.
    rests: bool,
    /// A market order (a limit reached is its protection price).
    is_market: bool,
    /// A market buy by quote amount.
    by_quote: bool,
    /// Already indexed and in its account's list (an amended order); a new order is
    /// registered only if it rests.
    registered: bool,
}

/// The matching engine. See the module docs.
#[derive(Clone, Debug)]
pub struct Engine {
    assets: Vec<Asset>,
    asset_index: FxHashMap<u32, u32>,
    markets: Vec<Market>,
    market_index: FxHashMap<u32, u32>,
    accounts: Vec<Account>,
    account_index: FxHashMap<u64, u32>,
    fee_tiers: Vec<Option<FeeTier>>,
    orders: OrderPool,
    levels: LevelPool,
    order_index: OrderIdIndex,
    client_index: FxHashMap<(u32, ClientOrderId), Slot>,
    next_order_id: OrderId,
    next_trade_id: TradeId,
    levels_per_side: usize,
    /// Scratch: (account, asset) balances changed by the current command, first-touch order.
    touched: Vec<(u32, u32)>,
    /// Commands applied by this instance, numbering `Account::touched_by` (from 1).
    command_no: u64,
}

const FEE_ACCOUNT_INDEX: u32 = 0;
/// Leaves of an incoming market buy by quote amount: unbounded, the budget decides.
const UNBOUNDED: u64 = u64::MAX;

/// Whether `lots` more on a book side already holding `side_lots` keep every base quantity
/// on it (level totals, order quantities) within `u64` atoms.
#[inline]
fn fits_on_side(side_lots: u64, lots: u64, lot_size: u64) -> bool {
    (u128::from(side_lots) + u128::from(lots)) * u128::from(lot_size) <= u128::from(u64::MAX)
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

impl Engine {
    /// An engine with no assets or markets, the fee account, and fee tier 0 (no fees).
    pub fn new(config: EngineConfig) -> Self {
        let mut fee_tiers = vec![None; 256];
        fee_tiers[0] = Some(FeeTier { maker_bps: 0, taker_bps: 0 });
        let mut account_index = FxHashMap::default();
        account_index.insert(FEE_ACCOUNT.0, FEE_ACCOUNT_INDEX);
        let order_index = OrderIdIndex::with_capacity(config.order_capacity);
        let mut client_index = FxHashMap::default();
        client_index.reserve(config.order_capacity);
        Engine {
            assets: Vec::new(),
            asset_index: FxHashMap::default(),
            markets: Vec::new(),
            market_index: FxHashMap::default(),
            accounts: vec![Account {
                id: FEE_ACCOUNT,
                status: AccountStatus::Active,
                fee_tier: 0,
                balances: Vec::new(),
                touched_by: Vec::new(),
                orders_head: NIL,
                orders_tail: NIL,
                open_orders: 0,
            }],
            account_index,
            fee_tiers,
            orders: OrderPool::with_capacity(config.order_capacity),
            levels: LevelPool::with_capacity(config.levels_per_side.saturating_mul(4)),
            order_index,
            client_index,
            next_order_id: 1,
            next_trade_id: 1,
            levels_per_side: config.levels_per_side,
            touched: Vec::with_capacity(64),
            command_no: 0,
        }
    }

    /// Apply one command, appending its events to `out`.
    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        self.command_no += 1;
        let result = match *cmd {
            Command::ListAsset { asset, decimals } => self.list_asset(asset, decimals, out),
            Command::ListMarket {
                market,
                base,
                quote,
                price_decimals,
                tick_size,
                lot_size,
                min_notional,
            } => self.list_market(
                market,
                base,
                quote,
                price_decimals,
                tick_size,
                lot_size,
                min_notional,
                out,
            ),
            Command::SetMarketStatus { market, status } => {
                self.set_market_status(market, status, out)
            }
            Command::SetFeeTier { tier, maker_bps, taker_bps } => {
                self.set_fee_tier(tier, maker_bps, taker_bps, out)
            }
            Command::CreateAccount { account, fee_tier } => {
                self.create_account(account, fee_tier, out)
            }
            Command::SetAccountFeeTier { account, fee_tier } => {
                self.set_account_fee_tier(account, fee_tier, out)
            }
            Command::SetAccountStatus { account, status } => {
                self.set_account_status(account, status, out)
            }
            Command::Deposit { account, asset, amount } => {
                self.deposit(account, asset, amount, out)
            }
            Command::Withdraw { account, asset, amount } => {
                self.withdraw(account, asset, amount, out)
            }
            Command::PlaceOrder(ref order) => self.place(order, out),
            Command::CancelOrder { account, order } => self.cancel(account, order, out),
            Command::CancelAll { account, market, side } => {
                self.cancel_all(account, market, side, out)
            }
            Command::AmendOrder { account, order, new_price, new_quantity } => {
                self.amend(account, order, new_price, new_quantity, out)
            }
        };
        match result {
            Ok(()) => self.flush_balances(out),
            Err(reject) => {
                debug_assert!(self.touched.is_empty(), "a rejected command changed balances");
                let (account, client_order_id) = match *cmd {
                    Command::PlaceOrder(ref o) => (o.account, o.client_order_id),
                    Command::CancelOrder { account, order: OrderRef::Client(c) }
                    | Command::AmendOrder { account, order: OrderRef::Client(c), .. } => {
                        (account, c)
                    }
                    Command::CreateAccount { account, .. }
                    | Command::SetAccountFeeTier { account, .. }
                    | Command::SetAccountStatus { account, .. }
                    | Command::Deposit { account, .. }
                    | Command::Withdraw { account, .. }
                    | Command::CancelOrder { account, .. }
                    | Command::CancelAll { account, .. }
                    | Command::AmendOrder { account, .. } => (account, 0),
                    _ => (AccountId(0), 0),
                };
                let order_id = match *cmd {
                    Command::CancelOrder { order: OrderRef::Id(id), .. }
                    | Command::AmendOrder { order: OrderRef::Id(id), .. } => id,
                    _ => reject.order_id,
                };
                out.push(Event::Rejected {
                    command: cmd.kind(),
                    account,
                    order_id,
                    client_order_id,
                    reason: reject.reason,
                });
            }
        }
    }

    // ----- lookups -------------------------------------------------------------------

    fn asset_idx(&self, asset: AssetId) -> Result<u32, Reject> {
        self.asset_index.get(&asset.0).copied().ok_or(RejectReason::UnknownAsset.into())
    }

    fn market_idx(&self, market: MarketId) -> Result<u32, Reject> {
        self.market_index.get(&market.0).copied().ok_or(RejectReason::UnknownMarket.into())
    }

    fn account_idx(&self, account: AccountId) -> Result<u32, Reject> {
        self.account_index.get(&account.0).copied().ok_or(RejectReason::UnknownAccount.into())
    }

    /// A trading account: known, not the fee account.
    fn trader_idx(&self, account: AccountId) -> Result<u32, Reject> {
        if account == FEE_ACCOUNT {
            return Err(RejectReason::ReservedAccount.into());
        }
        self.account_idx(account)
    }

    fn find_order(&self, ai: u32, order: OrderRef) -> Result<Slot, Reject> {
        let slot = match order {
            OrderRef::Id(id) => self.order_index.get(id),
            OrderRef::Client(0) => None,
            OrderRef::Client(c) => self.client_index.get(&(ai, c)).copied(),
        };
        match slot {
            Some(s) if self.orders[s].account == ai => Ok(s),
            _ => Err(RejectReason::OrderNotFound.into()),
        }
    }

    // ----- balances ------------------------------------------------------------------

    #[inline]
    fn bal(&mut self, ai: u32, asset: u32) -> &mut Balance {
        let stamp = &mut self.accounts[ai as usize].touched_by[asset as usize];
        if *stamp != self.command_no {
            *stamp = self.command_no;
            self.touched.push((ai, asset));
        }
        &mut self.accounts[ai as usize].balances[asset as usize]
    }

    #[inline]
    fn free_of(&self, ai: u32, asset: u32) -> u64 {
        self.accounts[ai as usize].balances[asset as usize].free
    }

    /// Move `amount` from free to held.
    #[inline]
    fn hold(&mut self, ai: u32, asset: u32, amount: u64) {
        let b = self.bal(ai, asset);
        debug_assert!(b.free >= amount);
        b.free -= amount;
        b.held += amount;
    }

    /// Move `amount` from held to free.
    #[inline]
    fn release(&mut self, ai: u32, asset: u32, amount: u64) {
        let b = self.bal(ai, asset);
        debug_assert!(b.held >= amount);
        b.held -= amount;
        b.free += amount;
    }

    fn flush_balances(&mut self, out: &mut Vec<Event>) {
        for &(ai, asset) in &self.touched {
            let a = &self.accounts[ai as usize];
            let b = a.balances[asset as usize];
            out.push(Event::Balance {
                account: a.id,
                asset: self.assets[asset as usize].id,
                free: b.free,
                held: b.held,
            });
        }
        self.touched.clear();
    }

    // ----- reference data ------------------------------------------------------------

    fn list_asset(&mut self, asset: AssetId, decimals: u8, out: &mut Vec<Event>) -> Outcome {
        if self.asset_index.contains_key(&asset.0) {
            return Err(RejectReason::AssetExists.into());
        }
        if decimals > 18 {
            return Err(RejectReason::InvalidDecimals.into());
        }
        let idx = self.assets.len() as u32;
        self.assets.push(Asset { id: asset, decimals, deposited: 0, withdrawn: 0 });
        self.asset_index.insert(asset.0, idx);
        for a in &mut self.accounts {
            a.balances.push(Balance::default());
            a.touched_by.push(0);
        }
        out.push(Event::AssetListed { asset, decimals });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn list_market(
        &mut self,
        market: MarketId,
        base: AssetId,
        quote: AssetId,
        price_decimals: u8,
        tick_size: u64,
        lot_size: u64,
        min_notional: u64,
        out: &mut Vec<Event>,
    ) -> Outcome {
        if self.market_index.contains_key(&market.0) {
            return Err(RejectReason::MarketExists.into());
        }
        let bi = self.asset_idx(base)?;
        let qi = self.asset_idx(quote)?;
        if bi == qi || price_decimals > 18 {
            return Err(RejectReason::InvalidMarketSpec.into());
        }
        let tick_value = risk::tick_value(
            tick_size,
            lot_size,
            self.assets[bi as usize].decimals,
            self.assets[qi as usize].decimals,
            price_decimals,
        )
        .ok_or(RejectReason::InvalidMarketSpec)?;
        let idx = self.markets.len() as u32;
        self.markets.push(Market {
            id: market,
            base: bi,
            quote: qi,
            price_decimals,
            tick_size,
            lot_size,
            tick_value,
            min_notional,
            status: MarketStatus::Trading,
            book_seq: 0,
            book: Book::new(self.levels_per_side),
        });
        self.market_index.insert(market.0, idx);
        out.push(Event::MarketListed { market, base, quote, tick_value });
        Ok(())
    }

    fn set_market_status(
        &mut self,
        market: MarketId,
        status: MarketStatus,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let mi = self.market_idx(market)?;
        let current = self.markets[mi as usize].status;
        if current == MarketStatus::Delisted || current == status {
            return Err(RejectReason::InvalidStatusTransition.into());
        }
        if status == MarketStatus::Delisted {
            for side in [Side::Buy, Side::Sell] {
                while let Some(level) = self.markets[mi as usize].book.side(side).best() {
                    let head = self.levels[level].head;
                    self.cancel_resting(head, DoneReason::Delisted, out);
                }
            }
        }
        let m = &mut self.markets[mi as usize];
        m.status = status;
        out.push(Event::MarketStatusChanged { market, status, book_seq: m.book_seq });
        Ok(())
    }

    fn set_fee_tier(
        &mut self,
        tier: u8,
        maker_bps: u32,
        taker_bps: u32,
        out: &mut Vec<Event>,
    ) -> Outcome {
        if u64::from(maker_bps) > BPS_DENOMINATOR || u64::from(taker_bps) > BPS_DENOMINATOR {
            return Err(RejectReason::InvalidFee.into());
        }
        self.fee_tiers[tier as usize] = Some(FeeTier { maker_bps, taker_bps });
        out.push(Event::FeeTierSet { tier, maker_bps, taker_bps });
        Ok(())
    }

    fn create_account(
        &mut self,
        account: AccountId,
        fee_tier: u8,
        out: &mut Vec<Event>,
    ) -> Outcome {
        if account == FEE_ACCOUNT {
            return Err(RejectReason::ReservedAccount.into());
        }
        if self.account_index.contains_key(&account.0) {
            return Err(RejectReason::AccountExists.into());
        }
        if self.fee_tiers[fee_tier as usize].is_none() {
            return Err(RejectReason::UnknownFeeTier.into());
        }
        let idx = self.accounts.len() as u32;
        self.accounts.push(Account {
            id: account,
            status: AccountStatus::Active,
            fee_tier,
            balances: vec![Balance::default(); self.assets.len()],
            touched_by: vec![0; self.assets.len()],
            orders_head: NIL,
            orders_tail: NIL,
            open_orders: 0,
        });
        self.account_index.insert(account.0, idx);
        out.push(Event::AccountCreated { account, fee_tier });
        Ok(())
    }

    fn set_account_fee_tier(
        &mut self,
        account: AccountId,
        fee_tier: u8,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let ai = self.trader_idx(account)?;
        if self.fee_tiers[fee_tier as usize].is_none() {
            return Err(RejectReason::UnknownFeeTier.into());
        }
        self.accounts[ai as usize].fee_tier = fee_tier;
        out.push(Event::AccountFeeTierSet { account, fee_tier });
        Ok(())
    }

    fn set_account_status(
        &mut self,
        account: AccountId,
        status: AccountStatus,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let ai = self.trader_idx(account)?;
        self.accounts[ai as usize].status = status;
        out.push(Event::AccountStatusChanged { account, status });
        Ok(())
    }

    // ----- funding -------------------------------------------------------------------

    /// The account and asset a deposit or withdrawal of `amount` names, checked.
    fn funding_target(
        &self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
    ) -> Result<(u32, u32), Reject> {
        let ai = self.account_idx(account)?;
        let si = self.asset_idx(asset)?;
        if amount == 0 {
            return Err(RejectReason::ZeroQuantity.into());
        }
        Ok((ai, si))
    }

    fn deposit(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let (ai, si) = self.funding_target(account, asset, amount)?;
        let a = &self.assets[si as usize];
        let outstanding = a.deposited - a.withdrawn;
        if outstanding + u128::from(amount) > u128::from(u64::MAX) {
            return Err(RejectReason::Overflow.into());
        }
        self.assets[si as usize].deposited += u128::from(amount);
        self.bal(ai, si).free += amount;
        out.push(Event::Deposited { account, asset, amount });
        Ok(())
    }

    fn withdraw(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: u64,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let (ai, si) = self.funding_target(account, asset, amount)?;
        if self.accounts[ai as usize].status == AccountStatus::Frozen {
            return Err(RejectReason::AccountFrozen.into());
        }
        if self.free_of(ai, si) < amount {
            return Err(RejectReason::InsufficientBalance.into());
        }
        self.assets[si as usize].withdrawn += u128::from(amount);
        self.bal(ai, si).free -= amount;
        out.push(Event::Withdrawn { account, asset, amount });
        Ok(())
    }

    // ----- orders --------------------------------------------------------------------

    fn check_tradable(&self, ai: u32, mi: u32) -> Outcome {
        if self.accounts[ai as usize].status == AccountStatus::Frozen {
            return Err(RejectReason::AccountFrozen.into());
        }
        match self.markets[mi as usize].status {
            MarketStatus::Trading => Ok(()),
            MarketStatus::Halted => Err(RejectReason::MarketHalted.into()),
            MarketStatus::Delisted => Err(RejectReason::MarketDelisted.into()),
        }
    }

    /// Whether an order at `price` ticks on `side` would trade against the opposite best.
    fn would_cross(&self, mi: u32, side: Side, price: u64) -> bool {
        let opposite = self.markets[mi as usize].book.side(side.opposite());
        opposite.best().is_some_and(|l| Ladder::crosses(side, price, self.levels[l].price))
    }

    fn place(&mut self, o: &NewOrder, out: &mut Vec<Event>) -> Outcome {
        let ai = self.trader_idx(o.account)?;
        let mi = self.market_idx(o.market)?;
        self.check_tradable(ai, mi)?;
        let is_market = o.order_type == OrderType::Market;
        // The shape of the order.
        if is_market {
            if o.post_only || o.reserve_price != 0 || o.time_in_force == TimeInForce::Fok {
                return Err(RejectReason::InvalidOrder.into());
            }
            if o.quantity == 0 && o.quote_quantity == 0 {
                return Err(RejectReason::ZeroQuantity.into());
            }
            if o.quantity != 0 && o.quote_quantity != 0 {
                return Err(RejectReason::InvalidOrder.into());
            }
            if o.quote_quantity != 0 && o.side == Side::Sell {
                return Err(RejectReason::InvalidOrder.into());
            }
        } else {
            if o.quote_quantity != 0 || (o.post_only && o.time_in_force != TimeInForce::Gtc) {
                return Err(RejectReason::InvalidOrder.into());
            }
            if o.price == 0 {
                return Err(RejectReason::ZeroPrice.into());
            }
            if o.quantity == 0 {
                return Err(RejectReason::ZeroQuantity.into());
            }
            if o.reserve_price != 0 && (o.side == Side::Sell || o.reserve_price < o.price) {
                return Err(RejectReason::InvalidOrder.into());
            }
        }
        let m = &self.markets[mi as usize];
        let (tick_size, lot_size, tv, quote, base) =
            (m.tick_size, m.lot_size, m.tick_value, m.quote, m.base);
        if o.price % tick_size != 0 || o.reserve_price % tick_size != 0 {
            return Err(RejectReason::PriceOffTick.into());
        }
        if o.quantity % lot_size != 0 {
            return Err(RejectReason::QuantityOffLot.into());
        }
        let ticks = o.price / tick_size;
        let lots = o.quantity / lot_size;
        let hold_ticks = if o.reserve_price != 0 { o.reserve_price / tick_size } else { ticks };
        let tier = self.fee_tiers[self.accounts[ai as usize].fee_tier as usize]
            .expect("an account's fee tier is always defined");
        let hold_bps = tier.maker_bps.max(tier.taker_bps);

        // Value, overflow and minimum size.
        if !is_market {
            let notional = risk::notional(lots, ticks, tv).ok_or(RejectReason::Overflow)?;
            if o.side == Side::Buy {
                risk::buy_hold(lots, hold_ticks, tv, hold_bps).ok_or(RejectReason::Overflow)?;
            }
            if o.time_in_force == TimeInForce::Gtc
                && !fits_on_side(m.book.side(o.side).total_lots(), lots, lot_size)
            {
                return Err(RejectReason::Overflow.into());
            }
            if notional < m.min_notional {
                return Err(RejectReason::BelowMinNotional.into());
            }
        } else if o.quote_quantity != 0 {
            if o.quote_quantity < m.min_notional {
                return Err(RejectReason::BelowMinNotional.into());
            }
            risk::with_fee(o.quote_quantity, hold_bps).ok_or(RejectReason::Overflow)?;
        } else if o.side == Side::Buy && ticks != 0 {
            risk::buy_hold(lots, ticks, tv, hold_bps).ok_or(RejectReason::Overflow)?;
        }
        if o.client_order_id != 0 && self.client_index.contains_key(&(ai, o.client_order_id)) {
            return Err(RejectReason::DuplicateClientOrderId.into());
        }
        if o.post_only && self.would_cross(mi, o.side, ticks) {
            return Err(RejectReason::PostOnlyWouldTake.into());
        }
        // An order that could rest needs room for one more open order of its account.
        let could_rest = !is_market && o.time_in_force == TimeInForce::Gtc;
        if could_rest
            && self.accounts[ai as usize].open_orders as usize >= MAX_OPEN_ORDERS_PER_ACCOUNT
        {
            return Err(RejectReason::TooManyOpenOrders.into());
        }

        // Funds.
        let (hold_asset, hold_amount, funding) = match (o.side, is_market) {
            (Side::Sell, _) => (base, lots * lot_size, Funding::Tracked),
            (Side::Buy, false) => (
                quote,
                risk::buy_hold(lots, hold_ticks, tv, hold_bps).unwrap_or(u64::MAX),
                Funding::Tracked,
            ),
            (Side::Buy, true) if o.quote_quantity != 0 => {
                let budget = risk::with_fee(o.quote_quantity, hold_bps).unwrap_or(u64::MAX);
                (
                    quote,
                    budget,
                    Funding::Budget { remaining: budget, notional_cap: Some(o.quote_quantity) },
                )
            }
            (Side::Buy, true) if ticks != 0 => (
                quote,
                risk::buy_hold(lots, ticks, tv, hold_bps).unwrap_or(u64::MAX),
                Funding::Tracked,
            ),
            (Side::Buy, true) => {
                let all = self.free_of(ai, quote);
                (quote, all, Funding::Budget { remaining: all, notional_cap: None })
            }
        };
        if hold_amount == 0 || self.free_of(ai, hold_asset) < hold_amount {
            return Err(RejectReason::InsufficientBalance.into());
        }
        let fok_ok = o.time_in_force != TimeInForce::Fok
            || self.fok_fillable(mi, ai, o.side, ticks, lots, o.stp);

        // Accepted: from here on the order exists.
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        out.push(Event::Accepted {
            order_id,
            account: o.account,
            market: o.market,
            client_order_id: o.client_order_id,
            side: o.side,
            order_type: o.order_type,
            time_in_force: if is_market { TimeInForce::Ioc } else { o.time_in_force },
            post_only: o.post_only,
            stp: o.stp,
            price: o.price,
            quantity: o.quantity,
            quote_quantity: o.quote_quantity,
            reserve_price: o.reserve_price,
        });
        if !fok_ok {
            out.push(Event::OrderDone {
                order_id,
                account: o.account,
                market: o.market,
                client_order_id: o.client_order_id,
                reason: DoneReason::FokUnfilled,
                filled_quantity: 0,
                cancelled_quantity: o.quantity,
            });
            return Ok(());
        }
        self.hold(ai, hold_asset, hold_amount);
        let slot = self.orders.alloc(OrderSlot {
            id: order_id,
            client_id: o.client_order_id,
            account: ai,
            market: mi,
            side: o.side,
            post_only: o.post_only,
            stp: o.stp,
            price: ticks,
            leaves: if o.quote_quantity != 0 { UNBOUNDED } else { lots },
            filled: 0,
            decremented: 0,
            hold_price: if is_market { ticks } else { hold_ticks },
            explicit_reserve: o.reserve_price != 0,
            maker_bps: tier.maker_bps,
            taker_bps: tier.taker_bps,
            level: NIL,
            prev: NIL,
            next: NIL,
            acct_prev: NIL,
            acct_next: NIL,
        });
        let limit = if ticks != 0 { Some(ticks) } else { None };
        let mut funding = funding;
        let stop = self.match_incoming(slot, limit, &mut funding, out);
        let finish = Finish {
            rests: could_rest,
            is_market,
            by_quote: o.quote_quantity != 0,
            registered: false,
        };
        self.finish_incoming(slot, stop, funding, finish, out);
        Ok(())
    }

    /// Whether a FOK order could fill completely now, taking self-trade prevention into
    /// account. O(orders within the limit price).
    fn fok_fillable(
        &self,
        mi: u32,
        ai: u32,
        side: Side,
        limit: u64,
        lots: u64,
        stp: StpMode,
    ) -> bool {
        let mut need = lots;
        let opposite = self.markets[mi as usize].book.side(side.opposite());
        for level in opposite.iter_best_first() {
            let lv = &self.levels[level];
            if !Ladder::crosses(side, limit, lv.price) {
                return false;
            }
            let mut s = lv.head;
            while s != NIL {
                let o = &self.orders[s];
                if o.account == ai && stp != StpMode::None {
                    if stp != StpMode::ExpireMaker {
                        return false;
                    }
                } else if o.leaves >= need {
                    return true;
                } else {
                    need -= o.leaves;
                }
                s = o.next;
            }
        }
        false
    }

    /// Match the incoming order in `slot` against the opposite side until it is complete,
    /// the book runs out, its limit is reached, its budget runs out or self-trade
    /// prevention stops it.
    fn match_incoming(
        &mut self,
        slot: Slot,
        limit: Option<u64>,
        funding: &mut Funding,
        out: &mut Vec<Event>,
    ) -> Stop {
        let (mi, side, ai, stp) = {
            let t = &self.orders[slot];
            (t.market, t.side, t.account, t.stp)
        };
        let tv = self.markets[mi as usize].tick_value;
        loop {
            let leaves = self.orders[slot].leaves;
            if leaves == 0 {
                return Stop::Complete;
            }
            if let Funding::Budget { notional_cap: Some(0), .. } = funding {
                return Stop::BudgetExhausted;
            }
            let Some(level) = self.markets[mi as usize].book.side(side.opposite()).best() else {
                return Stop::NoLiquidity;
            };
            let (price, maker) = {
                let lv = &self.levels[level];
                (lv.price, lv.head)
            };
            if let Some(limit) = limit {
                if !Ladder::crosses(side, limit, price) {
                    return Stop::LimitReached;
                }
            }
            let maker_leaves = self.orders[maker].leaves;
            if stp != StpMode::None && self.orders[maker].account == ai {
                match stp {
                    StpMode::ExpireTaker => return Stop::SelfTrade,
                    StpMode::ExpireMaker => {
                        self.cancel_resting(maker, DoneReason::SelfTrade, out);
                    }
                    StpMode::ExpireBoth => {
                        self.cancel_resting(maker, DoneReason::SelfTrade, out);
                        return Stop::SelfTrade;
                    }
                    StpMode::Decrement => {
                        let d = leaves.min(maker_leaves);
                        if d == maker_leaves {
                            self.cancel_resting(maker, DoneReason::SelfTrade, out);
                        } else {
                            self.orders[maker].decremented += d;
                            self.reduce_resting(maker, d, BookAction::Reduce, out);
                        }
                        if leaves != UNBOUNDED {
                            if matches!(funding, Funding::Tracked) {
                                self.release_lots(slot, d);
                            }
                            self.orders[slot].leaves -= d;
                            self.orders[slot].decremented += d;
                            if self.orders[slot].leaves == 0 {
                                return Stop::SelfTrade;
                            }
                        }
                    }
                    StpMode::None => unreachable!(),
                }
                continue;
            }
            let mut qty = leaves.min(maker_leaves);
            if let Funding::Budget { remaining, notional_cap } = *funding {
                let taker_bps = self.orders[slot].taker_bps;
                let lot_cost = price * tv;
                let mut afford = risk::affordable_lots(remaining, lot_cost, taker_bps);
                if let Some(cap) = notional_cap {
                    afford = afford.min(cap / lot_cost);
                }
                qty = qty.min(afford);
                if qty == 0 {
                    return Stop::BudgetExhausted;
                }
            }
            self.fill(slot, maker, qty, price, funding, out);
        }
    }

    /// Settle one fill of `qty` lots at `price` ticks between the incoming order and the
    /// head order of the opposite best level.
    fn fill(
        &mut self,
        taker: Slot,
        maker: Slot,
        qty: u64,
        price: u64,
        funding: &mut Funding,
        out: &mut Vec<Event>,
    ) {
        let t = self.orders[taker];
        let mk = self.orders[maker];
        let mi = t.market;
        let (tv, lot, base, quote, market_id) = {
            let m = &self.markets[mi as usize];
            (m.tick_value, m.lot_size, m.base, m.quote, m.id)
        };
        let notional = price * qty * tv;
        let base_amount = qty * lot;
        let maker_fee = risk::fee(notional, mk.maker_bps);
        let taker_fee = risk::fee(notional, t.taker_bps);
        let (buyer, seller, buyer_fee, seller_fee) = match t.side {
            Side::Buy => (t, mk, taker_fee, maker_fee),
            Side::Sell => (mk, t, maker_fee, taker_fee),
        };
        // Buyer pays quote value + fee, from its hold.
        let cost = notional + buyer_fee;
        let budget = match (t.side, funding) {
            (Side::Buy, Funding::Budget { remaining, notional_cap }) => {
                *remaining -= cost;
                if let Some(cap) = notional_cap {
                    *cap -= notional;
                }
                true
            }
            _ => false,
        };
        if budget {
            self.bal(buyer.account, quote).held -= cost;
        } else {
            let bps = buyer.hold_bps();
            let before = risk::buy_hold(buyer.leaves, buyer.hold_price, tv, bps).unwrap_or(0);
            let after = risk::buy_hold(buyer.leaves - qty, buyer.hold_price, tv, bps).unwrap_or(0);
            let released = before - after;
            debug_assert!(released >= cost);
            let b = self.bal(buyer.account, quote);
            b.held -= released;
            b.free += released - cost;
        }
        self.bal(buyer.account, base).free += base_amount;
        // Seller delivers base from its hold and receives quote value − fee.
        self.bal(seller.account, base).held -= base_amount;
        self.bal(seller.account, quote).free += notional - seller_fee;
        if maker_fee + taker_fee != 0 {
            self.bal(FEE_ACCOUNT_INDEX, quote).free += maker_fee + taker_fee;
        }

        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        let tick = self.markets[mi as usize].tick_size;
        // A market buy by quote amount has no base quantity to count down: it reports 0.
        let taker_leaves = if t.leaves == UNBOUNDED { 0 } else { (t.leaves - qty) * lot };
        out.push(Event::Trade {
            market: market_id,
            trade_id,
            price: price * tick,
            quantity: base_amount,
            quote_quantity: notional,
            aggressor: t.side,
            maker_order_id: mk.id,
            taker_order_id: t.id,
            maker_account: self.accounts[mk.account as usize].id,
            taker_account: self.accounts[t.account as usize].id,
            maker_client_order_id: mk.client_id,
            taker_client_order_id: t.client_id,
            maker_fee,
            taker_fee,
            maker_leaves_quantity: (mk.leaves - qty) * lot,
            taker_leaves_quantity: taker_leaves,
        });
        let to = &mut self.orders[taker];
        to.filled += qty;
        if to.leaves != UNBOUNDED {
            to.leaves -= qty;
        }
        self.orders[maker].filled += qty;
        if qty == mk.leaves {
            self.unbook(maker, BookAction::Fill, out);
            self.done(maker, DoneReason::Filled, out);
            self.retire(maker);
        } else {
            let book = &mut self.markets[mi as usize].book;
            let (level_total, level_count) =
                book.reduce(&mut self.orders, &mut self.levels, maker, qty);
            self.book_event(maker, BookAction::Fill, qty, level_total, level_count, out);
        }
    }

    /// After matching: rest the remainder of a GTC limit order, or finish the order and
    /// give back what it still holds.
    #[allow(clippy::too_many_arguments)]
    fn finish_incoming(
        &mut self,
        slot: Slot,
        stop: Stop,
        funding: Funding,
        finish: Finish,
        out: &mut Vec<Event>,
    ) {
        let o = self.orders[slot];
        let filled = stop == Stop::Complete && o.leaves == 0;
        if finish.rests && !filled && stop != Stop::SelfTrade {
            if !finish.registered {
                self.register(slot);
            }
            let book = &mut self.markets[o.market as usize].book;
            let level = book.insert(&mut self.orders, &mut self.levels, slot);
            let (total, count) = (self.levels[level].total, self.levels[level].count);
            self.book_event(slot, BookAction::Add, o.leaves, total, count, out);
            return;
        }
        // Whatever the order still holds goes back, even when it filled completely: a market
        // buy by quantity without protection holds all free quote and spends only part of it.
        match funding {
            Funding::Budget { remaining, .. } => {
                let quote = self.markets[o.market as usize].quote;
                if remaining != 0 {
                    self.release(o.account, quote, remaining);
                }
            }
            Funding::Tracked => self.release_lots(slot, o.leaves),
        }
        let reason = match stop {
            _ if filled => DoneReason::Filled,
            Stop::SelfTrade => DoneReason::SelfTrade,
            Stop::LimitReached if finish.is_market => DoneReason::ProtectionLimit,
            Stop::BudgetExhausted if finish.by_quote && o.filled > 0 => DoneReason::Filled,
            Stop::BudgetExhausted if !finish.by_quote => DoneReason::BudgetExhausted,
            _ => DoneReason::Expired,
        };
        self.done(slot, reason, out);
        if finish.registered {
            self.retire(slot);
        } else {
            self.orders.free(slot);
        }
    }

    /// Give back the hold for `lots` of an order's leaves (without changing the leaves).
    fn release_lots(&mut self, slot: Slot, lots: u64) {
        let o = self.orders[slot];
        if lots == 0 || o.leaves == UNBOUNDED {
            return;
        }
        let m = &self.markets[o.market as usize];
        let (tv, lot, base, quote) = (m.tick_value, m.lot_size, m.base, m.quote);
        match o.side {
            Side::Sell => self.release(o.account, base, lots * lot),
            Side::Buy => {
                let bps = o.hold_bps();
                let before = risk::buy_hold(o.leaves, o.hold_price, tv, bps).unwrap_or(0);
                let after = risk::buy_hold(o.leaves - lots, o.hold_price, tv, bps).unwrap_or(0);
                self.release(o.account, quote, before - after);
            }
        }
    }

    /// What an order with these leaves and hold price must hold, in its hold asset.
    fn required_hold(&self, o: &OrderSlot, leaves: u64, hold_price: u64) -> Option<u64> {
        let m = &self.markets[o.market as usize];
        match o.side {
            Side::Sell => leaves.checked_mul(m.lot_size),
            Side::Buy => risk::buy_hold(leaves, hold_price, m.tick_value, o.hold_bps()),
        }
    }

    /// Reduce a resting order by `lots` (< leaves) without a trade, keeping priority.
    fn reduce_resting(&mut self, slot: Slot, lots: u64, action: BookAction, out: &mut Vec<Event>) {
        self.release_lots(slot, lots);
        let book = &mut self.markets[self.orders[slot].market as usize].book;
        let (total, count) = book.reduce(&mut self.orders, &mut self.levels, slot, lots);
        self.book_event(slot, action, lots, total, count, out);
    }

    /// Take a resting order off the book, give back its hold and finish it.
    fn cancel_resting(&mut self, slot: Slot, reason: DoneReason, out: &mut Vec<Event>) {
        let leaves = self.orders[slot].leaves;
        self.unbook(slot, BookAction::Remove, out);
        self.release_lots(slot, leaves);
        self.done(slot, reason, out);
        self.retire(slot);
    }

    /// Unlink a resting order from its level and say so. Its leaves are left as they were
    /// (the caller decides what they mean).
    fn unbook(&mut self, slot: Slot, action: BookAction, out: &mut Vec<Event>) {
        let mi = self.orders[slot].market;
        let book = &mut self.markets[mi as usize].book;
        let (total, count) = book.remove(&mut self.orders, &mut self.levels, slot);
        let leaves = self.orders[slot].leaves;
        let o = &mut self.orders[slot];
        // The event reports the order as gone; keep the slot's leaves for the caller.
        let saved = o.leaves;
        o.leaves = 0;
        self.book_event(slot, action, leaves, total, count, out);
        self.orders[slot].leaves = saved;
    }

    fn book_event(
        &mut self,
        slot: Slot,
        action: BookAction,
        delta_lots: u64,
        level_total: u64,
        level_count: u32,
        out: &mut Vec<Event>,
    ) {
        let o = self.orders[slot];
        let m = &mut self.markets[o.market as usize];
        m.book_seq += 1;
        out.push(Event::Book {
            market: m.id,
            book_seq: m.book_seq,
            action,
            order_id: o.id,
            side: o.side,
            price: o.price * m.tick_size,
            order_quantity: o.leaves * m.lot_size,
            delta: delta_lots * m.lot_size,
            level_quantity: level_total * m.lot_size,
            level_orders: level_count,
        });
    }

    fn done(&mut self, slot: Slot, reason: DoneReason, out: &mut Vec<Event>) {
        let o = self.orders[slot];
        let m = &self.markets[o.market as usize];
        let open = if reason == DoneReason::Filled || o.leaves == UNBOUNDED { 0 } else { o.leaves };
        let cancelled = (open + o.decremented) * m.lot_size;
        out.push(Event::OrderDone {
            order_id: o.id,
            account: self.accounts[o.account as usize].id,
            market: m.id,
            client_order_id: o.client_id,
            reason,
            filled_quantity: o.filled * m.lot_size,
            cancelled_quantity: cancelled,
        });
    }

    /// Index an order by id and client id and link it into its account's order list.
    fn register(&mut self, slot: Slot) {
        let o = self.orders[slot];
        self.order_index.insert(o.id, slot);
        if o.client_id != 0 {
            self.client_index.insert((o.account, o.client_id), slot);
        }
        let acct = &mut self.accounts[o.account as usize];
        acct.open_orders += 1;
        let tail = acct.orders_tail;
        acct.orders_tail = slot;
        if tail == NIL {
            acct.orders_head = slot;
        } else {
            self.orders[tail].acct_next = slot;
        }
        self.orders[slot].acct_prev = tail;
    }

    /// Undo [`Self::register`] and free the slot.
    fn retire(&mut self, slot: Slot) {
        let o = self.orders[slot];
        self.order_index.remove(o.id);
        if o.client_id != 0 {
            self.client_index.remove(&(o.account, o.client_id));
        }
        self.accounts[o.account as usize].open_orders -= 1;
        if o.acct_prev != NIL {
            self.orders[o.acct_prev].acct_next = o.acct_next;
        } else {
            self.accounts[o.account as usize].orders_head = o.acct_next;
        }
        if o.acct_next != NIL {
            self.orders[o.acct_next].acct_prev = o.acct_prev;
        } else {
            self.accounts[o.account as usize].orders_tail = o.acct_prev;
        }
        self.orders.free(slot);
    }

    fn cancel(&mut self, account: AccountId, order: OrderRef, out: &mut Vec<Event>) -> Outcome {
        let ai = self.trader_idx(account)?;
        let slot = self.find_order(ai, order)?;
        self.cancel_resting(slot, DoneReason::Cancelled, out);
        Ok(())
    }

    fn cancel_all(
        &mut self,
        account: AccountId,
        market: Option<MarketId>,
        side: Option<Side>,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let ai = self.trader_idx(account)?;
        let only = market.map(|m| self.market_idx(m)).transpose()?;
        let mut count = 0u32;
        let mut s = self.accounts[ai as usize].orders_head;
        while s != NIL {
            let o = &self.orders[s];
            let next = o.acct_next;
            if only.is_none_or(|mi| o.market == mi) && side.is_none_or(|sd| o.side == sd) {
                self.cancel_resting(s, DoneReason::Cancelled, out);
                count += 1;
            }
            s = next;
        }
        out.push(Event::MassCancelled { account, market, side, count });
        Ok(())
    }

    fn amend(
        &mut self,
        account: AccountId,
        order: OrderRef,
        new_price: u64,
        new_quantity: u64,
        out: &mut Vec<Event>,
    ) -> Outcome {
        let ai = self.trader_idx(account)?;
        let slot = self.find_order(ai, order)?;
        let o = self.orders[slot];
        let reject = |reason: RejectReason| Err(Reject { reason, order_id: o.id });
        if let Err(r) = self.check_tradable(ai, o.market) {
            return reject(r.reason);
        }
        if new_price == 0 && new_quantity == 0 {
            return reject(RejectReason::AmendNoChange);
        }
        let m = &self.markets[o.market as usize];
        if new_price % m.tick_size != 0 {
            return reject(RejectReason::PriceOffTick);
        }
        if new_quantity % m.lot_size != 0 {
            return reject(RejectReason::QuantityOffLot);
        }
        let ticks = if new_price != 0 { new_price / m.tick_size } else { o.price };
        let lots = if new_quantity != 0 { new_quantity / m.lot_size } else { o.leaves };
        if ticks == o.price && lots == o.leaves {
            return reject(RejectReason::AmendNoChange);
        }
        let hold_price = match o.side {
            Side::Sell => 0,
            Side::Buy if o.explicit_reserve => {
                if ticks > o.hold_price {
                    return reject(RejectReason::PriceAboveReserve);
                }
                o.hold_price
            }
            Side::Buy => ticks,
        };
        let Some(notional) = risk::notional(lots, ticks, m.tick_value) else {
            return reject(RejectReason::Overflow);
        };
        let Some(new_hold) = self.required_hold(&o, lots, hold_price) else {
            return reject(RejectReason::Overflow);
        };
        let others_on_side = m.book.side(o.side).total_lots() - o.leaves;
        if !fits_on_side(others_on_side, lots, m.lot_size)
            || !fits_on_side(o.filled + o.decremented, lots, m.lot_size)
        {
            return reject(RejectReason::Overflow);
        }
        if notional < m.min_notional {
            return reject(RejectReason::BelowMinNotional);
        }
        let price_changed = ticks != o.price;
        let crosses = price_changed && self.would_cross(o.market, o.side, ticks);
        if o.post_only && crosses {
            return reject(RejectReason::PostOnlyWouldTake);
        }
        let old_hold = self.required_hold(&o, o.leaves, o.hold_price).unwrap_or(0);
        let hold_asset = match o.side {
            Side::Buy => m.quote,
            Side::Sell => m.base,
        };
        if new_hold > old_hold && self.free_of(ai, hold_asset) < new_hold - old_hold {
            return reject(RejectReason::InsufficientBalance);
        }

        let tick = m.tick_size;
        let lot = m.lot_size;
        let market_id = m.id;
        if !price_changed && lots < o.leaves {
            self.reduce_resting(slot, o.leaves - lots, BookAction::Reduce, out);
            out.push(Event::Amended {
                order_id: o.id,
                account,
                market: market_id,
                client_order_id: o.client_id,
                price: ticks * tick,
                leaves_quantity: lots * lot,
                kept_priority: true,
            });
            return Ok(());
        }
        self.unbook(slot, BookAction::Remove, out);
        if new_hold > old_hold {
            self.hold(ai, hold_asset, new_hold - old_hold);
        } else if old_hold > new_hold {
            self.release(ai, hold_asset, old_hold - new_hold);
        }
        {
            let s = &mut self.orders[slot];
            s.price = ticks;
            s.leaves = lots;
            s.hold_price = hold_price;
        }
        out.push(Event::Amended {
            order_id: o.id,
            account,
            market: market_id,
            client_order_id: o.client_id,
            price: ticks * tick,
            leaves_quantity: lots * lot,
            kept_priority: false,
        });
        let mut funding = Funding::Tracked;
        let stop = if crosses {
            self.match_incoming(slot, Some(ticks), &mut funding, out)
        } else {
            Stop::LimitReached
        };
        let finish = Finish { rests: true, is_market: false, by_quote: false, registered: true };
        self.finish_incoming(slot, stop, funding, finish, out);
        Ok(())
    }

    // ----- queries -------------------------------------------------------------------

    /// The account's fee tier and its rates, `(tier, maker_bps, taker_bps)`, or None if
    /// the account does not exist.
    pub fn fee_rates(&self, account: AccountId) -> Option<(u8, u32, u32)> {
        let ai = self.account_index.get(&account.0)?;
        let tier = self.accounts[*ai as usize].fee_tier;
        let rates = self.fee_tiers[tier as usize].expect("an account's fee tier is always defined");
        Some((tier, rates.maker_bps, rates.taker_bps))
    }

    /// `(free, held)` of an account in an asset, or None if it never held it.
    pub fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance> {
        let ai = self.account_index.get(&account.0)?;
        let si = self.asset_index.get(&asset.0)?;
        Some(self.accounts[*ai as usize].balances[*si as usize])
    }

    fn view(&self, slot: Slot) -> OrderView {
        let o = &self.orders[slot];
        let m = &self.markets[o.market as usize];
        OrderView {
            order_id: o.id,
            account: self.accounts[o.account as usize].id,
            market: m.id,
            client_order_id: o.client_id,
            side: o.side,
            price: o.price * m.tick_size,
            quantity: (o.leaves + o.filled + o.decremented) * m.lot_size,
            leaves_quantity: o.leaves * m.lot_size,
            filled_quantity: o.filled * m.lot_size,
            reserve_price: if o.explicit_reserve { o.hold_price * m.tick_size } else { 0 },
            post_only: o.post_only,
            stp: o.stp,
        }
    }

    /// An open order by id.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.order_index.get(id).map(|s| self.view(s))
    }

    /// An open order by its account and client order id.
    pub fn order_by_client_id(
        &self,
        account: AccountId,
        client_order_id: ClientOrderId,
    ) -> Option<OrderView> {
        let ai = *self.account_index.get(&account.0)?;
        self.client_index.get(&(ai, client_order_id)).map(|&s| self.view(s))
    }

    /// An account's open orders, oldest first.
    pub fn open_orders(&self, account: AccountId) -> Vec<OrderView> {
        let mut v = Vec::new();
        if let Some(&ai) = self.account_index.get(&account.0) {
            let mut s = self.accounts[ai as usize].orders_head;
            while s != NIL {
                v.push(self.view(s));
                s = self.orders[s].acct_next;
            }
        }
        v
    }

    /// Up to `max_levels` levels of one side, best first.
    pub fn depth(&self, market: MarketId, side: Side, max_levels: usize) -> Vec<LevelView> {
        let Some(&mi) = self.market_index.get(&market.0) else {
            return Vec::new();
        };
        let m = &self.markets[mi as usize];
        m.book
            .side(side)
            .iter_best_first()
            .take(max_levels)
            .map(|l| {
                let lv = &self.levels[l];
                LevelView {
                    price: lv.price * m.tick_size,
                    quantity: lv.total * m.lot_size,
                    orders: lv.count,
                }
            })
            .collect()
    }

    /// The best level of one side. O(1).
    pub fn best_level(&self, market: MarketId, side: Side) -> Option<LevelView> {
        let &mi = self.market_index.get(&market.0)?;
        let m = &self.markets[mi as usize];
        let lv = &self.levels[m.book.side(side).best()?];
        Some(LevelView {
            price: lv.price * m.tick_size,
            quantity: lv.total * m.lot_size,
            orders: lv.count,
        })
    }

    /// Every resting order of one side, best level first, time priority within a level.
    pub fn book_orders(&self, market: MarketId, side: Side) -> Vec<OrderView> {
        let mut v = Vec::new();
        if let Some(&mi) = self.market_index.get(&market.0) {
            for l in self.markets[mi as usize].book.side(side).iter_best_first() {
                let mut s = self.levels[l].head;
                while s != NIL {
                    v.push(self.view(s));
                    s = self.orders[s].next;
                }
            }
        }
        v
    }

    /// A market's specification and status.
    pub fn market(&self, market: MarketId) -> Option<MarketView> {
        let &mi = self.market_index.get(&market.0)?;
        let m = &self.markets[mi as usize];
        Some(MarketView {
            market: m.id,
            base: self.assets[m.base as usize].id,
            quote: self.assets[m.quote as usize].id,
            price_decimals: m.price_decimals,
            tick_size: m.tick_size,
            lot_size: m.lot_size,
            min_notional: m.min_notional,
            tick_value: m.tick_value,
            status: m.status,
            book_seq: m.book_seq,
        })
    }

    /// Listed assets with their decimals, in listing order.
    pub fn assets(&self) -> Vec<(AssetId, u8)> {
        self.assets.iter().map(|a| (a.id, a.decimals)).collect()
    }

    /// Listed markets, in listing order.
    pub fn markets(&self) -> Vec<MarketId> {
        self.markets.iter().map(|m| m.id).collect()
    }

    /// Accounts in creation order, the fee account first.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.accounts.iter().map(|a| a.id).collect()
    }

    /// Number of open orders across all markets.
    pub fn open_order_count(&self) -> usize {
        self.orders.live()
    }

    /// Net funding of an asset: deposits − withdrawals, which every balance of it sums to.
    pub fn net_funding(&self, asset: AssetId) -> Option<u128> {
        let &si = self.asset_index.get(&asset.0)?;
        let a = &self.assets[si as usize];
        Some(a.deposited - a.withdrawn)
    }

    /// A 128-bit hash of the whole state, computed in a fixed order.
    pub fn state_hash(&self) -> u128 {
        let mut h = crate::hash::StateHasher::new();
        h.u64(self.next_order_id);
        h.u64(self.next_trade_id);
        for (tier, fee) in self.fee_tiers.iter().enumerate() {
            if let Some(f) = fee {
                h.u64(tier as u64);
                h.u64(u64::from(f.maker_bps));
                h.u64(u64::from(f.taker_bps));
            }
        }
        h.u64(self.assets.len() as u64);
        for a in &self.assets {
            h.u64(u64::from(a.id.0));
            h.u64(u64::from(a.decimals));
            h.u128(a.deposited);
            h.u128(a.withdrawn);
        }
        h.u64(self.markets.len() as u64);
        for m in &self.markets {
            h.u64(u64::from(m.id.0));
            for v in [
                u64::from(m.base),
                u64::from(m.quote),
                u64::from(m.price_decimals),
                m.tick_size,
                m.lot_size,
                m.tick_value,
                m.min_notional,
                m.status as u64,
                m.book_seq,
            ] {
                h.u64(v);
            }
            for side in [Side::Buy, Side::Sell] {
                let ladder = m.book.side(side);
                h.u64(ladder.len() as u64);
                for l in ladder.iter_best_first() {
                    let lv = &self.levels[l];
                    h.u64(lv.price);
                    h.u64(lv.total);
                    h.u64(u64::from(lv.count));
                    let mut s = lv.head;
                    while s != NIL {
                        let o = &self.orders[s];
                        for v in [
                            o.id,
                            o.client_id,
                            u64::from(o.account),
                            o.side as u64,
                            o.price,
                            o.leaves,
                            o.filled,
                            o.decremented,
                            o.hold_price,
                            u64::from(o.explicit_reserve),
                            u64::from(o.post_only),
                            o.stp as u64,
                            u64::from(o.maker_bps),
                            u64::from(o.taker_bps),
                        ] {
                            h.u64(v);
                        }
                        s = o.next;
                    }
                }
            }
        }
        h.u64(self.accounts.len() as u64);
        for a in &self.accounts {
            h.u64(a.id.0);
            h.u64(a.status as u64);
            h.u64(u64::from(a.fee_tier));
            for b in &a.balances {
                h.u64(b.free);
                h.u64(b.held);
            }
            let mut s = a.orders_head;
            while s != NIL {
                h.u64(self.orders[s].id);
                s = self.orders[s].acct_next;
            }
        }
        h.finish()
    }

    /// Check every structural and money invariant. O(state). For tests and tools.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut expected_held: Vec<Vec<u64>> =
            self.accounts.iter().map(|a| vec![0u64; a.balances.len()]).collect();
        let mut resting = 0usize;
        for m in &self.markets {
            for side in [Side::Buy, Side::Sell] {
                let ladder = m.book.side(side);
                ladder.check(&self.levels)?;
                for l in ladder.iter_best_first() {
                    let lv = &self.levels[l];
                    let (mut total, mut count, mut prev, mut s) = (0u64, 0u32, NIL, lv.head);
                    while s != NIL {
                        let o = &self.orders[s];
                        let at = format!("market {} order {}", m.id.0, o.id);
                        if o.level != l || o.prev != prev || o.side != side || o.price != lv.price {
                            return Err(format!("{at}: links or price disagree with its level"));
                        }
                        if o.leaves == 0 {
                            return Err(format!("{at}: rests with no quantity"));
                        }
                        if self.order_index.get(o.id) != Some(s) {
                            return Err(format!("{at}: not indexed by id"));
                        }
                        if o.client_id != 0
                            && self.client_index.get(&(o.account, o.client_id)) != Some(&s)
                        {
                            return Err(format!("{at}: not indexed by client id"));
                        }
                        let need = self
                            .required_hold(o, o.leaves, o.hold_price)
                            .ok_or_else(|| format!("{at}: hold overflows"))?;
                        let asset = if side == Side::Buy { m.quote } else { m.base };
                        expected_held[o.account as usize][asset as usize] += need;
                        total += o.leaves;
                        count += 1;
                        prev = s;
                        s = o.next;
                    }
                    if total != lv.total || count != lv.count || prev != lv.tail {
                        return Err(format!(
                            "market {} level {}: totals ({}, {}) but orders sum to ({total}, {count})",
                            m.id.0, lv.price, lv.total, lv.count
                        ));
                    }
                    resting += count as usize;
                }
            }
            if let (Some(b), Some(a)) = (m.book.bids.best(), m.book.asks.best()) {
                if self.levels[b].price >= self.levels[a].price {
                    return Err(format!("market {}: book is crossed", m.id.0));
                }
            }
        }
        if resting != self.orders.live() || resting != self.order_index.len() {
            return Err(format!(
                "{resting} resting orders, {} live slots, {} indexed",
                self.orders.live(),
                self.order_index.len()
            ));
        }
        let mut listed = 0usize;
        for (ai, a) in self.accounts.iter().enumerate() {
            let (mut s, mut own) = (a.orders_head, 0usize);
            while s != NIL {
                if self.orders[s].account as usize != ai {
                    return Err(format!("account {}: lists another account's order", a.id.0));
                }
                own += 1;
                s = self.orders[s].acct_next;
            }
            if own != a.open_orders as usize {
                return Err(format!(
                    "account {}: counts {} open orders but lists {own}",
                    a.id.0, a.open_orders
                ));
            }
            if own > MAX_OPEN_ORDERS_PER_ACCOUNT {
                return Err(format!(
                    "account {}: {own} open orders, above the limit {MAX_OPEN_ORDERS_PER_ACCOUNT}",
                    a.id.0
                ));
            }
            listed += own;
            for (si, b) in a.balances.iter().enumerate() {
                if b.held != expected_held[ai][si] {
                    return Err(format!(
                        "account {} asset {}: held {} but open orders need {}",
                        a.id.0, self.assets[si].id.0, b.held, expected_held[ai][si]
                    ));
                }
            }
        }
        if listed != resting {
            return Err(format!("{listed} orders in account lists, {resting} resting"));
        }
        for (si, asset) in self.assets.iter().enumerate() {
            let sum: u128 = self
                .accounts
                .iter()
                .map(|a| u128::from(a.balances[si].free) + u128::from(a.balances[si].held))
                .sum();
            if sum != asset.deposited - asset.withdrawn {
                return Err(format!(
                    "asset {}: balances sum to {sum} but deposits - withdrawals = {}",
                    asset.id.0,
                    asset.deposited - asset.withdrawn
                ));
            }
        }
        Ok(())
    }
}
