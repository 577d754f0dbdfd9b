//! How long one thread takes to wake another on this machine: a ping-pong between two
//! threads that park (futex) while they wait, the same primitive the pipeline's idle stages
//! and their doorbells use. Each round trip is two wake-ups.
//!
//! ```sh
//! cargo run --release -p bourse-node --example wake_latency [-- ROUNDS]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;

fn main() {
    let rounds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let turn = Arc::new(AtomicU64::new(0));
    let main_thread = std::thread::current();
    let other = {
        let turn = turn.clone();
        std::thread::spawn(move || {
            for i in 0..rounds {
                while turn.load(Ordering::Acquire) != 2 * i + 1 {
                    std::thread::park();
                }
                turn.store(2 * i + 2, Ordering::Release);
                main_thread.unpark();
            }
        })
    };
    let peer = other.thread().clone();
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..rounds {
        let start = Instant::now();
        turn.store(2 * i + 1, Ordering::Release);
        peer.unpark();
        while turn.load(Ordering::Acquire) != 2 * i + 2 {
            std::thread::park();
        }
        histogram.record(start.elapsed().as_nanos() as u64).expect("in range");
    }
    other.join().expect("the other thread");
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{{\"bench\":\"wake_latency\",\"rounds\":{rounds},\"round_trip_p50_us\":{:.1},\
         \"round_trip_p99_us\":{:.1},\"round_trip_max_us\":{:.1},\"per_wakeup_p50_us\":{:.1}}}",
        us(0.5),
        us(0.99),
        histogram.max() as f64 / 1000.0,
        us(0.5) / 2.0
    );
}
