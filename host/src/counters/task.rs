//! One task's counters: executions started (in all and per function), how
//! they ended per function, when the last one ended and how, and how many
//! run now — the last also lets a switch wait for the old version's calls
//! to end without polling.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::function::FunctionMetrics;
use crate::execution::{ExecutionMode, ExecutionStatus};

/// A task's counters, one set per function of its table where they are
/// per function.
#[derive(Debug)]
pub struct TaskCounters {
    /// Unix nanoseconds of the last execution's end (or creation).
    updated_at: AtomicU64,
    /// The last execution's final status, as an index into
    /// [`ExecutionStatus::ALL`] plus one; zero: none yet.
    last_status: AtomicU8,
    /// Executions started, per function (index for index with the table);
    /// their sum is the task's count, so a call adds to one counter, not two.
    calls: Box<[AtomicU64]>,
    /// How executions ended, per function (index for index with the table).
    metrics: Box<[FunctionMetrics]>,
    running: AtomicUsize,
    /// Set while a switch waits for this (old) version's calls to end; only
    /// then does the last call to end pay for a wake-up.
    draining: AtomicBool,
    drained: Notify,
}

/// A task's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskActivity {
    /// Last time an execution ended (or creation).
    pub updated_at: SystemTime,
    /// Executions started on it.
    pub execution_count: u64,
    /// Executions running now.
    pub running: usize,
    /// Status of the last execution to end.
    pub last_status: Option<ExecutionStatus>,
}

impl TaskCounters {
    /// Counters for a task of `functions` functions, created at `now`.
    pub(crate) fn new(functions: usize, now: SystemTime) -> Self {
        TaskCounters {
            updated_at: AtomicU64::new(system_unix_nanos(now)),
            last_status: AtomicU8::new(0),
            calls: (0..functions).map(|_| AtomicU64::new(0)).collect(),
            metrics: (0..functions).map(|_| FunctionMetrics::default()).collect(),
            running: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            drained: Notify::new(),
        }
    }

    /// Counts an execution of function number `function` starting; the
    /// guard counts it ending.
    #[inline]
    pub(crate) fn begin(&self, function: usize) -> RunningGuard<'_> {
        self.calls[function].fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::SeqCst);
        RunningGuard { counters: self }
    }

    /// Records how an execution of function number `function` ended, how
    /// long after its acceptance, and when (a clock reading the caller has).
    pub(crate) fn ended(
        &self,
        function: usize,
        mode: ExecutionMode,
        status: ExecutionStatus,
        took: Duration,
        at: Instant,
    ) {
        self.metrics[function].record(mode, status, took);
        self.updated_at
            .store(crate::execution::unix_nanos(at), Ordering::Relaxed);
        self.last_status
            .store(status.index() as u8 + 1, Ordering::Relaxed);
    }

    /// Executions of function number `index` started.
    pub fn function_calls(&self, index: usize) -> u64 {
        self.calls
            .get(index)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// How executions of function number `index` ended.
    pub fn function_metrics(&self, index: usize) -> Option<&FunctionMetrics> {
        self.metrics.get(index)
    }

    /// Waits up to `within` for the executions running now to end; returns
    /// how many still run. Woken by the last one to end, not polled.
    pub(crate) async fn drain(&self, within: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ended = self.drained.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let running = self.running.load(Ordering::SeqCst);
            if running == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.running.load(Ordering::SeqCst);
            }
        }
    }

    /// The counters now.
    pub fn activity(&self) -> TaskActivity {
        let last = usize::from(self.last_status.load(Ordering::Relaxed));
        TaskActivity {
            updated_at: UNIX_EPOCH + Duration::from_nanos(self.updated_at.load(Ordering::Relaxed)),
            execution_count: self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
            running: self.running.load(Ordering::Acquire),
            last_status: last.checked_sub(1).map(|i| ExecutionStatus::ALL[i]),
        }
    }
}

fn system_unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Counts one running execution of a task until dropped.
#[derive(Debug)]
pub(crate) struct RunningGuard<'a> {
    counters: &'a TaskCounters,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        // SeqCst with `draining`: either this sees the flag, or the drainer
        // sees the count this leaves (see `TaskCounters::drain`).
        let was = self.counters.running.fetch_sub(1, Ordering::SeqCst);
        if was == 1 && self.counters.draining.load(Ordering::SeqCst) {
            self.counters.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_follows_starts_and_ends() {
        let counters = TaskCounters::new(2, SystemTime::now());
        assert_eq!(counters.activity().last_status, None);
        let guard = counters.begin(1);
        assert_eq!(counters.activity().running, 1);
        assert_eq!(counters.function_calls(1), 1);
        assert_eq!(counters.function_calls(0), 0);
        counters.ended(
            1,
            ExecutionMode::Sync,
            ExecutionStatus::Failed,
            Duration::ZERO,
            Instant::now(),
        );
        drop(guard);
        let activity = counters.activity();
        assert_eq!(activity.running, 0);
        assert_eq!(activity.execution_count, 1);
        assert_eq!(activity.last_status, Some(ExecutionStatus::Failed));
        assert_eq!(
            counters
                .function_metrics(1)
                .unwrap()
                .ended(ExecutionMode::Sync, ExecutionStatus::Failed),
            1
        );
        assert_eq!(counters.function_calls(7), 0, "no such function");
    }
}
