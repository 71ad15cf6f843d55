//! [`Host`]: spearlet as a library. The gRPC service is a thin adapter over it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::artifact::ArtifactStore;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::{
    self, ExecutionMode, ExecutionQuery, ExecutionSnapshot, ExecutionStatus, ExecutionStore, Job,
};
use crate::invoke::{InvokeOutcome, InvokeRequest};
use crate::loader::FunctionKind;
use crate::registry::{Task, TaskRegistry};
use crate::Value;

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
    artifacts: ArtifactStore,
    tasks: TaskRegistry,
    executions: ExecutionStore,
    started: Instant,
    pending_async: Arc<AtomicUsize>,
}

/// How deleting a task went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Executions that were still running (and were asked to stop).
    pub cancelled_running: usize,
    /// Finished execution records removed with it.
    pub cleaned_executions: usize,
}

/// Health and counters of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStats {
    /// Time since the host started.
    pub uptime: Duration,
    /// Tasks registered.
    pub tasks: usize,
    /// Tasks with an execution running now.
    pub active_tasks: usize,
    /// Executions running now.
    pub running: usize,
    /// Executions accepted but not started.
    pub pending: usize,
    /// Executions started since the host started.
    pub total_executions: u64,
    /// Records currently held, by status.
    pub by_status: BTreeMap<String, usize>,
    /// Records currently held, by function.
    pub by_function: BTreeMap<String, usize>,
    /// Mean execution time of the finished records held.
    pub average_execution_time: Duration,
    /// Share of finished records that completed, in percent.
    pub success_rate_percent: f64,
    /// Artifact cache counters.
    pub cache: crate::artifact::CacheStats,
}

impl Host {
    /// A host with `config`: its artifact cache is opened, nothing else runs
    /// until asked.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the data directory cannot be prepared.
    pub fn new(config: Config) -> Result<Host> {
        let artifacts = ArtifactStore::new(&config)?;
        let executions =
            ExecutionStore::new(config.executions.max_records, config.executions.record_ttl);
        Ok(Host {
            inner: Arc::new(Inner {
                artifacts,
                executions,
                config,
                tasks: TaskRegistry::default(),
                started: Instant::now(),
                pending_async: Arc::new(AtomicUsize::new(0)),
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

    /// Invokes a function (SYNC or ASYNC; STREAM goes through [`Host::stream`]).
    ///
    /// A function-level failure (the plugin returned an error, panicked, or
    /// the call timed out) is a successful return whose execution says so;
    /// `Err` is for requests that could not be served at all.
    ///
    /// # Errors
    ///
    /// [`Error::UseStreamFunction`] for STREAM mode; the task resolution
    /// errors ([`Error::TaskNotFound`], [`Error::ArtifactSpecRequired`], the
    /// artifact pipeline's); [`Error::FunctionNotFound`];
    /// [`Error::PoolExhausted`]; [`Error::TooManyPending`].
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeOutcome> {
        if request.mode == ExecutionMode::Stream {
            return Err(Error::UseStreamFunction);
        }
        self.start(request, None).await
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
        self.start(request, Some(chunks)).await
    }

    async fn start(
        &self,
        request: InvokeRequest,
        chunks: Option<mpsc::Sender<Value>>,
    ) -> Result<InvokeOutcome> {
        let deadline = request.timeout.map(|t| Instant::now() + t);
        let (task, created_task) = self.resolve_task(&request).await?;
        let function = task.plugin.function(&request.function)?;
        if chunks.is_none() && function.kind() == FunctionKind::Stream {
            tracing::debug!(function = %request.function, "stream function called without a stream; chunks are dropped");
        }
        let (record, fresh) = self.inner.executions.create(
            request.execution_id.clone(),
            &task.id,
            &request.function,
            request.mode,
        );
        let outcome = |execution: ExecutionSnapshot| InvokeOutcome {
            task_id: task.id.clone(),
            created_task,
            execution,
        };
        if !fresh {
            // Idempotent retry of a known execution: report, don't rerun.
            return Ok(outcome(record.snapshot()));
        }
        let job = Job {
            task: Arc::clone(&task),
            function,
            record: Arc::clone(&record),
            params: request.params,
            environment: request.environment,
            headers: request.headers,
            deadline,
            acquire_timeout: self.inner.config.pool.acquire_timeout,
            max_retries: request.max_retries,
            fresh_instance: request.force_new_instance,
            mode: request.mode,
            chunks,
        };
        match request.mode {
            ExecutionMode::Sync | ExecutionMode::Stream => {
                // Claim the instance first so an exhausted pool is an error
                // of the request, as the seed has it, not a failed execution.
                let wait = deadline.unwrap_or_else(|| Instant::now() + job.acquire_timeout);
                let lease = match task.pool.acquire(job.fresh_instance, wait).await {
                    Ok(lease) => lease,
                    Err(e) => {
                        record.finish(ExecutionStatus::Failed, None, Some(exec::error_of(&e)));
                        return Err(e);
                    }
                };
                exec::run(job, Some(lease)).await;
                Ok(outcome(record.snapshot()))
            }
            ExecutionMode::Async => {
                let limit = self.inner.config.executions.max_pending;
                let pending = Arc::clone(&self.inner.pending_async);
                if pending.fetch_add(1, Ordering::AcqRel) >= limit {
                    pending.fetch_sub(1, Ordering::AcqRel);
                    let e = Error::TooManyPending {
                        pending: limit,
                        limit,
                    };
                    record.finish(ExecutionStatus::Failed, None, Some(exec::error_of(&e)));
                    return Err(e);
                }
                tokio::spawn(async move {
                    exec::run(job, None).await;
                    pending.fetch_sub(1, Ordering::AcqRel);
                });
                Ok(outcome(record.snapshot()))
            }
        }
    }

    /// An execution's current state.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`].
    pub fn execution(&self, execution_id: &str) -> Result<ExecutionSnapshot> {
        self.inner
            .executions
            .get(execution_id)
            .map(|r| r.snapshot())
            .ok_or_else(|| Error::ExecutionNotFound {
                execution_id: execution_id.to_owned(),
            })
    }

    /// Asks an execution to stop: PENDING ones are cancelled at once; for
    /// running ones the cancellation flag is raised and they become CANCELLED
    /// when the plugin returns — or at once with `force` (the instance stays
    /// out of the pool until its call returns). Returns whether the request
    /// took effect, and the status right after it.
    ///
    /// # Errors
    ///
    /// [`Error::ExecutionNotFound`].
    pub fn cancel(&self, execution_id: &str, force: bool) -> Result<(bool, ExecutionStatus)> {
        let record =
            self.inner
                .executions
                .get(execution_id)
                .ok_or_else(|| Error::ExecutionNotFound {
                    execution_id: execution_id.to_owned(),
                })?;
        let status = record.status();
        if status.is_final() {
            return Ok((false, status));
        }
        record.request_cancel();
        let error = exec::ExecutionError {
            code: "cancelled".to_owned(),
            message: "cancelled on request".to_owned(),
        };
        if status == ExecutionStatus::Pending || force {
            record.finish(ExecutionStatus::Cancelled, None, Some(error));
            return Ok((true, ExecutionStatus::Cancelled));
        }
        Ok((true, record.status()))
    }

    /// Executions matching `query`, and whether more follow.
    pub fn executions(&self, query: &ExecutionQuery) -> (Vec<ExecutionSnapshot>, bool) {
        self.inner.executions.list(query)
    }

    /// Deletes a task: its instances are drained (idle ones now, busy ones
    /// when their calls return) and its artifact stays cached.
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
        task.pool.close();
        let mut cancelled_running = 0;
        for record in self.inner.executions.unfinished() {
            if record.task_id() == task_id {
                record.request_cancel();
                cancelled_running += 1;
            }
        }
        let cleaned_executions = if cleanup_executions {
            self.inner.executions.remove_task(task_id)
        } else {
            0
        };
        tracing::info!(task = task_id, cancelled_running, "task deleted");
        Ok(Deleted {
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

    /// Health and counters, from the live registry and records.
    pub fn stats(&self) -> HostStats {
        let tasks = self.tasks().all();
        let (records, _) = self.inner.executions.list(&ExecutionQuery {
            limit: usize::MAX,
            ..ExecutionQuery::default()
        });
        let mut by_status = BTreeMap::new();
        let mut by_function = BTreeMap::new();
        let (mut finished, mut completed, mut total_time) = (0usize, 0usize, Duration::ZERO);
        for r in &records {
            *by_status.entry(r.status.to_string()).or_insert(0) += 1;
            *by_function.entry(r.function.clone()).or_insert(0) += 1;
            if r.status.is_final() {
                finished += 1;
                total_time += r.execution_time;
                completed += usize::from(r.status == ExecutionStatus::Completed);
            }
        }
        let count = |s: ExecutionStatus| by_status.get(&s.to_string()).copied().unwrap_or(0);
        HostStats {
            uptime: self.inner.started.elapsed(),
            active_tasks: tasks.iter().filter(|t| t.activity().running > 0).count(),
            tasks: tasks.len(),
            running: count(ExecutionStatus::Running),
            pending: count(ExecutionStatus::Pending),
            total_executions: tasks.iter().map(|t| t.activity().execution_count).sum(),
            average_execution_time: if finished == 0 {
                Duration::ZERO
            } else {
                total_time / u32::try_from(finished).unwrap_or(u32::MAX)
            },
            success_rate_percent: if finished == 0 {
                100.0
            } else {
                completed as f64 * 100.0 / finished as f64
            },
            by_status,
            by_function,
            cache: self.artifacts().cache().stats(),
        }
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
