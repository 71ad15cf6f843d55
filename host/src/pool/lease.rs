//! Lending an instance to one call: the lease, its claim on pool capacity,
//! and the quarantine an abandoned call puts its instance in.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::instance::Instance;
use super::{Idle, Shared};
use crate::error::Result;
use crate::loader::{CallRequest, FunctionHandle, Plugin};
use crate::Value;

/// One instance, lent to one call; it goes back to the pool when dropped
/// (or is destroyed, if its call panicked or the pool closed).
#[derive(Debug)]
pub struct Lease {
    instance: Option<Instance>,
    /// Moved back to the idle list with the instance, not cloned: one
    /// reference-count update fewer each way per call.
    id: Option<Arc<str>>,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
    slot: Option<Slot>,
    /// When the call ended, if the caller read the clock already: the
    /// instance is idle from then (see [`Lease::end_at`]).
    ended: Option<Instant>,
}

/// The lease's claim on pool capacity, once a waiter may abandon the call.
type Slot = Arc<Mutex<SlotState>>;

#[derive(Debug)]
enum SlotState {
    Held(OwnedSemaphorePermit),
    Quarantined,
    Returned,
}

/// Lets the side waiting for a call give its capacity back if it stops
/// waiting (see [`Quarantine::quarantine`]).
#[derive(Debug, Clone)]
pub struct Quarantine {
    slot: Slot,
    shared: Arc<Shared>,
}

impl Quarantine {
    /// The call is abandoned but its instance is still busy: release its slot
    /// so the pool can make a replacement, and count the instance as
    /// quarantined until its call returns. With the quarantine full (the
    /// task's or the host's bound), the instance keeps its slot instead: the
    /// pool runs one short until the call returns, and no replacement adds
    /// another pinned thread.
    pub fn quarantine(&self) {
        let mut slot = lock(&self.slot);
        if !matches!(*slot, SlotState::Held(_)) {
            return;
        }
        // Counted while the slot is locked: the lease's return, which
        // uncounts it, takes the same lock first, so the count never goes
        // below zero whatever the interleaving.
        if !self.shared.count_quarantined(true) {
            tracing::warn!(task = %self.shared.task_id, "an abandoned call still holds an instance; the quarantine is full, so it keeps its slot");
            return;
        }
        let permit = std::mem::replace(&mut *slot, SlotState::Quarantined);
        drop(permit);
        tracing::warn!(task = %self.shared.task_id, "an abandoned call still holds an instance; it is quarantined");
    }
}

impl Lease {
    pub(super) fn new(
        instance: Instance,
        id: Arc<str>,
        shared: Arc<Shared>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Lease {
            instance: Some(instance),
            id: Some(id),
            shared,
            permit: Some(permit),
            slot: None,
            ended: None,
        }
    }

    /// Returns the instance, idle since `ended` (a clock reading the
    /// caller already has, sparing one per call).
    pub(crate) fn end_at(mut self, ended: Instant) {
        self.ended = Some(ended);
    }

    /// The instance's id (`<task id>-<n>`).
    pub fn instance_id(&self) -> &Arc<str> {
        self.id
            .as_ref()
            .expect("a lease holds its id until dropped")
    }

    /// A handle to give this lease's capacity back early.
    pub fn quarantine_handle(&mut self) -> Quarantine {
        let slot = match &self.slot {
            Some(slot) => Arc::clone(slot),
            None => {
                let state = match self.permit.take() {
                    Some(permit) => SlotState::Held(permit),
                    None => SlotState::Returned,
                };
                let slot = Arc::new(Mutex::new(state));
                self.slot = Some(Arc::clone(&slot));
                slot
            }
        };
        Quarantine {
            slot,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Calls `function` on the leased instance, on this thread.
    ///
    /// # Errors
    ///
    /// As [`Instance::call`].
    pub fn call(&mut self, function: FunctionHandle, request: &CallRequest<'_>) -> Result<Value> {
        self.instance_mut().call(function, request)
    }

    /// The memory figure of the last call (see [`Instance::call_memory`]).
    pub fn call_memory(&self, plugin: &Plugin) -> Option<(u64, u64)> {
        self.instance.as_ref()?.call_memory(plugin)
    }

    /// Whether the instance lives in a worker process.
    pub fn is_isolated(&self) -> bool {
        self.instance.as_ref().is_some_and(Instance::is_isolated)
    }

    fn instance_mut(&mut self) -> &mut Instance {
        self.instance
            .as_mut()
            .expect("a lease holds its instance until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        let mut permit = self.permit.take();
        let mut slot = self.slot.as_ref().map(lock);
        let was_quarantined = slot
            .as_deref()
            .is_some_and(|s| matches!(s, SlotState::Quarantined));
        if let Some(slot) = slot.as_deref_mut() {
            if let SlotState::Held(held) = std::mem::replace(slot, SlotState::Returned) {
                permit = Some(held);
            }
        }
        if was_quarantined {
            self.shared.count_quarantined(false);
        }
        drop(slot);
        if was_quarantined {
            // Its permit went to a replacement; it rejoins only if a slot is
            // free, else it is surplus.
            permit = Arc::clone(&self.shared.permits).try_acquire_owned().ok();
        }
        let keep = !instance.is_poisoned() && !self.shared.closed.load(Ordering::Acquire);
        let mut instance = Some(instance);
        if let Some(permit) = permit.filter(|_| keep) {
            let mut state = self.shared.state();
            // Destroyed on request while this call ran: not reused.
            let doomed = state
                .doomed
                .iter()
                .position(|d| Some(d) == self.id.as_ref());
            match doomed {
                Some(at) => {
                    state.doomed.swap_remove(at);
                }
                None => {
                    state.idle.push(Idle {
                        instance: instance.take().expect("not moved yet"),
                        id: self.id.take().expect("not moved yet"),
                        since: self.ended.unwrap_or_else(Instant::now),
                        permit,
                    });
                }
            }
            drop(state);
            self.shared.returned.notify_one();
        } else {
            // Not kept anyway: it is no longer waited for as doomed.
            let mut state = self.shared.state();
            if let Some(at) = state
                .doomed
                .iter()
                .position(|d| Some(d) == self.id.as_ref())
            {
                state.doomed.swap_remove(at);
            }
        }
        if let Some(instance) = instance {
            if instance.is_poisoned() {
                self.shared.discarded.fetch_add(1, Ordering::Relaxed);
            }
            self.shared.destroy(instance);
        }
    }
}

fn lock(slot: &Slot) -> MutexGuard<'_, SlotState> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
