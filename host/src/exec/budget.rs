//! How many result bytes execution records keep: each record at most
//! `executions.max_result_bytes`, all together at most
//! `executions.max_total_result_bytes`. A result past either is dropped
//! from its record — the caller waiting for it still receives it — and the
//! record says so, so that a stream of large results cannot fill memory (or,
//! for ASYNC executions, the durable store).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Value;

/// Results at most this large are kept without being counted against the
/// total: `max_records` of them are bounded anyway, and counting would put
/// one shared atomic on every short call.
pub(super) const UNCOUNTED_RESULT_BYTES: usize = 1024;

/// The bounds, and the bytes counted against the total now.
#[derive(Debug)]
pub struct ResultBudget {
    max_result: usize,
    max_total: usize,
    used: AtomicUsize,
}

impl Default for ResultBudget {
    fn default() -> Self {
        ResultBudget::new(usize::MAX, usize::MAX)
    }
}

/// Which bound a dropped result was past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultLimit {
    /// `executions.max_result_bytes`, this many.
    PerRecord(usize),
    /// `executions.max_total_result_bytes`, this many.
    Total(usize),
}

/// A result a record did not keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedOutput {
    /// Its size.
    pub bytes: usize,
    /// The bound it was past.
    pub limit: ResultLimit,
}

impl std::fmt::Display for DroppedOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, limit) = match self.limit {
            ResultLimit::PerRecord(n) => ("executions.max_result_bytes", n),
            ResultLimit::Total(n) => ("executions.max_total_result_bytes", n),
        };
        write!(
            f,
            "the result ({} bytes) was returned to its caller but not kept: past {key} ({limit})",
            self.bytes
        )
    }
}

impl ResultBudget {
    /// Bounds of `max_result` bytes per record and `max_total` in all.
    pub fn new(max_result: usize, max_total: usize) -> Self {
        ResultBudget {
            max_result,
            max_total,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes counted against the total now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of a result to be kept: `Ok(counted)` (what to give
    /// back when the record goes; zero for a small result), or the bound
    /// it is past, counting nothing.
    pub(super) fn charge(&self, bytes: usize) -> Result<usize, DroppedOutput> {
        if bytes > self.max_result {
            return Err(DroppedOutput {
                bytes,
                limit: ResultLimit::PerRecord(self.max_result),
            });
        }
        if bytes <= UNCOUNTED_RESULT_BYTES {
            return Ok(0);
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.max_total)
            })
            .map(|_| bytes)
            .map_err(|_| DroppedOutput {
                bytes,
                limit: ResultLimit::Total(self.max_total),
            })
    }

    /// Gives back what [`ResultBudget::charge`] counted.
    pub(super) fn release(&self, counted: usize) {
        if counted > 0 {
            self.used.fetch_sub(counted, Ordering::AcqRel);
        }
    }
}

/// The bytes a result holds.
pub(super) fn size_of(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Raw { type_url, bytes } => type_url.len() + bytes.len(),
        Value::Unit | Value::I64(_) | Value::F64(_) | Value::Bool(_) => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_kept_within_both_bounds_and_given_back() {
        let budget = ResultBudget::new(4096, 6000);
        assert_eq!(budget.charge(100), Ok(0), "small results are not counted");
        assert_eq!(budget.charge(4000), Ok(4000));
        assert_eq!(
            budget.charge(4097),
            Err(DroppedOutput {
                bytes: 4097,
                limit: ResultLimit::PerRecord(4096)
            })
        );
        assert_eq!(
            budget.charge(3000),
            Err(DroppedOutput {
                bytes: 3000,
                limit: ResultLimit::Total(6000)
            })
        );
        assert_eq!(budget.used(), 4000);
        budget.release(4000);
        assert_eq!(budget.charge(3000), Ok(3000));
        let text = DroppedOutput {
            bytes: 5,
            limit: ResultLimit::Total(4),
        }
        .to_string();
        assert!(
            text.contains("executions.max_total_result_bytes (4)"),
            "{text}"
        );
    }
}
