//! What the node API knows of the executions it started, beyond the host's
//! records: the caller's invocation id, the input's content type, the
//! phase before the host's record exists (an ASYNC call whose task is
//! still loading), and the serving executions SPEAR's gateway starts.
//!
//! Bounded like the host's store: past `max` entries the oldest ended one
//! is forgotten. An entry still live (loading, running, serving) is never
//! forgotten — it could then be neither listed nor terminated, and its id
//! could start a second run — so a ledger full of live entries refuses new
//! ones ([`Refusal::Full`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::sync::{watch, Notify};

use crate::exec::{ExecutionError, ExecutionStatus};

/// One execution started through the node API.
#[derive(Debug)]
pub struct Entry {
    seq: u64,
    /// Its id (the caller's, or one made here).
    pub execution_id: Arc<str>,
    /// The caller's invocation id (or one made here).
    pub invocation_id: Arc<str>,
    /// The task it runs on.
    pub task_id: Arc<str>,
    /// When it was accepted.
    pub accepted_at: SystemTime,
    state: Mutex<State>,
    /// Wakes the call that runs it when a termination found no host
    /// record to cancel yet (see [`Entry::request_termination`]).
    terminate: Notify,
}

#[derive(Debug, Clone)]
struct State {
    /// The function, once resolved (the name asked for until then).
    function: Arc<str>,
    phase: Phase,
    /// The instance it ran on (for a serving execution: its own).
    instance_id: Option<Arc<str>>,
    /// A termination asked for before the host held its record.
    termination: Option<ExecutionError>,
}

/// Where an execution stands, as far as the node API must remember it.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Accepted; its task is being loaded. `cancelled`: terminated since.
    Loading {
        /// A terminate arrived before the load finished.
        cancelled: bool,
    },
    /// The host's record holds its state.
    Recorded,
    /// It ended without a host record (its task failed to load, or it was
    /// terminated while loading), or the host's record was seen ending.
    Ended(Ending),
    /// A serving execution (SPEAR's gateway): RUNNING until terminated.
    Serving {
        /// Set to `true` when it is terminated.
        stop: watch::Sender<bool>,
    },
}

/// How an execution ended, kept after the host's record may be gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// Its final status.
    pub status: ExecutionStatus,
    /// Why, when it did not complete.
    pub error: Option<ExecutionError>,
    /// When it started, when it did.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub completed_at: SystemTime,
}

impl Entry {
    /// The function (resolved once the task is known).
    pub fn function(&self) -> Arc<str> {
        Arc::clone(&self.state().function)
    }

    /// Its phase now.
    pub fn phase(&self) -> Phase {
        self.state().phase.clone()
    }

    /// The instance it ran on, once known.
    pub fn instance_id(&self) -> Option<Arc<str>> {
        self.state().instance_id.clone()
    }

    /// Whether it is a serving execution that has not ended.
    pub fn has_ended(&self) -> bool {
        matches!(self.state().phase, Phase::Ended(_))
    }

    pub fn is_serving(&self) -> bool {
        matches!(self.state().phase, Phase::Serving { .. })
    }

    /// A receiver that turns `true` when the serving execution ends;
    /// `None` for any other.
    pub fn stopped(&self) -> Option<watch::Receiver<bool>> {
        match &self.state().phase {
            Phase::Serving { stop } => Some(stop.subscribe()),
            _ => None,
        }
    }

    pub(super) fn set_function(&self, function: Arc<str>) {
        self.state().function = function;
    }

    pub(super) fn set_instance(&self, instance: Arc<str>) {
        self.state().instance_id = Some(instance);
    }

    /// The task loaded: from now on the host's record answers, unless it
    /// was terminated meanwhile (`false`: do not run).
    pub(super) fn recorded(&self) -> bool {
        let mut state = self.state();
        match state.phase {
            Phase::Loading { cancelled: false } => {
                state.phase = Phase::Recorded;
                true
            }
            _ => false,
        }
    }

    /// Ends it, unless it ended already; `false` then.
    pub(super) fn end(&self, ending: Ending) -> bool {
        let mut state = self.state();
        match &state.phase {
            Phase::Ended(_) => false,
            Phase::Serving { stop } => {
                let _ = stop.send(true);
                state.phase = Phase::Ended(ending);
                true
            }
            _ => {
                state.phase = Phase::Ended(ending);
                true
            }
        }
    }

    /// Asks a loading execution to stop; `true` if it was loading.
    pub(super) fn cancel_loading(&self) -> bool {
        let mut state = self.state();
        match state.phase {
            Phase::Loading { .. } => {
                state.phase = Phase::Loading { cancelled: true };
                true
            }
            _ => false,
        }
    }

    /// Asks the call running this execution to stop: between the entry
    /// being recorded and the host holding its record, the host cannot
    /// cancel it, so the call itself gives up its run (see
    /// [`Entry::terminated`]).
    pub(super) fn request_termination(&self, error: ExecutionError) {
        self.state().termination = Some(error);
        // A stored permit: the call may not be waiting yet.
        self.terminate.notify_one();
    }

    /// Completes once a termination was requested, with its error.
    pub(super) async fn terminated(&self) -> ExecutionError {
        loop {
            if let Some(error) = self.state().termination.clone() {
                return error;
            }
            self.terminate.notified().await;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a new entry starts as.
/// Why [`Ledger::insert`] added nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The id is held already.
    Known,
    /// Every entry is live; none can be forgotten.
    Full {
        /// The bound.
        max: usize,
    },
}

#[derive(Debug)]
pub struct NewEntry {
    /// The execution id.
    pub execution_id: Arc<str>,
    /// The invocation id.
    pub invocation_id: Arc<str>,
    /// The task.
    pub task_id: Arc<str>,
    /// The function asked for.
    pub function: Arc<str>,
    /// Its first phase.
    pub phase: Phase,
    /// Its instance, when it has one from the start.
    pub instance_id: Option<Arc<str>>,
}

/// The node API's executions, newest last.
#[derive(Debug)]
pub struct Ledger {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    by_id: HashMap<Arc<str>, Arc<Entry>>,
    order: VecDeque<Arc<Entry>>,
}

impl Ledger {
    /// A ledger of at most `max` entries (at least one).
    pub fn new(max: usize) -> Self {
        Ledger {
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Adds an entry, forgetting the oldest ended one past the bound.
    ///
    /// # Errors
    ///
    /// [`Refusal::Known`] if its id is taken; [`Refusal::Full`] if every
    /// entry held is still live.
    pub fn insert(&self, new: NewEntry) -> Result<Arc<Entry>, Refusal> {
        let mut inner = self.inner();
        if inner.by_id.contains_key(&new.execution_id) {
            return Err(Refusal::Known);
        }
        if inner.order.len() >= self.max {
            let Some(at) = inner.order.iter().position(|e| e.has_ended()) else {
                return Err(Refusal::Full { max: self.max });
            };
            if let Some(old) = inner.order.remove(at) {
                inner.by_id.remove(&old.execution_id);
            }
        }
        inner.seq += 1;
        let entry = Arc::new(Entry {
            seq: inner.seq,
            execution_id: new.execution_id,
            invocation_id: new.invocation_id,
            task_id: new.task_id,
            accepted_at: SystemTime::now(),
            state: Mutex::new(State {
                function: new.function,
                phase: new.phase,
                instance_id: new.instance_id,
                termination: None,
            }),
            terminate: Notify::new(),
        });
        inner
            .by_id
            .insert(Arc::clone(&entry.execution_id), Arc::clone(&entry));
        inner.order.push_back(Arc::clone(&entry));
        Ok(entry)
    }

    pub fn get(&self, execution_id: &str) -> Option<Arc<Entry>> {
        self.inner().by_id.get(execution_id).cloned()
    }

    /// Entries newest first, after the one named `after` (paging), that
    /// `keep` accepts; at most `limit`, and whether more follow.
    pub fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> (Vec<Arc<Entry>>, bool) {
        let inner = self.inner();
        let below = after
            .and_then(|id| inner.by_id.get(id))
            .map_or(u64::MAX, |e| e.seq);
        let mut page = Vec::new();
        for entry in inner.order.iter().rev().filter(|e| e.seq < below) {
            if keep(entry) {
                if page.len() == limit {
                    return (page, true);
                }
                page.push(Arc::clone(entry));
            }
        }
        (page, false)
    }

    /// The serving executions of `task_id` (all tasks: `None`) that have
    /// not ended.
    pub fn serving(&self, task_id: Option<&str>) -> Vec<Arc<Entry>> {
        self.inner()
            .order
            .iter()
            .filter(|e| e.is_serving() && task_id.is_none_or(|t| *e.task_id == *t))
            .cloned()
            .collect()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, task: &str, phase: Phase) -> NewEntry {
        NewEntry {
            execution_id: id.into(),
            invocation_id: format!("inv-{id}").into(),
            task_id: task.into(),
            function: "f".into(),
            phase,
            instance_id: None,
        }
    }

    fn ended() -> Ending {
        Ending {
            status: ExecutionStatus::Completed,
            error: None,
            started_at: None,
            completed_at: SystemTime::now(),
        }
    }

    #[test]
    fn lists_newest_first_with_filters_and_pages() {
        let ledger = Ledger::new(10);
        for (id, task) in [("e1", "a"), ("e2", "b"), ("e3", "a"), ("e4", "a")] {
            ledger.insert(new(id, task, Phase::Recorded)).unwrap();
        }
        assert_eq!(
            ledger.insert(new("e1", "a", Phase::Recorded)).unwrap_err(),
            Refusal::Known
        );
        let ids = |page: &[Arc<Entry>]| {
            page.iter()
                .map(|e| e.execution_id.to_string())
                .collect::<Vec<_>>()
        };
        let (page, more) = ledger.list(None, 2, |e| &*e.task_id == "a");
        assert_eq!((ids(&page), more), (vec!["e4".into(), "e3".into()], true));
        let (page, more) = ledger.list(Some("e3"), 2, |e| &*e.task_id == "a");
        assert_eq!((ids(&page), more), (vec!["e1".into()], false));
    }

    #[test]
    fn the_oldest_ended_entries_go_first_and_live_ones_stay() {
        let ledger = Ledger::new(3);
        let (stop, _) = watch::channel(false);
        ledger
            .insert(new("serve", "a", Phase::Serving { stop }))
            .unwrap();
        let e1 = ledger.insert(new("e1", "a", Phase::Recorded)).unwrap();
        ledger.insert(new("e2", "a", Phase::Recorded)).unwrap();
        // Full of live entries: nothing is forgotten, the new one refused.
        assert_eq!(
            ledger.insert(new("e3", "a", Phase::Recorded)).unwrap_err(),
            Refusal::Full { max: 3 }
        );
        assert!(e1.end(ended()));
        ledger.insert(new("e3", "a", Phase::Recorded)).unwrap();
        assert!(ledger.get("e1").is_none());
        for live in ["serve", "e2", "e3"] {
            assert!(ledger.get(live).is_some(), "{live}");
        }
        assert_eq!(ledger.serving(Some("a")).len(), 1);
        let serving = ledger.get("serve").unwrap();
        let mut stopped = serving.stopped().unwrap();
        assert!(serving.end(ended()));
        assert!(*stopped.borrow_and_update());
        assert!(!serving.end(ended()));
        assert!(ledger.serving(None).is_empty());
    }

    #[tokio::test]
    async fn a_termination_asked_before_the_run_is_waited_for_by_the_run() {
        let ledger = Ledger::new(2);
        let e = ledger.insert(new("e1", "a", Phase::Recorded)).unwrap();
        // Asked before anyone waits: the run still sees it.
        e.request_termination(ExecutionError::new("terminated", "stop"));
        assert_eq!(e.terminated().await.code, "terminated");
    }

    #[test]
    fn a_load_terminated_midway_does_not_run() {
        let ledger = Ledger::new(4);
        let e = ledger
            .insert(new("e1", "a", Phase::Loading { cancelled: false }))
            .unwrap();
        assert!(e.cancel_loading());
        assert!(!e.recorded());
        let e2 = ledger
            .insert(new("e2", "a", Phase::Loading { cancelled: false }))
            .unwrap();
        assert!(e2.recorded());
        assert!(!e2.cancel_loading());
    }
}
