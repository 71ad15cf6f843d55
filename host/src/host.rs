//! [`Host`]: spearlet as a library. The gRPC service is a thin adapter over it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::artifact::ArtifactStore;
use crate::config::Config;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::exec::{
    self, CancelOutcome, CancelReason, Ending, ExecutionError, ExecutionMode, ExecutionStore, Job,
};
use crate::invoke::{InvokeOutcome, InvokeRequest};
use crate::loader::{FunctionKind, Plugin};
use crate::pool::QuarantineLimits;
use crate::registry::{Task, TaskRegistry};
use crate::tier::{Bound, Code, PluginProfile, TierPolicy};
use crate::Value;

mod cluster;
mod dry_run;
mod durable;
mod executions;
mod instances;
mod resolve;
mod stats;
mod stop;
mod upgrade;

pub use dry_run::{DryRun, DRY_RUN_KEY};
pub use durable::HOST_RESTARTED;
pub use instances::{DestroyedInstance, INSTANCE_DESTROYED};
pub use stats::HostStats;
use stop::PendingSlot;
pub use upgrade::Switched;

/// An embeddable spearlet: tasks, instance pools, executions.
///
/// Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    policy: TierPolicy,
    artifacts: ArtifactStore,
    tasks: TaskRegistry,
    executions: ExecutionStore,
    started: Instant,
    pending_async: AtomicUsize,
    quarantine: Arc<QuarantineLimits>,
    /// What the inline tier learnt, per loaded plugin: tasks of one plugin share it.
    /// Keyed by digest and whether the code runs here: a process-tier
    /// plugin's calls wait on a worker process, and never run inline.
    profiles: Mutex<HashMap<(Sha256Digest, bool), Arc<PluginProfile>>>,
    /// The inline tier's cap and watchdog, which every profile's inline
    /// calls are under.
    inline: Arc<Bound>,
    /// Set when the host begins to stop: new calls are refused.
    stopping: std::sync::atomic::AtomicBool,
    /// SYNC and STREAM calls being served, which a stop waits for.
    serving: AtomicUsize,
    /// Signalled when `serving` drops to zero.
    idle: tokio::sync::Notify,
    /// Whether anyone ever waited on `idle` (notifying takes its lock, and
    /// the last call in flight would otherwise pay that on every call).
    idle_watched: std::sync::atomic::AtomicBool,
    /// The SMS, when the host is part of a cluster.
    sms: Option<Arc<crate::sms::Sms>>,
    /// What survives a restart.
    state: Arc<crate::state::StateDb>,
    /// Tasks recorded by an earlier run, not loaded yet, by id.
    dormant: Mutex<std::collections::BTreeMap<String, crate::state::StoredTask>>,
}

/// How deleting a task went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// Its standing in the cluster (see [`Host::withdraw_deleted`]).
    pub membership: crate::registry::Membership,
    /// Executions that were running (and were asked to stop) or queued
    /// (and were cancelled).
    pub cancelled_running: usize,
    /// Finished execution records removed with it.
    pub cleaned_executions: usize,
}

impl Host {
    /// A host with `config`: its artifact cache and state database are
    /// opened — tasks recorded by an earlier run come back dormant (loaded
    /// on first use), ASYNC executions it accepted are reported as they
    /// ended — and nothing else runs until asked.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the data directory cannot be prepared;
    /// [`Error::StateSchema`] when a newer spearlet wrote it;
    /// [`Error::State`] when its database cannot be opened.
    pub fn new(config: Config) -> Result<Host> {
        let config = config
            .normalized()
            .map_err(|reason| Error::InvalidRequest {
                field: "configuration",
                reason,
            })?;
        let artifacts = ArtifactStore::new(&config)?;
        let sms = crate::sms::Sms::from_config(&config.sms, &config.data_dir)?.map(Arc::new);
        let executions =
            ExecutionStore::new(config.executions.max_records, config.executions.record_ttl)
                .with_results(crate::exec::ResultBudget::new(
                    config.executions.max_result_bytes,
                    config.executions.max_total_result_bytes,
                ))
                .keeping_completed_sync(config.executions.keep_completed_sync);
        let state = crate::state::StateDb::open(&config.data_dir)?;
        state.set_max_journal_bytes(config.tasks.max_journal_bytes);
        durable::restore_executions(&state, &executions, config.executions.record_ttl)?;
        let dormant = state
            .tasks()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let policy = config.exec.tier_policy();
        Ok(Host {
            inner: Arc::new(Inner {
                artifacts,
                executions,
                policy,
                quarantine: Arc::new(QuarantineLimits::new(
                    config.pool.max_quarantined,
                    config.pool.max_quarantined_total,
                )),
                config,
                tasks: TaskRegistry::default(),
                started: Instant::now(),
                pending_async: AtomicUsize::new(0),
                profiles: Mutex::default(),
                inline: Bound::new(policy),
                stopping: std::sync::atomic::AtomicBool::new(false),
                serving: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                idle_watched: std::sync::atomic::AtomicBool::new(false),
                sms,
                state: Arc::new(state),
                dormant: Mutex::new(dormant),
            }),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Its artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.inner.artifacts
    }

    /// Its tasks.
    pub fn tasks(&self) -> &TaskRegistry {
        &self.inner.tasks
    }

    pub(crate) fn tier_policy(&self) -> TierPolicy {
        self.inner.policy
    }

    pub(crate) fn quarantine_limits(&self) -> &Arc<QuarantineLimits> {
        &self.inner.quarantine
    }

    /// The inline tier's profile of `plugin`, shared by all its tasks.
    pub(crate) fn profile_of(&self, plugin: &Plugin) -> Arc<PluginProfile> {
        let mut profiles = self
            .inner
            .profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let here = plugin.is_loaded_here();
        Arc::clone(profiles.entry((plugin.digest(), here)).or_insert_with(|| {
            self.inner.inline.profile(
                plugin.name(),
                plugin
                    .functions()
                    .iter()
                    .map(|f| (f.name.as_str(), f.blocking || !here)),
            )
        }))
    }

    /// Invokes a function (SYNC or ASYNC; STREAM goes through [`Host::stream`]).
    ///
    /// A function-level failure (the plugin returned an error, panicked, or
    /// the call timed out) is a successful return whose execution says so;
    /// `Err` is for requests that could not be served at all.
    ///
    /// Dropping the returned future before it completes ends the execution
    /// (CANCELLED, or TIMEOUT past its deadline) and asks the plugin to stop.
    ///
    /// # Errors
    ///
    /// [`Error::UseStreamFunction`] for STREAM mode; the task resolution
    /// errors ([`Error::TaskNotFound`], [`Error::ArtifactSpecRequired`], the
    /// artifact pipeline's); [`Error::FunctionNotFound`];
    /// [`Error::UnknownParameter`]; [`Error::PoolExhausted`]; [`Error::QuarantineFull`];
    /// [`Error::TooManyPending`].
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeOutcome> {
        if request.mode == ExecutionMode::Stream {
            return Err(Error::UseStreamFunction);
        }
        let _serving = self.serving()?;
        self.check_metadata(&request)?;
        let mut request = request;
        match self.invoke_in_place(&mut request) {
            Some(done) => done,
            None => Box::pin(self.start(request, None)).await,
        }
    }

    /// The call that needs no waiting at all — a known task, a function the
    /// inline tier has promoted, a free seat under the tier's cap, an idle
    /// instance, no retries, no deadline — served without a future: the
    /// common case of a busy host costs what its bookkeeping costs. `None`,
    /// with `request` untouched, for anything else: the general path serves
    /// it. A call with a deadline never runs here: nothing could answer its
    /// caller at the deadline while the plugin holds this thread.
    fn invoke_in_place(&self, request: &mut InvokeRequest) -> Option<Result<InvokeOutcome>> {
        if request.mode != ExecutionMode::Sync
            || request.max_retries > 0
            || request.force_new_instance
            || request.timeout.is_some()
        {
            return None;
        }
        let task = self.known_task(&request.target)?;
        let function = task.function(&request.function).ok()?;
        if let Err(e) = task.plugin.check_params(function, &request.params) {
            return Some(Err(e));
        }
        let seat = if task.isolation == crate::isolate::Isolation::Process {
            // A worker process runs the call; this thread posts it and
            // waits, giving up its runtime duties if it must sleep — which
            // only a multi-threaded runtime can take over.
            if !exec::on_multi_thread_runtime() {
                return None;
            }
            None
        } else {
            if !self.inner.policy.enabled() || !task.profile(function).is_inline() {
                return None;
            }
            // Before the instance: a call over the cap leaves the pool alone.
            Some(task.profile.seat(Code::Function(function.index()))?)
        };
        let lease = match task.pool.try_acquire_idle()? {
            Ok(lease) => lease,
            Err(e) => return Some(Err(e)),
        };
        let executions = &self.inner.executions;
        // Unlisted only in the inline tier, whose calls are bounded: a call
        // in a worker process may run for long, and must stay reachable by
        // a cancel, a forced delete or a listing while it does.
        let unlisted = seat.is_some()
            && request.execution_id.is_none()
            && executions.lists_only_notable_sync();
        let now = unlisted.then(Instant::now);
        let (record, fresh) = if let Some(now) = now {
            let function = task.plugin.function_name(function);
            (executions.claim_unlisted(&task.id, function, now), true)
        } else {
            match executions.claim(
                request.execution_id.as_deref(),
                &request.params,
                &task.id,
                task.plugin.function_name(function),
                request.mode,
            ) {
                Ok(claimed) => claimed,
                Err(e) => return Some(Err(e)),
            }
        };
        if fresh {
            let traceparent = request.join_trace(&record);
            let job = Job {
                task: Arc::clone(&task),
                function,
                record: Arc::clone(&record),
                params: std::mem::take(&mut request.params),
                environment: std::mem::take(&mut request.environment),
                headers: std::mem::take(&mut request.headers),
                traceparent,
                deadline: None,
                acquire_timeout: self.inner.config.pool.acquire_timeout,
                max_retries: 0,
                fresh_instance: false,
                mode: ExecutionMode::Sync,
                chunks: None,
                policy: self.inner.policy,
            };
            match seat {
                Some(seat) => exec::run_in_place(job, lease, seat, now),
                None => exec::run_isolated_in_place(job, lease),
            };
        }
        let execution = if unlisted {
            executions.settle_unlisted(record)
        } else if fresh {
            record.snapshot_for_caller()
        } else {
            record.snapshot()
        };
        Some(Ok(InvokeOutcome {
            task_id: Arc::clone(&task.id),
            created_task: false,
            upgraded_task: false,
            execution,
        }))
    }

    /// Invokes a function whose chunks are sent to `chunks` as it emits
    /// them (a unary function's result arrives as the final outcome). The
    /// channel's capacity bounds how far the plugin may run ahead of the
    /// consumer; dropping the receiver cancels the execution.
    ///
    /// # Errors
    ///
    /// As [`Host::invoke`].
    pub async fn stream(
        &self,
        mut request: InvokeRequest,
        chunks: mpsc::Sender<Value>,
    ) -> Result<InvokeOutcome> {
        request.mode = ExecutionMode::Stream;
        let _serving = self.serving()?;
        self.check_metadata(&request)?;
        self.start(request, Some(chunks)).await
    }

    /// Checks the request's `spearlet.` metadata keys up front (most
    /// requests carry none, and pay one length test).
    fn check_metadata(&self, request: &InvokeRequest) -> Result<()> {
        if request.metadata.is_empty() {
            return Ok(());
        }
        crate::invoke::metadata::check(&request.metadata, &self.inner.config)
    }

    async fn start(
        &self,
        mut request: InvokeRequest,
        chunks: Option<mpsc::Sender<Value>>,
    ) -> Result<InvokeOutcome> {
        let deadline = request.timeout.map(|t| Instant::now() + t);
        let (task, origin) = self.resolve_task(&request).await?;
        let (created_task, upgraded_task) = (
            origin == crate::invoke::TaskOrigin::Created,
            origin == crate::invoke::TaskOrigin::Upgraded,
        );
        let function = task.function(&request.function)?;
        task.plugin.check_params(function, &request.params)?;
        if chunks.is_none() && function.kind() == FunctionKind::Stream {
            tracing::debug!(function = %request.function, "stream function called without a stream; chunks are dropped");
        }
        let (record, fresh) = self.inner.executions.claim(
            request.execution_id.as_deref(),
            &request.params,
            &task.id,
            task.plugin.function_name(function),
            request.mode,
        )?;
        if !fresh {
            // Idempotent retry of a known execution: report, don't rerun.
            return Ok(InvokeOutcome {
                task_id: Arc::clone(&task.id),
                created_task,
                upgraded_task,
                execution: record.snapshot(),
            });
        }
        let traceparent = request.join_trace(&record);
        // From here on the record ends whatever happens to this future.
        let ending = Ending::new(Arc::clone(&record), Arc::clone(&task), deadline);
        let job = Job {
            task: Arc::clone(&task),
            function,
            record: Arc::clone(&record),
            params: request.params,
            environment: request.environment,
            headers: request.headers,
            traceparent,
            deadline,
            acquire_timeout: self.inner.config.pool.acquire_timeout,
            max_retries: request.max_retries,
            fresh_instance: request.force_new_instance,
            mode: request.mode,
            chunks,
            policy: self.inner.policy,
        };
        match request.mode {
            ExecutionMode::Sync | ExecutionMode::Stream => {
                // Claim the instance first so an exhausted pool is an error
                // of the request, as `docs/invocation-flow.md` has it, not a failed execution.
                let lease = match task
                    .pool
                    .acquire(job.fresh_instance, job.acquire_wait())
                    .await
                {
                    Ok(lease) => lease,
                    Err(e) => {
                        exec::end_unserved(&record, &e);
                        return Err(e);
                    }
                };
                exec::run(job, Some(lease), ending).await;
            }
            ExecutionMode::Async => {
                let Some(slot) =
                    PendingSlot::claim(&self.inner, self.inner.config.executions.max_pending)
                else {
                    let limit = self.inner.config.executions.max_pending;
                    let e = Error::TooManyPending {
                        pending: limit,
                        limit,
                    };
                    exec::end_unserved(&record, &e);
                    return Err(e);
                };
                // Durable before the client hears it was accepted.
                if let Err(e) = self.record_accepted(&record).await {
                    exec::end_unserved(&record, &e);
                    return Err(e);
                }
                let host = self.clone();
                let ran = Arc::clone(&record);
                tokio::spawn(async move {
                    let _slot = slot;
                    exec::run(job, None, ending).await;
                    host.record_ended(&ran).await;
                });
            }
        }
        let execution = match request.mode {
            ExecutionMode::Sync => self.inner.executions.release_to_caller(&record),
            ExecutionMode::Async | ExecutionMode::Stream => record.snapshot_for_caller(),
        };
        Ok(InvokeOutcome {
            task_id: Arc::clone(&task.id),
            created_task,
            upgraded_task,
            execution,
        })
    }

    /// Deletes a task: its instances are drained (idle ones now, busy ones
    /// when their calls return), executions waiting for an instance end
    /// CANCELLED, running ones are asked to stop, and its artifact stays
    /// cached.
    ///
    /// # Errors
    ///
    /// [`Error::TaskNotFound`]; [`Error::TaskBusy`] when executions are
    /// running and `force` is not set.
    pub fn delete_task(
        &self,
        task_id: &str,
        force: bool,
        cleanup_executions: bool,
    ) -> Result<Deleted> {
        let task = self
            .tasks()
            .get(task_id)
            .ok_or_else(|| Error::TaskNotFound {
                task_id: task_id.to_owned(),
            })?;
        let running = task.activity().running;
        if running > 0 && !force {
            return Err(Error::TaskBusy {
                task_id: task_id.to_owned(),
                running,
            });
        }
        self.tasks().remove(task_id);
        // Records first, so each is counted here rather than ended by a
        // waiter the closing pool wakes.
        let mut cancelled_running = 0;
        for record in self.inner.executions.unfinished(Some(task_id)) {
            let error =
                ExecutionError::new("task_deleted", format!("task `{task_id}` was deleted"));
            if !matches!(
                record.cancel(false, CancelReason::Host(error)),
                CancelOutcome::AlreadyEnded(_)
            ) {
                cancelled_running += 1;
            }
        }
        task.pool.close();
        let cleaned_executions = if cleanup_executions {
            self.inner.executions.remove_task(task_id)
        } else {
            0
        };
        tracing::info!(task = task_id, cancelled_running, "task deleted");
        Ok(Deleted {
            membership: task.membership.clone(),
            cancelled_running,
            cleaned_executions,
        })
    }

    /// The task with this id.
    pub fn task(&self, task_id: &str) -> Option<Arc<Task>> {
        self.tasks().get(task_id)
    }

    /// Destroys pooled instances idle longer than the configured timeout
    /// (keeping each pool's minimum); returns how many went.
    pub fn reap_idle(&self) -> usize {
        let idle_for = self.inner.config.pool.idle_timeout;
        self.tasks()
            .all()
            .iter()
            .map(|t| t.pool.reap_idle(idle_for))
            .sum()
    }

    /// Reaps idle instances periodically until the runtime shuts down.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let host = self.clone();
        let every = (self.inner.config.pool.idle_timeout / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let reaped = host.reap_idle();
                if reaped > 0 {
                    tracing::debug!(reaped, "reaped idle instances");
                }
            }
        })
    }

    /// How long `function` of `task_id` is expected to take, from its recent
    /// completed runs (zero when there are none yet, or no such task).
    pub fn estimated_duration(&self, task_id: &str, function: &str) -> Duration {
        self.task(task_id)
            .map_or(Duration::ZERO, |t| t.expected_duration(function))
    }

    /// When the host started (wall clock), for reporting.
    pub fn started_at(&self) -> SystemTime {
        SystemTime::now() - self.inner.started.elapsed()
    }
}
