//! [`Host`]: spearlet as a library. The gRPC service is a thin adapter over it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::artifact::ArtifactStore;
use crate::config::Config;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::exec::{CancelOutcome, CancelReason, ExecutionError, ExecutionStore};
use crate::loader::Plugin;
use crate::pool::QuarantineLimits;
use crate::task::{Task, TaskRegistry};
use crate::tier::{Bound, PluginProfile, TierPolicy};

mod calls;
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
pub use instances::DestroyedInstance;
pub use stats::HostStats;
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
    /// The instances destroyed on request lately, newest last (see
    /// [`Host::instance_destroyed`]).
    destroyed: Mutex<std::collections::VecDeque<Arc<str>>>,
}

/// How deleting a task went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// Its standing in the cluster: local, registered by this node, or a replica.
    pub membership: crate::task::Membership,
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
        let policy = config.tiers.tier_policy();
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
                destroyed: Mutex::default(),
            }),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Its artifact store.
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.inner.artifacts
    }

    /// Its tasks.
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
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
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
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
