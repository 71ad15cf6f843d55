//! `Invoke` and `TerminateExecution`: the caller's ids kept, the task
//! fetched from the SMS when this node has never seen it, SYNC answered
//! with the result, ASYNC answered at once — before its task is loaded, if
//! it must be, since SPEAR's gateway gives a node 2 s — and an execution
//! started by SPEAR's gateway served frame by frame until terminated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use spearlet_proto::node as pb;

use super::ledger::{Ending, NewEntry, Phase, Refusal};
use super::report::{self, Subject};
use super::{payload, serving, Entry, NodeApi};
use crate::error::{Error, Result};
use crate::exec::{ExecutionError, ExecutionMode, ExecutionSnapshot, ExecutionStatus};
use crate::host::Host;
use crate::invoke::{InvokeRequest, Target};

/// The metadata key by which SPEAR's gateway starts a serving execution.
pub const GATEWAY_KEY: &str = "spear.endpoint_gateway";

/// Everything a call needs besides its task.
#[derive(Debug)]
struct Call {
    function: String,
    content_type: String,
    data: Vec<u8>,
    mode: ExecutionMode,
    headers: Vec<(String, String)>,
    environment: Vec<(String, String)>,
    timeout: Option<Duration>,
    force_new_instance: bool,
    metadata: BTreeMap<String, String>,
}

/// `deadline`: the caller's gRPC deadline; a SYNC call ends by the sooner
/// of it and `timeout_ms`.
pub(super) async fn invoke(
    api: &NodeApi,
    req: pb::InvokeRequest,
    deadline: Option<Duration>,
) -> Result<pb::InvokeResponse> {
    if req.task_id.is_empty() {
        return Err(Error::InvalidRequest {
            field: "task_id",
            reason: "is required".to_owned(),
        });
    }
    let mode = mode_of(req.mode)?;
    let fresh_id = || uuid::Uuid::new_v4().to_string();
    let execution_id: Arc<str> = non_empty(req.execution_id).unwrap_or_else(fresh_id).into();
    let invocation_id: Arc<str> = non_empty(req.invocation_id).unwrap_or_else(fresh_id).into();
    if api.ledger.get(&execution_id).is_some() {
        // The same id again: where it stands, not a second run.
        return Ok(existing(api, &execution_id));
    }
    let mut metadata: BTreeMap<String, String> = req.metadata.into_iter().collect();
    let gateway = metadata
        .remove(GATEWAY_KEY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let task_id: Arc<str> = req.task_id.into();
    if gateway {
        let started = serving::start(
            api,
            execution_id.clone(),
            invocation_id,
            task_id,
            req.function_name,
        );
        return match started {
            Ok(entry) => Ok(response(&api.entry_view(&entry, false))),
            Err(refusal) => refused(api, &execution_id, refusal),
        };
    }
    let (content_type, data) = req
        .input
        .map(|p| (p.content_type, p.data))
        .unwrap_or_default();
    let call = Call {
        function: req.function_name,
        content_type,
        data,
        mode,
        headers: req.headers.into_iter().collect(),
        environment: req.environment.into_iter().collect(),
        timeout: sooner(
            (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
            deadline.filter(|_| mode == ExecutionMode::Sync),
        ),
        force_new_instance: req.force_new_instance,
        metadata,
    };
    accept(api, execution_id, invocation_id, task_id, call).await
}

fn mode_of(raw: i32) -> Result<ExecutionMode> {
    match pb::ExecutionMode::try_from(raw) {
        Ok(pb::ExecutionMode::Unspecified | pb::ExecutionMode::Sync) => Ok(ExecutionMode::Sync),
        Ok(pb::ExecutionMode::Async) => Ok(ExecutionMode::Async),
        Err(_) => Err(Error::InvalidRequest {
            field: "mode",
            reason: format!("{raw} is no ExecutionMode"),
        }),
    }
}

/// Records the call and runs it: SYNC answered with its result, ASYNC
/// answered at once (before its task loads, if it must).
async fn accept(
    api: &NodeApi,
    execution_id: Arc<str>,
    invocation_id: Arc<str>,
    task_id: Arc<str>,
    call: Call,
) -> Result<pb::InvokeResponse> {
    // Bounds the ASYNC calls accepted while their task loads (each holds
    // its input): claimed before anything is recorded.
    let loading = if call.mode == ExecutionMode::Async && api.host.task(&task_id).is_none() {
        let limit = api.host.config().executions.max_pending;
        let permit =
            Arc::clone(&api.loading)
                .try_acquire_owned()
                .map_err(|_| Error::TooManyPending {
                    pending: limit,
                    limit,
                })?;
        Some(permit)
    } else {
        None
    };
    let inserted = api.ledger.insert(NewEntry {
        execution_id: Arc::clone(&execution_id),
        invocation_id,
        task_id,
        function: call.function.as_str().into(),
        phase: Phase::Loading { cancelled: false },
        instance_id: None,
    });
    let entry = match inserted {
        Ok(entry) => entry,
        Err(refusal) => return refused(api, &execution_id, refusal),
    };
    if let Some(permit) = loading {
        // Accepted now, loaded and run after: the caller must not wait for
        // a download.
        let host = api.host.clone();
        let entry_ = Arc::clone(&entry);
        tokio::spawn(async move {
            let _ = run(&host, &entry_, call).await;
            drop(permit);
        });
        return Ok(response(&api.entry_view(&entry, false)));
    }
    // Run in a task of its own, so that a caller who gives up (its future
    // dropped) never leaves the execution half-recorded. A failure before
    // the run (task fetch or load, bad input) is an error status, so
    // SPEAR's web admin tries another node; a run that fails is a reply
    // (FAILED, with the error).
    let host = api.host.clone();
    let running = Arc::clone(&entry);
    let ran = tokio::spawn(async move { run(&host, &running, call).await })
        .await
        .map_err(Error::background("a node-API call's task"))?;
    Ok(match ran? {
        Some(snapshot) => response(&super::snapshot_view(&entry.invocation_id, &snapshot, true)),
        None => response(&api.entry_view(&entry, true)),
    })
}

/// The answer when the ledger took no entry: where a known id stands, or
/// RESOURCE_EXHAUSTED when it holds only live executions.
fn refused(api: &NodeApi, execution_id: &str, refusal: Refusal) -> Result<pb::InvokeResponse> {
    match refusal {
        Refusal::Known => Ok(existing(api, execution_id)),
        Refusal::Full { max } => Err(Error::TooManyPending {
            pending: max,
            limit: max,
        }),
    }
}

fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Loads the task, maps the input, runs the call; for ASYNC, watches it to
/// its end. The entry ends FAILED if anything before the run fails.
/// `None`: it was terminated before it ran.
async fn run(host: &Host, entry: &Arc<Entry>, call: Call) -> Result<Option<ExecutionSnapshot>> {
    let target = Target::ExistingTask {
        task_id: entry.task_id.to_string(),
        create_if_not_exists: false,
        artifact: None,
        name: String::new(),
        description: String::new(),
    };
    let mut request = InvokeRequest::new(target, String::new());
    let prepared = async {
        let (task, _) = host.resolve_task(&request).await?;
        let function = task.function(&call.function)?;
        let info = &task.plugin.functions()[function.index()];
        let params = payload::params(info, &call.content_type, call.data)?;
        Ok::<_, Error>((info.name.clone(), params))
    }
    .await;
    let (function, params) = prepared.map_err(|e| failed_unrun(host, entry, e))?;
    entry.set_function(function.as_str().into());
    if !entry.recorded() {
        return Ok(None);
    }
    request.function = function;
    request.params = params;
    request.mode = call.mode;
    request.execution_id = Some(entry.execution_id.to_string());
    request.headers = call.headers;
    request.environment = call.environment;
    request.timeout = call.timeout;
    request.force_new_instance = call.force_new_instance;
    request.metadata = call.metadata;
    // A termination that came before the host held the record: the call is
    // dropped, which cancels whatever of it started.
    let invoked = tokio::select! {
        invoked = host.invoke(request) => invoked,
        error = entry.terminated() => {
            return Ok(after_termination(host, entry, error).await);
        }
    };
    let outcome = invoked.map_err(|e| failed_unrun(host, entry, e))?.execution;
    if outcome.status.is_final() {
        record_end(host, entry, &outcome);
    } else {
        let host = host.clone();
        let entry = Arc::clone(entry);
        tokio::spawn(async move { follow(&host, &entry).await });
    }
    Ok(Some(outcome))
}

/// How a call dropped on termination ended: as its host record says if
/// the host got to make one (dropping the call cancelled it), else
/// cancelled before it ran.
async fn after_termination(
    host: &Host,
    entry: &Entry,
    error: ExecutionError,
) -> Option<ExecutionSnapshot> {
    if let Some(record) = host.execution_record(&entry.execution_id) {
        record.finished().await;
        let snapshot = record.snapshot();
        record_end(host, entry, &snapshot);
        return Some(snapshot);
    }
    end_unrun(host, entry, ExecutionStatus::Cancelled, error);
    None
}

/// Ends the entry of an execution that finished, and reports its start
/// and end (it ran within the call) — unless it had ended already (a
/// termination raced it), which was reported then.
fn record_end(host: &Host, entry: &Entry, e: &ExecutionSnapshot) {
    let completed_at = e.completed_at.unwrap_or_else(SystemTime::now);
    let ended = entry.end(Ending {
        status: e.status,
        error: e.error.clone(),
        started_at: e.started_at,
        completed_at,
    });
    if !ended {
        return;
    }
    let started_at = e.started_at.unwrap_or(entry.accepted_at);
    let instance = e.instance_id.clone().unwrap_or_else(|| "".into());
    if !instance.is_empty() {
        entry.set_instance(Arc::clone(&instance));
    }
    let subject = subject(entry, &instance, started_at);
    if !instance.is_empty() {
        report::started(host, &subject);
    }
    // Its instance destroyed on request was reported gone then: not IDLE.
    let instance_gone =
        e.status == ExecutionStatus::Cancelled && host.instance_destroyed(&instance);
    report::ended(
        host,
        &subject,
        e.status,
        e.error.as_ref(),
        completed_at,
        instance_gone,
    );
}

/// Follows an ASYNC execution the host runs: reported RUNNING once it has
/// an instance, and how it ended when it does.
async fn follow(host: &Host, entry: &Arc<Entry>) {
    let Some(record) = host.execution_record(&entry.execution_id) else {
        // Already gone from the host's store (pruned): it ended, how is
        // not known any more.
        let error = ExecutionError::new(
            "record_lost",
            "the host no longer holds the execution's record",
        );
        end_unrun(host, entry, ExecutionStatus::Failed, error);
        return;
    };
    let mut reported_start = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if !reported_start {
            if let Some(instance) = record.instance_id() {
                entry.set_instance(Arc::clone(&instance));
                let started_at = record.snapshot().started_at.unwrap_or(entry.accepted_at);
                report::started(host, &subject(entry, &instance, started_at));
                reported_start = true;
            }
        }
        tokio::select! {
            _ = record.finished() => break,
            _ = tick.tick(), if !reported_start => {}
        }
    }
    let e = record.snapshot();
    record_end(host, entry, &e);
}

/// Ends FAILED an execution that `e` stopped before it ran; returns `e`.
fn failed_unrun(host: &Host, entry: &Entry, e: Error) -> Error {
    end_unrun(
        host,
        entry,
        ExecutionStatus::Failed,
        crate::exec::error_of(&e),
    );
    e
}

/// Ends an execution that never reached the host's store.
fn end_unrun(host: &Host, entry: &Entry, status: ExecutionStatus, error: ExecutionError) {
    let now = SystemTime::now();
    if entry.end(Ending {
        status,
        error: Some(error.clone()),
        started_at: None,
        completed_at: now,
    }) {
        let subject = subject(entry, &"".into(), entry.accepted_at);
        report::ended(host, &subject, status, Some(&error), now, false);
    }
}

fn subject(entry: &Entry, instance: &Arc<str>, started_at: SystemTime) -> Subject {
    Subject::of(entry, Arc::clone(instance), started_at)
}

/// Terminates an execution: one of the node API's (loading, recorded or
/// serving), or any the host holds. Returns whether it took effect, and
/// the status after.
pub(super) fn terminate(
    api: &NodeApi,
    execution_id: &str,
    reason: &str,
) -> Result<(bool, ExecutionStatus)> {
    let error = ExecutionError::new("terminated", reason);
    let Some(entry) = api.ledger.get(execution_id) else {
        return api.host.cancel_with(execution_id, true, error);
    };
    loop {
        match entry.phase() {
            Phase::Ended(ending) => return Ok((false, ending.status)),
            Phase::Loading { .. } => {
                if entry.cancel_loading() {
                    end_unrun(&api.host, &entry, ExecutionStatus::Cancelled, error);
                    return Ok((true, ExecutionStatus::Cancelled));
                }
                // Its load finished meanwhile: look again.
            }
            Phase::Serving { .. } => {
                serving::stop(&api.host, &entry, error);
                return Ok((true, ExecutionStatus::Cancelled));
            }
            Phase::Recorded => {
                return match api.host.cancel_with(execution_id, true, error.clone()) {
                    Err(Error::ExecutionNotFound { .. }) => {
                        // Recorded here, not yet by the host: the call
                        // gives up its run.
                        entry.request_termination(error);
                        Ok((true, ExecutionStatus::Cancelled))
                    }
                    other => other,
                };
            }
        }
    }
}

/// The reply for an execution id the ledger holds already.
fn existing(api: &NodeApi, execution_id: &str) -> pb::InvokeResponse {
    match api.ledger.get(execution_id) {
        Some(entry) => response(&api.entry_view(&entry, true)),
        None => pb::InvokeResponse {
            execution_id: execution_id.to_owned(),
            ..Default::default()
        },
    }
}

fn response(e: &pb::Execution) -> pb::InvokeResponse {
    pb::InvokeResponse {
        invocation_id: e.invocation_id.clone(),
        execution_id: e.execution_id.clone(),
        instance_id: e.instance_id.clone(),
        status: e.status,
        output: e.output.clone(),
        error: e.error.clone(),
        started_at: e.started_at,
        completed_at: e.completed_at,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
