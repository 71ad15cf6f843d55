//! What an execution is and was: its mode and status, the error it ended
//! with, and the wall-clock reading of the monotonic instants records keep.
//! A leaf, so that tasks and counters can name these without depending on
//! the execution store (`crate::exec`, which re-exports them).

use std::fmt;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime};

/// How an execution is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionMode {
    /// The caller waits for the result.
    Sync,
    /// The caller gets an execution id at once and asks for the status later.
    Async,
    /// The caller receives the chunks the function emits.
    Stream,
}

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExecutionStatus {
    /// Accepted, not started.
    Pending,
    /// Running on an instance.
    Running,
    /// Finished with a result.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Stopped at its deadline.
    Timeout,
}

impl ExecutionStatus {
    /// Every status, in life order.
    pub const ALL: [ExecutionStatus; 6] = [
        ExecutionStatus::Pending,
        ExecutionStatus::Running,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Timeout,
    ];

    /// Whether the execution has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionStatus::Pending | ExecutionStatus::Running)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl ExecutionStatus {
    /// Its lowercase name (`pending`, …, `timeout`), as logs, metrics and
    /// the stored records write it.
    pub const fn name(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ExecutionMode {
    /// Its lowercase name: `sync`, `async`, `stream`.
    pub const fn name(self) -> &'static str {
        match self {
            ExecutionMode::Sync => "sync",
            ExecutionMode::Async => "async",
            ExecutionMode::Stream => "stream",
        }
    }
}

/// An error an execution ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionError {
    /// Machine-readable code (the plugin's, or spearlet's error kind).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl ExecutionError {
    /// The code of an execution the host cancelled or saw stop on its
    /// cancellation (clients read it: it never changes). The SDK's, so a
    /// plugin that stops on its flag reports the same.
    pub const CANCELLED: &'static str = spear_plugin_sdk::PluginError::CANCELLED;
    /// The code of an execution whose function panicked (clients read it:
    /// it never changes). Only ever written for a panic the loader saw by
    /// type; a function's own error with this code is reported as it is.
    pub const PANIC: &'static str = spear_plugin_sdk::PluginError::PANIC;

    /// An error with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ExecutionError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The execution was cancelled (code [`ExecutionError::CANCELLED`]).
    pub fn cancelled(message: impl Into<String>) -> Self {
        ExecutionError::new(Self::CANCELLED, message)
    }

    /// The function panicked (code [`ExecutionError::PANIC`]).
    pub fn panicked(message: impl Into<String>) -> Self {
        ExecutionError::new(Self::PANIC, message)
    }
}

/// One reading of both clocks, so that a monotonic instant can be reported
/// as wall-clock time without reading the wall clock again.
static ANCHOR: LazyLock<(Instant, SystemTime)> =
    LazyLock::new(|| (Instant::now(), SystemTime::now()));

/// Nanoseconds since the Unix epoch at a monotonic instant: one
/// subtraction, where going through [`wall_clock`] and back costs three.
pub(crate) fn unix_nanos(t: Instant) -> u64 {
    // The anchor's reading, worked out once: every call needs it.
    static ANCHOR_UNIX_NANOS: LazyLock<u128> = LazyLock::new(|| {
        ANCHOR
            .1
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let since = t.saturating_duration_since(ANCHOR.0).as_nanos();
    u64::try_from(*ANCHOR_UNIX_NANOS + since).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch at a monotonic instant.
pub(crate) fn unix_millis(t: Instant) -> u64 {
    unix_nanos(t) / 1_000_000
}

/// The wall-clock time of a monotonic instant.
pub fn wall_clock(t: Instant) -> SystemTime {
    let (mono, wall) = *ANCHOR;
    match t.checked_duration_since(mono) {
        Some(after) => wall + after,
        None => wall - mono.duration_since(t),
    }
}
