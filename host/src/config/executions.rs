//! `[executions]`: what is remembered of past executions is a memory bound
//! of its own, separate from the calls running now, so it has its own file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Execution records and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// Records kept for status queries and listings. Default: 10000.
    pub max_records: usize,
    /// How long a finished execution's record is kept. Default: 1 h.
    #[serde(with = "humantime_serde")]
    pub record_ttl: Duration,
    /// ASYNC executions accepted but not finished, at most. Default: 1024.
    pub max_pending: usize,
    /// The largest result one record keeps, in bytes: a larger one is
    /// dropped from the record, which says so (the caller waiting for it
    /// still receives it). Default: 1 MiB.
    pub max_result_bytes: usize,
    /// All results kept in records together, in bytes; past it, a new
    /// result is dropped from its record as above. Default: 256 MiB.
    pub max_total_result_bytes: usize,
    /// Whether a SYNC execution whose caller chose no `execution_id` is
    /// kept once it completes. By default it is not: its caller received
    /// everything the record would say, and keeping it would cost every
    /// short call a table insert and an eviction. It is kept when it
    /// fails, times out, is cancelled or logs — what a later look at it
    /// (`spearlet executions --status failed`, `status --logs`) is for.
    /// Counters and metrics count every execution either way. Default:
    /// false.
    pub keep_completed_sync: bool,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            max_records: 10_000,
            record_ttl: Duration::from_secs(3600),
            max_pending: 1024,
            max_result_bytes: 1024 * 1024,
            max_total_result_bytes: 256 * 1024 * 1024,
            keep_completed_sync: false,
        }
    }
}
