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

mod caller;

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
mod tests;
