//! The task registry: tasks by id and by name in O(1), and single-flight
//! creation so concurrent requests for one new task create it once.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::OnceCell;

use crate::artifact::{ArtifactSpec, CachePin};
use crate::error::{Error, Result};
use crate::exec::ExecutionStatus;
use crate::loader::Plugin;
use crate::pool::InstancePool;

/// A task: a loaded plugin, its instance pool, and its history.
#[derive(Debug)]
pub struct Task {
    /// Unique id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The artifact it was created from.
    pub artifact: ArtifactSpec,
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    /// The invocation metadata it was created with.
    pub metadata: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its instances.
    pub pool: InstancePool,
    activity: Mutex<Activity>,
    executions: AtomicU64,
    running: AtomicUsize,
    durations: Mutex<HashMap<String, Duration>>,
    _pin: Option<CachePin>,
}

#[derive(Debug, Clone, Copy)]
struct Activity {
    updated_at: SystemTime,
    last_status: Option<ExecutionStatus>,
}

/// A task's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskActivity {
    /// Last time an execution ended (or creation).
    pub updated_at: SystemTime,
    /// Executions started on it.
    pub execution_count: u64,
    /// Executions running now.
    pub running: usize,
    /// Status of the last execution to end.
    pub last_status: Option<ExecutionStatus>,
}

/// Everything needed to build a [`Task`] (see [`TaskRegistry::get_or_create`]).
#[derive(Debug)]
pub struct NewTask {
    /// Unique id.
    pub id: String,
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
    /// Its pool, pre-warmed.
    pub pool: InstancePool,
    /// Keeps the artifact in the cache while the task lives.
    pub pin: Option<CachePin>,
}

impl Task {
    fn new(t: NewTask) -> Self {
        let now = SystemTime::now();
        Task {
            id: t.id,
            name: t.name,
            description: t.description,
            artifact: t.artifact,
            plugin: t.plugin,
            metadata: t.metadata,
            created_at: now,
            pool: t.pool,
            activity: Mutex::new(Activity {
                updated_at: now,
                last_status: None,
            }),
            executions: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            durations: Mutex::default(),
            _pin: t.pin,
        }
    }

    /// Counts an execution starting; the guard counts it ending.
    pub(crate) fn begin_execution(self: &Arc<Self>) -> RunningGuard {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::AcqRel);
        RunningGuard {
            task: Arc::clone(self),
        }
    }

    /// Records how an execution ended.
    pub(crate) fn record_outcome(&self, status: ExecutionStatus) {
        let mut activity = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        activity.updated_at = SystemTime::now();
        activity.last_status = Some(status);
    }

    /// Folds a completed execution's run time into the function's estimate
    /// (an exponentially weighted mean: recent runs count most).
    pub(crate) fn record_duration(&self, function: &str, took: Duration) {
        let mut durations = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match durations.get_mut(function) {
            Some(mean) => *mean = mean.mul_f64(0.8) + took.mul_f64(0.2),
            None => {
                durations.insert(function.to_owned(), took);
            }
        }
    }

    /// How long `function` is expected to take, from its recent completed
    /// runs (zero before the first).
    pub fn expected_duration(&self, function: &str) -> Duration {
        let durations = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        durations.get(function).copied().unwrap_or(Duration::ZERO)
    }

    /// The task's counters now.
    pub fn activity(&self) -> TaskActivity {
        let activity = *self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        TaskActivity {
            updated_at: activity.updated_at,
            execution_count: self.executions.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Acquire),
            last_status: activity.last_status,
        }
    }
}

/// Counts one running execution of a task until dropped.
#[derive(Debug)]
pub(crate) struct RunningGuard {
    task: Arc<Task>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.task.running.fetch_sub(1, Ordering::AcqRel);
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
    creating: Mutex<HashMap<CreationKey, Creation>>,
}

#[derive(Debug, Default)]
struct Tables {
    by_id: HashMap<String, Arc<Task>>,
    by_name: BTreeMap<String, String>,
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
        tables.by_id.get(id).cloned()
    }

    /// The task for `key`: existing, or created once by `create` however
    /// many callers race here.
    ///
    /// # Errors
    ///
    /// What `create` fails with (every racing caller sees the same error),
    /// or [`Error::TaskNameTaken`].
    pub async fn get_or_create<F>(&self, key: CreationKey, create: F) -> Result<Arc<Task>>
    where
        F: Future<Output = Result<NewTask>>,
    {
        if let Some(task) = self.lookup(&key) {
            return Ok(task);
        }
        let creation = Arc::clone(self.creating().entry(key.clone()).or_default());
        let outcome = creation
            .get_or_init(|| async {
                if let Some(task) = self.lookup(&key) {
                    return Ok(task);
                }
                let task = Arc::new(Task::new(create.await?));
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
        if let Some(existing) = tables.by_name.get(&task.name) {
            return Err(Error::TaskNameTaken {
                name: task.name.clone(),
                existing: existing.clone(),
            });
        }
        tables.by_name.insert(task.name.clone(), task.id.clone());
        tables.by_id.insert(task.id.clone(), task);
        Ok(())
    }

    /// Removes a task; returns it if it existed.
    pub fn remove(&self, id: &str) -> Option<Arc<Task>> {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let task = tables.by_id.remove(id)?;
        tables.by_name.remove(&task.name);
        Some(task)
    }

    /// Tasks whose name starts with `prefix`, by name, after `start_after`;
    /// at most `limit`, and whether more follow.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Task>>, bool) {
        let tables = self.tables();
        let from = match start_after {
            Some(after) => std::ops::Bound::Excluded(after.to_owned()),
            None => std::ops::Bound::Included(prefix.to_owned()),
        };
        let mut page = Vec::new();
        for (name, id) in tables.by_name.range((from, std::ops::Bound::Unbounded)) {
            if !name.starts_with(prefix) {
                if name.as_str() > prefix {
                    break;
                }
                continue;
            }
            if page.len() == limit.max(1) {
                return (page, true);
            }
            if let Some(task) = tables.by_id.get(id) {
                page.push(Arc::clone(task));
            }
        }
        (page, false)
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

    fn creating(&self) -> MutexGuard<'_, HashMap<CreationKey, Creation>> {
        self.creating.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
