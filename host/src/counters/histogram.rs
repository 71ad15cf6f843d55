//! Histograms kept with plain atomics (latency, memory), written on the hot
//! path and read only when someone asks: recording one observation is a
//! search of a short, fixed bucket table and two relaxed additions. A leaf:
//! the artifact store and the per-function counters both keep them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in nanoseconds: 1 µs to 10 s, in
/// 1-2.5-5 steps, so microsecond calls and ten-second ones both resolve.
pub const LATENCY_BOUNDS_NS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram over [`LATENCY_BOUNDS_NS`].
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket (not cumulative); the last counts what exceeds every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// A [`Latency`] read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, count in this bucket)`, the last bound +∞
    /// (not cumulative: the exposition encoder accumulates).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

impl Latency {
    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NS.partition_point(|bound| *bound < ns);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, count) in self.buckets.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            total += count;
            let bound = LATENCY_BOUNDS_NS
                .get(i)
                .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
            buckets.push((bound, count));
        }
        LatencySnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Adds `other`'s counts to this one's (for aggregating series).
    pub fn merge(into: &mut LatencySnapshot, other: &LatencySnapshot) {
        for (mine, theirs) in into.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        into.count += other.count;
        into.sum_seconds += other.sum_seconds;
    }
}

/// Upper bounds of the memory buckets, in bytes: 1 KiB to 1 GiB, by 4×.
pub const MEMORY_BOUNDS: [u64; 11] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
];

/// A histogram of bytes over [`MEMORY_BOUNDS`].
#[derive(Debug, Default)]
pub struct Memory {
    buckets: [AtomicU64; MEMORY_BOUNDS.len() + 1],
    sum: AtomicU64,
}

impl Memory {
    /// Counts one observation of `bytes`.
    pub fn observe(&self, bytes: u64) {
        let bucket = MEMORY_BOUNDS.partition_point(|bound| *bound < bytes);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The histogram now, in the form [`Latency::snapshot`] gives (bounds
    /// and sum in bytes).
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let count = count.load(Ordering::Relaxed);
                total += count;
                let bound = MEMORY_BOUNDS.get(i).map_or(f64::INFINITY, |b| *b as f64);
                (bound, count)
            })
            .collect();
        LatencySnapshot {
            buckets,
            count: total,
            sum_seconds: self.sum.load(Ordering::Relaxed) as f64,
        }
    }
}
