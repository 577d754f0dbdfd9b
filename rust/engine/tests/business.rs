//! Business scenarios: small stories about an exchange, told through a test DSL.
//!
//! Every command goes through [`Exchange::apply`], which after each step checks
//! * `check_invariants()` (structure, holds, conservation);
//! * a rejected command emits exactly one `Rejected` event and leaves the state hash as it was;
//! * every command emits at least one event;
//! * each market's `book_seq` goes up by exactly one per `Book` event, with no gaps, and
//!   `MarketStatusChanged` carries the current value;
//! * a price-level book rebuilt from the `Book` events equals the engine's depth, and balances
//!   rebuilt from the `Balance` events equal the engine's balances (so no change goes unsaid);
//! * every trade's quote value is exactly `ticks * lots * tick_value`;
//! * an order reported done is no longer open;
//! * an order's quantity (leaves + filled + what self-trade prevention decremented) changes
//!   only by amend, and its `OrderDone` accounts for all of it: filled + cancelled = quantity
//!   (a market buy by quote amount has no quantity and cancels nothing);
//! * order events are self-sufficient: a `Trade` or `Amended` names the client order ids the
//!   orders were placed with, a `Trade`'s maker leaves are what the book then shows for the
//!   maker, a `Trade` that leaves a taker (with a base quantity) nothing is followed by its
//!   `OrderDone` as filled, and an `Accepted` order that rests shows the post-only flag,
//!   self-trade prevention mode and reserve price its event reported.
//!
//! The market: BTC (8 decimals) against USDT (6 decimals), prices in cents, a tick of one
//! dollar and a lot of 0.0001 BTC. One lot at `$p` is worth `p * 100` USDT atoms, e.g. one lot
//! at $30,000 is 3 USDT = 3_000_000 atoms. Minimum order value 1 USDT.

use std::collections::HashMap;

use bourse_engine::*;

const BTC: AssetId = AssetId(1);
const USDT: AssetId = AssetId(2);
const ETH: AssetId = AssetId(3);
const BTC_USDT: MarketId = MarketId(1);
const ETH_USDT: MarketId = MarketId(2);

const FEES: AccountId = FEE_ACCOUNT;
const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);
const CAROL: AccountId = AccountId(3);
const DAVE: AccountId = AccountId(4);

/// Tier 1, "retail": maker 10 bps, taker 20 bps.
const RETAIL: u8 = 1;
/// Tier 2, "vip": maker 2 bps, taker 5 bps.
const VIP: u8 = 2;

/// BTC/USDT tick, in price units (cents): one dollar.
const TICK: u64 = 100;
/// BTC/USDT lot, in BTC atoms: 0.0001 BTC.
const LOT: u64 = 10_000;
/// ETH/USDT lot, in ETH atoms: 0.0001 ETH.
const ETH_LOT: u64 = 100_000_000_000_000;

/// A BTC/USDT price of `dollars`, in price units.
fn usd(dollars: u64) -> u64 {
    dollars * TICK
}
/// `n` BTC/USDT lots, in BTC atoms.
fn lots(n: u64) -> u64 {
    n * LOT
}
/// Whole USDT in atoms.
fn usdt(whole: u64) -> u64 {
    whole * 1_000_000
}
/// Whole BTC in atoms.
fn btc(whole: u64) -> u64 {
    whole * 100_000_000
}
/// Quote value in USDT atoms of `n` lots at `$dollars`.
fn value(dollars: u64, n: u64) -> u64 {
    dollars * n * 100
}

// ----- the DSL ---------------------------------------------------------------------------

/// What one command produced.
#[derive(Clone, Debug)]
struct Reply(Vec<Event>);

/// One trade, as the tests look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fill {
    maker: OrderId,
    price: u64,
    qty: u64,
}

/// One trade as each side's execution report sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Exec {
    qty: u64,
    maker_cid: ClientOrderId,
    maker_leaves: u64,
    taker_cid: ClientOrderId,
    taker_leaves: u64,
}

impl Reply {
    fn reject_reason(&self) -> Option<RejectReason> {
        match self.0.first() {
            Some(Event::Rejected { reason, .. }) => Some(*reason),
            _ => None,
        }
    }

    #[track_caller]
    fn rejected(&self, reason: RejectReason) {
        assert_eq!(self.reject_reason(), Some(reason), "events: {:#?}", self.0);
    }

    #[track_caller]
    fn ok(&self) -> &Self {
        assert_eq!(self.reject_reason(), None, "unexpected reject: {:#?}", self.0);
        self
    }

    /// The id of the order this command placed.
    #[track_caller]
    fn id(&self) -> OrderId {
        self.0
            .iter()
            .find_map(|e| match e {
                Event::Accepted { order_id, .. } => Some(*order_id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no order accepted: {:#?}", self.0))
    }

    fn fills(&self) -> Vec<Fill> {
        self.trades().map(|t| Fill { maker: t.0, price: t.1, qty: t.2 }).collect()
    }

    /// (maker order, price, quantity, maker fee, taker fee) of every trade.
    fn trades(&self) -> impl Iterator<Item = (OrderId, u64, u64, u64, u64)> + '_ {
        self.0.iter().filter_map(|e| match *e {
            Event::Trade { maker_order_id, price, quantity, maker_fee, taker_fee, .. } => {
                Some((maker_order_id, price, quantity, maker_fee, taker_fee))
            }
            _ => None,
        })
    }

    /// Every trade, with the client ids and leaves of both sides.
    fn execs(&self) -> Vec<Exec> {
        self.0
            .iter()
            .filter_map(|e| match *e {
                Event::Trade {
                    quantity,
                    maker_client_order_id,
                    maker_leaves_quantity,
                    taker_client_order_id,
                    taker_leaves_quantity,
                    ..
                } => Some(Exec {
                    qty: quantity,
                    maker_cid: maker_client_order_id,
                    maker_leaves: maker_leaves_quantity,
                    taker_cid: taker_client_order_id,
                    taker_leaves: taker_leaves_quantity,
                }),
                _ => None,
            })
            .collect()
    }

    /// (post only, stp, reserve price) of the `Accepted` event.
    #[track_caller]
    fn accepted(&self) -> (bool, StpMode, u64) {
        self.0
            .iter()
            .find_map(|e| match *e {
                Event::Accepted { post_only, stp, reserve_price, .. } => {
                    Some((post_only, stp, reserve_price))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no order accepted: {:#?}", self.0))
    }

    /// (reason, filled, cancelled) of the order's `OrderDone`, if this command finished it.
    fn done_of(&self, id: OrderId) -> Option<(DoneReason, u64, u64)> {
        self.0.iter().find_map(|e| match *e {
            Event::OrderDone { order_id, reason, filled_quantity, cancelled_quantity, .. }
                if order_id == id =>
            {
                Some((reason, filled_quantity, cancelled_quantity))
            }
            _ => None,
        })
    }

    /// (reason, filled, cancelled) of the order this command placed.
    #[track_caller]
    fn done(&self) -> (DoneReason, u64, u64) {
        let id = self.id();
        self.done_of(id).unwrap_or_else(|| panic!("order {id} not done: {:#?}", self.0))
    }

    /// Whether the order this command placed ended up resting.
    fn rested(&self) -> bool {
        let id = self.id();
        self.0.iter().any(|e| {
            matches!(*e, Event::Book { order_id, action: BookAction::Add, .. } if order_id == id)
        })
    }

    /// The client order id of an `Amended` event.
    #[track_caller]
    fn amended_cid(&self) -> ClientOrderId {
        self.0
            .iter()
            .find_map(|e| match *e {
                Event::Amended { client_order_id, .. } => Some(client_order_id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no amend: {:#?}", self.0))
    }

    /// (price, leaves, kept priority) of an `Amended` event.
    #[track_caller]
    fn amended(&self) -> (u64, u64, bool) {
        self.0
            .iter()
            .find_map(|e| match *e {
                Event::Amended { price, leaves_quantity, kept_priority, .. } => {
                    Some((price, leaves_quantity, kept_priority))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no amend: {:#?}", self.0))
    }

    #[track_caller]
    fn mass_cancelled(&self) -> u32 {
        self.mass_cancel_report().2
    }

    /// (market, side, count) of the `MassCancelled` event.
    #[track_caller]
    fn mass_cancel_report(&self) -> (Option<MarketId>, Option<Side>, u32) {
        self.0
            .iter()
            .find_map(|e| match *e {
                Event::MassCancelled { market, side, count, .. } => Some((market, side, count)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no mass cancel: {:#?}", self.0))
    }

    /// (action, order, order quantity after, delta) of every book change.
    fn book_changes(&self) -> Vec<(BookAction, OrderId, u64, u64)> {
        self.0
            .iter()
            .filter_map(|e| match *e {
                Event::Book { action, order_id, order_quantity, delta, .. } => {
                    Some((action, order_id, order_quantity, delta))
                }
                _ => None,
            })
            .collect()
    }
}

/// An engine plus everything the tests check after each command.
struct Exchange {
    engine: Engine,
    /// Last `book_seq` seen per market.
    book_seq: HashMap<MarketId, u64>,
    /// Price levels rebuilt from `Book` events: (market, side, price) -> (quantity, orders).
    levels: HashMap<(MarketId, Side, u64), (u64, u32)>,
    /// Balances rebuilt from `Balance` events.
    balances: HashMap<(AccountId, AssetId), (u64, u64)>,
    /// Reasons of every reject seen, for the coverage test.
    rejects: Vec<RejectReason>,
}

impl Exchange {
    /// An engine with nothing listed.
    fn empty() -> Self {
        Self::empty_with(EngineConfig { order_capacity: 1024, levels_per_side: 64 })
    }

    /// An engine with nothing listed, preallocated as `config` says.
    fn empty_with(config: EngineConfig) -> Self {
        Exchange {
            engine: Engine::new(config),
            book_seq: HashMap::new(),
            levels: HashMap::new(),
            balances: HashMap::new(),
            rejects: Vec::new(),
        }
    }

    /// BTC/USDT and ETH/USDT listed, fee tiers 1 (retail) and 2 (vip) defined, and Alice,
    /// Bob, Carol and Dave signed up on the free tier 0 with no money.
    fn btc_usdt() -> Self {
        Self::btc_usdt_on(Exchange::empty())
    }

    /// [`Exchange::btc_usdt`] on the given empty exchange.
    fn btc_usdt_on(mut x: Exchange) -> Self {
        x.apply(Command::ListAsset { asset: BTC, decimals: 8 }).ok();
        x.apply(Command::ListAsset { asset: USDT, decimals: 6 }).ok();
        x.apply(Command::ListAsset { asset: ETH, decimals: 18 }).ok();
        x.apply(Command::ListMarket {
            market: BTC_USDT,
            base: BTC,
            quote: USDT,
            price_decimals: 2,
            tick_size: TICK,
            lot_size: LOT,
            min_notional: usdt(1),
        })
        .ok();
        x.apply(Command::ListMarket {
            market: ETH_USDT,
            base: ETH,
            quote: USDT,
            price_decimals: 2,
            tick_size: 1,
            lot_size: ETH_LOT,
            min_notional: usdt(1),
        })
        .ok();
        x.apply(Command::SetFeeTier { tier: RETAIL, maker_bps: 10, taker_bps: 20 }).ok();
        x.apply(Command::SetFeeTier { tier: VIP, maker_bps: 2, taker_bps: 5 }).ok();
        for a in [ALICE, BOB, CAROL, DAVE] {
            x.apply(Command::CreateAccount { account: a, fee_tier: 0 }).ok();
        }
        x
    }

    /// Apply one command and check everything listed in the module docs.
    #[track_caller]
    fn apply(&mut self, cmd: Command) -> Reply {
        let before = self.engine.state_hash();
        let open_before = self.open_orders();
        let mut events = Vec::new();
        self.engine.apply(&cmd, &mut events);
        assert!(!events.is_empty(), "{cmd:?} produced no event");
        if let Some(Event::Rejected { reason, .. }) = events.first() {
            assert_eq!(events.len(), 1, "a reject comes alone: {events:#?}");
            assert_eq!(self.engine.state_hash(), before, "rejected {cmd:?} changed the state");
            self.rejects.push(*reason);
        } else {
            assert!(
                !events.iter().any(|e| matches!(e, Event::Rejected { .. })),
                "a reject mixed with effects: {events:#?}"
            );
        }
        if let Err(e) = self.engine.check_invariants() {
            panic!("invariants broken after {cmd:?}: {e}\nevents: {events:#?}");
        }
        self.check_events(&events);
        self.check_quantities(&open_before, &events);
        self.check_reports(&cmd, &open_before, &events);
        Reply(events)
    }

    /// Order events are self-sufficient: see the module docs.
    #[track_caller]
    fn check_reports(&self, cmd: &Command, before: &HashMap<OrderId, OrderView>, events: &[Event]) {
        let mut cid: HashMap<OrderId, ClientOrderId> =
            before.iter().map(|(id, o)| (*id, o.client_order_id)).collect();
        let mut asked = HashMap::new();
        let by_quote = matches!(cmd, Command::PlaceOrder(o) if o.quote_quantity != 0);
        for (i, e) in events.iter().enumerate() {
            match *e {
                Event::Accepted {
                    order_id,
                    client_order_id,
                    post_only,
                    stp,
                    reserve_price,
                    ..
                } => {
                    let Command::PlaceOrder(o) = cmd else { panic!("accepted by {cmd:?}") };
                    assert_eq!(
                        (client_order_id, post_only, stp, reserve_price),
                        (o.client_order_id, o.post_only, o.stp, o.reserve_price),
                        "Accepted repeats what was asked: {events:#?}"
                    );
                    cid.insert(order_id, client_order_id);
                    asked.insert(order_id, (post_only, stp, reserve_price));
                }
                Event::Amended { order_id, client_order_id, .. } => {
                    assert_eq!(client_order_id, cid[&order_id], "{events:#?}");
                }
                Event::Trade {
                    maker_order_id,
                    taker_order_id,
                    maker_client_order_id,
                    taker_client_order_id,
                    maker_leaves_quantity,
                    taker_leaves_quantity,
                    ..
                } => {
                    assert_eq!(maker_client_order_id, cid[&maker_order_id], "{events:#?}");
                    assert_eq!(taker_client_order_id, cid[&taker_order_id], "{events:#?}");
                    let book = events[i..].iter().find_map(|e| match *e {
                        Event::Book {
                            order_id, action: BookAction::Fill, order_quantity, ..
                        } if order_id == maker_order_id => Some(order_quantity),
                        _ => None,
                    });
                    assert_eq!(book, Some(maker_leaves_quantity), "maker leaves: {events:#?}");
                    if taker_leaves_quantity == 0 && !by_quote {
                        let done = events[i..].iter().find_map(|e| match *e {
                            Event::OrderDone { order_id, reason, .. }
                                if order_id == taker_order_id =>
                            {
                                Some(reason)
                            }
                            _ => None,
                        });
                        assert_eq!(done, Some(DoneReason::Filled), "taker leaves 0: {events:#?}");
                    }
                }
                _ => {}
            }
        }
        for (id, (post_only, stp, reserve_price)) in asked {
            if let Some(o) = self.engine.order(id) {
                assert_eq!((o.post_only, o.stp, o.reserve_price), (post_only, stp, reserve_price));
            }
        }
    }

    /// Every open order, by id.
    fn open_orders(&self) -> HashMap<OrderId, OrderView> {
        self.engine
            .accounts()
            .into_iter()
            .flat_map(|a| self.engine.open_orders(a))
            .map(|o| (o.order_id, o))
            .collect()
    }

    /// Quantities add up: see the module docs.
    #[track_caller]
    fn check_quantities(&self, before: &HashMap<OrderId, OrderView>, events: &[Event]) {
        // An order's quantity after this command (None: a buy by quote amount).
        let mut quantity: HashMap<OrderId, Option<u64>> =
            before.iter().map(|(id, o)| (*id, Some(o.quantity))).collect();
        for e in events {
            match *e {
                Event::Accepted { order_id, quantity: q, quote_quantity, .. } => {
                    quantity.insert(order_id, (quote_quantity == 0).then_some(q));
                }
                Event::Amended { order_id, leaves_quantity, .. } => {
                    let o = before[&order_id];
                    quantity
                        .insert(order_id, Some(o.quantity - o.leaves_quantity + leaves_quantity));
                }
                Event::OrderDone { order_id, filled_quantity, cancelled_quantity, .. } => {
                    match quantity[&order_id] {
                        Some(q) => assert_eq!(
                            filled_quantity + cancelled_quantity,
                            q,
                            "order {order_id}: filled + cancelled is not its quantity: {events:#?}"
                        ),
                        None => assert_eq!(cancelled_quantity, 0, "{events:#?}"),
                    }
                }
                _ => {}
            }
        }
        for (id, o) in self.open_orders() {
            assert_eq!(
                Some(o.quantity),
                quantity[&id],
                "order {id}'s quantity changed: {o:?} {events:#?}"
            );
            assert!(o.quantity >= o.leaves_quantity + o.filled_quantity, "{o:?}");
        }
    }

    /// Apply one command with only the incremental checks (book_seq, the rebuilt levels and
    /// balances, trade values): for filling a book with many orders, where the full checks
    /// after every step would cost O(state) each. The next [`Exchange::apply`] compares the
    /// rebuilt levels and balances with the engine and checks every invariant.
    #[track_caller]
    fn apply_quick(&mut self, cmd: Command) -> Reply {
        let mut events = Vec::new();
        self.engine.apply(&cmd, &mut events);
        assert!(!events.is_empty(), "{cmd:?} produced no event");
        if let Some(Event::Rejected { reason, .. }) = events.first() {
            assert_eq!(events.len(), 1, "a reject comes alone: {events:#?}");
            self.rejects.push(*reason);
        }
        self.follow_events(&events);
        Reply(events)
    }

    /// Place `n` one-lot GTC buys for `account` through [`Exchange::apply_quick`], the `i`th
    /// at `price(i)` with client order id `i + 1`; each must rest. Their ids, in order.
    #[track_caller]
    fn rest_buys(
        &mut self,
        account: AccountId,
        n: usize,
        price: impl Fn(usize) -> u64,
    ) -> Vec<OrderId> {
        (0..n)
            .map(|i| {
                let o = self.buy(account, price(i), lots(1)).cid(i as u64 + 1).o;
                let r = self.apply_quick(Command::PlaceOrder(o));
                assert!(r.ok().rested(), "order {i} did not rest: {:#?}", r.0);
                r.id()
            })
            .collect()
    }

    /// Follow one command's events: book_seq, the rebuilt levels and balances, trade values.
    /// The orders it reported done.
    #[track_caller]
    fn follow_events(&mut self, events: &[Event]) -> Vec<OrderId> {
        let mut done = Vec::new();
        for e in events {
            match *e {
                Event::Book {
                    market, book_seq, side, price, level_quantity, level_orders, ..
                } => {
                    let seq = self.book_seq.entry(market).or_insert(0);
                    assert_eq!(book_seq, *seq + 1, "book_seq gap in market {market:?}");
                    *seq = book_seq;
                    if level_orders == 0 {
                        assert_eq!(level_quantity, 0);
                        self.levels.remove(&(market, side, price));
                    } else {
                        self.levels.insert((market, side, price), (level_quantity, level_orders));
                    }
                }
                Event::MarketStatusChanged { market, book_seq, .. } => {
                    assert_eq!(book_seq, self.book_seq.get(&market).copied().unwrap_or(0));
                }
                Event::Balance { account, asset, free, held } => {
                    self.balances.insert((account, asset), (free, held));
                }
                Event::Trade { market, price, quantity, quote_quantity, .. } => {
                    let m = self.engine.market(market).expect("trade in a listed market");
                    assert_eq!(price % m.tick_size, 0);
                    assert_eq!(quantity % m.lot_size, 0);
                    let exact = u128::from(price / m.tick_size)
                        * u128::from(quantity / m.lot_size)
                        * u128::from(m.tick_value);
                    assert_eq!(u128::from(quote_quantity), exact, "trade value");
                }
                Event::OrderDone { order_id, .. } => done.push(order_id),
                _ => {}
            }
        }
        done
    }

    #[track_caller]
    fn check_events(&mut self, events: &[Event]) {
        for id in self.follow_events(events) {
            assert!(self.engine.order(id).is_none(), "order {id} is done but still open");
        }
        for m in self.engine.markets() {
            let seq = self.engine.market(m).unwrap().book_seq;
            assert_eq!(seq, self.book_seq.get(&m).copied().unwrap_or(0), "book_seq of {m:?}");
            for side in [Side::Buy, Side::Sell] {
                let depth = self.engine.depth(m, side, usize::MAX);
                let feed = self.levels.iter().filter(|(k, _)| k.0 == m && k.1 == side).count();
                assert_eq!(depth.len(), feed, "{m:?} {side:?}: feed has other levels");
                for l in depth {
                    assert_eq!(
                        self.levels.get(&(m, side, l.price)),
                        Some(&(l.quantity, l.orders)),
                        "{m:?} {side:?} level {} differs from the feed",
                        l.price
                    );
                }
            }
        }
        for a in self.engine.accounts() {
            for (asset, _) in self.engine.assets() {
                let b = self.engine.balance(a, asset).unwrap();
                let fed = self.balances.get(&(a, asset)).copied().unwrap_or((0, 0));
                assert_eq!((b.free, b.held), fed, "balance of {a:?} in {asset:?} unreported");
            }
        }
    }

    // ----- money and reference data -----

    #[track_caller]
    fn deposit(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Reply {
        self.apply(Command::Deposit { account, asset, amount })
    }

    #[track_caller]
    fn withdraw(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Reply {
        self.apply(Command::Withdraw { account, asset, amount })
    }

    #[track_caller]
    fn fee_tier(&mut self, account: AccountId, fee_tier: u8) -> Reply {
        self.apply(Command::SetAccountFeeTier { account, fee_tier })
    }

    #[track_caller]
    fn set_status(&mut self, market: MarketId, status: MarketStatus) -> Reply {
        self.apply(Command::SetMarketStatus { market, status })
    }

    #[track_caller]
    fn set_account_status(&mut self, account: AccountId, status: AccountStatus) -> Reply {
        self.apply(Command::SetAccountStatus { account, status })
    }

    /// (free, held).
    fn balance(&self, account: AccountId, asset: AssetId) -> (u64, u64) {
        let b = self.engine.balance(account, asset).expect("known account and asset");
        (b.free, b.held)
    }

    /// Every account's balance in every asset.
    fn all_balances(&self) -> Vec<(AccountId, AssetId, u64, u64)> {
        let mut v = Vec::new();
        for a in self.engine.accounts() {
            for (asset, _) in self.engine.assets() {
                let (f, h) = self.balance(a, asset);
                v.push((a, asset, f, h));
            }
        }
        v
    }

    // ----- orders -----

    fn ticket(&mut self, account: AccountId, side: Side, order_type: OrderType) -> Ticket<'_> {
        Ticket {
            x: self,
            o: NewOrder {
                account,
                market: BTC_USDT,
                client_order_id: 0,
                side,
                order_type,
                time_in_force: TimeInForce::Gtc,
                post_only: false,
                stp: StpMode::None,
                price: 0,
                quantity: 0,
                quote_quantity: 0,
                reserve_price: 0,
            },
        }
    }

    /// A limit buy; finish with `.gtc()`, `.ioc()`, `.fok()` or `.post_only()`.
    fn buy(&mut self, account: AccountId, price: u64, quantity: u64) -> Ticket<'_> {
        let mut t = self.ticket(account, Side::Buy, OrderType::Limit);
        t.o.price = price;
        t.o.quantity = quantity;
        t
    }

    /// A limit sell.
    fn sell(&mut self, account: AccountId, price: u64, quantity: u64) -> Ticket<'_> {
        let mut t = self.ticket(account, Side::Sell, OrderType::Limit);
        t.o.price = price;
        t.o.quantity = quantity;
        t
    }

    /// A market buy of a base quantity; finish with `.send()`.
    fn market_buy(&mut self, account: AccountId, quantity: u64) -> Ticket<'_> {
        let mut t = self.ticket(account, Side::Buy, OrderType::Market);
        t.o.quantity = quantity;
        t.o.time_in_force = TimeInForce::Ioc;
        t
    }

    /// A market buy spending at most `quote` (plus fees).
    fn market_buy_quote(&mut self, account: AccountId, quote: u64) -> Ticket<'_> {
        let mut t = self.ticket(account, Side::Buy, OrderType::Market);
        t.o.quote_quantity = quote;
        t.o.time_in_force = TimeInForce::Ioc;
        t
    }

    /// A market sell of a base quantity.
    fn market_sell(&mut self, account: AccountId, quantity: u64) -> Ticket<'_> {
        let mut t = self.ticket(account, Side::Sell, OrderType::Market);
        t.o.quantity = quantity;
        t.o.time_in_force = TimeInForce::Ioc;
        t
    }

    #[track_caller]
    fn cancel(&mut self, account: AccountId, id: OrderId) -> Reply {
        self.apply(Command::CancelOrder { account, order: OrderRef::Id(id) })
    }

    #[track_caller]
    fn cancel_cid(&mut self, account: AccountId, cid: ClientOrderId) -> Reply {
        self.apply(Command::CancelOrder { account, order: OrderRef::Client(cid) })
    }

    #[track_caller]
    fn cancel_all(&mut self, account: AccountId, market: Option<MarketId>) -> Reply {
        self.apply(Command::CancelAll { account, market, side: None })
    }

    /// Cancel-all limited to one side (and maybe one market).
    #[track_caller]
    fn cancel_side(&mut self, account: AccountId, market: Option<MarketId>, side: Side) -> Reply {
        self.apply(Command::CancelAll { account, market, side: Some(side) })
    }

    /// Amend: a new price and/or remaining quantity, 0 to keep.
    #[track_caller]
    fn amend(
        &mut self,
        account: AccountId,
        id: OrderId,
        new_price: u64,
        new_quantity: u64,
    ) -> Reply {
        self.apply(Command::AmendOrder {
            account,
            order: OrderRef::Id(id),
            new_price,
            new_quantity,
        })
    }

    // ----- the book -----

    /// (price, quantity, orders) of each BTC/USDT level of `side`, best first.
    fn levels_of(&self, side: Side) -> Vec<(u64, u64, u32)> {
        self.engine
            .depth(BTC_USDT, side, usize::MAX)
            .into_iter()
            .map(|l| (l.price, l.quantity, l.orders))
            .collect()
    }

    fn bids(&self) -> Vec<(u64, u64, u32)> {
        self.levels_of(Side::Buy)
    }

    fn asks(&self) -> Vec<(u64, u64, u32)> {
        self.levels_of(Side::Sell)
    }

    /// Order ids of one BTC/USDT side in matching order.
    fn queue(&self, side: Side) -> Vec<OrderId> {
        self.engine.book_orders(BTC_USDT, side).iter().map(|o| o.order_id).collect()
    }

    fn leaves(&self, id: OrderId) -> Option<u64> {
        self.engine.order(id).map(|o| o.leaves_quantity)
    }
}

/// An order being written.
struct Ticket<'a> {
    x: &'a mut Exchange,
    o: NewOrder,
}

impl Ticket<'_> {
    fn cid(mut self, client_order_id: ClientOrderId) -> Self {
        self.o.client_order_id = client_order_id;
        self
    }
    fn stp(mut self, stp: StpMode) -> Self {
        self.o.stp = stp;
        self
    }
    fn reserve(mut self, reserve_price: u64) -> Self {
        self.o.reserve_price = reserve_price;
        self
    }
    fn protect(mut self, price: u64) -> Self {
        self.o.price = price;
        self
    }
    fn in_market(mut self, market: MarketId) -> Self {
        self.o.market = market;
        self
    }
    #[track_caller]
    fn tif(mut self, tif: TimeInForce) -> Reply {
        self.o.time_in_force = tif;
        self.x.apply(Command::PlaceOrder(self.o))
    }
    #[track_caller]
    fn gtc(self) -> Reply {
        self.tif(TimeInForce::Gtc)
    }
    #[track_caller]
    fn ioc(self) -> Reply {
        self.tif(TimeInForce::Ioc)
    }
    #[track_caller]
    fn fok(self) -> Reply {
        self.tif(TimeInForce::Fok)
    }
    #[track_caller]
    fn post_only(mut self) -> Reply {
        self.o.post_only = true;
        self.tif(TimeInForce::Gtc)
    }
    /// Send as written (market orders).
    #[track_caller]
    fn send(self) -> Reply {
        self.x.apply(Command::PlaceOrder(self.o))
    }
}

/// An exchange where Bob, Carol and Dave each have 1 BTC and 100,000 USDT.
fn funded() -> Exchange {
    let mut x = Exchange::btc_usdt();
    for a in [BOB, CAROL, DAVE] {
        x.deposit(a, BTC, btc(1)).ok();
        x.deposit(a, USDT, usdt(100_000)).ok();
    }
    x
}

// ----- price-time priority ----------------------------------------------------------------

#[test]
fn better_prices_fill_first_then_older_orders_within_a_price() {
    let mut x = funded();
    let b1 = x.sell(BOB, usd(30_010), lots(1)).gtc().id();
    let c1 = x.sell(CAROL, usd(30_000), lots(1)).gtc().id();
    let d1 = x.sell(DAVE, usd(30_000), lots(2)).gtc().id();
    let b2 = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let c2 = x.sell(CAROL, usd(29_990), lots(1)).gtc().id();
    assert_eq!(
        x.asks(),
        vec![(usd(29_990), lots(1), 1), (usd(30_000), lots(4), 3), (usd(30_010), lots(1), 1)]
    );
    assert_eq!(x.queue(Side::Sell), vec![c2, c1, d1, b2, b1]);

    x.deposit(ALICE, USDT, usdt(100)).ok();
    let r = x.buy(ALICE, usd(30_010), lots(6)).gtc();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: c2, price: usd(29_990), qty: lots(1) },
            Fill { maker: c1, price: usd(30_000), qty: lots(1) },
            Fill { maker: d1, price: usd(30_000), qty: lots(2) },
            Fill { maker: b2, price: usd(30_000), qty: lots(1) },
            Fill { maker: b1, price: usd(30_010), qty: lots(1) },
        ]
    );
    assert_eq!(r.done(), (DoneReason::Filled, lots(6), 0));
    assert!(x.asks().is_empty());
    // Alice paid the makers' prices: 29,990 + 4 * 30,000 + 30,010 dollars per lot.
    let paid = value(29_990, 1) + value(30_000, 4) + value(30_010, 1);
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - paid, 0));
    assert_eq!(x.balance(ALICE, BTC), (lots(6), 0));
}

#[test]
fn partial_fill_leaves_the_rest_resting_at_the_front() {
    let mut x = funded();
    let big = x.sell(BOB, usd(30_000), lots(5)).gtc().id();
    let later = x.sell(CAROL, usd(30_000), lots(1)).gtc().id();
    x.deposit(ALICE, USDT, usdt(100)).ok();

    let r = x.buy(ALICE, usd(30_000), lots(2)).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: big, price: usd(30_000), qty: lots(2) }]);
    assert_eq!(r.book_changes(), vec![(BookAction::Fill, big, lots(3), lots(2))]);
    assert_eq!(x.leaves(big), Some(lots(3)));
    assert_eq!(x.engine.order(big).unwrap().filled_quantity, lots(2));
    assert_eq!(x.queue(Side::Sell), vec![big, later], "a partial fill keeps priority");
    assert_eq!(x.balance(BOB, BTC), (btc(1) - lots(5), lots(3)));

    // The taker is larger than the book: it fills what it can and rests the rest.
    let r = x.buy(ALICE, usd(30_000), lots(6)).gtc();
    assert_eq!(r.fills().len(), 2);
    assert!(r.rested());
    assert_eq!(x.bids(), vec![(usd(30_000), lots(2), 1)]);
    assert_eq!(x.leaves(r.id()), Some(lots(2)));
    assert_eq!(x.engine.order(r.id()).unwrap().filled_quantity, lots(4));
}

// ----- fees ---------------------------------------------------------------------------------

#[test]
fn maker_and_taker_fees_by_tier_go_to_the_fee_account_rounded_down() {
    let mut x = Exchange::btc_usdt();
    assert_eq!(x.engine.fee_rates(ALICE), Some((0, 0, 0)), "tier 0 is free until set");
    x.fee_tier(ALICE, RETAIL).ok(); // maker 10, taker 20 bps
    x.fee_tier(BOB, VIP).ok(); // maker 2, taker 5 bps
    assert_eq!(x.engine.fee_rates(ALICE), Some((RETAIL, 10, 20)));
    assert_eq!(x.engine.fee_rates(BOB), Some((VIP, 2, 5)));
    assert_eq!(x.engine.fee_rates(AccountId(999_999)), None);
    x.deposit(ALICE, BTC, btc(1)).ok();
    x.deposit(BOB, USDT, usdt(100)).ok();

    // Alice makes at $30,001; Bob takes. Value 3,000,100 atoms.
    let ask = x.sell(ALICE, usd(30_001), lots(1)).gtc().id();
    // Bob's hold: value plus his worst-case fee (5 bps): 3,000,100 + 1,500 (1,500.05 rounded down).
    let r = x.buy(BOB, usd(30_001), lots(1)).gtc();
    let (maker, price, qty, maker_fee, taker_fee) = r.trades().next().unwrap();
    assert_eq!((maker, price, qty), (ask, usd(30_001), lots(1)));
    assert_eq!(maker_fee, 3_000, "10 bps of 3,000,100 is 3,000.1: rounded down");
    assert_eq!(taker_fee, 1_500, "5 bps of 3,000,100 is 1,500.05: rounded down");
    assert_eq!(x.balance(ALICE, USDT), (3_000_100 - 3_000, 0));
    assert_eq!(x.balance(ALICE, BTC), (btc(1) - lots(1), 0));
    assert_eq!(x.balance(BOB, USDT), (usdt(100) - 3_000_100 - 1_500, 0));
    assert_eq!(x.balance(BOB, BTC), (lots(1), 0));
    assert_eq!(x.balance(FEES, USDT), (4_500, 0));

    // Now Alice takes from Bob (Bob maker at 2 bps, Alice taker at 20 bps), Alice buying.
    x.deposit(ALICE, USDT, usdt(10)).ok();
    x.deposit(BOB, BTC, lots(1)).ok();
    let ask = x.sell(BOB, usd(29_999), lots(2)).gtc().id();
    let r = x.buy(ALICE, usd(29_999), lots(2)).ioc();
    let (maker, _, _, maker_fee, taker_fee) = r.trades().next().unwrap();
    assert_eq!(maker, ask);
    // Value 2 * 2,999,900 = 5,999,800; 2 bps = 1,199.96 -> 1,199; 20 bps = 11,999.6 -> 11,999.
    assert_eq!((maker_fee, taker_fee), (1_199, 11_999));
    assert_eq!(x.balance(FEES, USDT), (4_500 + 1_199 + 11_999, 0));
    assert_eq!(x.balance(ALICE, USDT), (2_997_100 + usdt(10) - 5_999_800 - 11_999, 0));
}

#[test]
fn fee_rates_are_captured_when_the_order_is_placed() {
    let mut x = funded();
    x.fee_tier(BOB, RETAIL).ok();
    let ask = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    // Bob moves to the free tier; his resting order keeps its 10 bps maker rate.
    x.fee_tier(BOB, 0).ok();
    let r = x.buy(CAROL, usd(30_000), lots(1)).gtc();
    let (maker, _, _, maker_fee, taker_fee) = r.trades().next().unwrap();
    assert_eq!((maker, maker_fee, taker_fee), (ask, 3_000, 0));
    assert_eq!(x.balance(FEES, USDT), (3_000, 0));
}

#[test]
fn a_resting_buy_holds_value_plus_worst_case_fee_released_on_cancel() {
    let mut x = Exchange::btc_usdt();
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(10)).ok();
    // 2 lots at $30,000 = 6,000,000, plus 20 bps (the larger of 10 and 20) = 12,000.
    let id = x.buy(ALICE, usd(30_000), lots(2)).gtc().id();
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - 6_012_000, 6_012_000));
    // Not enough left for another such order.
    x.buy(ALICE, usd(30_000), lots(2)).gtc().rejected(RejectReason::InsufficientBalance);
    // But withdrawing the exact free amount works, and one atom more does not.
    x.withdraw(ALICE, USDT, usdt(10) - 6_012_000 + 1).rejected(RejectReason::InsufficientBalance);
    x.withdraw(ALICE, USDT, usdt(10) - 6_012_000).ok();
    assert_eq!(x.balance(ALICE, USDT), (0, 6_012_000));

    let r = x.cancel(ALICE, id);
    assert_eq!(r.done_of(id), Some((DoneReason::Cancelled, 0, lots(2))));
    assert_eq!(x.balance(ALICE, USDT), (6_012_000, 0));
    // A sell holds its base quantity, also released on cancel.
    x.deposit(ALICE, BTC, lots(3)).ok();
    let id = x.sell(ALICE, usd(30_000), lots(3)).gtc().id();
    assert_eq!(x.balance(ALICE, BTC), (0, lots(3)));
    x.cancel(ALICE, id).ok();
    assert_eq!(x.balance(ALICE, BTC), (lots(3), 0));
}

#[test]
fn a_maker_buy_pays_the_maker_fee_and_gets_the_rest_of_its_fee_hold_back() {
    let mut x = funded();
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(10)).ok();
    x.buy(ALICE, usd(30_000), lots(2)).gtc().ok();
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - 6_012_000, 6_012_000));
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    // One lot filled as maker: 3,000,000 + 10 bps (3,000). The hold is now 1 lot: 3,006,000.
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - 3_003_000 - 3_006_000, 3_006_000));
}

#[test]
fn a_buy_filled_at_a_better_price_gets_the_difference_back_at_once() {
    let mut x = funded();
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(20)).ok();
    let ask = x.sell(BOB, usd(29_900), lots(1)).gtc().id();
    // Alice bids $30,000 for 3 lots: hold 9,000,000 + 18,000 fee.
    let r = x.buy(ALICE, usd(30_000), lots(3)).gtc();
    // One lot traded at $29,900 as taker: 2,990,000 + 20 bps 5,980.
    assert_eq!(r.fills(), vec![Fill { maker: ask, price: usd(29_900), qty: lots(1) }]);
    // The remaining 2 lots hold 6,000,000 + 12,000; the rest is free again.
    let held = 6_012_000;
    assert_eq!(x.balance(ALICE, USDT), (usdt(20) - 2_995_980 - held, held));
}

// ----- reserve price --------------------------------------------------------------------------

#[test]
fn a_reserve_price_holds_for_the_higher_price_and_caps_amends() {
    let mut x = funded();
    x.deposit(ALICE, USDT, usdt(10)).ok();
    let id = x.buy(ALICE, usd(29_000), lots(2)).reserve(usd(30_000)).gtc().id();
    assert_eq!(x.engine.order(id).unwrap().reserve_price, usd(30_000));
    // The hold is computed at the reserve price.
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - value(30_000, 2), value(30_000, 2)));
    // Up to the reserve: no new funds needed, the hold does not move.
    x.amend(ALICE, id, usd(30_000), 0).ok();
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - value(30_000, 2), value(30_000, 2)));
    // Beyond it: refused, whatever the free balance.
    let before = x.engine.state_hash();
    x.amend(ALICE, id, usd(30_001), 0).rejected(RejectReason::PriceAboveReserve);
    assert_eq!(x.engine.state_hash(), before);
    // Down: the hold stays at the reserve price.
    x.amend(ALICE, id, usd(28_000), 0).ok();
    assert_eq!(x.balance(ALICE, USDT).1, value(30_000, 2));
    // A fill at a lower price gives back the difference for the filled lot.
    x.sell(BOB, usd(28_000), lots(1)).gtc().ok();
    assert_eq!(
        x.balance(ALICE, USDT),
        (usdt(10) - value(28_000, 1) - value(30_000, 1), value(30_000, 1))
    );
    // A reserve below the price, or on a sell, is not a valid order.
    x.buy(ALICE, usd(29_000), lots(1))
        .reserve(usd(28_000))
        .gtc()
        .rejected(RejectReason::InvalidOrder);
    x.sell(BOB, usd(31_000), lots(1))
        .reserve(usd(32_000))
        .gtc()
        .rejected(RejectReason::InvalidOrder);
}

// ----- amend ----------------------------------------------------------------------------------

#[test]
fn reducing_quantity_keeps_priority() {
    let mut x = funded();
    let first = x.sell(BOB, usd(30_000), lots(5)).gtc().id();
    let second = x.sell(CAROL, usd(30_000), lots(1)).gtc().id();
    let r = x.amend(BOB, first, 0, lots(2));
    assert_eq!(r.amended(), (usd(30_000), lots(2), true));
    assert_eq!(r.book_changes(), vec![(BookAction::Reduce, first, lots(2), lots(3))]);
    assert_eq!(x.balance(BOB, BTC), (btc(1) - lots(2), lots(2)));
    // Reducing to the same price given explicitly is still a reduce.
    x.amend(BOB, first, usd(30_000), lots(1)).ok();
    assert_eq!(x.queue(Side::Sell), vec![first, second]);
    // A later buy hits Bob first.
    let r = x.buy(DAVE, usd(30_000), lots(1)).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: first, price: usd(30_000), qty: lots(1) }]);
    assert_eq!(x.queue(Side::Sell), vec![second]);
}

#[test]
fn a_new_price_or_a_larger_quantity_loses_priority() {
    let mut x = funded();
    let a = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let b = x.sell(CAROL, usd(30_000), lots(1)).gtc().id();
    let c = x.sell(DAVE, usd(30_001), lots(1)).gtc().id();

    // Increase: Bob goes to the back of $30,000.
    let r = x.amend(BOB, a, 0, lots(2));
    assert_eq!(r.amended(), (usd(30_000), lots(2), false));
    assert_eq!(
        r.book_changes(),
        vec![(BookAction::Remove, a, 0, lots(1)), (BookAction::Add, a, lots(2), lots(2))]
    );
    assert_eq!(x.queue(Side::Sell), vec![b, a, c]);
    assert_eq!(x.balance(BOB, BTC), (btc(1) - lots(2), lots(2)));

    // New price: Carol joins $30,001 behind Dave.
    let r = x.amend(CAROL, b, usd(30_001), 0);
    assert_eq!(r.amended(), (usd(30_001), lots(1), false));
    assert_eq!(x.queue(Side::Sell), vec![a, c, b]);
    // And back to $30,000: behind Bob now.
    x.amend(CAROL, b, usd(30_000), 0).ok();
    assert_eq!(x.queue(Side::Sell), vec![a, b, c]);

    x.deposit(ALICE, USDT, usdt(100)).ok();
    let r = x.buy(ALICE, usd(30_001), lots(4)).gtc();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: a, price: usd(30_000), qty: lots(2) },
            Fill { maker: b, price: usd(30_000), qty: lots(1) },
            Fill { maker: c, price: usd(30_001), qty: lots(1) },
        ]
    );
}

#[test]
fn an_amend_that_crosses_trades_like_an_incoming_order() {
    let mut x = funded();
    x.deposit(ALICE, USDT, usdt(10)).ok();
    let ask = x.sell(BOB, usd(30_010), lots(2)).gtc().id();
    let bid = x.buy(ALICE, usd(30_000), lots(3)).gtc().id();
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - value(30_000, 3), value(30_000, 3)));

    let r = x.amend(ALICE, bid, usd(30_010), 0);
    assert_eq!(r.amended(), (usd(30_010), lots(3), false));
    assert_eq!(r.fills(), vec![Fill { maker: ask, price: usd(30_010), qty: lots(2) }]);
    assert_eq!(r.done_of(ask), Some((DoneReason::Filled, lots(2), 0)));
    assert_eq!(
        r.book_changes(),
        vec![
            (BookAction::Remove, bid, 0, lots(3)),
            (BookAction::Fill, ask, 0, lots(2)),
            (BookAction::Add, bid, lots(1), lots(1)),
        ]
    );
    assert_eq!(x.bids(), vec![(usd(30_010), lots(1), 1)]);
    assert!(x.asks().is_empty());
    assert_eq!(x.balance(ALICE, USDT), (usdt(10) - value(30_010, 3), value(30_010, 1)));
    assert_eq!(x.balance(ALICE, BTC), (lots(2), 0));

    // A sell amended down through the bid, filling it completely: nothing rests.
    let sell = x.sell(CAROL, usd(30_020), lots(1)).gtc().id();
    let r = x.amend(CAROL, sell, usd(30_000), 0);
    assert_eq!(r.fills(), vec![Fill { maker: bid, price: usd(30_010), qty: lots(1) }]);
    assert_eq!(r.done_of(sell), Some((DoneReason::Filled, lots(1), 0)));
    assert!(x.bids().is_empty() && x.asks().is_empty());

    // An amend that needs more funds than are free is refused.
    x.deposit(ALICE, USDT, usdt(10)).ok();
    let bid = x.buy(ALICE, usd(10_000), lots(1)).gtc().id();
    let (free, _) = x.balance(ALICE, USDT);
    x.amend(ALICE, bid, 0, lots(1) * (free / value(10_000, 1) + 2))
        .rejected(RejectReason::InsufficientBalance);
    x.amend(ALICE, bid, 0, lots(1)).rejected(RejectReason::AmendNoChange);
    x.amend(ALICE, bid, usd(10_000), 0).rejected(RejectReason::AmendNoChange);
    x.amend(ALICE, bid, 0, 0).rejected(RejectReason::AmendNoChange);
    x.amend(ALICE, bid, usd(10_000) + 1, 0).rejected(RejectReason::PriceOffTick);
    x.amend(ALICE, bid, 0, lots(1) + 1).rejected(RejectReason::QuantityOffLot);
    x.amend(ALICE, bid, usd(100), 0).rejected(RejectReason::BelowMinNotional);
    x.amend(BOB, bid, usd(9_000), 0).rejected(RejectReason::OrderNotFound);
}

#[test]
fn an_amend_that_would_trade_with_the_same_account_obeys_its_stp_mode() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_010), lots(1)).gtc().id();
    let bid = x.buy(BOB, usd(30_000), lots(1)).stp(StpMode::ExpireTaker).gtc().id();
    let r = x.amend(BOB, bid, usd(30_010), 0);
    assert!(r.fills().is_empty());
    assert_eq!(r.done_of(bid), Some((DoneReason::SelfTrade, 0, lots(1))));
    assert_eq!(x.queue(Side::Sell), vec![ask]);
    assert!(x.bids().is_empty());
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000), 0));
}

// ----- order types --------------------------------------------------------------------------

#[test]
fn post_only_is_refused_when_it_would_take() {
    let mut x = funded();
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    x.buy(CAROL, usd(30_000), lots(1)).post_only().rejected(RejectReason::PostOnlyWouldTake);
    x.buy(CAROL, usd(30_500), lots(1)).post_only().rejected(RejectReason::PostOnlyWouldTake);
    let bid = x.buy(CAROL, usd(29_999), lots(1)).post_only();
    assert!(bid.rested());
    assert!(x.engine.order(bid.id()).unwrap().post_only);
    // Amending it across the spread is refused too; moving it within the bids is fine.
    x.amend(CAROL, bid.id(), usd(30_000), 0).rejected(RejectReason::PostOnlyWouldTake);
    x.amend(CAROL, bid.id(), usd(29_998), 0).ok();
    // Post-only only makes sense for a resting limit order.
    x.buy(CAROL, usd(29_000), lots(1))
        .post_only_with(TimeInForce::Ioc)
        .rejected(RejectReason::InvalidOrder);
    x.buy(CAROL, usd(29_000), lots(1))
        .post_only_with(TimeInForce::Fok)
        .rejected(RejectReason::InvalidOrder);
}

impl Ticket<'_> {
    #[track_caller]
    fn post_only_with(mut self, tif: TimeInForce) -> Reply {
        self.o.post_only = true;
        self.tif(tif)
    }
}

#[test]
fn ioc_trades_what_it_can_and_expires_the_rest() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    x.sell(BOB, usd(30_100), lots(1)).gtc().ok();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    let r = x.buy(ALICE, usd(30_000), lots(3)).ioc();
    assert_eq!(r.fills(), vec![Fill { maker: ask, price: usd(30_000), qty: lots(1) }]);
    assert_eq!(r.done(), (DoneReason::Expired, lots(1), lots(2)));
    assert!(!r.rested());
    assert!(x.bids().is_empty());
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - value(30_000, 1), 0));
    // Nothing to trade at all: expires untouched.
    let r = x.buy(ALICE, usd(29_000), lots(1)).ioc();
    assert_eq!(r.done(), (DoneReason::Expired, 0, lots(1)));
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - value(30_000, 1), 0));
}

#[test]
fn fok_fills_completely_or_not_at_all() {
    let mut x = funded();
    let b = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let c = x.sell(CAROL, usd(30_001), lots(2)).gtc().id();
    x.deposit(ALICE, USDT, usdt(100)).ok();

    let balances = x.all_balances();
    let asks = x.asks();
    for (price, qty) in [(usd(30_001), lots(4)), (usd(30_000), lots(2))] {
        let r = x.buy(ALICE, price, qty).fok();
        assert_eq!(r.done(), (DoneReason::FokUnfilled, 0, qty));
        assert!(r.fills().is_empty() && r.book_changes().is_empty());
        assert!(!r.0.iter().any(|e| matches!(e, Event::Balance { .. })));
        assert_eq!(x.all_balances(), balances);
        assert_eq!(x.asks(), asks);
    }
    let r = x.buy(ALICE, usd(30_001), lots(3)).fok();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: b, price: usd(30_000), qty: lots(1) },
            Fill { maker: c, price: usd(30_001), qty: lots(2) },
        ]
    );
    assert_eq!(r.done(), (DoneReason::Filled, lots(3), 0));
    // A FOK sell too.
    x.buy(DAVE, usd(29_000), lots(2)).gtc().ok();
    let r = x.sell(ALICE, usd(29_000), lots(3)).fok();
    assert_eq!(r.done(), (DoneReason::FokUnfilled, 0, lots(3)));
    let r = x.sell(ALICE, usd(29_000), lots(2)).fok();
    assert_eq!(r.done(), (DoneReason::Filled, lots(2), 0));
}

#[test]
fn market_buy_by_quantity_walks_the_book() {
    let mut x = funded();
    let b = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let c = x.sell(CAROL, usd(30_010), lots(2)).gtc().id();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    let r = x.market_buy(ALICE, lots(2)).send();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: b, price: usd(30_000), qty: lots(1) },
            Fill { maker: c, price: usd(30_010), qty: lots(1) },
        ]
    );
    assert_eq!(r.done(), (DoneReason::Filled, lots(2), 0));
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - value(30_000, 1) - value(30_010, 1), 0));
    // More than the book has: the rest expires.
    let r = x.market_buy(ALICE, lots(5)).send();
    assert_eq!(r.done(), (DoneReason::Expired, lots(1), lots(4)));
    assert_eq!(x.balance(ALICE, USDT).1, 0);
    // Nothing left.
    let r = x.market_buy(ALICE, lots(1)).send();
    assert_eq!(r.done(), (DoneReason::Expired, 0, lots(1)));
}

#[test]
fn market_sell_by_quantity_walks_the_bids() {
    let mut x = funded();
    let b = x.buy(BOB, usd(30_000), lots(1)).gtc().id();
    let c = x.buy(CAROL, usd(29_000), lots(1)).gtc().id();
    x.deposit(ALICE, BTC, lots(3)).ok();
    let r = x.market_sell(ALICE, lots(3)).send();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: b, price: usd(30_000), qty: lots(1) },
            Fill { maker: c, price: usd(29_000), qty: lots(1) },
        ]
    );
    assert_eq!(r.done(), (DoneReason::Expired, lots(2), lots(1)));
    assert_eq!(x.balance(ALICE, BTC), (lots(1), 0));
    assert_eq!(x.balance(ALICE, USDT), (value(30_000, 1) + value(29_000, 1), 0));
}

#[test]
fn market_buy_by_quote_amount_spends_at_most_that() {
    let mut x = funded();
    x.fee_tier(ALICE, RETAIL).ok();
    let b = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let c = x.sell(CAROL, usd(30_001), lots(1)).gtc().id();
    x.deposit(ALICE, USDT, usdt(100)).ok();

    // 5 USDT buys one lot at $30,000 (3 USDT); the next lot costs 3.0001 USDT: not affordable.
    let r = x.market_buy_quote(ALICE, usdt(5)).send();
    assert_eq!(r.fills(), vec![Fill { maker: b, price: usd(30_000), qty: lots(1) }]);
    let (reason, filled, cancelled) = r.done();
    assert_eq!((filled, cancelled), (lots(1), 0));
    assert_eq!(reason, DoneReason::Filled, "a quote-amount buy that spent what it could is filled");
    // Value 3,000,000 plus the 20 bps taker fee on it; fees come on top of the amount.
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - 3_000_000 - 6_000, 0));
    assert_eq!(x.queue(Side::Sell), vec![c]);

    // Exactly the value of the next lot.
    let r = x.market_buy_quote(ALICE, value(30_001, 1)).send();
    assert_eq!(r.fills(), vec![Fill { maker: c, price: usd(30_001), qty: lots(1) }]);
    // Not enough for a single lot: nothing trades.
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    let r = x.market_buy_quote(ALICE, usdt(2)).send();
    assert!(r.fills().is_empty());
    // Nothing bought: it expires (a quote-amount buy is never reported BudgetExhausted).
    assert_eq!(r.done(), (DoneReason::Expired, 0, 0));
    assert_eq!(x.balance(ALICE, USDT).1, 0);

    // The amount must reach the minimum order value, and only buys have one.
    x.market_buy_quote(ALICE, usdt(1) - 1).send().rejected(RejectReason::BelowMinNotional);
    let mut t = x.market_sell(ALICE, 0);
    t.o.quote_quantity = usdt(5);
    t.send().rejected(RejectReason::InvalidOrder);
    let mut t = x.market_buy(ALICE, lots(1));
    t.o.quote_quantity = usdt(5);
    t.send().rejected(RejectReason::InvalidOrder);
    x.market_buy(ALICE, 0).send().rejected(RejectReason::ZeroQuantity);
}

#[test]
fn a_quote_amount_buy_that_spends_all_of_it_is_filled_even_if_the_book_empties() {
    let mut x = funded();
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    let b = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let c = x.sell(CAROL, usd(30_001), lots(1)).gtc().id();
    // Exactly what the whole book costs: everything is bought and the amount is spent.
    let amount = value(30_000, 1) + value(30_001, 1);
    let r = x.market_buy_quote(ALICE, amount).send();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: b, price: usd(30_000), qty: lots(1) },
            Fill { maker: c, price: usd(30_001), qty: lots(1) },
        ]
    );
    assert!(x.asks().is_empty());
    assert_eq!(r.done(), (DoneReason::Filled, lots(2), 0));
    // It paid the amount plus the 20 bps taker fee on it, and holds nothing more.
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - amount - amount * 20 / 10_000, 0));

    // One atom more than the book is worth: the book runs out first, and it expires.
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    let r = x.market_buy_quote(ALICE, value(30_000, 1) + 1).send();
    assert_eq!(r.fills().len(), 1);
    assert!(x.asks().is_empty());
    assert_eq!(r.done(), (DoneReason::Expired, lots(1), 0));
    assert_eq!(x.balance(ALICE, USDT).1, 0);

    // Spent with more in the book: filled, and it stops there, before even looking at the
    // next order, its own one, which self-trade prevention would otherwise have cancelled.
    x.deposit(ALICE, BTC, lots(1)).ok();
    let bob = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let own = x.sell(ALICE, usd(30_001), lots(1)).gtc().id();
    let r = x.market_buy_quote(ALICE, value(30_000, 1)).stp(StpMode::ExpireMaker).send();
    assert_eq!(r.fills(), vec![Fill { maker: bob, price: usd(30_000), qty: lots(1) }]);
    assert_eq!(r.done(), (DoneReason::Filled, lots(1), 0));
    assert_eq!(r.done_of(own), None);
    assert_eq!(x.queue(Side::Sell), vec![own]);
}

#[test]
fn market_orders_stop_at_their_protection_price() {
    let mut x = funded();
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    x.sell(CAROL, usd(30_010), lots(1)).gtc().ok();
    let far = x.sell(DAVE, usd(30_100), lots(1)).gtc().id();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    let r = x.market_buy(ALICE, lots(3)).protect(usd(30_010)).send();
    assert_eq!(r.fills().len(), 2);
    assert_eq!(r.done(), (DoneReason::ProtectionLimit, lots(2), lots(1)));
    assert_eq!(x.queue(Side::Sell), vec![far]);
    assert_eq!(x.balance(ALICE, USDT), (usdt(100) - value(30_000, 1) - value(30_010, 1), 0));
    // The protection price must be on the tick, and the account must cover it at that price.
    x.market_buy(ALICE, lots(1))
        .protect(usd(30_100) + 1)
        .send()
        .rejected(RejectReason::PriceOffTick);
    x.market_buy(ALICE, lots(10_000))
        .protect(usd(30_100))
        .send()
        .rejected(RejectReason::InsufficientBalance);

    // Sells too.
    x.deposit(ALICE, BTC, lots(1)).ok();
    x.buy(BOB, usd(30_000), lots(1)).gtc().ok();
    x.buy(CAROL, usd(29_990), lots(1)).gtc().ok();
    let low = x.buy(DAVE, usd(29_900), lots(1)).gtc().id();
    let r = x.market_sell(ALICE, lots(3)).protect(usd(29_990)).send();
    assert_eq!(r.fills().len(), 2);
    assert_eq!(r.done(), (DoneReason::ProtectionLimit, lots(2), lots(1)));
    assert_eq!(x.queue(Side::Buy), vec![low]);
}

#[test]
fn market_buy_without_protection_is_bounded_by_the_balance() {
    let mut x = funded();
    for a in [BOB, CAROL, DAVE] {
        x.sell(a, usd(30_000), lots(1)).gtc().ok();
    }
    x.deposit(ALICE, USDT, usdt(7)).ok();
    let r = x.market_buy(ALICE, lots(3)).send();
    assert_eq!(r.fills().len(), 2);
    assert_eq!(r.done(), (DoneReason::BudgetExhausted, lots(2), lots(1)));
    assert_eq!(x.balance(ALICE, USDT), (usdt(1), 0));
    assert_eq!(x.balance(ALICE, BTC), (lots(2), 0));
    // Fees count: with 20 bps, 6 USDT buys one lot (3.006), not two (6.012).
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(5)).ok();
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    let r = x.market_buy(ALICE, lots(2)).send();
    assert_eq!(r.done(), (DoneReason::BudgetExhausted, lots(1), lots(1)));
    assert_eq!(x.balance(ALICE, USDT), (usdt(6) - 3_006_000, 0));
    // No money at all: refused.
    x.withdraw(ALICE, USDT, usdt(6) - 3_006_000).ok();
    x.market_buy(ALICE, lots(1)).send().rejected(RejectReason::InsufficientBalance);
}

#[test]
fn market_orders_are_ioc() {
    let mut x = funded();
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    x.market_buy(ALICE, lots(1)).fok().rejected(RejectReason::InvalidOrder);
    // GTC (the serde default) is accepted and means IOC: a market order never rests.
    let r = x.market_buy(ALICE, lots(2)).gtc();
    assert!(matches!(r.0[0], Event::Accepted { time_in_force: TimeInForce::Ioc, .. }));
    assert_eq!(r.done(), (DoneReason::Expired, lots(1), lots(1)));
    assert!(!r.rested());
    x.market_buy(ALICE, lots(1)).reserve(usd(31_000)).send().rejected(RejectReason::InvalidOrder);
    let mut t = x.market_buy(ALICE, lots(1));
    t.o.post_only = true;
    t.send().rejected(RejectReason::InvalidOrder);
    x.market_buy(ALICE, lots(1) + 1).send().rejected(RejectReason::QuantityOffLot);
    x.market_buy(ALICE, lots(1)).send().ok();
}

// ----- self-trade prevention -------------------------------------------------------------------

#[test]
fn stp_none_lets_an_account_trade_with_itself() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let r = x.buy(BOB, usd(30_000), lots(1)).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: ask, price: usd(30_000), qty: lots(1) }]);
    assert_eq!(x.balance(BOB, BTC), (btc(1), 0));
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000), 0));
}

/// Carol offers 1 lot at $29,999, then Bob 1 lot at $30,000, then Dave 1 lot at $30,000.
fn bob_between_carol_and_dave() -> (Exchange, OrderId, OrderId, OrderId) {
    let mut x = funded();
    let carol = x.sell(CAROL, usd(29_999), lots(1)).gtc().id();
    let bob = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let dave = x.sell(DAVE, usd(30_000), lots(1)).gtc().id();
    (x, carol, bob, dave)
}

#[test]
fn stp_expire_taker_stops_the_incoming_order_at_the_own_order() {
    let (mut x, carol, bob, dave) = bob_between_carol_and_dave();
    let r = x.buy(BOB, usd(30_000), lots(3)).stp(StpMode::ExpireTaker).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: carol, price: usd(29_999), qty: lots(1) }]);
    assert_eq!(r.done(), (DoneReason::SelfTrade, lots(1), lots(2)));
    assert!(!r.rested());
    assert_eq!(x.queue(Side::Sell), vec![bob, dave]);
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000) - value(29_999, 1), 0));
}

#[test]
fn stp_expire_maker_cancels_the_own_order_and_goes_on() {
    let (mut x, carol, bob, dave) = bob_between_carol_and_dave();
    let r = x.buy(BOB, usd(30_000), lots(2)).stp(StpMode::ExpireMaker).gtc();
    assert_eq!(
        r.fills(),
        vec![
            Fill { maker: carol, price: usd(29_999), qty: lots(1) },
            Fill { maker: dave, price: usd(30_000), qty: lots(1) },
        ]
    );
    assert_eq!(r.done_of(bob), Some((DoneReason::SelfTrade, 0, lots(1))));
    assert_eq!(r.done(), (DoneReason::Filled, lots(2), 0));
    assert!(x.asks().is_empty());
    assert_eq!(x.balance(BOB, BTC), (btc(1) + lots(2), 0));
}

#[test]
fn stp_expire_both_cancels_both() {
    let (mut x, carol, bob, dave) = bob_between_carol_and_dave();
    let r = x.buy(BOB, usd(30_000), lots(3)).stp(StpMode::ExpireBoth).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: carol, price: usd(29_999), qty: lots(1) }]);
    assert_eq!(r.done_of(bob), Some((DoneReason::SelfTrade, 0, lots(1))));
    assert_eq!(r.done(), (DoneReason::SelfTrade, lots(1), lots(2)));
    assert_eq!(x.queue(Side::Sell), vec![dave]);
    assert!(x.bids().is_empty());
    assert_eq!(x.balance(BOB, BTC), (btc(1) + lots(1), 0));
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000) - value(29_999, 1), 0));
}

#[test]
fn stp_decrement_when_the_resting_order_is_larger() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_000), lots(3)).gtc().id();
    let r = x.buy(BOB, usd(30_000), lots(1)).stp(StpMode::Decrement).gtc();
    assert!(r.fills().is_empty());
    assert_eq!(r.book_changes(), vec![(BookAction::Reduce, ask, lots(2), lots(1))]);
    // The incoming order was used up by the decrement: nothing traded, its lot cancelled.
    assert_eq!(r.done(), (DoneReason::SelfTrade, 0, lots(1)));
    assert_eq!(x.leaves(ask), Some(lots(2)));
    assert_eq!(x.balance(BOB, BTC), (btc(1) - lots(2), lots(2)));
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000), 0));
    // The resting order keeps its quantity of 3 lots: 2 open, 1 decremented.
    let view = x.engine.order(ask).unwrap();
    assert_eq!((view.quantity, view.leaves_quantity, view.filled_quantity), (lots(3), lots(2), 0));
    // When it fills, its done reports the decremented lot as cancelled.
    x.deposit(ALICE, USDT, usdt(10)).ok();
    let r = x.buy(ALICE, usd(30_000), lots(2)).gtc();
    assert_eq!(r.done(), (DoneReason::Filled, lots(2), 0));
    assert_eq!(r.done_of(ask), Some((DoneReason::Filled, lots(2), lots(1))));
}

#[test]
fn stp_decrement_when_the_incoming_order_is_larger() {
    let mut x = funded();
    let own = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let dave = x.sell(DAVE, usd(30_000), lots(1)).gtc().id();
    let r = x.buy(BOB, usd(30_000), lots(3)).stp(StpMode::Decrement).gtc();
    assert_eq!(r.done_of(own), Some((DoneReason::SelfTrade, 0, lots(1))));
    assert_eq!(r.fills(), vec![Fill { maker: dave, price: usd(30_000), qty: lots(1) }]);
    // 3 lots - 1 decremented - 1 filled: 1 lot rests, of an order of 3.
    assert!(r.rested());
    let bid = r.id();
    let view = x.engine.order(bid).unwrap();
    assert_eq!(
        (view.quantity, view.leaves_quantity, view.filled_quantity),
        (lots(3), lots(1), lots(1))
    );
    assert_eq!(x.bids(), vec![(usd(30_000), lots(1), 1)]);
    assert_eq!(x.balance(BOB, BTC), (btc(1) + lots(1), 0));
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000) - 2 * value(30_000, 1), value(30_000, 1)));
    // Cancelled: the open lot and the decremented one.
    let r = x.cancel(BOB, bid);
    assert_eq!(r.done_of(bid), Some((DoneReason::Cancelled, lots(1), lots(2))));
}

#[test]
fn stp_decrement_equal_sizes_finishes_both() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_000), lots(2)).gtc().id();
    let r = x.buy(BOB, usd(30_000), lots(2)).stp(StpMode::Decrement).ioc();
    assert_eq!(r.done_of(ask), Some((DoneReason::SelfTrade, 0, lots(2))));
    assert_eq!(r.done(), (DoneReason::SelfTrade, 0, lots(2)));
    assert!(x.asks().is_empty() && x.bids().is_empty());
    assert_eq!(x.balance(BOB, BTC), (btc(1), 0));
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000), 0));
}

#[test]
fn stp_decrements_add_up_over_an_orders_life() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_000), lots(5)).gtc().id();
    // Decremented by one lot, then by two more: 2 lots open of 5.
    let r = x.buy(BOB, usd(30_000), lots(1)).stp(StpMode::Decrement).ioc();
    assert_eq!(r.done(), (DoneReason::SelfTrade, 0, lots(1)));
    let r = x.buy(BOB, usd(30_000), lots(2)).stp(StpMode::Decrement).gtc();
    assert_eq!(r.done(), (DoneReason::SelfTrade, 0, lots(2)));
    assert!(!r.rested());
    let view = x.engine.order(ask).unwrap();
    assert_eq!((view.quantity, view.leaves_quantity), (lots(5), lots(2)));
    // Amending the open quantity changes the order's quantity by as much; the decremented
    // lots stay part of it.
    assert_eq!(x.amend(BOB, ask, 0, lots(4)).amended(), (usd(30_000), lots(4), false));
    let view = x.engine.order(ask).unwrap();
    assert_eq!((view.quantity, view.leaves_quantity), (lots(7), lots(4)));
    // Dave takes one lot; then a larger decrementing order of Bob's uses up the rest of the
    // resting order: cancelled for self-trade with its open lots and the earlier decrements,
    // while the incoming one decrements 3 lots and rests its last one.
    x.buy(DAVE, usd(30_000), lots(1)).gtc().ok();
    let r = x.buy(BOB, usd(30_000), lots(4)).stp(StpMode::Decrement).gtc();
    assert_eq!(r.done_of(ask), Some((DoneReason::SelfTrade, lots(1), lots(3) + lots(3))));
    assert!(r.rested());
    let bid = x.engine.order(r.id()).unwrap();
    assert_eq!((bid.quantity, bid.leaves_quantity, bid.filled_quantity), (lots(4), lots(1), 0));
    // When it fills, a done of Filled still reports the 3 decremented lots as cancelled.
    let r = x.sell(DAVE, usd(29_000), lots(1)).gtc();
    assert_eq!(r.done_of(bid.order_id), Some((DoneReason::Filled, lots(1), lots(3))));
    // An incoming order that trades, then is used up by a decrement: filled and cancelled.
    let carol = x.sell(CAROL, usd(29_000), lots(1)).gtc().id();
    let own = x.sell(BOB, usd(29_001), lots(2)).gtc().id();
    let r = x.buy(BOB, usd(29_001), lots(3)).stp(StpMode::Decrement).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: carol, price: usd(29_000), qty: lots(1) }]);
    assert_eq!(r.done_of(own), Some((DoneReason::SelfTrade, 0, lots(2))));
    assert_eq!(r.done(), (DoneReason::SelfTrade, lots(1), lots(2)));
    assert!(!r.rested());
}

// ----- cancels and client order ids -------------------------------------------------------------

#[test]
fn cancel_by_order_id_and_by_client_order_id() {
    let mut x = funded();
    let a = x.sell(BOB, usd(30_000), lots(1)).cid(7).gtc().id();
    let b = x.sell(BOB, usd(30_001), lots(2)).cid(8).gtc().id();
    assert_eq!(x.engine.order_by_client_id(BOB, 8).unwrap().order_id, b);
    // Nobody else can cancel Bob's orders.
    x.cancel(CAROL, a).rejected(RejectReason::OrderNotFound);
    x.cancel_cid(CAROL, 7).rejected(RejectReason::OrderNotFound);
    x.cancel(BOB, 999).rejected(RejectReason::OrderNotFound);
    x.cancel_cid(BOB, 0).rejected(RejectReason::OrderNotFound);
    x.cancel(FEES, a).rejected(RejectReason::ReservedAccount);
    x.cancel(AccountId(99), a).rejected(RejectReason::UnknownAccount);

    let r = x.cancel(BOB, a);
    assert_eq!(r.done_of(a), Some((DoneReason::Cancelled, 0, lots(1))));
    x.cancel(BOB, a).rejected(RejectReason::OrderNotFound);
    // A partly filled order reports both parts.
    x.buy(CAROL, usd(30_001), lots(1)).gtc().ok();
    let r = x.cancel_cid(BOB, 8);
    assert_eq!(r.done_of(b), Some((DoneReason::Cancelled, lots(1), lots(1))));
    x.cancel_cid(BOB, 8).rejected(RejectReason::OrderNotFound);
    assert!(x.asks().is_empty());
    assert_eq!(x.balance(BOB, BTC), (btc(1) - lots(1), 0));
}

#[test]
fn a_client_order_id_is_unique_among_open_orders_only() {
    let mut x = funded();
    let first = x.sell(BOB, usd(30_000), lots(1)).cid(42).gtc().id();
    x.sell(BOB, usd(30_001), lots(1)).cid(42).gtc().rejected(RejectReason::DuplicateClientOrderId);
    x.buy(BOB, usd(20_000), lots(1)).cid(42).ioc().rejected(RejectReason::DuplicateClientOrderId);
    // Another account may use the same number.
    let carols = x.sell(CAROL, usd(30_001), lots(1)).cid(42).gtc().id();
    assert_eq!(x.engine.order_by_client_id(CAROL, 42).unwrap().order_id, carols);
    // Once filled, the id is free again.
    x.buy(DAVE, usd(30_000), lots(1)).gtc().ok();
    assert!(x.engine.order(first).is_none());
    let second = x.sell(BOB, usd(30_002), lots(1)).cid(42).gtc().id();
    // And once cancelled.
    x.cancel_cid(BOB, 42).ok();
    let third = x.sell(BOB, usd(30_003), lots(1)).cid(42).gtc().id();
    assert!(first < second && second < third);
    assert_eq!(x.engine.order_by_client_id(BOB, 42).unwrap().order_id, third);
    // An order that never rests (IOC expiring at once) leaves the id free too.
    x.cancel_cid(BOB, 42).ok();
    let r = x.buy(BOB, usd(20_000), lots(1)).cid(42).ioc();
    assert_eq!(r.done().0, DoneReason::Expired);
    x.sell(BOB, usd(30_003), lots(1)).cid(42).gtc().ok();
}

#[test]
fn cancel_all_for_an_account_or_one_market() {
    let mut x = funded();
    x.deposit(BOB, ETH, 1_000_000_000_000_000_000).ok();
    let b1 = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let b2 = x.sell(BOB, usd(30_100), lots(1)).gtc().id();
    let b3 = x.buy(BOB, usd(29_000), lots(1)).gtc().id();
    // 10 lots of 0.0001 ETH at $2,000.00 (200,000 cents): 2 USDT.
    let eth = x.sell(BOB, 200_000, 10 * ETH_LOT).in_market(ETH_USDT).gtc().id();
    let carol = x.sell(CAROL, usd(30_200), lots(1)).gtc().id();

    let r = x.cancel_all(BOB, Some(BTC_USDT));
    assert_eq!(r.mass_cancelled(), 3);
    for id in [b1, b2, b3] {
        assert_eq!(r.done_of(id).unwrap().0, DoneReason::Cancelled);
    }
    assert!(x.engine.order(eth).is_some() && x.engine.order(carol).is_some());
    assert_eq!(x.balance(BOB, BTC), (btc(1), 0));
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000), 0));

    let r = x.cancel_all(BOB, None);
    assert_eq!(r.mass_cancelled(), 1);
    assert_eq!(r.done_of(eth).unwrap().0, DoneReason::Cancelled);
    assert_eq!(x.balance(BOB, ETH), (1_000_000_000_000_000_000, 0));
    assert_eq!(x.cancel_all(BOB, None).mass_cancelled(), 0);
    assert!(x.engine.open_orders(BOB).is_empty());
    assert_eq!(x.engine.open_orders(CAROL).len(), 1);

    x.cancel_all(BOB, Some(MarketId(99))).rejected(RejectReason::UnknownMarket);
    x.cancel_all(FEES, None).rejected(RejectReason::ReservedAccount);
    x.cancel_all(AccountId(99), None).rejected(RejectReason::UnknownAccount);
}

#[test]
fn cancel_all_of_one_side_leaves_the_other_side_untouched() {
    let mut x = funded();
    x.deposit(BOB, ETH, 1_000_000_000_000_000_000).ok();
    let s1 = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let b1 = x.buy(BOB, usd(29_000), lots(1)).gtc().id();
    let s2 = x.sell(BOB, usd(30_100), lots(2)).gtc().id();
    let b2 = x.buy(BOB, usd(29_100), lots(2)).gtc().id();
    // 10 lots of 0.0001 ETH at $2,000.00 each way: 2 USDT.
    let eth_buy = x.buy(BOB, 200_000, 10 * ETH_LOT).in_market(ETH_USDT).gtc().id();
    let eth_sell = x.sell(BOB, 300_000, 10 * ETH_LOT).in_market(ETH_USDT).gtc().id();
    let carol = x.buy(CAROL, usd(29_000), lots(1)).gtc().id();
    let asks = x.asks();

    // Buys only, every market: the sells (and Carol's buy) stay where they were.
    let r = x.cancel_side(BOB, None, Side::Buy);
    assert_eq!(r.mass_cancel_report(), (None, Some(Side::Buy), 3));
    for id in [b1, b2, eth_buy] {
        assert_eq!(r.done_of(id).unwrap().0, DoneReason::Cancelled);
    }
    for id in [s1, s2, eth_sell] {
        assert_eq!(r.done_of(id), None);
        assert!(x.engine.order(id).is_some());
    }
    assert_eq!(x.asks(), asks, "the asks, and their priority, are untouched");
    assert_eq!(x.queue(Side::Buy), vec![carol]);
    assert_eq!(x.balance(BOB, USDT), (usdt(100_000), 0), "every buy hold is back");
    assert_eq!(x.balance(BOB, BTC), (btc(1) - lots(3), lots(3)), "the sells still hold");
    // Nothing left on that side: a second time cancels nothing, and says so.
    assert_eq!(
        x.cancel_side(BOB, None, Side::Buy).mass_cancel_report(),
        (None, Some(Side::Buy), 0)
    );

    // Sells of one market only: the ETH sell stays.
    let r = x.cancel_side(BOB, Some(BTC_USDT), Side::Sell);
    assert_eq!(r.mass_cancel_report(), (Some(BTC_USDT), Some(Side::Sell), 2));
    assert!(x.asks().is_empty());
    assert_eq!(
        x.engine.open_orders(BOB).iter().map(|o| o.order_id).collect::<Vec<_>>(),
        [eth_sell]
    );
    assert_eq!(x.balance(BOB, BTC), (btc(1), 0));
    // The other side of that market, where Bob has nothing: 0; then the ETH sell by market
    // and side.
    assert_eq!(x.cancel_side(BOB, Some(ETH_USDT), Side::Buy).mass_cancelled(), 0);
    let r = x.cancel_side(BOB, Some(ETH_USDT), Side::Sell);
    assert_eq!(r.mass_cancel_report(), (Some(ETH_USDT), Some(Side::Sell), 1));
    assert!(x.engine.open_orders(BOB).is_empty());
    assert!(x.engine.order(carol).is_some());
    // Both sides, as before: the report says no side filter.
    assert_eq!(x.cancel_all(CAROL, None).mass_cancel_report(), (None, None, 1));

    x.cancel_side(BOB, Some(MarketId(99)), Side::Buy).rejected(RejectReason::UnknownMarket);
    x.cancel_side(FEES, None, Side::Sell).rejected(RejectReason::ReservedAccount);
    x.cancel_side(AccountId(99), None, Side::Buy).rejected(RejectReason::UnknownAccount);
}

// ----- execution reports from events alone ----------------------------------------------------

#[test]
fn a_trade_names_both_client_order_ids_and_what_each_order_has_left() {
    let mut x = funded();
    let bob = x.sell(BOB, usd(30_000), lots(3)).cid(11).gtc().id();
    let carol = x.sell(CAROL, usd(30_001), lots(2)).gtc().id(); // no client id
    x.deposit(ALICE, USDT, usdt(100)).ok();

    let r = x.buy(ALICE, usd(30_001), lots(4)).cid(21).gtc();
    assert_eq!(
        r.execs(),
        vec![
            // Bob's order is done by this fill; Alice still has 1 lot open.
            Exec {
                qty: lots(3),
                maker_cid: 11,
                maker_leaves: 0,
                taker_cid: 21,
                taker_leaves: lots(1)
            },
            // Carol keeps 1 lot; Alice is done.
            Exec {
                qty: lots(1),
                maker_cid: 0,
                maker_leaves: lots(1),
                taker_cid: 21,
                taker_leaves: 0
            },
        ]
    );
    assert_eq!(r.done_of(bob), Some((DoneReason::Filled, lots(3), 0)));
    assert_eq!(r.done(), (DoneReason::Filled, lots(4), 0));
    assert_eq!(x.leaves(carol), Some(lots(1)));
    let accounts: Vec<_> =
        r.0.iter()
            .filter_map(|e| match *e {
                Event::Trade { maker_account, taker_account, .. } => {
                    Some((maker_account, taker_account))
                }
                _ => None,
            })
            .collect();
    assert_eq!(accounts, [(BOB, ALICE), (CAROL, ALICE)]);

    // A taker that rests: its leaves after the last fill are what it rests with.
    let r = x.buy(DAVE, usd(30_001), lots(3)).cid(31).gtc();
    assert_eq!(
        r.execs(),
        vec![Exec {
            qty: lots(1),
            maker_cid: 0,
            maker_leaves: 0,
            taker_cid: 31,
            taker_leaves: lots(2)
        }]
    );
    assert!(r.rested());
    assert_eq!(x.leaves(r.id()), Some(lots(2)));

    // An IOC that finds too little: leaves above 0 on its fill, then expires.
    let r = x.sell(BOB, usd(30_001), lots(5)).cid(12).ioc();
    assert_eq!(
        r.execs(),
        vec![Exec {
            qty: lots(2),
            maker_cid: 31,
            maker_leaves: 0,
            taker_cid: 12,
            taker_leaves: lots(3)
        }]
    );
    assert_eq!(r.done(), (DoneReason::Expired, lots(2), lots(3)));

    // An amended order that crosses is the taker, with its client id.
    x.sell(BOB, usd(30_010), lots(2)).cid(13).gtc().ok();
    let bid = x.buy(DAVE, usd(30_000), lots(3)).cid(32).gtc().id();
    let r = x.amend(DAVE, bid, usd(30_010), 0);
    assert_eq!(
        r.execs(),
        vec![Exec {
            qty: lots(2),
            maker_cid: 13,
            maker_leaves: 0,
            taker_cid: 32,
            taker_leaves: lots(1)
        }]
    );
}

#[test]
fn a_market_buy_by_quote_amount_reports_no_leaves_and_ends_with_its_order_done() {
    let mut x = funded();
    x.sell(BOB, usd(30_000), lots(1)).cid(1).gtc().ok();
    x.sell(CAROL, usd(30_001), lots(2)).cid(2).gtc().ok();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    // Enough for two lots: one from Bob, one of Carol's two. It has no base quantity, so its
    // leaves are 0 on every fill, and only its OrderDone says it is over.
    let r = x.market_buy_quote(ALICE, value(30_000, 1) + value(30_001, 1)).cid(9).send();
    assert_eq!(
        r.execs(),
        vec![
            Exec { qty: lots(1), maker_cid: 1, maker_leaves: 0, taker_cid: 9, taker_leaves: 0 },
            Exec {
                qty: lots(1),
                maker_cid: 2,
                maker_leaves: lots(1),
                taker_cid: 9,
                taker_leaves: 0
            },
        ]
    );
    assert_eq!(r.done(), (DoneReason::Filled, lots(2), 0));
}

#[test]
fn amended_names_the_client_order_id() {
    let mut x = funded();
    let with = x.sell(BOB, usd(30_000), lots(5)).cid(77).gtc().id();
    let without = x.sell(BOB, usd(30_001), lots(5)).gtc().id();
    let r = x.amend(BOB, with, 0, lots(2));
    assert_eq!((r.amended(), r.amended_cid()), ((usd(30_000), lots(2), true), 77));
    let r = x.amend(BOB, with, usd(30_002), 0);
    assert_eq!((r.amended(), r.amended_cid()), ((usd(30_002), lots(2), false), 77));
    let r = x.amend(BOB, without, 0, lots(3));
    assert_eq!((r.amended(), r.amended_cid()), ((usd(30_001), lots(3), true), 0));
    // By client order id too.
    let r = x.apply(Command::AmendOrder {
        account: BOB,
        order: OrderRef::Client(77),
        new_price: 0,
        new_quantity: lots(1),
    });
    assert_eq!((r.amended(), r.amended_cid()), ((usd(30_002), lots(1), true), 77));
}

#[test]
fn accepted_repeats_post_only_stp_and_reserve_price() {
    let mut x = funded();
    // Plain: none of them.
    assert_eq!(x.sell(BOB, usd(30_000), lots(1)).gtc().accepted(), (false, StpMode::None, 0));
    // Post-only.
    let r = x.buy(CAROL, usd(29_000), lots(1)).post_only();
    assert_eq!(r.accepted(), (true, StpMode::None, 0));
    // A self-trade prevention mode and a reserve price on a limit buy.
    let r = x.buy(DAVE, usd(29_000), lots(1)).stp(StpMode::Decrement).reserve(usd(29_500)).gtc();
    assert_eq!(r.accepted(), (false, StpMode::Decrement, usd(29_500)));
    let o = x.engine.order(r.id()).unwrap();
    assert_eq!((o.post_only, o.stp, o.reserve_price), (false, StpMode::Decrement, usd(29_500)));
    // A market order with a mode: accepted as asked even though it never rests.
    let r = x.market_buy(DAVE, lots(1)).stp(StpMode::ExpireBoth).send();
    assert_eq!(r.accepted(), (false, StpMode::ExpireBoth, 0));
    assert_eq!(r.done().0, DoneReason::Filled);
    // FOK that cannot fill: accepted as asked, then done.
    let r = x.buy(DAVE, usd(29_000), lots(1)).stp(StpMode::ExpireMaker).reserve(usd(29_001)).fok();
    assert_eq!(r.accepted(), (false, StpMode::ExpireMaker, usd(29_001)));
    assert_eq!(r.done().0, DoneReason::FokUnfilled);
}

// ----- market and account status -------------------------------------------------------------

#[test]
fn a_halted_market_accepts_cancels_only() {
    let mut x = funded();
    let a = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let b = x.sell(BOB, usd(30_001), lots(1)).gtc().id();
    let r = x.set_status(BTC_USDT, MarketStatus::Halted);
    assert!(matches!(r.0[..], [Event::MarketStatusChanged { status: MarketStatus::Halted, .. }]));
    assert_eq!(x.engine.market(BTC_USDT).unwrap().status, MarketStatus::Halted);

    x.buy(CAROL, usd(30_000), lots(1)).gtc().rejected(RejectReason::MarketHalted);
    x.market_buy(CAROL, lots(1)).send().rejected(RejectReason::MarketHalted);
    x.amend(BOB, a, usd(30_005), 0).rejected(RejectReason::MarketHalted);
    x.amend(BOB, a, 0, lots(2)).rejected(RejectReason::MarketHalted);
    x.set_status(BTC_USDT, MarketStatus::Halted).rejected(RejectReason::InvalidStatusTransition);
    // Resting orders stay; cancels work.
    assert_eq!(x.queue(Side::Sell), vec![a, b]);
    x.cancel(BOB, a).ok();
    assert_eq!(x.cancel_all(BOB, Some(BTC_USDT)).mass_cancelled(), 1);
    // The other market is not affected.
    x.deposit(CAROL, ETH, 1_000_000_000_000_000_000).ok();
    x.sell(CAROL, 200_000, 10 * ETH_LOT).in_market(ETH_USDT).gtc().ok();

    x.set_status(BTC_USDT, MarketStatus::Trading).ok();
    x.buy(CAROL, usd(30_000), lots(1)).gtc().ok();
}

#[test]
fn delisting_cancels_every_order_and_releases_the_holds() {
    let mut x = funded();
    x.deposit(DAVE, ETH, 1_000_000_000_000_000_000).ok();
    let mut ids = Vec::new();
    for (i, a) in [BOB, CAROL, DAVE].into_iter().enumerate() {
        let i = i as u64;
        ids.push(x.sell(a, usd(30_000 + i), lots(1 + i)).gtc().id());
        ids.push(x.sell(a, usd(30_000), lots(1)).gtc().id());
        ids.push(x.buy(a, usd(29_000 - i), lots(2)).reserve(usd(29_500)).gtc().id());
    }
    let eth = x.sell(DAVE, 200_000, 10 * ETH_LOT).in_market(ETH_USDT).gtc().id();
    let seq = x.engine.market(BTC_USDT).unwrap().book_seq;

    let r = x.set_status(BTC_USDT, MarketStatus::Delisted);
    for id in &ids {
        assert_eq!(r.done_of(*id).unwrap().0, DoneReason::Delisted, "order {id}");
    }
    let removes = r.book_changes().iter().filter(|c| c.0 == BookAction::Remove).count();
    assert_eq!(removes, ids.len());
    // The status change comes after the cancels (balance updates close the command).
    assert_eq!(
        r.0.iter().find(|e| matches!(e, Event::MarketStatusChanged { .. })),
        Some(&Event::MarketStatusChanged {
            market: BTC_USDT,
            status: MarketStatus::Delisted,
            book_seq: seq + ids.len() as u64,
        })
    );
    assert!(x.bids().is_empty() && x.asks().is_empty());
    for a in [BOB, CAROL] {
        assert_eq!(x.balance(a, BTC), (btc(1), 0));
        assert_eq!(x.balance(a, USDT), (usdt(100_000), 0));
    }
    assert_eq!(x.balance(DAVE, ETH).1, 10 * ETH_LOT);
    assert!(x.engine.order(eth).is_some());

    // Nothing is accepted any more, and there is no way back.
    x.buy(BOB, usd(30_000), lots(1)).gtc().rejected(RejectReason::MarketDelisted);
    x.set_status(BTC_USDT, MarketStatus::Trading).rejected(RejectReason::InvalidStatusTransition);
    x.set_status(BTC_USDT, MarketStatus::Halted).rejected(RejectReason::InvalidStatusTransition);
    x.set_status(BTC_USDT, MarketStatus::Delisted).rejected(RejectReason::InvalidStatusTransition);
    assert_eq!(x.cancel_all(BOB, Some(BTC_USDT)).mass_cancelled(), 0);
    // A halted market can be delisted too.
    x.set_status(ETH_USDT, MarketStatus::Halted).ok();
    let r = x.set_status(ETH_USDT, MarketStatus::Delisted);
    assert_eq!(r.done_of(eth).unwrap().0, DoneReason::Delisted);
    assert_eq!(x.balance(DAVE, ETH), (1_000_000_000_000_000_000, 0));
}

#[test]
fn a_frozen_account_may_cancel_and_deposit_only() {
    let mut x = funded();
    let a = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    let b = x.sell(BOB, usd(30_001), lots(1)).gtc().id();
    x.set_account_status(BOB, AccountStatus::Frozen).ok();

    x.sell(BOB, usd(30_000), lots(1)).gtc().rejected(RejectReason::AccountFrozen);
    x.market_sell(BOB, lots(1)).send().rejected(RejectReason::AccountFrozen);
    x.amend(BOB, a, 0, lots(2)).rejected(RejectReason::AccountFrozen);
    x.withdraw(BOB, USDT, 1).rejected(RejectReason::AccountFrozen);
    x.deposit(BOB, USDT, 1).ok();
    x.cancel(BOB, a).ok();
    // Orders already resting can still be filled by others.
    let r = x.buy(CAROL, usd(30_001), lots(1)).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: b, price: usd(30_001), qty: lots(1) }]);

    x.set_account_status(BOB, AccountStatus::Active).ok();
    x.withdraw(BOB, USDT, 1).ok();
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    x.set_account_status(FEES, AccountStatus::Frozen).rejected(RejectReason::ReservedAccount);
    x.set_account_status(AccountId(99), AccountStatus::Frozen)
        .rejected(RejectReason::UnknownAccount);
}

// ----- funding ---------------------------------------------------------------------------------

#[test]
fn deposits_and_withdrawals() {
    let mut x = Exchange::btc_usdt();
    let r = x.deposit(ALICE, USDT, usdt(50));
    assert_eq!(
        r.0,
        vec![
            Event::Deposited { account: ALICE, asset: USDT, amount: usdt(50) },
            Event::Balance { account: ALICE, asset: USDT, free: usdt(50), held: 0 },
        ]
    );
    x.withdraw(ALICE, USDT, usdt(50) + 1).rejected(RejectReason::InsufficientBalance);
    x.withdraw(ALICE, BTC, 1).rejected(RejectReason::InsufficientBalance);
    x.withdraw(ALICE, USDT, 0).rejected(RejectReason::ZeroQuantity);
    x.deposit(ALICE, USDT, 0).rejected(RejectReason::ZeroQuantity);
    x.deposit(ALICE, AssetId(99), 1).rejected(RejectReason::UnknownAsset);
    x.withdraw(ALICE, AssetId(99), 1).rejected(RejectReason::UnknownAsset);
    x.deposit(AccountId(99), USDT, 1).rejected(RejectReason::UnknownAccount);
    x.withdraw(AccountId(99), USDT, 1).rejected(RejectReason::UnknownAccount);

    // Held funds cannot be withdrawn.
    x.buy(ALICE, usd(30_000), lots(10)).gtc().ok();
    assert_eq!(x.balance(ALICE, USDT), (usdt(20), usdt(30)));
    x.withdraw(ALICE, USDT, usdt(20) + 1).rejected(RejectReason::InsufficientBalance);
    let r = x.withdraw(ALICE, USDT, usdt(20));
    assert_eq!(r.0[0], Event::Withdrawn { account: ALICE, asset: USDT, amount: usdt(20) });
    assert_eq!(x.balance(ALICE, USDT), (0, usdt(30)));
    assert_eq!(x.engine.net_funding(USDT), Some(u128::from(usdt(30))));

    // The fee account collects, and can pay out.
    x.fee_tier(BOB, RETAIL).ok();
    x.deposit(BOB, BTC, lots(10)).ok();
    x.sell(BOB, usd(30_000), lots(10)).ioc().ok();
    assert_eq!(x.balance(FEES, USDT), (usdt(30) * 20 / 10_000, 0));
    x.withdraw(FEES, USDT, usdt(30) * 20 / 10_000).ok();
    assert_eq!(x.balance(FEES, USDT), (0, 0));
}

#[test]
fn the_total_of_an_asset_is_capped() {
    let mut x = Exchange::btc_usdt();
    x.deposit(ALICE, BTC, u64::MAX).ok();
    x.deposit(BOB, BTC, 1).rejected(RejectReason::Overflow);
    x.deposit(ALICE, BTC, 1).rejected(RejectReason::Overflow);
    x.withdraw(ALICE, BTC, 1).ok();
    x.deposit(BOB, BTC, 1).ok();
    x.deposit(BOB, BTC, 1).rejected(RejectReason::Overflow);
    x.withdraw(ALICE, BTC, u64::MAX).rejected(RejectReason::InsufficientBalance);
    assert_eq!(x.engine.net_funding(BTC), Some(u128::from(u64::MAX)));
}

// ----- reference data --------------------------------------------------------------------------

#[test]
fn listing_refuses_bad_specs_unknown_assets_and_duplicates() {
    let mut x = Exchange::btc_usdt();
    let list = |market: u32, base: AssetId, quote: AssetId, pd: u8, tick: u64, lot: u64| {
        Command::ListMarket {
            market: MarketId(market),
            base,
            quote,
            price_decimals: pd,
            tick_size: tick,
            lot_size: lot,
            min_notional: 0,
        }
    };
    x.apply(Command::ListAsset { asset: BTC, decimals: 8 }).rejected(RejectReason::AssetExists);
    x.apply(Command::ListAsset { asset: AssetId(9), decimals: 19 })
        .rejected(RejectReason::InvalidDecimals);
    x.apply(list(1, BTC, USDT, 2, TICK, LOT)).rejected(RejectReason::MarketExists);
    x.apply(list(1, ETH, USDT, 2, 1, ETH_LOT)).rejected(RejectReason::MarketExists);
    x.apply(list(9, AssetId(99), USDT, 2, TICK, LOT)).rejected(RejectReason::UnknownAsset);
    x.apply(list(9, BTC, AssetId(99), 2, TICK, LOT)).rejected(RejectReason::UnknownAsset);
    x.apply(list(9, BTC, BTC, 2, TICK, LOT)).rejected(RejectReason::InvalidMarketSpec);
    // A cent tick on a 0.00001 BTC lot is 1e-7 USDT: not a whole number of USDT atoms.
    x.apply(list(9, BTC, USDT, 2, 1, 1_000)).rejected(RejectReason::InvalidMarketSpec);
    x.apply(list(9, BTC, USDT, 2, 0, LOT)).rejected(RejectReason::InvalidMarketSpec);
    x.apply(list(9, BTC, USDT, 2, TICK, 0)).rejected(RejectReason::InvalidMarketSpec);
    x.apply(list(9, BTC, USDT, 19, TICK, LOT)).rejected(RejectReason::InvalidMarketSpec);
    x.apply(list(9, BTC, USDT, 0, u64::MAX, u64::MAX)).rejected(RejectReason::InvalidMarketSpec);
    // 10 cents on 0.00001 BTC is exactly 1 USDT atom.
    let r = x.apply(list(9, BTC, USDT, 2, 10, 1_000));
    assert_eq!(
        r.0,
        vec![Event::MarketListed { market: MarketId(9), base: BTC, quote: USDT, tick_value: 1 }]
    );
    x.apply(Command::ListAsset { asset: AssetId(9), decimals: 18 }).ok();
    assert_eq!(x.engine.markets(), vec![BTC_USDT, ETH_USDT, MarketId(9)]);
}

#[test]
fn fee_tiers_and_accounts() {
    let mut x = Exchange::btc_usdt();
    x.apply(Command::SetFeeTier { tier: 3, maker_bps: 10_001, taker_bps: 0 })
        .rejected(RejectReason::InvalidFee);
    x.apply(Command::SetFeeTier { tier: 3, maker_bps: 0, taker_bps: 10_001 })
        .rejected(RejectReason::InvalidFee);
    x.apply(Command::SetFeeTier { tier: 3, maker_bps: 10_000, taker_bps: 10_000 }).ok();
    x.apply(Command::CreateAccount { account: AccountId(7), fee_tier: 4 })
        .rejected(RejectReason::UnknownFeeTier);
    x.apply(Command::CreateAccount { account: FEES, fee_tier: 0 })
        .rejected(RejectReason::ReservedAccount);
    x.apply(Command::CreateAccount { account: ALICE, fee_tier: 0 })
        .rejected(RejectReason::AccountExists);
    x.apply(Command::CreateAccount { account: AccountId(7), fee_tier: 3 }).ok();
    x.fee_tier(ALICE, 4).rejected(RejectReason::UnknownFeeTier);
    x.fee_tier(FEES, 1).rejected(RejectReason::ReservedAccount);
    x.fee_tier(AccountId(8), 1).rejected(RejectReason::UnknownAccount);
    // Redefining a tier does not touch resting orders: they keep the rates they were placed with.
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(10)).ok();
    x.buy(ALICE, usd(30_000), lots(1)).gtc().ok();
    let held = x.balance(ALICE, USDT).1;
    x.apply(Command::SetFeeTier { tier: RETAIL, maker_bps: 100, taker_bps: 100 }).ok();
    assert_eq!(x.balance(ALICE, USDT).1, held);
    x.deposit(BOB, BTC, lots(1)).ok();
    let r = x.sell(BOB, usd(30_000), lots(1)).gtc();
    assert_eq!(r.trades().next().unwrap().3, 3_000, "maker fee at the old 10 bps");
    // The fee account cannot trade.
    let mut t = x.buy(ALICE, usd(30_000), lots(1));
    t.o.account = FEES;
    t.gtc().rejected(RejectReason::ReservedAccount);
}

// ----- every reject, and the state hash -----------------------------------------------------------

/// Produce `reason` from a busy exchange (the DSL checks the state hash did not move).
/// The match is exhaustive: a new reason does not compile until it has a scenario here.
fn provoke(reason: RejectReason) -> Exchange {
    let mut x = funded();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    let ask = x.sell(BOB, usd(30_000), lots(2)).cid(5).gtc().id();
    let bid = x.buy(CAROL, usd(29_000), lots(2)).reserve(usd(29_500)).gtc().id();
    x.sell(DAVE, usd(30_100), lots(3)).gtc().ok();
    let r = match reason {
        RejectReason::UnknownAsset => x.deposit(ALICE, AssetId(77), 1),
        RejectReason::AssetExists => x.apply(Command::ListAsset { asset: USDT, decimals: 6 }),
        RejectReason::UnknownMarket => {
            x.buy(ALICE, usd(30_000), lots(1)).in_market(MarketId(77)).gtc()
        }
        RejectReason::MarketExists => x.apply(Command::ListMarket {
            market: ETH_USDT,
            base: BTC,
            quote: USDT,
            price_decimals: 2,
            tick_size: TICK,
            lot_size: LOT,
            min_notional: 0,
        }),
        RejectReason::InvalidMarketSpec => x.apply(Command::ListMarket {
            market: MarketId(77),
            base: BTC,
            quote: USDT,
            price_decimals: 8,
            tick_size: 1,
            lot_size: 1,
            min_notional: 0,
        }),
        RejectReason::UnknownAccount => x.buy(AccountId(77), usd(30_000), lots(1)).gtc(),
        RejectReason::AccountExists => {
            x.apply(Command::CreateAccount { account: BOB, fee_tier: 0 })
        }
        RejectReason::AccountFrozen => {
            x.set_account_status(ALICE, AccountStatus::Frozen).ok();
            x.buy(ALICE, usd(30_000), lots(1)).gtc()
        }
        RejectReason::ReservedAccount => x.cancel(FEES, ask),
        RejectReason::MarketHalted => {
            x.set_status(BTC_USDT, MarketStatus::Halted).ok();
            x.amend(BOB, ask, 0, lots(1))
        }
        RejectReason::MarketDelisted => {
            x.set_status(BTC_USDT, MarketStatus::Delisted).ok();
            x.sell(BOB, usd(30_000), lots(1)).gtc()
        }
        RejectReason::ZeroQuantity => x.buy(ALICE, usd(30_000), 0).gtc(),
        RejectReason::ZeroPrice => x.buy(ALICE, 0, lots(1)).gtc(),
        RejectReason::PriceOffTick => x.buy(ALICE, usd(30_000) + 50, lots(1)).gtc(),
        RejectReason::QuantityOffLot => x.buy(ALICE, usd(30_000), lots(1) + 1).gtc(),
        RejectReason::BelowMinNotional => x.buy(ALICE, usd(1), lots(1)).gtc(),
        RejectReason::Overflow => x.buy(ALICE, usd(30_000), u64::MAX / LOT * LOT).gtc(),
        RejectReason::InsufficientBalance => x.buy(ALICE, usd(30_000), lots(1_000)).gtc(),
        RejectReason::PostOnlyWouldTake => x.buy(ALICE, usd(30_000), lots(1)).post_only(),
        RejectReason::DuplicateClientOrderId => x.sell(BOB, usd(31_000), lots(1)).cid(5).gtc(),
        RejectReason::OrderNotFound => x.cancel(ALICE, ask),
        RejectReason::InvalidOrder => x.market_buy(ALICE, lots(1)).fok(),
        RejectReason::PriceAboveReserve => x.amend(CAROL, bid, usd(29_600), 0),
        RejectReason::AmendNoChange => x.amend(CAROL, bid, usd(29_000), lots(2)),
        RejectReason::UnknownFeeTier => x.fee_tier(ALICE, 200),
        RejectReason::InvalidFee => {
            x.apply(Command::SetFeeTier { tier: 9, maker_bps: 0, taker_bps: 20_000 })
        }
        RejectReason::InvalidStatusTransition => x.set_status(BTC_USDT, MarketStatus::Trading),
        RejectReason::InvalidDecimals => {
            x.apply(Command::ListAsset { asset: AssetId(77), decimals: 200 })
        }
        RejectReason::TooManyOpenOrders => {
            // Carol has one bid; fill her up to the limit with $1 bids far below the book.
            x.rest_buys(CAROL, MAX_OPEN_ORDERS_PER_ACCOUNT - 1, |_| usd(10_000));
            x.buy(CAROL, usd(10_000), lots(1)).gtc()
        }
    };
    r.rejected(reason);
    x
}

#[test]
fn every_reject_reason_is_produced_and_changes_nothing() {
    let mut codes: Vec<u16> = RejectReason::ALL.iter().map(|r| r.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes, (1..=29).collect::<Vec<u16>>(), "RejectReason::ALL lists every code once");
    for reason in RejectReason::ALL {
        let x = provoke(reason);
        assert!(x.rejects.contains(&reason));
        // The rejected command also names what it was about.
        assert!(x.engine.check_invariants().is_ok());
    }
}

/// The order-entry messages the binary gateway sends `account` for one command's events (see
/// its `render` module): `Accepted`, `Amended`, `MassCancelled` and an `OrderDone` that is not
/// a fill are one message each to the owner; a `Trade` is one to each side's owner.
fn messages_for(account: AccountId, events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| match *e {
            Event::Accepted { account: a, .. }
            | Event::Amended { account: a, .. }
            | Event::MassCancelled { account: a, .. } => usize::from(a == account),
            Event::OrderDone { account: a, reason, .. } => {
                usize::from(a == account && reason != DoneReason::Filled)
            }
            Event::Trade { maker_account, taker_account, .. } => {
                usize::from(maker_account == account) + usize::from(taker_account == account)
            }
            _ => 0,
        })
        .sum()
}

#[test]
fn an_account_has_at_most_max_open_orders_so_one_command_fits_its_message_index() {
    const MAX: usize = MAX_OPEN_ORDERS_PER_ACCOUNT;
    let config = EngineConfig { order_capacity: MAX + 1024, levels_per_side: 128 };
    let mut x = Exchange::btc_usdt_on(Exchange::empty_with(config));
    x.deposit(ALICE, USDT, usdt(100_000)).ok();
    x.deposit(ALICE, BTC, btc(4)).ok();
    x.deposit(BOB, BTC, btc(1)).ok();
    // 32,000 one-lot bids over 100 levels ($10,000 to $10,099), each worth about 1 USDT.
    let ids = x.rest_buys(ALICE, MAX, |i| usd(10_000 + (i % 100) as u64));
    assert_eq!(x.engine.open_orders(ALICE).len(), MAX);
    x.sell(BOB, usd(20_000), lots(5)).gtc().ok();

    // Full: an order that could rest is refused before it matches, whatever else it is:
    // one that would fill at once, a post-only, one in another market, one Alice cannot pay.
    let before = x.engine.state_hash();
    x.buy(ALICE, usd(10_000), lots(1)).gtc().rejected(RejectReason::TooManyOpenOrders);
    x.buy(ALICE, usd(20_000), lots(1)).gtc().rejected(RejectReason::TooManyOpenOrders);
    x.buy(ALICE, usd(9_000), lots(2)).post_only().rejected(RejectReason::TooManyOpenOrders);
    x.buy(ALICE, 200_000, 10 * ETH_LOT)
        .in_market(ETH_USDT)
        .gtc()
        .rejected(RejectReason::TooManyOpenOrders);
    x.buy(ALICE, usd(10_000), lots(1_000_000)).gtc().rejected(RejectReason::TooManyOpenOrders);
    // Checks of the order itself come first.
    x.buy(ALICE, usd(10_000) + 1, lots(1)).gtc().rejected(RejectReason::PriceOffTick);
    x.buy(ALICE, usd(10_000), lots(1)).cid(7).gtc().rejected(RejectReason::DuplicateClientOrderId);
    assert_eq!(x.engine.state_hash(), before, "a refused order changes nothing");

    // Orders that cannot rest are not limited.
    assert_eq!(x.buy(ALICE, usd(20_000), lots(1)).ioc().done().0, DoneReason::Filled);
    assert_eq!(x.buy(ALICE, usd(20_000), lots(1)).fok().done().0, DoneReason::Filled);
    assert_eq!(
        x.market_buy(ALICE, lots(1)).protect(usd(20_000)).send().done().0,
        DoneReason::Filled
    );
    // An amend never adds an order.
    x.amend(ALICE, ids[0], usd(10_050), 0).ok();
    x.amend(ALICE, ids[0], 0, lots(2)).ok();
    assert_eq!(x.engine.open_orders(ALICE).len(), MAX);

    // The count survives a snapshot: the restored engine refuses the same order.
    let mut restored = Engine::from_snapshot(&x.engine.snapshot(), config).expect("restores");
    assert_eq!(restored.state_hash(), x.engine.state_hash());
    let mut events = Vec::new();
    let o = x.buy(ALICE, usd(10_000), lots(1)).o;
    restored.apply(&Command::PlaceOrder(o), &mut events);
    assert!(
        matches!(events[..], [Event::Rejected { reason: RejectReason::TooManyOpenOrders, .. }]),
        "{events:#?}"
    );

    // A cancel, or a fill that completes an order, makes room for exactly one more.
    x.cancel(ALICE, ids[1]).ok();
    assert!(x.buy(ALICE, usd(10_000), lots(1)).gtc().rested());
    x.buy(ALICE, usd(10_000), lots(1)).gtc().rejected(RejectReason::TooManyOpenOrders);
    let r = x.sell(BOB, usd(10_099), lots(1)).gtc();
    assert_eq!(r.fills(), vec![Fill { maker: ids[99], price: usd(10_099), qty: lots(1) }]);
    assert!(x.buy(ALICE, usd(10_000), lots(1)).gtc().rested());
    x.buy(ALICE, usd(10_000), lots(1)).gtc().rejected(RejectReason::TooManyOpenOrders);
    assert_eq!(x.engine.open_orders(ALICE).len(), MAX);

    // A cancel-all of a full account: MAX OrderDone and one MassCancelled.
    let r = x.cancel_all(ALICE, None);
    let cancelled = |e: &&Event| {
        matches!(*e, Event::OrderDone { account: ALICE, reason: DoneReason::Cancelled, .. })
    };
    assert_eq!(r.0.iter().filter(cancelled).count(), MAX);
    assert_eq!(r.0.iter().filter(|e| matches!(e, Event::OrderDone { .. })).count(), MAX);
    assert_eq!(r.0.iter().filter(|e| matches!(e, Event::MassCancelled { .. })).count(), 1);
    assert_eq!(r.mass_cancelled(), MAX as u32);
    assert_eq!(messages_for(ALICE, &r.0), MAX + 1);
    assert!(x.engine.open_orders(ALICE).is_empty());
    assert_eq!(x.balance(ALICE, USDT).1, 0);

    // The worst case: filled up again, Alice sweeps all her own bids (no self-trade
    // prevention): two execution reports per trade, still within one command's 65,536.
    x.rest_buys(ALICE, MAX, |i| usd(10_000 + (i % 100) as u64));
    x.buy(ALICE, usd(10_000), lots(1)).gtc().rejected(RejectReason::TooManyOpenOrders);
    let r = x.market_sell(ALICE, lots(MAX as u64)).send();
    assert_eq!(r.trades().count(), MAX);
    assert_eq!(r.done().0, DoneReason::Filled);
    assert_eq!(messages_for(ALICE, &r.0), 2 * MAX + 1);
    assert!(messages_for(ALICE, &r.0) <= 1 << 16);
    assert!(x.engine.open_orders(ALICE).is_empty());
}

#[test]
fn rejects_name_the_command_account_and_order() {
    let mut x = funded();
    let ask = x.sell(BOB, usd(30_000), lots(1)).cid(9).gtc().id();
    let r = x.amend(BOB, ask, usd(30_000), lots(1));
    assert_eq!(
        r.0,
        vec![Event::Rejected {
            command: CommandKind::AmendOrder,
            account: BOB,
            order_id: ask,
            client_order_id: 0,
            reason: RejectReason::AmendNoChange,
        }]
    );
    let r = x.apply(Command::AmendOrder {
        account: BOB,
        order: OrderRef::Client(9),
        new_price: 0,
        new_quantity: 0,
    });
    assert_eq!(
        r.0,
        vec![Event::Rejected {
            command: CommandKind::AmendOrder,
            account: BOB,
            order_id: ask,
            client_order_id: 9,
            reason: RejectReason::AmendNoChange,
        }]
    );
    let r = x.sell(BOB, usd(30_000), lots(1)).cid(9).gtc();
    assert_eq!(
        r.0,
        vec![Event::Rejected {
            command: CommandKind::PlaceOrder,
            account: BOB,
            order_id: 0,
            client_order_id: 9,
            reason: RejectReason::DuplicateClientOrderId,
        }]
    );
    // Rejected orders do not use up order ids.
    let next = x.sell(BOB, usd(30_000), lots(1)).gtc().id();
    assert_eq!(next, ask + 1);
}

// ----- hostile input --------------------------------------------------------------------------

#[test]
fn huge_sizes_and_prices_are_refused_precisely_without_panics() {
    let mut x = funded();
    x.fee_tier(ALICE, RETAIL).ok();
    x.deposit(ALICE, USDT, usdt(100)).ok();
    x.deposit(ALICE, BTC, btc(1)).ok();
    let max_price = u64::MAX / TICK * TICK;
    let max_qty = u64::MAX / LOT * LOT;

    x.buy(ALICE, u64::MAX, lots(1)).gtc().rejected(RejectReason::PriceOffTick);
    x.buy(ALICE, usd(30_000), u64::MAX).gtc().rejected(RejectReason::QuantityOffLot);
    // One lot at the largest price is worth 18,446,744,073,709,551,600 atoms: it just fits, but
    // the fee on top does not.
    x.buy(ALICE, max_price, lots(1)).gtc().rejected(RejectReason::Overflow);
    x.buy(ALICE, max_price, lots(2)).gtc().rejected(RejectReason::Overflow);
    x.sell(ALICE, max_price, lots(2)).gtc().rejected(RejectReason::Overflow);
    x.buy(ALICE, usd(30_000), max_qty).gtc().rejected(RejectReason::Overflow);
    x.sell(ALICE, usd(30_000), max_qty).gtc().rejected(RejectReason::Overflow);
    x.buy(ALICE, usd(30_000), lots(1)).reserve(max_price).gtc().rejected(RejectReason::Overflow);
    x.market_buy(ALICE, max_qty).protect(max_price).send().rejected(RejectReason::Overflow);
    x.market_buy_quote(ALICE, u64::MAX).send().rejected(RejectReason::Overflow);
    x.market_sell(ALICE, max_qty).send().rejected(RejectReason::InsufficientBalance);
    x.market_sell(ALICE, max_qty)
        .protect(max_price)
        .send()
        .rejected(RejectReason::InsufficientBalance);
    x.withdraw(ALICE, USDT, u64::MAX).rejected(RejectReason::InsufficientBalance);
    // A lone sell at the largest price fits (no fee is added to a sell's hold).
    let far = x.sell(ALICE, max_price, lots(1)).gtc().id();
    // Amends into overflow.
    let id = x.buy(ALICE, usd(30_000), lots(1)).gtc().id();
    x.amend(ALICE, id, max_price, 0).rejected(RejectReason::Overflow);
    x.amend(ALICE, id, 0, max_qty).rejected(RejectReason::Overflow);
    x.amend(ALICE, id, u64::MAX, 0).rejected(RejectReason::PriceOffTick);
    x.amend(ALICE, id, 0, u64::MAX).rejected(RejectReason::QuantityOffLot);
    x.cancel(ALICE, u64::MAX).rejected(RejectReason::OrderNotFound);
    x.cancel_cid(ALICE, u64::MAX).rejected(RejectReason::OrderNotFound);
    x.cancel(ALICE, id).ok();
    x.cancel(ALICE, far).ok();

    // A market buy of a vast quantity without protection spends what the account has.
    x.sell(BOB, usd(30_000), lots(1)).gtc().ok();
    let r = x.market_buy(ALICE, max_qty).send();
    assert_eq!(r.fills().len(), 1);
    assert_eq!(r.done(), (DoneReason::Expired, lots(1), max_qty - lots(1)));
    assert_eq!(x.balance(ALICE, USDT).1, 0);
    // A market buy by a vast quote amount on the free tier is just more than the balance.
    x.fee_tier(ALICE, 0).ok();
    x.market_buy_quote(ALICE, u64::MAX).send().rejected(RejectReason::InsufficientBalance);
    // Everything that was accepted still adds up.
    x.engine.check_invariants().unwrap();
}

#[test]
fn the_largest_orders_that_fit_trade_exactly() {
    // A market with 0-decimal assets and tick value 1, funded up to the cap.
    let mut x = Exchange::empty();
    x.apply(Command::ListAsset { asset: AssetId(1), decimals: 0 }).ok();
    x.apply(Command::ListAsset { asset: AssetId(2), decimals: 0 }).ok();
    x.apply(Command::ListMarket {
        market: MarketId(1),
        base: AssetId(1),
        quote: AssetId(2),
        price_decimals: 0,
        tick_size: 1,
        lot_size: 1,
        min_notional: 0,
    })
    .ok();
    for a in [ALICE, BOB] {
        x.apply(Command::CreateAccount { account: a, fee_tier: 0 }).ok();
    }
    x.deposit(ALICE, AssetId(1), u64::MAX).ok();
    x.deposit(BOB, AssetId(2), u64::MAX).ok();
    // u64::MAX = 3 * 5 * 17 * 257 * 641 * 65537 * 6700417.
    let price = 3 * 5 * 17 * 257;
    let qty = u64::MAX / price;
    x.sell(ALICE, price, qty).gtc().ok();
    let r = x.buy(BOB, price, qty).ioc();
    assert_eq!(r.done(), (DoneReason::Filled, qty, 0));
    assert_eq!(x.balance(ALICE, AssetId(2)), (u64::MAX, 0));
    assert_eq!(x.balance(BOB, AssetId(1)), (qty, 0));
    // One more of anything overflows.
    x.sell(BOB, price, qty + 1).gtc().rejected(RejectReason::Overflow);
    x.sell(BOB, price + 1, qty).gtc().rejected(RejectReason::Overflow);
}

// ----- base quantities within u64 -----------------------------------------------------------------

/// `n` ETH/USDT lots of 0.0001 ETH, in wei.
fn eth_lots(n: u64) -> u64 {
    n * ETH_LOT
}

/// `u64::MAX` wei is about 18.4467 ETH: the most lots a side of the ETH/USDT book may hold.
const ETH_MAX_LOTS: u64 = 184_467;

/// Bids of 10 ETH at $2,000 by Carol, 8 ETH at $1,999 by Dave and 0.4467 ETH at $1,998 by
/// Bob: together the largest number of lots whose wei fit in a u64.
fn full_eth_bids() -> (Exchange, OrderId, OrderId, OrderId) {
    assert!(eth_lots(ETH_MAX_LOTS).checked_add(ETH_LOT).is_none());
    let mut x = funded();
    let carol = x.buy(CAROL, 200_000, eth_lots(100_000)).in_market(ETH_USDT).gtc().id();
    let dave = x.buy(DAVE, 199_900, eth_lots(80_000)).in_market(ETH_USDT).gtc().id();
    let bob = x.buy(BOB, 199_800, eth_lots(4_467)).in_market(ETH_USDT).gtc().id();
    let depth = x.engine.depth(ETH_USDT, Side::Buy, usize::MAX);
    assert_eq!(depth.iter().map(|l| l.quantity).sum::<u64>(), eth_lots(ETH_MAX_LOTS));
    (x, carol, dave, bob)
}

#[test]
fn a_book_side_holds_at_most_u64_max_base_atoms() {
    let (mut x, _, _, bob) = full_eth_bids();
    // More, at any price, and the side's total would not fit: refused.
    for price in [200_000, 199_800, 150_000] {
        x.buy(DAVE, price, eth_lots(10)).in_market(ETH_USDT).gtc().rejected(RejectReason::Overflow);
    }
    // Overflow comes before the minimum order value (one lot at $1 is 100 atoms) and before
    // the balance (Alice has nothing), as it does for any other overflow.
    x.buy(DAVE, 100, eth_lots(1)).in_market(ETH_USDT).post_only().rejected(RejectReason::Overflow);
    x.buy(ALICE, 200_000, eth_lots(1)).in_market(ETH_USDT).gtc().rejected(RejectReason::Overflow);
    // Orders that never rest are not limited by it, and neither is the other side.
    let r = x.buy(DAVE, 200_000, eth_lots(10_000)).in_market(ETH_USDT).ioc();
    assert_eq!(r.done(), (DoneReason::Expired, 0, eth_lots(10_000)));
    let r = x.buy(DAVE, 200_000, eth_lots(10_000)).in_market(ETH_USDT).fok();
    assert_eq!(r.done(), (DoneReason::FokUnfilled, 0, eth_lots(10_000)));
    let r = x.market_buy(DAVE, eth_lots(10_000)).protect(200_000).in_market(ETH_USDT).send();
    assert_eq!(r.done(), (DoneReason::Expired, 0, eth_lots(10_000)));
    x.deposit(BOB, ETH, eth_lots(100_000)).ok();
    x.sell(BOB, 210_000, eth_lots(100_000)).in_market(ETH_USDT).gtc().ok();
    // A trade makes room for what it took (so a small bid gets as far as the minimum order
    // value), a cancel for what it removes.
    x.deposit(CAROL, ETH, eth_lots(10)).ok();
    let r = x.sell(CAROL, 199_000, eth_lots(10)).in_market(ETH_USDT).gtc();
    assert_eq!(r.done(), (DoneReason::Filled, eth_lots(10), 0));
    x.buy(DAVE, 100, eth_lots(1))
        .in_market(ETH_USDT)
        .gtc()
        .rejected(RejectReason::BelowMinNotional);
    x.buy(DAVE, 150_000, eth_lots(10)).in_market(ETH_USDT).gtc().ok();
    x.buy(DAVE, 150_000, eth_lots(10)).in_market(ETH_USDT).gtc().rejected(RejectReason::Overflow);
    x.cancel(BOB, bob).ok();
    x.buy(DAVE, 150_000, eth_lots(4_467)).in_market(ETH_USDT).gtc().ok();
    x.buy(DAVE, 150_000, eth_lots(10)).in_market(ETH_USDT).gtc().rejected(RejectReason::Overflow);
}

#[test]
fn an_amend_keeps_its_side_within_u64_max_base_atoms() {
    let (mut x, carol, dave, bob) = full_eth_bids();
    x.amend(CAROL, carol, 0, eth_lots(100_001)).rejected(RejectReason::Overflow);
    x.amend(BOB, bob, 199_700, eth_lots(4_468)).rejected(RejectReason::Overflow);
    // The same quantity elsewhere is fine: the order's own leaves do not count twice.
    x.amend(CAROL, carol, 199_950, 0).ok();
    // Dave makes room for 1,000 lots, Carol takes exactly that.
    x.amend(DAVE, dave, 0, eth_lots(79_000)).ok();
    assert_eq!(
        x.amend(CAROL, carol, 0, eth_lots(101_000)).amended(),
        (199_950, eth_lots(101_000), false)
    );
    // Overflow comes before the balance: Bob could not pay for more anyway.
    let free = x.balance(BOB, USDT).0;
    x.withdraw(BOB, USDT, free).ok();
    x.amend(BOB, bob, 0, eth_lots(4_468)).rejected(RejectReason::Overflow);
    x.amend(BOB, bob, 0, eth_lots(4_000)).ok();
}

#[test]
fn an_amend_keeps_the_orders_quantity_within_u64_max_base_atoms() {
    let mut x = funded();
    let bid = x.buy(CAROL, 200_000, eth_lots(180_000)).in_market(ETH_USDT).gtc().id();
    // Bob sells Carol 10 lots, and Carol's own sell takes 10 more off by decrement.
    x.deposit(BOB, ETH, eth_lots(10)).ok();
    x.sell(BOB, 200_000, eth_lots(10)).in_market(ETH_USDT).gtc().ok();
    x.deposit(CAROL, ETH, eth_lots(10)).ok();
    let r = x.sell(CAROL, 200_000, eth_lots(10)).in_market(ETH_USDT).stp(StpMode::Decrement).gtc();
    assert_eq!(r.done(), (DoneReason::SelfTrade, 0, eth_lots(10)));
    let view = x.engine.order(bid).unwrap();
    assert_eq!(
        (view.quantity, view.leaves_quantity, view.filled_quantity),
        (eth_lots(180_000), eth_lots(179_980), eth_lots(10))
    );
    // The book side could take ETH_MAX_LOTS - 19 lots, but with the lots filled and the lots
    // decremented the order's quantity would not fit in u64 wei.
    x.amend(CAROL, bid, 0, eth_lots(ETH_MAX_LOTS - 19)).rejected(RejectReason::Overflow);
    x.amend(CAROL, bid, 0, eth_lots(ETH_MAX_LOTS - 20)).ok();
    let view = x.engine.order(bid).unwrap();
    assert_eq!(view.quantity, eth_lots(ETH_MAX_LOTS));
    let r = x.cancel(CAROL, bid);
    assert_eq!(
        r.done_of(bid),
        Some((DoneReason::Cancelled, eth_lots(10), eth_lots(ETH_MAX_LOTS - 10)))
    );
}

// ----- the book feed ----------------------------------------------------------------------------

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

#[test]
fn book_seq_counts_every_book_change_without_gaps() {
    let mut x = funded();
    x.fee_tier(BOB, RETAIL).ok();
    x.fee_tier(CAROL, VIP).ok();
    for a in [BOB, CAROL, DAVE] {
        x.deposit(a, ETH, 1_000_000_000_000_000_000).ok();
    }
    let mut rng = Lcg(7);
    let mut counts: HashMap<MarketId, u64> = HashMap::new();
    let traders = [BOB, CAROL, DAVE];
    let stps = [
        StpMode::None,
        StpMode::ExpireTaker,
        StpMode::ExpireMaker,
        StpMode::ExpireBoth,
        StpMode::Decrement,
    ];
    for step in 0..3_000u64 {
        let a = traders[rng.below(3) as usize];
        let (market, price, qty) = if rng.below(4) == 0 {
            (ETH_USDT, 200_000 + rng.below(20) * 100, (10 + rng.below(20)) * ETH_LOT)
        } else {
            (BTC_USDT, usd(30_000 + rng.below(20)), lots(1 + rng.below(5)))
        };
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let stp = stps[rng.below(5) as usize];
        let r = match rng.below(10) {
            0..=3 => {
                let mut t =
                    if side == Side::Buy { x.buy(a, price, qty) } else { x.sell(a, price, qty) };
                t.o.market = market;
                t.o.stp = stp;
                t.gtc()
            }
            4 => {
                let mut t =
                    if side == Side::Buy { x.buy(a, price, qty) } else { x.sell(a, price, qty) };
                t.o.market = market;
                t.o.stp = stp;
                if rng.below(2) == 0 {
                    t.ioc()
                } else {
                    t.fok()
                }
            }
            5 => {
                let mut t =
                    if side == Side::Buy { x.market_buy(a, qty) } else { x.market_sell(a, qty) };
                t.o.market = market;
                t.o.stp = stp;
                t.send()
            }
            6 | 7 => {
                let open = x.engine.open_orders(a);
                if open.is_empty() {
                    continue;
                }
                let o = open[rng.below(open.len() as u64) as usize];
                let (tick, lot) = if o.market == BTC_USDT { (TICK, LOT) } else { (100, ETH_LOT) };
                match rng.below(3) {
                    0 => x.amend(a, o.order_id, 0, (o.leaves_quantity / lot).div_ceil(2) * lot),
                    1 => x.amend(a, o.order_id, o.price + tick * rng.below(3) - tick, 0),
                    _ => x.amend(a, o.order_id, 0, o.leaves_quantity + lot),
                }
            }
            8 => {
                let open = x.engine.open_orders(a);
                if open.is_empty() {
                    continue;
                }
                x.cancel(a, open[rng.below(open.len() as u64) as usize].order_id)
            }
            _ => {
                if step % 50 == 0 {
                    x.cancel_all(a, if rng.below(2) == 0 { Some(market) } else { None })
                } else {
                    continue;
                }
            }
        };
        for e in &r.0 {
            if let Event::Book { market, .. } = e {
                *counts.entry(*market).or_default() += 1;
            }
        }
    }
    for m in [BTC_USDT, ETH_USDT] {
        assert_eq!(x.engine.market(m).unwrap().book_seq, counts[&m]);
        assert!(counts[&m] > 500, "the workload exercised {m:?}");
    }
    // Delisting removes the rest, still in sequence.
    let before = x.engine.market(BTC_USDT).unwrap().book_seq;
    let resting = x.engine.book_orders(BTC_USDT, Side::Buy).len()
        + x.engine.book_orders(BTC_USDT, Side::Sell).len();
    x.set_status(BTC_USDT, MarketStatus::Delisted).ok();
    assert_eq!(x.engine.market(BTC_USDT).unwrap().book_seq, before + resting as u64);
}
