//! Lock-free latency histograms for the node's hot paths (exported by the control plane as
//! Prometheus histograms).
//!
//! [`LatencyHistogram`] has fixed log-scale buckets: bucket `i` counts the durations of at
//! most `2^(MIN_BOUND_LOG2 + i)` ns (128 ns, 256 ns, … about 1.07 s), and one more counts
//! everything longer. Recording is a `leading_zeros`, and two relaxed `fetch_add`s (the
//! bucket and the sum): no allocation, no lock, no clock read of its own. Each histogram sits
//! on its own cache lines, so the thread that records it does not contend with the others.
//!
//! [`LatencyHistogram::snapshot`] reads it into a [`HistogramStats`]: cumulative counts per
//! bound (Prometheus's `le` buckets), the total count (the `+Inf` bucket) and the sum. The
//! reads are relaxed and not one atomic cut: a snapshot taken while a duration is being
//! recorded may count it in its bucket but not yet in the sum. Every figure only grows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::ring::CachePadded;

/// log2 of the first bucket's upper bound in ns (128 ns).
pub const MIN_BOUND_LOG2: u32 = 7;
/// Buckets with a finite upper bound (the last is `2^30` ns, about 1.07 s).
pub const FINITE_BUCKETS: usize = 24;

/// A histogram of durations that any thread may record into and any thread may read.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// `FINITE_BUCKETS` finite buckets, then the overflow bucket.
    buckets: CachePadded<[AtomicU64; FINITE_BUCKETS + 1]>,
    sum_ns: CachePadded<AtomicU64>,
}

/// The bucket of a duration of `ns` nanoseconds.
fn bucket_of(ns: u64) -> usize {
    // ceil(log2(ns)) for ns >= 2, 0 for 0 and 1.
    let ceil_log2 = 64 - ns.saturating_sub(1).leading_zeros();
    (ceil_log2.saturating_sub(MIN_BOUND_LOG2) as usize).min(FINITE_BUCKETS)
}

/// The upper bounds of the finite buckets, ns, ascending.
pub fn bucket_bounds_ns() -> Vec<u64> {
    (0..FINITE_BUCKETS as u32).map(|i| 1u64 << (MIN_BOUND_LOG2 + i)).collect()
}

impl LatencyHistogram {
    /// Record one duration (two relaxed atomic adds).
    #[inline]
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The histogram as it is now.
    pub fn snapshot(&self) -> HistogramStats {
        let mut cumulative = Vec::with_capacity(FINITE_BUCKETS);
        let mut total = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            total = total.wrapping_add(b.load(Ordering::Relaxed));
            if i < FINITE_BUCKETS {
                cumulative.push(total);
            }
        }
        HistogramStats {
            bounds_ns: bucket_bounds_ns(),
            cumulative,
            count: total,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of a [`LatencyHistogram`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistogramStats {
    /// Upper bounds of the finite buckets, ns, ascending.
    pub bounds_ns: Vec<u64>,
    /// Observations of at most each bound (cumulative, like Prometheus's `le` buckets).
    pub cumulative: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations, ns.
    pub sum_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_from_128ns() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(128), 0);
        assert_eq!(bucket_of(129), 1);
        assert_eq!(bucket_of(256), 1);
        assert_eq!(bucket_of(257), 2);
        assert_eq!(bucket_of(1 << 30), FINITE_BUCKETS - 1);
        assert_eq!(bucket_of((1 << 30) + 1), FINITE_BUCKETS);
        assert_eq!(bucket_of(u64::MAX), FINITE_BUCKETS);
        let bounds = bucket_bounds_ns();
        assert_eq!(bounds.len(), FINITE_BUCKETS);
        for (i, &b) in bounds.iter().enumerate() {
            assert_eq!(bucket_of(b), i, "a bound falls in its own bucket");
            assert_eq!(bucket_of(b + 1), i + 1);
        }
    }

    #[test]
    fn snapshot_is_cumulative_with_count_and_sum() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot().count, 0);
        for ns in [100u64, 200, 200, 5_000, 2_000_000_000] {
            h.record(Duration::from_nanos(ns));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.sum_ns, 100 + 200 + 200 + 5_000 + 2_000_000_000);
        assert_eq!(s.cumulative[0], 1); // <= 128 ns
        assert_eq!(s.cumulative[1], 3); // <= 256 ns
        assert_eq!(s.cumulative[bucket_of(5_000)], 4);
        assert_eq!(*s.cumulative.last().unwrap(), 4); // 2 s is beyond the last bound
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(s.bounds_ns, bucket_bounds_ns());
    }
}
