//! Records whose caller already has everything they say: SYNC calls with
//! no caller-chosen id. An unlisted call (`exec/unlisted.rs`) gets a record
//! only after the fact, if it failed or logged; a listed one on the
//! general path leaves the table once its caller has the result. Counted
//! per thread while they have no record.

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::super::fingerprint::Fingerprint;
use super::super::records::{ExecutionRecord, RecordCounts};
use super::super::{ExecutionMode, ExecutionSnapshot, ExecutionStatus};
use super::{lock, remove, ExecutionStore};
use crate::counters::ThreadCounts;

thread_local! {
    /// Which shard's counters this thread's unlisted records count in:
    /// threads spread over them, so they do not share a cache line.
    static COUNTS_SLOT: usize = NEXT_COUNTS_SLOT.fetch_add(1, Ordering::Relaxed);
}

static NEXT_COUNTS_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl ExecutionStore {
    /// The counts this thread's unlisted calls count in while they have
    /// no record.
    #[inline]
    pub(in crate::exec) fn thread_counts(&self) -> &ThreadCounts {
        self.unlisted.get_or_default()
    }

    /// The shard counts this thread's unlisted records count in.
    fn thread_record_counts(&self) -> &Arc<RecordCounts> {
        &self.counts[COUNTS_SLOT.with(|slot| *slot) % self.counts.len()]
    }

    /// The record an unlisted call (`unlisted.rs`) becomes when it fails or
    /// logs: made after the fact, outside any table until
    /// [`ExecutionStore::settle_unlisted`] adopts it.
    pub(in crate::exec) fn unlisted_record(
        &self,
        id: super::super::ExecutionId,
        task_id: &Arc<str>,
        function: &Arc<str>,
        created: Instant,
    ) -> Arc<ExecutionRecord> {
        let counts = self.thread_record_counts();
        counts.status.enter(ExecutionStatus::Pending);
        let mut record = ExecutionRecord::new(
            id,
            0,
            0,
            Arc::clone(task_id),
            Arc::clone(function),
            ExecutionMode::Sync,
            created,
            Arc::clone(counts),
            Fingerprint::UNKNOWN,
        );
        record.returned_only = true;
        Arc::new(record)
    }

    /// Ends an unlisted record's life: kept like any other when it failed
    /// or logged, else left to its caller. Returns the caller's snapshot.
    pub(in crate::exec) fn settle_unlisted(
        &self,
        record: Arc<ExecutionRecord>,
    ) -> ExecutionSnapshot {
        if record.worth_keeping() {
            self.adopt(&record);
            return record.snapshot_for_caller();
        }
        let snapshot = record.snapshot_taking_output();
        record.counts().leave(snapshot.status);
        snapshot
    }

    /// The caller's snapshot of a SYNC execution that ran on the general
    /// path: a record its store drops on completion leaves the table now
    /// unless it failed or logged, its output moved to the caller.
    pub(crate) fn release_to_caller(&self, record: &Arc<ExecutionRecord>) -> ExecutionSnapshot {
        if !record.returned_only || !record.status().is_final() || record.worth_keeping() {
            return record.snapshot_for_caller();
        }
        let index = self.shard_of(record.hash());
        let mut shard = lock(&self.shards[index]);
        remove(&mut shard, &self.counts[index].status, record);
        drop(shard);
        record.snapshot_taking_output()
    }

    /// Puts an unlisted record in the table, with a place in its order.
    fn adopt(&self, record: &Arc<ExecutionRecord>) {
        let hash = self.hasher.hash_one(record.id());
        let index = self.shard_of(hash);
        let mut shard = lock(&self.shards[index]);
        // Its status is final: it leaves the counts it was made with, and
        // enters the shard's only if it enters the table.
        let status = record.status();
        record.counts().leave(status);
        if shard.find(hash, record.id()).is_some() {
            return;
        }
        record.place(hash, self.seq.fetch_add(1, Ordering::Relaxed));
        let counts = &self.counts[index];
        counts.status.enter(status);
        shard
            .by_id
            .insert_unique(hash, Arc::clone(record), |r| r.hash());
        shard.by_age.push_back(Arc::clone(record));
        self.evict(&mut shard, &counts.status, Instant::now());
    }
}
