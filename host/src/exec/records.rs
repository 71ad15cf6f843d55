//! Execution records: what happened to every call.
//!
//! A record is created for every execution and must cost nanoseconds: the
//! strings it names (id, task, function, instance) are shared `Arc<str>`s,
//! the cancellation flag and the "ended" signal live inline, and the clock
//! is read once per transition, by the caller, who reuses the reading (the
//! wall-clock times reported are derived from the monotonic ones).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ids::ExecutionId;
use super::{wall_clock, ExecutionError, ExecutionMode, ExecutionSnapshot, ExecutionStatus};
use crate::counters::StatusCounts;

use crate::Value;

/// What a record changes as it changes: the counts by status of its
/// store's shard, and the result budget its output is charged to — one
/// pointer per record reaches both.
#[derive(Debug, Default)]
pub(super) struct RecordCounts {
    pub(super) status: StatusCounts,
    pub(super) results: Arc<super::budget::ResultBudget>,
}

/// One execution, shared by whoever runs it and whoever asks about it.
///
/// `repr(C)`, so that what the store's eviction reads of an old record —
/// when it was created, its status, whether it is gone, its hash — sits in
/// its first cache line: the rest of a record evicted long after it was
/// written is never touched.
#[derive(Debug)]
#[repr(C)]
pub struct ExecutionRecord {
    pub(super) created: Instant,
    /// The id's hash in the store (set when it enters it).
    hash: AtomicU64,
    /// Creation order within the store (ids need not sort by age).
    seq: AtomicU64,
    /// `state.status`, readable without the lock (written under it).
    status: AtomicU8,
    /// Set once removed from the store (its age queue forgets it lazily).
    pub(super) removed: AtomicBool,
    cancel: AtomicBool,
    mode: ExecutionMode,
    /// Kept by its store only if it does not simply complete (see
    /// `unlisted.rs`): a SYNC call whose caller chose
    /// no id, and so receives everything the record would say.
    pub(super) returned_only: bool,
    id: ExecutionId,
    task_id: Arc<str>,
    function: Arc<str>,
    state: Mutex<State>,
    ended: Notify,
    /// Whether anyone ever waited on `ended` (notifying costs a lock).
    watched: AtomicBool,
    counts: Arc<RecordCounts>,
    /// What a reuse of its id must match to be taken for a retry.
    pub(super) fingerprint: super::fingerprint::Fingerprint,
    /// The W3C trace it belongs to, when its request carried or started one.
    trace: std::sync::OnceLock<crate::trace::TraceId>,
    /// The last attempt's memory (bytes allocated, peak bytes live);
    /// `u64::MAX`: not counted. Atomics, not the state's lock: written on
    /// every call of a counting plugin.
    memory: [AtomicU64; 2],
}

#[derive(Debug)]
struct State {
    status: ExecutionStatus,
    output: Option<Value>,
    error: Option<ExecutionError>,
    started: Option<Instant>,
    ended: Option<Instant>,
    instance_id: Option<Arc<str>>,
    attempts: u32,
    logs: Vec<String>,
    dropped_logs: usize,
    /// Why cancellation was asked for, when it was asked with a reason of
    /// its own: the execution reports it when it ends cancelled.
    cancel_reason: Option<ExecutionError>,
    /// Where the output stands against the store's result budget.
    kept: Kept,
}

impl State {
    const fn new() -> Self {
        State {
            status: ExecutionStatus::Pending,
            output: None,
            error: None,
            started: None,
            ended: None,
            instance_id: None,
            attempts: 0,
            logs: Vec::new(),
            dropped_logs: 0,
            cancel_reason: None,
            kept: Kept::Undecided,
        }
    }
}

/// Whether a record keeps its output (see `budget.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Not decided: no output yet, or a SYNC or STREAM output its caller
    /// has not taken yet (it gets it whatever the budget says).
    Undecided,
    /// Kept, this many bytes counted against the total.
    Counted(usize),
    /// Dropped.
    Dropped(super::budget::DroppedOutput),
}

/// Log lines kept per execution; later ones are counted, not stored.
pub(super) const MAX_LOG_LINES: usize = 1000;

/// Why an execution is asked to stop, said by the caller's choice of
/// variant: never read back from an error code, which a plugin's own error
/// may share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelReason {
    /// A plain request (a client's cancel): a RUNNING execution keeps the
    /// plugin's own account of how it stopped; one ended at once reports
    /// `cancelled`.
    Requested,
    /// A reason of the host's (task deleted, instance destroyed, host
    /// stopping, terminated): what the execution reports, however it ends.
    Host(ExecutionError),
}

impl CancelReason {
    /// The error an execution this cancellation ends at once reports.
    fn into_error(self) -> ExecutionError {
        match self {
            CancelReason::Requested => ExecutionError::cancelled("cancelled on request"),
            CancelReason::Host(error) => error,
        }
    }
}

/// What [`ExecutionRecord::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had already ended with this status.
    AlreadyEnded(ExecutionStatus),
    /// It ended now, as CANCELLED.
    Cancelled,
    /// It is running: the flag is raised, and it ends when the plugin returns.
    Requested,
}

impl ExecutionRecord {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: ExecutionId,
        hash: u64,
        seq: u64,
        task_id: Arc<str>,
        function: Arc<str>,
        mode: ExecutionMode,
        created: Instant,
        counts: Arc<RecordCounts>,
        fingerprint: super::fingerprint::Fingerprint,
    ) -> Self {
        ExecutionRecord {
            created,
            hash: AtomicU64::new(hash),
            seq: AtomicU64::new(seq),
            returned_only: false,
            status: AtomicU8::new(ExecutionStatus::Pending as u8),
            removed: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            mode,
            id,
            task_id,
            function,
            state: Mutex::new(State::new()),
            ended: Notify::new(),
            watched: AtomicBool::new(false),
            counts,
            fingerprint,
            trace: std::sync::OnceLock::new(),
            memory: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
        }
    }

    /// The execution's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn counts(&self) -> &StatusCounts {
        &self.counts.status
    }

    pub(super) fn hash(&self) -> u64 {
        self.hash.load(Ordering::Relaxed)
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Places the record in its store's order (when it enters it).
    pub(super) fn place(&self, hash: u64, seq: u64) {
        self.hash.store(hash, Ordering::Relaxed);
        self.seq.store(seq, Ordering::Relaxed);
    }

    /// How it is run.
    pub fn mode(&self) -> ExecutionMode {
        self.mode
    }

    /// The task it runs on.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The function this execution calls.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The cancellation flag handed to the plugin.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// Whether cancellation was asked for.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Raises the cancellation flag.
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// The current status.
    pub fn status(&self) -> ExecutionStatus {
        ExecutionStatus::ALL[usize::from(self.status.load(Ordering::Acquire))]
    }

    fn set_status(&self, state: &mut State, status: ExecutionStatus) {
        state.status = status;
        self.status.store(status as u8, Ordering::Release);
    }

    /// Asks the execution to stop. A PENDING one ends now; a RUNNING one
    /// ends now only with `force` (its plugin runs on, unobserved), else
    /// when the plugin returns. Decided under the record's lock, so a call
    /// starting at the same moment either sees the cancel or is seen running.
    pub fn cancel(&self, force: bool, reason: CancelReason) -> CancelOutcome {
        self.request_cancel();
        let mut state = self.state();
        match state.status {
            s if s.is_final() => CancelOutcome::AlreadyEnded(s),
            ExecutionStatus::Running if !force => {
                // A plain request keeps the plugin's own account of how it
                // stopped; a reason of the host's is what it reports.
                if let CancelReason::Host(error) = reason {
                    state.cancel_reason = Some(error);
                }
                CancelOutcome::Requested
            }
            _ => {
                self.end(
                    state,
                    ExecutionStatus::Cancelled,
                    None,
                    Some(reason.into_error()),
                    Instant::now(),
                );
                CancelOutcome::Cancelled
            }
        }
    }

    /// The instance of its last attempt, once one started.
    pub fn instance_id(&self) -> Option<Arc<str>> {
        self.state().instance_id.clone()
    }

    /// Waits until the status is final.
    pub async fn finished(&self) -> ExecutionStatus {
        // Before looking at the status: `end` looks at this after setting
        // it, so one of the two sees the other (both sequentially consistent).
        self.watched.store(true, Ordering::SeqCst);
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let status = self.status();
            if status.is_final() {
                return status;
            }
            notified.await;
        }
    }

    /// Marks an attempt starting on `instance_id` now; returns when, or
    /// `None` if the execution already ended (e.g. cancelled while pending).
    pub(crate) fn start_attempt(&self, instance_id: &Arc<str>) -> Option<Instant> {
        self.start_attempt_at(instance_id, Instant::now())
    }

    /// As [`ExecutionRecord::start_attempt`], at `now` (a clock reading
    /// the caller already has).
    pub(crate) fn start_attempt_at(&self, instance_id: &Arc<str>, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        if state.status.is_final() {
            return None;
        }
        if state.started.is_none() {
            state.started = Some(now);
        }
        if state.status == ExecutionStatus::Pending {
            self.counts
                .status
                .moved(ExecutionStatus::Pending, ExecutionStatus::Running);
        }
        self.set_status(&mut state, ExecutionStatus::Running);
        state.attempts += 1;
        state.instance_id = Some(Arc::clone(instance_id));
        Some(now)
    }

    /// Ends the execution now, unless it already ended; returns whether this call ended it.
    pub(crate) fn finish(
        &self,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<ExecutionError>,
    ) -> bool {
        self.finish_at(status, output, error, Instant::now())
            .is_some()
    }

    /// Ends the execution at `ended` (a clock reading the caller already
    /// has), unless it already ended; returns how long it ran if this call
    /// ended it.
    pub(crate) fn finish_at(
        &self,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<ExecutionError>,
        ended: Instant,
    ) -> Option<Duration> {
        debug_assert!(status.is_final());
        let state = self.state();
        if state.status.is_final() {
            return None;
        }
        Some(self.end(state, status, output, error, ended))
    }

    fn end(
        &self,
        mut state: MutexGuard<'_, State>,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<ExecutionError>,
        now: Instant,
    ) -> Duration {
        let ran = state
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        self.counts.status.moved(state.status, status);
        self.counts.status.ended(status, ran);
        self.set_status(&mut state, status);
        state.output = output;
        state.error = error;
        state.ended = Some(now);
        if self.mode == ExecutionMode::Async {
            // Nobody waits on the call: the budget decides now, before the
            // ending is recorded durably.
            self.keep_or_drop(&mut state);
        }
        drop(state);
        if self.watched.load(Ordering::SeqCst) {
            self.ended.notify_waiters();
        }
        ran
    }

    /// The error a cancelled execution reports: the reason its cancellation
    /// was asked with, if any, else `otherwise`.
    pub(crate) fn cancelled_error(&self, otherwise: ExecutionError) -> ExecutionError {
        self.state().cancel_reason.clone().unwrap_or(otherwise)
    }

    /// Counts log lines dropped past the cap elsewhere (an unlisted call's
    /// buffer, `unlisted.rs`).
    pub(super) fn count_dropped_logs(&self, dropped: usize) {
        if dropped > 0 {
            self.state().dropped_logs += dropped;
        }
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
        Self::ran(&state)
    }

    fn ran(state: &State) -> Duration {
        match (state.started, state.ended) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            (Some(s), None) => s.elapsed(),
            (None, _) => Duration::ZERO,
        }
    }

    /// Decides, once, whether the record keeps its output: within the
    /// store's result budget it is counted and kept, past it dropped.
    fn keep_or_drop(&self, state: &mut State) {
        if state.kept != Kept::Undecided {
            return;
        }
        let Some(output) = &state.output else {
            return;
        };
        state.kept = match self.counts.results.charge(super::budget::size_of(output)) {
            Ok(counted) => Kept::Counted(counted),
            Err(dropped) => {
                state.output = None;
                Kept::Dropped(dropped)
            }
        };
    }

    /// The snapshot a SYNC or STREAM caller returns: the output is theirs
    /// whatever the budget says, and the record then keeps it only within
    /// the budget — a result past it is moved to the caller, not copied.
    pub fn snapshot_for_caller(&self) -> ExecutionSnapshot {
        let mut state = self.state();
        if state.kept != Kept::Undecided || !state.status.is_final() || state.output.is_none() {
            drop(state);
            return self.snapshot();
        }
        // Taken out while the snapshot is made, so that it is copied once
        // (if the record keeps it), not twice.
        let output = state.output.take();
        let size = output.as_ref().map_or(0, super::budget::size_of);
        let charged = self.counts.results.charge(size);
        let mut snapshot = self.snapshot_of(&state, true);
        state.kept = match charged {
            Ok(counted) => {
                state.output.clone_from(&output);
                Kept::Counted(counted)
            }
            Err(dropped) => Kept::Dropped(dropped),
        };
        snapshot.output = output;
        snapshot
    }

    /// A copy of the record as it is now, with its log lines or without.
    pub fn snapshot_with(&self, logs: bool) -> ExecutionSnapshot {
        let state = self.state();
        self.snapshot_of(&state, logs)
    }

    fn snapshot_of(&self, state: &State, logs: bool) -> ExecutionSnapshot {
        let logs = if logs {
            let mut lines = state.logs.clone();
            if state.dropped_logs > 0 {
                lines.push(format!("({} more lines dropped)", state.dropped_logs));
            }
            lines
        } else {
            Vec::new()
        };
        ExecutionSnapshot {
            execution_id: self.id.clone(),
            task_id: Arc::clone(&self.task_id),
            function: Arc::clone(&self.function),
            mode: self.mode,
            status: state.status,
            output: state.output.clone(),
            error: state.error.clone(),
            created_at: wall_clock(self.created),
            started_at: state.started.map(wall_clock),
            completed_at: state.ended.map(wall_clock),
            execution_time: Self::ran(state),
            instance_id: state.instance_id.clone(),
            attempts: state.attempts,
            logs,
            trace_id: self.trace.get().copied(),
            memory: self.memory(),
            output_dropped: match state.kept {
                Kept::Dropped(dropped) => Some(dropped),
                Kept::Undecided | Kept::Counted(_) => None,
            },
        }
    }

    /// Whether a record its store drops on completion must be kept after
    /// all: it did not complete, or it logged — its caller's reply carries
    /// neither.
    pub(super) fn worth_keeping(&self) -> bool {
        let state = self.state();
        state.status != ExecutionStatus::Completed
            || !state.logs.is_empty()
            || state.dropped_logs > 0
    }

    /// The caller's snapshot of a record nobody else will read: its output
    /// moved out, not copied, and not charged to the result budget.
    pub(super) fn snapshot_taking_output(&self) -> ExecutionSnapshot {
        let mut state = self.state();
        let output = state.output.take();
        let mut snapshot = self.snapshot_of(&state, false);
        snapshot.output = output;
        snapshot
    }

    /// Records the memory of an attempt (the last one counts).
    pub(crate) fn set_memory(&self, allocated: u64, peak: u64) {
        self.memory[0].store(allocated.min(u64::MAX - 1), Ordering::Relaxed);
        self.memory[1].store(peak.min(u64::MAX - 1), Ordering::Relaxed);
    }

    fn memory(&self) -> Option<(u64, u64)> {
        let allocated = self.memory[0].load(Ordering::Relaxed);
        (allocated != u64::MAX).then(|| (allocated, self.memory[1].load(Ordering::Relaxed)))
    }

    /// What a reuse of its id must match (see `fingerprint.rs`).
    pub fn parameters_fingerprint(&self) -> super::Fingerprint {
        self.fingerprint
    }

    /// Puts the execution in a trace (once; later calls are ignored).
    pub(crate) fn set_trace(&self, trace: crate::trace::TraceId) {
        let _ = self.trace.set(trace);
    }

    /// The trace it belongs to, if any.
    pub fn trace_id(&self) -> Option<crate::trace::TraceId> {
        self.trace.get().copied()
    }

    /// A copy of the record as it is now.
    pub fn snapshot(&self) -> ExecutionSnapshot {
        self.snapshot_with(true)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ExecutionRecord {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Kept::Counted(counted) = state.kept {
            self.counts.results.release(counted);
        }
    }
}
