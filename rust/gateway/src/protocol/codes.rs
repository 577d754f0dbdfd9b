//! Code tables: every enumeration on the wire, and the exhaustive mappings from the engine's
//! reasons to wire codes.
//!
//! Required enumerations start at 1, so an all-zero field is never a valid value by accident;
//! 0 is used only where it means "none" or "both" (`SideFilter`). The engine's
//! [`RejectReason`] codes keep their stable engine numbers (1–99); session-level reject
//! reasons use 100 and up. The mapping functions are plain exhaustive `match`es: adding a
//! variant to an engine enum fails to compile here until it has a wire code.

use bourse_engine::{
    BookAction, DoneReason, MarketStatus, OrderType, RejectReason, Side, StpMode, TimeInForce,
};

use super::schema::{EnumSpec, ValueSpec};
use super::wire::WireField;
use super::DecodeError;
use super::FrameError;

/// An enumeration with a wire code table.
pub trait WireEnum: Copy + 'static {
    /// Every value, in code order.
    const ALL: &'static [Self];
    /// The schema's description of the table.
    const SPEC: EnumSpec;
    /// The wire code.
    fn code(self) -> u64;
    /// The value for a wire code, if it is in the table.
    fn from_code(code: u64) -> Option<Self>;
}

macro_rules! codes {
    // Implement the table for an enum defined elsewhere (the engine's).
    (impl $ty:ident : $repr:ident, $doc:expr, { $($(#[doc = $vd:literal])+ $var:ident = $code:literal,)+ }) => {
        impl WireEnum for $ty {
            const ALL: &'static [Self] = &[$($ty::$var),+];
            const SPEC: EnumSpec = EnumSpec {
                name: stringify!($ty),
                encoding: <$repr as WireField>::TYPE,
                doc: $doc,
                values: &[$(ValueSpec { name: stringify!($var), code: $code, doc: concat!($($vd),+) }),+],
            };
            #[inline]
            fn code(self) -> u64 {
                match self {
                    $($ty::$var => $code,)+
                }
            }
            #[inline]
            fn from_code(code: u64) -> Option<Self> {
                match code {
                    $($code => Some($ty::$var),)+
                    _ => None,
                }
            }
        }
        impl WireField for $ty {
            const SIZE: usize = std::mem::size_of::<$repr>();
            const TYPE: &'static str = stringify!($ty);
            #[inline]
            fn put(&self, out: &mut [u8]) {
                (self.code() as $repr).put(out)
            }
            #[inline]
            fn get(b: &[u8]) -> Result<Self, u64> {
                let raw = <$repr>::get(b)? as u64;
                <$ty as WireEnum>::from_code(raw).ok_or(raw)
            }
            #[cfg(test)]
            fn from_seed(seed: u64) -> Self {
                let all = <$ty as WireEnum>::ALL;
                all[(seed % all.len() as u64) as usize]
            }
        }
    };
    // Define a wire enum and its table.
    ($(#[doc = $doc:literal])+ pub enum $ty:ident : $repr:ident { $($(#[doc = $vd:literal])+ $var:ident = $code:literal,)+ }) => {
        $(#[doc = $doc])+
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $ty {
            $($(#[doc = $vd])+ $var = $code,)+
        }
        codes!(impl $ty : $repr, concat!($($doc),+), { $($(#[doc = $vd])+ $var = $code,)+ });
    };
}

// ---- The engine's enumerations -------------------------------------------------------------

codes!(impl Side : u8, " Side of an order.", {
    /// Buys base, pays quote.
    Buy = 1,
    /// Sells base, receives quote.
    Sell = 2,
});

codes!(impl OrderType : u8, " Order type.", {
    /// Trades at the limit price or better; may rest (GTC).
    Limit = 1,
    /// Trades now and never rests; `price` is an optional protection price (0 = none).
    Market = 2,
});

codes!(impl TimeInForce : u8, " Time in force.", {
    /// Good till cancelled: the remainder rests.
    Gtc = 1,
    /// Immediate or cancel: the remainder expires.
    Ioc = 2,
    /// Fill or kill: all now or nothing.
    Fok = 3,
});

codes!(impl StpMode : u8, " Self-trade prevention mode (the incoming order's decides).", {
    /// Allow self-trades.
    None = 1,
    /// Expire the rest of the incoming order.
    ExpireTaker = 2,
    /// Cancel the resting order, keep matching.
    ExpireMaker = 3,
    /// Cancel the resting order and expire the incoming one.
    ExpireBoth = 4,
    /// Reduce both by the smaller quantity without a trade.
    Decrement = 5,
});

codes!(impl MarketStatus : u8, " Trading status of a market.", {
    /// Orders accepted and matched.
    Trading = 1,
    /// Cancels only; resting orders stay.
    Halted = 2,
    /// Closed for good; every resting order was cancelled.
    Delisted = 3,
});

// ---- Bourse's own enumerations --------------------------------------------------------------

codes! {
    /// Which order a cancel or amend names (the first byte of an `OrderRef`).
    pub enum OrderRefKind: u8 {
        /// The engine's order id.
        OrderId = 1,
        /// The account's client order id.
        ClientOrderId = 2,
    }
}

codes! {
    /// Mass-cancel side filter: 0 = both sides.
    pub enum SideFilter: u8 {
        /// Both sides.
        Both = 0,
        /// Bids only.
        Buy = 1,
        /// Asks only.
        Sell = 2,
    }
}

impl SideFilter {
    /// The side it restricts to, if any.
    pub fn side(self) -> Option<Side> {
        match self {
            SideFilter::Both => None,
            SideFilter::Buy => Some(Side::Buy),
            SideFilter::Sell => Some(Side::Sell),
        }
    }
}

codes! {
    /// What a session is for, chosen at login.
    pub enum SessionKind: u8 {
        /// Enter orders and receive the account's execution reports.
        OrderEntry = 1,
        /// Receive the account's execution reports (every fill) without entering orders.
        DropCopy = 2,
        /// Subscribe to market data.
        MarketData = 3,
    }
}

codes! {
    /// Why a login was refused.
    pub enum LoginRejectReason: u8 {
        /// The HMAC-SHA256 signature does not verify.
        BadSignature = 1,
        /// The client timestamp is outside the allowed window of the server clock.
        StaleTimestamp = 2,
        /// The nonce is not the one this connection's Challenge issued.
        NonceMismatch = 3,
        /// The nonce was already used by a login.
        NonceReused = 4,
        /// No such API key (or it is revoked).
        UnknownKey = 5,
        /// The key may not open this session kind.
        NotPermitted = 6,
        /// The key already has a session of this kind.
        AlreadyLoggedIn = 7,
        /// next_seq is beyond the stream or before what the server still retains.
        SeqUnavailable = 8,
        /// The requested heartbeat interval is outside the allowed range.
        InvalidHeartbeat = 9,
        /// The server is not accepting logins (starting, stopping).
        Unavailable = 10,
        /// The flags are not allowed for this session kind (cancel-on-disconnect off order entry).
        InvalidFlags = 11,
    }
}

codes! {
    /// Why the server ends a session (EndOfSession).
    pub enum EndReason: u8 {
        /// The client logged out; every message owed was sent.
        LoggedOut = 1,
        /// The server is shutting down.
        Shutdown = 2,
        /// An operator ended the session (key revoked, account closed).
        Administrative = 3,
    }
}

codes! {
    /// Why the server closes a connection (ProtocolError, then disconnect).
    pub enum ProtocolErrorCode: u16 {
        /// The length prefix exceeds the maximum frame length.
        FrameTooLarge = 1,
        /// The length prefix is smaller than the message header.
        FrameTooShort = 2,
        /// The header's schema id is not Bourse's.
        WrongSchema = 3,
        /// The header's schema version is not supported.
        UnsupportedVersion = 4,
        /// The template id names no message.
        UnknownTemplate = 5,
        /// The header's block length is not the template's.
        BadBlockLength = 6,
        /// The frame ends inside the body.
        Truncated = 7,
        /// Bytes follow the body.
        TrailingBytes = 8,
        /// A field holds a value outside its code table.
        InvalidValue = 9,
        /// The message is not allowed now (before login, wrong direction, wrong session kind).
        UnexpectedMessage = 10,
        /// No Login arrived in time after the Challenge.
        LoginTimeout = 11,
        /// Nothing arrived from the client within the heartbeat timeout.
        HeartbeatTimeout = 12,
        /// The client does not read fast enough; its outbound buffer is full.
        SlowConsumer = 13,
        /// The client sends faster than the connection-level limit (messages of any kind).
        Flood = 14,
    }
}

codes! {
    /// Why an order request was refused (OrderRejected). Codes 1–99 are the engine's
    /// reject reasons with the engine's stable numbers; 100 and up are the gateway's.
    pub enum RejectCode: u16 {
        /// The asset id is not listed.
        UnknownAsset = 1,
        /// The asset id is already listed.
        AssetExists = 2,
        /// The market id is not listed.
        UnknownMarket = 3,
        /// The market id is already listed.
        MarketExists = 4,
        /// The market specification is invalid.
        InvalidMarketSpec = 5,
        /// The account is unknown.
        UnknownAccount = 6,
        /// The account id is taken.
        AccountExists = 7,
        /// The account is frozen.
        AccountFrozen = 8,
        /// The fee account cannot trade.
        ReservedAccount = 9,
        /// The market is halted: cancels only.
        MarketHalted = 10,
        /// The market is delisted.
        MarketDelisted = 11,
        /// A quantity is zero.
        ZeroQuantity = 12,
        /// A limit price is zero.
        ZeroPrice = 13,
        /// The price is not a multiple of the tick size.
        PriceOffTick = 14,
        /// The quantity is not a multiple of the lot size.
        QuantityOffLot = 15,
        /// The quote value is below the market's minimum notional.
        BelowMinNotional = 16,
        /// A value is too large to represent.
        Overflow = 17,
        /// The free balance does not cover the hold.
        InsufficientBalance = 18,
        /// A post-only order would have taken liquidity.
        PostOnlyWouldTake = 19,
        /// The client order id is used by an open order of the account.
        DuplicateClientOrderId = 20,
        /// No open order of the account has that id.
        OrderNotFound = 21,
        /// The combination of fields is not a valid order.
        InvalidOrder = 22,
        /// An amend would move a buy above its reserve price.
        PriceAboveReserve = 23,
        /// The amend changes nothing.
        AmendNoChange = 24,
        /// The fee tier is not defined.
        UnknownFeeTier = 25,
        /// A fee rate is above 10,000 bps.
        InvalidFee = 26,
        /// The market status change is not allowed.
        InvalidStatusTransition = 27,
        /// Asset decimals above 18.
        InvalidDecimals = 28,
        /// The account already has the most open orders it may (32,000) and the order could
        /// rest (a GTC limit order); IOC, FOK and market orders are not limited.
        TooManyOpenOrders = 29,
        /// client_ref is not greater than the session's last one: a duplicate or a
        /// retransmission; the book was not touched.
        DuplicateClientRef = 100,
        /// The session's order rate limit is exceeded; the request was not sent to the engine.
        Throttled = 101,
        /// The session is not logged in.
        NotLoggedIn = 102,
        /// The session kind may not enter orders (drop copy, market data).
        NotPermitted = 103,
        /// The node could not take the request now (its queue is full); retry later.
        ServerBusy = 104,
        /// The request uses a feature this server does not support; the book was not touched.
        Unsupported = 105,
    }
}

codes! {
    /// Why an order ended without filling completely (OrderCancelled).
    pub enum CancelReason: u8 {
        /// The owner cancelled it (CancelOrder).
        UserCancel = 1,
        /// The owner's MassCancel cancelled it.
        MassCancel = 2,
        /// Cancel-on-disconnect: its session ended without a clean logout.
        CancelOnDisconnect = 3,
        /// An IOC or market remainder found nothing more to trade.
        Expired = 4,
        /// A FOK order could not fill completely; it did not trade.
        FokUnfilled = 5,
        /// Self-trade prevention removed it.
        SelfTrade = 6,
        /// A market order reached its protection price.
        ProtectionLimit = 7,
        /// A market buy ran out of quote amount or balance.
        BudgetExhausted = 8,
        /// The market was delisted.
        Delisted = 9,
    }
}

codes! {
    /// Whether a fill added or took liquidity.
    pub enum Liquidity: u8 {
        /// The order was resting (maker).
        Maker = 1,
        /// The order was incoming (taker).
        Taker = 2,
    }
}

codes! {
    /// Which market-data feed a subscription wants.
    pub enum FeedKind: u8 {
        /// Every order: MdAdd, MdExecute, MdReduce, MdDelete (dense book_seq).
        OrderByOrder = 1,
        /// Price levels: one MdLevel per book change (dense book_seq).
        Levels = 2,
        /// Best bid and offer: MdTopOfBook whenever the top changes (each is a full state).
        TopOfBook = 3,
    }
}

codes! {
    /// Why a market-data subscription was refused.
    pub enum SubscribeRejectReason: u8 {
        /// No such market.
        UnknownMarket = 1,
        /// The session is already subscribed to the market.
        AlreadySubscribed = 2,
        /// The session has as many subscriptions as it may.
        TooManySubscriptions = 3,
        /// The depth is not allowed: this version serves every level, so it must be 0.
        InvalidDepth = 4,
        /// The session kind may not subscribe (order entry, drop copy).
        NotPermitted = 5,
        /// Too many subscribe requests in the last second (each costs a snapshot); retry.
        Throttled = 6,
    }
}

codes! {
    /// The answer to a market-data retransmit request.
    pub enum RetransmitStatus: u8 {
        /// The messages follow.
        Accepted = 1,
        /// from_book_seq is older than the server retains; resubscribe for a snapshot.
        TooOld = 2,
        /// count exceeds the per-request maximum.
        TooMany = 3,
        /// The session is not subscribed to the market.
        NotSubscribed = 4,
        /// from_book_seq is beyond the market's current book_seq.
        NotYet = 5,
    }
}

// ---- Mappings ------------------------------------------------------------------------------

impl From<RejectReason> for RejectCode {
    fn from(r: RejectReason) -> RejectCode {
        match r {
            RejectReason::UnknownAsset => RejectCode::UnknownAsset,
            RejectReason::AssetExists => RejectCode::AssetExists,
            RejectReason::UnknownMarket => RejectCode::UnknownMarket,
            RejectReason::MarketExists => RejectCode::MarketExists,
            RejectReason::InvalidMarketSpec => RejectCode::InvalidMarketSpec,
            RejectReason::UnknownAccount => RejectCode::UnknownAccount,
            RejectReason::AccountExists => RejectCode::AccountExists,
            RejectReason::AccountFrozen => RejectCode::AccountFrozen,
            RejectReason::ReservedAccount => RejectCode::ReservedAccount,
            RejectReason::MarketHalted => RejectCode::MarketHalted,
            RejectReason::MarketDelisted => RejectCode::MarketDelisted,
            RejectReason::ZeroQuantity => RejectCode::ZeroQuantity,
            RejectReason::ZeroPrice => RejectCode::ZeroPrice,
            RejectReason::PriceOffTick => RejectCode::PriceOffTick,
            RejectReason::QuantityOffLot => RejectCode::QuantityOffLot,
            RejectReason::BelowMinNotional => RejectCode::BelowMinNotional,
            RejectReason::Overflow => RejectCode::Overflow,
            RejectReason::InsufficientBalance => RejectCode::InsufficientBalance,
            RejectReason::PostOnlyWouldTake => RejectCode::PostOnlyWouldTake,
            RejectReason::DuplicateClientOrderId => RejectCode::DuplicateClientOrderId,
            RejectReason::OrderNotFound => RejectCode::OrderNotFound,
            RejectReason::InvalidOrder => RejectCode::InvalidOrder,
            RejectReason::PriceAboveReserve => RejectCode::PriceAboveReserve,
            RejectReason::AmendNoChange => RejectCode::AmendNoChange,
            RejectReason::UnknownFeeTier => RejectCode::UnknownFeeTier,
            RejectReason::InvalidFee => RejectCode::InvalidFee,
            RejectReason::InvalidStatusTransition => RejectCode::InvalidStatusTransition,
            RejectReason::InvalidDecimals => RejectCode::InvalidDecimals,
            RejectReason::TooManyOpenOrders => RejectCode::TooManyOpenOrders,
        }
    }
}

impl RejectCode {
    /// The engine reason this code stands for, or `None` for a gateway (session-level) code.
    pub fn engine_reason(self) -> Option<RejectReason> {
        Some(match self {
            RejectCode::UnknownAsset => RejectReason::UnknownAsset,
            RejectCode::AssetExists => RejectReason::AssetExists,
            RejectCode::UnknownMarket => RejectReason::UnknownMarket,
            RejectCode::MarketExists => RejectReason::MarketExists,
            RejectCode::InvalidMarketSpec => RejectReason::InvalidMarketSpec,
            RejectCode::UnknownAccount => RejectReason::UnknownAccount,
            RejectCode::AccountExists => RejectReason::AccountExists,
            RejectCode::AccountFrozen => RejectReason::AccountFrozen,
            RejectCode::ReservedAccount => RejectReason::ReservedAccount,
            RejectCode::MarketHalted => RejectReason::MarketHalted,
            RejectCode::MarketDelisted => RejectReason::MarketDelisted,
            RejectCode::ZeroQuantity => RejectReason::ZeroQuantity,
            RejectCode::ZeroPrice => RejectReason::ZeroPrice,
            RejectCode::PriceOffTick => RejectReason::PriceOffTick,
            RejectCode::QuantityOffLot => RejectReason::QuantityOffLot,
            RejectCode::BelowMinNotional => RejectReason::BelowMinNotional,
            RejectCode::Overflow => RejectReason::Overflow,
            RejectCode::InsufficientBalance => RejectReason::InsufficientBalance,
            RejectCode::PostOnlyWouldTake => RejectReason::PostOnlyWouldTake,
            RejectCode::DuplicateClientOrderId => RejectReason::DuplicateClientOrderId,
            RejectCode::OrderNotFound => RejectReason::OrderNotFound,
            RejectCode::InvalidOrder => RejectReason::InvalidOrder,
            RejectCode::PriceAboveReserve => RejectReason::PriceAboveReserve,
            RejectCode::AmendNoChange => RejectReason::AmendNoChange,
            RejectCode::UnknownFeeTier => RejectReason::UnknownFeeTier,
            RejectCode::InvalidFee => RejectReason::InvalidFee,
            RejectCode::InvalidStatusTransition => RejectReason::InvalidStatusTransition,
            RejectCode::InvalidDecimals => RejectReason::InvalidDecimals,
            RejectCode::TooManyOpenOrders => RejectReason::TooManyOpenOrders,
            RejectCode::DuplicateClientRef
            | RejectCode::Throttled
            | RejectCode::NotLoggedIn
            | RejectCode::NotPermitted
            | RejectCode::ServerBusy
            | RejectCode::Unsupported => return None,
        })
    }
}

/// What caused an engine `Cancelled` done reason: the engine says only "cancelled by its
/// owner"; the gateway knows which request (and records it with the command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelSource {
    /// A CancelOrder (or any other single-order request).
    Request,
    /// A MassCancel.
    MassCancel,
    /// The gateway's cancel-on-disconnect.
    CancelOnDisconnect,
}

/// The wire reason for an engine `OrderDone`, or `None` for [`DoneReason::Filled`], which has
/// no OrderCancelled message (the last OrderExecuted has `leaves_quantity` 0).
pub fn cancel_reason(done: DoneReason, source: CancelSource) -> Option<CancelReason> {
    Some(match done {
        DoneReason::Filled => return None,
        DoneReason::Cancelled => match source {
            CancelSource::Request => CancelReason::UserCancel,
            CancelSource::MassCancel => CancelReason::MassCancel,
            CancelSource::CancelOnDisconnect => CancelReason::CancelOnDisconnect,
        },
        DoneReason::Expired => CancelReason::Expired,
        DoneReason::FokUnfilled => CancelReason::FokUnfilled,
        DoneReason::SelfTrade => CancelReason::SelfTrade,
        DoneReason::ProtectionLimit => CancelReason::ProtectionLimit,
        DoneReason::BudgetExhausted => CancelReason::BudgetExhausted,
        DoneReason::Delisted => CancelReason::Delisted,
    })
}

/// The order-by-order market-data message template for an engine book change.
pub fn md_template(action: BookAction) -> u16 {
    match action {
        BookAction::Add => super::MdAdd::TEMPLATE_ID,
        BookAction::Reduce => super::MdReduce::TEMPLATE_ID,
        BookAction::Fill => super::MdExecute::TEMPLATE_ID,
        BookAction::Remove => super::MdDelete::TEMPLATE_ID,
    }
}

impl From<&DecodeError> for ProtocolErrorCode {
    fn from(e: &DecodeError) -> ProtocolErrorCode {
        match e {
            DecodeError::ShortHeader { .. } => ProtocolErrorCode::FrameTooShort,
            DecodeError::WrongSchema(_) => ProtocolErrorCode::WrongSchema,
            DecodeError::UnsupportedVersion(_) => ProtocolErrorCode::UnsupportedVersion,
            DecodeError::UnknownTemplate(_) => ProtocolErrorCode::UnknownTemplate,
            DecodeError::WrongTemplate { .. } => ProtocolErrorCode::UnexpectedMessage,
            DecodeError::BlockLength { .. } => ProtocolErrorCode::BadBlockLength,
            DecodeError::Truncated { .. } => ProtocolErrorCode::Truncated,
            DecodeError::TrailingBytes { .. } => ProtocolErrorCode::TrailingBytes,
            DecodeError::InvalidValue { .. } => ProtocolErrorCode::InvalidValue,
        }
    }
}

impl From<&FrameError> for ProtocolErrorCode {
    fn from(e: &FrameError) -> ProtocolErrorCode {
        match e {
            FrameError::TooLarge { .. } => ProtocolErrorCode::FrameTooLarge,
            FrameError::TooShort { .. } => ProtocolErrorCode::FrameTooShort,
        }
    }
}

/// Every code table, in the order the schema and the spec list them.
pub const ENUM_SPECS: &[EnumSpec] = &[
    <bool as BoolSpec>::SPEC,
    Side::SPEC,
    OrderType::SPEC,
    TimeInForce::SPEC,
    StpMode::SPEC,
    MarketStatus::SPEC,
    OrderRefKind::SPEC,
    SideFilter::SPEC,
    SessionKind::SPEC,
    LoginRejectReason::SPEC,
    EndReason::SPEC,
    ProtocolErrorCode::SPEC,
    RejectCode::SPEC,
    CancelReason::SPEC,
    Liquidity::SPEC,
    FeedKind::SPEC,
    SubscribeRejectReason::SPEC,
    RetransmitStatus::SPEC,
];

trait BoolSpec {
    const SPEC: EnumSpec;
}
impl BoolSpec for bool {
    const SPEC: EnumSpec = EnumSpec {
        name: "Bool",
        encoding: "uint8",
        doc: "A boolean.",
        values: &[
            ValueSpec { name: "False", code: 0, doc: "No." },
            ValueSpec { name: "True", code: 1, doc: "Yes." },
        ],
    };
}
