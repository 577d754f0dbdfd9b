//! Bounded single-producer single-consumer rings, and the [`Doorbell`] that wakes a parked
//! consumer.
//!
//! The pipeline's threads (sequencer → journal → engine → publisher) hand commands and events
//! to each other through these rings. They are the hot path, so they are ours: no locks, no
//! allocation after [`ring`], one cache-line transfer per batch in the steady state.
//!
//! # Layout and invariants
//!
//! A ring is a boxed slice of `capacity` slots (a power of two, ≥ 2) and two counters:
//!
//! * `tail`: the number of values ever pushed. Written only by the [`Producer`].
//! * `head`: the number of values ever popped. Written only by the [`Consumer`].
//!
//! Both count up forever and wrap at `usize::MAX`; a counter `i` names slot `i & mask`.
//! Because the capacity divides 2^64 (2^32), that mapping is continuous across the wrap, and
//! `tail.wrapping_sub(head)` is always the number of values in the ring. The invariant is
//! `0 <= tail - head <= capacity`: slots `[head, tail)` hold initialised values owned by the
//! ring, all other slots are uninitialised. Only the producer writes slot `tail & mask` (and
//! only while `tail - head < capacity`); only the consumer reads slot `head & mask` (and only
//! while `head < tail`). The two never touch the same slot at the same time.
//!
//! `head` and `tail` each sit on their own [`CachePadded`] line, so the producer's stores do
//! not evict the consumer's line and vice versa. Each side also keeps a private copy of its own
//! counter and a *cached* copy of the other side's: the producer re-reads `head` only when the
//! cached value says the ring is full, the consumer re-reads `tail` only when its cache says
//! it is empty. In the steady state a side therefore touches the other's line once per
//! `capacity` operations, not once per operation.
//!
//! # Memory ordering
//!
//! The argument is the classic message-passing pair, once in each direction:
//!
//! * Producer: write the value into slot `t`, then `tail.store(t + 1, Release)`.
//!   Consumer: `tail.load(Acquire)` sees `t + 1`, then read slot `t`.
//!   The Release/Acquire pair makes the slot write happen-before the slot read.
//! * Consumer: move the value out of slot `h`, then `head.store(h + 1, Release)`.
//!   Producer: `head.load(Acquire)` sees `h + 1`, then overwrite slot `h` (on a later lap).
//!   The pair makes the read happen-before the overwrite, so a slot is never reused while
//!   the consumer still reads it.
//!
//! A stale cached counter is always *conservative*: a stale `head` makes the ring look fuller,
//! a stale `tail` makes it look emptier, so acting on it can cause a spurious `Full`/`None`,
//! never an overwrite or a read of an empty slot.
//!
//! The "other side dropped" flags are stored with Release after the dropping side's last
//! operation and loaded with Acquire, so once [`Consumer::is_abandoned`] returns `true`, a
//! following [`Consumer::pop`] sees every value the producer ever pushed.
//!
//! # Waking a parked consumer
//!
//! A consumer that found nothing to do may park its thread. The [`Doorbell`] makes that safe
//! with a flag and two `SeqCst` fences (a Dekker-style handshake):
//!
//! ```text
//! consumer                              producer
//! parked.store(true)        (arm)       tail.store(t + 1, Release)   (push)
//! fence(SeqCst)                         fence(SeqCst)                (notify)
//! poll the rings again: empty?          if parked.swap(false): unpark(consumer)
//! park_timeout(..)
//! ```
//!
//! The two fences are totally ordered. If the consumer's comes first, the producer's load of
//! `parked` sees `true` and it unparks the consumer (an unpark before the park makes the park
//! return at once). If the producer's comes first, the consumer's re-poll sees the new `tail`
//! and it does not park. Either way no wake-up is lost. The park still has a timeout as a
//! safety net (e.g. against another library consuming the thread's park token).
//!
//! A producer rings its doorbell on every [`Producer::push`] when the ring was built with
//! [`ring_with_doorbell`]. The cost is one `SeqCst` fence (`mfence` on x86) and a load of a
//! line that stays shared while the consumer is awake. The fence waits for the store buffer,
//! including the `tail` store, so when the consumer keeps up and the two sides bounce the
//! `tail` line it costs a cache-line round trip per push: on the 2-core development VM,
//! one-value-at-a-time throughput drops from ~300 M/s to 20–70 M/s (`benches/ring.rs`). A
//! stage that produces a batch per input batch should therefore push with
//! [`Producer::push_silent`] and call [`Producer::wake`] once per batch, *before it goes
//! idle* (a consumer parked on a silent push sleeps until its park timeout).
//! Several producers can share one doorbell, which is how one consumer thread polls several
//! rings (see [`crate::wait::Idle`]).
//!
//! # Complexity
//!
//! `push`, `pop`, `peek`, `len` and `free_slots` are O(1) and wait-free: a bounded number of
//! loads and stores, no loops, no CAS. `pop_batch` is O(n) in the values handed out, with one
//! counter publication for the whole batch. Memory is `capacity * size_of::<T>()` plus three
//! cache lines, allocated once in [`ring`].

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

/// Pads and aligns a value to 128 bytes, so that two of them never share a cache line.
///
/// 128 rather than 64: Intel's spatial prefetcher pulls cache lines in pairs, so neighbours
/// within the same 128-byte block still interfere (the same choice as crossbeam's).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The value handed back by [`Producer::push`] when the ring is full.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// Takes the rejected value back.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring is full")
    }
}

impl<T> std::error::Error for Full<T> {}

/// The state both ends share.
struct Shared<T> {
    /// Number of values ever popped (wrapping). Stored only by the consumer, with Release,
    /// after it moved the value out of slot `head & mask`.
    head: CachePadded<AtomicUsize>,
    /// Number of values ever pushed (wrapping). Stored only by the producer, with Release,
    /// after it wrote the value into slot `tail & mask`.
    /// Invariant: `tail.wrapping_sub(head) <= mask + 1`.
    tail: CachePadded<AtomicUsize>,
    /// Read-only after construction, plus two flags written once each: kept off the two
    /// counter lines.
    rest: CachePadded<Rest<T>>,
}

struct Rest<T> {
    /// `capacity` slots; slot `i & mask` is initialised iff `head <= i < tail` (wrapping).
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1`; `capacity` is a power of two, ≥ 2.
    mask: usize,
    /// Set (Release) when the producer is dropped, after its last push.
    producer_gone: AtomicBool,
    /// Set (Release) when the consumer is dropped, after its last pop.
    consumer_gone: AtomicBool,
}

// SAFETY: `Shared` hands each `T` from the producer's thread to the consumer's thread exactly
// once, so `T: Send` is needed and sufficient. The slots are only touched under the
// head/tail protocol described in the module docs: at any time a slot is accessed by at most
// one side, and the Release/Acquire pairs order the accesses of the two sides.
unsafe impl<T: Send> Sync for Shared<T> {}

// SAFETY: moving the `Shared` (or the last `Arc` to it) to another thread moves the `T`s it
// still owns there, which `T: Send` allows; the atomics and the box are `Send`.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    #[inline]
    fn capacity(&self) -> usize {
        self.rest.mask + 1
    }

    #[inline]
    fn slot(&self, index: usize) -> *mut MaybeUninit<T> {
        // The mask keeps the index in bounds; the remaining bounds check never fails and is
        // a predicted branch.
        self.rest.slots[index & self.rest.mask].get()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // `&mut self`: both ends are gone, and `Arc`'s drop synchronised with their last
        // accesses, so plain reads of the counters are the final values.
        let mut head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        debug_assert!(tail.wrapping_sub(head) <= self.capacity());
        while head != tail {
            // SAFETY: `head != tail` and the invariant say slot `head` holds an initialised
            // value nobody popped; we drop each such slot exactly once and nobody else can
            // touch them any more.
            unsafe { (*self.slot(head)).assume_init_drop() };
            head = head.wrapping_add(1);
        }
    }
}

/// Creates a ring with room for `capacity` values, rounded up to a power of two (at least 2).
///
/// # Panics
///
/// If the rounded capacity overflows `usize`.
pub fn ring<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    ring_at(capacity, 0, None)
}

/// Like [`ring`], and every [`Producer::push`] rings `doorbell`, so a consumer thread waiting
/// on it (e.g. through [`crate::wait::Idle`]) is woken. Several rings can share one doorbell.
pub fn ring_with_doorbell<T: Send>(
    capacity: usize,
    doorbell: &Doorbell,
) -> (Producer<T>, Consumer<T>) {
    ring_at(capacity, 0, Some(doorbell.clone()))
}

/// Builds a ring whose counters start at `start` (tests use it to cross the `usize` wrap).
fn ring_at<T: Send>(
    capacity: usize,
    start: usize,
    doorbell: Option<Doorbell>,
) -> (Producer<T>, Consumer<T>) {
    let capacity =
        capacity.max(2).checked_next_power_of_two().expect("ring capacity overflows usize");
    let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(start)),
        tail: CachePadded(AtomicUsize::new(start)),
        rest: CachePadded(Rest {
            slots,
            mask: capacity - 1,
            producer_gone: AtomicBool::new(false),
            consumer_gone: AtomicBool::new(false),
        }),
    });
    let producer =
        Producer { shared: Arc::clone(&shared), tail: start, head_cache: start, doorbell };
    let consumer =
        Consumer { shared, head: start, tail_cache: start, _not_sync: std::marker::PhantomData };
    (producer, consumer)
}

/// The writing end of a ring. `Send`, not `Clone`: exactly one thread pushes.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Private copy of `shared.tail`; the producer is its only writer, so this is exact.
    tail: usize,
    /// Last `shared.head` seen; `<=` the real head, so the free space it implies is a lower
    /// bound.
    head_cache: usize,
    /// Rung after every [`Producer::push`], and on drop.
    doorbell: Option<Doorbell>,
}

impl<T> Producer<T> {
    /// Appends `v` and rings the doorbell (if the ring has one). Never blocks: when the ring
    /// is full, `v` comes back in `Err(Full(v))`.
    #[inline]
    pub fn push(&mut self, v: T) -> Result<(), Full<T>> {
        self.push_silent(v)?;
        self.wake();
        Ok(())
    }

    /// Appends `v` without ringing the doorbell. Call [`Producer::wake`] after the burst,
    /// or a parked consumer sleeps until its park timeout.
    #[inline]
    pub fn push_silent(&mut self, v: T) -> Result<(), Full<T>> {
        let tail = self.tail;
        if tail.wrapping_sub(self.head_cache) == self.shared.capacity() {
            // Acquire: pairs with the consumer's Release store of `head`, so its reads of the
            // slots it freed happen-before our overwrite below.
            self.head_cache = self.shared.head.load(Ordering::Acquire);
            if tail.wrapping_sub(self.head_cache) == self.shared.capacity() {
                return Err(Full(v));
            }
        }
        debug_assert!(tail.wrapping_sub(self.head_cache) < self.shared.capacity());
        // SAFETY: `tail - head < capacity` (checked above against a head no newer than the
        // real one), so slot `tail` is outside `[head, tail)`: uninitialised, and the consumer
        // will not read it until we publish `tail + 1`. The Acquire load of `head` ordered the
        // consumer's last read of this slot before this write.
        unsafe { self.shared.slot(tail).write(MaybeUninit::new(v)) };
        self.tail = tail.wrapping_add(1);
        // Release: publishes the slot write to the consumer's Acquire load of `tail`.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Rings the doorbell: wakes the consumer if it is parked or about to park. Cheap when it
    /// is awake (a fence and a load); a no-op when the ring has no doorbell.
    #[inline]
    pub fn wake(&self) {
        if let Some(doorbell) = &self.doorbell {
            doorbell.notify();
        }
    }

    /// How many values can be pushed right now without `Full` (the consumer may free more
    /// at any time).
    pub fn free_slots(&self) -> usize {
        // Acquire for the same reason as in `push`; the result is only ever a lower bound.
        let head = self.shared.head.load(Ordering::Acquire);
        self.shared.capacity() - self.tail.wrapping_sub(head)
    }

    /// Whether no value can be pushed right now.
    pub fn is_full(&self) -> bool {
        self.free_slots() == 0
    }

    /// The number of slots (a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the [`Consumer`] was dropped: nothing pushed from now on will be read.
    pub fn is_abandoned(&self) -> bool {
        self.shared.rest.consumer_gone.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: every push happens-before a consumer's Acquire load that sees `true`.
        self.shared.rest.producer_gone.store(true, Ordering::Release);
        // Wake a parked consumer so that it notices.
        self.wake();
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("free_slots", &self.free_slots())
            .finish()
    }
}

/// The reading end of a ring. `Send`, not `Clone`: exactly one thread pops.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Private copy of `shared.head`; the consumer is its only writer, so this is exact.
    head: usize,
    /// Last `shared.tail` seen; `<=` the real tail, so the values it implies are a lower bound.
    tail_cache: usize,
    /// Makes the consumer `!Sync` (it stays `Send`): `peek` hands out `&T`, which must not
    /// reach several threads at once when `T` is not `Sync`.
    _not_sync: std::marker::PhantomData<std::cell::Cell<()>>,
}

impl<T> Consumer<T> {
    /// Number of values ready to pop, refreshing the cached tail only when the cache shows
    /// fewer than `wanted`.
    #[inline]
    fn ready(&mut self, wanted: usize) -> usize {
        let n = self.tail_cache.wrapping_sub(self.head);
        if n >= wanted {
            return n;
        }
        // Acquire: pairs with the producer's Release store of `tail`, so its slot writes
        // happen-before our reads.
        self.tail_cache = self.shared.tail.load(Ordering::Acquire);
        let n = self.tail_cache.wrapping_sub(self.head);
        debug_assert!(n <= self.shared.capacity());
        n
    }

    /// Removes the oldest value, or returns `None` when the ring is empty. Never blocks.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.ready(1) == 0 {
            return None;
        }
        let head = self.head;
        // SAFETY: `head < tail` (a tail no newer than the real one), so slot `head` holds an
        // initialised value, published by the producer's Release store that our Acquire load
        // saw. We move it out exactly once: `head` advances right below, and the producer
        // will not overwrite the slot before it sees the advanced head.
        let v = unsafe { self.shared.slot(head).read().assume_init() };
        self.head = head.wrapping_add(1);
        // Release: orders our read of the slot before the producer reuses it.
        self.shared.head.store(self.head, Ordering::Release);
        Some(v)
    }

    /// Pops up to `max` values into `f`, oldest first, and returns how many. The freed slots
    /// are published to the producer once, at the end (or when `f` panics: values already
    /// handed to `f` are never dropped twice).
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let n = self.ready(max).min(max);
        if n == 0 {
            return 0;
        }
        /// Publishes the new head on drop, including on unwind out of `f`.
        struct Publish<'a> {
            shared_head: &'a AtomicUsize,
            head: &'a mut usize,
        }
        impl Drop for Publish<'_> {
            fn drop(&mut self) {
                // Release: as in `pop`.
                self.shared_head.store(*self.head, Ordering::Release);
            }
        }
        let shared = &*self.shared;
        let publish = Publish { shared_head: &shared.head, head: &mut self.head };
        for _ in 0..n {
            let head = *publish.head;
            // SAFETY: as in `pop`: `head` is within `[head, tail)` for the `n <= tail - head`
            // iterations, and each slot is moved out once; `head` advances before `f` runs,
            // so a panicking `f` leaves the slot counted as popped.
            let v = unsafe { shared.slot(head).read().assume_init() };
            *publish.head = head.wrapping_add(1);
            f(v);
        }
        drop(publish);
        n
    }

    /// The oldest value, without removing it.
    pub fn peek(&self) -> Option<&T> {
        let head = self.head;
        if self.tail_cache == head && self.shared.tail.load(Ordering::Acquire) == head {
            // Acquire as in `ready`.
            return None;
        }
        // SAFETY: `head < tail` as in `pop`, so the slot is initialised and the producer will
        // not touch it before `head` advances, which needs `&mut self` and so ends this borrow.
        Some(unsafe { (*self.shared.slot(head)).assume_init_ref() })
    }

    /// Number of values ready to pop (the producer may add more at any time).
    pub fn len(&self) -> usize {
        // Acquire as in `ready`.
        let tail = self.shared.tail.load(Ordering::Acquire);
        tail.wrapping_sub(self.head)
    }

    /// Whether there is nothing to pop right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of slots (a power of two).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the [`Producer`] was dropped. Values it pushed before that can still be
    /// popped: drain with `pop` until `None` after this returns `true`.
    pub fn is_abandoned(&self) -> bool {
        // Acquire: pairs with the Release store in the producer's drop, so its last `tail`
        // store is visible to the next `pop`.
        self.shared.rest.producer_gone.load(Ordering::Acquire)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.rest.consumer_gone.store(true, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

/// Wakes one consumer thread that parks while idle; rung by any number of producers.
///
/// The consumer side (one thread: the first to [`arm`](Doorbell::arm) it) announces that it
/// is about to park, *re-polls its rings*, and only then parks; a producer rings after it
/// published its value. The protocol and why it loses no wake-up are in the
/// [module docs](self). [`crate::wait::Idle`] drives it for the common loop; use
/// [`Doorbell::park_unless`] for a one-off wait.
///
/// Cloning shares the same doorbell.
#[derive(Clone, Default)]
pub struct Doorbell {
    inner: Arc<DoorbellInner>,
}

#[derive(Default)]
struct DoorbellInner {
    /// `true` from the consumer's `arm` until it disarms or a producer claims the wake-up.
    parked: CachePadded<AtomicBool>,
    /// The consumer thread, set on the first `arm`, before `parked` is first set.
    thread: OnceLock<Thread>,
}

impl Doorbell {
    /// A doorbell no thread waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Producer side: call after publishing a value (after the `Release` store that makes it
    /// visible). Unparks the consumer if it is armed.
    #[inline]
    pub fn notify(&self) {
        // SeqCst fence: orders our earlier publication (the tail store) before the load of
        // `parked`, against the consumer's fence between its store of `parked` and its
        // re-poll. See the module docs.
        fence(Ordering::SeqCst);
        let inner = &*self.inner;
        // Load first so that the common case (consumer awake) does not write the line; the
        // swap makes only one of several producers pay for the unpark.
        // The swap is Acquire: it reads the consumer's Release store of `true`, which came
        // after it initialised `thread`, so `thread.get()` below sees it.
        if inner.parked.load(Ordering::Relaxed) && inner.parked.swap(false, Ordering::Acquire) {
            if let Some(thread) = inner.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Consumer side: announce that this thread is about to park. The caller MUST poll its
    /// rings again after this and park (with [`Doorbell::park_timeout`]) only if they are
    /// still empty, or [`Doorbell::disarm`] if they are not.
    ///
    /// # Panics
    ///
    /// If a different thread armed this doorbell before: one doorbell wakes one thread.
    pub fn arm(&self) {
        let inner = &*self.inner;
        let me = thread::current();
        let owner = inner.thread.get_or_init(|| me.clone());
        assert!(
            owner.id() == me.id(),
            "a Doorbell wakes one consumer thread; it was armed by {:?}, now by {:?}",
            owner.id(),
            me.id()
        );
        // Release: publishes the `thread` initialisation to the producer's Acquire swap.
        inner.parked.store(true, Ordering::Release);
        // SeqCst fence: orders the store above before the caller's re-poll of the rings,
        // against the producer's fence in `notify`.
        fence(Ordering::SeqCst);
    }

    /// Consumer side: withdraw the announcement (work turned up after `arm`).
    #[inline]
    pub fn disarm(&self) {
        self.inner.parked.store(false, Ordering::Relaxed);
    }

    /// Whether the consumer is armed (parked or about to park) and not yet notified.
    pub fn is_armed(&self) -> bool {
        self.inner.parked.load(Ordering::Relaxed)
    }

    /// Consumer side, after [`Doorbell::arm`] and a re-poll that found nothing: park until a
    /// producer notifies, `timeout` passes, or a spurious wake-up. Returns disarmed; the
    /// caller polls again either way.
    pub fn park_timeout(&self, timeout: Duration) {
        debug_assert!(
            self.inner.thread.get().is_some_and(|t| t.id() == thread::current().id()),
            "park_timeout without arm on this thread"
        );
        // If a producer already claimed the wake-up (swapped `parked` to false), its unpark
        // token is pending or on its way: parking would return at once, so skip it.
        if self.inner.parked.load(Ordering::Relaxed) {
            thread::park_timeout(timeout);
        }
        self.disarm();
    }

    /// Consumer side, in one call: arm, and park for up to `timeout` unless `ready()` (the
    /// re-poll) says there is work. Returns what `ready` returned.
    pub fn park_unless(&self, timeout: Duration, ready: impl FnOnce() -> bool) -> bool {
        self.arm();
        if ready() {
            self.disarm();
            return true;
        }
        self.park_timeout(timeout);
        false
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell").field("armed", &self.is_armed()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_cross_the_usize_wrap() {
        let (mut p, mut c) = ring_at::<u32>(4, usize::MAX - 5, None);
        let mut next_pop = 0;
        for i in 0..40u32 {
            p.push(i).unwrap();
            if i % 3 != 0 {
                assert_eq!(c.pop(), Some(next_pop));
                next_pop += 1;
            }
            while p.free_slots() == 0 {
                assert_eq!(c.pop(), Some(next_pop));
                next_pop += 1;
            }
            assert!(c.len() <= 4);
        }
        let mut rest = Vec::new();
        c.pop_batch(usize::MAX, |v| rest.push(v));
        assert_eq!(rest, (next_pop..40).collect::<Vec<_>>());
    }

    #[test]
    fn cache_padded_is_a_line_pair() {
        assert_eq!(std::mem::align_of::<CachePadded<AtomicUsize>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<AtomicUsize>>(), 128);
    }
}
