//! The host's side of the state database (`crate::state`): tasks recorded
//! when created, woken after a restart; ASYNC executions recorded from
//! acceptance to their end, and reported after a crash.
//!
//! A task restored from the database is *dormant* until first used (or
//! until start, with `tasks.preload`): its plugin is loaded again then,
//! pinned to the digest recorded at creation and verified on the bytes
//! loaded.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Host;
use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::exec::{
    ExecutionError, ExecutionMode, ExecutionRecord, ExecutionStatus, ExecutionStore, Fingerprint,
};
use crate::state::{
    ArtifactRecord, FolderReport, HexDigest, MembershipRecord, Persistence, Retention, StateDb,
    StoredExecution, StoredTask, StoredVersion, TaskRecord, VersionRecord,
};
use crate::task::{CreationKey, NewTask, Task};

/// The code an ASYNC execution ends with when a restart cut it short.
pub const HOST_RESTARTED: &str = "host_restarted";

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Brings the ASYNC executions of the last run into `store`: ended ones as
/// they ended, unfinished ones as FAILED with [`HOST_RESTARTED`] (and so
/// recorded). Only those `store` keeps come back — accepted within `ttl`,
/// the newest it holds — streamed from the database oldest first, so that
/// no more outputs are in memory than the store keeps; the others are
/// removed from the database, and from then on it keeps what the store
/// keeps.
pub(super) fn restore_executions(
    state: &StateDb,
    store: &ExecutionStore,
    ttl: Duration,
) -> Result<()> {
    let retention = Retention {
        max_records: store.max_records(),
        ttl,
    };
    let mut cut_short = 0usize;
    let done = state.restore_executions(retention, |mut stored| {
        let (record, _) = store.restore(
            &stored.id,
            Fingerprint::from_raw(stored.parameters_hash),
            &Arc::from(stored.task_id.as_str()),
            &Arc::from(stored.function.as_str()),
        );
        let status = stored
            .status
            .as_deref()
            .and_then(|s| {
                ExecutionStatus::ALL
                    .into_iter()
                    .find(|x| x.to_string() == s)
            })
            .filter(|s| s.is_final());
        match status {
            Some(status) => {
                let error = (!stored.error_code.is_empty())
                    .then(|| ExecutionError::new(&stored.error_code, &stored.error_message));
                record.finish(status, stored.output.map(Into::into), error);
            }
            None => {
                cut_short += 1;
                let error = ExecutionError::new(
                    HOST_RESTARTED,
                    "the host stopped (crashed or was killed) before this execution ended; \
                     it may have run in part",
                );
                stored.status = Some(ExecutionStatus::Failed.to_string());
                stored.error_code = error.code.clone();
                stored.error_message = error.message.clone();
                record.finish(ExecutionStatus::Failed, None, Some(error));
                state.put_execution(stored)?;
            }
        }
        Ok(())
    })?;
    if done.removed > 0 {
        tracing::info!(
            executions = done.removed,
            "ASYNC executions past executions.record_ttl or executions.max_records are removed from the state database"
        );
    }
    if cut_short > 0 {
        tracing::warn!(
            executions = cut_short,
            "ASYNC executions accepted before a crash are reported FAILED ({HOST_RESTARTED})"
        );
    }
    Ok(())
}

impl Host {
    /// Records a task being created here, before anyone can see it.
    /// Replicas of other nodes' tasks are not recorded: the cluster has them.
    pub(crate) fn record_new_task(&self, task: &NewTask) -> Result<()> {
        let now = unix_millis(SystemTime::now()) / 1000;
        self.record(
            &task.id,
            &task.name,
            &task.description,
            &task.artifact,
            &task.plugin,
            &task.metadata,
            &task.membership,
            now,
            None,
        )
    }

    /// Records a task's new version (an upgrade or a rollback).
    pub(crate) fn record_task(&self, task: &Task) -> Result<()> {
        let created = task
            .created_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.record(
            &task.id,
            &task.name,
            &task.description,
            &task.artifact,
            &task.plugin,
            &task.metadata,
            &task.membership,
            created,
            task.switch.as_ref(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        id: &str,
        name: &str,
        description: &str,
        artifact: &ArtifactSpec,
        plugin: &crate::loader::Plugin,
        metadata: &std::collections::BTreeMap<String, String>,
        membership: &crate::task::Membership,
        created_at: u64,
        switch: Option<&crate::task::Switch>,
    ) -> Result<()> {
        let Some(membership) = MembershipRecord::of(membership) else {
            return Ok(());
        };
        let digest = HexDigest::of(&plugin.digest());
        let previous = switch.and_then(|switch| {
            let previous = switch.previous.as_ref()?;
            Some((
                previous,
                HexDigest::of(&previous.plugin.digest()),
                switch.at,
            ))
        });
        // One `write` to the journal, in the page cache: done here rather
        // than on a blocking thread, whose hand-off would cost more. The
        // record borrows the task's fields: it is encoded once, straight
        // from them.
        self.inner.state.put_task_record(&TaskRecord {
            id,
            name,
            description,
            artifact: ArtifactRecord::from(artifact),
            digest: digest.as_str(),
            metadata,
            membership,
            created_at,
            previous: previous
                .as_ref()
                .map(|(previous, digest, at)| VersionRecord {
                    artifact: ArtifactRecord::from(&previous.artifact),
                    digest: digest.as_str(),
                    switched_at: unix_millis(*at),
                }),
        })
    }

    /// Deletes a task as [`Host::delete_task`] does, and its record, so a
    /// restart does not bring it back; a dormant task is deleted too.
    ///
    /// # Errors
    ///
    /// As [`Host::delete_task`]; [`Error::State`].
    pub async fn remove_task(
        &self,
        task_id: &str,
        force: bool,
        cleanup_executions: bool,
    ) -> Result<super::Deleted> {
        let deleted = match self.delete_task(task_id, force, cleanup_executions) {
            Ok(deleted) => deleted,
            Err(Error::TaskNotFound { .. }) if self.dormant_task(task_id, false).is_some() => {
                let stored = self.dormant_task(task_id, false).expect("checked above");
                super::Deleted {
                    membership: stored.membership.into(),
                    cancelled_running: 0,
                    cleaned_executions: 0,
                }
            }
            Err(e) => return Err(e),
        };
        self.forget_task(task_id).await?;
        Ok(deleted)
    }

    /// Forgets a deleted task (loaded or dormant).
    pub(crate) async fn forget_task(&self, task_id: &str) -> Result<()> {
        self.dormant().remove(task_id);
        // One journal `write`, here (a hand-off would cost more).
        self.inner.state.remove_task(task_id)
    }

    fn dormant(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, StoredTask>> {
        self.inner
            .dormant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tasks recorded by an earlier run and not loaded yet.
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
    pub fn dormant_tasks(&self) -> Vec<StoredTask> {
        self.dormant().values().cloned().collect()
    }

    /// The dormant task with this id, or (`by_name`) this name.
    pub(crate) fn dormant_task(&self, key: &str, by_name: bool) -> Option<StoredTask> {
        let dormant = self.dormant();
        if by_name {
            dormant.values().find(|t| t.name == key).cloned()
        } else {
            dormant.get(key).cloned()
        }
    }

    /// Loads a dormant task: its plugin from the cache (or its location),
    /// verified against the recorded digest, a pool warmed, the task
    /// registered under its recorded id. Racing callers wake it once.
    ///
    /// # Errors
    ///
    /// What loading the artifact or warming the pool fails with (the task
    /// stays dormant, to be tried again).
    pub(crate) async fn wake(&self, stored: StoredTask) -> Result<Arc<Task>> {
        let id = stored.id.clone();
        let task = self
            .tasks()
            .get_or_create(CreationKey::Id(id.clone()), async {
                let display = ArtifactSpec::from(stored.artifact.clone());
                let pinned = ArtifactSpec {
                    checksum: stored.digest.clone(),
                    ..display.clone()
                };
                // The cached copy first: the bytes verified at creation,
                // whatever the location holds by now.
                let digest: crate::digest::Sha256Digest = stored.digest.parse()?;
                let isolation = crate::invoke::IsolationSetting::of_task(&stored.metadata)?.isolation;
                let plugin = match self.artifacts().load_held(&digest, isolation).await? {
                    Some(plugin) => plugin,
                    None => self.artifacts().load_as(&pinned, isolation).await?,
                };
                tracing::info!(task = %id, name = %stored.name, digest = %stored.digest, "restoring a task recorded before the restart");
                let mut task = self
                    .assemble_task(
                        Arc::from(id.as_str()),
                        (&stored.name, &stored.description),
                        &display,
                        plugin,
                        &stored.metadata,
                        stored.membership.clone().into(),
                    )
                    .await?;
                if let Some(previous) = &stored.previous {
                    task.switch = Some(self.restore_previous(&id, previous, isolation).await);
                }
                Ok(task)
            })
            .await?;
        self.dormant().remove(&id);
        Ok(task)
    }

    /// The switch a restored task last went through, with the version it
    /// replaced loaded again for a rollback — when it still can be: a
    /// version that no longer loads is logged and not offered.
    async fn restore_previous(
        &self,
        id: &str,
        previous: &StoredVersion,
        isolation: crate::isolate::Isolation,
    ) -> crate::task::Switch {
        let at = UNIX_EPOCH + Duration::from_millis(previous.switched_at);
        let artifact = ArtifactSpec::from(previous.artifact.clone());
        let loaded = async {
            let digest: crate::digest::Sha256Digest = previous.digest.parse()?;
            let plugin = match self.artifacts().load_held(&digest, isolation).await? {
                Some(plugin) => plugin,
                None => {
                    let pinned = ArtifactSpec {
                        checksum: previous.digest.clone(),
                        ..artifact.clone()
                    };
                    self.artifacts().load_as(&pinned, isolation).await?
                }
            };
            Ok::<_, Error>(crate::task::PreviousVersion {
                pin: Arc::new(self.artifacts().cache().pin(&digest)),
                artifact: artifact.clone(),
                plugin,
            })
        };
        let previous = match loaded.await {
            Ok(previous) => Some(previous),
            Err(e) => {
                tracing::warn!(task = id, digest = %previous.digest, error = %e, "the version a rollback would return to cannot be loaded; none is offered");
                None
            }
        };
        crate::task::Switch { at, previous }
    }

    /// Wakes every dormant task (`tasks.preload`), logging the ones that
    /// cannot be: they stay dormant.
    pub async fn preload(&self) {
        for stored in self.dormant_tasks() {
            let (id, name) = (stored.id.clone(), stored.name.clone());
            if let Err(e) = self.wake(stored).await {
                tracing::warn!(task = %id, name, error = %e, "a recorded task cannot be restored yet");
            }
        }
    }

    /// Records an ASYNC execution as accepted, durably, before the client
    /// is told it was.
    pub(crate) async fn record_accepted(&self, record: &ExecutionRecord) -> Result<()> {
        let stored = StoredExecution {
            id: record.id().to_owned(),
            task_id: record.task_id().to_owned(),
            function: record.function().to_owned(),
            accepted_at: unix_millis(SystemTime::now()),
            status: None,
            output: None,
            error_code: String::new(),
            error_message: String::new(),
            parameters_hash: record.parameters_fingerprint().to_raw(),
        };
        // As for tasks: one journal `write`, here.
        self.inner.state.put_execution(stored)
    }

    /// Records how an ASYNC execution ended (nothing while it runs on).
    pub(crate) async fn record_ended(&self, record: &ExecutionRecord) {
        let snapshot = record.snapshot();
        if !snapshot.status.is_final() {
            return;
        }
        let stored = StoredExecution {
            id: snapshot.execution_id.to_string(),
            task_id: snapshot.task_id.to_string(),
            function: snapshot.function.to_string(),
            accepted_at: unix_millis(snapshot.created_at),
            status: Some(snapshot.status.to_string()),
            output: snapshot.output.as_ref().map(Into::into),
            error_code: snapshot
                .error
                .as_ref()
                .map(|e| e.code.clone())
                .unwrap_or_default(),
            error_message: snapshot
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            parameters_hash: record.parameters_fingerprint().to_raw(),
        };
        if let Err(e) = self.inner.state.put_execution(stored) {
            tracing::warn!(execution = %snapshot.execution_id, error = %e, "how an ASYNC execution ended was not recorded; after a restart it reads as cut short");
        }
    }

    /// The ASYNC executions not ended yet.
    pub(crate) fn unfinished_async(&self) -> Vec<Arc<ExecutionRecord>> {
        self.inner
            .executions
            .unfinished(None)
            .into_iter()
            .filter(|r| r.mode() == ExecutionMode::Async)
            .collect()
    }

    /// Whether what the host records (tasks, ASYNC executions) reaches its
    /// database, or waits in the journal while folding it fails.
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
    pub fn persistence(&self) -> Persistence {
        self.inner.state.health()
    }

    /// Bytes in the state journal, not folded into the database yet.
    pub fn state_journal_bytes(&self) -> u64 {
        self.inner.state.journal_bytes()
    }

    /// The state folder's report, changed as it folds, fails and recovers:
    /// what to wait on for a change of [`Host::persistence`].
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
    pub fn persistence_changes(&self) -> tokio::sync::watch::Receiver<FolderReport> {
        self.inner.state.subscribe()
    }

    /// Records how `records` ended, for those that have: a graceful stop
    /// calls it for executions ended from outside their task (abandoned at
    /// the end of the grace), whose task may never get to record it.
    pub(crate) async fn record_endings(&self, records: &[Arc<ExecutionRecord>]) {
        for record in records {
            self.record_ended(record).await;
        }
    }
}
