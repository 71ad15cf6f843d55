//! Where one attempt of an execution runs, and the plugin call itself:
//! in place on the caller's thread, inline in a task of its own raced
//! against the deadline, or off the async workers (the module doc of
//! `exec` says when each is chosen). Each reports how the attempt ended
//! and when.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::sink::RecordSink;
use super::{Attempt, Ending, ExecutionMode, Job};
use crate::error::Error;
use crate::loader::CallRequest;
use crate::pool::{Lease, Quarantine};
use crate::tier::{Bound, Seat};
use crate::Value;

/// One attempt on the calling thread, begun at `started`: no hand-off. Only
/// for calls without a deadline of functions the tier has promoted, in a
/// seat under its cap; runs over the budget demote the function when they
/// are too frequent, and one past the hard limit does at once (the
/// watchdog does it while the run is still going).
pub(super) fn call_inline(
    job: &Job,
    mut lease: Lease,
    started: Instant,
    seat: Seat<&Bound>,
) -> (Attempt, Instant) {
    let (result, ended) = seated_call(job, &mut lease, started, seat);
    lease.end_at(ended);
    (Attempt::Done(result), ended)
}

/// The plugin call of an inline attempt, in its seat: the watchdog sees it
/// from `started` on, and its run time judges the function when it ends.
pub(super) fn seated_call<B: std::ops::Deref<Target = Bound>>(
    job: &Job,
    lease: &mut Lease,
    started: Instant,
    seat: Seat<B>,
) -> (Result<Value, Error>, Instant) {
    seat.begin(started);
    let result = call_blocking(job, lease);
    let ended = Instant::now();
    seat.end(
        job.profile(),
        ended.saturating_duration_since(started),
        &job.policy,
    )
    .log(job.task.plugin.name(), job.record.function());
    (result, ended)
}

/// One inline attempt of a call with a deadline, in a task of its own on
/// the runtime, raced against the deadline: the caller is answered at the
/// deadline even if the plugin never returns, like `call_off_worker`'s,
/// and the task holds its seat under the cap until the plugin does.
pub(super) async fn call_spawned(
    job: &Arc<Job>,
    mut lease: Lease,
    seat: Seat<Arc<Bound>>,
    ending: &mut Ending,
) -> (Attempt, Instant) {
    let quarantine = lease.quarantine_handle();
    ending.watch(quarantine.clone());
    let for_call = Arc::clone(job);
    let call = tokio::spawn(async move {
        let job = &*for_call;
        seated_call(job, &mut lease, Instant::now(), seat)
    });
    match wait_for(job, call, &quarantine, ending).await {
        Ok(Ok((result, ended))) => (Attempt::Done(result), ended),
        Ok(Err(e)) => (
            Attempt::Done(Err(Error::Background {
                what: "the call's task",
                reason: e.to_string(),
            })),
            Instant::now(),
        ),
        Err(abandoned) => (abandoned, Instant::now()),
    }
}

/// Waits for a call running elsewhere, unless its deadline passes or the
/// execution is ended from outside (a forced cancel) first: then its
/// instance is quarantined and the attempt is `Err` — the call runs on,
/// and its instance rejoins the pool only when the plugin returns.
async fn wait_for<T>(
    job: &Job,
    call: tokio::task::JoinHandle<T>,
    quarantine: &Quarantine,
    ending: &mut Ending,
) -> Result<Result<T, tokio::task::JoinError>, Attempt> {
    let deadline = async {
        match job.deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let waited = tokio::select! {
        joined = call => Ok(joined),
        () = deadline => Err(Attempt::TimedOut),
        // Ended from outside while running: a forced cancel.
        _ = job.record.finished() => Err(Attempt::Abandoned),
    };
    if waited.is_err() {
        quarantine.quarantine();
        job.profile().interrupted();
    }
    ending.unwatch();
    waited
}

/// One attempt off the async workers. If the wait is abandoned (deadline,
/// forced cancel, the caller going away) the thread runs on: the instance
/// is quarantined and rejoins the pool only when the plugin returns.
pub(super) async fn call_off_worker(
    job: &Arc<Job>,
    mut lease: Lease,
    ending: &mut Ending,
) -> (Attempt, Instant) {
    if job.mode == ExecutionMode::Sync && job.deadline.is_none() && on_multi_thread_runtime() {
        // Nothing to watch while the call runs (no deadline; a SYNC caller
        // waits for the end anyway): run the call here, sparing a thread
        // hand-off each way. This worker's duties go to another thread
        // first — for a call in a worker process, only if the answer does
        // not come while this thread spins briefly (the wait does that).
        let (result, took) = if lease.is_isolated() {
            timed(job, &mut lease)
        } else {
            tokio::task::block_in_place(|| timed(job, &mut lease))
        };
        drop(lease);
        return (observed(job, result, took), Instant::now());
    }
    let quarantine = lease.quarantine_handle();
    ending.watch(quarantine.clone());
    let for_call = Arc::clone(job);
    let call = tokio::task::spawn_blocking(move || timed(&for_call, &mut lease));
    let attempt = match wait_for(job, call, &quarantine, ending).await {
        Ok(Ok((result, took))) => observed(job, result, took),
        Ok(Err(e)) => Attempt::Done(Err(Error::Background {
            what: "the call's thread",
            reason: e.to_string(),
        })),
        Err(abandoned) => abandoned,
    };
    (attempt, Instant::now())
}

/// Folds an off-worker run into the function's profile.
pub(super) fn observed(job: &Job, result: Result<Value, Error>, took: Duration) -> Attempt {
    let profile = job.profile();
    if matches!(result, Err(Error::PluginPanicked { .. })) {
        profile.interrupted();
    } else {
        profile
            .off_worker_run(took, &job.policy)
            .log(job.task.plugin.name(), job.record.function());
    }
    Attempt::Done(result)
}

pub(super) fn timed(job: &Job, lease: &mut Lease) -> (Result<Value, Error>, Duration) {
    let start = Instant::now();
    let result = call_blocking(job, lease);
    (result, start.elapsed())
}

/// The plugin call itself, on the current thread.
fn call_blocking(job: &Job, lease: &mut Lease) -> Result<Value, Error> {
    let sink = RecordSink {
        record: &job.record,
        chunks: job.chunks.as_ref(),
        deadline: job.deadline,
    };
    let request = CallRequest {
        execution_id: job.record.id(),
        params: &job.params,
        environment: &job.environment,
        headers: &job.headers,
        traceparent: job.traceparent.as_deref(),
        deadline: job
            .deadline
            .map(|d| SystemTime::now() + d.saturating_duration_since(Instant::now())),
        cancelled: job.record.cancel_flag(),
        sink: &sink,
    };
    let result = lease.call(job.function, &request);
    // Read on this thread, right after the call: the plugin's counters are
    // per thread and were reset when the call began.
    if let Some((allocated, peak)) = lease.call_memory(&job.task.plugin) {
        job.record.set_memory(allocated, peak);
        if let Some(metrics) = job.task.function_metrics(job.function.index()) {
            metrics.memory.observe(peak);
        }
    }
    result
}

pub(crate) fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}
