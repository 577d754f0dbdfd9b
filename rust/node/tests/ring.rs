//! The SPSC ring and its doorbell: ordering, no loss or duplication across threads, full and
//! empty behaviour, wrap-around, drops, abandonment, wake-ups, and a model-based property.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bourse_node::ring::{ring, ring_with_doorbell, Consumer, Doorbell, Full, Producer};
use bourse_node::wait::{Idle, WaitStrategy};
use proptest::prelude::*;

/// Iteration counts: the real ones natively, small ones under Miri (which is ~1000× slower).
const fn scaled(native: u64, miri: u64) -> u64 {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// Spins on `Full`, yielding now and then so that a loaded 2-core machine still progresses.
fn push_spin<T>(tx: &mut Producer<T>, mut v: T) {
    let mut tries = 0u32;
    loop {
        match tx.push(v) {
            Ok(()) => return,
            Err(Full(back)) => {
                v = back;
                tries += 1;
                if tries % 64 == 0 {
                    thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Pops, spinning (and yielding now and then) on empty.
fn pop_spin<T>(rx: &mut Consumer<T>) -> T {
    let mut tries = 0u32;
    loop {
        if let Some(v) = rx.pop() {
            return v;
        }
        tries += 1;
        if tries % 64 == 0 {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[test]
fn producer_and_consumer_are_send() {
    fn send<T: Send>() {}
    send::<Producer<Box<u8>>>();
    send::<Consumer<Box<u8>>>();
    send::<Doorbell>();
}

#[test]
fn capacity_rounds_up_to_a_power_of_two_at_least_two() {
    for (asked, got) in [(0, 2), (1, 2), (2, 2), (3, 4), (4, 4), (5, 8), (1000, 1024)] {
        let (tx, rx) = ring::<u8>(asked);
        assert_eq!((tx.capacity(), rx.capacity()), (got, got), "asked {asked}");
        assert_eq!(tx.free_slots(), got);
    }
}

#[test]
fn full_returns_the_value_and_empty_returns_none() {
    let (mut tx, mut rx) = ring::<String>(4);
    assert_eq!(rx.pop(), None);
    assert!(rx.peek().is_none() && rx.is_empty());
    for i in 0..4 {
        tx.push(i.to_string()).unwrap();
    }
    assert!(tx.is_full());
    assert_eq!(tx.free_slots(), 0);
    let Err(Full(back)) = tx.push("overflow".to_owned()) else {
        panic!("push into a full ring succeeded");
    };
    assert_eq!(back, "overflow");
    assert_eq!(rx.len(), 4);
    assert_eq!(rx.peek().map(String::as_str), Some("0"));
    assert_eq!(rx.pop().as_deref(), Some("0"));
    assert_eq!(tx.free_slots(), 1);
    tx.push("4".to_owned()).unwrap();
    let mut rest = Vec::new();
    assert_eq!(rx.pop_batch(usize::MAX, |v| rest.push(v)), 4);
    assert_eq!(rest, ["1", "2", "3", "4"]);
    assert_eq!(rx.pop(), None);
    assert_eq!(rx.pop_batch(10, |_| unreachable!()), 0);
}

#[test]
fn wraps_around_many_times_in_order() {
    let (mut tx, mut rx) = ring::<u64>(4);
    let (mut next_in, mut next_out) = (0u64, 0u64);
    for round in 0..scaled(10_000, 1_000) {
        // Fill to a level that varies with the round, so every slot is start and end.
        let fill = round % 5;
        for _ in 0..fill {
            if tx.push(next_in).is_ok() {
                next_in += 1;
            }
        }
        assert_eq!(rx.len() as u64, next_in - next_out);
        assert_eq!(rx.peek().copied(), (next_in > next_out).then_some(next_out));
        let take = (round * 7) % 4 + 1;
        for _ in 0..take {
            match rx.pop() {
                Some(v) => {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
                None => assert_eq!(next_in, next_out),
            }
        }
    }
    assert!(next_in > scaled(15_000, 1_500), "went round {} times", next_in / 4);
}

#[test]
fn millions_across_threads_in_order_without_loss_or_duplication() {
    const N: u64 = scaled(4_000_000, 2_000);
    for capacity in [2, 64, 4096] {
        let (mut tx, mut rx) = ring::<u64>(capacity);
        thread::scope(|s| {
            s.spawn(move || {
                for i in 0..N {
                    push_spin(&mut tx, i);
                }
            });
            for expected in 0..N {
                assert_eq!(pop_spin(&mut rx), expected, "capacity {capacity}");
            }
            assert_eq!(rx.pop(), None);
        });
    }
}

#[test]
fn boxed_values_across_threads_with_pop_batch() {
    const N: u64 = scaled(1_000_000, 1_000);
    let (mut tx, mut rx) = ring::<Box<u64>>(8);
    thread::scope(|s| {
        s.spawn(move || {
            for i in 0..N {
                push_spin(&mut tx, Box::new(i));
            }
        });
        let mut expected = 0;
        while expected < N {
            let n = rx.pop_batch(3, |v| {
                assert_eq!(*v, expected);
                expected += 1;
            });
            if n == 0 {
                thread::yield_now();
            }
        }
    });
}

/// Counts its drops: no `Rc`, so it can cross threads.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn dropping_the_ring_drops_exactly_the_unpopped_values() {
    for consumer_first in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = ring::<Counted>(4);
        // Go round the ring once so the live values straddle the end of the buffer.
        for _ in 0..3 {
            tx.push(Counted(drops.clone())).unwrap();
            drop(rx.pop().unwrap());
        }
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        for _ in 0..4 {
            tx.push(Counted(drops.clone())).unwrap();
        }
        let Err(Full(rejected)) = tx.push(Counted(drops.clone())) else {
            panic!("full ring accepted a value");
        };
        drop(rejected);
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        drop(rx.pop());
        assert_eq!(drops.load(Ordering::Relaxed), 5);
        if consumer_first {
            drop(rx);
            assert_eq!(drops.load(Ordering::Relaxed), 5, "values outlive one end");
            drop(tx);
        } else {
            drop(tx);
            assert_eq!(drops.load(Ordering::Relaxed), 5, "values outlive one end");
            drop(rx);
        }
        assert_eq!(drops.load(Ordering::Relaxed), 8);
    }
}

#[test]
fn a_panic_inside_pop_batch_drops_nothing_twice() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut tx, mut rx) = ring::<Counted>(8);
    for _ in 0..6 {
        tx.push(Counted(drops.clone())).unwrap();
    }
    let mut seen = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        rx.pop_batch(usize::MAX, |v| {
            seen += 1;
            if seen == 3 {
                panic!("consumer failed on the third value");
            }
            drop(v);
        })
    }));
    assert!(result.is_err());
    assert_eq!(drops.load(Ordering::Relaxed), 3, "the third was dropped by unwinding");
    assert_eq!(rx.len(), 3, "the three handed out count as popped");
    assert_eq!(tx.free_slots(), 5, "and their slots were published");
    drop((tx, rx));
    assert_eq!(drops.load(Ordering::Relaxed), 6);
}

#[test]
fn abandoned_is_seen_by_the_other_side() {
    let (mut tx, mut rx) = ring::<u32>(4);
    assert!(!tx.is_abandoned() && !rx.is_abandoned());
    tx.push(1).unwrap();
    tx.push(2).unwrap();
    drop(tx);
    assert!(rx.is_abandoned());
    assert_eq!((rx.pop(), rx.pop(), rx.pop()), (Some(1), Some(2), None));

    let (mut tx, rx) = ring::<u32>(4);
    drop(rx);
    assert!(tx.is_abandoned());
    assert!(tx.push(3).is_ok(), "pushing to an abandoned ring is not an error");
}

#[test]
fn abandoned_across_threads_loses_nothing() {
    const N: u64 = scaled(200_000, 1_000);
    let (mut tx, mut rx) = ring::<u64>(16);
    thread::scope(|s| {
        s.spawn(move || {
            for i in 0..N {
                push_spin(&mut tx, i);
            }
            // `tx` dropped here.
        });
        let mut expected = 0;
        loop {
            match rx.pop() {
                Some(v) => {
                    assert_eq!(v, expected);
                    expected += 1;
                }
                // Abandoned, then empty: everything the producer pushed was seen.
                None if rx.is_abandoned() && rx.is_empty() => break,
                None => thread::yield_now(),
            }
        }
        assert_eq!(expected, N);
    });
}

/// Parks only when told by the doorbell: any lost wake-up costs this long.
const SAFETY_NET_US: u32 = 3_000_000;

fn parking(spins: u32) -> WaitStrategy {
    WaitStrategy::SpinThenPark { spins, park_timeout_us: SAFETY_NET_US }
}

#[test]
fn a_parked_consumer_is_woken_promptly() {
    let doorbell = Doorbell::new();
    let (mut tx, mut rx) = ring_with_doorbell::<Instant>(4, &doorbell);
    let latencies = thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut idle = Idle::new(parking(0), &doorbell);
            let mut latencies = Vec::new();
            loop {
                match rx.pop() {
                    Some(sent) => {
                        latencies.push(sent.elapsed());
                        idle.reset();
                    }
                    None if rx.is_abandoned() => return latencies,
                    None => idle.wait(),
                }
            }
        });
        for _ in 0..20 {
            // Wait until the consumer announced it parks, then give it time to fall asleep.
            while !doorbell.is_armed() {
                thread::yield_now();
            }
            thread::sleep(Duration::from_millis(2));
            tx.push(Instant::now()).unwrap();
        }
        drop(tx);
        consumer.join().unwrap()
    });
    assert_eq!(latencies.len(), 20);
    let worst = latencies.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(500),
        "worst wake-up {worst:?}; the park timeout is {SAFETY_NET_US} µs"
    );
}

/// Ping-pong where both sides park on every empty poll (no spinning): each round trip races
/// a park against an unpark twice. A lost wake-up stalls a round for the whole park timeout.
#[test]
fn no_lost_wake_ups_under_park_unpark_races() {
    let safety_net = Duration::from_micros(u64::from(SAFETY_NET_US));
    let ping_bell = Doorbell::new();
    let pong_bell = Doorbell::new();
    let (mut ping_tx, mut ping_rx) = ring_with_doorbell::<u64>(2, &ping_bell);
    let (mut pong_tx, mut pong_rx) = ring_with_doorbell::<u64>(2, &pong_bell);
    let budget = Duration::from_millis(scaled(1_500, 120_000));
    let start = Instant::now();
    // Spins for a varying while between an empty poll and arming: the window in which a
    // protocol without the re-poll would lose the wake-up.
    let dawdle = |n: u64| (0..(n % 13) * 32).for_each(|_| std::hint::spin_loop());
    let (rounds, parks, worst) = thread::scope(|s| {
        s.spawn(|| {
            let mut empty_polls = 0u64;
            loop {
                match ping_rx.pop() {
                    Some(v) => pong_tx.push(v).unwrap(),
                    None if ping_rx.is_abandoned() => return,
                    None => {
                        empty_polls += 1;
                        dawdle(empty_polls);
                        ping_bell.park_unless(safety_net, || !ping_rx.is_empty());
                    }
                }
            }
        });
        let (mut worst, mut parks) = (Duration::ZERO, 0u64);
        let mut round = 0u64;
        while round < scaled(50_000, 150) && start.elapsed() < budget {
            let sent = Instant::now();
            // Vary the moment of the push against the echo thread's arming.
            for _ in 0..(round % 17) * 8 {
                std::hint::spin_loop();
            }
            ping_tx.push(round).unwrap();
            let v = loop {
                match pong_rx.pop() {
                    Some(v) => break v,
                    None => {
                        dawdle(round);
                        if !pong_bell.park_unless(safety_net, || !pong_rx.is_empty()) {
                            parks += 1;
                        }
                    }
                }
            };
            assert_eq!(v, round);
            worst = worst.max(sent.elapsed());
            round += 1;
        }
        drop(ping_tx);
        (round, parks, worst)
    });
    assert!(
        worst < Duration::from_millis(1000),
        "a round trip took {worst:?} over {rounds} rounds: a lost wake-up"
    );
    assert!(rounds >= scaled(1000, 150), "only {rounds} round trips");
    assert!(parks > rounds / 10, "only {parks} parks in {rounds} round trips");
}

/// One consumer thread polls three rings whose producers share one doorbell, pushing in
/// bursts separated by pauses long enough for the consumer to park.
#[test]
fn one_doorbell_wakes_a_consumer_polling_several_rings() {
    const PER_PRODUCER: u64 = scaled(3_000, 100);
    let doorbell = Doorbell::new();
    let (txs, mut rxs): (Vec<_>, Vec<_>) =
        (0..3).map(|_| ring_with_doorbell::<(u64, Instant)>(8, &doorbell)).unzip();
    let start = Instant::now();
    let worst = thread::scope(|s| {
        for (p, mut tx) in txs.into_iter().enumerate() {
            s.spawn(move || {
                for i in 0..PER_PRODUCER {
                    push_spin(&mut tx, (i, Instant::now()));
                    if i % (50 + p as u64 * 7) == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
            });
        }
        let mut idle = Idle::new(parking(100), &doorbell);
        let mut next = [0u64; 3];
        let mut worst = Duration::ZERO;
        while next.iter().any(|&n| n < PER_PRODUCER) {
            let mut found = false;
            for (rx, next) in rxs.iter_mut().zip(&mut next) {
                rx.pop_batch(4, |(v, sent)| {
                    assert_eq!(v, *next);
                    *next += 1;
                    worst = worst.max(sent.elapsed());
                    found = true;
                });
            }
            if found {
                idle.reset();
            } else {
                idle.wait();
            }
        }
        worst
    });
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(worst < Duration::from_millis(1000), "worst delivery {worst:?}");
}

#[derive(Clone, Debug)]
enum Op {
    Push(u16),
    Pop,
    PopBatch(usize),
    Peek,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u16>().prop_map(Op::Push),
        3 => Just(Op::Pop),
        1 => (0usize..6).prop_map(Op::PopBatch),
        1 => Just(Op::Peek),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(scaled(256, 4) as u32))]

    /// Any interleaving of operations on one thread behaves like a bounded `VecDeque`.
    #[test]
    fn behaves_like_a_bounded_vecdeque(capacity in 0usize..10, ops in prop::collection::vec(op(), 0..300)) {
        let (mut tx, mut rx) = ring::<u16>(capacity);
        let cap = tx.capacity();
        prop_assert!(cap.is_power_of_two() && cap >= 2 && cap >= capacity);
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(v) => {
                    let got = tx.push(v);
                    if model.len() < cap {
                        prop_assert_eq!(got, Ok(()));
                        model.push_back(v);
                    } else {
                        prop_assert_eq!(got, Err(Full(v)));
                    }
                }
                Op::Pop => prop_assert_eq!(rx.pop(), model.pop_front()),
                Op::PopBatch(max) => {
                    let mut got = Vec::new();
                    let n = rx.pop_batch(max, |v| got.push(v));
                    let want: Vec<u16> = model.drain(..max.min(model.len())).collect();
                    prop_assert_eq!(n, want.len());
                    prop_assert_eq!(got, want);
                }
                Op::Peek => prop_assert_eq!(rx.peek(), model.front()),
            }
            prop_assert_eq!(rx.len(), model.len());
            prop_assert_eq!(tx.free_slots(), cap - model.len());
        }
    }
}
