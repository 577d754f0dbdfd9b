//! Every message: a struct per template with `encode` / `decode`, and [`Message`], the enum
//! over all of them.
//!
//! The definitions below are the single source of truth. One macro turns each into the
//! struct, its codec (fields in declaration order at consecutive offsets, no padding) and its
//! [`MessageSpec`] (names, types, sizes and the doc comments), from which `docs/protocol.xml`
//! and the tables of `docs/protocol.md` are rendered.
//!
//! Template ids: 1–9 session, 10–19 order entry client → server, 20–29 order entry server →
//! client, 30–39 market data client → server, 40–59 market data server → client.

use bourse_engine::{
    ClientOrderId, MarketId, MarketStatus, OrderId, OrderRef, OrderType, Side, StpMode,
    TimeInForce, TradeId,
};

use super::codes::*;
use super::schema::{Category, Direction, FieldSpec, MessageSpec};
use super::wire::{LoginFlags, Nonce, Signature, WireField};
use super::{
    DecodeError, EncodeError, Header, HEADER_LEN, LENGTH_PREFIX_LEN, SCHEMA_ID, SCHEMA_VERSION,
};

/// Read and check the header of a frame (header + body, without the length prefix): the
/// schema id and version. The template id is the caller's to check.
pub fn read_header(frame: &[u8]) -> Result<Header, DecodeError> {
    let h = Header::read(frame)?;
    if h.schema_id != SCHEMA_ID {
        return Err(DecodeError::WrongSchema(h.schema_id));
    }
    if h.version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(h.version));
    }
    Ok(h)
}

macro_rules! messages {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident = $tid:literal, $dir:ident, $cat:ident {
            $( $(#[doc = $fdoc:literal])+ $field:ident : $ty:ty, )*
        }
    )+) => {
        $(
            $(#[doc = $doc])+
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub struct $name {
                $( $(#[doc = $fdoc])+ pub $field: $ty, )*
            }

            impl $name {
                /// The template id in the header.
                pub const TEMPLATE_ID: u16 = $tid;
                /// The message name.
                pub const NAME: &'static str = stringify!($name);
                /// Bytes of the body.
                pub const BLOCK_LENGTH: usize = 0 $(+ <$ty as WireField>::SIZE)*;
                /// Bytes of the whole frame, length prefix included.
                pub const FRAME_LEN: usize = LENGTH_PREFIX_LEN + HEADER_LEN + Self::BLOCK_LENGTH;
                /// The schema's description of the message.
                pub const SPEC: MessageSpec = MessageSpec {
                    name: stringify!($name),
                    template_id: $tid,
                    direction: Direction::$dir,
                    category: Category::$cat,
                    doc: concat!($($doc),+),
                    fields: &[$(FieldSpec {
                        name: stringify!($field),
                        ty: <$ty as WireField>::TYPE,
                        size: <$ty as WireField>::SIZE,
                        doc: concat!($($fdoc),+),
                    }),*],
                };

                /// Write the whole frame (length prefix, header, body) to the start of `out`;
                /// returns its length, [`Self::FRAME_LEN`].
                pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
                    let available = out.len();
                    let Some(out) = out.get_mut(..Self::FRAME_LEN) else {
                        return Err(EncodeError::BufferTooSmall { needed: Self::FRAME_LEN, available });
                    };
                    let (prefix, rest) = out.split_at_mut(LENGTH_PREFIX_LEN);
                    prefix.copy_from_slice(&((HEADER_LEN + Self::BLOCK_LENGTH) as u16).to_le_bytes());
                    let (header, _body) = rest.split_at_mut(HEADER_LEN);
                    Header {
                        block_length: Self::BLOCK_LENGTH as u16,
                        template_id: $tid,
                        schema_id: SCHEMA_ID,
                        version: SCHEMA_VERSION,
                    }
                    .write(header);
                    let mut _off = 0;
                    $(
                        <$ty as WireField>::put(
                            &self.$field,
                            &mut _body[_off.._off + <$ty as WireField>::SIZE],
                        );
                        _off += <$ty as WireField>::SIZE;
                    )*
                    Ok(Self::FRAME_LEN)
                }

                /// Decode a frame (header + body, without the length prefix) that must be this
                /// message.
                pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
                    let h = read_header(frame)?;
                    if h.template_id != $tid {
                        return Err(DecodeError::WrongTemplate {
                            name: stringify!($name),
                            expected: $tid,
                            actual: h.template_id,
                        });
                    }
                    Self::decode_body(&h, &frame[HEADER_LEN..])
                }

                fn decode_body(h: &Header, body: &[u8]) -> Result<Self, DecodeError> {
                    if h.block_length as usize != Self::BLOCK_LENGTH {
                        return Err(DecodeError::BlockLength {
                            message: stringify!($name),
                            block_length: h.block_length,
                            expected: Self::BLOCK_LENGTH,
                        });
                    }
                    if body.len() < Self::BLOCK_LENGTH {
                        return Err(DecodeError::Truncated {
                            message: stringify!($name),
                            available: body.len(),
                            expected: Self::BLOCK_LENGTH,
                        });
                    }
                    if body.len() > Self::BLOCK_LENGTH {
                        return Err(DecodeError::TrailingBytes {
                            message: stringify!($name),
                            extra: body.len() - Self::BLOCK_LENGTH,
                        });
                    }
                    let mut _off = 0;
                    $(
                        let $field = <$ty as WireField>::get(
                            &body[_off.._off + <$ty as WireField>::SIZE],
                        )
                        .map_err(|value| DecodeError::InvalidValue {
                            message: stringify!($name),
                            field: stringify!($field),
                            offset: _off,
                            value,
                        })?;
                        _off += <$ty as WireField>::SIZE;
                    )*
                    Ok(Self { $($field),* })
                }

                /// A message built from random seeds, one per field, for property tests.
                #[cfg(test)]
                pub(crate) fn from_seeds(_seeds: &[u64]) -> Self {
                    let mut _i = 0;
                    $(
                        let $field = <$ty as WireField>::from_seed(
                            _seeds.get(_i).copied().unwrap_or(0),
                        );
                        _i += 1;
                    )*
                    Self { $($field),* }
                }
            }

            impl From<$name> for Message {
                fn from(m: $name) -> Message {
                    Message::$name(m)
                }
            }
        )+

        /// Any message of the protocol.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Message {
            $( $(#[doc = $doc])+ $name($name), )+
        }

        impl Message {
            /// Every message's schema description, in template order.
            pub const SPECS: &'static [MessageSpec] = &[$($name::SPEC),+];

            /// Decode one frame (header + body, without the length prefix).
            pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
                let h = read_header(frame)?;
                let body = &frame[HEADER_LEN..];
                match h.template_id {
                    $($tid => $name::decode_body(&h, body).map(Message::$name),)+
                    other => Err(DecodeError::UnknownTemplate(other)),
                }
            }

            /// Write the whole frame to the start of `out`; returns its length.
            pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
                match self {
                    $(Message::$name(m) => m.encode(out),)+
                }
            }

            /// Append the whole frame to `out` (growing it by [`Message::frame_len`]).
            pub fn append_to(&self, out: &mut Vec<u8>) {
                let start = out.len();
                out.resize(start + self.frame_len(), 0);
                // Sized to the frame above, so encoding cannot fail.
                let _ = self.encode(&mut out[start..]);
            }

            /// The template id.
            pub fn template_id(&self) -> u16 {
                match self {
                    $(Message::$name(_) => $tid,)+
                }
            }

            /// The schema description.
            pub fn spec(&self) -> &'static MessageSpec {
                match self {
                    $(Message::$name(_) => &$name::SPEC,)+
                }
            }

            /// Bytes of the whole frame, length prefix included.
            pub fn frame_len(&self) -> usize {
                match self {
                    $(Message::$name(_) => $name::FRAME_LEN,)+
                }
            }

            /// The schema description for a template id.
            pub fn spec_of(template_id: u16) -> Option<&'static MessageSpec> {
                match template_id {
                    $($tid => Some(&$name::SPEC),)+
                    _ => None,
                }
            }

            /// One message of each template built from random seeds, for property tests.
            #[cfg(test)]
            pub(crate) fn from_seeds(template_index: usize, seeds: &[u64]) -> Message {
                let builders: &[fn(&[u64]) -> Message] =
                    &[$(|s| Message::$name($name::from_seeds(s))),+];
                builders[template_index % builders.len()](seeds)
            }
        }
    };
}

messages! {
    // ---- Session ---------------------------------------------------------------------------

    /// The first message on every connection: the nonce the Login must sign and echo.
    Challenge = 1, ServerToClient, Session {
        /// 32 random bytes, unique per connection.
        nonce: Nonce,
        /// The server clock, ns since the Unix epoch (the Login timestamp must be near it).
        server_time_ns: u64,
    }

    /// Opens a session: the API key, the signature over the challenge, and the options.
    Login = 2, ClientToServer, Session {
        /// The API key id.
        key_id: u64,
        /// The client clock, ns since the Unix epoch.
        timestamp_ns: u64,
        /// The Challenge's nonce, echoed.
        nonce: Nonce,
        /// HMAC-SHA256 with the key's secret over the signing payload (see the session flow).
        signature: Signature,
        /// Requested heartbeat interval in ms.
        heartbeat_ms: u32,
        /// Order entry, drop copy or market data.
        session_kind: SessionKind,
        /// Options (cancel-on-disconnect).
        flags: LoginFlags,
        /// First outbound seq wanted: last seen + 1 to resume, 0 for new messages only.
        next_seq: u64,
    }

    /// The login succeeded; replayed messages (if any) follow, then live ones.
    LoginAccepted = 3, ServerToClient, Session {
        /// This session's id (for logs and support).
        session_id: u64,
        /// The account the key trades for.
        account: u64,
        /// Heartbeat interval granted, ms; either side times out after 3 intervals of silence.
        heartbeat_ms: u32,
        /// Every outbound message of this session has seq ≥ this (order entry and drop copy; 0 for market data).
        next_seq: u64,
    }

    /// The login failed; the server closes the connection.
    LoginRejected = 4, ServerToClient, Session {
        /// Why.
        reason: LoginRejectReason,
    }

    /// Sent by either side when it has sent nothing else for one heartbeat interval.
    Heartbeat = 5, Both, Session {
        /// The sender's clock, ns since the Unix epoch.
        timestamp_ns: u64,
    }

    /// The client ends the session cleanly: no cancel-on-disconnect. The server answers with EndOfSession.
    Logout = 6, ClientToServer, Session {
    }

    /// The server has sent everything it will send on this session and closes the connection.
    EndOfSession = 7, ServerToClient, Session {
        /// Why.
        reason: EndReason,
    }

    /// The server found a protocol violation and closes the connection after this message.
    ProtocolError = 8, ServerToClient, Session {
        /// What was wrong.
        reason: ProtocolErrorCode,
        /// The offending message's template id (0 if the frame had no readable header).
        template_id: u16,
        /// Body offset of the offending field, when there is one (else 0).
        offset: u16,
    }

    // ---- Order entry, client → server -----------------------------------------------------

    /// Place an order.
    NewOrder = 10, ClientToServer, OrderEntry {
        /// Greater than the last client_ref of this API key; a repeat or lower one is rejected as a duplicate.
        client_ref: u64,
        /// Market.
        market: MarketId,
        /// The client's id, unique among the account's open orders; 0 for none.
        client_order_id: ClientOrderId,
        /// Buy or sell.
        side: Side,
        /// Limit or market.
        order_type: OrderType,
        /// GTC, IOC or FOK (a market order's GTC means IOC).
        time_in_force: TimeInForce,
        /// Reject instead of taking liquidity (limit GTC only).
        post_only: bool,
        /// Self-trade prevention mode.
        stp: StpMode,
        /// Limit price (price units); for a market order the protection price, 0 = none.
        price: u64,
        /// Base atoms; 0 for a market buy by quote amount.
        quantity: u64,
        /// Market buys by quote amount: quote atoms to spend; else 0.
        quote_quantity: u64,
        /// Limit buys: price the hold is computed at, a ceiling for later amends; 0 = the limit price.
        reserve_price: u64,
    }

    /// Cancel one open order.
    CancelOrder = 11, ClientToServer, OrderEntry {
        /// Greater than the last client_ref of this API key (as NewOrder).
        client_ref: u64,
        /// The order, by order id or client order id.
        order: OrderRef,
    }

    /// Change an open limit order. A smaller quantity alone keeps its priority; a new price or a larger quantity loses it.
    AmendOrder = 12, ClientToServer, OrderEntry {
        /// Greater than the last client_ref of this API key (as NewOrder).
        client_ref: u64,
        /// The order, by order id or client order id.
        order: OrderRef,
        /// New limit price, 0 = keep.
        new_price: u64,
        /// New remaining (open) quantity in base atoms, 0 = keep.
        new_quantity: u64,
    }

    /// Cancel every open order of the account, optionally only in one market and/or on one side.
    MassCancel = 13, ClientToServer, OrderEntry {
        /// Greater than the last client_ref of this API key (as NewOrder).
        client_ref: u64,
        /// Only this market, if present.
        market: Option<MarketId>,
        /// Only this side (0 = both).
        side: SideFilter,
    }

    // ---- Order entry, server → client -----------------------------------------------------

    /// An order passed every check and has an order id.
    OrderAccepted = 20, ServerToClient, OrderEntry {
        /// Outbound stream position (node_seq << 16 | index).
        seq: u64,
        /// Sequencer timestamp of the command, ns since the Unix epoch.
        timestamp_ns: u64,
        /// The NewOrder's client_ref (0 if another session or channel entered it).
        client_ref: u64,
        /// The engine's order id.
        order_id: OrderId,
        /// Market.
        market: MarketId,
        /// Client order id (0 = none).
        client_order_id: ClientOrderId,
        /// Side.
        side: Side,
        /// Order type.
        order_type: OrderType,
        /// Effective time in force (IOC for a market order).
        time_in_force: TimeInForce,
        /// Post-only.
        post_only: bool,
        /// Self-trade prevention mode.
        stp: StpMode,
        /// Limit or protection price (0 = none).
        price: u64,
        /// Base atoms (0 for a market buy by quote amount).
        quantity: u64,
        /// Quote atoms for a market buy by quote amount.
        quote_quantity: u64,
        /// Reserve price (0 = none).
        reserve_price: u64,
    }

    /// A request was refused; the book was not touched.
    OrderRejected = 21, ServerToClient, OrderEntry {
        /// Outbound stream position; 0 for a session-level reject (never replayed).
        seq: u64,
        /// Sequencer timestamp (gateway clock for a session-level reject), ns.
        timestamp_ns: u64,
        /// The request's client_ref.
        client_ref: u64,
        /// The request's template id (NewOrder, CancelOrder, AmendOrder, MassCancel).
        request_template: u16,
        /// The order the request named (0 if none).
        order_id: OrderId,
        /// The client order id the request named (0 if none).
        client_order_id: ClientOrderId,
        /// Why.
        reason: RejectCode,
    }

    /// One of the account's orders traded.
    OrderExecuted = 22, ServerToClient, OrderEntry {
        /// Outbound stream position.
        seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The order.
        order_id: OrderId,
        /// Its client order id (0 = none).
        client_order_id: ClientOrderId,
        /// Market.
        market: MarketId,
        /// Trade id (the same for both sides of the trade).
        trade_id: TradeId,
        /// The order's side.
        side: Side,
        /// Trade price (the resting order's).
        price: u64,
        /// Base atoms traded.
        quantity: u64,
        /// Quote atoms traded (price × quantity, exact).
        quote_quantity: u64,
        /// Fee charged, quote atoms.
        fee: u64,
        /// Maker or taker.
        liquidity: Liquidity,
        /// Quantity still open after this fill (0 = the order is done).
        leaves_quantity: u64,
    }

    /// An order ended without filling completely.
    OrderCancelled = 23, ServerToClient, OrderEntry {
        /// Outbound stream position.
        seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The client_ref of the request of this account that caused it (a CancelOrder, a MassCancel, or the NewOrder/AmendOrder whose remainder expired or met self-trade prevention); 0 for a delisting or cancel-on-disconnect.
        client_ref: u64,
        /// The order.
        order_id: OrderId,
        /// Its client order id (0 = none).
        client_order_id: ClientOrderId,
        /// Market.
        market: MarketId,
        /// Why.
        reason: CancelReason,
        /// Base atoms traded over the order's life.
        filled_quantity: u64,
        /// Base atoms that will never trade.
        cancelled_quantity: u64,
    }

    /// An open order's price or quantity changed.
    OrderAmended = 24, ServerToClient, OrderEntry {
        /// Outbound stream position.
        seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The AmendOrder's client_ref (0 if another session or channel amended it).
        client_ref: u64,
        /// The order.
        order_id: OrderId,
        /// Its client order id (0 = none).
        client_order_id: ClientOrderId,
        /// Market.
        market: MarketId,
        /// The new price.
        price: u64,
        /// The new open quantity.
        leaves_quantity: u64,
        /// Whether it kept its place in the queue.
        kept_priority: bool,
    }

    /// A MassCancel finished; its OrderCancelled messages came before this.
    MassCancelReport = 25, ServerToClient, OrderEntry {
        /// Outbound stream position.
        seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The MassCancel's client_ref (0 for cancel-on-disconnect or another channel).
        client_ref: u64,
        /// The market filter.
        market: Option<MarketId>,
        /// The side filter.
        side: SideFilter,
        /// Orders cancelled.
        count: u32,
    }

    // ---- Market data, client → server -----------------------------------------------------

    /// Subscribe to one market's feed; a snapshot, then incrementals follow.
    MdSubscribe = 30, ClientToServer, MarketData {
        /// Market.
        market: MarketId,
        /// Order by order, levels, or top of book.
        feed: FeedKind,
        /// Reserved for a depth-limited levels feed: must be 0 (every level) in this version.
        depth: u16,
    }

    /// Stop a subscription.
    MdUnsubscribe = 31, ClientToServer, MarketData {
        /// Market.
        market: MarketId,
    }

    /// Ask again for the book changes [from_book_seq, from_book_seq + count).
    MdRetransmitRequest = 32, ClientToServer, MarketData {
        /// Market.
        market: MarketId,
        /// First book_seq wanted.
        from_book_seq: u64,
        /// How many book_seq numbers.
        count: u32,
    }

    // ---- Market data, server → client -----------------------------------------------------

    /// A snapshot begins; it shows the book exactly as of book_seq.
    MdSnapshotStart = 40, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// The book_seq the snapshot lines up with; incrementals continue at book_seq + 1.
        book_seq: u64,
        /// The feed it is for.
        feed: FeedKind,
        /// The market's status.
        status: MarketStatus,
        /// Entries (MdSnapshotOrder or MdSnapshotLevel) that follow.
        entries: u32,
    }

    /// One resting order of a snapshot: bids best to worst then asks best to worst, each level oldest first.
    MdSnapshotOrder = 41, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// The order.
        order_id: OrderId,
        /// Side.
        side: Side,
        /// Price.
        price: u64,
        /// Open quantity.
        quantity: u64,
    }

    /// One price level of a snapshot: bids best to worst, then asks best to worst.
    MdSnapshotLevel = 42, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Side.
        side: Side,
        /// Price.
        price: u64,
        /// Total open quantity at the level.
        quantity: u64,
        /// Orders at the level.
        orders: u32,
    }

    /// The snapshot is complete.
    MdSnapshotEnd = 43, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// The same book_seq as MdSnapshotStart.
        book_seq: u64,
    }

    /// An order rests at the back of its level (also the second half of an amend that loses priority).
    MdAdd = 44, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Book sequence number (dense per market).
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The order.
        order_id: OrderId,
        /// Side.
        side: Side,
        /// Price.
        price: u64,
        /// Open quantity.
        quantity: u64,
    }

    /// A resting order traded (partly or fully).
    MdExecute = 45, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Book sequence number.
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The resting order.
        order_id: OrderId,
        /// Its side.
        side: Side,
        /// Its price (the trade price).
        price: u64,
        /// Quantity traded.
        executed_quantity: u64,
        /// Quantity left open (0 = it left the book).
        remaining_quantity: u64,
        /// The trade id.
        trade_id: TradeId,
    }

    /// A resting order's quantity went down without a trade (amend down, self-trade decrement); priority kept.
    MdReduce = 46, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Book sequence number.
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The order.
        order_id: OrderId,
        /// Side.
        side: Side,
        /// Price.
        price: u64,
        /// Quantity removed.
        reduced_by: u64,
        /// Quantity left open.
        remaining_quantity: u64,
    }

    /// A resting order left the book without trading (cancel, expiry, self-trade, delisting, or the first half of an amend that loses priority).
    MdDelete = 47, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Book sequence number.
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The order.
        order_id: OrderId,
        /// Side.
        side: Side,
        /// Price.
        price: u64,
        /// The quantity it had.
        removed_quantity: u64,
    }

    /// A trade, on every feed; it does not take a book_seq of its own.
    MdTrade = 48, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// The book_seq of the maker fill (MdExecute) this trade is.
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// Trade id.
        trade_id: TradeId,
        /// Price.
        price: u64,
        /// Base atoms.
        quantity: u64,
        /// The incoming order's side.
        aggressor: Side,
    }

    /// The market's trading status changed; it does not take a book_seq of its own.
    MdMarketStatus = 49, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// The market's book_seq at the change.
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// The new status.
        status: MarketStatus,
    }

    /// Levels feed: a price level after one book change (quantity 0 = the level is gone).
    MdLevel = 50, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Book sequence number (dense per market).
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// Side.
        side: Side,
        /// Price.
        price: u64,
        /// Total open quantity at the level.
        quantity: u64,
        /// Orders at the level.
        orders: u32,
    }

    /// Top-of-book feed: the best bid and ask after a change to either (quantity 0 = that side is empty). A full state: gaps need no repair.
    MdTopOfBook = 51, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// The book_seq of the change.
        book_seq: u64,
        /// Sequencer timestamp, ns.
        timestamp_ns: u64,
        /// Best bid price.
        bid_price: u64,
        /// Quantity at the best bid.
        bid_quantity: u64,
        /// Orders at the best bid.
        bid_orders: u32,
        /// Best ask price.
        ask_price: u64,
        /// Quantity at the best ask.
        ask_quantity: u64,
        /// Orders at the best ask.
        ask_orders: u32,
    }

    /// The answer to MdRetransmitRequest; when accepted, the book changes follow with their original book_seq.
    MdRetransmitReply = 52, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// First book_seq that follows.
        from_book_seq: u64,
        /// How many book_seq numbers follow (may be fewer than asked, up to the current one).
        count: u32,
        /// Accepted or why not.
        status: RetransmitStatus,
    }

    /// A subscription was refused.
    MdSubscribeRejected = 53, ServerToClient, MarketData {
        /// Market.
        market: MarketId,
        /// Why.
        reason: SubscribeRejectReason,
    }
}

/// Bytes of [`Login::signing_payload`].
pub const LOGIN_SIGNING_PAYLOAD_LEN: usize = 32 + 8 + 8 + 1 + 4 + 1 + 8;

impl Login {
    /// The byte string the Login signature is an HMAC-SHA256 of, under the API key's secret:
    /// `nonce (32) | timestamp_ns (u64) | key_id (u64) | session_kind (u8) |
    /// heartbeat_ms (u32) | flags (u8) | next_seq (u64)`, integers little-endian, 62 bytes.
    pub fn signing_payload(&self) -> [u8; LOGIN_SIGNING_PAYLOAD_LEN] {
        let mut p = [0u8; LOGIN_SIGNING_PAYLOAD_LEN];
        p[0..32].copy_from_slice(&self.nonce.0);
        p[32..40].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        p[40..48].copy_from_slice(&self.key_id.to_le_bytes());
        self.session_kind.put(&mut p[48..49]);
        p[49..53].copy_from_slice(&self.heartbeat_ms.to_le_bytes());
        p[53] = self.flags.bits();
        p[54..62].copy_from_slice(&self.next_seq.to_le_bytes());
        p
    }
}
