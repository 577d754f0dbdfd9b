//! A deliberately naive reference model of the engine specification.
//!
//! Written from the module docs of `bourse-engine` (types, command, event, risk, engine),
//! not from the engine's data structures:
//! * books are `BTreeMap<price, VecDeque<order id>>` per side, prices in price units and
//!   quantities in base atoms (ticks and lots appear only inside the `risk` arithmetic);
//! * balances are one `BTreeMap<(account, asset), (free, held)>`;
//! * open orders are one `BTreeMap<order id, Order>` (so an account's open orders, oldest
//!   first, are simply its orders by id);
//! * level totals are recomputed by summing the queue every time they are reported;
//! * a fill-or-kill order is checked by *simulating* it on a clone of the whole model;
//! * what a market buy can afford is found by a binary search over the cost formula;
//! * a book side's total base quantity (for the overflow rules) is summed over its orders.
//!
//! Only the spec's arithmetic (`risk::tick_value`, `notional`, `fee`, `with_fee`, `buy_hold`) is
//! shared with the engine. Every rule, every reject and its precedence, and the order and
//! contents of every event are re-implemented here.
//!
//! Event order, as specified: a command's effects in the order they happen, then one
//! `Balance` event per (account, asset) whose balance the command touched, in the order
//! they were first touched.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use bourse_engine::risk;
use bourse_engine::*;

/// Per-side book: price (price units) → FIFO of order ids.
type Ladder = BTreeMap<u64, VecDeque<OrderId>>;

#[derive(Clone, Debug)]
pub struct Market {
    pub id: MarketId,
    pub base: AssetId,
    pub quote: AssetId,
    pub price_decimals: u8,
    pub tick: u64,
    pub lot: u64,
    pub tick_value: u64,
    pub min_notional: u64,
    pub status: MarketStatus,
    pub book_seq: u64,
    pub bids: Ladder,
    pub asks: Ladder,
}

impl Market {
    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
    /// The best price of a side: the highest bid or the lowest ask.
    fn best(&self, side: Side) -> Option<u64> {
        match side {
            Side::Buy => self.bids.keys().next_back().copied(),
            Side::Sell => self.asks.keys().next().copied(),
        }
    }
    /// Prices of a side, best first.
    fn prices_best_first(&self, side: Side) -> Vec<u64> {
        match side {
            Side::Buy => self.bids.keys().rev().copied().collect(),
            Side::Sell => self.asks.keys().copied().collect(),
        }
    }
    /// Quote value of `qty` base atoms at `price` price units, if it fits in u64.
    fn notional(&self, qty: u64, price: u64) -> Option<u64> {
        risk::notional(qty / self.lot, price / self.tick, self.tick_value)
    }
}

/// An order: resting, or incoming while it matches. Prices in price units, quantities
/// in base atoms.
#[derive(Clone, Debug)]
pub struct Order {
    pub id: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub client_id: ClientOrderId,
    pub side: Side,
    pub post_only: bool,
    pub stp: StpMode,
    /// Limit price; for an incoming market order the protection price (0 = none).
    pub price: u64,
    pub leaves: u64,
    pub filled: u64,
    /// Removed by self-trade prevention (decrement) without trading.
    pub decremented: u64,
    /// Market buy by quote amount: no quantity, the budget decides.
    pub unbounded: bool,
    /// A buy's client-set reserve price.
    pub reserve: Option<u64>,
    pub maker_bps: u32,
    pub taker_bps: u32,
}

impl Order {
    /// The price a buy's quote hold is computed at.
    fn hold_price(&self) -> u64 {
        self.reserve.unwrap_or(self.price)
    }

    /// Its quantity as last set: what it may still trade, what it traded and what self-trade
    /// prevention took away.
    fn quantity(&self) -> u128 {
        u128::from(self.leaves) + u128::from(self.filled) + u128::from(self.decremented)
    }
}

/// How an incoming order pays for its fills.
#[derive(Clone, Copy, Debug)]
enum Funding {
    /// Its hold is always the hold formula of its leaves.
    Tracked,
    /// A market buy spending from a held budget, optionally with a cap on quote value.
    Budget { remaining: u64, cap: Option<u64> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Complete,
    NoLiquidity,
    LimitReached,
    BudgetExhausted,
    SelfTrade,
}

type Rej = (RejectReason, OrderId);

/// The overflow rules keep every base quantity the spec reports within `u64`; a model state
/// where one does not fit is a bug (of the model or of the rules), not a case to skip.
fn fits(v: u128, what: &str) -> u64 {
    u64::try_from(v).unwrap_or_else(|_| panic!("model: {what} = {v} does not fit in u64"))
}

fn rej<T>(reason: RejectReason) -> Result<T, Rej> {
    Err((reason, 0))
}

/// Would a `side` order at `price` trade against `opposite` resting on the other side?
fn crosses(side: Side, price: u64, opposite: u64) -> bool {
    match side {
        Side::Buy => price >= opposite,
        Side::Sell => price <= opposite,
    }
}

#[derive(Clone, Debug)]
pub struct Model {
    pub assets: BTreeMap<AssetId, u8>,
    /// Deposits − withdrawals per asset.
    pub net: BTreeMap<AssetId, u128>,
    pub markets: BTreeMap<MarketId, Market>,
    /// Status and fee tier.
    pub accounts: BTreeMap<AccountId, (AccountStatus, u8)>,
    pub tiers: BTreeMap<u8, (u32, u32)>,
    pub balances: BTreeMap<(AccountId, AssetId), (u64, u64)>,
    /// Every open (resting) order.
    pub orders: BTreeMap<OrderId, Order>,
    pub next_order_id: OrderId,
    pub next_trade_id: TradeId,
    touched: Vec<(AccountId, AssetId)>,
    out: Vec<Event>,
    /// Rare rules the last command went through (for the property tests' coverage counters).
    pub notes: Vec<&'static str>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Self {
        let mut accounts = BTreeMap::new();
        accounts.insert(FEE_ACCOUNT, (AccountStatus::Active, 0));
        let mut tiers = BTreeMap::new();
        tiers.insert(0, (0, 0));
        Model {
            assets: BTreeMap::new(),
            net: BTreeMap::new(),
            markets: BTreeMap::new(),
            accounts,
            tiers,
            balances: BTreeMap::new(),
            orders: BTreeMap::new(),
            next_order_id: 1,
            next_trade_id: 1,
            touched: Vec::new(),
            out: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Apply one command and return its events.
    pub fn apply(&mut self, cmd: &Command) -> Vec<Event> {
        self.out.clear();
        self.touched.clear();
        self.notes.clear();
        let result = match *cmd {
            Command::ListAsset { asset, decimals } => self.list_asset(asset, decimals),
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
            ),
            Command::SetMarketStatus { market, status } => self.set_market_status(market, status),
            Command::SetFeeTier { tier, maker_bps, taker_bps } => {
                self.set_fee_tier(tier, maker_bps, taker_bps)
            }
            Command::CreateAccount { account, fee_tier } => self.create_account(account, fee_tier),
            Command::SetAccountFeeTier { account, fee_tier } => {
                self.set_account_fee_tier(account, fee_tier)
            }
            Command::SetAccountStatus { account, status } => {
                self.set_account_status(account, status)
            }
            Command::Deposit { account, asset, amount } => self.deposit(account, asset, amount),
            Command::Withdraw { account, asset, amount } => self.withdraw(account, asset, amount),
            Command::PlaceOrder(ref o) => self.place(o),
            Command::CancelOrder { account, order } => self.cancel(account, order),
            Command::CancelAll { account, market, side } => self.cancel_all(account, market, side),
            Command::AmendOrder { account, order, new_price, new_quantity } => {
                self.amend(account, order, new_price, new_quantity)
            }
        };
        self.check_quantities_fit();
        match result {
            Ok(()) => {
                for (account, asset) in std::mem::take(&mut self.touched) {
                    let (free, held) = self.balances[&(account, asset)];
                    self.out.push(Event::Balance { account, asset, free, held });
                }
            }
            Err(r) => self.rejected(cmd, r),
        }
        std::mem::take(&mut self.out)
    }

    /// Every base quantity the queries report fits in `u64` (the overflow rules see to it).
    fn check_quantities_fit(&self) {
        for o in self.orders.values() {
            fits(o.quantity(), "order quantity");
        }
        for m in self.markets.values() {
            for side in [Side::Buy, Side::Sell] {
                fits(self.side_total(m.id, side), "book side total");
                for &p in m.ladder(side).keys() {
                    self.level(m.id, side, p);
                }
            }
        }
    }

    /// The single event of a refused command.
    fn rejected(&mut self, cmd: &Command, (reason, found_order): Rej) {
        assert!(self.touched.is_empty(), "model: a rejected command touched balances");
        assert!(self.out.is_empty(), "model: a rejected command produced events");
        let (account, order_id, client_order_id) = match *cmd {
            Command::PlaceOrder(ref o) => (o.account, 0, o.client_order_id),
            Command::CancelOrder { account, order }
            | Command::AmendOrder { account, order, .. } => match order {
                OrderRef::Id(id) => (account, id, 0),
                OrderRef::Client(c) => (account, found_order, c),
            },
            Command::CreateAccount { account, .. }
            | Command::SetAccountFeeTier { account, .. }
            | Command::SetAccountStatus { account, .. }
            | Command::Deposit { account, .. }
            | Command::Withdraw { account, .. }
            | Command::CancelAll { account, .. } => (account, 0, 0),
            Command::ListAsset { .. }
            | Command::ListMarket { .. }
            | Command::SetMarketStatus { .. }
            | Command::SetFeeTier { .. } => (AccountId(0), 0, 0),
        };
        self.out.push(Event::Rejected {
            command: cmd.kind(),
            account,
            order_id,
            client_order_id,
            reason,
        });
    }

    // ----- checks -----------------------------------------------------------------------

    /// A known account that may trade (not the fee account).
    fn trader(&self, account: AccountId) -> Result<(), Rej> {
        if account == FEE_ACCOUNT {
            return rej(RejectReason::ReservedAccount);
        }
        if !self.accounts.contains_key(&account) {
            return rej(RejectReason::UnknownAccount);
        }
        Ok(())
    }

    fn tradable(&self, account: AccountId, market: MarketId) -> Result<(), RejectReason> {
        if self.accounts[&account].0 == AccountStatus::Frozen {
            return Err(RejectReason::AccountFrozen);
        }
        match self.markets[&market].status {
            MarketStatus::Trading => Ok(()),
            MarketStatus::Halted => Err(RejectReason::MarketHalted),
            MarketStatus::Delisted => Err(RejectReason::MarketDelisted),
        }
    }

    /// The open order an account means, if it has one.
    fn lookup(&self, account: AccountId, order: OrderRef) -> Option<OrderId> {
        match order {
            OrderRef::Id(id) => self.orders.get(&id).filter(|o| o.account == account).map(|o| o.id),
            OrderRef::Client(0) => None,
            OrderRef::Client(c) => self
                .orders
                .values()
                .find(|o| o.account == account && o.client_id == c)
                .map(|o| o.id),
        }
    }

    // ----- balances ---------------------------------------------------------------------

    fn touch(&mut self, account: AccountId, asset: AssetId) -> &mut (u64, u64) {
        if !self.touched.contains(&(account, asset)) {
            self.touched.push((account, asset));
        }
        self.balances.get_mut(&(account, asset)).expect("model: balance of a listed asset")
    }

    pub fn free(&self, account: AccountId, asset: AssetId) -> u64 {
        self.balances[&(account, asset)].0
    }

    fn hold(&mut self, account: AccountId, asset: AssetId, amount: u64) {
        let b = self.touch(account, asset);
        b.0 = b.0.checked_sub(amount).expect("model: hold more than free");
        b.1 += amount;
    }

    fn release(&mut self, account: AccountId, asset: AssetId, amount: u64) {
        let b = self.touch(account, asset);
        b.1 = b.1.checked_sub(amount).expect("model: release more than held");
        b.0 += amount;
    }

    /// What an order holds for `leaves`: base for a sell; for a buy the value at its hold
    /// price plus the fee at the larger of its two rates.
    fn required_hold(&self, o: &Order, leaves: u64) -> Option<u64> {
        let m = &self.markets[&o.market];
        match o.side {
            Side::Sell => Some(leaves),
            Side::Buy => risk::buy_hold(
                leaves / m.lot,
                o.hold_price() / m.tick,
                m.tick_value,
                o.maker_bps.max(o.taker_bps),
            ),
        }
    }

    fn hold_asset(&self, o: &Order) -> AssetId {
        let m = &self.markets[&o.market];
        match o.side {
            Side::Buy => m.quote,
            Side::Sell => m.base,
        }
    }

    /// Give back the part of an order's hold that `by` of its leaves needed.
    fn release_part(&mut self, o: &Order, by: u64) {
        let before = self.required_hold(o, o.leaves).expect("model: hold fits");
        let after = self.required_hold(o, o.leaves - by).expect("model: hold fits");
        let asset = self.hold_asset(o);
        self.release(o.account, asset, before - after);
    }

    // ----- book -------------------------------------------------------------------------

    /// (total quantity, order count) of a level, summed from its queue.
    fn level(&self, market: MarketId, side: Side, price: u64) -> (u64, u32) {
        let m = &self.markets[&market];
        match m.ladder(side).get(&price) {
            None => (0, 0),
            Some(q) => {
                let total: u128 = q.iter().map(|id| u128::from(self.orders[id].leaves)).sum();
                let total = fits(total, "level total quantity");
                (total, q.len() as u32)
            }
        }
    }

    /// The leaves of every order resting on one side of a market, added up.
    pub fn side_total(&self, market: MarketId, side: Side) -> u128 {
        self.orders
            .values()
            .filter(|o| o.market == market && o.side == side)
            .map(|o| u128::from(o.leaves))
            .sum()
    }

    fn book_event(&mut self, o: &Order, action: BookAction, order_quantity: u64, delta: u64) {
        let (level_quantity, level_orders) = self.level(o.market, o.side, o.price);
        let m = self.markets.get_mut(&o.market).unwrap();
        m.book_seq += 1;
        self.out.push(Event::Book {
            market: o.market,
            book_seq: m.book_seq,
            action,
            order_id: o.id,
            side: o.side,
            price: o.price,
            order_quantity,
            delta,
            level_quantity,
            level_orders,
        });
    }

    /// Take an order out of its level's queue (dropping an empty level).
    fn unlink(&mut self, o: &Order) {
        let ladder = self.markets.get_mut(&o.market).unwrap().ladder_mut(o.side);
        let q = ladder.get_mut(&o.price).expect("model: resting order's level exists");
        let pos = q.iter().position(|&id| id == o.id).expect("model: order in its level");
        q.remove(pos);
        if q.is_empty() {
            ladder.remove(&o.price);
        }
    }

    /// Put an order at the back of its level and say so.
    fn rest(&mut self, o: Order) {
        let ladder = self.markets.get_mut(&o.market).unwrap().ladder_mut(o.side);
        ladder.entry(o.price).or_default().push_back(o.id);
        let leaves = o.leaves;
        self.orders.insert(o.id, o.clone());
        self.book_event(&o, BookAction::Add, leaves, leaves);
    }

    /// Filled plus cancelled is the order's quantity: cancelled is what was still open (none
    /// when filled, or for a buy by quote amount) plus what self-trade prevention took away.
    fn done(&mut self, o: &Order, reason: DoneReason) {
        let open = if reason == DoneReason::Filled || o.unbounded { 0 } else { o.leaves };
        let cancelled = fits(u128::from(open) + u128::from(o.decremented), "cancelled quantity");
        if o.decremented != 0 {
            self.notes.push(if reason == DoneReason::Filled {
                "done after a decrement: filled"
            } else {
                "done after a decrement: not filled"
            });
        }
        self.out.push(Event::OrderDone {
            order_id: o.id,
            account: o.account,
            market: o.market,
            client_order_id: o.client_id,
            reason,
            filled_quantity: o.filled,
            cancelled_quantity: cancelled,
        });
    }

    /// Remove a resting order without a trade: book event, hold back, done.
    fn cancel_resting(&mut self, id: OrderId, reason: DoneReason) {
        let o = self.orders.remove(&id).expect("model: cancelling an open order");
        self.unlink(&o);
        self.book_event(&o, BookAction::Remove, 0, o.leaves);
        self.release_part(&o, o.leaves);
        self.done(&o, reason);
    }

    /// Reduce a resting order by `by` (< leaves) without a trade, keeping its place: by an
    /// amend (its quantity changes) or by self-trade prevention (`decrement`: it does not).
    fn reduce_resting(&mut self, id: OrderId, by: u64, decrement: bool) {
        let o = self.orders[&id].clone();
        assert!(by < o.leaves);
        self.release_part(&o, by);
        let r = self.orders.get_mut(&id).unwrap();
        r.leaves -= by;
        if decrement {
            r.decremented += by;
            self.notes.push("resting order partly decremented");
        }
        let o = self.orders[&id].clone();
        self.book_event(&o, BookAction::Reduce, o.leaves, by);
    }

    // ----- matching ---------------------------------------------------------------------

    /// The largest quantity (whole lots, at most `max`) a budget buys at `price`: value plus
    /// taker fee within `remaining`, value within `cap`. A plain binary search.
    fn affordable(
        &self,
        m: &Market,
        price: u64,
        max: u64,
        taker_bps: u32,
        remaining: u64,
        cap: Option<u64>,
    ) -> u64 {
        let ok = |lots: u64| {
            let value = u128::from(lots) * u128::from(price / m.tick) * u128::from(m.tick_value);
            let fee = value * u128::from(taker_bps) / 10_000;
            value + fee <= u128::from(remaining) && cap.is_none_or(|c| value <= u128::from(c))
        };
        let (mut lo, mut hi) = (0u64, max / m.lot);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if ok(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo * m.lot
    }

    /// Trade the incoming order `t` against the book until something stops it.
    fn match_incoming(&mut self, t: &mut Order, funding: &mut Funding) -> Stop {
        let opposite = t.side.opposite();
        loop {
            if !t.unbounded && t.leaves == 0 {
                return Stop::Complete;
            }
            // A buy by quote amount that has spent all of it is done, whatever is left in
            // the book.
            if let Funding::Budget { cap: Some(0), .. } = *funding {
                self.notes.push(match self.markets[&t.market].best(opposite) {
                    Some(_) => "quote amount spent, book not empty",
                    None => "quote amount spent, book empty",
                });
                return Stop::BudgetExhausted;
            }
            let m = &self.markets[&t.market];
            let Some(price) = m.best(opposite) else {
                return Stop::NoLiquidity;
            };
            if t.price != 0 && !crosses(t.side, t.price, price) {
                return Stop::LimitReached;
            }
            let maker_id = *m.ladder(opposite)[&price].front().unwrap();
            let maker = self.orders[&maker_id].clone();
            if t.stp != StpMode::None && maker.account == t.account {
                match t.stp {
                    StpMode::None => unreachable!(),
                    StpMode::ExpireTaker => return Stop::SelfTrade,
                    StpMode::ExpireMaker => self.cancel_resting(maker_id, DoneReason::SelfTrade),
                    StpMode::ExpireBoth => {
                        self.cancel_resting(maker_id, DoneReason::SelfTrade);
                        return Stop::SelfTrade;
                    }
                    StpMode::Decrement => {
                        let d = if t.unbounded { maker.leaves } else { t.leaves.min(maker.leaves) };
                        if d == maker.leaves {
                            self.cancel_resting(maker_id, DoneReason::SelfTrade);
                        } else {
                            self.reduce_resting(maker_id, d, true);
                        }
                        if !t.unbounded {
                            if let Funding::Tracked = funding {
                                self.release_part(t, d);
                            }
                            t.leaves -= d;
                            t.decremented += d;
                            if t.leaves == 0 {
                                return Stop::SelfTrade;
                            }
                        }
                    }
                }
                continue;
            }
            let mut qty = if t.unbounded { maker.leaves } else { t.leaves.min(maker.leaves) };
            if let Funding::Budget { remaining, cap } = *funding {
                qty = self.affordable(m, price, qty, t.taker_bps, remaining, cap);
                if qty == 0 {
                    return Stop::BudgetExhausted;
                }
            }
            self.fill(t, maker, qty, price, funding);
        }
    }

    /// Settle one trade of `qty` at `price` between incoming `t` and resting `maker`.
    fn fill(&mut self, t: &mut Order, maker: Order, qty: u64, price: u64, funding: &mut Funding) {
        let m = &self.markets[&t.market];
        let (base, quote) = (m.base, m.quote);
        let value = m.notional(qty, price).expect("model: a fill's value fits");
        let maker_fee = risk::fee(value, maker.maker_bps);
        let taker_fee = risk::fee(value, t.taker_bps);
        let (buyer, seller, buyer_fee, seller_fee) = match t.side {
            Side::Buy => (t.clone(), maker.clone(), taker_fee, maker_fee),
            Side::Sell => (maker.clone(), t.clone(), maker_fee, taker_fee),
        };
        let cost = value + buyer_fee;
        // The buyer pays value + fee out of its hold; a tracked hold shrinks by the hold of
        // the traded quantity and the difference to the cost goes back to free.
        match (t.side, &mut *funding) {
            (Side::Buy, Funding::Budget { remaining, cap }) => {
                *remaining -= cost;
                if let Some(c) = cap {
                    *c -= value;
                }
                let b = self.touch(buyer.account, quote);
                b.1 -= cost;
            }
            _ => {
                let before = self.required_hold(&buyer, buyer.leaves).unwrap();
                let after = self.required_hold(&buyer, buyer.leaves - qty).unwrap();
                let released = before - after;
                assert!(released >= cost, "spec: a buy's hold covers each fill");
                let b = self.touch(buyer.account, quote);
                b.1 -= released;
                b.0 += released - cost;
            }
        }
        self.touch(buyer.account, base).0 += qty;
        let b = self.touch(seller.account, base);
        b.1 = b.1.checked_sub(qty).expect("model: seller holds the base it sells");
        self.touch(seller.account, quote).0 += value - seller_fee;
        if maker_fee + taker_fee != 0 {
            self.touch(FEE_ACCOUNT, quote).0 += maker_fee + taker_fee;
        }
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        self.out.push(Event::Trade {
            market: t.market,
            trade_id,
            price,
            quantity: qty,
            quote_quantity: value,
            aggressor: t.side,
            maker_order_id: maker.id,
            taker_order_id: t.id,
            maker_account: maker.account,
            taker_account: t.account,
            maker_client_order_id: maker.client_id,
            taker_client_order_id: t.client_id,
            maker_fee,
            taker_fee,
            maker_leaves_quantity: maker.leaves - qty,
            // A buy by quote amount has no base quantity to count down: the spec says 0.
            taker_leaves_quantity: if t.unbounded { 0 } else { t.leaves - qty },
        });
        t.filled = fits(u128::from(t.filled) + u128::from(qty), "filled quantity");
        if !t.unbounded {
            t.leaves -= qty;
        }
        let mo = self.orders.get_mut(&maker.id).unwrap();
        mo.filled = fits(u128::from(mo.filled) + u128::from(qty), "filled quantity");
        mo.leaves -= qty;
        let mo = mo.clone();
        if mo.leaves == 0 {
            self.orders.remove(&mo.id);
            self.unlink(&mo);
            self.book_event(&mo, BookAction::Fill, 0, qty);
            self.done(&mo, DoneReason::Filled);
        } else {
            self.book_event(&mo, BookAction::Fill, mo.leaves, qty);
        }
    }

    /// After matching: rest a GTC remainder, or finish the order and give back its hold.
    fn finish(&mut self, mut t: Order, stop: Stop, funding: Funding, rests: bool, is_market: bool) {
        if rests && stop != Stop::SelfTrade && stop != Stop::Complete {
            self.rest(t);
            return;
        }
        // A finished order gives back everything it still holds, however it finished.
        match funding {
            Funding::Budget { remaining, .. } => {
                if remaining != 0 {
                    let quote = self.markets[&t.market].quote;
                    self.release(t.account, quote, remaining);
                }
            }
            Funding::Tracked => {
                if t.leaves != 0 {
                    self.release_part(&t, t.leaves);
                }
            }
        }
        let reason = match stop {
            Stop::Complete => DoneReason::Filled,
            Stop::SelfTrade => DoneReason::SelfTrade,
            Stop::LimitReached if is_market => DoneReason::ProtectionLimit,
            Stop::BudgetExhausted if t.unbounded && t.filled > 0 => DoneReason::Filled,
            Stop::BudgetExhausted if !t.unbounded => DoneReason::BudgetExhausted,
            _ => DoneReason::Expired,
        };
        if reason == DoneReason::Filled {
            t.leaves = 0;
        }
        self.done(&t, reason);
    }

    // ----- reference data ---------------------------------------------------------------

    fn list_asset(&mut self, asset: AssetId, decimals: u8) -> Result<(), Rej> {
        if self.assets.contains_key(&asset) {
            return rej(RejectReason::AssetExists);
        }
        if decimals > 18 {
            return rej(RejectReason::InvalidDecimals);
        }
        self.assets.insert(asset, decimals);
        self.net.insert(asset, 0);
        for &account in self.accounts.keys() {
            self.balances.insert((account, asset), (0, 0));
        }
        self.out.push(Event::AssetListed { asset, decimals });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn list_market(
        &mut self,
        market: MarketId,
        base: AssetId,
        quote: AssetId,
        price_decimals: u8,
        tick: u64,
        lot: u64,
        min_notional: u64,
    ) -> Result<(), Rej> {
        if self.markets.contains_key(&market) {
            return rej(RejectReason::MarketExists);
        }
        let (Some(&bd), Some(&qd)) = (self.assets.get(&base), self.assets.get(&quote)) else {
            return rej(RejectReason::UnknownAsset);
        };
        if base == quote || price_decimals > 18 {
            return rej(RejectReason::InvalidMarketSpec);
        }
        let Some(tick_value) = risk::tick_value(tick, lot, bd, qd, price_decimals) else {
            return rej(RejectReason::InvalidMarketSpec);
        };
        self.markets.insert(
            market,
            Market {
                id: market,
                base,
                quote,
                price_decimals,
                tick,
                lot,
                tick_value,
                min_notional,
                status: MarketStatus::Trading,
                book_seq: 0,
                bids: BTreeMap::new(),
                asks: BTreeMap::new(),
            },
        );
        self.out.push(Event::MarketListed { market, base, quote, tick_value });
        Ok(())
    }

    fn set_market_status(&mut self, market: MarketId, status: MarketStatus) -> Result<(), Rej> {
        let Some(m) = self.markets.get(&market) else {
            return rej(RejectReason::UnknownMarket);
        };
        if m.status == MarketStatus::Delisted || m.status == status {
            return rej(RejectReason::InvalidStatusTransition);
        }
        if status == MarketStatus::Delisted {
            // Every resting order goes: bids best first, then asks best first, each level
            // oldest first.
            for side in [Side::Buy, Side::Sell] {
                loop {
                    let m = &self.markets[&market];
                    let Some(p) = m.best(side) else { break };
                    let id = m.ladder(side)[&p][0];
                    self.cancel_resting(id, DoneReason::Delisted);
                }
            }
        }
        let m = self.markets.get_mut(&market).unwrap();
        m.status = status;
        self.out.push(Event::MarketStatusChanged { market, status, book_seq: m.book_seq });
        Ok(())
    }

    fn set_fee_tier(&mut self, tier: u8, maker_bps: u32, taker_bps: u32) -> Result<(), Rej> {
        if maker_bps > 10_000 || taker_bps > 10_000 {
            return rej(RejectReason::InvalidFee);
        }
        self.tiers.insert(tier, (maker_bps, taker_bps));
        self.out.push(Event::FeeTierSet { tier, maker_bps, taker_bps });
        Ok(())
    }

    fn create_account(&mut self, account: AccountId, fee_tier: u8) -> Result<(), Rej> {
        if account == FEE_ACCOUNT {
            return rej(RejectReason::ReservedAccount);
        }
        if self.accounts.contains_key(&account) {
            return rej(RejectReason::AccountExists);
        }
        if !self.tiers.contains_key(&fee_tier) {
            return rej(RejectReason::UnknownFeeTier);
        }
        self.accounts.insert(account, (AccountStatus::Active, fee_tier));
        for &asset in self.assets.keys() {
            self.balances.insert((account, asset), (0, 0));
        }
        self.out.push(Event::AccountCreated { account, fee_tier });
        Ok(())
    }

    fn set_account_fee_tier(&mut self, account: AccountId, fee_tier: u8) -> Result<(), Rej> {
        self.trader(account)?;
        if !self.tiers.contains_key(&fee_tier) {
            return rej(RejectReason::UnknownFeeTier);
        }
        self.accounts.get_mut(&account).unwrap().1 = fee_tier;
        self.out.push(Event::AccountFeeTierSet { account, fee_tier });
        Ok(())
    }

    fn set_account_status(&mut self, account: AccountId, status: AccountStatus) -> Result<(), Rej> {
        self.trader(account)?;
        self.accounts.get_mut(&account).unwrap().0 = status;
        self.out.push(Event::AccountStatusChanged { account, status });
        Ok(())
    }

    // ----- funding ----------------------------------------------------------------------

    fn deposit(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Result<(), Rej> {
        if !self.accounts.contains_key(&account) {
            return rej(RejectReason::UnknownAccount);
        }
        if !self.assets.contains_key(&asset) {
            return rej(RejectReason::UnknownAsset);
        }
        if amount == 0 {
            return rej(RejectReason::ZeroQuantity);
        }
        if self.net[&asset] + u128::from(amount) > u128::from(u64::MAX) {
            return rej(RejectReason::Overflow);
        }
        *self.net.get_mut(&asset).unwrap() += u128::from(amount);
        self.touch(account, asset).0 += amount;
        self.out.push(Event::Deposited { account, asset, amount });
        Ok(())
    }

    fn withdraw(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Result<(), Rej> {
        let Some(&(status, _)) = self.accounts.get(&account) else {
            return rej(RejectReason::UnknownAccount);
        };
        if !self.assets.contains_key(&asset) {
            return rej(RejectReason::UnknownAsset);
        }
        if amount == 0 {
            return rej(RejectReason::ZeroQuantity);
        }
        if status == AccountStatus::Frozen {
            return rej(RejectReason::AccountFrozen);
        }
        if self.free(account, asset) < amount {
            return rej(RejectReason::InsufficientBalance);
        }
        *self.net.get_mut(&asset).unwrap() -= u128::from(amount);
        self.touch(account, asset).0 -= amount;
        self.out.push(Event::Withdrawn { account, asset, amount });
        Ok(())
    }

    // ----- orders -----------------------------------------------------------------------

    fn place(&mut self, o: &NewOrder) -> Result<(), Rej> {
        self.trader(o.account)?;
        let Some(m) = self.markets.get(&o.market) else {
            return rej(RejectReason::UnknownMarket);
        };
        let m = m.clone();
        self.tradable(o.account, o.market).map_err(|r| (r, 0))?;
        let is_market = o.order_type == OrderType::Market;
        let by_quote = o.quote_quantity != 0;
        // Shape.
        if is_market {
            if o.post_only || o.reserve_price != 0 || o.time_in_force == TimeInForce::Fok {
                return rej(RejectReason::InvalidOrder);
            }
            if o.quantity == 0 && !by_quote {
                return rej(RejectReason::ZeroQuantity);
            }
            if o.quantity != 0 && by_quote {
                return rej(RejectReason::InvalidOrder);
            }
            if by_quote && o.side == Side::Sell {
                return rej(RejectReason::InvalidOrder);
            }
        } else {
            if by_quote || (o.post_only && o.time_in_force != TimeInForce::Gtc) {
                return rej(RejectReason::InvalidOrder);
            }
            if o.price == 0 {
                return rej(RejectReason::ZeroPrice);
            }
            if o.quantity == 0 {
                return rej(RejectReason::ZeroQuantity);
            }
            if o.reserve_price != 0 && (o.side == Side::Sell || o.reserve_price < o.price) {
                return rej(RejectReason::InvalidOrder);
            }
        }
        // Grid.
        if o.price % m.tick != 0 || o.reserve_price % m.tick != 0 {
            return rej(RejectReason::PriceOffTick);
        }
        if o.quantity % m.lot != 0 {
            return rej(RejectReason::QuantityOffLot);
        }
        let (maker_bps, taker_bps) = self.tiers[&self.accounts[&o.account].1];
        let mut t = Order {
            id: self.next_order_id,
            account: o.account,
            market: o.market,
            client_id: o.client_order_id,
            side: o.side,
            post_only: o.post_only,
            stp: o.stp,
            price: o.price,
            leaves: o.quantity,
            filled: 0,
            decremented: 0,
            unbounded: by_quote,
            reserve: if o.reserve_price != 0 { Some(o.reserve_price) } else { None },
            maker_bps,
            taker_bps,
        };
        let hold_bps = maker_bps.max(taker_bps);
        // Size: representable, and not below the minimum.
        if !is_market {
            let value = m.notional(o.quantity, o.price).ok_or((RejectReason::Overflow, 0))?;
            if o.side == Side::Buy {
                self.required_hold(&t, t.leaves).ok_or((RejectReason::Overflow, 0))?;
            }
            // An order that may rest must leave its side's total base quantity within u64.
            if o.time_in_force == TimeInForce::Gtc
                && self.side_total(o.market, o.side) + u128::from(o.quantity) > u128::from(u64::MAX)
            {
                self.notes.push("overflow: place past the side total");
                return rej(RejectReason::Overflow);
            }
            if value < m.min_notional {
                return rej(RejectReason::BelowMinNotional);
            }
        } else if by_quote {
            if o.quote_quantity < m.min_notional {
                return rej(RejectReason::BelowMinNotional);
            }
            risk::with_fee(o.quote_quantity, hold_bps).ok_or((RejectReason::Overflow, 0))?;
        } else if o.side == Side::Buy && o.price != 0 {
            self.required_hold(&t, t.leaves).ok_or((RejectReason::Overflow, 0))?;
        }
        if o.client_order_id != 0
            && self.lookup(o.account, OrderRef::Client(o.client_order_id)).is_some()
        {
            return rej(RejectReason::DuplicateClientOrderId);
        }
        if o.post_only && m.best(o.side.opposite()).is_some_and(|p| crosses(o.side, o.price, p)) {
            return rej(RejectReason::PostOnlyWouldTake);
        }
        // An order that could rest (GTC limit) needs room for one more open order of its
        // account, counted over every market.
        if !is_market
            && o.time_in_force == TimeInForce::Gtc
            && self.orders.values().filter(|r| r.account == o.account).count()
                >= MAX_OPEN_ORDERS_PER_ACCOUNT
        {
            self.notes.push("too many open orders");
            return rej(RejectReason::TooManyOpenOrders);
        }
        // Funds: a sell holds its base; a limit buy, or a market buy with a protection
        // price, its hold formula; a market buy by quote amount that amount plus fee; a
        // market buy by quantity without protection everything free.
        let (asset, amount, funding) = match o.side {
            Side::Sell => (m.base, o.quantity, Funding::Tracked),
            Side::Buy if by_quote => {
                let budget = risk::with_fee(o.quote_quantity, hold_bps).unwrap();
                (
                    m.quote,
                    budget,
                    Funding::Budget { remaining: budget, cap: Some(o.quote_quantity) },
                )
            }
            Side::Buy if !is_market || o.price != 0 => {
                (m.quote, self.required_hold(&t, t.leaves).unwrap(), Funding::Tracked)
            }
            Side::Buy => {
                let all = self.free(o.account, m.quote);
                (m.quote, all, Funding::Budget { remaining: all, cap: None })
            }
        };
        if amount == 0 || self.free(o.account, asset) < amount {
            return rej(RejectReason::InsufficientBalance);
        }
        let fok = o.time_in_force == TimeInForce::Fok;
        let fillable = !fok || self.fok_fillable(&t, asset, amount, funding);

        // Accepted.
        self.next_order_id += 1;
        self.out.push(Event::Accepted {
            order_id: t.id,
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
        if !fillable {
            self.done(&t, DoneReason::FokUnfilled);
            return Ok(());
        }
        self.hold(o.account, asset, amount);
        let mut funding = funding;
        let stop = self.match_incoming(&mut t, &mut funding);
        let rests = !is_market && o.time_in_force == TimeInForce::Gtc;
        self.finish(t, stop, funding, rests, is_market);
        Ok(())
    }

    /// Fill or kill: would the order, placed now, trade its whole quantity? Found by trying
    /// it on a copy of everything.
    fn fok_fillable(&self, t: &Order, asset: AssetId, amount: u64, funding: Funding) -> bool {
        let mut sim = self.clone();
        let mut t = t.clone();
        let mut funding = funding;
        sim.hold(t.account, asset, amount);
        let want = t.leaves;
        let stop = sim.match_incoming(&mut t, &mut funding);
        stop == Stop::Complete && t.filled == want
    }

    fn cancel(&mut self, account: AccountId, order: OrderRef) -> Result<(), Rej> {
        self.trader(account)?;
        let id = self.lookup(account, order).ok_or((RejectReason::OrderNotFound, 0))?;
        self.cancel_resting(id, DoneReason::Cancelled);
        Ok(())
    }

    fn cancel_all(
        &mut self,
        account: AccountId,
        market: Option<MarketId>,
        side: Option<Side>,
    ) -> Result<(), Rej> {
        self.trader(account)?;
        if let Some(mk) = market {
            if !self.markets.contains_key(&mk) {
                return rej(RejectReason::UnknownMarket);
            }
        }
        let ids: Vec<OrderId> = self
            .orders
            .values()
            .filter(|o| {
                o.account == account
                    && market.is_none_or(|mk| o.market == mk)
                    && side.is_none_or(|sd| o.side == sd)
            })
            .map(|o| o.id)
            .collect();
        for &id in &ids {
            self.cancel_resting(id, DoneReason::Cancelled);
        }
        self.out.push(Event::MassCancelled { account, market, side, count: ids.len() as u32 });
        Ok(())
    }

    fn amend(
        &mut self,
        account: AccountId,
        order: OrderRef,
        new_price: u64,
        new_quantity: u64,
    ) -> Result<(), Rej> {
        self.trader(account)?;
        let id = self.lookup(account, order).ok_or((RejectReason::OrderNotFound, 0))?;
        let o = self.orders[&id].clone();
        let no = |r: RejectReason| Err((r, id));
        if let Err(r) = self.tradable(account, o.market) {
            return no(r);
        }
        if new_price == 0 && new_quantity == 0 {
            return no(RejectReason::AmendNoChange);
        }
        let m = self.markets[&o.market].clone();
        if new_price % m.tick != 0 {
            return no(RejectReason::PriceOffTick);
        }
        if new_quantity % m.lot != 0 {
            return no(RejectReason::QuantityOffLot);
        }
        let price = if new_price != 0 { new_price } else { o.price };
        let qty = if new_quantity != 0 { new_quantity } else { o.leaves };
        if price == o.price && qty == o.leaves {
            return no(RejectReason::AmendNoChange);
        }
        if let Some(r) = o.reserve {
            if price > r {
                return no(RejectReason::PriceAboveReserve);
            }
        }
        let mut new = o.clone();
        new.price = price;
        new.leaves = qty;
        let Some(value) = m.notional(qty, price) else {
            return no(RejectReason::Overflow);
        };
        let Some(new_hold) = self.required_hold(&new, qty) else {
            return no(RejectReason::Overflow);
        };
        // Its side's total base quantity, and its own quantity, must stay within u64.
        let max = u128::from(u64::MAX);
        if self.side_total(o.market, o.side) - u128::from(o.leaves) + u128::from(qty) > max {
            self.notes.push("overflow: amend past the side total");
            return no(RejectReason::Overflow);
        }
        if new.quantity() > max {
            self.notes.push("overflow: amend past the order quantity");
            return no(RejectReason::Overflow);
        }
        if value < m.min_notional {
            return no(RejectReason::BelowMinNotional);
        }
        let price_changed = price != o.price;
        let crossing =
            price_changed && m.best(o.side.opposite()).is_some_and(|p| crosses(o.side, price, p));
        if o.post_only && crossing {
            return no(RejectReason::PostOnlyWouldTake);
        }
        let old_hold = self.required_hold(&o, o.leaves).unwrap();
        let asset = self.hold_asset(&o);
        if new_hold > old_hold && self.free(account, asset) < new_hold - old_hold {
            return no(RejectReason::InsufficientBalance);
        }

        if !price_changed && qty < o.leaves {
            // A pure reduction keeps its place.
            self.reduce_resting(id, o.leaves - qty, false);
            self.out.push(Event::Amended {
                order_id: id,
                account,
                market: o.market,
                client_order_id: o.client_id,
                price,
                leaves_quantity: qty,
                kept_priority: true,
            });
            return Ok(());
        }
        // Otherwise: out of the book, re-priced and re-held, then in again like a new order.
        self.orders.remove(&id);
        self.unlink(&o);
        self.book_event(&o, BookAction::Remove, 0, o.leaves);
        if new_hold > old_hold {
            self.hold(account, asset, new_hold - old_hold);
        } else if old_hold > new_hold {
            self.release(account, asset, old_hold - new_hold);
        }
        self.out.push(Event::Amended {
            order_id: id,
            account,
            market: o.market,
            client_order_id: o.client_id,
            price,
            leaves_quantity: qty,
            kept_priority: false,
        });
        let mut t = new;
        let mut funding = Funding::Tracked;
        let stop =
            if crossing { self.match_incoming(&mut t, &mut funding) } else { Stop::LimitReached };
        self.finish(t, stop, funding, true, false);
        Ok(())
    }

    // ----- views ------------------------------------------------------------------------

    pub fn view(&self, o: &Order) -> OrderView {
        OrderView {
            order_id: o.id,
            account: o.account,
            market: o.market,
            client_order_id: o.client_id,
            side: o.side,
            price: o.price,
            quantity: fits(o.quantity(), "order quantity"),
            leaves_quantity: o.leaves,
            filled_quantity: o.filled,
            reserve_price: o.reserve.unwrap_or(0),
            post_only: o.post_only,
            stp: o.stp,
        }
    }

    pub fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance> {
        self.balances.get(&(account, asset)).map(|&(free, held)| Balance { free, held })
    }

    pub fn open_orders(&self, account: AccountId) -> Vec<OrderView> {
        self.orders.values().filter(|o| o.account == account).map(|o| self.view(o)).collect()
    }

    pub fn depth(&self, market: MarketId, side: Side) -> Vec<LevelView> {
        let Some(m) = self.markets.get(&market) else {
            return Vec::new();
        };
        m.prices_best_first(side)
            .into_iter()
            .map(|p| {
                let (quantity, orders) = self.level(market, side, p);
                LevelView { price: p, quantity, orders }
            })
            .collect()
    }

    pub fn book_orders(&self, market: MarketId, side: Side) -> Vec<OrderView> {
        let Some(m) = self.markets.get(&market) else {
            return Vec::new();
        };
        m.prices_best_first(side)
            .into_iter()
            .flat_map(|p| m.ladder(side)[&p].iter().map(|id| self.view(&self.orders[id])))
            .collect()
    }

    pub fn market_view(&self, market: MarketId) -> Option<MarketView> {
        let m = self.markets.get(&market)?;
        Some(MarketView {
            market: m.id,
            base: m.base,
            quote: m.quote,
            price_decimals: m.price_decimals,
            tick_size: m.tick,
            lot_size: m.lot,
            min_notional: m.min_notional,
            tick_value: m.tick_value,
            status: m.status,
            book_seq: m.book_seq,
        })
    }

    /// Ids of every open order (for picking targets of cancels and amends).
    pub fn open_ids(&self) -> Vec<(OrderId, AccountId, ClientOrderId)> {
        self.orders.values().map(|o| (o.id, o.account, o.client_id)).collect()
    }
}
