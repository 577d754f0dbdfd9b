//! The gateway's API keys: who may log in, for which account and session kinds, and the
//! shared state logins claim (nonces, one session per key and kind).
//!
//! The embedding process (the control plane, a benchmark, a test) adds and revokes keys;
//! the I/O thread reads them at login. Secrets are held in memory only — the control plane
//! keeps them encrypted at rest and hands them over when the gateway starts.
//!
//! # Invariants
//!
//! * A key's `last_client_ref` never decreases: it is seeded from the node's durable
//!   per-source table when the key is added and raised when a session of the key ends, so a
//!   new session of the key accepts only greater `client_ref`s, across reconnects and
//!   restarts.
//! * A nonce is claimed at most once while it is remembered (longer than any Login may take).
//! * At most one session per (key, kind) is claimed at a time.
//!
//! # Complexity
//!
//! Lookups and claims are O(1) expected (hash maps); nonce expiry is amortised O(1).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bourse_engine::AccountId;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::protocol::{Nonce, SessionKind};
use crate::session::{ApiKey, SessionKinds};

/// How long a claimed nonce is remembered (well beyond the login timeout and clock skew).
const NONCE_MEMORY: Duration = Duration::from_secs(120);

/// Claimed nonces, and when, oldest first (for expiry).
#[derive(Debug, Default)]
struct NonceLog {
    claimed: FxHashSet<[u8; 32]>,
    order: VecDeque<(Instant, [u8; 32])>,
}

/// One API key.
#[derive(Debug)]
pub struct KeyEntry {
    secret: Box<[u8]>,
    account: AccountId,
    kinds: SessionKinds,
    last_client_ref: AtomicU64,
}

/// The key table and the claims logins make. Shared by the gateway's threads.
#[derive(Debug, Default)]
pub struct KeyRegistry {
    keys: RwLock<FxHashMap<u64, KeyEntry>>,
    nonces: Mutex<NonceLog>,
    sessions: Mutex<FxHashSet<(u64, u8)>>,
}

fn kind_code(kind: SessionKind) -> u8 {
    match kind {
        SessionKind::OrderEntry => 1,
        SessionKind::DropCopy => 2,
        SessionKind::MarketData => 3,
    }
}

impl KeyRegistry {
    /// An empty registry.
    pub fn new() -> KeyRegistry {
        KeyRegistry::default()
    }

    /// Add or replace a key. `last_client_ref` is the highest `client_ref` the key ever
    /// submitted (the node's durable record); a replaced key keeps the higher of the two.
    pub fn insert(
        &self,
        key_id: u64,
        secret: &[u8],
        account: AccountId,
        kinds: SessionKinds,
        last_client_ref: u64,
    ) {
        let mut keys = self.keys.write().expect("key table lock");
        let previous = keys.get(&key_id).map_or(0, |k| k.last_client_ref.load(Ordering::Acquire));
        keys.insert(
            key_id,
            KeyEntry {
                secret: secret.into(),
                account,
                kinds,
                last_client_ref: AtomicU64::new(previous.max(last_client_ref)),
            },
        );
    }

    /// Remove a key; `true` if it existed. Live sessions of the key are ended by the gateway.
    pub fn remove(&self, key_id: u64) -> bool {
        self.keys.write().expect("key table lock").remove(&key_id).is_some()
    }

    /// The account of a key.
    pub fn account(&self, key_id: u64) -> Option<AccountId> {
        self.keys.read().expect("key table lock").get(&key_id).map(|k| k.account)
    }

    /// The highest `client_ref` recorded for a key.
    pub fn last_client_ref(&self, key_id: u64) -> Option<u64> {
        let keys = self.keys.read().expect("key table lock");
        keys.get(&key_id).map(|k| k.last_client_ref.load(Ordering::Acquire))
    }

    /// Raise a key's recorded `client_ref` (when a session of it ends).
    pub fn note_client_ref(&self, key_id: u64, client_ref: u64) {
        if let Some(k) = self.keys.read().expect("key table lock").get(&key_id) {
            k.last_client_ref.fetch_max(client_ref, Ordering::AcqRel);
        }
    }

    /// Release a session slot claimed at login.
    pub fn release_session(&self, key_id: u64, kind: SessionKind) {
        self.sessions.lock().expect("session claims lock").remove(&(key_id, kind_code(kind)));
    }

    /// Read access for one login.
    pub fn view(&self) -> KeysView<'_> {
        KeysView { keys: self.keys.read().expect("key table lock"), registry: self }
    }

    fn claim_nonce(&self, nonce: &Nonce) -> bool {
        let now = Instant::now();
        let mut log = self.nonces.lock().expect("nonce lock");
        while let Some(&(t, n)) = log.order.front() {
            if now.duration_since(t) < NONCE_MEMORY {
                break;
            }
            log.order.pop_front();
            log.claimed.remove(&n);
        }
        if !log.claimed.insert(nonce.0) {
            return false;
        }
        log.order.push_back((now, nonce.0));
        true
    }

    fn claim_session(&self, key_id: u64, kind: SessionKind) -> bool {
        self.sessions.lock().expect("session claims lock").insert((key_id, kind_code(kind)))
    }
}

/// A read view of the key table for one login; with the node's stream position it answers
/// everything a login asks ([`crate::session::KeyStore`], implemented by the I/O layer).
pub struct KeysView<'a> {
    keys: RwLockReadGuard<'a, FxHashMap<u64, KeyEntry>>,
    registry: &'a KeyRegistry,
}

impl KeysView<'_> {
    /// The key as the session sees it.
    pub fn key(&self, key_id: u64) -> Option<ApiKey<'_>> {
        self.keys.get(&key_id).map(|k| ApiKey {
            secret: &k.secret,
            account: k.account,
            kinds: k.kinds,
            last_client_ref: k.last_client_ref.load(Ordering::Acquire),
        })
    }

    /// Claim a nonce (see [`crate::session::KeyStore::claim_nonce`]).
    pub fn claim_nonce(&self, nonce: &Nonce) -> bool {
        self.registry.claim_nonce(nonce)
    }

    /// Claim a session slot (see [`crate::session::KeyStore::claim_session`]).
    pub fn claim_session(&self, key_id: u64, kind: SessionKind) -> bool {
        self.registry.claim_session(key_id, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_client_ref_never_decreases() {
        let r = KeyRegistry::new();
        r.insert(7, b"secret", AccountId(1), SessionKinds::ALL, 10);
        r.note_client_ref(7, 5);
        assert_eq!(r.last_client_ref(7), Some(10));
        r.note_client_ref(7, 12);
        assert_eq!(r.last_client_ref(7), Some(12));
        r.insert(7, b"other", AccountId(1), SessionKinds::ALL, 3);
        assert_eq!(r.last_client_ref(7), Some(12), "a replaced key keeps the higher value");
        assert!(r.remove(7));
        assert_eq!(r.last_client_ref(7), None);
    }

    #[test]
    fn nonces_and_sessions_are_claimed_once() {
        let r = KeyRegistry::new();
        let n = Nonce([9; 32]);
        assert!(r.view().claim_nonce(&n));
        assert!(!r.view().claim_nonce(&n));
        assert!(r.view().claim_session(1, SessionKind::OrderEntry));
        assert!(!r.view().claim_session(1, SessionKind::OrderEntry));
        assert!(r.view().claim_session(1, SessionKind::DropCopy));
        r.release_session(1, SessionKind::OrderEntry);
        assert!(r.view().claim_session(1, SessionKind::OrderEntry));
    }
}
