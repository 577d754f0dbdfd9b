//! Commands: the only way to change engine state.
//!
//! Every state change — listing an asset or market, funding an account, placing or cancelling
//! an order — is a [`Command`]. The engine applies commands one at a time, in the order the
//! sequencer gave them, and the same commands in the same order always produce the same
//! events and the same state hash.
//!
//! Commands have a compact binary form ([`Command::encode`] / [`Command::decode`]) used by
//! the journal and the gateways: a one-byte tag, then fixed-width little-endian fields.
//! Decoding never panics: any byte string either decodes to exactly one command or gives a
//! [`DecodeError`] saying what is wrong and where. The form is canonical: every command has
//! exactly one encoding, and every byte string that decodes re-encodes to itself.
//!
//! `CancelAll` is the tag, the `u64` account, one filter byte, then the `u32` market if the
//! filter says there is one. The filter byte: bit 0 set = a market follows; bits 1–2 = the
//! side (0 = both, 1 = buy, 2 = sell). Side 3, or any of bits 3–7 set, is refused with
//! [`DecodeError::InvalidEnum`] (field `cancel_filter`). Journals written before the side
//! filter existed hold 0 or 1 there (the old has-market flag), which decode as before.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::*;

/// Which order a cancel or amend is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderRef {
    /// The engine's order id.
    Id(OrderId),
    /// The account's client order id.
    Client(ClientOrderId),
}

/// A new order. Prices are in price units and quantities in base atoms (see [`crate::types`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Who places it.
    pub account: AccountId,
    /// Where.
    pub market: MarketId,
    /// The client's id for it, unique among the account's open orders; 0 for none.
    #[serde(default)]
    pub client_order_id: ClientOrderId,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    pub order_type: OrderType,
    /// GTC, IOC or FOK. A market order never rests: GTC and IOC both mean IOC for it (and
    /// its `Accepted` event says IOC); FOK market orders are refused.
    #[serde(default = "default_tif")]
    pub time_in_force: TimeInForce,
    /// Reject instead of taking liquidity (limit GTC only).
    #[serde(default)]
    pub post_only: bool,
    /// Self-trade prevention mode.
    #[serde(default = "default_stp")]
    pub stp: StpMode,
    /// Limit price; for a market order an optional protection price (0 = none) beyond which
    /// it does not trade.
    #[serde(default)]
    pub price: u64,
    /// Base quantity. For a market buy by quote amount, 0.
    #[serde(default)]
    pub quantity: u64,
    /// Market buys only: spend at most this much quote (fees come on top). Otherwise 0.
    #[serde(default)]
    pub quote_quantity: u64,
    /// Limit buys only: the price the quote hold is computed at (0 = the limit price). A
    /// later amend may move the price up to it without needing more funds, and not beyond.
    #[serde(default)]
    pub reserve_price: u64,
}

fn default_tif() -> TimeInForce {
    TimeInForce::Gtc
}
fn default_stp() -> StpMode {
    StpMode::None
}

/// A state change, applied by [`crate::Engine::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// List a new asset with a fixed number of decimals (at most 18).
    ListAsset {
        /// Its id.
        asset: AssetId,
        /// Atoms per whole unit are `10^decimals`.
        decimals: u8,
    },
    /// List a new market, initially trading.
    ListMarket {
        /// Its id.
        market: MarketId,
        /// The asset bought and sold.
        base: AssetId,
        /// The asset prices are in.
        quote: AssetId,
        /// A price of `p` means `p / 10^price_decimals` quote per whole base.
        price_decimals: u8,
        /// Prices are multiples of this (price units).
        tick_size: u64,
        /// Quantities are multiples of this (base atoms).
        lot_size: u64,
        /// A limit order's quote value, and a market buy's quote amount, must be at least this.
        min_notional: u64,
    },
    /// Halt, resume or delist a market.
    SetMarketStatus {
        /// Which market.
        market: MarketId,
        /// The new status.
        status: MarketStatus,
    },
    /// Define or change a fee tier. Orders keep the rates they were placed with.
    SetFeeTier {
        /// Tier number; tier 0 exists from the start with zero fees.
        tier: u8,
        /// Fee for resting orders, in basis points of the quote value.
        maker_bps: u32,
        /// Fee for incoming orders, in basis points of the quote value.
        taker_bps: u32,
    },
    /// Open an account.
    CreateAccount {
        /// Its id (not 0, which is the fee account).
        account: AccountId,
        /// Its fee tier.
        fee_tier: u8,
    },
    /// Move an account to another fee tier.
    SetAccountFeeTier {
        /// Which account.
        account: AccountId,
        /// The tier.
        fee_tier: u8,
    },
    /// Freeze or unfreeze an account.
    SetAccountStatus {
        /// Which account.
        account: AccountId,
        /// The new status.
        status: AccountStatus,
    },
    /// Credit an account.
    Deposit {
        /// Which account.
        account: AccountId,
        /// Which asset.
        asset: AssetId,
        /// Atoms, more than 0.
        amount: u64,
    },
    /// Debit an account's free balance.
    Withdraw {
        /// Which account.
        account: AccountId,
        /// Which asset.
        asset: AssetId,
        /// Atoms, more than 0.
        amount: u64,
    },
    /// Place an order.
    PlaceOrder(NewOrder),
    /// Cancel one open order.
    CancelOrder {
        /// The owner.
        account: AccountId,
        /// The order.
        order: OrderRef,
    },
    /// Cancel every open order of an account, or only those in one market and/or on one
    /// side.
    CancelAll {
        /// The owner.
        account: AccountId,
        /// Only this market, if given.
        #[serde(default)]
        market: Option<MarketId>,
        /// Only this side, if given.
        #[serde(default)]
        side: Option<Side>,
    },
    /// Change an open limit order's price and/or remaining quantity. Reducing the quantity
    /// alone keeps its place in the queue; a new price or a larger quantity sends it to the
    /// back of its (new) level, and a new price that crosses trades like an incoming order.
    AmendOrder {
        /// The owner.
        account: AccountId,
        /// The order.
        order: OrderRef,
        /// New limit price, or 0 to keep it.
        #[serde(default)]
        new_price: u64,
        /// New remaining (open) quantity in base atoms, or 0 to keep it.
        #[serde(default)]
        new_quantity: u64,
    },
}

/// The kind of a command, for events that refer to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum CommandKind {
    ListAsset,
    ListMarket,
    SetMarketStatus,
    SetFeeTier,
    CreateAccount,
    SetAccountFeeTier,
    SetAccountStatus,
    Deposit,
    Withdraw,
    PlaceOrder,
    CancelOrder,
    CancelAll,
    AmendOrder,
}

impl Command {
    /// The kind of this command.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::ListAsset { .. } => CommandKind::ListAsset,
            Command::ListMarket { .. } => CommandKind::ListMarket,
            Command::SetMarketStatus { .. } => CommandKind::SetMarketStatus,
            Command::SetFeeTier { .. } => CommandKind::SetFeeTier,
            Command::CreateAccount { .. } => CommandKind::CreateAccount,
            Command::SetAccountFeeTier { .. } => CommandKind::SetAccountFeeTier,
            Command::SetAccountStatus { .. } => CommandKind::SetAccountStatus,
            Command::Deposit { .. } => CommandKind::Deposit,
            Command::Withdraw { .. } => CommandKind::Withdraw,
            Command::PlaceOrder(_) => CommandKind::PlaceOrder,
            Command::CancelOrder { .. } => CommandKind::CancelOrder,
            Command::CancelAll { .. } => CommandKind::CancelAll,
            Command::AmendOrder { .. } => CommandKind::AmendOrder,
        }
    }
}

/// Why a byte string is not a command.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated command: needed {needed} bytes at offset {offset}, have {available}")]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// How many bytes it needs.
        needed: usize,
        /// How many were left.
        available: usize,
    },
    /// The first byte names no command.
    #[error("unknown command tag {0}")]
    UnknownTag(u8),
    /// A field holds a value outside its enumeration.
    #[error("invalid value {value} for field `{field}` at offset {offset}")]
    InvalidEnum {
        /// The field.
        field: &'static str,
        /// The byte found.
        value: u8,
        /// Where.
        offset: usize,
    },
    /// Bytes are left after a complete command.
    #[error("{0} trailing bytes after the command")]
    TrailingBytes(usize),
}

mod tag {
    pub const LIST_ASSET: u8 = 1;
    pub const LIST_MARKET: u8 = 2;
    pub const SET_MARKET_STATUS: u8 = 3;
    pub const SET_FEE_TIER: u8 = 4;
    pub const CREATE_ACCOUNT: u8 = 5;
    pub const SET_ACCOUNT_FEE_TIER: u8 = 6;
    pub const SET_ACCOUNT_STATUS: u8 = 7;
    pub const DEPOSIT: u8 = 8;
    pub const WITHDRAW: u8 = 9;
    pub const PLACE_ORDER: u8 = 10;
    pub const CANCEL_ORDER: u8 = 11;
    pub const CANCEL_ALL: u8 = 12;
    pub const AMEND_ORDER: u8 = 13;
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    #[inline]
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn order_ref(&mut self, r: OrderRef) {
        match r {
            OrderRef::Id(id) => {
                self.u8(0);
                self.u64(id)
            }
            OrderRef::Client(id) => {
                self.u8(1);
                self.u64(id)
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.pos;
        if available < n {
            return Err(DecodeError::Truncated { offset: self.pos, needed: n, available });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    #[inline]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    #[inline]
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    #[inline]
    fn enum_byte<T>(
        &mut self,
        field: &'static str,
        map: impl Fn(u8) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let offset = self.pos;
        let value = self.u8()?;
        map(value).ok_or(DecodeError::InvalidEnum { field, value, offset })
    }
    #[inline]
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        self.enum_byte(field, |b| match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        })
    }
    #[inline]
    fn order_ref(&mut self) -> Result<OrderRef, DecodeError> {
        let is_client = self.bool("order_ref")?;
        let id = self.u64()?;
        Ok(if is_client { OrderRef::Client(id) } else { OrderRef::Id(id) })
    }
}

fn side_from(b: u8) -> Option<Side> {
    [Side::Buy, Side::Sell].get(b as usize).copied()
}
fn order_type_from(b: u8) -> Option<OrderType> {
    [OrderType::Limit, OrderType::Market].get(b as usize).copied()
}
fn tif_from(b: u8) -> Option<TimeInForce> {
    [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok].get(b as usize).copied()
}
fn stp_from(b: u8) -> Option<StpMode> {
    [
        StpMode::None,
        StpMode::ExpireTaker,
        StpMode::ExpireMaker,
        StpMode::ExpireBoth,
        StpMode::Decrement,
    ]
    .get(b as usize)
    .copied()
}
/// A cancel-all's filter byte: bit 0 = a market follows, bits 1–2 = the side (0 = both,
/// 1 = buy, 2 = sell). Side 3 and any higher bit are invalid.
fn cancel_filter_from(b: u8) -> Option<(bool, Option<Side>)> {
    let side = match (b >> 1) & 0b11 {
        0 => None,
        1 => Some(Side::Buy),
        2 => Some(Side::Sell),
        _ => return None,
    };
    (b >> 3 == 0).then_some((b & 1 == 1, side))
}
fn market_status_from(b: u8) -> Option<MarketStatus> {
    [MarketStatus::Trading, MarketStatus::Halted, MarketStatus::Delisted].get(b as usize).copied()
}
fn account_status_from(b: u8) -> Option<AccountStatus> {
    [AccountStatus::Active, AccountStatus::Frozen].get(b as usize).copied()
}

impl Command {
    /// Append the binary form of this command to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match *self {
            Command::ListAsset { asset, decimals } => {
                w.u8(tag::LIST_ASSET);
                w.u32(asset.0);
                w.u8(decimals);
            }
            Command::ListMarket {
                market,
                base,
                quote,
                price_decimals,
                tick_size,
                lot_size,
                min_notional,
            } => {
                w.u8(tag::LIST_MARKET);
                w.u32(market.0);
                w.u32(base.0);
                w.u32(quote.0);
                w.u8(price_decimals);
                w.u64(tick_size);
                w.u64(lot_size);
                w.u64(min_notional);
            }
            Command::SetMarketStatus { market, status } => {
                w.u8(tag::SET_MARKET_STATUS);
                w.u32(market.0);
                w.u8(status as u8);
            }
            Command::SetFeeTier { tier, maker_bps, taker_bps } => {
                w.u8(tag::SET_FEE_TIER);
                w.u8(tier);
                w.u32(maker_bps);
                w.u32(taker_bps);
            }
            Command::CreateAccount { account, fee_tier } => {
                w.u8(tag::CREATE_ACCOUNT);
                w.u64(account.0);
                w.u8(fee_tier);
            }
            Command::SetAccountFeeTier { account, fee_tier } => {
                w.u8(tag::SET_ACCOUNT_FEE_TIER);
                w.u64(account.0);
                w.u8(fee_tier);
            }
            Command::SetAccountStatus { account, status } => {
                w.u8(tag::SET_ACCOUNT_STATUS);
                w.u64(account.0);
                w.u8(status as u8);
            }
            Command::Deposit { account, asset, amount } => {
                w.u8(tag::DEPOSIT);
                w.u64(account.0);
                w.u32(asset.0);
                w.u64(amount);
            }
            Command::Withdraw { account, asset, amount } => {
                w.u8(tag::WITHDRAW);
                w.u64(account.0);
                w.u32(asset.0);
                w.u64(amount);
            }
            Command::PlaceOrder(o) => {
                w.u8(tag::PLACE_ORDER);
                w.u64(o.account.0);
                w.u32(o.market.0);
                w.u64(o.client_order_id);
                w.u8(o.side as u8);
                w.u8(o.order_type as u8);
                w.u8(o.time_in_force as u8);
                w.u8(o.post_only as u8);
                w.u8(o.stp as u8);
                w.u64(o.price);
                w.u64(o.quantity);
                w.u64(o.quote_quantity);
                w.u64(o.reserve_price);
            }
            Command::CancelOrder { account, order } => {
                w.u8(tag::CANCEL_ORDER);
                w.u64(account.0);
                w.order_ref(order);
            }
            Command::CancelAll { account, market, side } => {
                w.u8(tag::CANCEL_ALL);
                w.u64(account.0);
                let side_bits = match side {
                    None => 0,
                    Some(Side::Buy) => 1,
                    Some(Side::Sell) => 2,
                };
                w.u8(u8::from(market.is_some()) | side_bits << 1);
                if let Some(m) = market {
                    w.u32(m.0);
                }
            }
            Command::AmendOrder { account, order, new_price, new_quantity } => {
                w.u8(tag::AMEND_ORDER);
                w.u64(account.0);
                w.order_ref(order);
                w.u64(new_price);
                w.u64(new_quantity);
            }
        }
    }

    /// The binary form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v);
        v
    }

    /// Decode exactly one command from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let cmd = match r.u8()? {
            tag::LIST_ASSET => Command::ListAsset { asset: AssetId(r.u32()?), decimals: r.u8()? },
            tag::LIST_MARKET => Command::ListMarket {
                market: MarketId(r.u32()?),
                base: AssetId(r.u32()?),
                quote: AssetId(r.u32()?),
                price_decimals: r.u8()?,
                tick_size: r.u64()?,
                lot_size: r.u64()?,
                min_notional: r.u64()?,
            },
            tag::SET_MARKET_STATUS => Command::SetMarketStatus {
                market: MarketId(r.u32()?),
                status: r.enum_byte("status", market_status_from)?,
            },
            tag::SET_FEE_TIER => {
                Command::SetFeeTier { tier: r.u8()?, maker_bps: r.u32()?, taker_bps: r.u32()? }
            }
            tag::CREATE_ACCOUNT => {
                Command::CreateAccount { account: AccountId(r.u64()?), fee_tier: r.u8()? }
            }
            tag::SET_ACCOUNT_FEE_TIER => {
                Command::SetAccountFeeTier { account: AccountId(r.u64()?), fee_tier: r.u8()? }
            }
            tag::SET_ACCOUNT_STATUS => Command::SetAccountStatus {
                account: AccountId(r.u64()?),
                status: r.enum_byte("status", account_status_from)?,
            },
            tag::DEPOSIT => Command::Deposit {
                account: AccountId(r.u64()?),
                asset: AssetId(r.u32()?),
                amount: r.u64()?,
            },
            tag::WITHDRAW => Command::Withdraw {
                account: AccountId(r.u64()?),
                asset: AssetId(r.u32()?),
                amount: r.u64()?,
            },
            tag::PLACE_ORDER => Command::PlaceOrder(NewOrder {
                account: AccountId(r.u64()?),
                market: MarketId(r.u32()?),
                client_order_id: r.u64()?,
                side: r.enum_byte("side", side_from)?,
                order_type: r.enum_byte("order_type", order_type_from)?,
                time_in_force: r.enum_byte("time_in_force", tif_from)?,
                post_only: r.bool("post_only")?,
                stp: r.enum_byte("stp", stp_from)?,
                price: r.u64()?,
                quantity: r.u64()?,
                quote_quantity: r.u64()?,
                reserve_price: r.u64()?,
            }),
            tag::CANCEL_ORDER => {
                Command::CancelOrder { account: AccountId(r.u64()?), order: r.order_ref()? }
            }
            tag::CANCEL_ALL => {
                let account = AccountId(r.u64()?);
                let (has_market, side) = r.enum_byte("cancel_filter", cancel_filter_from)?;
                let market = if has_market { Some(MarketId(r.u32()?)) } else { None };
                Command::CancelAll { account, market, side }
            }
            tag::AMEND_ORDER => Command::AmendOrder {
                account: AccountId(r.u64()?),
                order: r.order_ref()?,
                new_price: r.u64()?,
                new_quantity: r.u64()?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        let rest = bytes.len() - r.pos;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes(rest));
        }
        Ok(cmd)
    }
}
