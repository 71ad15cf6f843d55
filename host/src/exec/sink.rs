//! Where a running call's stream chunks and log lines go.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::records::ExecutionRecord;
use crate::loader::CallSink;
use crate::{LogLevel, Value};

/// How often a plugin blocked on a full stream rechecks cancellation.
const RECHECK: Duration = Duration::from_millis(20);

/// Routes a call's log lines to its record and its chunks to the stream.
pub(super) struct RecordSink<'a> {
    pub record: &'a ExecutionRecord,
    pub chunks: Option<&'a mpsc::Sender<Value>>,
    pub deadline: Option<Instant>,
}

impl RecordSink<'_> {
    fn must_stop(&self) -> bool {
        self.record.cancel_requested() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl CallSink for RecordSink<'_> {
    /// Blocks while the consumer's buffer is full (backpressure), but gives
    /// up — "nobody is listening" — once the call is cancelled or past its
    /// deadline, so a consumer that stops reading cannot pin the plugin.
    fn emit(&self, chunk: Value) -> bool {
        let Some(tx) = self.chunks else {
            return false;
        };
        let chunk = match tx.try_send(chunk) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(chunk)) => chunk,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return tx.blocking_send(chunk).is_ok();
        };
        loop {
            if self.must_stop() {
                return false;
            }
            let wait = self.deadline.map_or(RECHECK, |d| {
                RECHECK.min(d.saturating_duration_since(Instant::now()))
            });
            match runtime.block_on(tokio::time::timeout(wait, tx.reserve())) {
                Ok(Ok(permit)) => {
                    permit.send(chunk);
                    return true;
                }
                Ok(Err(_closed)) => return false,
                Err(_elapsed) => {}
            }
        }
    }

    fn log(&self, level: LogLevel, line: &str) {
        let r = self.record;
        let call = CallLabels {
            trace: r.trace_id(),
            execution: r.id(),
            task: r.task_id(),
            function: r.function(),
        };
        r.log(call.log_line(level, line));
    }
}

/// What ties a plugin's log line to its call in the host's log.
pub(super) struct CallLabels<'a> {
    pub trace: Option<crate::trace::TraceId>,
    pub execution: &'a str,
    pub task: &'a str,
    pub function: &'a str,
}

impl CallLabels<'_> {
    /// Writes a plugin's log line to the host's log too (target `plugin`),
    /// with what ties it to its call, and returns it as the execution
    /// keeps it (`LEVEL message`).
    pub(super) fn log_line(&self, level: LogLevel, line: &str) -> String {
        let trace = self.trace.map(tracing::field::display);
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "plugin",
                    $level,
                    trace_id = trace,
                    execution = self.execution,
                    task = self.task,
                    function = self.function,
                    "{line}"
                )
            };
        }
        let name = match level {
            LogLevel::Trace => {
                emit!(tracing::Level::TRACE);
                "TRACE"
            }
            LogLevel::Debug => {
                emit!(tracing::Level::DEBUG);
                "DEBUG"
            }
            LogLevel::Info => {
                emit!(tracing::Level::INFO);
                "INFO"
            }
            LogLevel::Warn => {
                emit!(tracing::Level::WARN);
                "WARN"
            }
            LogLevel::Error => {
                emit!(tracing::Level::ERROR);
                "ERROR"
            }
        };
        format!("{name} {line}")
    }
}
