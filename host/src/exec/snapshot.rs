//! The copy of an execution record that callers read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::execution::{ExecutionError, ExecutionMode, ExecutionStatus};
use crate::Value;

/// A point-in-time copy of an execution record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionSnapshot {
    /// The execution's id.
    pub execution_id: super::ExecutionId,
    /// The task it ran on.
    pub task_id: Arc<str>,
    /// The function called.
    pub function: Arc<str>,
    /// How it was run.
    pub mode: ExecutionMode,
    /// Its status.
    pub status: ExecutionStatus,
    /// The function's output, once completed.
    pub output: Option<Value>,
    /// The error, once failed, cancelled or timed out.
    pub error: Option<ExecutionError>,
    /// When it was accepted.
    pub created_at: SystemTime,
    /// When the function started running (first attempt).
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub completed_at: Option<SystemTime>,
    /// Time from start to end (so far, while running).
    pub execution_time: Duration,
    /// The instance of the last attempt, once one started.
    pub instance_id: Option<Arc<str>>,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// The plugin's log lines (`LEVEL message`), oldest first.
    pub logs: Vec<String>,
    /// The W3C trace it belongs to.
    pub trace_id: Option<crate::trace::TraceId>,
    /// What the plugin allocated during the last attempt, when it counts
    /// (SDK feature `alloc-stats`): `(bytes allocated, peak bytes live)`.
    pub memory: Option<(u64, u64)>,
    /// The result the record did not keep, past the store's bounds (its
    /// caller received it).
    pub output_dropped: Option<super::DroppedOutput>,
}
