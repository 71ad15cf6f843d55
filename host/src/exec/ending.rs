//! [`Ending`]: every execution ends, whoever stops caring about it.
//!
//! An execution's runner is a future; whoever awaits it (a gRPC handler, an
//! embedding application) may drop it at any await point — while it waits
//! for an instance, between retries, or while the plugin runs elsewhere —
//! when the client cancels, disconnects, or a transport deadline fires. The
//! guard is created with the record and owns its ending from then on: if
//! the runner has not ended the record when the guard is dropped, the
//! plugin is told to stop, an instance still running is quarantined, and
//! the record ends as TIMEOUT (past its deadline) or CANCELLED.

use std::sync::Arc;
use std::time::Instant;

use super::records::ExecutionRecord;
use super::{ExecutionError, ExecutionStatus};
use crate::pool::Quarantine;
use crate::task::Task;

/// Ends its execution's record on drop unless disarmed.
#[derive(Debug)]
pub(crate) struct Ending {
    record: Arc<ExecutionRecord>,
    task: Arc<Task>,
    deadline: Option<Instant>,
    running: Option<Quarantine>,
    armed: bool,
}

impl Ending {
    pub(crate) fn new(
        record: Arc<ExecutionRecord>,
        task: Arc<Task>,
        deadline: Option<Instant>,
    ) -> Self {
        Ending {
            record,
            task,
            deadline,
            running: None,
            armed: true,
        }
    }

    /// A call is running elsewhere on this lease: quarantine it if abandoned.
    pub(crate) fn watch(&mut self, running: Quarantine) {
        self.running = Some(running);
    }

    /// The call returned (or was quarantined already).
    pub(crate) fn unwatch(&mut self) {
        self.running = None;
    }

    /// The runner ended the record itself.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if !self.armed || self.record.status().is_final() {
            return;
        }
        self.record.request_cancel();
        if let Some(running) = self.running.take() {
            running.quarantine();
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            super::time_out(&self.record);
        } else {
            self.record.finish(
                ExecutionStatus::Cancelled,
                None,
                Some(ExecutionError::cancelled("the caller stopped waiting")),
            );
        }
        if let Ok(function) = self.task.plugin.function(self.record.function()) {
            let now = Instant::now();
            self.task.record_outcome(
                function,
                self.record.mode(),
                self.record.status(),
                now.saturating_duration_since(self.record.created),
                now,
            );
        }
    }
}
