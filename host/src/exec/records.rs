//! Execution records: what happened to every call, kept for status queries
//! and listings, bounded in count and age.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::Value;

/// How an execution is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionMode {
    /// The caller waits for the result.
    Sync,
    /// The caller gets an execution id at once and asks for the status later.
    Async,
    /// The caller receives the chunks the function emits.
    Stream,
}

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    /// Accepted, not started.
    Pending,
    /// Running on an instance.
    Running,
    /// Finished with a result.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Stopped at its deadline.
    Timeout,
}

impl ExecutionStatus {
    /// Whether the execution has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionStatus::Pending | ExecutionStatus::Running)
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Timeout => "timeout",
        })
    }
}

/// An error an execution ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionError {
    /// Machine-readable code (the plugin's, or spearlet's error kind).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// A point-in-time copy of an execution record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionSnapshot {
    /// The execution's id.
    pub execution_id: String,
    /// The task it ran on.
    pub task_id: String,
    /// The function called.
    pub function: String,
    /// How it was run.
    pub mode: ExecutionMode,
    /// Its status.
    pub status: ExecutionStatus,
    /// The function's output, once completed.
    pub output: Option<Value>,
    /// The error, once failed, cancelled or timed out.
    pub error: Option<ExecutionError>,
    /// When it was accepted.
    pub created_at: SystemTime,
    /// When the function started running (first attempt).
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub completed_at: Option<SystemTime>,
    /// Time from start to end (so far, while running).
    pub execution_time: Duration,
    /// The instance of the last attempt.
    pub instance_id: String,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// The plugin's log lines (`LEVEL message`), oldest first.
    pub logs: Vec<String>,
}

/// One execution, shared by whoever runs it and whoever asks about it.
#[derive(Debug)]
pub struct ExecutionRecord {
    id: String,
    task_id: String,
    function: String,
    mode: ExecutionMode,
    cancel: Arc<AtomicBool>,
    created: Instant,
    state: Mutex<State>,
    status_tx: watch::Sender<ExecutionStatus>,
}

#[derive(Debug)]
struct State {
    status: ExecutionStatus,
    output: Option<Value>,
    error: Option<ExecutionError>,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    started: Option<Instant>,
    completed_at: Option<SystemTime>,
    elapsed: Option<Duration>,
    instance_id: String,
    attempts: u32,
    logs: Vec<String>,
    dropped_logs: usize,
}

/// Log lines kept per execution; later ones are counted, not stored.
const MAX_LOG_LINES: usize = 1000;

impl ExecutionRecord {
    fn new(id: String, task_id: String, function: String, mode: ExecutionMode) -> Self {
        ExecutionRecord {
            id,
            task_id,
            function,
            mode,
            cancel: Arc::new(AtomicBool::new(false)),
            created: Instant::now(),
            state: Mutex::new(State {
                status: ExecutionStatus::Pending,
                output: None,
                error: None,
                created_at: SystemTime::now(),
                started_at: None,
                started: None,
                completed_at: None,
                elapsed: None,
                instance_id: String::new(),
                attempts: 0,
                logs: Vec::new(),
                dropped_logs: 0,
            }),
            status_tx: watch::channel(ExecutionStatus::Pending).0,
        }
    }

    /// The execution's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task it runs on.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The cancellation flag handed to the plugin.
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }

    /// Raises the cancellation flag.
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// The current status.
    pub fn status(&self) -> ExecutionStatus {
        self.state().status
    }

    /// Waits until the status is final.
    pub async fn finished(&self) -> ExecutionStatus {
        let mut rx = self.status_tx.subscribe();
        let status = *rx
            .wait_for(|s| s.is_final())
            .await
            .expect("the record owns the sender");
        status
    }

    /// Marks an attempt starting on `instance_id`; false if the execution
    /// already ended (e.g. cancelled while pending).
    pub(crate) fn start_attempt(&self, instance_id: &str) -> bool {
        let mut state = self.state();
        if state.status.is_final() {
            return false;
        }
        if state.started.is_none() {
            state.started = Some(Instant::now());
            state.started_at = Some(SystemTime::now());
        }
        state.status = ExecutionStatus::Running;
        state.attempts += 1;
        instance_id.clone_into(&mut state.instance_id);
        drop(state);
        self.status_tx.send_replace(ExecutionStatus::Running);
        true
    }

    /// Ends the execution, unless it already ended; returns whether this call ended it.
    pub(crate) fn finish(
        &self,
        status: ExecutionStatus,
        output: Option<Value>,
        error: Option<ExecutionError>,
    ) -> bool {
        debug_assert!(status.is_final());
        let mut state = self.state();
        if state.status.is_final() {
            return false;
        }
        state.status = status;
        state.output = output;
        state.error = error;
        state.completed_at = Some(SystemTime::now());
        state.elapsed = Some(state.started.map_or(Duration::ZERO, |s| s.elapsed()));
        drop(state);
        self.status_tx.send_replace(status);
        true
    }

    /// Appends a plugin log line.
    pub(crate) fn log(&self, line: String) {
        let mut state = self.state();
        if state.logs.len() < MAX_LOG_LINES {
            state.logs.push(line);
        } else {
            state.dropped_logs += 1;
        }
    }

    /// A copy of the record as it is now.
    pub fn snapshot(&self) -> ExecutionSnapshot {
        let state = self.state();
        let mut logs = state.logs.clone();
        if state.dropped_logs > 0 {
            logs.push(format!("({} more lines dropped)", state.dropped_logs));
        }
        ExecutionSnapshot {
            execution_id: self.id.clone(),
            task_id: self.task_id.clone(),
            function: self.function.clone(),
            mode: self.mode,
            status: state.status,
            output: state.output.clone(),
            error: state.error.clone(),
            created_at: state.created_at,
            started_at: state.started_at,
            completed_at: state.completed_at,
            execution_time: state
                .elapsed
                .or_else(|| state.started.map(|s| s.elapsed()))
                .unwrap_or(Duration::ZERO),
            instance_id: state.instance_id.clone(),
            attempts: state.attempts,
            logs,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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
