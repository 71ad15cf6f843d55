//! Per-task instance pools: reuse idle instances, create on demand up to a
//! maximum, pre-warm a minimum, reap idle ones, never reuse a panicked one.
//!
//! Capacity is a semaphore with `max` permits: a lease holds one, so at most
//! `max` calls run on a task at once and a caller past that waits — up to
//! its deadline — for a permit. Plugin code (instance constructors and
//! destructors included) only ever runs on blocking threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::loader::{CallRequest, FunctionHandle, Plugin, PluginInstance};
use crate::Value;

/// Sizing of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Instances created when the task is created and kept when idle.
    pub min: usize,
    /// Instances (and so concurrent calls) at most.
    pub max: usize,
}

/// The instance pool of one task (cheap to clone; clones share the pool).
#[derive(Debug, Clone)]
pub struct InstancePool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    task_id: String,
    plugin: Arc<Plugin>,
    config: Vec<(String, String)>,
    limits: PoolLimits,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    live: AtomicUsize,
    next_id: AtomicU64,
    closed: AtomicBool,
    discarded: AtomicU64,
    quarantined: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    instance: PluginInstance,
    id: String,
    since: Instant,
}

/// Counts describing a pool now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances waiting for work.
    pub idle: usize,
    /// Instances in existence (idle or running a call).
    pub live: usize,
    /// Calls holding an instance.
    pub busy: usize,
    /// Instances discarded after a panic.
    pub discarded: u64,
    /// Instances still running a call that was abandoned (timed out or
    /// force-cancelled); they no longer count against the maximum.
    pub quarantined: usize,
    /// The pool's limits.
    pub limits: PoolLimits,
}

/// One instance, lent to one call; it goes back to the pool when dropped
/// (or is destroyed, if its call panicked or the pool closed).
#[derive(Debug)]
pub struct Lease {
    instance: Option<PluginInstance>,
    id: String,
    shared: Arc<Shared>,
    permit: Slot,
}

/// The lease's claim on pool capacity, which an abandoned call gives up early.
type Slot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

/// Lets the side waiting for a call give its capacity back if it stops
/// waiting (see [`Quarantine::quarantine`]).
#[derive(Debug, Clone)]
pub struct Quarantine {
    permit: Slot,
    shared: Arc<Shared>,
}

impl Quarantine {
    /// The call is abandoned but its instance is still busy: release its slot
    /// so the pool can make a replacement, and count the instance as
    /// quarantined until its call returns.
    pub fn quarantine(&self) {
        let released = self
            .permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if released.is_some() {
            self.shared.quarantined.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(task = %self.shared.task_id, "an abandoned call still holds an instance; it is quarantined");
        }
    }
}

impl InstancePool {
    /// A pool for `plugin`, whose instances are built from `config`; it
    /// creates `limits.min` instances now (on a blocking thread).
    ///
    /// # Errors
    ///
    /// [`Error::InstanceCreation`] when the plugin refuses the configuration.
    pub async fn prewarmed(
        task_id: &str,
        plugin: Arc<Plugin>,
        config: Vec<(String, String)>,
        limits: PoolLimits,
    ) -> Result<Self> {
        let limits = PoolLimits {
            min: limits.min.min(limits.max.max(1)),
            max: limits.max.max(1),
        };
        let pool = InstancePool {
            shared: Arc::new(Shared {
                task_id: task_id.to_owned(),
                permits: Arc::new(Semaphore::new(limits.max)),
                plugin,
                config,
                limits,
                idle: Mutex::default(),
                live: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                discarded: AtomicU64::new(0),
                quarantined: AtomicUsize::new(0),
            }),
        };
        for _ in 0..limits.min {
            let (instance, id) = pool.create().await?;
            pool.shared.idle().push(Idle {
                instance,
                id,
                since: Instant::now(),
            });
        }
        Ok(pool)
    }

    /// Lends an instance: an idle one, or a new one while under the maximum;
    /// with `fresh`, always a new one. Waits for a free slot until `deadline`.
    ///
    /// # Errors
    ///
    /// [`Error::PoolExhausted`] when no slot frees up before the deadline;
    /// [`Error::InstanceCreation`] when a new instance cannot be made.
    pub async fn acquire(&self, fresh: bool, deadline: Instant) -> Result<Lease> {
        let permits = Arc::clone(&self.shared.permits);
        let permit = tokio::time::timeout_at(deadline.into(), permits.acquire_owned())
            .await
            .map_err(|_| Error::PoolExhausted {
                task_id: self.shared.task_id.clone(),
                max: self.shared.limits.max,
            })?
            .map_err(|_| {
                Error::Internal(format!(
                    "the pool of task `{}` is closed",
                    self.shared.task_id
                ))
            })?;
        if !fresh {
            if let Some(idle) = self.shared.idle().pop() {
                return Ok(self.lease(idle.instance, idle.id, permit));
            }
        } else if self.shared.live.load(Ordering::Acquire)
            >= self.shared.limits.max + self.shared.quarantined.load(Ordering::Acquire)
        {
            // Make room: a fresh instance replaces the longest-idle one.
            let oldest = {
                let mut idle = self.shared.idle();
                (!idle.is_empty()).then(|| idle.remove(0))
            };
            if let Some(oldest) = oldest {
                self.shared.destroy(oldest.instance);
            }
        }
        let (instance, id) = self.create().await?;
        Ok(self.lease(instance, id, permit))
    }

    fn lease(&self, instance: PluginInstance, id: String, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            instance: Some(instance),
            id,
            shared: Arc::clone(&self.shared),
            permit: Arc::new(Mutex::new(Some(permit))),
        }
    }

    async fn create(&self) -> Result<(PluginInstance, String)> {
        let plugin = Arc::clone(&self.shared.plugin);
        let config = self.shared.config.clone();
        let instance = tokio::task::spawn_blocking(move || PluginInstance::new(&plugin, &config))
            .await
            .map_err(|e| Error::Internal(format!("instance creation did not finish: {e}")))??;
        self.shared.live.fetch_add(1, Ordering::AcqRel);
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        Ok((instance, format!("{}-{n}", self.shared.task_id)))
    }

    /// Destroys instances idle since before `now - idle_for`, keeping the
    /// minimum; returns how many went.
    pub fn reap_idle(&self, idle_for: Duration) -> usize {
        let expired: Vec<Idle> = {
            let mut idle = self.shared.idle();
            let live = self.shared.live.load(Ordering::Acquire);
            let removable = live.saturating_sub(self.shared.limits.min);
            let mut taken = Vec::new();
            let mut i = 0;
            while i < idle.len() && taken.len() < removable {
                if idle[i].since.elapsed() >= idle_for {
                    taken.push(idle.remove(i));
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

    /// Stops lending: idle instances are destroyed now, leased ones when
    /// their calls return.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let idle: Vec<Idle> = std::mem::take(&mut *self.shared.idle());
        for i in idle {
            self.shared.destroy(i.instance);
        }
    }

    /// Counts describing the pool now.
    pub fn stats(&self) -> PoolStats {
        let idle = self.shared.idle().len();
        PoolStats {
            idle,
            live: self.shared.live.load(Ordering::Acquire),
            busy: self.shared.limits.max - self.shared.permits.available_permits()
                + self.shared.quarantined.load(Ordering::Acquire),
            discarded: self.shared.discarded.load(Ordering::Relaxed),
            quarantined: self.shared.quarantined.load(Ordering::Acquire),
            limits: self.shared.limits,
        }
    }
}

impl Lease {
    /// The instance's id (`<task id>-<n>`).
    pub fn instance_id(&self) -> &str {
        &self.id
    }

    /// A handle to give this lease's capacity back early.
    pub fn quarantine_handle(&self) -> Quarantine {
        Quarantine {
            permit: Arc::clone(&self.permit),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Calls `function` on the leased instance, on this thread.
    ///
    /// # Errors
    ///
    /// As [`PluginInstance::call`].
    pub fn call(&mut self, function: FunctionHandle, request: &CallRequest<'_>) -> Result<Value> {
        self.instance
            .as_mut()
            .expect("a lease holds its instance until dropped")
            .call(function, request)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        let permit = self
            .permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let was_quarantined = permit.is_none();
        if was_quarantined {
            self.shared.quarantined.fetch_sub(1, Ordering::AcqRel);
        }
        if instance.is_poisoned() {
            self.shared.discarded.fetch_add(1, Ordering::Relaxed);
            self.shared.destroy(instance);
        } else if self.shared.closed.load(Ordering::Acquire)
            || (was_quarantined
                && self.shared.live.load(Ordering::Acquire) > self.shared.limits.max)
        {
            // A quarantined instance whose replacement exists is surplus.
            self.shared.destroy(instance);
        } else {
            self.shared.idle().push(Idle {
                instance,
                id: std::mem::take(&mut self.id),
                since: Instant::now(),
            });
        }
    }
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops an instance; its destructor is plugin code, so off the async
    /// workers when there is a runtime.
    fn destroy(&self, instance: PluginInstance) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || drop(instance));
            }
            Err(_) => drop(instance),
        }
    }
}
