//! Blue/green upgrades and rollbacks of a task's plugin.
//!
//! The new version is verified, loaded and given a pre-warmed pool of its
//! own while the running one serves on; then the registry's entry for the
//! task id is swapped in one step. A call takes its task from the registry
//! once, when it starts, so every call runs wholly on one version: calls
//! that started before the switch finish on the old one, whose pool is
//! dropped when the last of them ends; calls after it run on the new one.
//! The hot path pays nothing for this.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Host;
use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::loader::{FunctionKind, Plugin};
use crate::task::{Membership, PreviousVersion, Switch, Task};

/// How a switch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The task (its id never changes).
    pub task_id: Arc<str>,
    /// What runs now: sha256 (hex), plugin version, location.
    pub current: (String, String, String),
    /// What ran before and is kept for a rollback (after a rollback: none).
    pub previous: Option<(String, String, String)>,
    /// When the switch happened.
    pub at: SystemTime,
    /// Functions the old version had and the new one lacks (allowed).
    pub removed: Vec<String>,
    /// Calls still running on the old version when the drain timeout ran
    /// out (they finish there; nothing is cut short).
    pub still_running: usize,
    /// The new version's digest was the running one's: nothing was switched.
    pub unchanged: bool,
}

fn version_of(artifact: &ArtifactSpec, plugin: &Plugin) -> (String, String, String) {
    (
        plugin.digest().to_hex(),
        plugin.version().to_owned(),
        artifact.location.clone(),
    )
}

impl Host {
    /// Switches task `task_id` to the plugin `artifact` names (see the
    /// module docs), then waits up to `drain` for the calls still running
    /// on the old version.
    ///
    /// # Errors
    ///
    /// [`Error::TaskNotFound`]; what loading the artifact or warming the new
    /// pool fails with; [`Error::FunctionsRemoved`] unless `allow_removed`;
    /// the SMS's errors when the task is registered there;
    /// [`Error::TaskChanged`] when the task was deleted or switched
    /// meanwhile. On any error the running version is untouched.
    pub async fn upgrade_task(
        &self,
        task_id: &str,
        artifact: &ArtifactSpec,
        drain: Duration,
        allow_removed: bool,
    ) -> Result<Switched> {
        let running = self.existing(task_id).await?;
        // The new version runs where the old one did.
        let plugin = self
            .artifacts()
            .load_as(artifact, running.isolation)
            .await?;
        if plugin.digest() == running.plugin.digest() {
            return Ok(Switched {
                task_id: Arc::clone(&running.id),
                current: version_of(&running.artifact, &running.plugin),
                previous: None,
                at: running.switch.as_ref().map_or(running.created_at, |s| s.at),
                removed: Vec::new(),
                still_running: 0,
                unchanged: true,
            });
        }
        let removed = removed_functions(&running.plugin, &plugin);
        if !removed.is_empty() && !allow_removed {
            return Err(Error::FunctionsRemoved {
                task_id: task_id.to_owned(),
                missing: removed,
            });
        }
        let previous = PreviousVersion {
            artifact: running.artifact.clone(),
            plugin: Arc::clone(&running.plugin),
            pin: Arc::new(self.artifacts().cache().pin(&running.plugin.digest())),
        };
        let switched = self
            .switch_to(&running, artifact, plugin, Some(previous), drain)
            .await?;
        Ok(Switched {
            removed,
            ..switched
        })
    }

    /// Switches task `task_id` back to the version the last upgrade
    /// replaced (once: the version rolled back from is not kept).
    ///
    /// # Errors
    ///
    /// [`Error::TaskNotFound`], [`Error::NoPreviousVersion`], and as
    /// [`Host::upgrade_task`].
    pub async fn rollback_task(&self, task_id: &str, drain: Duration) -> Result<Switched> {
        let running = self.existing(task_id).await?;
        let previous = running
            .switch
            .as_ref()
            .and_then(|s| s.previous.clone())
            .ok_or_else(|| Error::NoPreviousVersion {
                task_id: task_id.to_owned(),
            })?;
        self.switch_to(
            &running,
            &previous.artifact,
            Arc::clone(&previous.plugin),
            None,
            drain,
        )
        .await
    }

    /// The task to switch: a loaded one, or one recorded before a restart
    /// and not called since, woken first — a switch replaces a running
    /// version, and needs one to fall back on if the new one fails.
    async fn existing(&self, task_id: &str) -> Result<Arc<Task>> {
        if let Some(task) = self.tasks().get(task_id) {
            return Ok(task);
        }
        match self.dormant_task(task_id, false) {
            Some(stored) => Box::pin(self.wake(stored)).await,
            None => Err(Error::TaskNotFound {
                task_id: task_id.to_owned(),
            }),
        }
    }

    async fn switch_to(
        &self,
        running: &Arc<Task>,
        artifact: &ArtifactSpec,
        plugin: Arc<Plugin>,
        previous: Option<PreviousVersion>,
        drain: Duration,
    ) -> Result<Switched> {
        let membership = self.reregister(running, artifact, &plugin).await?;
        let mut next = match self
            .assemble_task(
                Arc::clone(&running.id),
                (&running.name, &running.description),
                artifact,
                plugin,
                &running.metadata,
                membership.clone(),
            )
            .await
        {
            Ok(next) => next,
            Err(e) => {
                self.undo_reregistration(&membership, running, &e).await;
                return Err(e);
            }
        };
        let at = SystemTime::now();
        next.switch = Some(Switch { at, previous });
        let next = Arc::new(Task::from(next));
        if let Err(e) = self.tasks().replace(running, Arc::clone(&next)) {
            self.undo_reregistration(&membership, running, &e).await;
            return Err(e);
        }
        if let Err(e) = self.record_task(&next) {
            tracing::warn!(task = %running.id, error = %e, "the new version is not recorded: a restart brings back the old one");
        }
        // The old registration goes once the new one is in place: the id
        // resolves at the SMS throughout.
        if let (Membership::Registered { sms_id: old }, Some(sms)) =
            (&running.membership, self.sms())
        {
            if let Err(e) = sms.unregister_task(old, "replaced by an upgrade").await {
                tracing::warn!(sms_id = %old, error = %e, "the replaced registration stays at the SMS");
            }
        }
        tracing::info!(
            task = %running.id,
            from = %running.plugin.digest(),
            to = %next.plugin.digest(),
            "task switched to a new version"
        );
        let still_running = running.drain(drain).await;
        Ok(Switched {
            task_id: Arc::clone(&running.id),
            current: version_of(&next.artifact, &next.plugin),
            previous: next
                .switch
                .as_ref()
                .and_then(|s| s.previous.as_ref())
                .map(|p| version_of(&p.artifact, &p.plugin)),
            at,
            removed: Vec::new(),
            still_running,
            unchanged: false,
        })
    }

    /// A task registered at the SMS is registered again with the new
    /// artifact, under its id as alias, so that every node resolves the id
    /// to what runs now.
    async fn reregister(
        &self,
        running: &Task,
        artifact: &ArtifactSpec,
        plugin: &Plugin,
    ) -> Result<Membership> {
        match (&running.membership, self.sms()) {
            (Membership::Registered { .. }, Some(sms)) => {
                let sms_id = self
                    .register_in_cluster(
                        sms,
                        plugin,
                        (&running.name, &running.description),
                        artifact,
                        Some(&running.id),
                        &running.metadata,
                    )
                    .await?;
                Ok(Membership::Registered { sms_id })
            }
            (membership, _) => Ok(membership.clone()),
        }
    }

    async fn undo_reregistration(&self, membership: &Membership, running: &Task, cause: &Error) {
        if let Membership::Registered { sms_id } = membership {
            if *membership != running.membership {
                self.withdraw_registration(sms_id, cause).await;
            }
        }
    }
}

/// Functions `old` exports that `new` does not, or exports as another
/// kind (unary against stream): a client calling them would break.
fn removed_functions(old: &Plugin, new: &Plugin) -> Vec<String> {
    old.functions()
        .iter()
        .filter(|f| {
            !new.functions().iter().any(|n| {
                n.name == f.name
                    && (n.kind == FunctionKind::Stream) == (f.kind == FunctionKind::Stream)
            })
        })
        .map(|f| f.name.to_string())
        .collect()
}
