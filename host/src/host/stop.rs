//! Stopping a host: refusing new calls, waiting for the ones in flight,
//! cancelling ASYNC work that outlives the grace period.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Host, Inner};
use crate::error::{Error, Result};
use crate::exec::{CancelOutcome, CancelReason, ExecutionError, ExecutionMode};

impl Host {
    /// Counts a call being served, or refuses it while the host stops.
    pub(super) fn serving(&self) -> Result<Serving<'_>> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(Error::HostStopping);
        }
        self.inner.serving.fetch_add(1, Ordering::SeqCst);
        Ok(Serving(&self.inner))
    }

    /// Begins to stop: from now on new calls are refused with
    /// [`Error::HostStopping`]; calls in flight carry on.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    /// Whether [`Host::begin_shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Waits until no call is being served and no ASYNC execution is
    /// running.
    pub async fn drained(&self) {
        // Before looking at the counts: the last call's end looks at this
        // after leaving them, so one of the two sees the other (all
        // sequentially consistent).
        self.inner.idle_watched.store(true, Ordering::SeqCst);
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inner.serving.load(Ordering::SeqCst) == 0
                && self.inner.pending_async.load(Ordering::SeqCst) == 0
            {
                return;
            }
            idle.await;
        }
    }

    /// Asks every ASYNC execution not yet ended to stop, with `code`: with
    /// `force`, each ends CANCELLED at once (a plugin that ignores its flag
    /// is abandoned); without, pending ones end and running ones are asked.
    /// Returns how many were ended or asked.
    pub fn cancel_async(&self, force: bool, code: &str, message: &str) -> usize {
        self.inner
            .executions
            .unfinished(None)
            .iter()
            .filter(|r| r.mode() == ExecutionMode::Async)
            .filter(|r| {
                !matches!(
                    r.cancel(
                        force,
                        CancelReason::Host(ExecutionError::new(code, message))
                    ),
                    CancelOutcome::AlreadyEnded(_)
                )
            })
            .count()
    }
}

/// One of the limited places for ASYNC executions accepted and not yet
/// ended; given back when dropped, however the execution's task ends.
#[derive(Debug)]
pub(super) struct PendingSlot(Arc<Inner>);

impl PendingSlot {
    pub(super) fn claim(inner: &Arc<Inner>, limit: usize) -> Option<PendingSlot> {
        inner
            .pending_async
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingSlot(Arc::clone(inner)))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if self.0.pending_async.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.idle_watched.load(Ordering::SeqCst)
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// One SYNC or STREAM call being served, until dropped.
pub(super) struct Serving<'a>(&'a Inner);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if self.0.serving.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.idle_watched.load(Ordering::SeqCst)
        {
            self.0.idle.notify_waiters();
        }
    }
}
