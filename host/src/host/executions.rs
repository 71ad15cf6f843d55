//! Asking about executions, and cancelling them.

use super::Host;
use crate::error::{Error, Result};
use crate::exec::{
    CancelOutcome, CancelReason, ExecutionError, ExecutionQuery, ExecutionSnapshot, ExecutionStatus,
};

impl Host {
    /// An execution's current state.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`].
    pub fn execution(&self, execution_id: &str) -> Result<ExecutionSnapshot> {
        self.inner
            .executions
            .get(execution_id)
            .map(|r| r.snapshot())
            .ok_or_else(|| Error::ExecutionNotFound {
                execution_id: execution_id.to_owned(),
            })
    }

    /// Asks an execution to stop: PENDING ones are cancelled at once; for
    /// running ones the cancellation flag is raised and they end when the
    /// plugin returns — or at once with `force` (the instance stays out of
    /// the pool until its call returns). Returns whether the request took
    /// effect, and the status right after it.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`].
    pub fn cancel(&self, execution_id: &str, force: bool) -> Result<(bool, ExecutionStatus)> {
        self.cancel_for(execution_id, force, CancelReason::Requested)
    }

    /// As [`Host::cancel`], for a reason of the host's: the execution
    /// reports `error` (the caller's code and reason) however it ends,
    /// even when its plugin returns on its flag.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`].
    pub fn cancel_with(
        &self,
        execution_id: &str,
        force: bool,
        error: ExecutionError,
    ) -> Result<(bool, ExecutionStatus)> {
        self.cancel_for(execution_id, force, CancelReason::Host(error))
    }

    fn cancel_for(
        &self,
        execution_id: &str,
        force: bool,
        reason: CancelReason,
    ) -> Result<(bool, ExecutionStatus)> {
        let record =
            self.inner
                .executions
                .get(execution_id)
                .ok_or_else(|| Error::ExecutionNotFound {
                    execution_id: execution_id.to_owned(),
                })?;
        Ok(match record.cancel(force, reason) {
            CancelOutcome::AlreadyEnded(status) => (false, status),
            CancelOutcome::Cancelled => (true, ExecutionStatus::Cancelled),
            CancelOutcome::Requested => (true, record.status()),
        })
    }

    /// Executions matching `query`, oldest first, and whether more follow.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`] when `query.start_after` names an
    /// execution no longer held.
    pub fn executions(&self, query: &ExecutionQuery) -> Result<(Vec<ExecutionSnapshot>, bool)> {
        self.inner.executions.list(query)
    }

    /// The record of an execution the store holds, to wait for its end.
    pub(crate) fn execution_record(
        &self,
        execution_id: &str,
    ) -> Option<std::sync::Arc<crate::exec::ExecutionRecord>> {
        self.inner.executions.get(execution_id)
    }

    /// The `limit` most recent executions of a task, newest first (without logs).
    pub fn recent_executions(&self, task_id: &str, limit: usize) -> Vec<ExecutionSnapshot> {
        self.inner.executions.recent(task_id, limit)
    }
}
