//! Counters kept on the hot path for the metrics endpoint (`crate::metrics`)
//! and the stats RPCs alike: plain atomics, written where an execution
//! ends, read only when someone asks. Recording one execution costs three
//! relaxed atomic additions and a search of a short, fixed bucket table —
//! no lock, no allocation, no label lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::exec::{ExecutionMode, ExecutionStatus};

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

/// Execution modes, in counter order.
pub const MODES: [ExecutionMode; 3] = [
    ExecutionMode::Sync,
    ExecutionMode::Async,
    ExecutionMode::Stream,
];

/// Final statuses, in counter order.
pub const ENDINGS: [ExecutionStatus; 4] = [
    ExecutionStatus::Completed,
    ExecutionStatus::Failed,
    ExecutionStatus::Cancelled,
    ExecutionStatus::Timeout,
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

/// What one function of one task did: executions ended, by mode and final
/// status, and their server-side latency (acceptance to end); and the peak
/// memory of its calls, when its plugin counts.
#[derive(Debug, Default)]
pub struct FunctionMetrics {
    ended: [AtomicU64; MODES.len() * ENDINGS.len()],
    /// Acceptance to end.
    pub latency: Latency,
    /// Peak bytes live during each call.
    pub memory: Memory,
}

impl FunctionMetrics {
    /// Counts an execution that ended with `status` after `took`.
    pub fn record(&self, mode: ExecutionMode, status: ExecutionStatus, took: Duration) {
        let Some(ending) = ENDINGS.iter().position(|s| *s == status) else {
            return;
        };
        let mode = MODES.iter().position(|m| *m == mode).unwrap_or(0);
        self.ended[mode * ENDINGS.len() + ending].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(took);
    }

    /// Executions of `mode` that ended with `status`.
    pub fn ended(&self, mode: ExecutionMode, status: ExecutionStatus) -> u64 {
        let (Some(m), Some(s)) = (
            MODES.iter().position(|x| *x == mode),
            ENDINGS.iter().position(|x| *x == status),
        ) else {
            return 0;
        };
        self.ended[m * ENDINGS.len() + s].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_right_buckets() {
        let latency = Latency::default();
        latency.observe(Duration::from_nanos(800));
        latency.observe(Duration::from_micros(1));
        latency.observe(Duration::from_micros(30));
        latency.observe(Duration::from_secs(60));
        let s = latency.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (1e-6, 2), "≤ 1 µs, bounds inclusive");
        assert_eq!(s.buckets[5], (50e-6, 1), "(25 µs, 50 µs]");
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 1), "past 10 s");
        assert!((s.sum_seconds - 60.000_031_8).abs() < 1e-9);
    }

    #[test]
    fn endings_count_by_mode_and_status() {
        let m = FunctionMetrics::default();
        m.record(
            ExecutionMode::Sync,
            ExecutionStatus::Completed,
            Duration::ZERO,
        );
        m.record(
            ExecutionMode::Async,
            ExecutionStatus::Failed,
            Duration::ZERO,
        );
        m.record(
            ExecutionMode::Async,
            ExecutionStatus::Failed,
            Duration::ZERO,
        );
        m.record(
            ExecutionMode::Sync,
            ExecutionStatus::Running,
            Duration::ZERO,
        );
        assert_eq!(m.ended(ExecutionMode::Sync, ExecutionStatus::Completed), 1);
        assert_eq!(m.ended(ExecutionMode::Async, ExecutionStatus::Failed), 2);
        assert_eq!(m.latency.snapshot().count, 3, "only final statuses count");
    }
}
