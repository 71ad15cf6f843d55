//! The seed's routing: which task an invocation runs on, creating it when
//! the request says so (flows 2 and 3 of the invocation logic).

pub mod metadata;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::exec::{ExecutionMode, ExecutionSnapshot};
use crate::host::Host;
use crate::isolate::{Isolation, ISOLATION_KEY};
use crate::loader::Plugin;
use crate::pool::{InstancePool, Isolated, PoolContext, PoolLimits};
use crate::registry::{CreationKey, Membership, NewTask, SourceFile, Task};
use crate::sms::PendingRegistration;
use crate::tier::PluginProfile;
use crate::Value;

/// Which task an invocation is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// INVOCATION_TYPE_NEW_TASK: the task called `name`, created from
    /// `artifact` unless it exists.
    NewTask {
        /// Task name (unique).
        name: String,
        /// Task description.
        description: String,
        /// Where its plugin comes from.
        artifact: ArtifactSpec,
    },
    /// INVOCATION_TYPE_EXISTING_TASK: the task with `task_id`.
    ExistingTask {
        /// The task's id.
        task_id: String,
        /// Create it (under `task_id`) from `artifact` when it does not exist.
        create_if_not_exists: bool,
        /// The artifact to create it from.
        artifact: Option<ArtifactSpec>,
        /// Name for a task created here (default: its id).
        name: String,
        /// Description for a task created here.
        description: String,
    },
}

/// One invocation, as the host sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeRequest {
    /// The task.
    pub target: Target,
    /// The function to call.
    pub function: String,
    /// Named parameters.
    pub params: Vec<(String, Value)>,
    /// Sync, async or stream.
    pub mode: ExecutionMode,
    /// A client-chosen execution id: a second request with an id that exists
    /// gets that execution's state instead of running again.
    pub execution_id: Option<String>,
    /// Environment variables for the call.
    pub environment: Vec<(String, String)>,
    /// Request headers for the call.
    pub headers: Vec<(String, String)>,
    /// Time allowed for the whole execution, retries included.
    pub timeout: Option<Duration>,
    /// Attempts after the first, for retriable failures.
    pub max_retries: u32,
    /// Run on a new instance rather than a pooled one.
    pub force_new_instance: bool,
    /// Invocation metadata; when this invocation creates its task, it becomes
    /// the task's metadata (its isolation tier written in) and its
    /// instances' configuration (the `spearlet.` keys left out).
    pub metadata: BTreeMap<String, String>,
    /// The W3C trace the call belongs to: kept on the execution and handed
    /// to the plugin as `traceparent` (with `tracestate`, when given).
    pub trace: Option<crate::trace::TraceContext>,
    /// The caller's `tracestate`, passed on as it is.
    pub tracestate: Option<String>,
}

impl InvokeRequest {
    /// A SYNC call of `function` on the task `target`, nothing else set.
    pub fn new(target: Target, function: impl Into<String>) -> Self {
        InvokeRequest {
            target,
            function: function.into(),
            params: Vec::new(),
            mode: ExecutionMode::Sync,
            execution_id: None,
            environment: Vec::new(),
            headers: Vec::new(),
            timeout: None,
            max_retries: 0,
            force_new_instance: false,
            metadata: BTreeMap::new(),
            trace: None,
            tracestate: None,
        }
    }

    /// Whether it asks for its task to be upgraded to its artifact
    /// ([`UPGRADE_KEY`]).
    pub(crate) fn wants_upgrade(&self) -> bool {
        self.metadata
            .get(UPGRADE_KEY)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Puts the call in `trace`: the execution keeps its id, and returns
    /// the `traceparent` of a span of the plugin's own, which its call
    /// hands it as a header (and `tracestate`, added to the headers).
    pub(crate) fn join_trace(
        &mut self,
        record: &crate::exec::ExecutionRecord,
    ) -> Option<crate::trace::Traceparent> {
        let trace = self.trace?;
        record.set_trace(trace.trace_id);
        if let Some(state) = self.tracestate.take() {
            self.headers.push(("tracestate".to_owned(), state));
        }
        Some(trace.child(crate::trace::new_span()))
    }

    /// The same request with one more parameter.
    pub fn param(mut self, name: impl Into<String>, value: Value) -> Self {
        self.params.push((name.into(), value));
        self
    }
}

/// What an invocation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeOutcome {
    /// The task it ran on.
    pub task_id: Arc<str>,
    /// Whether this invocation created that task.
    pub created_task: bool,
    /// Whether this invocation upgraded that task to its artifact first
    /// (see [`UPGRADE_KEY`]).
    pub upgraded_task: bool,
    /// The execution: final for SYNC, PENDING (or later) for ASYNC.
    pub execution: ExecutionSnapshot,
}

/// How an invocation came by its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskOrigin {
    /// It existed (or was woken, or run from the cluster's registration).
    Found,
    /// This invocation created it.
    Created,
    /// This invocation switched it to its artifact first.
    Upgraded,
}

/// Invocation metadata key: `true` upgrades a NEW_TASK's task when the
/// request's artifact is not what it runs (CLI: `spearlet invoke --upgrade`).
pub const UPGRADE_KEY: &str = "spearlet.upgrade";

/// Metadata keys that override the pool size of the task they create.
pub const POOL_MIN_KEY: &str = "spearlet.pool.min";
/// See [`POOL_MIN_KEY`].
pub const POOL_MAX_KEY: &str = "spearlet.pool.max";

/// Metadata key: the memory cap, in bytes, of each worker process of the
/// process-tier task it creates (CLI: `spearlet invoke --memory-max`).
pub const MEMORY_MAX_KEY: &str = "spearlet.memory.max";

/// The largest [`MEMORY_MAX_KEY`] accepted, 1 TiB: a cap above it is a
/// mistake of units, not a limit anyone means.
pub const MEMORY_MAX_LIMIT: u64 = 1 << 40;

/// Where a task's plugin code runs ([`ISOLATION_KEY`]) and, in worker
/// processes, how much memory each may use ([`MEMORY_MAX_KEY`]): chosen by
/// the invocation that creates the task, fixed for the task's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsolationSetting {
    /// The tier.
    pub isolation: Isolation,
    /// The memory cap in bytes (process tier only).
    pub memory_max: Option<u64>,
}

impl IsolationSetting {
    /// The setting invocation `metadata` asks for; `default` when it names
    /// no tier.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming the key and the value: a tier that is
    /// not `process` or `in-process`; a memory cap that is not a number of
    /// bytes from 1 to [`MEMORY_MAX_LIMIT`]; a memory cap for a task that
    /// would run in-process, where nothing could enforce it.
    pub fn from_metadata(
        metadata: &BTreeMap<String, String>,
        default: Isolation,
    ) -> Result<IsolationSetting> {
        let invalid = |reason: String| Error::InvalidRequest {
            field: "invocation_metadata",
            reason,
        };
        let isolation = match metadata.get(ISOLATION_KEY) {
            None => default,
            Some(v) => v.trim().parse().map_err(|_| {
                invalid(format!(
                    "`{ISOLATION_KEY}` must be `{}` or `{}`, got `{v}`",
                    Isolation::Process,
                    Isolation::InProcess
                ))
            })?,
        };
        let Some(v) = metadata.get(MEMORY_MAX_KEY) else {
            return Ok(IsolationSetting {
                isolation,
                memory_max: None,
            });
        };
        let bytes = v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MEMORY_MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "`{MEMORY_MAX_KEY}` must be a number of bytes from 1 to \
                     {MEMORY_MAX_LIMIT} (1 TiB), got `{v}`"
                ))
            })?;
        if isolation != Isolation::Process {
            let why = if metadata.contains_key(ISOLATION_KEY) {
                "the request asks for"
            } else {
                "the server's default is"
            };
            return Err(invalid(format!(
                "`{MEMORY_MAX_KEY}` (`{v}`) needs `{ISOLATION_KEY}={}`: a memory cap \
                 applies to worker processes, and {why} `{isolation}`",
                Isolation::Process
            )));
        }
        Ok(IsolationSetting {
            isolation,
            memory_max: Some(bytes),
        })
    }

    /// The setting of a task assembled again from its `metadata` — after a
    /// restart, for a new version, from a registration in the cluster:
    /// what its creation wrote in ([`IsolationSetting::record`]), so the
    /// server's default by then does not matter. A task recorded before
    /// tiers existed names none, and ran in-process: it still does.
    ///
    /// # Errors
    ///
    /// As [`IsolationSetting::from_metadata`], for metadata nobody checked
    /// (a registration made by another node).
    pub fn of_task(metadata: &BTreeMap<String, String>) -> Result<IsolationSetting> {
        IsolationSetting::from_metadata(metadata, Isolation::InProcess)
    }

    /// Writes the setting into a new task's metadata, in its canonical form:
    /// the metadata is what is recorded, registered in the cluster and used
    /// to assemble the task again, so the tier travels with it.
    pub fn record(self, metadata: &mut BTreeMap<String, String>) {
        metadata.insert(ISOLATION_KEY.to_owned(), self.isolation.as_str().to_owned());
        match self.memory_max {
            Some(bytes) => metadata.insert(MEMORY_MAX_KEY.to_owned(), bytes.to_string()),
            None => metadata.remove(MEMORY_MAX_KEY),
        };
    }
}

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
    /// (EXISTING_TASK) of the seed, asking the SMS about an unknown id when
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
    /// request asks for an upgrade ([`UPGRADE_KEY`]), which switches the
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
        let mut registered: Option<String> = None;
        let mut recorded: Option<Arc<str>> = None;
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
                let (id, membership) = match self.sms() {
                    None => (id.unwrap_or_else(crate::exec::new_id), Membership::Local),
                    Some(sms) => {
                        if let Some(existing) = self.tasks().by_name(name) {
                            return Err(Error::TaskNameTaken {
                                name: name.to_owned(),
                                existing: existing.id.to_string(),
                            });
                        }
                        // Boxed: a gRPC call is a large future, which a
                        // host in no cluster would carry for nothing.
                        let sms_id = Box::pin(self.register_in_cluster(
                            sms,
                            &plugin,
                            (name, description),
                            artifact,
                            id.as_deref(),
                            &metadata,
                        ))
                        .await?;
                        pending = Some(PendingRegistration::new(Arc::clone(sms), sms_id.clone()));
                        (
                            id.unwrap_or_else(|| Arc::from(sms_id.as_str())),
                            Membership::Registered { sms_id },
                        )
                    }
                };
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
                // Recorded before anyone can see it: a restart, even a
                // crash, brings back every task whose creation was
                // acknowledged.
                self.record_new_task(&new)?;
                recorded = Some(Arc::clone(&new.id));
                // Nothing awaits from here until the task is in the
                // registry: the registration is kept, unless inserting it
                // fails (below).
                registered = pending.take().map(PendingRegistration::keep);
                Ok(new)
            })
            .await;
        match outcome {
            Ok(task) => Ok((
                task,
                if created {
                    TaskOrigin::Created
                } else {
                    TaskOrigin::Found
                },
            )),
            Err(e) => {
                // Boxed, as everything this path alone awaits: the future of
                // every creation would carry them otherwise.
                if let Some(id) = recorded {
                    if let Err(e) = Box::pin(self.forget_task(&id)).await {
                        tracing::warn!(task = %id, error = %e, "a task whose creation failed stays recorded; it is restored after a restart");
                    }
                }
                if let Some(sms_id) = registered {
                    Box::pin(self.withdraw_registration(&sms_id, &e)).await;
                }
                Err(e)
            }
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
    /// the server's default tier (`exec.isolation`) when it names none.
    fn isolation_setting(&self, metadata: &BTreeMap<String, String>) -> Result<IsolationSetting> {
        IsolationSetting::from_metadata(metadata, self.config().exec.isolation)
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

    pub(super) fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refusal(pairs: &[(&str, &str)], default: Isolation) -> String {
        match IsolationSetting::from_metadata(&metadata(pairs), default) {
            Err(e @ Error::InvalidRequest { .. }) => e.to_string(),
            other => panic!("{pairs:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn the_tier_is_the_request_s_or_else_the_default() {
        let read = |pairs: &[(&str, &str)], default| {
            IsolationSetting::from_metadata(&metadata(pairs), default).unwrap()
        };
        assert_eq!(
            read(&[], Isolation::Process),
            IsolationSetting {
                isolation: Isolation::Process,
                memory_max: None
            }
        );
        assert_eq!(
            read(&[(ISOLATION_KEY, " in-process ")], Isolation::Process).isolation,
            Isolation::InProcess
        );
        assert_eq!(
            read(
                &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, "1048576")],
                Isolation::InProcess
            ),
            IsolationSetting {
                isolation: Isolation::Process,
                memory_max: Some(1 << 20)
            }
        );
        assert_eq!(
            read(&[(MEMORY_MAX_KEY, "1099511627776")], Isolation::Process).memory_max,
            Some(MEMORY_MAX_LIMIT),
            "the limit itself is allowed"
        );
    }

    #[test]
    fn refusals_name_the_key_and_the_value() {
        let err = refusal(&[(ISOLATION_KEY, "sandbox")], Isolation::InProcess);
        assert!(
            err.contains("invocation_metadata")
                && err.contains("`spearlet.isolation`")
                && err.contains("`sandbox`"),
            "{err}"
        );
        for bad in ["0", "-1", "lots", "1.5", "1099511627777", ""] {
            let err = refusal(
                &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, bad)],
                Isolation::InProcess,
            );
            assert!(
                err.contains("`spearlet.memory.max`")
                    && err.contains(&format!("`{bad}`"))
                    && err.contains("1099511627776"),
                "{err}"
            );
        }
        let err = refusal(
            &[(ISOLATION_KEY, "in-process"), (MEMORY_MAX_KEY, "1048576")],
            Isolation::Process,
        );
        assert!(
            err.contains("`spearlet.memory.max`") && err.contains("spearlet.isolation=process"),
            "{err}"
        );
        let err = refusal(&[(MEMORY_MAX_KEY, "1048576")], Isolation::InProcess);
        assert!(err.contains("the server's default"), "{err}");
    }

    /// The file a task was created from is remembered as it was when its
    /// bytes were read: a task pinned to bytes its path no longer holds is
    /// created from the plugin loaded before (nothing read), and a later
    /// request naming the path alone is refused, never served the old code.
    #[test]
    fn a_task_pinned_to_bytes_its_file_no_longer_holds_is_stale_for_the_file() {
        use crate::config::{ArtifactConfig, Config, ExecConfig};
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
                exec: ExecConfig {
                    first_load_in_worker: false,
                    warm_workers: 0,
                    ..ExecConfig::default()
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

    #[test]
    fn a_recorded_setting_reads_back_whatever_the_default() {
        let setting = IsolationSetting {
            isolation: Isolation::Process,
            memory_max: Some(4096),
        };
        let mut task = metadata(&[(MEMORY_MAX_KEY, " 4096"), ("start", "1")]);
        setting.record(&mut task);
        assert_eq!(task[MEMORY_MAX_KEY], "4096", "canonical");
        assert_eq!(IsolationSetting::of_task(&task).unwrap(), setting);
        let mut plain = metadata(&[]);
        IsolationSetting::default().record(&mut plain);
        assert_eq!(plain[ISOLATION_KEY], "in-process");
        assert_eq!(
            IsolationSetting::from_metadata(&plain, Isolation::Process).unwrap(),
            IsolationSetting::default(),
            "written in, the tier no longer depends on the default"
        );
    }
}
