//! The order book: price levels, FIFO queues and the pools they live in.
//!
//! Layout
//! * Every resting order of every market lives in one [`OrderPool`], a slab of fixed-size
//!   [`OrderSlot`]s indexed by `u32`. Freed slots go on an intrusive free list and are reused
//!   first, so steady-state placing and cancelling never allocates.
//! * Each price level is a [`Level`] in a [`LevelPool`] (same scheme). A level holds a
//!   doubly-linked FIFO of its orders (`head` → `tail` through `OrderSlot::prev/next`) and
//!   the running totals of quantity and order count.
//! * Each side of each market is a [`Ladder`]: the level ids sorted by price from worst to
//!   best, with a parallel array of sort keys. The best level is the last element.
//!
//! Invariants (checked by `Engine::check_invariants`)
//! * Ladder keys are strictly increasing; key = ticks for bids, `u64::MAX - ticks` for asks.
//! * A level is in a ladder iff it has at least one order; its `total_lots` is the sum of
//!   its orders' `leaves_lots` and `count` their number; every resting order has leaves > 0.
//! * Orders in a level are in time priority: an order joins at the tail and only a
//!   quantity reduction keeps its place.
//!
//! Complexity: best price O(1); add to an existing level O(log L) to find it (L levels on
//! the side), O(1) to append; new level O(log L + distance from the top), as levels are
//! shifted within a preallocated array; cancel O(1), plus O(log L + distance) when the
//! level empties; matching O(1) per fill.

use crate::types::Side;

/// Index of a slot in a pool; [`NIL`] for none.
pub type Slot = u32;
/// The null slot.
pub const NIL: Slot = u32::MAX;

/// A resting (or in-flight) order. Prices in ticks, quantities in lots.
#[derive(Clone, Copy, Debug)]
pub struct OrderSlot {
    /// Engine order id.
    pub id: u64,
    /// Client order id (0 = none).
    pub client_id: u64,
    /// Dense index of the owning account.
    pub account: u32,
    /// Dense index of the market.
    pub market: u32,
    /// Side.
    pub side: Side,
    /// Whether the order must never take liquidity.
    pub post_only: bool,
    /// Self-trade prevention mode, used when an amend makes it trade.
    pub stp: crate::types::StpMode,
    /// Limit price in ticks.
    pub price: u64,
    /// Open quantity in lots; > 0 while resting.
    pub leaves: u64,
    /// Quantity traded so far, in lots.
    pub filled: u64,
    /// Quantity removed by self-trade prevention (decrement) without trading, in lots.
    pub decremented: u64,
    /// Buys: the price in ticks the quote hold is computed at (>= price).
    pub hold_price: u64,
    /// Buys: whether `hold_price` was set by the client (a ceiling for amends).
    pub explicit_reserve: bool,
    /// Maker fee rate captured at placement, bps.
    pub maker_bps: u32,
    /// Taker fee rate captured at placement, bps.
    pub taker_bps: u32,
    /// Level this order rests in, or NIL.
    pub level: Slot,
    /// Previous order in the level (towards the head), or NIL.
    pub prev: Slot,
    /// Next order in the level (towards the tail), or NIL; also the free-list link.
    pub next: Slot,
    /// Previous open order of the same account, or NIL.
    pub acct_prev: Slot,
    /// Next open order of the same account, or NIL.
    pub acct_next: Slot,
}

impl OrderSlot {
    const EMPTY: OrderSlot = OrderSlot {
        id: 0,
        client_id: 0,
        account: 0,
        market: 0,
        side: Side::Buy,
        post_only: false,
        stp: crate::types::StpMode::None,
        price: 0,
        leaves: 0,
        filled: 0,
        decremented: 0,
        hold_price: 0,
        explicit_reserve: false,
        maker_bps: 0,
        taker_bps: 0,
        level: NIL,
        prev: NIL,
        next: NIL,
        acct_prev: NIL,
        acct_next: NIL,
    };

    /// The larger of the two fee rates: what a buy's quote hold must cover.
    #[inline]
    pub fn hold_bps(&self) -> u32 {
        self.maker_bps.max(self.taker_bps)
    }
}

/// Slab of orders with an intrusive free list.
#[derive(Clone, Debug)]
pub struct OrderPool {
    slots: Vec<OrderSlot>,
    free_head: Slot,
    live: usize,
}

impl OrderPool {
    /// A pool with room for `capacity` orders before it grows. The slots are written (and so
    /// their memory faulted in) now, so that placing orders later never waits on the kernel.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.min(NIL as usize);
        let mut slots = vec![OrderSlot::EMPTY; capacity];
        for (i, slot) in slots.iter_mut().enumerate() {
            slot.next = if i + 1 < capacity { (i + 1) as Slot } else { NIL };
        }
        OrderPool { slots, free_head: if capacity > 0 { 0 } else { NIL }, live: 0 }
    }

    /// Store an order and return its slot.
    #[inline]
    pub fn alloc(&mut self, order: OrderSlot) -> Slot {
        self.live += 1;
        if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.slots[slot as usize].next;
            self.slots[slot as usize] = order;
            slot
        } else {
            self.slots.push(order);
            (self.slots.len() - 1) as Slot
        }
    }

    /// Return a slot to the pool.
    #[inline]
    pub fn free(&mut self, slot: Slot) {
        self.live -= 1;
        let s = &mut self.slots[slot as usize];
        *s = OrderSlot::EMPTY;
        s.next = self.free_head;
        self.free_head = slot;
    }

    /// Number of live orders.
    pub fn live(&self) -> usize {
        self.live
    }
}

impl std::ops::Index<Slot> for OrderPool {
    type Output = OrderSlot;
    #[inline]
    fn index(&self, slot: Slot) -> &OrderSlot {
        &self.slots[slot as usize]
    }
}

impl std::ops::IndexMut<Slot> for OrderPool {
    #[inline]
    fn index_mut(&mut self, slot: Slot) -> &mut OrderSlot {
        &mut self.slots[slot as usize]
    }
}

/// A price level: a FIFO of orders at one price on one side.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    /// Price in ticks.
    pub price: u64,
    /// Sum of the orders' leaves, in lots.
    pub total: u64,
    /// Number of orders.
    pub count: u32,
    /// Oldest order (first to fill).
    pub head: Slot,
    /// Newest order; also the free-list link when the level is free.
    pub tail: Slot,
}

/// Slab of levels with an intrusive free list (through `tail`).
#[derive(Clone, Debug)]
pub struct LevelPool {
    levels: Vec<Level>,
    free_head: Slot,
}

impl LevelPool {
    /// A pool with room for `capacity` levels before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        LevelPool { levels: Vec::with_capacity(capacity), free_head: NIL }
    }

    fn alloc(&mut self, price: u64) -> Slot {
        let level = Level { price, total: 0, count: 0, head: NIL, tail: NIL };
        if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.levels[slot as usize].tail;
            self.levels[slot as usize] = level;
            slot
        } else {
            self.levels.push(level);
            (self.levels.len() - 1) as Slot
        }
    }

    fn free(&mut self, slot: Slot) {
        let l = &mut self.levels[slot as usize];
        l.head = NIL;
        l.tail = self.free_head;
        l.count = 0;
        l.total = 0;
        self.free_head = slot;
    }
}

impl std::ops::Index<Slot> for LevelPool {
    type Output = Level;
    #[inline]
    fn index(&self, slot: Slot) -> &Level {
        &self.levels[slot as usize]
    }
}

impl std::ops::IndexMut<Slot> for LevelPool {
    #[inline]
    fn index_mut(&mut self, slot: Slot) -> &mut Level {
        &mut self.levels[slot as usize]
    }
}

/// One side of one book: level ids sorted from worst to best price.
#[derive(Clone, Debug)]
pub struct Ladder {
    side: Side,
    keys: Vec<u64>,
    levels: Vec<Slot>,
    /// Sum of the leaves of every order on this side, in lots.
    total_lots: u64,
}

impl Ladder {
    /// An empty side with room for `capacity` levels before it grows.
    pub fn with_capacity(side: Side, capacity: usize) -> Self {
        Ladder {
            side,
            keys: Vec::with_capacity(capacity),
            levels: Vec::with_capacity(capacity),
            total_lots: 0,
        }
    }

    /// Sum of the leaves of every order on this side, in lots. The engine keeps this times
    /// the lot size within `u64`, so no level or order quantity in base atoms can overflow.
    #[inline]
    pub fn total_lots(&self) -> u64 {
        self.total_lots
    }

    /// Sort key: larger is better.
    #[inline]
    fn key(&self, price: u64) -> u64 {
        match self.side {
            Side::Buy => price,
            Side::Sell => u64::MAX - price,
        }
    }

    #[inline]
    fn search(&self, price: u64) -> Result<usize, usize> {
        let key = self.key(price);
        // Activity clusters at the top of the book (the end of the array): look there first.
        let n = self.keys.len();
        if n == 0 || key > self.keys[n - 1] {
            return Err(n);
        }
        if key == self.keys[n - 1] {
            return Ok(n - 1);
        }
        self.keys[..n - 1].binary_search(&key)
    }

    /// The best level, if any. O(1).
    #[inline]
    pub fn best(&self) -> Option<Slot> {
        self.levels.last().copied()
    }

    /// The level at `price`, if any.
    #[inline]
    pub fn find(&self, price: u64) -> Option<Slot> {
        self.search(price).ok().map(|i| self.levels[i])
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether the side is empty.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Levels from best to worst.
    pub fn iter_best_first(&self) -> impl Iterator<Item = Slot> + '_ {
        self.levels.iter().rev().copied()
    }

    /// Whether `price` on this side would trade against `opposite_price` resting on the
    /// other side (a bid at or above an ask).
    #[inline]
    pub fn crosses(side: Side, price: u64, opposite_price: u64) -> bool {
        match side {
            Side::Buy => price >= opposite_price,
            Side::Sell => price <= opposite_price,
        }
    }

    /// Keys strictly increasing and in step with the levels' prices.
    pub fn check(&self, pool: &LevelPool) -> Result<(), String> {
        for w in self.keys.windows(2) {
            if w[0] >= w[1] {
                return Err(format!("{:?} ladder keys not increasing: {:?}", self.side, w));
            }
        }
        let sum: u64 = self.levels.iter().map(|l| pool[*l].total).sum();
        if sum != self.total_lots {
            return Err(format!(
                "{:?} side total {} but its levels sum to {sum}",
                self.side, self.total_lots
            ));
        }
        for (k, l) in self.keys.iter().zip(&self.levels) {
            if *k != self.key(pool[*l].price) {
                return Err(format!("{:?} ladder key {} does not match level price", self.side, k));
            }
        }
        Ok(())
    }
}

/// Both sides of one market's book, operating on the shared pools.
#[derive(Clone, Debug)]
pub struct Book {
    /// Bids.
    pub bids: Ladder,
    /// Asks.
    pub asks: Ladder,
}

impl Book {
    /// An empty book.
    pub fn new(levels_per_side: usize) -> Self {
        Book {
            bids: Ladder::with_capacity(Side::Buy, levels_per_side),
            asks: Ladder::with_capacity(Side::Sell, levels_per_side),
        }
    }

    /// The ladder for `side`.
    #[inline]
    pub fn side(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    fn side_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Append order `slot` (already in `orders`, with price, side and leaves set) at the
    /// back of its price level, creating the level if needed. Returns the level.
    pub fn insert(&mut self, orders: &mut OrderPool, levels: &mut LevelPool, slot: Slot) -> Slot {
        let (side, price, leaves) = {
            let o = &orders[slot];
            (o.side, o.price, o.leaves)
        };
        debug_assert!(leaves > 0);
        let ladder = self.side_mut(side);
        ladder.total_lots += leaves;
        let level = match ladder.search(price) {
            Ok(i) => ladder.levels[i],
            Err(i) => {
                let l = levels.alloc(price);
                let key = ladder.key(price);
                ladder.keys.insert(i, key);
                ladder.levels.insert(i, l);
                l
            }
        };
        let lv = &mut levels[level];
        let tail = lv.tail;
        lv.total += leaves;
        lv.count += 1;
        lv.tail = slot;
        if tail == NIL {
            lv.head = slot;
        } else {
            orders[tail].next = slot;
        }
        let o = &mut orders[slot];
        o.level = level;
        o.prev = tail;
        o.next = NIL;
        level
    }

    /// Unlink order `slot` from its level (removing the level if it empties). The slot
    /// itself stays allocated. Returns the level's (total, count) afterwards.
    pub fn remove(
        &mut self,
        orders: &mut OrderPool,
        levels: &mut LevelPool,
        slot: Slot,
    ) -> (u64, u32) {
        let (level, prev, next, leaves, side, price) = {
            let o = &orders[slot];
            (o.level, o.prev, o.next, o.leaves, o.side, o.price)
        };
        if prev != NIL {
            orders[prev].next = next;
        }
        if next != NIL {
            orders[next].prev = prev;
        }
        let lv = &mut levels[level];
        if lv.head == slot {
            lv.head = next;
        }
        if lv.tail == slot {
            lv.tail = prev;
        }
        lv.total -= leaves;
        lv.count -= 1;
        let after = (lv.total, lv.count);
        let ladder = self.side_mut(side);
        ladder.total_lots -= leaves;
        if lv.count == 0 {
            let i = ladder.search(price).expect("a resting order's level is in its ladder");
            ladder.keys.remove(i);
            ladder.levels.remove(i);
            levels.free(level);
        }
        let o = &mut orders[slot];
        o.level = NIL;
        o.prev = NIL;
        o.next = NIL;
        after
    }

    /// Reduce a resting order's leaves by `by` lots (< its leaves), keeping its place.
    /// Returns the level total afterwards.
    #[inline]
    pub fn reduce(
        &mut self,
        orders: &mut OrderPool,
        levels: &mut LevelPool,
        slot: Slot,
        by: u64,
    ) -> (u64, u32) {
        let o = &mut orders[slot];
        debug_assert!(by < o.leaves);
        o.leaves -= by;
        self.side_mut(o.side).total_lots -= by;
        let lv = &mut levels[o.level];
        lv.total -= by;
        (lv.total, lv.count)
    }
}
