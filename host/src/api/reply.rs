//! Domain → protobuf: the response shapes of the wire contract.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spearlet_proto::spearlet as pb;

use super::value::to_any;
use crate::artifact::ArtifactSpec;
use crate::exec::{ExecutionMode, ExecutionSnapshot, ExecutionStatus};
use crate::invoke::IsolationSetting;
use crate::isolate::Isolation;
use crate::task::{Membership, Task};
use crate::tier::Tier;

fn artifact_spec(spec: &ArtifactSpec) -> pb::ArtifactSpec {
    pb::ArtifactSpec {
        artifact_id: spec.artifact_id.clone(),
        artifact_type: spec.artifact_type.clone(),
        location: spec.location.clone(),
        version: spec.version.clone(),
        checksum: spec.checksum.clone(),
        metadata: spec.metadata.clone().into_iter().collect(),
    }
}

pub(super) fn status(status: ExecutionStatus) -> pb::ExecutionStatus {
    match status {
        ExecutionStatus::Pending => pb::ExecutionStatus::Pending,
        ExecutionStatus::Running => pb::ExecutionStatus::Running,
        ExecutionStatus::Completed => pb::ExecutionStatus::Completed,
        ExecutionStatus::Failed => pb::ExecutionStatus::Failed,
        ExecutionStatus::Cancelled => pb::ExecutionStatus::Cancelled,
        ExecutionStatus::Timeout => pb::ExecutionStatus::Timeout,
    }
}

fn mode(mode: ExecutionMode) -> pb::ExecutionMode {
    match mode {
        ExecutionMode::Sync => pb::ExecutionMode::Sync,
        ExecutionMode::Async => pb::ExecutionMode::Async,
        ExecutionMode::Stream => pb::ExecutionMode::Stream,
    }
}

pub(super) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn execution_result(e: &ExecutionSnapshot, include_output: bool) -> pb::ExecutionResult {
    result_of(
        e,
        if include_output {
            e.output.clone()
        } else {
            None
        },
    )
}

/// As [`execution_result`] with the output, moving it rather than copying.
pub(super) fn into_execution_result(mut e: ExecutionSnapshot) -> pb::ExecutionResult {
    let output = e.output.take();
    result_of(&e, output)
}

fn result_of(e: &ExecutionSnapshot, output: Option<crate::Value>) -> pb::ExecutionResult {
    let (error_code, error_message) = e
        .error
        .as_ref()
        .map(|err| (err.code.clone(), err.message.clone()))
        .unwrap_or_default();
    // The instance is the reply's own `instance_id` field.
    // Numbers through `itoa` and the trace id through `TraceId::to_hex`:
    // every reply carries these, and `to_string` goes through `core::fmt`.
    let mut metrics = std::collections::BTreeMap::new();
    metrics.insert("attempts".to_owned(), decimal(e.attempts));
    if let Some(trace) = e.trace_id {
        metrics.insert("trace_id".to_owned(), trace.to_hex().as_str().to_owned());
    }
    if let Some((allocated, _)) = e.memory {
        metrics.insert("memory_allocated_bytes".to_owned(), decimal(allocated));
    }
    metrics.insert(
        "execution_time_us".to_owned(),
        decimal(e.execution_time.as_micros()),
    );
    if let Some(dropped) = e.output_dropped {
        metrics.insert("output_dropped".to_owned(), dropped.to_string());
    }
    pb::ExecutionResult {
        status: status(e.status).into(),
        result: output.map(to_any),
        error_message,
        error_code,
        execution_time_ms: millis(e.execution_time),
        // The peak bytes live during the call, as the plugin counted them.
        memory_used_bytes: e
            .memory
            .map_or(0, |(_, peak)| i64::try_from(peak).unwrap_or(i64::MAX)),
        metrics,
        started_at: e.started_at.map(timestamp),
        completed_at: e.completed_at.map(timestamp),
    }
}

fn decimal(n: impl itoa::Integer) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

pub(super) fn execution_info(e: &ExecutionSnapshot) -> pb::ExecutionInfo {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("attempts".to_owned(), e.attempts.to_string());
    if let Some(instance) = &e.instance_id {
        metadata.insert("instance_id".to_owned(), instance.to_string());
    }
    // The wire's ExecutionInfo has a message but no code: the code, which
    // scripts match on, goes here.
    if let Some(error) = &e.error {
        metadata.insert("error_code".to_owned(), error.code.clone());
    }
    pb::ExecutionInfo {
        execution_id: e.execution_id.to_string(),
        task_id: e.task_id.to_string(),
        function_name: e.function.to_string(),
        execution_mode: mode(e.mode).into(),
        status: status(e.status).into(),
        started_at: e.started_at.map(timestamp),
        completed_at: e.completed_at.map(timestamp),
        execution_time_ms: millis(e.execution_time),
        // The peak bytes live during the call, as the plugin counted them.
        memory_used_bytes: e
            .memory
            .map_or(0, |(_, peak)| i64::try_from(peak).unwrap_or(i64::MAX)),
        error_message: e
            .error
            .as_ref()
            .map(|err| err.message.clone())
            .unwrap_or_default(),
        metadata,
    }
}

pub(super) fn task_info(task: &Task) -> pb::TaskInfo {
    let activity = task.activity();
    let mut metadata: std::collections::HashMap<String, String> =
        task.metadata.clone().into_iter().collect();
    metadata.insert("plugin".to_owned(), task.plugin.name().to_owned());
    metadata.insert(
        "plugin_version".to_owned(),
        task.plugin.version().to_owned(),
    );
    metadata.insert("digest".to_owned(), task.plugin.digest().to_hex());
    isolation(&mut metadata, task.isolation, task.memory_max);
    if task.isolation == Isolation::Process {
        let pool = task.pool.stats();
        metadata.insert("worker_crashes".to_owned(), pool.worker_crashes.to_string());
        metadata.insert("crash_looping".to_owned(), pool.crash_looping.to_string());
    }
    metadata.insert(
        "functions".to_owned(),
        task.plugin
            .functions()
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    if !task.description.is_empty() {
        metadata.insert("description".to_owned(), task.description.clone());
    }
    history_and_membership(task, &mut metadata);
    let pool = task.pool.stats();
    metadata.insert("instances".to_owned(), pool.live.to_string());
    if pool.quarantined > 0 {
        metadata.insert("quarantined".to_owned(), pool.quarantined.to_string());
    }
    for f in task.plugin.functions() {
        // What clients need to call it right: the CLI types its values and
        // streams stream functions from these.
        metadata.insert(format!("signature.{}", f.name), f.signature.clone());
        metadata.insert(format!("kind.{}", f.name), f.kind.to_string());
    }
    for (index, f) in task.plugin.functions().iter().enumerate() {
        let tier = match task.profile.functions[index].tier() {
            Tier::Inline => "inline",
            Tier::OffWorker => "off_worker",
            Tier::Blocking => "blocking",
        };
        metadata.insert(format!("tier.{}", f.name), tier.to_owned());
    }
    pb::TaskInfo {
        task_id: task.id.to_string(),
        task_name: task.name.clone(),
        artifact_spec: Some(artifact_spec(&task.artifact)),
        created_at: unix_seconds(task.created_at),
        updated_at: unix_seconds(activity.updated_at),
        execution_count: i32::try_from(activity.execution_count).unwrap_or(i32::MAX),
        last_status: activity
            .last_status
            .map_or(pb::ExecutionStatus::Unknown, status)
            .into(),
        metadata,
    }
}

/// A task's version switch and cluster standing, as metadata.
fn history_and_membership(task: &Task, metadata: &mut std::collections::HashMap<String, String>) {
    if let Some(switch) = &task.switch {
        metadata.insert(
            "switched_at".to_owned(),
            humantime::format_rfc3339_seconds(switch.at).to_string(),
        );
        if let Some(previous) = &switch.previous {
            metadata.insert(
                "previous_digest".to_owned(),
                previous.plugin.digest().to_hex(),
            );
            metadata.insert(
                "previous_plugin_version".to_owned(),
                previous.plugin.version().to_owned(),
            );
        }
    }
    match &task.membership {
        Membership::Local => {}
        Membership::Registered { sms_id } => {
            metadata.insert("cluster".to_owned(), "registered".to_owned());
            metadata.insert("sms_task_id".to_owned(), sms_id.clone());
        }
        Membership::Replica { sms_id, node_uuid } => {
            metadata.insert("cluster".to_owned(), "replica".to_owned());
            metadata.insert("sms_task_id".to_owned(), sms_id.clone());
            metadata.insert("sms_owner_node".to_owned(), node_uuid.clone());
        }
    }
}

/// A task's isolation tier, beside SPEAR's fields as our other extensions
/// are: `isolation` (`in-process` or `process`) and, when capped,
/// `memory_max` (bytes).
fn isolation(
    metadata: &mut std::collections::HashMap<String, String>,
    tier: Isolation,
    memory_max: Option<u64>,
) {
    metadata.insert("isolation".to_owned(), tier.to_string());
    if let Some(bytes) = memory_max {
        metadata.insert("memory_max".to_owned(), bytes.to_string());
    }
}

/// Loaded tasks by isolation tier, as `GetHealth` details:
/// `in_process_tasks` and `process_tasks` (dormant ones run nowhere yet).
pub(super) fn tasks_by_isolation(
    tasks: &[std::sync::Arc<Task>],
    info: &mut std::collections::HashMap<String, String>,
) {
    for (key, tier) in [
        ("in_process_tasks", Isolation::InProcess),
        ("process_tasks", Isolation::Process),
    ] {
        let n = tasks.iter().filter(|t| t.isolation == tier).count();
        info.insert(key.to_owned(), n.to_string());
    }
    let looping = tasks
        .iter()
        .filter(|t| t.isolation == Isolation::Process && t.pool.stats().crash_looping)
        .count();
    info.insert("crash_looping_tasks".to_owned(), looping.to_string());
}

/// A task recorded by an earlier run and not loaded yet: what the record
/// says, with `state = dormant` (its plugin loads on first use).
pub(super) fn dormant_task_info(task: &crate::state::StoredTask) -> pb::TaskInfo {
    let mut metadata: std::collections::HashMap<String, String> =
        task.metadata.clone().into_iter().collect();
    metadata.insert("state".to_owned(), "dormant".to_owned());
    metadata.insert("digest".to_owned(), task.digest.clone());
    // What it will run in once woken; a record nobody could read is
    // reported when it is woken, not here.
    if let Ok(setting) = IsolationSetting::of_task(&task.metadata) {
        isolation(&mut metadata, setting.isolation, setting.memory_max);
    }
    if !task.description.is_empty() {
        metadata.insert("description".to_owned(), task.description.clone());
    }
    let created = i64::try_from(task.created_at).unwrap_or(i64::MAX);
    pb::TaskInfo {
        task_id: task.id.clone(),
        task_name: task.name.clone(),
        artifact_spec: Some(artifact_spec(&ArtifactSpec::from(task.artifact.clone()))),
        created_at: created,
        updated_at: created,
        execution_count: 0,
        last_status: pb::ExecutionStatus::Unknown.into(),
        metadata,
    }
}

pub(super) fn string_map<N: TryInto<i32>>(
    map: BTreeMap<String, N>,
) -> std::collections::HashMap<String, i32> {
    map.into_iter()
        .map(|(k, v)| (k, v.try_into().unwrap_or(i32::MAX)))
        .collect()
}

/// The SMS link, as `GetHealth` details: `sms` (connecting, registered,
/// unreachable, left), `sms_endpoint`, `sms_node_uuid`, `sms_since` and
/// `sms_last_heartbeat` (RFC 3339), `sms_error` while unreachable, and
/// `sms_calls` / `sms_failures`.
pub(super) fn sms_link(
    link: &crate::sms::LinkStatus,
    info: &mut std::collections::HashMap<String, String>,
) {
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    info.insert("sms".to_owned(), link.state.word().to_owned());
    info.insert("sms_endpoint".to_owned(), link.endpoint.clone());
    info.insert("sms_node_uuid".to_owned(), link.node_uuid.clone());
    info.insert("sms_since".to_owned(), time(link.since));
    if let Some(at) = link.last_heartbeat {
        info.insert("sms_last_heartbeat".to_owned(), time(at));
    }
    if let crate::sms::LinkState::Unreachable { error } = &link.state {
        info.insert("sms_error".to_owned(), error.clone());
    }
    let (made, failed) = link
        .calls
        .iter()
        .fold((0, 0), |(m, f), (_, made, failed)| (m + made, f + failed));
    info.insert("sms_calls".to_owned(), made.to_string());
    info.insert("sms_failures".to_owned(), failed.to_string());
}

/// A dry run's reply: nothing executed (no execution id), and what would
/// run in the result's metrics: `dry_run`, `task_id` (empty when the call
/// would create its task), `plugin`, `plugin_version`, `digest`,
/// `function`, `signature`, `kind` — and, when the parameters do not fit,
/// `parameters` (why) with `success: false`.
pub(super) fn dry_run(dry: &crate::host::DryRun) -> pb::InvokeFunctionResponse {
    let task = dry.task_id.as_deref().unwrap_or_default().to_owned();
    let digest = dry.plugin.digest().to_hex();
    let mut metrics = std::collections::BTreeMap::from([
        ("dry_run".to_owned(), "true".to_owned()),
        ("task_id".to_owned(), task.clone()),
        ("plugin".to_owned(), dry.plugin.name().to_owned()),
        ("plugin_version".to_owned(), dry.plugin.version().to_owned()),
        ("digest".to_owned(), digest.clone()),
        ("function".to_owned(), dry.function.clone()),
        ("signature".to_owned(), dry.signature.clone()),
        ("kind".to_owned(), dry.kind.to_string()),
    ]);
    if let Some(problem) = &dry.parameters {
        metrics.insert("parameters".to_owned(), problem.clone());
        return pb::InvokeFunctionResponse {
            success: false,
            message: format!(
                "dry run: {}{} would refuse these parameters: {problem}; nothing was executed",
                dry.function, dry.signature
            ),
            task_id: task,
            result: Some(pb::ExecutionResult {
                metrics,
                ..Default::default()
            }),
            ..Default::default()
        };
    }
    pb::InvokeFunctionResponse {
        success: true,
        message: format!(
            "dry run: would run {}{} ({}) of {} on plugin {} {} sha256:{digest}; nothing was executed",
            dry.function,
            dry.signature,
            dry.kind,
            if task.is_empty() { "a task this call would create".to_owned() } else { format!("task {task}") },
            dry.plugin.name(),
            dry.plugin.version(),
        ),
        task_id: task,
        result: Some(pb::ExecutionResult {
            metrics,
            ..Default::default()
        }),
        ..Default::default()
    }
}
