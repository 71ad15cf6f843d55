//! Running an execution: on a blocking thread, within its deadline, retried
//! when retrying can help, with every attempt recorded.

mod records;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

pub use records::{
    ExecutionError, ExecutionMode, ExecutionRecord, ExecutionSnapshot, ExecutionStatus,
};
pub use store::{ExecutionQuery, ExecutionStore};

use crate::backoff::full_jitter;
use crate::error::Error;
use crate::loader::{CallRequest, CallSink, FunctionHandle};
use crate::pool::{Lease, Quarantine};
use crate::registry::Task;
use crate::{LogLevel, Value};

/// What one execution needs, owned so it can move to a blocking thread.
#[derive(Debug)]
pub(crate) struct Job {
    pub task: Arc<Task>,
    pub function: FunctionHandle,
    pub record: Arc<ExecutionRecord>,
    pub params: Vec<(String, Value)>,
    pub environment: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// When the whole execution (all attempts) must be done.
    pub deadline: Option<Instant>,
    /// How long to wait for a free instance when there is no deadline.
    pub acquire_timeout: Duration,
    pub max_retries: u32,
    pub fresh_instance: bool,
    pub mode: ExecutionMode,
    /// Where stream chunks go (STREAM mode).
    pub chunks: Option<mpsc::Sender<Value>>,
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

/// Runs `job` to its end, recording everything on its record. `lease` is the
/// instance for the first attempt, if one was acquired already.
pub(crate) async fn run(job: Job, mut lease: Option<Lease>) -> ExecutionStatus {
    let _running = job.task.begin_execution();
    let record = Arc::clone(&job.record);
    let job = Arc::new(job);
    let mut fresh = job.fresh_instance;
    let mut attempt = 0;
    let status = loop {
        if record
            .cancel_flag()
            .load(std::sync::atomic::Ordering::Acquire)
        {
            record.finish(ExecutionStatus::Cancelled, None, Some(cancelled_error()));
            break ExecutionStatus::Cancelled;
        }
        let lease = match lease.take() {
            Some(lease) => lease,
            None => {
                let wait_until = job
                    .deadline
                    .unwrap_or_else(|| Instant::now() + job.acquire_timeout);
                match job.task.pool.acquire(fresh, wait_until).await {
                    Ok(lease) => lease,
                    Err(e) => break fail(&record, &e),
                }
            }
        };
        if !record.start_attempt(lease.instance_id()) {
            break record.status();
        }
        let outcome = call_once(&job, lease).await;
        let past_deadline = job.deadline.is_some_and(|d| Instant::now() >= d);
        let cancelled = record
            .cancel_flag()
            .load(std::sync::atomic::Ordering::Acquire);
        match outcome {
            // A plugin that noticed the deadline itself has timed out too.
            Attempt::TimedOut | Attempt::Done(Err(_)) if past_deadline && !cancelled => {
                record.request_cancel();
                time_out(&record);
                break ExecutionStatus::Timeout;
            }
            Attempt::TimedOut => {
                record.finish(ExecutionStatus::Cancelled, None, Some(cancelled_error()));
                break ExecutionStatus::Cancelled;
            }
            Attempt::Abandoned => break record.status(),
            Attempt::Done(Ok(value)) => {
                // A forced cancel may have ended the record while the call ran.
                record.finish(ExecutionStatus::Completed, Some(value), None);
                break record.status();
            }
            Attempt::Done(Err(error)) => {
                if cancelled {
                    record.finish(ExecutionStatus::Cancelled, None, Some(error_of(&error)));
                    break ExecutionStatus::Cancelled;
                }
                let retriable = match &error {
                    Error::PluginFailed { retriable, .. } => *retriable,
                    Error::PluginPanicked { .. } => true,
                    _ => false,
                };
                if !retriable || attempt >= job.max_retries {
                    break fail(&record, &error);
                }
                // A panicked instance is gone; the retry needs a new one anyway.
                fresh = fresh || matches!(error, Error::PluginPanicked { .. });
                attempt += 1;
                let pause = full_jitter(RETRY_BASE, RETRY_CAP, attempt);
                if job.deadline.is_some_and(|d| Instant::now() + pause >= d) {
                    break fail(&record, &error);
                }
                tracing::debug!(execution = record.id(), attempt, error = %error, "retrying");
                let failed = error_of(&error);
                record.log(format!(
                    "RETRY attempt {attempt} failed: {}: {} (retrying in {} ms)",
                    failed.code,
                    failed.message,
                    pause.as_millis()
                ));
                tokio::time::sleep(pause).await;
            }
        }
    };
    job.task.record_outcome(status);
    if status == ExecutionStatus::Completed {
        job.task
            .record_duration(record.function(), record.execution_time());
    }
    status
}

/// One attempt on `lease`, on a blocking thread. If the wait is abandoned
/// (deadline, forced cancel) the thread runs on: the instance is quarantined
/// and rejoins the pool only when the plugin returns.
async fn call_once(job: &Arc<Job>, mut lease: Lease) -> Attempt {
    if job.mode == ExecutionMode::Sync && job.deadline.is_none() && on_multi_thread_runtime() {
        // Nothing to watch while the call runs (no deadline; a SYNC caller
        // waits for the end anyway): give this worker's duties to another
        // thread and run the call here, sparing a thread hand-off each way.
        // The plugin still never runs on a thread serving as an async worker.
        return Attempt::Done(tokio::task::block_in_place(|| {
            call_blocking(job, &mut lease)
        }));
    }
    let quarantine = lease.quarantine_handle();
    let mut waiting = Waiting {
        job,
        quarantine: &quarantine,
        armed: true,
    };
    let job_for_call = Arc::clone(job);
    let call = tokio::task::spawn_blocking(move || call_blocking(&job_for_call, &mut lease));
    let deadline = async {
        match job.deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let joined = tokio::select! {
        joined = call => joined,
        () = deadline => {
            quarantine.quarantine();
            waiting.armed = false;
            return Attempt::TimedOut;
        }
        _ = job.record.finished() => {
            // Ended from outside while running: a forced cancel.
            quarantine.quarantine();
            waiting.armed = false;
            return Attempt::Abandoned;
        }
    };
    waiting.armed = false;
    Attempt::Done(
        joined.unwrap_or_else(|e| Err(Error::Internal(format!("the call's thread failed: {e}")))),
    )
}

/// Armed while a caller awaits a call running elsewhere. If the awaiting
/// future is dropped instead — the gRPC layer gave up at the deadline, or
/// the client went away — the plugin is told to stop, its instance is
/// quarantined until it returns, and the execution ends rather than staying
/// RUNNING with nobody to stop it.
struct Waiting<'a> {
    job: &'a Job,
    quarantine: &'a Quarantine,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let record = &self.job.record;
        record.request_cancel();
        self.quarantine.quarantine();
        if self.job.deadline.is_some_and(|d| Instant::now() >= d) {
            time_out(record);
        } else {
            record.finish(
                ExecutionStatus::Cancelled,
                None,
                Some(ExecutionError {
                    code: "cancelled".to_owned(),
                    message: "the caller stopped waiting".to_owned(),
                }),
            );
        }
        self.job.task.record_outcome(record.status());
    }
}

/// The plugin call itself, on the current (non-worker) thread.
fn call_blocking(job: &Job, lease: &mut Lease) -> Result<Value, Error> {
    let sink = RecordSink {
        record: &job.record,
        chunks: job.chunks.as_ref(),
    };
    let request = CallRequest {
        execution_id: job.record.id(),
        params: &job.params,
        environment: &job.environment,
        headers: &job.headers,
        deadline: job
            .deadline
            .map(|d| SystemTime::now() + d.saturating_duration_since(Instant::now())),
        cancelled: job.record.cancel_flag(),
        sink: &sink,
    };
    lease.call(job.function, &request)
}

fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Ends `record` as TIMEOUT, with how long it ran.
fn time_out(record: &ExecutionRecord) {
    let error = Error::DeadlineExceeded {
        execution_id: record.id().to_owned(),
        elapsed_ms: u64::try_from(record.execution_time().as_millis()).unwrap_or(u64::MAX),
    };
    record.finish(ExecutionStatus::Timeout, None, Some(error_of(&error)));
}

fn fail(record: &ExecutionRecord, error: &Error) -> ExecutionStatus {
    record.finish(ExecutionStatus::Failed, None, Some(error_of(error)));
    ExecutionStatus::Failed
}

/// The code and message an execution reports for `error`: the plugin's own
/// code for function failures, spearlet's error kind otherwise.
pub(crate) fn error_of(error: &Error) -> ExecutionError {
    match error {
        Error::PluginFailed { code, message, .. } => ExecutionError {
            code: code.clone(),
            message: message.clone(),
        },
        Error::PluginPanicked { message, .. } => ExecutionError {
            code: "panic".to_owned(),
            message: message.clone(),
        },
        other => ExecutionError {
            code: other.kind().to_owned(),
            message: other.to_string(),
        },
    }
}

fn cancelled_error() -> ExecutionError {
    ExecutionError {
        code: "cancelled".to_owned(),
        message: "the execution was cancelled".to_owned(),
    }
}

/// Routes a call's log lines to its record and its chunks to the stream.
struct RecordSink<'a> {
    record: &'a ExecutionRecord,
    chunks: Option<&'a mpsc::Sender<Value>>,
}

impl CallSink for RecordSink<'_> {
    fn emit(&self, chunk: Value) -> bool {
        // Blocks while the consumer's buffer is full: backpressure.
        self.chunks
            .is_some_and(|tx| tx.blocking_send(chunk).is_ok())
    }

    fn log(&self, level: LogLevel, line: &str) {
        let level = match level {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        };
        self.record.log(format!("{level} {line}"));
    }
}
