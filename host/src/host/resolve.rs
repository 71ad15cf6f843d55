//! Resolving a call's target to a task: a known one (fresh, or upgraded
//! when its artifact changed), one fetched from the SMS, or one created from
//! its artifact — fetched, verified, loaded and put in the registry once,
//! however many calls race for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Host;
use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::invoke::{metadata, InvokeRequest, IsolationSetting, Target, TaskOrigin};
use crate::isolate::Isolation;
use crate::loader::Plugin;
use crate::pool::{InstancePool, Isolated, PoolContext, PoolLimits};
use crate::sms::PendingRegistration;
use crate::task::{CreationKey, Membership, NewTask, SourceFile, Task};
use crate::tier::PluginProfile;

impl Host {
    /// The task `target` names, if it exists here already and can be used
    /// without looking further: a NEW_TASK's artifact must be pinned to the
    /// digest the task runs (anything else needs the staleness check of
    /// the general path, which may touch the file system).
    pub(crate) fn known_task(&self, target: &Target) -> Option<Arc<Task>> {
        match target {
            Target::NewTask { name, artifact, .. } => {
                let task = self.tasks().by_name(name)?;
                let pinned: crate::digest::Sha256Digest = artifact.checksum.parse().ok()?;
                (pinned == task.plugin.digest()).then_some(task)
            }
            Target::ExistingTask { task_id, .. } => self.tasks().get(task_id),
        }
    }

    /// Finds or creates the task `request` is for: flow 2 (NEW_TASK) or 3
    /// (EXISTING_TASK) of `docs/invocation-flow.md`, asking the SMS about an unknown id when
    /// the host is part of a cluster. Returns the task and whether this
    /// invocation created it.
    pub(crate) async fn resolve_task(
        &self,
        request: &InvokeRequest,
    ) -> Result<(Arc<Task>, TaskOrigin)> {
        match &request.target {
            Target::NewTask {
                name,
                description,
                artifact,
            } => {
                if let Some(task) = self.tasks().by_name(name) {
                    return Box::pin(self.fresh_or_upgraded(task, artifact, request)).await;
                }
                if let Some(stored) = self.dormant_task(name, true) {
                    return Ok((Box::pin(self.wake(stored)).await?, TaskOrigin::Found));
                }
                // Boxed: creation (artifact fetch and load) is a large future,
                // and the path that only finds the task must stay small.
                Box::pin(self.create_task(
                    CreationKey::Name(name.clone()),
                    None,
                    (name, description),
                    artifact,
                    request,
                ))
                .await
            }
            Target::ExistingTask {
                task_id,
                create_if_not_exists,
                artifact,
                name,
                description,
            } => {
                if let Some(task) = self.tasks().get(task_id) {
                    return Ok((task, TaskOrigin::Found));
                }
                if let Some(stored) = self.dormant_task(task_id, false) {
                    return Ok((Box::pin(self.wake(stored)).await?, TaskOrigin::Found));
                }
                if let Some(sms) = self.sms() {
                    let deadline = request.timeout.map(|t| std::time::Instant::now() + t);
                    match Box::pin(self.replicate(sms, task_id, deadline)).await {
                        Ok(task) => return Ok((task, TaskOrigin::Found)),
                        Err(Error::TaskNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                if !create_if_not_exists {
                    return Err(Error::TaskNotFound {
                        task_id: task_id.clone(),
                    });
                }
                let artifact = artifact
                    .as_ref()
                    .ok_or_else(|| Error::ArtifactSpecRequired {
                        task_id: task_id.clone(),
                    })?;
                let name = if name.is_empty() { task_id } else { name };
                Box::pin(self.create_task(
                    CreationKey::Id(task_id.clone()),
                    Some(Arc::from(task_id.as_str())),
                    (name, description),
                    artifact,
                    request,
                ))
                .await
            }
        }
    }

    /// The task a NEW_TASK names, unless the request's artifact is evidently
    /// not what the task runs — another checksum, another location, or its
    /// local file changed since the task was created. Never serve stale code
    /// silently: that is refused ([`Error::StaleArtifact`]) unless the
    /// request asks for an upgrade ([`crate::invoke::UPGRADE_KEY`]), which switches the
    /// task blue/green (see `Host::upgrade_task`) before the call runs.
    async fn fresh_or_upgraded(
        &self,
        task: Arc<Task>,
        artifact: &ArtifactSpec,
        request: &InvokeRequest,
    ) -> Result<(Arc<Task>, TaskOrigin)> {
        let Some(reason) = self.staleness(&task, artifact)? else {
            return Ok((task, TaskOrigin::Found));
        };
        if !request.wants_upgrade() {
            return Err(Error::StaleArtifact {
                name: task.name.clone(),
                task_id: task.id.to_string(),
                reason,
            });
        }
        tracing::info!(task = %task.id, name = %task.name, %reason, "upgrading a task whose artifact changed, as asked");
        self.upgrade_task(
            &task.id,
            artifact,
            std::time::Duration::from_secs(30),
            false,
        )
        .await?;
        let now = self
            .tasks()
            .get(&task.id)
            .ok_or_else(|| Error::TaskChanged {
                task_id: task.id.to_string(),
            })?;
        Ok((now, TaskOrigin::Upgraded))
    }

    /// [`Error::StaleArtifact`] when `artifact` is evidently not what `task`
    /// runs (a dry run reports what the real call would be refused with).
    pub(crate) async fn check_fresh(
        &self,
        task: &Task,
        artifact: &ArtifactSpec,
        request: &InvokeRequest,
    ) -> Result<()> {
        match self.staleness(task, artifact)? {
            Some(reason) if !request.wants_upgrade() => Err(Error::StaleArtifact {
                name: task.name.clone(),
                task_id: task.id.to_string(),
                reason,
            }),
            _ => Ok(()),
        }
    }

    /// Why `artifact` is evidently not what `task` runs, if it is not.
    fn staleness(&self, task: &Task, artifact: &ArtifactSpec) -> Result<Option<String>> {
        let running = task.plugin.digest();
        if !artifact.checksum.trim().is_empty() {
            let asked: crate::digest::Sha256Digest = artifact.checksum.parse()?;
            return Ok((asked != running).then(|| {
                format!("the request pins sha256:{asked}, the task runs sha256:{running}")
            }));
        }
        if artifact.location.trim() != task.artifact.location.trim() {
            return Ok(Some(format!(
                "the task was created from `{}`, the request names `{}`",
                task.artifact.location, artifact.location
            )));
        }
        let (Some(path), Some(then)) = (artifact.local_path(), task.source) else {
            return Ok(None);
        };
        // One `stat`, inline: cheaper than a hand-off to a blocking thread.
        let now = SourceFile::of(&path);
        Ok((now.as_ref() != Some(&then)).then(|| {
            format!(
                "`{}` changed since the task was created from it (sha256:{running})",
                artifact.location
            )
        }))
    }

    /// Creates a task under `id` (NEW_TASK: none, so the SMS assigns one in
    /// a cluster, else a fresh one), registering it at the SMS after its
    /// plugin loaded. If anything fails after the registration, the
    /// registration is withdrawn: nothing is left behind.
    async fn create_task(
        &self,
        key: CreationKey,
        id: Option<Arc<str>>,
        (name, description): (&str, &str),
        artifact: &ArtifactSpec,
        request: &InvokeRequest,
    ) -> Result<(Arc<Task>, TaskOrigin)> {
        let mut created = false;
        // Withdrawn when dropped: a creation that fails, or whose caller
        // goes away, leaves no registration behind.
        let mut pending: Option<PendingRegistration> = None;
        let (mut registered, mut recorded): (Option<String>, Option<Arc<str>>) = (None, None);
        let outcome = self
            .tasks()
            .get_or_create(key, async {
                created = true;
                let limits = self.pool_limits(&request.metadata)?;
                let setting = self.isolation_setting(&request.metadata)?;
                let mut metadata = request.metadata.clone();
                setting.record(&mut metadata);
                let (plugin, source) = self
                    .artifacts()
                    .load_sourced(artifact, setting.isolation)
                    .await?;
                let (id, membership, registration) = self
                    .membership(id, (name, description), artifact, &plugin, &metadata)
                    .await?;
                pending = registration;
                // The pool is awaited here rather than in a future of its
                // own around it: that one would hold its parts twice.
                let (profile, context) = self.pool_context(&plugin, setting);
                let pool = InstancePool::prewarmed(
                    &id,
                    Arc::clone(&plugin),
                    instance_config(&metadata),
                    limits,
                    context,
                )
                .await?;
                let new = self.new_task(Assembly {
                    id,
                    name,
                    description,
                    artifact,
                    plugin,
                    metadata,
                    membership,
                    setting,
                    source,
                    pool,
                    profile,
                });
                // Recorded before anyone can see it: a restart, even a crash,
                // brings back every task whose creation was acknowledged.
                self.record_new_task(&new)?;
                recorded = Some(Arc::clone(&new.id));
                // Nothing awaits from here until the task is in the
                // registry: the registration is kept, unless inserting it
                // fails (below).
                registered = pending.take().map(PendingRegistration::keep);
                Ok(new)
            })
            .await;
        let origin = if created {
            TaskOrigin::Created
        } else {
            TaskOrigin::Found
        };
        match outcome {
            Ok(task) => Ok((task, origin)),
            Err(e) => {
                // Boxed, as everything this path alone awaits: the future of
                // every creation would carry it otherwise.
                Box::pin(self.undo_creation(recorded, registered, &e)).await;
                Err(e)
            }
        }
    }

    /// A new task's id and standing: local, under the caller's id or a
    /// fresh one; or, in a cluster, registered at the SMS (the caller's id,
    /// else the SMS's) with the registration, withdrawn if dropped.
    async fn membership(
        &self,
        id: Option<Arc<str>>,
        (name, description): (&str, &str),
        artifact: &ArtifactSpec,
        plugin: &Arc<Plugin>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(Arc<str>, Membership, Option<PendingRegistration>)> {
        let Some(sms) = self.sms() else {
            let id = id.unwrap_or_else(crate::exec::new_id);
            return Ok((id, Membership::Local, None));
        };
        let (id, sms_id, registration) = self
            .register_new(sms, id, (name, description), artifact, plugin, metadata)
            .await?;
        Ok((id, Membership::Registered { sms_id }, Some(registration)))
    }

    /// Registers a task about to be created at the SMS, under a name no
    /// other task here has.
    async fn register_new(
        &self,
        sms: &Arc<crate::sms::Sms>,
        id: Option<Arc<str>>,
        (name, description): (&str, &str),
        artifact: &ArtifactSpec,
        plugin: &Arc<Plugin>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(Arc<str>, String, PendingRegistration)> {
        if let Some(existing) = self.tasks().by_name(name) {
            return Err(Error::TaskNameTaken {
                name: name.to_owned(),
                existing: existing.id.to_string(),
            });
        }
        // Boxed: a gRPC call is a large future, which a host in no cluster
        // would carry for nothing.
        let sms_id = Box::pin(self.register_in_cluster(
            sms,
            plugin,
            (name, description),
            artifact,
            id.as_deref(),
            metadata,
        ))
        .await?;
        let registration = PendingRegistration::new(Arc::clone(sms), sms_id.clone());
        let id = id.unwrap_or_else(|| Arc::from(sms_id.as_str()));
        Ok((id, sms_id, registration))
    }

    /// Leaves nothing of a creation that failed (`e`) behind: its durable
    /// record, and its registration at the SMS, when it got that far.
    async fn undo_creation(
        &self,
        recorded: Option<Arc<str>>,
        registered: Option<String>,
        e: &Error,
    ) {
        if let Some(id) = recorded {
            if let Err(e) = self.forget_task(&id).await {
                tracing::warn!(task = %id, error = %e, "a task whose creation failed stays recorded; it is restored after a restart");
            }
        }
        if let Some(sms_id) = registered {
            self.withdraw_registration(&sms_id, e).await;
        }
    }

    /// A task's parts around a loaded plugin: its pool, pre-warmed (the
    /// constructors run here), configured from the metadata, and its
    /// isolation tier, read from the metadata as its creation wrote it
    /// ([`IsolationSetting::of_task`]).
    pub(crate) async fn assemble_task(
        &self,
        id: Arc<str>,
        (name, description): (&str, &str),
        artifact: &ArtifactSpec,
        plugin: Arc<Plugin>,
        metadata: &BTreeMap<String, String>,
        membership: Membership,
    ) -> Result<NewTask> {
        let limits = self.pool_limits(metadata)?;
        let setting = IsolationSetting::of_task(metadata)?;
        let (profile, context) = self.pool_context(&plugin, setting);
        let pool = InstancePool::prewarmed(
            &id,
            Arc::clone(&plugin),
            instance_config(metadata),
            limits,
            context,
        )
        .await?;
        // One `stat`, here: a hand-off to a blocking thread would cost
        // more than the call it carries.
        let source = artifact.local_path().and_then(|path| SourceFile::of(&path));
        Ok(self.new_task(Assembly {
            id,
            name,
            description,
            artifact,
            plugin,
            metadata: metadata.clone(),
            membership,
            setting,
            source,
            pool,
            profile,
        }))
    }

    /// What a pool of `plugin` for a task of `setting` works with, and the
    /// inline tier's profile of the plugin.
    fn pool_context(
        &self,
        plugin: &Plugin,
        setting: IsolationSetting,
    ) -> (Arc<PluginProfile>, PoolContext) {
        let profile = self.profile_of(plugin);
        let context = PoolContext {
            policy: self.tier_policy(),
            profile: Arc::clone(&profile),
            quarantine: Arc::clone(self.quarantine_limits()),
            isolated: (setting.isolation == Isolation::Process).then(|| Isolated {
                workers: Arc::clone(self.artifacts().workers()),
                memory_max: setting.memory_max,
                gate: Arc::default(),
            }),
        };
        (profile, context)
    }

    /// A task's parts, assembled, its pool warmed: a creation puts them
    /// together from what it has at hand — its metadata (owned, with the
    /// tier written in), its isolation setting as read from that metadata,
    /// and the identity of the local file the plugin was read from, found
    /// by the load — nothing parsed twice, no file looked at again.
    fn new_task(&self, parts: Assembly<'_>) -> NewTask {
        let Assembly {
            id,
            name,
            description,
            artifact,
            plugin,
            metadata,
            membership,
            setting,
            source,
            pool,
            profile,
        } = parts;
        tracing::info!(task = %id, name, plugin = plugin.name(), digest = %plugin.digest(), "task created");
        NewTask {
            pin: Some(self.artifacts().cache().pin(&plugin.digest())),
            id,
            name: name.to_owned(),
            description: description.to_owned(),
            artifact: artifact.clone(),
            plugin,
            metadata,
            isolation: setting.isolation,
            memory_max: setting.memory_max,
            pool,
            profile,
            membership,
            switch: None,
            source,
        }
    }

    /// The isolation setting a new task's invocation `metadata` asks for,
    /// the server's default tier (`tiers.isolation`) when it names none.
    fn isolation_setting(&self, metadata: &BTreeMap<String, String>) -> Result<IsolationSetting> {
        IsolationSetting::from_metadata(metadata, self.config().tiers.isolation)
    }

    fn pool_limits(&self, metadata: &BTreeMap<String, String>) -> Result<PoolLimits> {
        metadata::pool_limits(metadata, &self.config().pool)
    }
}

/// What [`Host::new_task`] puts together.
struct Assembly<'a> {
    id: Arc<str>,
    name: &'a str,
    description: &'a str,
    artifact: &'a ArtifactSpec,
    plugin: Arc<Plugin>,
    metadata: BTreeMap<String, String>,
    membership: Membership,
    setting: IsolationSetting,
    source: Option<SourceFile>,
    pool: InstancePool,
    profile: Arc<PluginProfile>,
}

/// A task's instances' configuration: its metadata without the
/// `spearlet.` keys, which are the host's.
fn instance_config(metadata: &BTreeMap<String, String>) -> Vec<(String, String)> {
    metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("spearlet."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::InvokeRequest;

    /// The file a task was created from is remembered as it was when its
    /// bytes were read: a task pinned to bytes its path no longer holds is
    /// created from the plugin loaded before (nothing read), and a later
    /// request naming the path alone is refused, never served the old code.
    #[test]
    fn a_task_pinned_to_bytes_its_file_no_longer_holds_is_stale_for_the_file() {
        use crate::config::{ArtifactConfig, Config, TiersConfig};
        use crate::digest::Sha256Digest;
        use spearlet_test_artifacts::Artifact;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (data, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let path = root.path().join("libplugin.so");
            let built = std::fs::read(Artifact::Echo.path()).unwrap();
            std::fs::write(&path, &built).unwrap();
            let host = Host::new(Config {
                data_dir: data.path().to_owned(),
                artifacts: ArtifactConfig {
                    roots: vec![root.path().to_owned()],
                    ..ArtifactConfig::default()
                },
                tiers: TiersConfig {
                    first_load_in_worker: false,
                    warm_workers: 0,
                    ..TiersConfig::default()
                },
                ..Config::default()
            })
            .unwrap();
            let digest = Sha256Digest::of(&built).to_hex();
            let request = |name: &str, checksum: &str| {
                let artifact = ArtifactSpec::at(path.to_str().unwrap()).with_checksum(checksum);
                let target = Target::NewTask {
                    name: name.into(),
                    description: String::new(),
                    artifact,
                };
                InvokeRequest::new(target, "nop")
            };
            host.invoke(request("first", &digest)).await.unwrap();
            // Rebuilt: the path now names other bytes, in another file.
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, [built.as_slice(), b"rebuilt"].concat()).unwrap();
            let pinned = host.invoke(request("second", &digest)).await.unwrap();
            assert!(pinned.created_task);
            for name in ["first", "second"] {
                match host.invoke(request(name, "")).await {
                    Err(Error::StaleArtifact { reason, .. }) => {
                        assert!(reason.contains("changed since"), "{reason}");
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
        });
    }
}
