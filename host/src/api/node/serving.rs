//! Serving executions: what SPEAR's endpoint gateway starts (an ASYNC
//! Invoke with `spear.endpoint_gateway=true`) and then streams frames to,
//! on the node's HTTP port. One stays RUNNING until terminated (it
//! outlives WebSocket closes, as the gateway reuses it for later clients);
//! each request frame is one SYNC call of the task's function
//! (`docs/cluster.md`, "The stream plane").
//!
//! A serving execution is reported to the SMS as an instance of its own,
//! `serve-<execution id>`: the pool's instances serve its calls one by
//! one, but the gateway needs one instance naming the execution as its
//! current one to reuse it.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::ledger::{Ending, NewEntry, Phase, Refusal};
use super::report::{self, Subject};
use super::{payload, Entry, Ledger, NodeApi};
use crate::error::Error;
use crate::exec::{ExecutionError, ExecutionMode, ExecutionStatus};
use crate::host::Host;
use crate::invoke::{InvokeRequest, Target};

/// The prefix of a serving execution's instance id.
const INSTANCE_PREFIX: &str = "serve-";

/// Why one frame's call has no answer, as an SSF error frame carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// A stable snake_case code (the plugin's own, or the host's error kind).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Whether the same frame may succeed if sent again.
    pub retryable: bool,
}

/// Starts a serving execution of `task_id` (its task is loaded now, in
/// the background: a task that cannot load ends it FAILED).
///
/// # Errors
///
/// As [`super::Ledger::insert`].
pub(super) fn start(
    api: &NodeApi,
    execution_id: Arc<str>,
    invocation_id: Arc<str>,
    task_id: Arc<str>,
    function: String,
) -> Result<Arc<Entry>, Refusal> {
    let (stop, _) = watch::channel(false);
    let instance: Arc<str> = format!("{INSTANCE_PREFIX}{execution_id}").into();
    let entry = api.ledger.insert(NewEntry {
        execution_id: Arc::clone(&execution_id),
        invocation_id,
        task_id,
        function: function.into(),
        phase: Phase::Serving { stop },
        instance_id: Some(Arc::clone(&instance)),
    })?;
    report::started(&api.host, &subject(&entry));
    let host = api.host.clone();
    let loading = Arc::clone(&entry);
    tokio::spawn(async move {
        match host.resolve_task(&request(&loading.task_id)).await {
            Ok((task, _)) => {
                // The default entry, named: the SMS's index shows what runs.
                if let Ok(function) = task.function(&loading.function()) {
                    let name = task.plugin.function_name(function);
                    if **name != *loading.function() {
                        loading.set_function(Arc::clone(name));
                        report::started(&host, &subject(&loading));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(execution = %loading.execution_id, error = %e, "a serving execution's task cannot be loaded; it ends FAILED");
                end(
                    &host,
                    &loading,
                    ExecutionStatus::Failed,
                    crate::exec::error_of(&e),
                );
            }
        }
    });
    Ok(entry)
}

/// Terminates a serving execution: its WebSocket connections close.
pub(super) fn stop(host: &Host, entry: &Entry, error: ExecutionError) {
    end(host, entry, ExecutionStatus::Cancelled, error);
}

fn end(host: &Host, entry: &Entry, status: ExecutionStatus, error: ExecutionError) {
    let now = SystemTime::now();
    let ended = entry.end(Ending {
        status,
        error: Some(error.clone()),
        started_at: Some(entry.accepted_at),
        completed_at: now,
    });
    if ended {
        report::ended(host, &subject(entry), status, Some(&error), now, true);
    }
}

/// The serving execution whose instance is `instance_id`.
pub(super) fn by_instance(ledger: &Ledger, instance_id: &str) -> Option<Arc<Entry>> {
    let execution_id = instance_id.strip_prefix(INSTANCE_PREFIX)?;
    ledger.get(execution_id).filter(|e| e.is_serving())
}

/// One frame's call on a serving execution: `function` (else the one its
/// Invoke named, else the task's default), the frame's data typed by
/// `content_type`. Returns the result as `(content type, bytes)`.
///
/// # Errors
///
/// A [`CallFailure`] carrying the plugin's error, or the host's.
pub async fn call(
    host: &Host,
    entry: &Entry,
    function: Option<&str>,
    content_type: &str,
    data: Vec<u8>,
) -> std::result::Result<(String, Vec<u8>), CallFailure> {
    let mut request = request(&entry.task_id);
    let task = match host.task(&entry.task_id) {
        Some(task) => task,
        None => host.resolve_task(&request).await.map_err(failure)?.0,
    };
    let wanted = match function {
        Some(name) => name.to_owned(),
        None => entry.function().to_string(),
    };
    let handle = task.function(&wanted).map_err(failure)?;
    let info = &task.plugin.functions()[handle.index()];
    request.params = payload::params(info, content_type, data).map_err(failure)?;
    request.function.clone_from(&info.name);
    let outcome = host.invoke(request).await.map_err(failure)?.execution;
    match (outcome.status, outcome.output) {
        (ExecutionStatus::Completed, output) => {
            Ok(payload::output(output.unwrap_or(crate::Value::Unit)))
        }
        (status, _) => {
            let error = outcome
                .error
                .unwrap_or_else(|| ExecutionError::new(status.name(), status.name()));
            Err(CallFailure {
                retryable: status == ExecutionStatus::Timeout,
                code: error.code,
                message: error.message,
            })
        }
    }
}

fn request(task_id: &str) -> InvokeRequest {
    let mut request = InvokeRequest::new(
        Target::ExistingTask {
            task_id: task_id.to_owned(),
            create_if_not_exists: false,
            artifact: None,
            name: String::new(),
            description: String::new(),
        },
        String::new(),
    );
    request.mode = ExecutionMode::Sync;
    request
}

fn failure(e: Error) -> CallFailure {
    let retryable = matches!(
        e,
        Error::PoolExhausted { .. }
            | Error::TooManyPending { .. }
            | Error::QuarantineFull { .. }
            | Error::HostStopping
            | Error::SmsUnavailable { .. }
    );
    CallFailure {
        code: e.kind().to_owned(),
        message: e.to_string(),
        retryable,
    }
}

fn subject(entry: &Entry) -> Subject {
    let instance = entry.instance_id().unwrap_or_else(|| "".into());
    Subject::of(entry, instance, entry.accepted_at)
}
