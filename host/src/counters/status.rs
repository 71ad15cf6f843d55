//! Counts over the execution records of a store, kept as records change,
//! so that statistics never walk the records.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::execution::ExecutionStatus;

/// Counts over the records of one store, kept as records change so that
/// statistics never walk the records.
#[derive(Debug, Default)]
pub struct StatusCounts {
    held: [AtomicUsize; 6],
    /// Executions ended since start, by final status (index:
    /// [`ExecutionStatus::ALL`]): records need not be held to be counted.
    finished: [AtomicU64; 6],
    run_nanos: AtomicU64,
}

/// What `StatusCounts` say now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountsSnapshot {
    /// Records held, by status (index: [`ExecutionStatus::ALL`]).
    pub held: [usize; 6],
    /// Executions ended since start.
    pub ended: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Of those, by final status (index: [`ExecutionStatus::ALL`]).
    pub finished: [u64; 6],
    /// Their run time, summed.
    pub run_time: Duration,
}

impl CountsSnapshot {
    /// Records held with `status`.
    pub fn held(&self, status: ExecutionStatus) -> usize {
        self.held[status.index()]
    }

    /// Executions that ended with `status` since start.
    pub fn finished(&self, status: ExecutionStatus) -> u64 {
        self.finished[status.index()]
    }
}

impl StatusCounts {
    pub(crate) fn enter(&self, status: ExecutionStatus) {
        self.held[status.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self, status: ExecutionStatus) {
        self.held[status.index()].fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn moved(&self, from: ExecutionStatus, to: ExecutionStatus) {
        self.leave(from);
        self.enter(to);
    }

    pub(crate) fn ended(&self, status: ExecutionStatus, ran: Duration) {
        self.finished[status.index()].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX);
        self.run_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> CountsSnapshot {
        let mut held = [0; 6];
        for (h, a) in held.iter_mut().zip(&self.held) {
            *h = a.load(Ordering::Relaxed);
        }
        let mut finished = [0; 6];
        for (f, a) in finished.iter_mut().zip(&self.finished) {
            *f = a.load(Ordering::Relaxed);
        }
        CountsSnapshot {
            held,
            ended: finished.iter().sum(),
            completed: finished[ExecutionStatus::Completed.index()],
            finished,
            run_time: Duration::from_nanos(self.run_nanos.load(Ordering::Relaxed)),
        }
    }
}

impl std::ops::AddAssign for CountsSnapshot {
    fn add_assign(&mut self, other: CountsSnapshot) {
        for (total, held) in self.held.iter_mut().zip(other.held) {
            *total += held;
        }
        for (total, finished) in self.finished.iter_mut().zip(other.finished) {
            *total += finished;
        }
        self.ended += other.ended;
        self.completed += other.completed;
        self.run_time += other.run_time;
    }
}

/// Counts of the executions that never get a record (a completed SYNC
/// call whose caller chose no id, `exec/unlisted.rs`), one block per
/// thread: only its own thread writes a block, so a count is a plain load
/// and store, not a locked read-modify-write (five per call before).
/// Readers add the blocks up. Aligned to two cache lines: `ThreadLocal`
/// packs its entries side by side, and two threads' blocks on one line
/// would bounce it between their cores on every call.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ThreadCounts {
    running: AtomicUsize,
    completed: AtomicU64,
    run_nanos: AtomicU64,
}

impl ThreadCounts {
    /// One more running until the guard is dropped (a panic included).
    /// Only the block's own thread may call this, and drop the guard.
    #[inline]
    pub(crate) fn running(&self) -> RunningHere<'_> {
        bump_usize(&self.running, 1);
        RunningHere(self)
    }

    /// One completed after `ran`. Only the block's own thread may call this.
    #[inline]
    pub(crate) fn completed(&self, ran: Duration) {
        bump(&self.completed, 1);
        bump(
            &self.run_nanos,
            u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// Adds this block to `into`: the reader's side of a count kept per
    /// thread.
    pub(crate) fn add_to(&self, into: &mut CountsSnapshot) {
        let completed = self.completed.load(Ordering::Relaxed);
        let running = ExecutionStatus::Running.index();
        into.held[running] = into.held[running].wrapping_add(self.running.load(Ordering::Relaxed));
        into.finished[ExecutionStatus::Completed.index()] += completed;
        into.completed += completed;
        into.ended += completed;
        into.run_time += Duration::from_nanos(self.run_nanos.load(Ordering::Relaxed));
    }
}

/// One call counted as running in its thread's block, until dropped.
#[derive(Debug)]
pub(crate) struct RunningHere<'a>(&'a ThreadCounts);

impl Drop for RunningHere<'_> {
    #[inline]
    fn drop(&mut self) {
        let now = self.0.running.load(Ordering::Relaxed);
        self.0.running.store(now.wrapping_sub(1), Ordering::Relaxed);
    }
}

/// Adds to a counter only its own thread writes.
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    let now = counter.load(Ordering::Relaxed);
    counter.store(now.wrapping_add(by), Ordering::Relaxed);
}

/// As [`bump`], for a count of things.
#[inline]
fn bump_usize(counter: &AtomicUsize, by: usize) {
    let now = counter.load(Ordering::Relaxed);
    counter.store(now.wrapping_add(by), Ordering::Relaxed);
}
