//! What `--format json` prints: one object per result, one per line.
//!
//! The field names here are the interface scripts depend on: they are
//! snake_case, always present (`null` when the server did not say), and
//! change only with the README that lists them.

use std::collections::BTreeMap;

use serde::Serialize;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::admin::v1 as admin;

use super::present::{status_name, time};
use super::value::Value;

/// Prints `view` as one line of JSON on stdout.
pub(super) fn print_line(view: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(view)?);
    Ok(())
}

/// An empty string as `null`: the server sends `""` for "not set".
pub(super) fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A timestamp as RFC 3339, or `null`.
fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    ts.map(|_| time(ts))
}

/// How an execution ended (or where it is): `invoke`, `status`, and the
/// last line of a stream.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    pub execution_id: String,
    pub status: &'static str,
    pub success: bool,
    pub task_id: Option<String>,
    pub instance_id: Option<String>,
    /// Microsecond precision when the server measured it.
    pub execution_time_ms: f64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<Value>,
    pub trace_id: Option<String>,
}

impl Outcome {
    /// From an `ExecutionResult` (a unary reply, or a status).
    pub(super) fn of(execution_id: &str, result: &pb::ExecutionResult) -> Outcome {
        let status = pb::ExecutionStatus::try_from(result.status).unwrap_or_default();
        Outcome {
            execution_id: execution_id.to_owned(),
            status: status_name(status),
            success: status == pb::ExecutionStatus::Completed,
            task_id: None,
            instance_id: None,
            execution_time_ms: result
                .metrics
                .get("execution_time_us")
                .and_then(|us| us.parse::<u64>().ok())
                .map_or(result.execution_time_ms as f64, |us| us as f64 / 1000.0),
            error_code: non_empty(&result.error_code),
            error_message: non_empty(&result.error_message),
            result: result.result.as_ref().map(Value::decode),
            trace_id: result.metrics.get("trace_id").cloned(),
        }
    }
}

/// One row of `executions` (and of `task get`'s recent executions).
#[derive(Debug, Serialize)]
pub(super) struct Execution {
    execution_id: String,
    task_id: String,
    function_name: String,
    status: &'static str,
    execution_time_ms: i64,
    started_at: Option<String>,
    completed_at: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

impl From<&pb::ExecutionInfo> for Execution {
    fn from(e: &pb::ExecutionInfo) -> Self {
        Execution {
            execution_id: e.execution_id.clone(),
            task_id: e.task_id.clone(),
            function_name: e.function_name.clone(),
            status: status_name(pb::ExecutionStatus::try_from(e.status).unwrap_or_default()),
            execution_time_ms: e.execution_time_ms,
            started_at: timestamp(e.started_at.as_ref()),
            completed_at: timestamp(e.completed_at.as_ref()),
            error_code: e.metadata.get("error_code").cloned(),
            error_message: non_empty(&e.error_message),
        }
    }
}

/// One task of `tasks`, or the one of `task get` (with its executions).
#[derive(Debug, Serialize)]
pub(super) struct Task {
    task_id: String,
    task_name: String,
    artifact: Option<String>,
    plugin: Option<String>,
    plugin_version: Option<String>,
    digest: Option<String>,
    isolation: Option<String>,
    memory_max: Option<u64>,
    execution_count: i32,
    last_status: Option<&'static str>,
    /// Everything the server said about the task, as it said it.
    metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executions: Option<Vec<Execution>>,
}

impl Task {
    pub(super) fn of(t: &pb::TaskInfo, executions: Option<&[pb::ExecutionInfo]>) -> Task {
        let last = pb::ExecutionStatus::try_from(t.last_status).unwrap_or_default();
        let meta = |k: &str| t.metadata.get(k).cloned();
        Task {
            task_id: t.task_id.clone(),
            task_name: t.task_name.clone(),
            artifact: t
                .artifact_spec
                .as_ref()
                .and_then(|s| non_empty(&s.location)),
            plugin: meta("plugin"),
            plugin_version: meta("plugin_version"),
            digest: meta("digest"),
            isolation: meta("isolation"),
            memory_max: meta("memory_max").and_then(|m| m.parse().ok()),
            execution_count: t.execution_count,
            last_status: (last != pb::ExecutionStatus::Unknown).then(|| status_name(last)),
            metadata: t
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            executions: executions.map(|list| list.iter().map(Execution::from).collect()),
        }
    }
}

/// A plugin version of a task, in `task upgrade` / `task rollback`.
#[derive(Debug, Serialize)]
struct Version {
    plugin_version: String,
    digest: String,
    location: String,
}

/// What `task upgrade` and `task rollback` switched.
#[derive(Debug, Serialize)]
pub(super) struct Switch {
    task_id: String,
    unchanged: bool,
    current: Option<Version>,
    previous: Option<Version>,
    removed_functions: Vec<String>,
    still_running: i64,
}

impl From<&admin::TaskSwitch> for Switch {
    fn from(s: &admin::TaskSwitch) -> Self {
        let version = |v: &Option<admin::TaskVersion>| {
            v.as_ref().map(|v| Version {
                plugin_version: v.plugin_version.clone(),
                digest: v.digest.clone(),
                location: v.location.clone(),
            })
        };
        Switch {
            task_id: s.task_id.clone(),
            unchanged: s.unchanged,
            current: version(&s.current),
            previous: version(&s.previous),
            removed_functions: s.removed_functions.clone(),
            still_running: i64::from(s.still_running),
        }
    }
}
