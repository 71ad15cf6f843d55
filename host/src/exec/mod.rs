//! Running an execution: on a runtime worker when the function has proven
//! short and the inline tier's cap allows, otherwise off the async workers;
//! within its deadline either way; retried when retrying can help, with
//! every attempt recorded, and always ended — by its runner, or by `Ending`
//! when the runner goes away.
//!
//! Where an attempt runs (`attempt.rs`):
//!
//! - **In place** (`call_inline`): a SYNC call of a promoted function,
//!   without a deadline, with a seat under the tier's cap — on the caller's
//!   own thread, no hand-off. Nothing waits for it but its caller.
//! - **Inline in a task of its own** (`call_spawned`): the same, with a
//!   deadline. The call is `tokio::spawn`ed and raced against the deadline
//!   the way `call_off_worker` races `spawn_blocking`, so the caller's
//!   future stays free to answer at the deadline even if the plugin never
//!   returns; the cap keeps a worker free to do so. A spawn from a worker
//!   costs an allocation and a push to that worker's LIFO slot, and the
//!   worker runs the task as soon as the caller's future waits: no thread
//!   hand-off, far cheaper than `spawn_blocking`'s two (there and back),
//!   so the function keeps the tier's benefit under the deadlines most
//!   gRPC clients send.
//! - **Off the workers** (`call_off_worker`): everything else, including
//!   promoted calls that find the cap reached.

mod attempt;
mod budget;
mod ending;
mod fingerprint;
mod ids;
mod records;
mod sink;
mod snapshot;
mod store;
mod unlisted;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use crate::counters::CountsSnapshot;
pub use crate::execution::{wall_clock, ExecutionError, ExecutionMode, ExecutionStatus};
pub(crate) use attempt::on_multi_thread_runtime;
use attempt::{call_inline, call_off_worker, call_spawned, observed, timed};
pub use budget::{DroppedOutput, ResultBudget, ResultLimit};
pub(crate) use ending::Ending;
pub use fingerprint::Fingerprint;
pub use ids::ExecutionId;
pub use records::{CancelOutcome, CancelReason, ExecutionRecord};
pub use snapshot::ExecutionSnapshot;
pub use store::{ExecutionQuery, ExecutionStore};
pub(crate) use unlisted::{run_unlisted, UnlistedCall};

/// A new unique id (UUIDv7 text) to share, such as a task's.
pub fn new_id() -> std::sync::Arc<str> {
    std::sync::Arc::from(ids::next(Instant::now()).as_str())
}

use crate::backoff::full_jitter;
use crate::error::Error;
use crate::loader::FunctionHandle;
use crate::pool::{Lease, Wait};
use crate::task::Task;
use crate::tier::{Bound, Code, Profile, Seat, TierPolicy};
use crate::Value;

/// What one execution needs, shared with the thread that runs the plugin.
#[derive(Debug)]
pub(crate) struct Job {
    pub task: Arc<Task>,
    pub function: FunctionHandle,
    pub record: Arc<ExecutionRecord>,
    pub params: Vec<(String, Value)>,
    pub environment: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// The call's own `traceparent`, a header the plugin gets after `headers`.
    pub traceparent: Option<crate::trace::Traceparent>,
    /// When the whole execution (all attempts) must be done.
    pub deadline: Option<Instant>,
    /// How long to wait for a free instance when there is no deadline.
    pub acquire_timeout: Duration,
    pub max_retries: u32,
    pub fresh_instance: bool,
    pub mode: ExecutionMode,
    /// Where stream chunks go (STREAM mode).
    pub chunks: Option<mpsc::Sender<Value>>,
    pub policy: TierPolicy,
}

impl Job {
    /// Counts the execution's end into its task's outcome counters.
    fn record_outcome(&self, status: ExecutionStatus, ended: Instant) {
        self.task.record_outcome(
            self.function,
            self.mode,
            status,
            ended.saturating_duration_since(self.record.created),
            ended,
        );
    }

    fn profile(&self) -> &Profile {
        self.task.profile(self.function)
    }

    /// How long to wait for an instance.
    pub(crate) fn acquire_wait(&self) -> Wait {
        match self.deadline {
            Some(at) => Wait::Until(at),
            None => Wait::For(self.acquire_timeout),
        }
    }

    /// A seat in the inline tier, when this call may run inline: it is
    /// SYNC, its function is promoted and the tier's cap is not reached.
    pub(crate) fn seat(&self) -> Option<Seat<&Bound>> {
        if self.mode != ExecutionMode::Sync || !self.policy.enabled() || !self.profile().is_inline()
        {
            return None;
        }
        self.task
            .profile
            .seat(Code::Function(self.function.index()))
    }
}

/// A job owned by its runner until a call must run on another thread,
/// which needs a share of it: the inline path never allocates for it.
// Owned in place on purpose: boxing it is the allocation `Held` avoids.
#[allow(clippy::large_enum_variant)]
enum Held {
    Owned(Option<Job>),
    Shared(Arc<Job>),
}

impl Held {
    fn job(&self) -> &Job {
        match self {
            Held::Owned(job) => job.as_ref().expect("owned until shared"),
            Held::Shared(job) => job,
        }
    }

    fn share(&mut self) -> Arc<Job> {
        if let Held::Owned(job) = self {
            let job = job.take().expect("owned until shared");
            *self = Held::Shared(Arc::new(job));
        }
        match self {
            Held::Shared(job) => Arc::clone(job),
            Held::Owned(_) => unreachable!("shared above"),
        }
    }
}

/// Why a call attempt ended.
enum Attempt {
    Done(Result<Value, Error>),
    TimedOut,
    /// The execution was ended from outside (forced cancel) mid-call.
    Abandoned,
}

const RETRY_BASE: Duration = Duration::from_millis(10);
const RETRY_CAP: Duration = Duration::from_secs(1);

/// What to do after an attempt.
enum Step {
    /// The execution ended with this status.
    End(ExecutionStatus),
    /// Try again after this pause.
    Retry(Duration),
}

/// Runs `job` to its end, recording everything on its record. `lease` is the
/// instance for the first attempt, if one was acquired already. `ending`
/// ends the record if this future is dropped before it does.
pub(crate) async fn run(job: Job, mut lease: Option<Lease>, mut ending: Ending) -> ExecutionStatus {
    // Its own handle: the job moves while the guard counts.
    let task = Arc::clone(&job.task);
    let _running = task.begin_execution(job.function);
    let record = Arc::clone(&job.record);
    let mut held = Held::Owned(Some(job));
    let mut fresh = held.job().fresh_instance;
    let mut attempt = 0;
    let (status, ended) = loop {
        if record.cancel_requested() {
            record.finish(ExecutionStatus::Cancelled, None, Some(cancelled_error()));
            break (record.status(), Instant::now());
        }
        let lease = match lease.take() {
            Some(lease) => lease,
            None => {
                // Boxed, like every wait here: the future of a call that
                // needs none of them stays small, and cheap to move.
                let job = held.job();
                match Box::pin(job.task.pool.acquire(fresh, job.acquire_wait())).await {
                    Ok(lease) => lease,
                    Err(e) => break (end_unserved(&record, &e), Instant::now()),
                }
            }
        };
        let Some(started) = record.start_attempt(lease.instance_id()) else {
            break (record.status(), Instant::now());
        };
        let (outcome, ended) = 'attempt: {
            let spawned = match held.job().seat() {
                Some(seat) if held.job().deadline.is_none() => {
                    break 'attempt call_inline(held.job(), lease, started, seat);
                }
                Some(seat) => Some(seat.detach()),
                None => None,
            };
            let job = held.share();
            match spawned {
                Some(seat) => Box::pin(call_spawned(&job, lease, seat, &mut ending)).await,
                None => Box::pin(call_off_worker(&job, lease, &mut ending)).await,
            }
        };
        match settle(held.job(), outcome, ended, &mut attempt, &mut fresh) {
            Step::End(status) => break (status, ended),
            Step::Retry(pause) => Box::pin(tokio::time::sleep(pause)).await,
        }
    };
    ending.disarm();
    let job = held.job();
    job.record_outcome(status, ended);
    status
}

/// Runs a SYNC call of a promoted function that has its instance and its
/// seat, with no retries to wait for and no deadline to keep, entirely on
/// this thread: nothing here can be interrupted, so no guard is needed to
/// end the record. (A call whose caller chose no id runs without a record
/// at all: `unlisted.rs`.)
pub(crate) fn run_in_place(job: Job, lease: Lease, seat: Seat<&Bound>) -> ExecutionStatus {
    debug_assert!(job.max_retries == 0 && job.deadline.is_none());
    let _running = job.task.begin_execution(job.function);
    let record = &job.record;
    let (status, ended) = match record.start_attempt_at(lease.instance_id(), Instant::now()) {
        None => (record.status(), Instant::now()),
        Some(started) => {
            let (outcome, ended) = call_inline(&job, lease, started, seat);
            (settle_once(&job, outcome, ended), ended)
        }
    };
    job.record_outcome(status, ended);
    status
}

/// Runs a SYNC call on an idle worker process, with no deadline and no
/// retries, from this thread: the call is posted, and its answer waited
/// for here — spinning while the worker answers quickly, handing this
/// runtime worker's duties to another thread only if it must sleep (see
/// `isolate::process`). None of the general path's futures are needed;
/// a forced cancel reaches the worker through the shared cancel flag, and
/// a worker that ignores it is killed after a grace.
pub(crate) fn run_isolated_in_place(job: Job, mut lease: Lease) -> ExecutionStatus {
    debug_assert!(job.max_retries == 0 && job.deadline.is_none() && lease.is_isolated());
    let _running = job.task.begin_execution(job.function);
    let record = &job.record;
    let (status, ended) = match record.start_attempt(lease.instance_id()) {
        None => (record.status(), Instant::now()),
        Some(_) => {
            let (result, took) = timed(&job, &mut lease);
            drop(lease);
            let outcome = observed(&job, result, took);
            let ended = Instant::now();
            (settle_once(&job, outcome, ended), ended)
        }
    };
    job.record_outcome(status, ended);
    status
}

/// Ends the execution after the only attempt a call has (no retries).
fn settle_once(job: &Job, outcome: Attempt, ended: Instant) -> ExecutionStatus {
    let (mut attempt, mut fresh) = (0, false);
    match settle(job, outcome, ended, &mut attempt, &mut fresh) {
        Step::End(status) => status,
        Step::Retry(_) => unreachable!("a call without retries is never retried"),
    }
}

/// Ends the execution after an attempt, or says how long to wait before
/// the next one.
fn settle(
    job: &Job,
    outcome: Attempt,
    ended: Instant,
    attempt: &mut u32,
    fresh: &mut bool,
) -> Step {
    let record = &job.record;
    let past_deadline = job.deadline.is_some_and(|d| ended >= d);
    let cancelled = record.cancel_requested();
    match outcome {
        Attempt::Done(Ok(value)) => {
            // A forced cancel may have ended the record while the call ran.
            if let Some(ran) =
                record.finish_at(ExecutionStatus::Completed, Some(value), None, ended)
            {
                job.profile().record_duration(ran);
            }
            Step::End(record.status())
        }
        // A plugin that noticed the deadline itself has timed out too.
        Attempt::TimedOut | Attempt::Done(Err(_)) if past_deadline && !cancelled => {
            record.request_cancel();
            time_out(record);
            Step::End(ExecutionStatus::Timeout)
        }
        Attempt::TimedOut => {
            let error = record.cancelled_error(cancelled_error());
            record.finish(ExecutionStatus::Cancelled, None, Some(error));
            Step::End(record.status())
        }
        Attempt::Abandoned => Step::End(record.status()),
        Attempt::Done(Err(error)) => {
            if cancelled {
                let error = record.cancelled_error(error_of(&error));
                record.finish(ExecutionStatus::Cancelled, None, Some(error));
                return Step::End(record.status());
            }
            let retriable = match &error {
                Error::PluginFailed { retriable, .. } => *retriable,
                // The instance is gone (a panic, its worker crashed): a
                // fresh one may well succeed.
                Error::PluginPanicked { .. } | Error::PluginCrashed { .. } => true,
                _ => false,
            };
            if !retriable || *attempt >= job.max_retries {
                return Step::End(fail(record, &error));
            }
            // A panicked instance is gone; the retry needs a new one anyway.
            *fresh = *fresh
                || matches!(
                    error,
                    Error::PluginPanicked { .. } | Error::PluginCrashed { .. }
                );
            *attempt += 1;
            let pause = full_jitter(RETRY_BASE, RETRY_CAP, *attempt);
            if job.deadline.is_some_and(|d| ended + pause >= d) {
                return Step::End(fail(record, &error));
            }
            tracing::debug!(execution = record.id(), attempt = *attempt, error = %error, "retrying");
            let failed = error_of(&error);
            record.log(format!(
                "RETRY attempt {} failed: {}: {} (retrying in {} ms)",
                *attempt,
                failed.code,
                failed.message,
                pause.as_millis()
            ));
            Step::Retry(pause)
        }
    }
}

/// An execution that never got an instance: FAILED, or CANCELLED when its
/// task was deleted while it waited.
pub(crate) fn end_unserved(record: &ExecutionRecord, error: &Error) -> ExecutionStatus {
    match error {
        Error::TaskDeleted { .. } => {
            record.finish(ExecutionStatus::Cancelled, None, Some(error_of(error)));
            record.status()
        }
        _ => fail(record, error),
    }
}

/// Ends `record` as TIMEOUT, with how long it ran.
pub(crate) fn time_out(record: &ExecutionRecord) {
    let error = Error::DeadlineExceeded {
        execution_id: record.id().to_owned(),
        elapsed_ms: u64::try_from(record.execution_time().as_millis()).unwrap_or(u64::MAX),
    };
    record.finish(ExecutionStatus::Timeout, None, Some(error_of(&error)));
}

fn fail(record: &ExecutionRecord, error: &Error) -> ExecutionStatus {
    record.finish(ExecutionStatus::Failed, None, Some(error_of(error)));
    record.status()
}

/// The code and message an execution reports for `error`: the plugin's own
/// code for function failures, spearlet's error kind otherwise.
pub(crate) fn error_of(error: &Error) -> ExecutionError {
    match error {
        Error::PluginFailed { code, message, .. } => ExecutionError::new(code, message),
        Error::PluginPanicked { message, .. } => ExecutionError::panicked(message),
        other => ExecutionError::new(other.kind(), other.to_string()),
    }
}

pub(crate) fn cancelled_error() -> ExecutionError {
    ExecutionError::cancelled("the execution was cancelled")
}
