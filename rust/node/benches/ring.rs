//! Ring benchmarks: cross-thread throughput against `std::sync::mpsc::sync_channel`, and
//! ping-pong round-trip latency.
//!
//! Every measurement runs a producer and a consumer on two scoped threads that start together
//! at a barrier; the clock runs on the consumer from the barrier to the last item, so thread
//! spawning stays out of the timed region (`iter_custom`). Both sides busy-spin on full/empty,
//! which is what a pinned pipeline stage does; on a 2-core machine the two threads own the
//! machine for the duration.
//!
//! `cargo bench -p bourse-node --bench ring -- --quick`

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::mpsc;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use bourse_node::ring::{ring, ring_with_doorbell, Doorbell};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CAPACITY: usize = 1024;

/// Time for the consumer to receive `iters` items pushed by a producer thread.
fn ring_throughput(iters: u64, doorbell: Option<&Doorbell>) -> Duration {
    let (mut tx, mut rx) = match doorbell {
        Some(d) => ring_with_doorbell::<u64>(CAPACITY, d),
        None => ring::<u64>(CAPACITY),
    };
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for i in 0..iters {
                let mut v = i;
                while let Err(full) = tx.push(v) {
                    v = full.0;
                    std::hint::spin_loop();
                }
            }
        });
        let consumer = s.spawn(|| {
            barrier.wait();
            let start = Instant::now();
            let mut received = 0;
            while received < iters {
                match rx.pop() {
                    Some(v) => {
                        black_box(v);
                        received += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            start.elapsed()
        });
        consumer.join().unwrap()
    })
}

/// As `ring_throughput`, the consumer draining with `pop_batch`.
fn ring_batch_throughput(iters: u64) -> Duration {
    let (mut tx, mut rx) = ring::<u64>(CAPACITY);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for i in 0..iters {
                let mut v = i;
                while let Err(full) = tx.push(v) {
                    v = full.0;
                    std::hint::spin_loop();
                }
            }
        });
        let consumer = s.spawn(|| {
            barrier.wait();
            let start = Instant::now();
            let mut received = 0;
            while received < iters {
                let n = rx.pop_batch(256, |v| {
                    black_box(v);
                });
                if n == 0 {
                    std::hint::spin_loop();
                }
                received += n as u64;
            }
            start.elapsed()
        });
        consumer.join().unwrap()
    })
}

/// The baseline: the standard library's bounded channel, same capacity, same spinning.
fn sync_channel_throughput(iters: u64) -> Duration {
    let (tx, rx) = mpsc::sync_channel::<u64>(CAPACITY);
    let barrier = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            for i in 0..iters {
                let mut v = i;
                while let Err(mpsc::TrySendError::Full(back)) = tx.try_send(v) {
                    v = back;
                    std::hint::spin_loop();
                }
            }
        });
        let consumer = s.spawn(move || {
            barrier.wait();
            let start = Instant::now();
            let mut received = 0;
            while received < iters {
                match rx.try_recv() {
                    Ok(v) => {
                        black_box(v);
                        received += 1;
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
            start.elapsed()
        });
        consumer.join().unwrap()
    })
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("ring", CAPACITY), |b| {
        b.iter_custom(|iters| ring_throughput(iters, None))
    });
    group.bench_function(BenchmarkId::new("ring_pop_batch", CAPACITY), |b| {
        b.iter_custom(ring_batch_throughput)
    });
    // Every push rings a doorbell nobody parks on: the price of the wake-up protocol.
    let doorbell = Doorbell::new();
    group.bench_function(BenchmarkId::new("ring_with_doorbell", CAPACITY), |b| {
        b.iter_custom(|iters| ring_throughput(iters, Some(&doorbell)))
    });
    group.bench_function(BenchmarkId::new("std_sync_channel", CAPACITY), |b| {
        b.iter_custom(sync_channel_throughput)
    });
    group.finish();
}

/// One round trip: main → echo thread → main, both busy-spinning; the time per iteration is
/// the round-trip latency (two one-way cache-line handoffs).
fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_ping_pong");
    group.bench_function("ring_round_trip", |b| {
        b.iter_custom(|iters| {
            let (mut ping_tx, mut ping_rx) = ring::<u64>(2);
            let (mut pong_tx, mut pong_rx) = ring::<u64>(2);
            let barrier = Barrier::new(2);
            thread::scope(|s| {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..iters {
                        let v = loop {
                            match ping_rx.pop() {
                                Some(v) => break v,
                                None => std::hint::spin_loop(),
                            }
                        };
                        pong_tx.push(v).unwrap();
                    }
                });
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    ping_tx.push(i).unwrap();
                    loop {
                        match pong_rx.pop() {
                            Some(v) => {
                                black_box(v);
                                break;
                            }
                            None => std::hint::spin_loop(),
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
            let barrier = &Barrier::new(2);
            thread::scope(|s| {
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..iters {
                        let v = loop {
                            match ping_rx.try_recv() {
                                Ok(v) => break v,
                                Err(_) => std::hint::spin_loop(),
                            }
                        };
                        pong_tx.send(v).unwrap();
                    }
                });
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    ping_tx.send(i).unwrap();
                    loop {
                        match pong_rx.try_recv() {
                            Ok(v) => {
                                black_box(v);
                                break;
                            }
                            Err(_) => std::hint::spin_loop(),
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
