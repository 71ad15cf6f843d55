//! Per-task instance pools: reuse idle instances, create on demand up to a
//! maximum, pre-warm a minimum, reap idle ones, never reuse a panicked one.
//!
//! Capacity is a semaphore with `max` permits, one per live instance: an
//! instance keeps its permit while idle and while lent, so at most `max`
//! calls run on a task at once, and lending or returning an idle instance
//! touches no semaphore. A caller that finds no idle instance and no free
//! permit waits — up to its deadline — for either. Deleting the task closes
//! the semaphore and wakes the waiters, so queued callers stop at once.
//!
//! A call that is abandoned while its plugin runs on (deadline, forced
//! cancel) *quarantines* its instance: the slot is given back so the pool
//! can serve others, and the instance rejoins the pool when the plugin
//! returns. Each quarantined instance pins a thread, so quarantine is
//! bounded per task and across the host; past either bound, new calls to
//! the task are refused until a quarantined call returns.
//!
//! Plugin code (constructors, destructors) runs off the async workers,
//! except constructors the inline tier has seen to be short, and then only
//! in a seat under the tier's cap, watched like any inline call.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::{Error, Result};
use crate::isolate::{CrashGate, Workers};
use crate::loader::Plugin;
use crate::tier::{PluginProfile, TierPolicy};
mod create;
mod instance;
mod lease;
mod upkeep;

pub use instance::Instance;
pub use lease::{Lease, Quarantine};

/// Sizing of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Instances created when the task is created and kept when idle.
    pub min: usize,
    /// Instances (and so concurrent calls) at most.
    pub max: usize,
}

/// How many abandoned calls may pin an instance and a thread: per task, and
/// across every task of a host (shared by the pools).
#[derive(Debug)]
pub struct QuarantineLimits {
    /// Per task.
    pub per_task: usize,
    /// Across the host.
    pub total: usize,
    quarantined: AtomicUsize,
}

impl QuarantineLimits {
    /// Limits of `per_task` and `total` quarantined instances.
    pub fn new(per_task: usize, total: usize) -> Self {
        QuarantineLimits {
            per_task,
            total,
            quarantined: AtomicUsize::new(0),
        }
    }

    /// Instances quarantined across the host now.
    pub fn quarantined(&self) -> usize {
        self.quarantined.load(Ordering::Acquire)
    }
}

/// How long [`InstancePool::acquire`] may wait for a free slot. The clock is
/// read only if it has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until this instant.
    Until(Instant),
    /// For this long from when waiting starts.
    For(Duration),
}

impl Wait {
    fn deadline(self) -> Instant {
        match self {
            Wait::Until(at) => at,
            Wait::For(wait) => Instant::now() + wait,
        }
    }
}

/// What a pool needs besides its plugin and limits.
#[derive(Debug, Clone)]
pub struct PoolContext {
    /// The inline tier's settings.
    pub policy: TierPolicy,
    /// What the tier knows of this plugin (its constructor's profile is used here).
    pub profile: Arc<PluginProfile>,
    /// The host-wide quarantine bounds.
    pub quarantine: Arc<QuarantineLimits>,
    /// For a process-tier task: where its workers come from.
    pub isolated: Option<Isolated>,
}

/// How a process-tier pool gets its instances: each is a worker process.
#[derive(Debug, Clone)]
pub struct Isolated {
    /// The host's workers (warm ones are taken first).
    pub workers: Arc<Workers>,
    /// Each worker's memory cap, bytes.
    pub memory_max: Option<u64>,
    /// The task's crash record: its backoff refuses calls while it lasts.
    pub gate: Arc<CrashGate>,
}

/// The instance pool of one task (cheap to clone; clones share the pool).
#[derive(Debug, Clone)]
pub struct InstancePool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    task_id: Arc<str>,
    plugin: Arc<Plugin>,
    config: Vec<(String, String)>,
    limits: PoolLimits,
    context: PoolContext,
    permits: Arc<Semaphore>,
    /// Signalled when an instance goes back to the idle list (or the pool closes).
    returned: Notify,
    state: Mutex<PoolState>,
    next_id: AtomicU64,
    closed: AtomicBool,
    discarded: AtomicU64,
    created: AtomicU64,
    /// `state.quarantined`, readable without the lock (written under it).
    quarantined: AtomicUsize,
}

/// Instances and their counts, under one lock so they always agree.
#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Idle>,
    live: usize,
    quarantined: usize,
    /// Leased instances to destroy, not reuse, when their calls return
    /// (see [`InstancePool::destroy_instance`]).
    doomed: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Idle {
    instance: Instance,
    id: Arc<str>,
    since: Instant,
    permit: OwnedSemaphorePermit,
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
    /// Instances created since the pool was.
    pub created: u64,
    /// Instances discarded after a panic.
    pub discarded: u64,
    /// Instances still running a call that was abandoned (timed out or
    /// force-cancelled); they no longer count against the maximum.
    pub quarantined: usize,
    /// The pool's limits.
    pub limits: PoolLimits,
    /// Process tier: worker crashes since the task was created.
    pub worker_crashes: u64,
    /// Process tier: backing off after repeated crashes (calls refused).
    pub crash_looping: bool,
}

impl InstancePool {
    /// A pool for `plugin`, whose instances are built from `config`; it
    /// creates `limits.min` instances now (off the async workers unless the
    /// constructor has proven short).
    ///
    /// # Errors
    ///
    /// [`Error::InstanceCreation`] when the plugin refuses the configuration.
    pub async fn prewarmed(
        task_id: &Arc<str>,
        plugin: Arc<Plugin>,
        config: Vec<(String, String)>,
        limits: PoolLimits,
        context: PoolContext,
    ) -> Result<Self> {
        let limits = PoolLimits {
            min: limits.min.min(limits.max.max(1)),
            max: limits.max.max(1),
        };
        let pool = InstancePool {
            shared: Arc::new(Shared {
                task_id: Arc::clone(task_id),
                permits: Arc::new(Semaphore::new(limits.max)),
                returned: Notify::new(),
                plugin,
                config,
                limits,
                context,
                state: Mutex::default(),
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                discarded: AtomicU64::new(0),
                created: AtomicU64::new(0),
                quarantined: AtomicUsize::new(0),
            }),
        };
        for _ in 0..limits.min {
            let permit = Arc::clone(&pool.shared.permits)
                .try_acquire_owned()
                .expect("min <= max permits are free in a new pool");
            let (instance, id) = pool.create().await?;
            pool.shared.state().idle.push(Idle {
                instance,
                id,
                since: Instant::now(),
                permit,
            });
        }
        Ok(pool)
    }

    /// Lends an instance: an idle one, or a new one while under the maximum;
    /// with `fresh`, always a new one. Waits for a free slot as `wait` says.
    ///
    /// # Errors
    ///
    /// [`Error::TaskDeleted`] once the pool is closed;
    /// [`Error::QuarantineFull`] while too many abandoned calls pin
    /// instances; [`Error::PoolExhausted`] when no slot frees up before the
    /// deadline; [`Error::InstanceCreation`] when a new instance cannot be made.
    pub async fn acquire(&self, fresh: bool, wait: Wait) -> Result<Lease> {
        self.check_quarantine()?;
        self.check_crashes()?;
        let mut deadline = None;
        loop {
            if self.is_closed() {
                return Err(self.deleted());
            }
            if !fresh {
                if let Some(idle) = self.pop_idle() {
                    return Ok(self.lend(idle));
                }
            }
            match Arc::clone(&self.shared.permits).try_acquire_owned() {
                Ok(permit) => return Box::pin(self.lease_new(permit)).await,
                Err(TryAcquireError::Closed) => return Err(self.deleted()),
                Err(TryAcquireError::NoPermits) => {}
            }
            if fresh {
                // Every slot is held: a fresh instance replaces the
                // longest-idle one, whose permit it takes over.
                let oldest = {
                    let mut state = self.shared.state();
                    (!state.idle.is_empty()).then(|| state.idle.remove(0))
                };
                if let Some(oldest) = oldest {
                    self.shared.destroy(oldest.instance);
                    return Box::pin(self.lease_new(oldest.permit)).await;
                }
            }
            let until = *deadline.get_or_insert_with(|| wait.deadline());
            if let Some(permit) = Box::pin(self.wait_for_room(fresh, until)).await? {
                return Box::pin(self.lease_new(permit)).await;
            }
        }
    }

    /// Waits until an instance is returned (`None`: look again) or a permit
    /// frees up (for a new instance), or fails at `until` or when the pool
    /// closes.
    async fn wait_for_room(
        &self,
        fresh: bool,
        until: Instant,
    ) -> Result<Option<OwnedSemaphorePermit>> {
        let returned = self.shared.returned.notified();
        tokio::pin!(returned);
        returned.as_mut().enable();
        // Returned between the look above and `enable`: look again.
        if !fresh && !self.shared.state().idle.is_empty() {
            return Ok(None);
        }
        let permits = Arc::clone(&self.shared.permits);
        tokio::select! {
            biased;
            () = &mut returned => Ok(None),
            permit = permits.acquire_owned() => match permit {
                Ok(permit) => Ok(Some(permit)),
                Err(_) => Err(self.deleted()),
            },
            () = tokio::time::sleep_until(until.into()) => Err(Error::PoolExhausted {
                task_id: self.shared.task_id.to_string(),
                max: self.shared.limits.max,
            }),
        }
    }

    /// An idle instance if one can be had now; `None` when the caller must
    /// wait or create one (then [`InstancePool::acquire`]).
    ///
    /// # Errors
    ///
    /// [`Error::TaskDeleted`]; [`Error::QuarantineFull`].
    pub fn try_acquire_idle(&self) -> Option<Result<Lease>> {
        if let Err(e) = self.check_quarantine().and_then(|()| self.check_crashes()) {
            return Some(Err(e));
        }
        if self.is_closed() {
            return Some(Err(self.deleted()));
        }
        let idle = self.pop_idle()?;
        Some(Ok(self.lend(idle)))
    }

    async fn lease_new(&self, permit: OwnedSemaphorePermit) -> Result<Lease> {
        let (instance, id) = self.create().await?;
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.destroy(instance);
            return Err(self.deleted());
        }
        Ok(self.lease(instance, id, permit))
    }

    fn check_quarantine(&self) -> Result<()> {
        let limits = &self.shared.context.quarantine;
        let here = self.shared.quarantined.load(Ordering::Acquire);
        let total = limits.quarantined();
        let (count, limit, scope) = if here >= limits.per_task {
            (here, limits.per_task, "task")
        } else if total >= limits.total {
            (total, limits.total, "host")
        } else {
            return Ok(());
        };
        Err(Error::QuarantineFull {
            task_id: self.shared.task_id.to_string(),
            scope,
            quarantined: count,
            limit,
        })
    }

    /// A process-tier task backing off after repeated crashes refuses
    /// calls at once.
    fn check_crashes(&self) -> Result<()> {
        match &self.shared.context.isolated {
            Some(isolated) => isolated.gate.check(&self.shared.task_id),
            None => Ok(()),
        }
    }

    fn deleted(&self) -> Error {
        Error::TaskDeleted {
            task_id: self.shared.task_id.to_string(),
        }
    }

    /// The most recently returned idle instance that is still sound: a
    /// worker process that died while idle is discarded, not lent.
    fn pop_idle(&self) -> Option<Idle> {
        loop {
            let idle = self.shared.state().idle.pop()?;
            if !idle.instance.is_poisoned() {
                return Some(idle);
            }
            self.shared.discarded.fetch_add(1, Ordering::Relaxed);
            self.shared.destroy(idle.instance);
        }
    }

    fn lend(&self, idle: Idle) -> Lease {
        self.lease(idle.instance, idle.id, idle.permit)
    }

    fn lease(&self, instance: Instance, id: Arc<str>, permit: OwnedSemaphorePermit) -> Lease {
        Lease::new(instance, id, Arc::clone(&self.shared), permit)
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an instance into (or out of) quarantine: the pool's count,
    /// its lock-free copy and the host's total. Callers hold the lease's
    /// slot lock, which orders the two for one lease. Entering fails —
    /// nothing is counted — when the task's or the host's bound is reached:
    /// the bounds hold at every moment, not only when an instance is
    /// acquired, however many calls are abandoned at once.
    fn count_quarantined(&self, entering: bool) -> bool {
        let mut state = self.state();
        let limits = &self.context.quarantine;
        let total = &limits.quarantined;
        if entering {
            if state.quarantined >= limits.per_task {
                return false;
            }
            let reserved = total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits.total).then_some(n + 1)
            });
            if reserved.is_err() {
                return false;
            }
            state.quarantined += 1;
        } else {
            state.quarantined -= 1;
            total.fetch_sub(1, Ordering::AcqRel);
        }
        self.quarantined.store(state.quarantined, Ordering::Release);
        true
    }

    /// Drops an instance; its destructor is plugin code, so off the async
    /// workers when there is a runtime.
    fn destroy(&self, instance: Instance) {
        self.state().live -= 1;
        dispose(instance);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A pool dropped on an async worker (a task whose creation failed or
        // was abandoned) must not run destructors there.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for idle in state.idle.drain(..) {
            dispose(idle.instance);
        }
    }
}

fn dispose(instance: Instance) {
    let instance = match instance {
        // Killing a worker is one signal; nothing of the plugin runs here.
        Instance::Worker(worker) => return drop(worker),
        Instance::Here(instance) => instance,
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || drop(instance));
        }
        Err(_) => drop(instance),
    }
}
