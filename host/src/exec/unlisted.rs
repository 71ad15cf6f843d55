//! SYNC calls whose caller chose no execution id, run in place by the
//! inline tier. Nobody can ask for such an execution, while it runs or
//! after: its caller's answer carries everything a record would say. So
//! unless it fails or logs, it gets no record at all — no id table, no
//! lock, no state transitions: it is counted, and answered. One that fails
//! or logs becomes an ordinary record, kept and listed like any other
//! (`docs/reliability.md`, `executions.keep_completed_sync`).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::records::MAX_LOG_LINES;
use super::sink::CallLabels;
use super::{ids, ExecutionId, ExecutionRecord, ExecutionSnapshot, ExecutionStore};
use crate::error::Error;
use crate::execution::{wall_clock, ExecutionMode, ExecutionStatus};
use crate::loader::{CallRequest, CallSink, FunctionHandle};
use crate::pool::Lease;
use crate::task::Task;
use crate::tier::{Bound, Seat, TierPolicy};
use crate::trace::{TraceId, Traceparent};
use crate::{LogLevel, Value};

/// One unlisted call: what the plugin is handed, and where it ran from.
pub(crate) struct UnlistedCall<'a> {
    pub task: &'a Arc<Task>,
    pub function: FunctionHandle,
    pub params: &'a [(String, Value)],
    pub environment: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// The trace the call belongs to, and the `traceparent` handed to the
    /// plugin for its own span.
    pub trace: Option<(TraceId, Traceparent)>,
    pub policy: &'a TierPolicy,
}

/// What a call reported besides its result.
struct Ran {
    id: ExecutionId,
    started: Instant,
    ended: Instant,
    instance: Arc<str>,
    memory: Option<(u64, u64)>,
    logs: Lines,
}

/// Runs `call` on `lease`'s instance in `seat`, from `started` on (the
/// caller's clock reading), and returns its caller's snapshot.
pub(crate) fn run_unlisted(
    store: &ExecutionStore,
    call: &UnlistedCall<'_>,
    mut lease: Lease,
    seat: Seat<&Bound>,
    started: Instant,
) -> ExecutionSnapshot {
    let (task, function) = (call.task, call.function);
    let counts = store.thread_counts();
    let running_here = counts.running();
    let _running = task.begin_execution(function);
    let id = ids::next(started);
    let name = task.plugin.function_name(function);
    let sink = LogBuffer {
        labels: CallLabels {
            trace: call.trace.map(|(trace, _)| trace),
            execution: &id,
            task: &task.id,
            function: name,
        },
        lines: Mutex::default(),
    };
    let cancelled = AtomicBool::new(false);
    let request = CallRequest {
        execution_id: &id,
        params: call.params,
        environment: call.environment,
        headers: call.headers,
        traceparent: call.trace.as_ref().map(|(_, parent)| parent.as_str()),
        deadline: None,
        cancelled: &cancelled,
        sink: &sink,
    };
    seat.begin(started);
    let result = lease.call(function, &request);
    // Read on this thread, right after the call: the plugin's counters are
    // per thread and were reset when the call began.
    let memory = lease.call_memory(&task.plugin);
    if let (Some((_, peak)), Some(metrics)) = (memory, task.function_metrics(function.index())) {
        metrics.memory.observe(peak);
    }
    let ended = Instant::now();
    let took = ended.saturating_duration_since(started);
    let profile = task.profile(function);
    seat.end(profile, took, call.policy)
        .log(task.plugin.name(), name);
    let instance = Arc::clone(lease.instance_id());
    lease.end_at(ended);
    drop(running_here);
    let logs = sink
        .lines
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let ran = Ran {
        id,
        started,
        ended,
        instance,
        memory,
        logs,
    };
    let snapshot = match result {
        Ok(output) if ran.logs.kept.is_empty() => {
            counts.completed(took);
            profile.record_duration(took);
            completed(call, ran, output, took)
        }
        result => recorded(store, call, ran, result),
    };
    task.record_outcome(function, ExecutionMode::Sync, snapshot.status, took, ended);
    snapshot
}

/// The snapshot of a call that completed and logged nothing: what its
/// record would have said, built directly.
fn completed(
    call: &UnlistedCall<'_>,
    ran: Ran,
    output: Value,
    took: Duration,
) -> ExecutionSnapshot {
    let created_at = wall_clock(ran.started);
    ExecutionSnapshot {
        execution_id: ran.id,
        task_id: Arc::clone(&call.task.id),
        function: Arc::clone(call.task.plugin.function_name(call.function)),
        mode: ExecutionMode::Sync,
        status: ExecutionStatus::Completed,
        output: Some(output),
        error: None,
        created_at,
        started_at: Some(created_at),
        completed_at: Some(created_at + took),
        execution_time: took,
        instance_id: Some(ran.instance),
        attempts: 1,
        logs: Vec::new(),
        trace_id: call.trace.map(|(trace, _)| trace),
        memory: ran.memory,
        output_dropped: None,
    }
}

/// A call that failed or logged: it becomes an ordinary record, kept and
/// listed, and its caller's snapshot is that record's.
fn recorded(
    store: &ExecutionStore,
    call: &UnlistedCall<'_>,
    ran: Ran,
    result: Result<Value, Error>,
) -> ExecutionSnapshot {
    let task = call.task;
    let name = task.plugin.function_name(call.function);
    let record = store.unlisted_record(ran.id, &task.id, name, ran.started);
    record.start_attempt_at(&ran.instance, ran.started);
    if let Some((trace, _)) = call.trace {
        record.set_trace(trace);
    }
    if let Some((allocated, peak)) = ran.memory {
        record.set_memory(allocated, peak);
    }
    ran.logs.replay(&record);
    match result {
        Ok(output) => {
            let finished =
                record.finish_at(ExecutionStatus::Completed, Some(output), None, ran.ended);
            if let Some(took) = finished {
                task.profile(call.function).record_duration(took);
            }
        }
        Err(error) => {
            record.finish_at(
                ExecutionStatus::Failed,
                None,
                Some(super::error_of(&error)),
                ran.ended,
            );
        }
    }
    store.settle_unlisted(record)
}

/// A call's log lines, held until it is known whether it gets a record.
#[derive(Debug, Default)]
struct Lines {
    kept: Vec<String>,
    /// Past [`MAX_LOG_LINES`], as a record counts them.
    dropped: usize,
}

impl Lines {
    fn replay(self, record: &ExecutionRecord) {
        for line in self.kept {
            record.log(line);
        }
        record.count_dropped_logs(self.dropped);
    }
}

/// The sink of an unlisted call: no stream, log lines held.
struct LogBuffer<'a> {
    labels: CallLabels<'a>,
    lines: Mutex<Lines>,
}

impl CallSink for LogBuffer<'_> {
    fn emit(&self, _chunk: Value) -> bool {
        false
    }

    fn log(&self, level: LogLevel, line: &str) {
        let line = self.labels.log_line(level, line);
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.kept.len() < MAX_LOG_LINES {
            lines.kept.push(line);
        } else {
            lines.dropped += 1;
        }
    }
}
