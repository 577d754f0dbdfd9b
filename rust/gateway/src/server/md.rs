//! Market-data state: each market's book changes as they come from the event stream, the
//! price levels (for the top-of-book feed), and a window of recent changes for retransmits.
//!
//! # Invariants
//!
//! * A market's `book_seq` is the number of the last change applied; changes are applied
//!   only in order (`book_seq + 1`), and a change at or below it (already reflected in the
//!   state the router was seeded with) is skipped together with its trade.
//! * `levels` is the market's book by price after change `book_seq`: total quantity and
//!   order count per level (levels with no orders are removed).
//! * `history` holds the last `retention` changes, consecutive by `book_seq`, ending at
//!   `book_seq`.
//! * A `Trade` event is reported after the maker fill (`BookAction::Fill`) that follows it
//!   in the engine's event order, carrying that fill's `book_seq`.
//!
//! # Complexity
//!
//! Applying a change is O(log levels) (one `BTreeMap` update and a best-level read);
//! a retransmit of `n` changes is O(n).

use std::collections::{BTreeMap, VecDeque};

use bourse_engine::{BookAction, Event, MarketId, MarketStatus, Side};
use bourse_node::CommandEvents;
use rustc_hash::FxHashMap;

use crate::protocol::{
    MdAdd, MdDelete, MdExecute, MdLevel, MdMarketStatus, MdReduce, MdTopOfBook, MdTrade, Message,
    RetransmitStatus,
};

/// The most book changes one retransmit request may ask for.
pub const MAX_RETRANSMIT: u32 = 10_000;

/// One book change, as the engine reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Market.
    pub market: MarketId,
    /// Its number.
    pub book_seq: u64,
    /// Sequencer timestamp of the command.
    pub timestamp_ns: u64,
    /// What happened.
    pub action: BookAction,
    /// The order.
    pub order_id: u64,
    /// Its side.
    pub side: Side,
    /// Its price.
    pub price: u64,
    /// Its quantity in the book after the change.
    pub order_quantity: u64,
    /// The change in its quantity.
    pub delta: u64,
    /// The level's total after the change.
    pub level_quantity: u64,
    /// The level's order count after the change.
    pub level_orders: u32,
    /// The trade of a fill (0 otherwise).
    pub trade_id: u64,
}

impl Change {
    /// The order-by-order message for this change.
    pub fn order_message(&self) -> Message {
        let (market, book_seq, timestamp_ns) = (self.market, self.book_seq, self.timestamp_ns);
        let (order_id, side, price) = (self.order_id, self.side, self.price);
        match self.action {
            BookAction::Add => Message::MdAdd(MdAdd {
                market,
                book_seq,
                timestamp_ns,
                order_id,
                side,
                price,
                quantity: self.order_quantity,
            }),
            BookAction::Fill => Message::MdExecute(MdExecute {
                market,
                book_seq,
                timestamp_ns,
                order_id,
                side,
                price,
                executed_quantity: self.delta,
                remaining_quantity: self.order_quantity,
                trade_id: self.trade_id,
            }),
            BookAction::Reduce => Message::MdReduce(MdReduce {
                market,
                book_seq,
                timestamp_ns,
                order_id,
                side,
                price,
                reduced_by: self.delta,
                remaining_quantity: self.order_quantity,
            }),
            BookAction::Remove => Message::MdDelete(MdDelete {
                market,
                book_seq,
                timestamp_ns,
                order_id,
                side,
                price,
                removed_quantity: self.delta,
            }),
        }
    }

    /// The price-level message for this change.
    pub fn level_message(&self) -> Message {
        Message::MdLevel(MdLevel {
            market: self.market,
            book_seq: self.book_seq,
            timestamp_ns: self.timestamp_ns,
            side: self.side,
            price: self.price,
            quantity: self.level_quantity,
            orders: self.level_orders,
        })
    }
}

/// The best level of each side: (price, quantity, orders), zeros when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Top {
    /// Best bid.
    pub bid: (u64, u64, u32),
    /// Best ask.
    pub ask: (u64, u64, u32),
}

/// What applying a command's events produced for one market, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MdOutput {
    /// A book change (rendered per feed kind by the caller).
    Change(Change),
    /// A trade (every feed), after its maker fill.
    Trade(MdTrade),
    /// A status change (every feed).
    Status(MdMarketStatus),
    /// The best bid or ask changed (top-of-book feed).
    Top(MdTopOfBook),
}

/// The market-data state of one market.
#[derive(Debug)]
pub struct MdMarket {
    /// Trading status.
    pub status: MarketStatus,
    /// The last applied change.
    pub book_seq: u64,
    bids: BTreeMap<u64, (u64, u32)>,
    asks: BTreeMap<u64, (u64, u32)>,
    top: Top,
    history: VecDeque<Change>,
}

/// A level as seeded from the engine: (price, quantity, orders).
pub type SeedLevel = (u64, u64, u32);

impl MdMarket {
    /// A market in `status` whose book is `bids`/`asks` (best first) after change `book_seq`.
    pub fn new(
        status: MarketStatus,
        book_seq: u64,
        bids: &[SeedLevel],
        asks: &[SeedLevel],
    ) -> MdMarket {
        let mut m = MdMarket {
            status,
            book_seq,
            bids: bids.iter().map(|&(p, q, n)| (p, (q, n))).collect(),
            asks: asks.iter().map(|&(p, q, n)| (p, (q, n))).collect(),
            top: Top::default(),
            history: VecDeque::new(),
        };
        m.top = m.compute_top();
        m
    }

    fn compute_top(&self) -> Top {
        let level = |l: Option<(&u64, &(u64, u32))>| l.map(|(&p, &(q, n))| (p, q, n));
        Top {
            bid: level(self.bids.iter().next_back()).unwrap_or_default(),
            ask: level(self.asks.iter().next()).unwrap_or_default(),
        }
    }

    /// The current best levels.
    pub fn top(&self) -> Top {
        self.top
    }

    fn apply(&mut self, c: Change, retention: usize) {
        let side = match c.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if c.level_orders == 0 {
            side.remove(&c.price);
        } else {
            side.insert(c.price, (c.level_quantity, c.level_orders));
        }
        self.book_seq = c.book_seq;
        if retention > 0 {
            if self.history.len() == retention {
                self.history.pop_front();
            }
            self.history.push_back(c);
        }
    }

    /// The retained changes `[from, from + count)`, clipped to the current one, or why not.
    pub fn retransmit(
        &self,
        from: u64,
        count: u32,
    ) -> Result<impl Iterator<Item = &Change> + '_, RetransmitStatus> {
        if count > MAX_RETRANSMIT {
            return Err(RetransmitStatus::TooMany);
        }
        if from == 0 || from > self.book_seq {
            return Err(RetransmitStatus::NotYet);
        }
        let oldest = self.history.front().map_or(self.book_seq + 1, |c| c.book_seq);
        if from < oldest {
            return Err(RetransmitStatus::TooOld);
        }
        let start = (from - oldest) as usize;
        Ok(self.history.iter().skip(start).take(count as usize))
    }
}

/// Every market's market-data state.
#[derive(Debug)]
pub struct MdState {
    markets: FxHashMap<MarketId, MdMarket>,
    retention: usize,
}

impl MdState {
    /// No markets yet; keep `retention` changes per market for retransmits.
    pub fn new(retention: usize) -> MdState {
        MdState { markets: FxHashMap::default(), retention }
    }

    /// Add (or replace) a market's state.
    pub fn seed(&mut self, market: MarketId, state: MdMarket) {
        self.markets.insert(market, state);
    }

    /// A market's state.
    pub fn market(&self, market: MarketId) -> Option<&MdMarket> {
        self.markets.get(&market)
    }

    /// Apply one command's events, reporting what subscribers get, market by market.
    pub fn apply(&mut self, ce: &CommandEvents, mut out: impl FnMut(MarketId, MdOutput)) {
        let ts = ce.timestamp_ns;
        let mut pending_trade: Option<(MarketId, u64, u64, u64, Side)> = None;
        for ev in &ce.events {
            match *ev {
                Event::MarketListed { market, .. } => {
                    self.markets
                        .entry(market)
                        .or_insert_with(|| MdMarket::new(MarketStatus::Trading, 0, &[], &[]));
                }
                Event::MarketStatusChanged { market, status, book_seq } => {
                    if let Some(m) = self.markets.get_mut(&market) {
                        if m.status != status {
                            m.status = status;
                            out(
                                market,
                                MdOutput::Status(MdMarketStatus {
                                    market,
                                    book_seq,
                                    timestamp_ns: ts,
                                    status,
                                }),
                            );
                        }
                    }
                }
                Event::Trade { market, trade_id, price, quantity, aggressor, .. } => {
                    pending_trade = Some((market, trade_id, price, quantity, aggressor));
                }
                Event::Book {
                    market,
                    book_seq,
                    action,
                    order_id,
                    side,
                    price,
                    order_quantity,
                    delta,
                    level_quantity,
                    level_orders,
                } => {
                    let trade = match (action, pending_trade) {
                        (BookAction::Fill, Some(t)) if t.0 == market => {
                            pending_trade = None;
                            Some(t)
                        }
                        _ => None,
                    };
                    let Some(m) = self.markets.get_mut(&market) else { continue };
                    if book_seq <= m.book_seq {
                        continue;
                    }
                    debug_assert_eq!(book_seq, m.book_seq + 1, "book changes are dense");
                    let change = Change {
                        market,
                        book_seq,
                        timestamp_ns: ts,
                        action,
                        order_id,
                        side,
                        price,
                        order_quantity,
                        delta,
                        level_quantity,
                        level_orders,
                        trade_id: trade.map_or(0, |t| t.1),
                    };
                    m.apply(change, self.retention);
                    out(market, MdOutput::Change(change));
                    if let Some((_, trade_id, price, quantity, aggressor)) = trade {
                        out(
                            market,
                            MdOutput::Trade(MdTrade {
                                market,
                                book_seq,
                                timestamp_ns: ts,
                                trade_id,
                                price,
                                quantity,
                                aggressor,
                            }),
                        );
                    }
                    let top = m.compute_top();
                    if top != m.top {
                        m.top = top;
                        out(market, MdOutput::Top(top_message(market, book_seq, ts, top)));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The top-of-book message for `top` after change `book_seq`.
pub fn top_message(market: MarketId, book_seq: u64, timestamp_ns: u64, top: Top) -> MdTopOfBook {
    MdTopOfBook {
        market,
        book_seq,
        timestamp_ns,
        bid_price: top.bid.0,
        bid_quantity: top.bid.1,
        bid_orders: top.bid.2,
        ask_price: top.ask.0,
        ask_quantity: top.ask.1,
        ask_orders: top.ask.2,
    }
}
