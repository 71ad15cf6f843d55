//! The task registry: tasks by id and by name in O(1), and single-flight
//! creation so concurrent requests for one new task create it once.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use foldhash::fast::RandomState;

use tokio::sync::OnceCell;

pub use crate::artifact::SourceFile;
use crate::artifact::{ArtifactSpec, CachePin};
pub use crate::counters::TaskActivity;
use crate::counters::{FunctionMetrics, RunningGuard, TaskCounters};
use crate::error::{Error, Result};
use crate::execution::ExecutionStatus;
use crate::isolate::Isolation;
use crate::loader::{FunctionHandle, Plugin};
use crate::pool::InstancePool;
use crate::tier::{PluginProfile, Profile};

/// The function name a cluster calls for "the task's default function"
/// (as is an empty name): see [`Task::function`].
pub const DEFAULT_ENTRY: &str = "__spear_default_entry__";

/// Task metadata key naming the task's default function (see
/// [`Task::function`]).
pub const DEFAULT_FUNCTION_KEY: &str = "spear.default_function";

/// Resolves `name` in `plugin` for the task `task` created with `metadata`:
/// [`Task::function`] for a task that may not exist yet (a dry run's).
///
/// # Errors
///
/// As [`Task::function`].
#[inline]
pub fn resolve_function(
    plugin: &Plugin,
    metadata: &BTreeMap<String, String>,
    task: &str,
    name: &str,
) -> Result<FunctionHandle> {
    if name.is_empty() || name == DEFAULT_ENTRY {
        return default_function(plugin, metadata, task);
    }
    plugin.function(name)
}

/// The task's default function, by the convention [`Task::function`]
/// documents.
#[cold]
fn default_function(
    plugin: &Plugin,
    metadata: &BTreeMap<String, String>,
    task: &str,
) -> Result<FunctionHandle> {
    if let Some(chosen) = metadata.get(DEFAULT_FUNCTION_KEY) {
        return plugin.function(chosen);
    }
    if let Some(marked) = plugin.default_function() {
        return Ok(marked);
    }
    match plugin.functions() {
        [_] => Ok(plugin
            .function_at(0)
            .expect("a table of one function has function 0")),
        functions => Err(Error::NoDefaultFunction {
            task: task.to_owned(),
            available: functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A task: a loaded plugin, its instance pool, and its history.
#[derive(Debug)]
pub struct Task {
    /// Unique id.
    pub id: Arc<str>,
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The artifact it was created from.
    pub artifact: ArtifactSpec,
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    /// The invocation metadata it was created with, its isolation tier
    /// written in (see [`crate::invoke::IsolationSetting::record`]).
    pub metadata: BTreeMap<String, String>,
    /// Where its plugin code runs, fixed when it was created.
    pub isolation: Isolation,
    /// The memory cap, in bytes, of each of its worker processes (process
    /// tier only).
    pub memory_max: Option<u64>,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its instances.
    pub pool: InstancePool,
    /// What the inline tier knows of its plugin (shared by every task of
    /// the same plugin).
    pub profile: Arc<PluginProfile>,
    /// Its standing in the cluster, when the host is part of one.
    pub membership: Membership,
    /// When this version replaced another (an upgrade or a rollback), and
    /// the version a rollback returns to.
    pub switch: Option<Switch>,
    /// The local file it was created from, as it was then: a later request
    /// naming the file after it changed is told so, not served stale code.
    pub source: Option<SourceFile>,
    /// Its counters: executions started and ended, and running now.
    pub(crate) counters: TaskCounters,
    _pin: Option<CachePin>,
}

/// Everything needed to build a [`Task`] (see [`TaskRegistry::get_or_create`]).
#[derive(Debug)]
pub struct NewTask {
    /// Unique id.
    pub id: Arc<str>,
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The artifact.
    pub artifact: ArtifactSpec,
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    /// Invocation metadata.
    pub metadata: BTreeMap<String, String>,
    /// Where its plugin code runs.
    pub isolation: Isolation,
    /// The memory cap of each of its worker processes, in bytes.
    pub memory_max: Option<u64>,
    /// Its pool, pre-warmed.
    pub pool: InstancePool,
    /// The inline tier's profile of its plugin.
    pub profile: Arc<PluginProfile>,
    /// Keeps the artifact in the cache while the task lives.
    pub pin: Option<CachePin>,
    /// Its standing in the cluster.
    pub membership: Membership,
    /// Set when this version replaces another.
    pub switch: Option<Switch>,
    /// The local file it comes from, as it was when loaded.
    pub source: Option<SourceFile>,
}

/// A version switch: this task version replaced another at `at`.
#[derive(Debug, Clone)]
pub struct Switch {
    /// When.
    pub at: SystemTime,
    /// The version a rollback returns to; `None` after a rollback (one
    /// step back is kept, not a history).
    pub previous: Option<PreviousVersion>,
}

/// A version kept for a rollback: its plugin stays loaded and its artifact
/// cached, so returning to it needs no fetch.
#[derive(Debug, Clone)]
pub struct PreviousVersion {
    /// Its artifact.
    pub artifact: ArtifactSpec,
    /// Its plugin.
    pub plugin: Arc<Plugin>,
    /// Keeps its artifact in the cache.
    pub pin: Arc<CachePin>,
}

/// A task's standing in the cluster (see `docs/cluster.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Membership {
    /// Known only here: the host is in no cluster.
    #[default]
    Local,
    /// Created here and registered at the SMS, which knows it as `sms_id`.
    Registered {
        /// The SMS's id for it.
        sms_id: String,
    },
    /// Created elsewhere in the cluster and run here from its registration.
    Replica {
        /// The SMS's id for it.
        sms_id: String,
        /// The node that registered it.
        node_uuid: String,
    },
}

impl From<NewTask> for Task {
    fn from(t: NewTask) -> Self {
        Task::new(t)
    }
}

impl Task {
    fn new(t: NewTask) -> Self {
        let now = SystemTime::now();
        let counters = TaskCounters::new(t.plugin.functions().len(), now);
        Task {
            counters,
            id: t.id,
            name: t.name,
            description: t.description,
            artifact: t.artifact,
            plugin: t.plugin,
            metadata: t.metadata,
            isolation: t.isolation,
            memory_max: t.memory_max,
            created_at: now,
            pool: t.pool,
            profile: t.profile,
            membership: t.membership,
            switch: t.switch,
            source: t.source,
            _pin: t.pin,
        }
    }

    /// Resolves the function a call names; keep the handle for the call.
    ///
    /// An empty name or [`DEFAULT_ENTRY`] means the task's default
    /// function: the one its registration names (metadata key
    /// [`DEFAULT_FUNCTION_KEY`]), else the one its plugin marks
    /// `#[function(default)]`, else the plugin's only function. Any other
    /// name is looked up as it is ([`Plugin::function`]).
    ///
    /// # Errors
    ///
    /// [`Error::FunctionNotFound`] (a name the plugin lacks, the metadata
    /// key's included); [`Error::NoDefaultFunction`] when the default entry
    /// is asked for and nothing chooses among several functions.
    #[inline]
    pub fn function(&self, name: &str) -> Result<FunctionHandle> {
        resolve_function(&self.plugin, &self.metadata, &self.id, name)
    }

    /// Counts an execution starting; the guard counts it ending.
    #[inline]
    pub(crate) fn begin_execution(&self, function: FunctionHandle) -> RunningGuard<'_> {
        self.counters.begin(function.index())
    }

    /// Records how an execution of `function` ended, how long after its
    /// acceptance, and when (a clock reading the caller has).
    #[inline]
    pub(crate) fn record_outcome(
        &self,
        function: FunctionHandle,
        mode: crate::execution::ExecutionMode,
        status: ExecutionStatus,
        took: Duration,
        at: Instant,
    ) {
        self.counters
            .ended(function.index(), mode, status, took, at);
    }

    /// Executions of function number `index` started on this task.
    pub fn function_calls(&self, index: usize) -> u64 {
        self.counters.function_calls(index)
    }

    /// How executions of function number `index` ended.
    pub fn function_metrics(&self, index: usize) -> Option<&FunctionMetrics> {
        self.counters.function_metrics(index)
    }

    /// The inline tier's profile of `function`.
    pub fn profile(&self, function: FunctionHandle) -> &Profile {
        &self.profile.functions[function.index()]
    }

    /// How long `function` is expected to take, from its recent completed
    /// runs (zero before the first, or for a name the plugin lacks). The
    /// default entry is the task's default function ([`Task::function`]).
    pub fn expected_duration(&self, function: &str) -> Duration {
        self.function(function)
            .map_or(Duration::ZERO, |f| self.profile(f).expected_duration())
    }

    /// Waits up to `within` for the executions running on this task to
    /// end; returns how many still run.
    pub(crate) async fn drain(&self, within: Duration) -> usize {
        self.counters.drain(within).await
    }

    /// The task's counters now.
    pub fn activity(&self) -> TaskActivity {
        self.counters.activity()
    }
}

/// What a creation is keyed on, so that racing creators meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CreationKey {
    /// NEW_TASK: by name.
    Name(String),
    /// EXISTING_TASK with create_if_not_exists: by the requested id.
    Id(String),
}

type Creation = Arc<OnceCell<Result<Arc<Task>>>>;

/// All tasks of a host.
#[derive(Debug, Default)]
pub struct TaskRegistry {
    tables: RwLock<Tables>,
    creating: Mutex<HashMap<CreationKey, Creation, RandomState>>,
}

#[derive(Debug, Default)]
struct Tables {
    by_id: HashMap<Arc<str>, Arc<Task>, RandomState>,
    /// Ids by name, hashed: a NEW_TASK looks its name up several times,
    /// and a hashed lookup reads one entry where a tree's walks a path of
    /// names, each behind a pointer (cache misses, on a host busy with
    /// other work). Only a listing wants names in order, and sorts them.
    by_name: HashMap<String, Arc<str>, RandomState>,
}

impl TaskRegistry {
    /// The task with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.tables().by_id.get(id).cloned()
    }

    /// The task with this name.
    pub fn by_name(&self, name: &str) -> Option<Arc<Task>> {
        let tables = self.tables();
        let id = tables.by_name.get(name)?;
        tables.by_id.get(&**id).cloned()
    }

    /// The task for `key`: existing, or created once by `create` however
    /// many callers race here. Callers look the task up first (it is found
    /// far more often than created); here it is looked up once, in the
    /// single flight, where a racing creation is seen too.
    ///
    /// # Errors
    ///
    /// What `create` fails with (every racing caller sees the same error),
    /// or [`Error::TaskNameTaken`].
    pub async fn get_or_create<F>(&self, key: CreationKey, create: F) -> Result<Arc<Task>>
    where
        F: Future<Output = Result<NewTask>>,
    {
        let creation = Arc::clone(self.creating().entry(key.clone()).or_default());
        // Pinned here and polled through a reference: moved into the
        // initialiser instead, the creation would be laid out again in each
        // future wrapped around it (five copies of a large future, every one
        // moved on each creation).
        let mut create = std::pin::pin!(create);
        let outcome = creation
            .get_or_init(|| async {
                if let Some(task) = self.lookup(&key) {
                    return Ok(task);
                }
                let task = Arc::new(Task::new(create.as_mut().await?));
                self.insert(Arc::clone(&task))?;
                Ok(task)
            })
            .await
            .clone();
        let mut creating = self.creating();
        if creating
            .get(&key)
            .is_some_and(|c| Arc::ptr_eq(c, &creation))
        {
            creating.remove(&key);
        }
        outcome
    }

    fn lookup(&self, key: &CreationKey) -> Option<Arc<Task>> {
        match key {
            CreationKey::Name(name) => self.by_name(name),
            CreationKey::Id(id) => self.get(id),
        }
    }

    fn insert(&self, task: Arc<Task>) -> Result<()> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        // One search of the names, not one to check and one to insert.
        match tables.by_name.entry(task.name.clone()) {
            std::collections::hash_map::Entry::Occupied(existing) => {
                return Err(Error::TaskNameTaken {
                    name: task.name.clone(),
                    existing: existing.get().to_string(),
                });
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Arc::clone(&task.id));
            }
        }
        tables.by_id.insert(Arc::clone(&task.id), task);
        Ok(())
    }

    /// Puts `task` in the place of `current` (same id and name): calls that
    /// start from now on find `task`; calls holding `current` finish on it.
    ///
    /// # Errors
    ///
    /// [`Error::TaskChanged`] when the task is no longer `current` (deleted,
    /// or replaced by a racing switch).
    pub fn replace(&self, current: &Arc<Task>, task: Arc<Task>) -> Result<()> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        match tables.by_id.get_mut(&*current.id) {
            Some(slot) if Arc::ptr_eq(slot, current) && task.name == current.name => {
                *slot = task;
                Ok(())
            }
            _ => Err(Error::TaskChanged {
                task_id: current.id.to_string(),
            }),
        }
    }

    /// Removes a task; returns it if it existed.
    pub fn remove(&self, id: &str) -> Option<Arc<Task>> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let task = tables.by_id.remove(id)?;
        tables.by_name.remove(&task.name);
        Some(task)
    }

    /// Tasks whose name starts with `prefix`, by name, after `start_after`;
    /// at most `limit`, and whether more follow. The names are hashed (see
    /// `Tables::by_name`): a page reads them all, and sorts only those it
    /// keeps.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Task>>, bool) {
        let tables = self.tables();
        let limit = limit.max(1);
        let mut names: Vec<(&str, &Arc<str>)> = tables
            .by_name
            .iter()
            .filter(|(name, _)| {
                name.starts_with(prefix) && start_after.is_none_or(|after| name.as_str() > after)
            })
            .map(|(name, id)| (name.as_str(), id))
            .collect();
        let more = names.len() > limit;
        if more {
            names.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            names.truncate(limit);
        }
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let page = names
            .into_iter()
            .filter_map(|(_, id)| tables.by_id.get(&**id).map(Arc::clone))
            .collect();
        (page, more)
    }

    /// Every task.
    pub fn all(&self) -> Vec<Arc<Task>> {
        self.tables().by_id.values().cloned().collect()
    }

    /// Tasks registered.
    pub fn len(&self) -> usize {
        self.tables().by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn creating(&self) -> MutexGuard<'_, HashMap<CreationKey, Creation, RandomState>> {
        self.creating.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spearlet_test_artifacts::Artifact;

    fn plugin(artifact: Artifact) -> Arc<Plugin> {
        Plugin::load_verified(artifact.path(), None).expect("a sample plugin loads")
    }

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn resolved(
        plugin: &Plugin,
        metadata: &BTreeMap<String, String>,
        name: &str,
    ) -> Result<String> {
        resolve_function(plugin, metadata, "t1", name).map(|f| plugin.function_name(f).to_string())
    }

    #[test]
    fn an_ordinary_name_is_looked_up_as_it_is() {
        let math = plugin(Artifact::Math);
        let chosen = metadata(&[(DEFAULT_FUNCTION_KEY, "divide")]);
        assert_eq!(resolved(&math, &chosen, "add").unwrap(), "add");
        assert!(matches!(
            resolved(&math, &chosen, "nope"),
            Err(Error::FunctionNotFound { .. })
        ));
    }

    #[test]
    fn the_registration_names_the_default_first() {
        // Echo marks `echo` as its default; the task's metadata wins.
        let echo = plugin(Artifact::Echo);
        let chosen = metadata(&[(DEFAULT_FUNCTION_KEY, "upper")]);
        for entry in ["", DEFAULT_ENTRY] {
            assert_eq!(resolved(&echo, &chosen, entry).unwrap(), "upper");
        }
        let math = plugin(Artifact::Math);
        let chosen = metadata(&[(DEFAULT_FUNCTION_KEY, "divide")]);
        assert_eq!(resolved(&math, &chosen, DEFAULT_ENTRY).unwrap(), "divide");
        // A name the plugin lacks is not found, as if it had been called.
        let wrong = metadata(&[(DEFAULT_FUNCTION_KEY, "missing")]);
        match resolved(&math, &wrong, "") {
            Err(Error::FunctionNotFound { function, .. }) => assert_eq!(function, "missing"),
            other => panic!("expected FunctionNotFound, got {other:?}"),
        }
    }

    #[test]
    fn then_the_function_the_plugin_marks() {
        let echo = plugin(Artifact::Echo);
        assert_eq!(
            echo.default_function()
                .map(|f| echo.function_name(f).to_string()),
            Some("echo".to_owned())
        );
        for entry in ["", DEFAULT_ENTRY] {
            assert_eq!(resolved(&echo, &metadata(&[]), entry).unwrap(), "echo");
        }
    }

    #[test]
    fn then_the_plugins_only_function() {
        let counter = plugin(Artifact::Counter);
        assert_eq!(counter.functions().len(), 1);
        assert!(counter.default_function().is_none());
        for entry in ["", DEFAULT_ENTRY] {
            assert_eq!(resolved(&counter, &metadata(&[]), entry).unwrap(), "next");
        }
    }

    #[test]
    fn several_functions_and_no_choice_is_an_error_listing_them() {
        let math = plugin(Artifact::Math);
        assert!(math.default_function().is_none());
        for entry in ["", DEFAULT_ENTRY] {
            match resolved(&math, &metadata(&[("other", "x")]), entry) {
                Err(Error::NoDefaultFunction { task, available }) => {
                    assert_eq!(task, "t1");
                    assert_eq!(available, "add, divide");
                }
                other => panic!("expected NoDefaultFunction, got {other:?}"),
            }
        }
    }
}
