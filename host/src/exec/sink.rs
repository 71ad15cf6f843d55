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
        // To the host's log too (target `plugin`), carrying what ties the
        // line to its call: the trace, the execution, the task.
        let r = &self.record;
        let trace = r.trace_id().map(tracing::field::display);
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "plugin",
                    $level,
                    trace_id = trace,
                    execution = r.id(),
                    task = r.task_id(),
                    function = r.function(),
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
        self.record.log(format!("{name} {line}"));
    }
}
