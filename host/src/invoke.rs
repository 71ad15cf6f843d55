//! What an invocation asks for: its target (which task, created when the
//! request says so: flows 2 and 3 of `docs/invocation-flow.md`), function,
//! parameters, mode and metadata. `host/resolve.rs` resolves the target.

pub(crate) mod metadata;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::exec::{ExecutionMode, ExecutionSnapshot};
use crate::isolate::Isolation;
pub use crate::isolate::ISOLATION_KEY;
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
        let (trace, parent) = self.enter_trace()?;
        record.set_trace(trace);
        Some(parent)
    }

    /// The call's trace, and the `traceparent` of a span of the plugin's
    /// own (the caller's `tracestate` moves to the headers).
    pub(crate) fn enter_trace(
        &mut self,
    ) -> Option<(crate::trace::TraceId, crate::trace::Traceparent)> {
        let trace = self.trace?;
        if let Some(state) = self.tracestate.take() {
            self.headers.push(("tracestate".to_owned(), state));
        }
        Some((trace.trace_id, trace.child(crate::trace::new_span())))
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

/// Invocation metadata key that makes an invocation a dry run.
pub const DRY_RUN_KEY: &str = "spearlet.dry_run";

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
