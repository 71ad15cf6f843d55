//! The bounded store of execution records.
//!
//! Every execution gets a record, so creating one must not serialise the
//! host: records are spread over shards by id, each with its own lock and
//! its own counters, and each shard keeps its records in creation order (a
//! queue, not the ids: client-chosen ids need not sort by age). Eviction
//! drops the oldest finished records of the shard being written to, and
//! finished ones past their time to live; unfinished records are never
//! dropped (one found at the front of the queue moves to its back).
//!
//! With `max_records` split over the shards, the store keeps about the most
//! recent `max_records`: exactly for small bounds (one shard), within a
//! shard's share of it for large ones.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use thread_local::ThreadLocal;

use super::fingerprint::Fingerprint;
use super::ids;
use super::records::{ExecutionRecord, RecordCounts};
use super::{ExecutionMode, ExecutionSnapshot, ExecutionStatus};
use crate::counters::{CountsSnapshot, StatusCounts, ThreadCounts};
use crate::error::{Error, Result};

/// Filters for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionQuery {
    /// Only this task's executions.
    pub task_id: Option<String>,
    /// Only executions with this status.
    pub status: Option<ExecutionStatus>,
    /// Only executions created after this one (pagination).
    pub start_after: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// Include each execution's log lines.
    pub logs: bool,
}

/// Records per shard below which one shard is used (so small bounds are exact).
const RECORDS_PER_SHARD: usize = 256;
const MAX_SHARDS: usize = 16;

/// The bounded store of execution records.
#[derive(Debug)]
pub struct ExecutionStore {
    shards: Box<[Mutex<Shard>]>,
    /// Per shard, so that executions on different shards never share a
    /// counter's cache line.
    counts: Box<[Arc<RecordCounts>]>,
    /// The counts of the calls that never get a record, per thread
    /// (`unlisted.rs`).
    unlisted: ThreadLocal<ThreadCounts>,
    hasher: RandomState,
    seq: AtomicU64,
    per_shard: usize,
    ttl: Duration,
    /// Whether a SYNC execution whose caller chose no id is kept once it
    /// completes (`executions.keep_completed_sync`).
    keep_completed_sync: bool,
}

thread_local! {
    /// Which shard's counters this thread's unlisted records count in:
    /// threads spread over them, so they do not share a cache line.
    static COUNTS_SLOT: usize = NEXT_COUNTS_SLOT.fetch_add(1, Ordering::Relaxed);
}

static NEXT_COUNTS_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Debug, Default)]
struct Shard {
    /// By id: each record carries its id's hash, so removing one compares
    /// pointers, never reading an old record's id.
    by_id: HashTable<Arc<ExecutionRecord>>,
    /// Oldest first; may still hold records removed from `by_id`.
    by_age: VecDeque<Arc<ExecutionRecord>>,
}

impl Shard {
    fn find(&self, hash: u64, id: &str) -> Option<&Arc<ExecutionRecord>> {
        self.by_id.find(hash, |r| r.id() == id)
    }

    fn remove(&mut self, record: &Arc<ExecutionRecord>) -> bool {
        match self
            .by_id
            .find_entry(record.hash(), |r| Arc::ptr_eq(r, record))
        {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }
}

impl ExecutionStore {
    /// A store keeping about `max_records`, finished ones for at most `ttl`.
    pub fn new(max_records: usize, ttl: Duration) -> Self {
        let max_records = max_records.max(1);
        let shards = (max_records / RECORDS_PER_SHARD).clamp(1, MAX_SHARDS);
        ExecutionStore {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            counts: (0..shards).map(|_| Arc::default()).collect(),
            unlisted: ThreadLocal::new(),
            hasher: RandomState::default(),
            seq: AtomicU64::new(0),
            per_shard: max_records.div_ceil(shards),
            ttl,
            keep_completed_sync: true,
        }
    }

    /// The same store, keeping completed SYNC executions whose caller
    /// chose no id only if `keep` (see `unlisted.rs`).
    pub fn keeping_completed_sync(mut self, keep: bool) -> Self {
        self.keep_completed_sync = keep;
        self
    }

    /// Whether a SYNC call whose caller chose no id gets a record that is
    /// kept only if the call fails or logs.
    pub fn lists_only_notable_sync(&self) -> bool {
        !self.keep_completed_sync
    }

    /// The same store, its records keeping results within `budget` (see
    /// `budget.rs`); without, they keep every result.
    pub fn with_results(mut self, budget: super::ResultBudget) -> Self {
        let budget = Arc::new(budget);
        self.counts = (0..self.shards.len())
            .map(|_| {
                Arc::new(RecordCounts {
                    status: StatusCounts::default(),
                    results: Arc::clone(&budget),
                })
            })
            .collect();
        self
    }

    /// The result bytes the records keep, counted against the total.
    pub fn result_bytes(&self) -> usize {
        self.counts[0].results.used()
    }

    /// Creates the record for a new execution whose parameters are not
    /// known, or returns the existing one with that id (`false`: nothing
    /// was created), whatever it ran. Calls use [`ExecutionStore::claim`].
    pub fn create(
        &self,
        id: Option<&str>,
        task_id: &Arc<str>,
        function: &Arc<str>,
        mode: ExecutionMode,
    ) -> (Arc<ExecutionRecord>, bool) {
        self.insert(id, Fingerprint::UNKNOWN, task_id, function, mode)
    }

    /// Brings back an ASYNC execution recorded before a restart, with what
    /// a reuse of its id must match; or returns the record held with that
    /// id (`false`: nothing was created).
    pub fn restore(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        task_id: &Arc<str>,
        function: &Arc<str>,
    ) -> (Arc<ExecutionRecord>, bool) {
        self.insert(
            Some(id),
            fingerprint,
            task_id,
            function,
            ExecutionMode::Async,
        )
    }

    /// Creates the record for a call, or — when the caller chose an id
    /// already held — returns that execution if it is the same call again
    /// (same task, function and parameters: a retry), `false` for "nothing
    /// was created".
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionIdInUse`] when the id names an execution of
    /// another task, function or parameters.
    pub fn claim(
        &self,
        id: Option<&str>,
        params: &[(String, crate::Value)],
        task_id: &Arc<str>,
        function: &Arc<str>,
        mode: ExecutionMode,
    ) -> Result<(Arc<ExecutionRecord>, bool)> {
        let Some(id) = id else {
            return Ok(self.insert(None, Fingerprint::UNKNOWN, task_id, function, mode));
        };
        let fingerprint = Fingerprint::of(params);
        let (record, fresh) = self.insert(Some(id), fingerprint, task_id, function, mode);
        if !fresh {
            let conflict = if record.task_id() != &**task_id {
                Some("task")
            } else if record.function() != &**function {
                Some("function")
            } else if !record.fingerprint.matches(fingerprint) {
                Some("parameters")
            } else {
                None
            };
            if let Some(conflict) = conflict {
                return Err(Error::ExecutionIdInUse {
                    execution_id: id.to_owned(),
                    task_id: record.task_id().to_owned(),
                    function: record.function().to_owned(),
                    conflict,
                });
            }
        }
        Ok((record, fresh))
    }

    fn insert(
        &self,
        id: Option<&str>,
        fingerprint: Fingerprint,
        task_id: &Arc<str>,
        function: &Arc<str>,
        mode: ExecutionMode,
    ) -> (Arc<ExecutionRecord>, bool) {
        let now = Instant::now();
        let returned_only =
            id.is_none() && mode == ExecutionMode::Sync && !self.keep_completed_sync;
        let id = match id {
            Some(id) => ids::ExecutionId::from(id),
            None => ids::next(now),
        };
        let hash = self.hasher.hash_one(id.as_str());
        let index = self.shard_of(hash);
        let mut shard = lock(&self.shards[index]);
        if let Some(existing) = shard.find(hash, &id) {
            return (Arc::clone(existing), false);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let counts = &self.counts[index];
        let mut record = ExecutionRecord::new(
            id,
            hash,
            seq,
            Arc::clone(task_id),
            Arc::clone(function),
            mode,
            now,
            Arc::clone(counts),
            fingerprint,
        );
        record.returned_only = returned_only;
        let record = Arc::new(record);
        counts.status.enter(ExecutionStatus::Pending);
        shard
            .by_id
            .insert_unique(hash, Arc::clone(&record), |r| r.hash());
        shard.by_age.push_back(Arc::clone(&record));
        self.evict(&mut shard, &counts.status, now);
        (record, true)
    }

    /// The counts this thread's unlisted calls count in while they have
    /// no record.
    #[inline]
    pub(super) fn thread_counts(&self) -> &ThreadCounts {
        self.unlisted.get_or_default()
    }

    /// The shard counts this thread's unlisted records count in.
    fn thread_record_counts(&self) -> &Arc<RecordCounts> {
        &self.counts[COUNTS_SLOT.with(|slot| *slot) % self.counts.len()]
    }

    /// The record an unlisted call (`unlisted.rs`) becomes when it fails or
    /// logs: made after the fact, outside any table until
    /// [`ExecutionStore::settle_unlisted`] adopts it.
    pub(super) fn unlisted_record(
        &self,
        id: super::ExecutionId,
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
    pub(super) fn settle_unlisted(&self, record: Arc<ExecutionRecord>) -> ExecutionSnapshot {
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

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ExecutionRecord>> {
        let hash = self.hasher.hash_one(id);
        let index = self.shard_of(hash);
        let mut shard = lock(&self.shards[index]);
        let record = shard.find(hash, id)?;
        if record.created.elapsed() >= self.ttl && record.status().is_final() {
            let record = Arc::clone(record);
            remove(&mut shard, &self.counts[index].status, &record);
            return None;
        }
        Some(Arc::clone(record))
    }

    /// Records matching `query`, oldest first, and whether more follow.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`] when `start_after` names no record held.
    pub fn list(&self, query: &ExecutionQuery) -> Result<(Vec<ExecutionSnapshot>, bool)> {
        let after = match &query.start_after {
            Some(id) => Some(
                self.get(id)
                    .ok_or_else(|| Error::ExecutionNotFound {
                        execution_id: id.clone(),
                    })?
                    .seq(),
            ),
            None => None,
        };
        let mut matching = self.matching(|r| {
            after.is_none_or(|a| r.seq() > a)
                && query.task_id.as_deref().is_none_or(|t| t == r.task_id())
        });
        matching.sort_unstable_by_key(|r| r.seq());
        let limit = query.limit.max(1);
        let mut page = Vec::new();
        let mut has_more = false;
        for record in matching {
            let snapshot = record.snapshot_with(query.logs);
            if query.status.is_some_and(|s| s != snapshot.status) {
                continue;
            }
            if page.len() == limit {
                has_more = true;
                break;
            }
            page.push(snapshot);
        }
        Ok((page, has_more))
    }

    /// The `limit` most recent records of a task, newest first.
    pub fn recent(&self, task_id: &str, limit: usize) -> Vec<ExecutionSnapshot> {
        let mut matching = self.matching(|r| r.task_id() == task_id);
        matching.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq()));
        matching
            .iter()
            .take(limit)
            .map(|r| r.snapshot_with(false))
            .collect()
    }

    /// Removes a task's finished records; returns how many.
    pub fn remove_task(&self, task_id: &str) -> usize {
        let mut removed = 0;
        for (shard, counts) in self.shards.iter().zip(self.counts.iter()) {
            let mut shard = lock(shard);
            let victims: Vec<_> = shard
                .by_id
                .iter()
                .filter(|r| r.task_id() == task_id && r.status().is_final())
                .cloned()
                .collect();
            removed += victims.len();
            for r in victims {
                remove(&mut shard, &counts.status, &r);
            }
            shard.by_age.retain(|r| !r.removed.load(Ordering::Relaxed));
        }
        removed
    }

    /// Records not yet finished, of one task or of all.
    pub fn unfinished(&self, task_id: Option<&str>) -> Vec<Arc<ExecutionRecord>> {
        self.matching(|r| task_id.is_none_or(|t| t == r.task_id()) && !r.status().is_final())
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).by_id.len()).sum()
    }

    /// The most records it keeps: `max_records`, rounded up to whole
    /// shards. The state database keeps as many ASYNC ones.
    pub fn max_records(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts by status and totals since start, without walking the records.
    pub fn counts(&self) -> CountsSnapshot {
        let mut sum = CountsSnapshot::default();
        for c in self.counts.iter() {
            sum += c.status.snapshot();
        }
        for c in self.unlisted.iter() {
            c.add_to(&mut sum);
        }
        sum
    }

    fn matching(&self, keep: impl Fn(&ExecutionRecord) -> bool) -> Vec<Arc<ExecutionRecord>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(lock(shard).by_id.iter().filter(|r| keep(r)).cloned());
        }
        out
    }

    /// Drops finished records past their TTL, then the oldest finished ones
    /// beyond the shard's bound. The scan stops at the first record that is
    /// young and need not go, so it costs O(evicted + unfinished ahead of it).
    fn evict(&self, shard: &mut Shard, counts: &StatusCounts, now: Instant) {
        let mut over = shard.by_id.len().saturating_sub(self.per_shard);
        // Each record is looked at once at most: unfinished ones go round.
        let mut budget = shard.by_age.len();
        while budget > 0 {
            budget -= 1;
            let Some(front) = shard.by_age.front() else {
                break;
            };
            if front.removed.load(Ordering::Relaxed) {
                shard.by_age.pop_front();
                continue;
            }
            let expired = now.saturating_duration_since(front.created) >= self.ttl;
            if !expired && over == 0 {
                break;
            }
            let front = shard.by_age.pop_front().expect("looked at above");
            if front.status().is_final() {
                shard.remove(&front);
                front.removed.store(true, Ordering::Relaxed);
                counts.leave(front.status());
                over = over.saturating_sub(1);
            } else {
                shard.by_age.push_back(front);
            }
        }
    }

    fn shard_of(&self, hash: u64) -> usize {
        // The table uses the hash's low bits; shards take its high ones.
        usize::try_from((hash >> 32) % self.shards.len() as u64)
            .expect("fewer shards than usize::MAX")
    }
}

/// Removes a finished record (its place in the age queue goes lazily).
fn remove(shard: &mut Shard, counts: &StatusCounts, record: &Arc<ExecutionRecord>) {
    if shard.remove(record) {
        record.removed.store(true, Ordering::Relaxed);
        // Only finished records are removed, and their status is fixed.
        counts.leave(record.status());
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn names() -> (Arc<str>, Arc<str>) {
        (Arc::from("t"), Arc::from("f"))
    }

    fn finished(store: &ExecutionStore, id: Option<&str>, task: &str) -> Arc<ExecutionRecord> {
        let (r, _) = store.create(id, &Arc::from(task), &Arc::from("f"), ExecutionMode::Sync);
        r.start_attempt(&Arc::from("i"));
        r.finish(ExecutionStatus::Completed, Some(Value::Unit), None);
        r
    }

    #[test]
    fn status_moves_forward_only() {
        let store = ExecutionStore::new(10, Duration::from_secs(60));
        let (t, f) = names();
        let (r, created) = store.create(Some("e1"), &t, &f, ExecutionMode::Async);
        assert!(created);
        assert_eq!(r.status(), ExecutionStatus::Pending);
        assert!(r.start_attempt(&Arc::from("inst-1")).is_some());
        assert_eq!(r.status(), ExecutionStatus::Running);
        assert!(r.finish(ExecutionStatus::Cancelled, None, None));
        assert!(
            !r.finish(ExecutionStatus::Completed, None, None),
            "the first end wins"
        );
        assert!(r.start_attempt(&Arc::from("inst-2")).is_none());
        assert_eq!(r.snapshot().status, ExecutionStatus::Cancelled);
        let (again, created) = store.create(Some("e1"), &t, &f, ExecutionMode::Sync);
        assert!(!created && Arc::ptr_eq(&again, &r), "ids are idempotent");
    }

    /// Issue #25: whether a cancellation is a plain request or a reason of
    /// the host's is said by its type, whatever the reason's code.
    #[test]
    fn a_host_reason_is_kept_whatever_its_code_and_a_plain_request_is_not() {
        use crate::exec::{CancelOutcome, CancelReason, ExecutionError};
        let store = ExecutionStore::new(10, Duration::from_secs(60));
        let (t, f) = names();
        let plugins_account = ExecutionError::new("stopped", "the plugin's own account");

        let (plain, _) = store.create(None, &t, &f, ExecutionMode::Async);
        plain.start_attempt(&Arc::from("i"));
        let outcome = plain.cancel(false, CancelReason::Requested);
        assert_eq!(outcome, CancelOutcome::Requested);
        assert_eq!(
            plain.cancelled_error(plugins_account.clone()),
            plugins_account,
            "a plain request keeps the plugin's account"
        );

        let (hosts, _) = store.create(None, &t, &f, ExecutionMode::Async);
        hosts.start_attempt(&Arc::from("i"));
        let reason = ExecutionError::cancelled("the host's reason, with the code `cancelled`");
        let outcome = hosts.cancel(false, CancelReason::Host(reason.clone()));
        assert_eq!(outcome, CancelOutcome::Requested);
        assert_eq!(hosts.cancelled_error(plugins_account), reason);

        let (pending, _) = store.create(None, &t, &f, ExecutionMode::Async);
        let outcome = pending.cancel(false, CancelReason::Requested);
        assert_eq!(outcome, CancelOutcome::Cancelled);
        let error = pending.snapshot().error.expect("ended with an error");
        assert_eq!(error.code, ExecutionError::CANCELLED);
    }

    #[test]
    fn evicts_by_count_oldest_finished_first() {
        let store = ExecutionStore::new(3, Duration::from_secs(60));
        let (t, f) = names();
        let (running, _) = store.create(None, &t, &f, ExecutionMode::Async);
        let ids: Vec<String> = (0..4)
            .map(|_| finished(&store, None, "t").id().to_owned())
            .collect();
        assert_eq!(store.len(), 3);
        assert!(store.get(running.id()).is_some(), "unfinished records stay");
        assert!(store.get(&ids[0]).is_none() && store.get(&ids[1]).is_none());
        assert!(store.get(&ids[3]).is_some());
    }

    #[test]
    fn evicts_by_age_whatever_the_ids() {
        // Client-chosen ids that sort before (and after) generated ones.
        let store = ExecutionStore::new(3, Duration::from_secs(60));
        let first = finished(&store, Some("zzz-oldest"), "t");
        let second = finished(&store, Some("000-second"), "t");
        let third = finished(&store, None, "t");
        let newest = finished(&store, Some("aaa-newest"), "t");
        assert!(store.get(first.id()).is_none(), "the oldest goes first");
        for kept in [&second, &third, &newest] {
            assert!(store.get(kept.id()).is_some(), "{} was evicted", kept.id());
        }
        let listed: Vec<_> = store
            .list(&ExecutionQuery {
                limit: 10,
                ..ExecutionQuery::default()
            })
            .unwrap()
            .0
            .into_iter()
            .map(|s| s.execution_id.to_string())
            .collect();
        assert_eq!(listed, ["000-second", third.id(), "aaa-newest"]);
    }

    #[test]
    fn unlisted_records_are_kept_only_when_they_fail_or_log() {
        let store = ExecutionStore::new(100, Duration::from_secs(60)).keeping_completed_sync(false);
        let (t, f) = names();
        let run = |status: ExecutionStatus, log: bool| {
            let id = super::super::ids::next(Instant::now());
            let r = store.unlisted_record(id, &t, &f, Instant::now());
            assert_eq!(store.counts().held(ExecutionStatus::Pending), 1);
            r.start_attempt(&Arc::from("i"));
            if log {
                r.log("INFO hello".to_owned());
            }
            let output = (status == ExecutionStatus::Completed).then(|| Value::Bytes(vec![7; 64]));
            r.finish(status, output, None);
            let id = r.id().to_owned();
            (store.settle_unlisted(r), id)
        };
        let (first, first_id) = run(ExecutionStatus::Completed, false);
        assert_eq!(
            first.output,
            Some(Value::Bytes(vec![7; 64])),
            "moved to the caller"
        );
        assert_eq!(&*first.execution_id, first_id);
        assert!(
            store.get(&first_id).is_none(),
            "a completed one is not kept"
        );
        let (failed, failed_id) = run(ExecutionStatus::Failed, false);
        assert_eq!(failed.status, ExecutionStatus::Failed);
        let kept = store.get(&failed_id).expect("a failed one is kept");
        assert_eq!(kept.status(), ExecutionStatus::Failed);
        let (logged, logged_id) = run(ExecutionStatus::Completed, true);
        assert_eq!(logged.logs, ["INFO hello"]);
        assert!(store.get(&logged_id).is_some(), "one that logged is kept");
        let c = store.counts();
        assert_eq!((c.ended, c.completed), (3, 2));
        assert_eq!(c.held(ExecutionStatus::Completed), 1);
        assert_eq!(c.held(ExecutionStatus::Failed), 1);
        assert_eq!(
            c.held(ExecutionStatus::Pending) + c.held(ExecutionStatus::Running),
            0
        );
    }

    #[test]
    fn evicts_finished_records_past_their_ttl() {
        let store = ExecutionStore::new(100, Duration::ZERO);
        let done = finished(&store, None, "t");
        let (t, f) = names();
        let (running, _) = store.create(None, &t, &f, ExecutionMode::Async);
        assert!(store.get(done.id()).is_none());
        assert!(store.get(running.id()).is_some());
    }

    #[test]
    fn counts_follow_the_records() {
        let store = ExecutionStore::new(2, Duration::from_secs(60));
        let (t, f) = names();
        let (pending, _) = store.create(None, &t, &f, ExecutionMode::Async);
        for _ in 0..3 {
            finished(&store, None, "t");
        }
        let c = store.counts();
        assert_eq!(c.held(ExecutionStatus::Pending), 1);
        assert_eq!(c.held(ExecutionStatus::Completed), 1, "two were evicted");
        assert_eq!((c.ended, c.completed), (3, 3));
        pending.start_attempt(&Arc::from("i"));
        assert_eq!(store.counts().held(ExecutionStatus::Running), 1);
        assert_eq!(store.counts().held(ExecutionStatus::Pending), 0);
    }

    #[test]
    fn lists_pages_with_filters() {
        let store = ExecutionStore::new(100, Duration::from_secs(60));
        for task in ["a", "b", "a", "a"] {
            finished(&store, None, task);
        }
        let q = ExecutionQuery {
            task_id: Some("a".into()),
            limit: 2,
            ..ExecutionQuery::default()
        };
        let (page, more) = store.list(&q).unwrap();
        assert_eq!((page.len(), more), (2, true));
        let next = ExecutionQuery {
            start_after: Some(page[1].execution_id.to_string()),
            ..q.clone()
        };
        let (rest, more) = store.list(&next).unwrap();
        assert_eq!((rest.len(), more), (1, false));
        let failed = ExecutionQuery {
            status: Some(ExecutionStatus::Failed),
            limit: 10,
            ..ExecutionQuery::default()
        };
        assert!(store.list(&failed).unwrap().0.is_empty());
        let gone = ExecutionQuery {
            start_after: Some("no-such-id".into()),
            ..q
        };
        assert!(matches!(
            store.list(&gone),
            Err(Error::ExecutionNotFound { .. })
        ));
    }

    #[test]
    fn large_bounds_use_shards_and_keep_about_the_bound() {
        let store = ExecutionStore::new(4096, Duration::from_secs(60));
        assert_eq!(store.shards.len(), MAX_SHARDS);
        for _ in 0..10_000 {
            finished(&store, None, "t");
        }
        let held = store.len();
        assert!((4096 - MAX_SHARDS * 64..=4096).contains(&held), "{held}");
    }
}
