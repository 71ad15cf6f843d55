//! A pool's upkeep: reaping idle instances, destroying one on request,
//! closing with its task, and the figures it reports.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Idle, InstancePool, PoolStats};

impl InstancePool {
    /// Destroys instances idle since before `now - idle_for`, keeping the
    /// minimum; returns how many went.
    pub fn reap_idle(&self, idle_for: Duration) -> usize {
        let expired: Vec<Idle> = {
            let mut state = self.shared.state();
            let removable = state.live.saturating_sub(self.shared.limits.min);
            let mut taken = Vec::new();
            let mut i = 0;
            while i < state.idle.len() && taken.len() < removable {
                if state.idle[i].since.elapsed() >= idle_for {
                    taken.push(state.idle.remove(i));
                } else {
                    i += 1;
                }
            }
            taken
        };
        let n = expired.len();
        for e in expired {
            self.shared.destroy(e.instance);
        }
        n
    }

    /// Destroys the instance `id`: now if it is idle; if `leased` (a call
    /// holds it), when that call returns instead of going back to the pool.
    /// Returns whether an instance was found (idle) or doomed (leased).
    pub fn destroy_instance(&self, id: &str, leased: bool) -> bool {
        let idle = {
            let mut state = self.shared.state();
            match state.idle.iter().position(|i| &*i.id == id) {
                Some(at) => Some(state.idle.remove(at)),
                None => {
                    if leased && !state.doomed.iter().any(|d| &**d == id) {
                        state.doomed.push(Arc::from(id));
                    }
                    None
                }
            }
        };
        match idle {
            Some(idle) => {
                self.shared.destroy(idle.instance);
                true
            }
            None => leased,
        }
    }

    /// Stops lending: callers waiting for a slot get [`Error::TaskDeleted`],
    /// idle instances are destroyed now, leased ones when their calls return.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.permits.close();
        self.shared.returned.notify_waiters();
        let idle = std::mem::take(&mut self.shared.state().idle);
        for i in idle {
            self.shared.destroy(i.instance);
        }
    }

    /// Whether [`InstancePool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Counts describing the pool now.
    pub fn stats(&self) -> PoolStats {
        let state = self.shared.state();
        // Idle instances hold permits too.
        let held = self
            .shared
            .limits
            .max
            .saturating_sub(self.shared.permits.available_permits())
            .saturating_sub(state.idle.len());
        PoolStats {
            idle: state.idle.len(),
            live: state.live,
            busy: if self.is_closed() {
                state.live - state.idle.len()
            } else {
                held + state.quarantined
            },
            created: self.shared.created.load(Ordering::Relaxed),
            discarded: self.shared.discarded.load(Ordering::Relaxed),
            quarantined: state.quarantined,
            limits: self.shared.limits,
            worker_crashes: self
                .shared
                .context
                .isolated
                .as_ref()
                .map_or(0, |i| i.gate.crashes()),
            crash_looping: self
                .shared
                .context
                .isolated
                .as_ref()
                .is_some_and(|i| i.gate.is_looping()),
        }
    }
}
