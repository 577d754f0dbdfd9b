//! The state hash: xxHash3-128 over the engine state, fed in a fixed order.
//!
//! Two engines that applied the same commands have equal hashes; recovery from a snapshot
//! and a journal must reproduce the hash of the engine that wrote them.

use xxhash_rust::xxh3::Xxh3;

/// Streaming hasher with typed, little-endian feeds.
pub struct StateHasher(Xxh3);

impl StateHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        StateHasher(Xxh3::new())
    }

    /// Feed a `u64`.
    #[inline]
    pub fn u64(&mut self, v: u64) {
        self.0.update(&v.to_le_bytes());
    }

    /// Feed a `u128`.
    #[inline]
    pub fn u128(&mut self, v: u128) {
        self.0.update(&v.to_le_bytes());
    }

    /// The hash.
    pub fn finish(&self) -> u128 {
        self.0.digest128()
    }
}

impl Default for StateHasher {
    fn default() -> Self {
        Self::new()
    }
}
