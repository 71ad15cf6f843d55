//! The bounded store of execution records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::records::{ExecutionMode, ExecutionRecord, ExecutionSnapshot, ExecutionStatus};

/// Filters for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionQuery {
    /// Only this task's executions.
    pub task_id: Option<String>,
    /// Only executions with this status.
    pub status: Option<ExecutionStatus>,
    /// Only ids after this one (pagination).
    pub start_after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// The bounded store of execution records, in id order (ids are time-ordered).
#[derive(Debug)]
pub struct ExecutionStore {
    records: Mutex<BTreeMap<String, Arc<ExecutionRecord>>>,
    max_records: usize,
    ttl: Duration,
}

impl ExecutionStore {
    /// A store keeping at most `max_records`, finished ones for at most `ttl`.
    pub fn new(max_records: usize, ttl: Duration) -> Self {
        ExecutionStore {
            records: Mutex::default(),
            max_records: max_records.max(1),
            ttl,
        }
    }

    /// Creates the record for a new execution, or returns the existing one
    /// with that id (`false`: nothing was created).
    pub fn create(
        &self,
        id: Option<String>,
        task_id: &str,
        function: &str,
        mode: ExecutionMode,
    ) -> (Arc<ExecutionRecord>, bool) {
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let mut records = self.records();
        if let Some(existing) = records.get(&id) {
            return (Arc::clone(existing), false);
        }
        let record = Arc::new(ExecutionRecord::new(
            id.clone(),
            task_id.to_owned(),
            function.to_owned(),
            mode,
        ));
        records.insert(id, Arc::clone(&record));
        self.evict(&mut records);
        (record, true)
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ExecutionRecord>> {
        let mut records = self.records();
        let record = records.get(id)?;
        if record.created.elapsed() >= self.ttl && record.status().is_final() {
            records.remove(id);
            return None;
        }
        Some(Arc::clone(record))
    }

    /// Records matching `query`, in id order, and whether more follow.
    pub fn list(&self, query: &ExecutionQuery) -> (Vec<ExecutionSnapshot>, bool) {
        let mut records = self.records();
        self.evict(&mut records);
        let limit = query.limit.max(1);
        let start = match &query.start_after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut page = Vec::new();
        let mut has_more = false;
        for record in records
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
        {
            if query.task_id.as_ref().is_some_and(|t| *t != record.task_id) {
                continue;
            }
            let snapshot = record.snapshot();
            if query.status.is_some_and(|s| s != snapshot.status) {
                continue;
            }
            if page.len() == limit {
                has_more = true;
                break;
            }
            page.push(snapshot);
        }
        (page, has_more)
    }

    /// Removes a task's finished records; returns how many.
    pub fn remove_task(&self, task_id: &str) -> usize {
        let mut records = self.records();
        let before = records.len();
        records.retain(|_, r| r.task_id != task_id || !r.status().is_final());
        before - records.len()
    }

    /// All records not yet finished.
    pub fn unfinished(&self) -> Vec<Arc<ExecutionRecord>> {
        self.records()
            .values()
            .filter(|r| !r.status().is_final())
            .cloned()
            .collect()
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.records().len()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops finished records past their TTL, then the oldest finished ones
    /// beyond the count bound. Unfinished records are never dropped.
    ///
    /// Ids are time-ordered (UUIDv7), so the oldest records are at the
    /// front: the scan stops at the first record that must stay and is young,
    /// which keeps this O(evicted) on the hot path rather than O(records).
    fn evict(&self, records: &mut BTreeMap<String, Arc<ExecutionRecord>>) {
        let mut victims = Vec::new();
        let mut over = records.len().saturating_sub(self.max_records);
        for (id, r) in records.iter() {
            let expired = r.created.elapsed() >= self.ttl;
            if !expired && over == 0 {
                break;
            }
            if r.status().is_final() {
                victims.push(id.clone());
                over = over.saturating_sub(1);
            }
        }
        for id in victims {
            records.remove(&id);
        }
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<String, Arc<ExecutionRecord>>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn finished(store: &ExecutionStore, task: &str) -> Arc<ExecutionRecord> {
        let (r, _) = store.create(None, task, "f", ExecutionMode::Sync);
        r.start_attempt("i");
        r.finish(ExecutionStatus::Completed, Some(Value::Unit), None);
        r
    }

    #[test]
    fn status_moves_forward_only() {
        let store = ExecutionStore::new(10, Duration::from_secs(60));
        let (r, created) = store.create(Some("e1".into()), "t", "f", ExecutionMode::Async);
        assert!(created);
        assert_eq!(r.status(), ExecutionStatus::Pending);
        assert!(r.start_attempt("inst-1"));
        assert_eq!(r.status(), ExecutionStatus::Running);
        assert!(r.finish(ExecutionStatus::Cancelled, None, None));
        assert!(
            !r.finish(ExecutionStatus::Completed, None, None),
            "the first end wins"
        );
        assert!(!r.start_attempt("inst-2"));
        assert_eq!(r.snapshot().status, ExecutionStatus::Cancelled);
        let (again, created) = store.create(Some("e1".into()), "t", "f", ExecutionMode::Sync);
        assert!(!created && Arc::ptr_eq(&again, &r), "ids are idempotent");
    }

    #[test]
    fn evicts_by_count_oldest_finished_first() {
        let store = ExecutionStore::new(3, Duration::from_secs(60));
        let (running, _) = store.create(None, "t", "f", ExecutionMode::Async);
        let ids: Vec<String> = (0..4)
            .map(|_| finished(&store, "t").id().to_owned())
            .collect();
        assert_eq!(store.len(), 3);
        assert!(store.get(running.id()).is_some(), "unfinished records stay");
        assert!(store.get(&ids[0]).is_none() && store.get(&ids[1]).is_none());
        assert!(store.get(&ids[3]).is_some());
    }

    #[test]
    fn evicts_finished_records_past_their_ttl() {
        let store = ExecutionStore::new(100, Duration::ZERO);
        let done = finished(&store, "t");
        let (running, _) = store.create(None, "t", "f", ExecutionMode::Async);
        assert!(store.get(done.id()).is_none());
        assert!(store.get(running.id()).is_some());
    }

    #[test]
    fn lists_pages_with_filters() {
        let store = ExecutionStore::new(100, Duration::from_secs(60));
        for task in ["a", "b", "a", "a"] {
            finished(&store, task);
        }
        let q = ExecutionQuery {
            task_id: Some("a".into()),
            limit: 2,
            ..ExecutionQuery::default()
        };
        let (page, more) = store.list(&q);
        assert_eq!((page.len(), more), (2, true));
        let next = ExecutionQuery {
            start_after: Some(page[1].execution_id.clone()),
            ..q.clone()
        };
        let (rest, more) = store.list(&next);
        assert_eq!((rest.len(), more), (1, false));
        let failed = ExecutionQuery {
            status: Some(ExecutionStatus::Failed),
            limit: 10,
            ..ExecutionQuery::default()
        };
        assert!(store.list(&failed).0.is_empty());
    }
}
