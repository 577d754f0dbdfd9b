//! Field encodings: how each Rust field type sits on the wire ([`WireField`]), the fixed
//! byte arrays, the login flag set and the composites (order reference, optional market).
//!
//! Every `get` is total: it reads exactly `SIZE` bytes (the caller has checked the length)
//! and returns the raw value it refuses, for the error message, instead of panicking.

use bourse_engine::{MarketId, OrderRef};

use super::schema::{CompositeSpec, SetSpec, SubFieldSpec};

/// A type that has a fixed-size little-endian wire form.
pub trait WireField: Sized + Copy {
    /// Bytes on the wire.
    const SIZE: usize;
    /// Its type name in the schema (`docs/protocol.xml` and the tables in `docs/protocol.md`).
    const TYPE: &'static str;
    /// Write into `out`, which is exactly `SIZE` bytes.
    fn put(&self, out: &mut [u8]);
    /// Read from `b`, which is exactly `SIZE` bytes; on a value outside the type's code
    /// table, the raw value.
    fn get(b: &[u8]) -> Result<Self, u64>;
    /// A value built from a random seed, for property tests (covers every valid value).
    #[cfg(test)]
    fn from_seed(seed: u64) -> Self;
}

macro_rules! uint_field {
    ($t:ty, $name:literal) => {
        impl WireField for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const TYPE: &'static str = $name;
            #[inline]
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(b: &[u8]) -> Result<Self, u64> {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                Ok(<$t>::from_le_bytes(a))
            }
            #[cfg(test)]
            fn from_seed(seed: u64) -> Self {
                seed as $t
            }
        }
    };
}
uint_field!(u8, "uint8");
uint_field!(u16, "uint16");
uint_field!(u32, "uint32");
uint_field!(u64, "uint64");

impl WireField for MarketId {
    const SIZE: usize = 4;
    const TYPE: &'static str = "MarketId";
    #[inline]
    fn put(&self, out: &mut [u8]) {
        self.0.put(out)
    }
    #[inline]
    fn get(b: &[u8]) -> Result<Self, u64> {
        u32::get(b).map(MarketId)
    }
    #[cfg(test)]
    fn from_seed(seed: u64) -> Self {
        MarketId(seed as u32)
    }
}

/// A boolean: 0 = false, 1 = true; anything else is invalid.
impl WireField for bool {
    const SIZE: usize = 1;
    const TYPE: &'static str = "Bool";
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out[0] = *self as u8;
    }
    #[inline]
    fn get(b: &[u8]) -> Result<Self, u64> {
        match b[0] {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(v as u64),
        }
    }
    #[cfg(test)]
    fn from_seed(seed: u64) -> Self {
        seed & 1 == 1
    }
}

macro_rules! bytes32 {
    ($(#[$m:meta])* $name:ident, $ty:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl WireField for $name {
            const SIZE: usize = 32;
            const TYPE: &'static str = $ty;
            #[inline]
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.0);
            }
            #[inline]
            fn get(b: &[u8]) -> Result<Self, u64> {
                let mut a = [0u8; 32];
                a.copy_from_slice(b);
                Ok($name(a))
            }
            #[cfg(test)]
            fn from_seed(seed: u64) -> Self {
                let mut a = [0u8; 32];
                let mut x = seed;
                for chunk in a.chunks_mut(8) {
                    // splitmix64
                    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = x;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
                }
                $name(a)
            }
        }
    };
}

bytes32!(
    /// The server's 32 random bytes issued in `Challenge`, echoed in `Login`.
    Nonce,
    "Nonce"
);
bytes32!(
    /// An HMAC-SHA256 tag (32 bytes).
    Signature,
    "Signature"
);

/// The flag set of a `Login`. Bits not defined here must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LoginFlags(u8);

impl LoginFlags {
    /// Bit 0: cancel every open order of the account when this session ends other than by a
    /// clean logout (connection lost, heartbeat timeout, protocol error).
    pub const CANCEL_ON_DISCONNECT: u8 = 1 << 0;
    /// Every defined bit.
    pub const ALL: u8 = Self::CANCEL_ON_DISCONNECT;
    /// The schema's description of the set.
    pub const SPEC: SetSpec = SetSpec {
        name: "LoginFlags",
        encoding: "uint8",
        doc: "Login options; undefined bits must be zero.",
        choices: &[(
            "cancelOnDisconnect",
            0,
            "Cancel the account's open orders when the session ends without a clean logout.",
        )],
    };

    /// No flags.
    pub const fn empty() -> LoginFlags {
        LoginFlags(0)
    }
    /// From raw bits, if every set bit is defined.
    pub const fn from_bits(bits: u8) -> Option<LoginFlags> {
        if bits & !Self::ALL == 0 {
            Some(LoginFlags(bits))
        } else {
            None
        }
    }
    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// With cancel-on-disconnect on or off.
    pub const fn with_cancel_on_disconnect(self, on: bool) -> LoginFlags {
        if on {
            LoginFlags(self.0 | Self::CANCEL_ON_DISCONNECT)
        } else {
            LoginFlags(self.0 & !Self::CANCEL_ON_DISCONNECT)
        }
    }
    /// Whether cancel-on-disconnect is on.
    pub const fn cancel_on_disconnect(self) -> bool {
        self.0 & Self::CANCEL_ON_DISCONNECT != 0
    }
}

impl WireField for LoginFlags {
    const SIZE: usize = 1;
    const TYPE: &'static str = "LoginFlags";
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out[0] = self.0;
    }
    #[inline]
    fn get(b: &[u8]) -> Result<Self, u64> {
        LoginFlags::from_bits(b[0]).ok_or(b[0] as u64)
    }
    #[cfg(test)]
    fn from_seed(seed: u64) -> Self {
        LoginFlags(seed as u8 & Self::ALL)
    }
}

/// Which order a cancel or amend names: `kind` 1 = engine order id, 2 = client order id,
/// then the id.
impl WireField for OrderRef {
    const SIZE: usize = 9;
    const TYPE: &'static str = "OrderRef";
    #[inline]
    fn put(&self, out: &mut [u8]) {
        let (kind, id) = match *self {
            OrderRef::Id(id) => (1u8, id),
            OrderRef::Client(id) => (2u8, id),
        };
        out[0] = kind;
        id.put(&mut out[1..9]);
    }
    #[inline]
    fn get(b: &[u8]) -> Result<Self, u64> {
        let id = u64::get(&b[1..9])?;
        match b[0] {
            1 => Ok(OrderRef::Id(id)),
            2 => Ok(OrderRef::Client(id)),
            v => Err(v as u64),
        }
    }
    #[cfg(test)]
    fn from_seed(seed: u64) -> Self {
        if seed & 1 == 0 {
            OrderRef::Id(seed >> 1)
        } else {
            OrderRef::Client(seed >> 1)
        }
    }
}

/// Schema composite for [`OrderRef`].
pub(crate) const ORDER_REF_SPEC: CompositeSpec = CompositeSpec {
    name: "OrderRef",
    doc: "Which order: by the engine's order id or by the account's client order id.",
    fields: &[
        SubFieldSpec { name: "kind", ty: "OrderRefKind", doc: "1 = order id, 2 = client order id" },
        SubFieldSpec { name: "id", ty: "uint64", doc: "The id of that kind" },
    ],
};

/// An optional market filter: `present` (Bool) then the market id. When `present` is 0 the
/// id must be 0 too (one wire form per value).
impl WireField for Option<MarketId> {
    const SIZE: usize = 5;
    const TYPE: &'static str = "OptionalMarket";
    #[inline]
    fn put(&self, out: &mut [u8]) {
        match self {
            None => out.fill(0),
            Some(m) => {
                out[0] = 1;
                m.put(&mut out[1..5]);
            }
        }
    }
    #[inline]
    fn get(b: &[u8]) -> Result<Self, u64> {
        let id = u32::get(&b[1..5])?;
        match (b[0], id) {
            (0, 0) => Ok(None),
            (0, v) => Err(v as u64),
            (1, _) => Ok(Some(MarketId(id))),
            (v, _) => Err(v as u64),
        }
    }
    #[cfg(test)]
    fn from_seed(seed: u64) -> Self {
        if seed & 1 == 0 {
            None
        } else {
            Some(MarketId((seed >> 1) as u32))
        }
    }
}

/// Schema composite for `Option<MarketId>`.
pub(crate) const OPTIONAL_MARKET_SPEC: CompositeSpec = CompositeSpec {
    name: "OptionalMarket",
    doc: "A market filter: present = 0 means every market (and market must be 0).",
    fields: &[
        SubFieldSpec { name: "present", ty: "Bool", doc: "1 if a market is given" },
        SubFieldSpec { name: "market", ty: "MarketId", doc: "The market, or 0" },
    ],
};
