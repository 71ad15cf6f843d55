//! Counters kept on the hot path for the metrics endpoint (`crate::metrics`)
//! and the stats RPCs alike: plain atomics, written where an execution
//! ends, read only when someone asks. Recording one execution costs three
//! relaxed atomic additions and a search of a short, fixed bucket table —
//! no lock, no allocation, no label lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::{Latency, Memory};
use crate::execution::{ExecutionMode, ExecutionStatus};

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
