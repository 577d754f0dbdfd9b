//! Ring benchmarks: cross-thread throughput against `std::sync::mpsc::sync_channel`, and
//! ping-pong round-trip latency.
//!
//! Every measurement runs a producer and a consumer on two scoped threads that start together
//! at a barrier (a spinning one, so that neither side's start is delayed by a futex wake-up);
//! the clock runs on the consumer from the barrier to the last item, so thread spawning stays
//! out of the timed region (`iter_custom`). One iteration moves a batch of items
//! ([`BATCH`] for throughput, [`ROUND_TRIPS`] for ping-pong) so that the per-call fixed cost
//! is amortised even in `--quick` mode, which calls with few iterations. Both sides busy-spin
//! on full/empty, as a pinned pipeline stage does: on a 2-core machine the two threads need
//! the whole machine, and any other load shows up as scheduler-quantum outliers.
//!
//! `cargo bench -p bourse-node --bench ring -- --quick`

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bourse_node::ring::{ring, ring_with_doorbell, Doorbell};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CAPACITY: usize = 1024;
/// Items moved per throughput iteration.
const BATCH: u64 = 1 << 16;
/// Round trips per ping-pong iteration: the reported time per iteration in µs reads as the
/// round-trip time in ns.
const ROUND_TRIPS: u64 = 1000;

/// Spin-then-yield backoff (per wait) for the bench loops (ring and baseline alike): on a quiet machine
/// it only spins; on an oversubscribed one it yields so that the other side of the pair can
/// run, instead of both degrading to scheduler quanta.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    #[inline]
    fn reset(&mut self) {
        self.0 = 0;
    }

    #[inline]
    fn snooze(&mut self) {
        self.0 += 1;
        if self.0 % 128 == 0 {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A two-party barrier that spins, so that both sides leave it within a cache-line transfer.
struct SpinBarrier(AtomicUsize);

impl SpinBarrier {
    fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    fn wait(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
        let mut backoff = Backoff::default();
        while self.0.load(Ordering::Acquire) < 2 {
            backoff.snooze();
        }
    }
}

/// Time for the consumer to receive `items` items pushed by a producer thread.
fn ring_throughput(items: u64, doorbell: Option<&Doorbell>) -> Duration {
    let (mut tx, mut rx) = match doorbell {
        Some(d) => ring_with_doorbell::<u64>(CAPACITY, d),
        None => ring::<u64>(CAPACITY),
    };
    let barrier = SpinBarrier::new();
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for i in 0..items {
                let mut backoff = Backoff::default();
                let mut v = i;
                while let Err(full) = tx.push(v) {
                    v = full.0;
                    backoff.snooze();
                }
            }
        });
        let consumer = s.spawn(|| {
            barrier.wait();
            let mut backoff = Backoff::default();
            let start = Instant::now();
            let mut received = 0;
            while received < items {
                match rx.pop() {
                    Some(v) => {
                        black_box(v);
                        received += 1;
                        backoff.reset();
                    }
                    None => backoff.snooze(),
                }
            }
            start.elapsed()
        });
        consumer.join().unwrap()
    })
}

/// As `ring_throughput`, the consumer draining with `pop_batch`.
fn ring_batch_throughput(items: u64) -> Duration {
    let (mut tx, mut rx) = ring::<u64>(CAPACITY);
    let barrier = SpinBarrier::new();
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for i in 0..items {
                let mut backoff = Backoff::default();
                let mut v = i;
                while let Err(full) = tx.push(v) {
                    v = full.0;
                    backoff.snooze();
                }
            }
        });
        let consumer = s.spawn(|| {
            barrier.wait();
            let mut backoff = Backoff::default();
            let start = Instant::now();
            let mut received = 0;
            while received < items {
                let n = rx.pop_batch(256, |v| {
                    black_box(v);
                });
                if n == 0 {
                    backoff.snooze();
                } else {
                    backoff.reset();
                }
                received += n as u64;
            }
            start.elapsed()
        });
        consumer.join().unwrap()
    })
}

/// The baseline: the standard library's bounded channel, same capacity, same spinning.
fn sync_channel_throughput(items: u64) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<u64>(CAPACITY);
    let barrier = &SpinBarrier::new();
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            for i in 0..items {
                let mut backoff = Backoff::default();
                let mut v = i;
                while let Err(mpsc::TrySendError::Full(back)) = tx.try_send(v) {
                    v = back;
                    backoff.snooze();
                }
            }
        });
        let consumer = s.spawn(move || {
            barrier.wait();
            let mut backoff = Backoff::default();
            let start = Instant::now();
            let mut received = 0;
            while received < items {
                match rx.try_recv() {
                    Ok(v) => {
                        black_box(v);
                        received += 1;
                        backoff.reset();
                    }
                    Err(_) => backoff.snooze(),
                }
            }
            start.elapsed()
        });
        consumer.join().unwrap()
    })
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function(BenchmarkId::new("ring", CAPACITY), |b| {
        b.iter_custom(|iters| ring_throughput(iters * BATCH, None))
    });
    group.bench_function(BenchmarkId::new("ring_pop_batch", CAPACITY), |b| {
        b.iter_custom(|iters| ring_batch_throughput(iters * BATCH))
    });
    // Every push rings a doorbell nobody parks on: the price of the wake-up protocol.
    let doorbell = Doorbell::new();
    group.bench_function(BenchmarkId::new("ring_with_doorbell", CAPACITY), |b| {
        b.iter_custom(|iters| ring_throughput(iters * BATCH, Some(&doorbell)))
    });
    group.bench_function(BenchmarkId::new("std_sync_channel", CAPACITY), |b| {
        b.iter_custom(|iters| sync_channel_throughput(iters * BATCH))
    });
    group.finish();
}

/// Round trips main → echo thread → main, both busy-spinning: two one-way handoffs each.
/// One iteration is [`ROUND_TRIPS`] round trips (the time in µs is the round trip in ns).
fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_ping_pong");
    group.throughput(Throughput::Elements(ROUND_TRIPS));
    group.bench_function("ring_round_trip", |b| {
        b.iter_custom(|iters| {
            let (mut ping_tx, mut ping_rx) = ring::<u64>(2);
            let (mut pong_tx, mut pong_rx) = ring::<u64>(2);
            let barrier = SpinBarrier::new();
            thread::scope(|s| {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..iters * ROUND_TRIPS {
                        let mut backoff = Backoff::default();
                        let v = loop {
                            match ping_rx.pop() {
                                Some(v) => break v,
                                None => backoff.snooze(),
                            }
                        };
                        pong_tx.push(v).unwrap();
                    }
                });
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters * ROUND_TRIPS {
                    let mut backoff = Backoff::default();
                    ping_tx.push(i).unwrap();
                    loop {
                        match pong_rx.pop() {
                            Some(v) => {
                                black_box(v);
                                break;
                            }
                            None => backoff.snooze(),
                        }
                    }
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("sync_channel_round_trip", |b| {
        b.iter_custom(|iters| {
            let (ping_tx, ping_rx) = mpsc::sync_channel::<u64>(1);
            let (pong_tx, pong_rx) = mpsc::sync_channel::<u64>(1);
            let barrier = &SpinBarrier::new();
            thread::scope(|s| {
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..iters * ROUND_TRIPS {
                        let mut backoff = Backoff::default();
                        let v = loop {
                            match ping_rx.try_recv() {
                                Ok(v) => break v,
                                Err(_) => backoff.snooze(),
                            }
                        };
                        pong_tx.send(v).unwrap();
                    }
                });
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters * ROUND_TRIPS {
                    let mut backoff = Backoff::default();
                    ping_tx.send(i).unwrap();
                    loop {
                        match pong_rx.try_recv() {
                            Ok(v) => {
                                black_box(v);
                                break;
                            }
                            Err(_) => backoff.snooze(),
                        }
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, throughput, ping_pong);
criterion_main!(benches);
