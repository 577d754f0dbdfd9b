//! The streaming frame decoder: bytes in (in any chunking), complete frames out.
//!
//! Invariants:
//! * The buffer is allocated once, in [`FrameDecoder::new`], with room for at least one
//!   maximum-size frame; it never grows, so steady-state decoding allocates nothing.
//! * `buf[start..end]` holds the bytes received and not yet returned as frames; bytes before
//!   `start` are consumed. `feed` moves the unconsumed tail to the front only when the free
//!   space at the back is not enough, so each byte is moved at most once per frame boundary.
//! * A length prefix above [`MAX_FRAME_LEN`] or below [`HEADER_LEN`] poisons the decoder: the
//!   byte stream has no resynchronisation point, so the same error is returned from then on
//!   and the connection must be closed (after a `ProtocolError`).

use thiserror::Error;

use super::{HEADER_LEN, LENGTH_PREFIX_LEN, MAX_FRAME_LEN};

/// Why the byte stream cannot be split into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix is larger than the maximum frame length.
    #[error("frame length {length} exceeds the maximum {max}")]
    TooLarge {
        /// The length prefix.
        length: usize,
        /// [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// The length prefix is smaller than the message header.
    #[error("frame length {length} is shorter than the {min}-byte message header")]
    TooShort {
        /// The length prefix.
        length: usize,
        /// [`HEADER_LEN`].
        min: usize,
    },
}

/// Splits a byte stream into frames. Feed it bytes ([`feed`](Self::feed), or read straight
/// into [`spare`](Self::spare) and [`commit`](Self::commit)), then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    error: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(16 * 1024)
    }
}

impl FrameDecoder {
    /// A decoder with a buffer of `capacity` bytes (raised to one maximum-size frame with its
    /// length prefix if smaller).
    pub fn new(capacity: usize) -> FrameDecoder {
        let capacity = capacity.max(LENGTH_PREFIX_LEN + MAX_FRAME_LEN);
        FrameDecoder { buf: vec![0; capacity].into_boxed_slice(), start: 0, end: 0, error: None }
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The error that poisoned the decoder, if any.
    pub fn error(&self) -> Option<FrameError> {
        self.error
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The free space to read into (at least one byte while frames are pulled in between);
    /// follow with [`commit`](Self::commit) of the bytes written.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            self.compact();
        }
        &mut self.buf[self.end..]
    }

    /// Mark `n` bytes written into [`spare`](Self::spare) as received.
    ///
    /// # Panics
    /// If `n` is more than the spare space (a caller bug, not an input error).
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "commit beyond the spare space");
        self.end += n;
    }

    /// Copy as many of `bytes` as fit into the buffer; returns how many were taken. Pull
    /// frames and feed the rest: with frames pulled in between, every call takes at least one
    /// byte, because the buffer holds a maximum-size frame.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        if self.buf.len() - self.end < bytes.len() {
            self.compact();
        }
        let n = bytes.len().min(self.buf.len() - self.end);
        self.buf[self.end..self.end + n].copy_from_slice(&bytes[..n]);
        self.end += n;
        n
    }

    /// The next complete frame (header + body, without the length prefix), `Ok(None)` if more
    /// bytes are needed, or the error that poisons the stream. The slice is valid until the
    /// next call that takes `&mut self`.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let avail = self.end - self.start;
        if avail < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let length = u16::from_le_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize;
        if length > MAX_FRAME_LEN {
            let e = FrameError::TooLarge { length, max: MAX_FRAME_LEN };
            self.error = Some(e);
            return Err(e);
        }
        if length < HEADER_LEN {
            let e = FrameError::TooShort { length, min: HEADER_LEN };
            self.error = Some(e);
            return Err(e);
        }
        if avail < LENGTH_PREFIX_LEN + length {
            return Ok(None);
        }
        let from = self.start + LENGTH_PREFIX_LEN;
        self.start = from + length;
        if self.start == self.end {
            // Everything consumed: start over at the front, no copy needed.
            let (s, e) = (from, from + length);
            self.start = 0;
            self.end = 0;
            return Ok(Some(&self.buf[s..e]));
        }
        Ok(Some(&self.buf[from..from + length]))
    }
}
