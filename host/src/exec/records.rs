//! Execution records: what happened to every call.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::Value;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Whether the execution has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionStatus::Pending | ExecutionStatus::Running)
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Timeout => "timeout",
        })
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

/// A point-in-time copy of an execution record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionSnapshot {
    /// The execution's id.
    pub execution_id: String,
    /// The task it ran on.
    pub task_id: String,
    /// The function called.
    pub function: String,
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
    /// The instance of the last attempt.
    pub instance_id: String,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// The plugin's log lines (`LEVEL message`), oldest first.
    pub logs: Vec<String>,
}

/// One execution, shared by whoever runs it and whoever asks about it.
#[derive(Debug)]
pub struct ExecutionRecord {
    id: String,
    pub(super) task_id: String,
    function: String,
    mode: ExecutionMode,
    cancel: Arc<AtomicBool>,
    pub(super) created: Instant,
    state: Mutex<State>,
    status_tx: watch::Sender<ExecutionStatus>,
}

#[derive(Debug)]
struct State {
    status: ExecutionStatus,
    output: Option<Value>,
    error: Option<ExecutionError>,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    started: Option<Instant>,
    completed_at: Option<SystemTime>,
    elapsed: Option<Duration>,
    instance_id: String,
    attempts: u32,
    logs: Vec<String>,
    dropped_logs: usize,
}

/// Log lines kept per execution; later ones are counted, not stored.
const MAX_LOG_LINES: usize = 1000;

impl ExecutionRecord {
    pub(super) fn new(id: String, task_id: String, function: String, mode: ExecutionMode) -> Self {
        ExecutionRecord {
            id,
            task_id,
            function,
            mode,
            cancel: Arc::new(AtomicBool::new(false)),
            created: Instant::now(),
            state: Mutex::new(State {
                status: ExecutionStatus::Pending,
                output: None,
                error: None,
                created_at: SystemTime::now(),
                started_at: None,
                started: None,
                completed_at: None,
                elapsed: None,
                instance_id: String::new(),
                attempts: 0,
                logs: Vec::new(),
                dropped_logs: 0,
            }),
            status_tx: watch::channel(ExecutionStatus::Pending).0,
        }
    }

    /// The execution's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task it runs on.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The cancellation flag handed to the plugin.
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }

    /// Raises the cancellation flag.
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// The current status.
    pub fn status(&self) -> ExecutionStatus {
        self.state().status
    }

    /// Waits until the status is final.
    pub async fn finished(&self) -> ExecutionStatus {
        let mut rx = self.status_tx.subscribe();
        let status = *rx
            .wait_for(|s| s.is_final())
            .await
            .expect("the record owns the sender");
        status
    }

    /// Marks an attempt starting on `instance_id`; false if the execution
    /// already ended (e.g. cancelled while pending).
    pub(crate) fn start_attempt(&self, instance_id: &str) -> bool {
        let mut state = self.state();
        if state.status.is_final() {
            return false;
        }
        if state.started.is_none() {
            state.started = Some(Instant::now());
            state.started_at = Some(SystemTime::now());
        }
        state.status = ExecutionStatus::Running;
        state.attempts += 1;
        instance_id.clone_into(&mut state.instance_id);
        drop(state);
        self.status_tx.send_replace(ExecutionStatus::Running);
        true
    }

    /// Ends the execution, unless it already ended; returns whether this call ended it.
    pub(crate) fn finish(
        &self,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<ExecutionError>,
    ) -> bool {
        debug_assert!(status.is_final());
        let mut state = self.state();
        if state.status.is_final() {
            return false;
        }
        state.status = status;
        state.output = output;
        state.error = error;
        state.completed_at = Some(SystemTime::now());
        state.elapsed = Some(state.started.map_or(Duration::ZERO, |s| s.elapsed()));
        drop(state);
        self.status_tx.send_replace(status);
        true
    }

    /// Appends a plugin log line.
    pub(crate) fn log(&self, line: String) {
        let mut state = self.state();
        if state.logs.len() < MAX_LOG_LINES {
            state.logs.push(line);
        } else {
            state.dropped_logs += 1;
        }
    }

    /// Time from start to end (so far, while running).
    pub fn execution_time(&self) -> Duration {
        let state = self.state();
        state
            .elapsed
            .or_else(|| state.started.map(|s| s.elapsed()))
            .unwrap_or(Duration::ZERO)
    }

    /// The function this execution calls.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// A copy of the record as it is now.
    pub fn snapshot(&self) -> ExecutionSnapshot {
        let state = self.state();
        let mut logs = state.logs.clone();
        if state.dropped_logs > 0 {
            logs.push(format!("({} more lines dropped)", state.dropped_logs));
        }
        ExecutionSnapshot {
            execution_id: self.id.clone(),
            task_id: self.task_id.clone(),
            function: self.function.clone(),
            mode: self.mode,
            status: state.status,
            output: state.output.clone(),
            error: state.error.clone(),
            created_at: state.created_at,
            started_at: state.started_at,
            completed_at: state.completed_at,
            execution_time: state
                .elapsed
                .or_else(|| state.started.map(|s| s.elapsed()))
                .unwrap_or(Duration::ZERO),
            instance_id: state.instance_id.clone(),
            attempts: state.attempts,
            logs,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
