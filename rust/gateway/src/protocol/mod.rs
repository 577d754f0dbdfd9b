//! The Bourse binary protocol, schema version [`SCHEMA_VERSION`]: framing, the message
//! header, every message, and the code tables. Pure: no I/O, no clock, no randomness.
//!
//! The normative description for client authors is `docs/protocol.md`; its message and code
//! tables, and the SBE-style XML schema `docs/protocol.xml`, are rendered from the
//! definitions in this module ([`schema`]) and a test fails when the committed files are
//! stale.
//!
//! # Wire format
//!
//! ```text
//!  frame  = length:u16  header  body
//!  header = block_length:u16  template_id:u16  schema_id:u16  version:u16     (SBE header)
//!  body   = block_length bytes of fixed-offset fields
//! ```
//!
//! Every integer is little-endian. `length` counts the bytes after itself
//! (`HEADER_LEN + block_length`) and is at most [`MAX_FRAME_LEN`]. Messages have no repeating
//! groups and no variable-length data, so each template has exactly one block length and one
//! frame length ([`Message::frame_len`]).
//!
//! # Invariants
//!
//! * Decoding never panics and never allocates: any byte string either decodes to exactly
//!   one [`Message`] or gives a [`DecodeError`] naming what is wrong (the template, the field,
//!   the offset). Enumerations, booleans and flag sets outside their code tables are errors,
//!   as are short bodies and trailing bytes.
//! * The encoding is canonical: `decode(bytes) == Ok(m)` implies `encode(m) == bytes`, so a
//!   message has exactly one wire form (golden vectors in the tests pin it).
//! * [`FrameDecoder`] owns one fixed buffer sized at construction; feeding bytes and pulling
//!   frames never allocates. An oversized or undersized length poisons it: a byte stream
//!   cannot be resynchronised, so the connection must be closed.
//!
//! # Complexity
//!
//! Encoding and decoding a message is O(frame length) ≤ O([`MAX_FRAME_LEN`]) with no
//! allocation; [`FrameDecoder::feed`] is O(bytes fed + bytes kept) (one compaction move).
//!
//! # Outbound sequence numbers
//!
//! Every order-entry message a server sends carries `seq`, a position in the account's
//! outbound stream: `seq = node_seq << 16 | index` ([`stream_seq`]), where `node_seq` is the
//! node's global command sequence number and `index` counts the messages that command
//! produced for the account. Positions strictly increase but are not dense. Messages that
//! no node command produced (session-level rejects such as throttling) carry `seq = 0`
//! and are never replayed.

mod codes;
mod frame;
mod messages;
pub mod schema;
mod wire;

#[cfg(test)]
mod tests;

pub use codes::*;
pub use frame::{FrameDecoder, FrameError};
pub use messages::*;
pub use wire::{LoginFlags, Nonce, Signature, WireField};

use thiserror::Error;

/// The schema id in every message header: 0x5342, the bytes `B` `S` on the wire.
pub const SCHEMA_ID: u16 = 0x5342;
/// The schema version this module speaks. Version 1 is the first published one.
pub const SCHEMA_VERSION: u16 = 1;
/// Bytes of the length prefix before every frame.
pub const LENGTH_PREFIX_LEN: usize = 2;
/// Bytes of the SBE message header.
pub const HEADER_LEN: usize = 8;
/// The largest allowed value of the length prefix (header + body). Every version-1 message
/// is far smaller; the margin leaves room for fields added by later versions.
pub const MAX_FRAME_LEN: usize = 1024;

/// Pack a node command sequence number and a message index into an outbound stream
/// position. `node_seq` must be below 2^48 (at a million commands per second that is nine
/// years).
#[inline]
pub const fn stream_seq(node_seq: u64, index: u16) -> u64 {
    (node_seq << 16) | index as u64
}

/// Split an outbound stream position into (node command sequence number, index).
#[inline]
pub const fn split_stream_seq(seq: u64) -> (u64, u16) {
    (seq >> 16, (seq & 0xFFFF) as u16)
}

/// The SBE message header that follows the length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the body (the fixed block) in bytes.
    pub block_length: u16,
    /// Which message.
    pub template_id: u16,
    /// Always [`SCHEMA_ID`].
    pub schema_id: u16,
    /// The sender's schema version, [`SCHEMA_VERSION`].
    pub version: u16,
}

impl Header {
    /// Read a header from the first [`HEADER_LEN`] bytes of a frame (after the length).
    pub fn read(frame: &[u8]) -> Result<Header, DecodeError> {
        if frame.len() < HEADER_LEN {
            return Err(DecodeError::ShortHeader { len: frame.len() });
        }
        let u = |i: usize| u16::from_le_bytes([frame[i], frame[i + 1]]);
        Ok(Header { block_length: u(0), template_id: u(2), schema_id: u(4), version: u(6) })
    }

    /// Write this header into `out[..HEADER_LEN]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.block_length.to_le_bytes());
        out[2..4].copy_from_slice(&self.template_id.to_le_bytes());
        out[4..6].copy_from_slice(&self.schema_id.to_le_bytes());
        out[6..8].copy_from_slice(&self.version.to_le_bytes());
    }
}

/// Why a frame (header + body, without the length prefix) is not a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame is shorter than the message header.
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte message header")]
    ShortHeader {
        /// Bytes available.
        len: usize,
    },
    /// The header names another schema.
    #[error("schema id {0:#06x} is not Bourse's ({SCHEMA_ID:#06x})")]
    WrongSchema(u16),
    /// The header names a schema version this decoder does not speak.
    #[error("schema version {0} is not supported (this decoder speaks version {SCHEMA_VERSION})")]
    UnsupportedVersion(u16),
    /// The template id names no message.
    #[error("unknown template id {0}")]
    UnknownTemplate(u16),
    /// A typed decoder was given another message.
    #[error("expected template {expected} ({name}), got template {actual}")]
    WrongTemplate {
        /// The message asked for.
        name: &'static str,
        /// Its template id.
        expected: u16,
        /// The template id found.
        actual: u16,
    },
    /// The header's block length is not the template's.
    #[error("{message}: header block length {block_length}, the template's is {expected}")]
    BlockLength {
        /// The message.
        message: &'static str,
        /// The header's value.
        block_length: u16,
        /// The template's.
        expected: usize,
    },
    /// The frame ends before the body does.
    #[error("{message}: body truncated, {available} of {expected} bytes")]
    Truncated {
        /// The message.
        message: &'static str,
        /// Body bytes present.
        available: usize,
        /// The template's body length.
        expected: usize,
    },
    /// Bytes follow the body.
    #[error("{message}: {extra} trailing bytes after the body")]
    TrailingBytes {
        /// The message.
        message: &'static str,
        /// How many.
        extra: usize,
    },
    /// A field holds a value outside its code table (an enumeration, a boolean, a flag set
    /// with unknown bits, an order reference kind, an absent optional with a value).
    #[error("{message}.{field} at body offset {offset}: invalid value {value}")]
    InvalidValue {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// Its offset in the body.
        offset: usize,
        /// The raw value found (the first sub-field that is wrong, for composites).
        value: u64,
    },
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The output buffer is too small for the frame.
    #[error("buffer of {available} bytes is too small for a {needed}-byte frame")]
    BufferTooSmall {
        /// Bytes the frame needs (length prefix included).
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}
