//! Dry runs (`invocation_metadata["spearlet.dry_run"] = "true"`): everything
//! an invocation would do up to the call — resolve the task, verify and
//! load its artifact, resolve the function, check the parameters against
//! its declared signature — and nothing after: no task is created, no
//! instance made, no plugin function called.

use std::sync::Arc;

use super::Host;
use crate::error::{Error, Result};
use crate::invoke::{InvokeRequest, Target};
use crate::loader::{FunctionKind, Plugin};

pub use crate::invoke::DRY_RUN_KEY;

/// What an invocation would run.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The task's id, when it exists (a NEW_TASK that would create its task
    /// has none yet).
    pub task_id: Option<Arc<str>>,
    /// The plugin it would run, loaded and verified.
    pub plugin: Arc<Plugin>,
    /// The function.
    pub function: String,
    /// Its declared signature.
    pub signature: String,
    /// Unary or stream.
    pub kind: FunctionKind,
    /// Why the call's parameters do not fit the signature, if they do not
    /// (the real call would be refused with INVALID_ARGUMENT).
    pub parameters: Option<String>,
}

impl InvokeRequest {
    /// Whether it asks for a dry run ([`DRY_RUN_KEY`]).
    pub fn is_dry_run(&self) -> bool {
        self.metadata
            .get(DRY_RUN_KEY)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

impl Host {
    /// What `request` would run (see the module docs).
    ///
    /// # Errors
    ///
    /// What the invocation would fail with before its call: task not found,
    /// the artifact's refusals, [`Error::FunctionNotFound`]. Parameters that
    /// do not fit are reported in [`DryRun::parameters`], with the
    /// signature they do not fit.
    pub async fn dry_run(&self, request: &InvokeRequest) -> Result<DryRun> {
        // A task this call would create loads where it would run.
        let isolation = crate::invoke::IsolationSetting::from_metadata(
            &request.metadata,
            self.config().tiers.isolation,
        )?
        .isolation;
        let (task_id, plugin) = match &request.target {
            Target::NewTask { name, artifact, .. } => match self.tasks().by_name(name) {
                Some(task) => {
                    self.check_fresh(&task, artifact, request).await?;
                    (Some(Arc::clone(&task.id)), Arc::clone(&task.plugin))
                }
                None => match self.dormant_task(name, true) {
                    Some(stored) => {
                        let task = self.wake(stored).await?;
                        (Some(Arc::clone(&task.id)), Arc::clone(&task.plugin))
                    }
                    None => (None, self.artifacts().load_as(artifact, isolation).await?),
                },
            },
            Target::ExistingTask {
                task_id,
                create_if_not_exists,
                artifact,
                ..
            } => {
                if let Some(task) = self.tasks().get(task_id) {
                    (Some(Arc::clone(&task.id)), Arc::clone(&task.plugin))
                } else if let Some(stored) = self.dormant_task(task_id, false) {
                    let task = self.wake(stored).await?;
                    (Some(Arc::clone(&task.id)), Arc::clone(&task.plugin))
                } else {
                    self.would_fetch(task_id, *create_if_not_exists, artifact.as_ref(), isolation)
                        .await?
                }
            }
        };
        let function = match task_id.as_deref().and_then(|id| self.tasks().get(id)) {
            Some(task) => task.function(&request.function)?,
            // A task this call would create: registered with the request's
            // metadata.
            None => crate::task::resolve_function(
                &plugin,
                &request.metadata,
                task_id.as_deref().unwrap_or(match &request.target {
                    Target::NewTask { name, .. } | Target::ExistingTask { name, .. } => name,
                }),
                &request.function,
            )?,
        };
        let info = &plugin.functions()[function.index()];
        // Worded as the real call's refusal would be.
        let parameters = crate::signature::params(&info.signature).and_then(|declared| {
            let extra = crate::signature::takes_extra(&info.signature);
            crate::signature::check(&info.name, &declared, extra, &request.params).err()
        });
        Ok(DryRun {
            parameters,
            task_id,
            function: info.name.clone(),
            signature: info.signature.clone(),
            kind: info.kind,
            plugin,
        })
    }

    /// What a dry run of an id unknown here would load: the SMS's task of
    /// that id, else the request's artifact when it may create the task.
    async fn would_fetch(
        &self,
        task_id: &str,
        create_if_not_exists: bool,
        artifact: Option<&crate::artifact::ArtifactSpec>,
        isolation: crate::isolate::Isolation,
    ) -> Result<(Option<Arc<str>>, Arc<Plugin>)> {
        let remote = match self.sms() {
            Some(sms) => sms.find_task_by(task_id).await?,
            None => None,
        };
        Ok(match (remote, artifact) {
            (Some(remote), _) => {
                let spec = remote
                    .artifact
                    .map_err(|reason| Error::TaskNotRunnableHere {
                        task_id: task_id.to_owned(),
                        reason,
                    })?;
                let isolation =
                    crate::invoke::IsolationSetting::of_task(&remote.metadata)?.isolation;
                (
                    Some(Arc::from(task_id)),
                    self.artifacts().load_as(&spec, isolation).await?,
                )
            }
            (None, Some(artifact)) if create_if_not_exists => {
                (None, self.artifacts().load_as(artifact, isolation).await?)
            }
            (None, None) if create_if_not_exists => {
                return Err(Error::ArtifactSpecRequired {
                    task_id: task_id.to_owned(),
                })
            }
            (None, _) => {
                return Err(Error::TaskNotFound {
                    task_id: task_id.to_owned(),
                })
            }
        })
    }
}
