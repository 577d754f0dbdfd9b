//! Snapshots: the engine's whole logical state as plain data, and back.
//!
//! A [`Snapshot`] holds what the state hash covers and nothing else: counters, fee tiers,
//! assets, markets with their books (best level first, time priority within a level) and
//! accounts with their balances and open orders (in the account's order). Pools, slots and
//! indexes are not part of it, nor is each account's open-order count (the length of its
//! list, which the hash already covers); [`Engine::from_snapshot`] rebuilds them, and the
//! rebuilt engine has the same [`Engine::state_hash`] and behaves identically from then on.
//! A snapshot with an account above [`crate::MAX_OPEN_ORDERS_PER_ACCOUNT`] open orders does
//! not describe a reachable state and is refused.
//!
//! Encoding is left to the caller (the journal uses a compact binary serde format and its own
//! checksum). Restoring checks every invariant ([`Engine::check_invariants`]) and refuses a
//! snapshot that does not describe a valid state.
//!
//! Cost: O(state) both ways.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Account, Asset, Engine, EngineConfig, FeeTier, Market, FEE_ACCOUNT_INDEX};
use crate::book::{Book, OrderSlot, Slot, NIL};
use crate::engine::Balance;
use crate::risk;
use crate::types::*;

/// Format version of [`Snapshot`]; bump on any change to its fields.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The engine state as plain data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`] when written.
    pub version: u32,
    /// Next order id to assign.
    pub next_order_id: OrderId,
    /// Next trade id to assign.
    pub next_trade_id: TradeId,
    /// Defined fee tiers: (tier, maker bps, taker bps).
    pub fee_tiers: Vec<(u8, u32, u32)>,
    /// Assets in listing order.
    pub assets: Vec<AssetState>,
    /// Markets in listing order.
    pub markets: Vec<MarketState>,
    /// Accounts in creation order, the fee account first.
    pub accounts: Vec<AccountState>,
}

/// One asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetState {
    /// Id.
    pub id: AssetId,
    /// Decimals.
    pub decimals: u8,
    /// Total ever deposited.
    pub deposited: u128,
    /// Total ever withdrawn.
    pub withdrawn: u128,
}

/// One market and its book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketState {
    /// Id.
    pub id: MarketId,
    /// Base asset.
    pub base: AssetId,
    /// Quote asset.
    pub quote: AssetId,
    /// Price decimals.
    pub price_decimals: u8,
    /// Tick size, price units.
    pub tick_size: u64,
    /// Lot size, base atoms.
    pub lot_size: u64,
    /// Minimum quote value.
    pub min_notional: u64,
    /// Status.
    pub status: MarketStatus,
    /// Book changes so far.
    pub book_seq: u64,
    /// Resting bids, best level first, time priority within a level.
    pub bids: Vec<OrderState>,
    /// Resting asks, best level first, time priority within a level.
    pub asks: Vec<OrderState>,
}

/// One resting order, in engine units (ticks and lots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// Order id.
    pub id: OrderId,
    /// Client order id.
    pub client_id: ClientOrderId,
    /// Owner.
    pub account: AccountId,
    /// Post-only.
    pub post_only: bool,
    /// Self-trade prevention mode.
    pub stp: StpMode,
    /// Price, ticks.
    pub price: u64,
    /// Open quantity, lots.
    pub leaves: u64,
    /// Traded quantity, lots.
    pub filled: u64,
    /// Removed by self-trade decrement, lots.
    pub decremented: u64,
    /// Hold price, ticks (buys).
    pub hold_price: u64,
    /// Whether the hold price is a client-given reserve.
    pub explicit_reserve: bool,
    /// Maker fee, bps.
    pub maker_bps: u32,
    /// Taker fee, bps.
    pub taker_bps: u32,
}

/// One account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Id.
    pub id: AccountId,
    /// Status.
    pub status: AccountStatus,
    /// Fee tier.
    pub fee_tier: u8,
    /// Balance per asset, in asset listing order.
    pub balances: Vec<Balance>,
    /// Open order ids, in the account's order (oldest registration first).
    pub open_orders: Vec<OrderId>,
}

/// Why a snapshot cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// Written by an incompatible version.
    #[error("snapshot version {found}, this engine reads version {expected}")]
    Version {
        /// Found.
        found: u32,
        /// Supported.
        expected: u32,
    },
    /// The data does not describe a valid engine state.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(msg.into())
}

impl Engine {
    /// The whole logical state as a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        let order_state = |s: Slot| {
            let o = &self.orders[s];
            OrderState {
                id: o.id,
                client_id: o.client_id,
                account: self.accounts[o.account as usize].id,
                post_only: o.post_only,
                stp: o.stp,
                price: o.price,
                leaves: o.leaves,
                filled: o.filled,
                decremented: o.decremented,
                hold_price: o.hold_price,
                explicit_reserve: o.explicit_reserve,
                maker_bps: o.maker_bps,
                taker_bps: o.taker_bps,
            }
        };
        let side_orders = |m: &Market, side: Side| {
            let mut v = Vec::new();
            for l in m.book.side(side).iter_best_first() {
                let mut s = self.levels[l].head;
                while s != NIL {
                    v.push(order_state(s));
                    s = self.orders[s].next;
                }
            }
            v
        };
        Snapshot {
            version: SNAPSHOT_VERSION,
            next_order_id: self.next_order_id,
            next_trade_id: self.next_trade_id,
            fee_tiers: self
                .fee_tiers
                .iter()
                .enumerate()
                .filter_map(|(t, f)| f.map(|f| (t as u8, f.maker_bps, f.taker_bps)))
                .collect(),
            assets: self
                .assets
                .iter()
                .map(|a| AssetState {
                    id: a.id,
                    decimals: a.decimals,
                    deposited: a.deposited,
                    withdrawn: a.withdrawn,
                })
                .collect(),
            markets: self
                .markets
                .iter()
                .map(|m| MarketState {
                    id: m.id,
                    base: self.assets[m.base as usize].id,
                    quote: self.assets[m.quote as usize].id,
                    price_decimals: m.price_decimals,
                    tick_size: m.tick_size,
                    lot_size: m.lot_size,
                    min_notional: m.min_notional,
                    status: m.status,
                    book_seq: m.book_seq,
                    bids: side_orders(m, Side::Buy),
                    asks: side_orders(m, Side::Sell),
                })
                .collect(),
            accounts: self
                .accounts
                .iter()
                .map(|a| {
                    let mut open_orders = Vec::new();
                    let mut s = a.orders_head;
                    while s != NIL {
                        open_orders.push(self.orders[s].id);
                        s = self.orders[s].acct_next;
                    }
                    AccountState {
                        id: a.id,
                        status: a.status,
                        fee_tier: a.fee_tier,
                        balances: a.balances.clone(),
                        open_orders,
                    }
                })
                .collect(),
        }
    }

    /// Rebuild an engine from a snapshot. `config` sizes the pools; they grow if the
    /// snapshot holds more.
    pub fn from_snapshot(snap: &Snapshot, config: EngineConfig) -> Result<Engine, SnapshotError> {
        if snap.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found: snap.version, expected: SNAPSHOT_VERSION });
        }
        let mut e = Engine::new(config);
        e.next_order_id = snap.next_order_id;
        e.next_trade_id = snap.next_trade_id;
        e.fee_tiers = vec![None; 256];
        for &(tier, maker_bps, taker_bps) in &snap.fee_tiers {
            e.fee_tiers[tier as usize] = Some(FeeTier { maker_bps, taker_bps });
        }
        for (i, a) in snap.assets.iter().enumerate() {
            if a.decimals > 18 || a.withdrawn > a.deposited {
                return Err(invalid(format!("asset {}: bad decimals or totals", a.id.0)));
            }
            if e.asset_index.insert(a.id.0, i as u32).is_some() {
                return Err(invalid(format!("asset {} listed twice", a.id.0)));
            }
            e.assets.push(Asset {
                id: a.id,
                decimals: a.decimals,
                deposited: a.deposited,
                withdrawn: a.withdrawn,
            });
        }
        for (i, m) in snap.markets.iter().enumerate() {
            let asset = |id: AssetId| {
                e.asset_index
                    .get(&id.0)
                    .copied()
                    .ok_or_else(|| invalid(format!("market {}: unknown asset {}", m.id.0, id.0)))
            };
            let (base, quote) = (asset(m.base)?, asset(m.quote)?);
            let tick_value = risk::tick_value(
                m.tick_size,
                m.lot_size,
                e.assets[base as usize].decimals,
                e.assets[quote as usize].decimals,
                m.price_decimals,
            )
            .ok_or_else(|| invalid(format!("market {}: invalid tick and lot", m.id.0)))?;
            if e.market_index.insert(m.id.0, i as u32).is_some() {
                return Err(invalid(format!("market {} listed twice", m.id.0)));
            }
            e.markets.push(Market {
                id: m.id,
                base,
                quote,
                price_decimals: m.price_decimals,
                tick_size: m.tick_size,
                lot_size: m.lot_size,
                tick_value,
                min_notional: m.min_notional,
                status: m.status,
                book_seq: m.book_seq,
                book: Book::new(e.levels_per_side),
            });
        }
        e.accounts.clear();
        e.account_index.clear();
        for (i, a) in snap.accounts.iter().enumerate() {
            if (i == 0) != (a.id == FEE_ACCOUNT) {
                return Err(invalid("the fee account must come first, once"));
            }
            if a.balances.len() != e.assets.len() {
                return Err(invalid(format!("account {}: wrong number of balances", a.id.0)));
            }
            if e.fee_tiers[a.fee_tier as usize].is_none() {
                return Err(invalid(format!("account {}: undefined fee tier", a.id.0)));
            }
            if e.account_index.insert(a.id.0, i as u32).is_some() {
                return Err(invalid(format!("account {} listed twice", a.id.0)));
            }
            e.accounts.push(Account {
                id: a.id,
                status: a.status,
                fee_tier: a.fee_tier,
                balances: a.balances.clone(),
                touched_by: vec![0; a.balances.len()],
                orders_head: NIL,
                orders_tail: NIL,
                open_orders: 0,
            });
        }
        debug_assert_eq!(FEE_ACCOUNT_INDEX, 0);
        // Books first (FIFO order), then the account lists in their own order.
        let mut slots: rustc_hash::FxHashMap<OrderId, Slot> = rustc_hash::FxHashMap::default();
        for (mi, m) in snap.markets.iter().enumerate() {
            for (side, orders) in [(Side::Buy, &m.bids), (Side::Sell, &m.asks)] {
                for o in orders {
                    let account = *e.account_index.get(&o.account.0).ok_or_else(|| {
                        invalid(format!("order {}: unknown account {}", o.id, o.account.0))
                    })?;
                    if o.leaves == 0 || o.id == 0 || o.id >= snap.next_order_id {
                        return Err(invalid(format!("order {}: bad id or quantity", o.id)));
                    }
                    let slot = e.orders.alloc(OrderSlot {
                        id: o.id,
                        client_id: o.client_id,
                        account,
                        market: mi as u32,
                        side,
                        post_only: o.post_only,
                        stp: o.stp,
                        price: o.price,
                        leaves: o.leaves,
                        filled: o.filled,
                        decremented: o.decremented,
                        hold_price: o.hold_price,
                        explicit_reserve: o.explicit_reserve,
                        maker_bps: o.maker_bps,
                        taker_bps: o.taker_bps,
                        level: NIL,
                        prev: NIL,
                        next: NIL,
                        acct_prev: NIL,
                        acct_next: NIL,
                    });
                    if slots.insert(o.id, slot).is_some() {
                        return Err(invalid(format!("order {} appears twice", o.id)));
                    }
                    let book = &mut e.markets[mi].book;
                    book.insert(&mut e.orders, &mut e.levels, slot);
                }
            }
        }
        let mut registered = 0usize;
        for a in &snap.accounts {
            for id in &a.open_orders {
                let slot = slots
                    .remove(id)
                    .ok_or_else(|| invalid(format!("account {}: unknown order {id}", a.id.0)))?;
                if e.accounts[e.orders[slot].account as usize].id != a.id {
                    return Err(invalid(format!("order {id} listed under the wrong account")));
                }
                if e.orders[slot].client_id != 0
                    && e.client_index
                        .contains_key(&(e.orders[slot].account, e.orders[slot].client_id))
                {
                    return Err(invalid(format!("order {id}: duplicate client order id")));
                }
                e.register(slot);
                registered += 1;
            }
        }
        if !slots.is_empty() || registered != e.orders.live() {
            return Err(invalid("resting orders missing from their accounts' lists"));
        }
        e.check_invariants().map_err(SnapshotError::Invalid)?;
        Ok(e)
    }
}
