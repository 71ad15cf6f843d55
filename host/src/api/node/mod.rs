//! Today's SPEAR node API over [`Host`]: `spearlet.InvocationService`,
//! `spearlet.ExecutionService` and `spearlet.InstanceService`, which
//! SPEAR's metadata server (its endpoint gateway and web admin) calls on a
//! node (`docs/cluster.md`, "Serving today's SPEAR cluster"). The same
//! host serves the original `FunctionService` beside it: one task
//! registry, one execution store, one pool.

mod invoke;
mod ledger;
pub mod payload;
mod report;
pub mod serving;

use std::sync::Arc;
use std::time::SystemTime;

use spearlet_proto::node as pb;
use spearlet_proto::node::execution_service_server::ExecutionService;
use spearlet_proto::node::instance_service_server::InstanceService;
use spearlet_proto::node::invocation_service_server::InvocationService;
use tonic::{Request, Response, Status};

pub use ledger::{Entry, Ledger, Phase};

use super::limits;
use crate::error::Error;
use crate::exec::{ExecutionError, ExecutionSnapshot, ExecutionStatus};
use crate::host::Host;

/// `ListExecutions` without a limit returns this many, as SPEAR's node.
const DEFAULT_PAGE: usize = 50;
/// The most one `ListExecutions` page holds.
const MAX_PAGE: usize = 1000;

/// The three services, sharing one host and one `Ledger` (which the
/// node's HTTP port reads too, for serving executions).
#[derive(Debug, Clone)]
pub struct NodeApi {
    host: Host,
    ledger: Arc<Ledger>,
    /// ASYNC calls accepted while their task loads: at most
    /// `executions.max_pending` (each holds its input until it runs).
    loading: Arc<tokio::sync::Semaphore>,
}

impl NodeApi {
    /// The services for `host`, remembering up to `executions.max_records`
    /// node-API executions.
    pub fn new(host: Host) -> Self {
        let max = host.config().executions.max_records;
        let pending = host.config().executions.max_pending;
        NodeApi {
            host,
            ledger: Arc::new(Ledger::new(max)),
            loading: Arc::new(tokio::sync::Semaphore::new(pending)),
        }
    }

    /// What it knows of the executions it started.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The host it serves.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Ends every serving execution (the server is stopping): their
    /// WebSocket connections close.
    pub fn stop_serving(&self, code: &str, message: &str) {
        for entry in self.ledger.serving(None) {
            serving::stop(&self.host, &entry, ExecutionError::new(code, message));
        }
    }

    /// An execution as the node API shows it: the ledger's entry (and the
    /// host's record behind it), else any execution the host holds.
    fn view(&self, execution_id: &str, include_output: bool) -> Option<pb::Execution> {
        match self.ledger.get(execution_id) {
            Some(entry) => Some(self.entry_view(&entry, include_output)),
            None => {
                let snapshot = self.host.execution(execution_id).ok()?;
                Some(snapshot_view("", &snapshot, include_output))
            }
        }
    }

    fn entry_view(&self, entry: &Entry, include_output: bool) -> pb::Execution {
        let base = || pb::Execution {
            invocation_id: entry.invocation_id.to_string(),
            execution_id: entry.execution_id.to_string(),
            task_id: entry.task_id.to_string(),
            function_name: entry.function().to_string(),
            instance_id: entry
                .instance_id()
                .as_deref()
                .unwrap_or_default()
                .to_owned(),
            ..Default::default()
        };
        let recorded = || self.host.execution(&entry.execution_id).ok();
        match entry.phase() {
            Phase::Loading { .. } => pb::Execution {
                status: pb::ExecutionStatus::Pending.into(),
                ..base()
            },
            Phase::Serving { .. } => pb::Execution {
                status: pb::ExecutionStatus::Running.into(),
                started_at: Some(entry.accepted_at.into()),
                ..base()
            },
            Phase::Recorded => match recorded() {
                Some(snapshot) => snapshot_view(&entry.invocation_id, &snapshot, include_output),
                None => pb::Execution {
                    status: pb::ExecutionStatus::Unspecified.into(),
                    error: Some(pb::Error {
                        code: "record_expired".to_owned(),
                        message: "this node no longer keeps the execution's record".to_owned(),
                    }),
                    ..base()
                },
            },
            Phase::Ended(ending) => {
                // Read (and copied) only when asked for: a listing never is.
                let output = include_output
                    .then(recorded)
                    .flatten()
                    .and_then(|s| s.output)
                    .map(output_payload);
                pb::Execution {
                    status: node_status(ending.status).into(),
                    error: ending.error.as_ref().map(error),
                    started_at: ending.started_at.map(Into::into),
                    completed_at: Some(ending.completed_at.into()),
                    output,
                    ..base()
                }
            }
        }
    }
}

/// The node API's view of a host record.
fn snapshot_view(
    invocation_id: &str,
    e: &ExecutionSnapshot,
    include_output: bool,
) -> pb::Execution {
    pb::Execution {
        invocation_id: invocation_id.to_owned(),
        execution_id: e.execution_id.to_string(),
        task_id: e.task_id.to_string(),
        function_name: e.function.to_string(),
        instance_id: e.instance_id.as_deref().unwrap_or_default().to_owned(),
        status: node_status(e.status).into(),
        output: e
            .output
            .clone()
            .filter(|_| include_output)
            .map(output_payload),
        error: e.error.as_ref().map(error),
        started_at: e.started_at.map(Into::into),
        completed_at: e.completed_at.map(Into::into),
    }
}

/// The host's status in the node API's terms (cancelled is TERMINATED).
pub(crate) fn node_status(status: ExecutionStatus) -> pb::ExecutionStatus {
    match status {
        ExecutionStatus::Pending => pb::ExecutionStatus::Pending,
        ExecutionStatus::Running => pb::ExecutionStatus::Running,
        ExecutionStatus::Completed => pb::ExecutionStatus::Completed,
        ExecutionStatus::Failed => pb::ExecutionStatus::Failed,
        ExecutionStatus::Cancelled => pb::ExecutionStatus::Terminated,
        ExecutionStatus::Timeout => pb::ExecutionStatus::Timeout,
    }
}

fn error(e: &ExecutionError) -> pb::Error {
    pb::Error {
        code: e.code.clone(),
        message: e.message.clone(),
    }
}

fn output_payload(value: crate::Value) -> pb::Payload {
    let (content_type, data) = payload::output(value);
    pb::Payload { content_type, data }
}

fn page_size(limit: u32) -> usize {
    match usize::try_from(limit) {
        Ok(0) => DEFAULT_PAGE,
        Ok(n) => n.min(MAX_PAGE),
        Err(_) => MAX_PAGE,
    }
}

#[tonic::async_trait]
impl InvocationService for NodeApi {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let deadline = super::convert::grpc_timeout(request.metadata());
        let req = request.into_inner();
        limits::check_node_invoke(&req, &self.host.config().limits)?;
        Ok(Response::new(invoke::invoke(self, req, deadline).await?))
    }
}

#[tonic::async_trait]
impl ExecutionService for NodeApi {
    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let req = request.into_inner();
        let limits = &self.host.config().limits;
        limits::check_id("execution_id", &req.execution_id, limits)?;
        self.view(&req.execution_id, req.include_output)
            .map(Response::new)
            .ok_or_else(|| {
                Error::ExecutionNotFound {
                    execution_id: req.execution_id,
                }
                .into()
            })
    }

    async fn terminate_execution(
        &self,
        request: Request<pb::TerminateExecutionRequest>,
    ) -> Result<Response<pb::TerminateExecutionResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.config().limits;
        limits::check_id("execution_id", &req.execution_id, limits)?;
        let reason = if req.reason.is_empty() {
            "terminated on request".to_owned()
        } else {
            format!("terminated: {}", req.reason)
        };
        let (success, status) = invoke::terminate(self, &req.execution_id, &reason)?;
        Ok(Response::new(pb::TerminateExecutionResponse {
            success,
            final_status: node_status(status).into(),
            message: if success {
                reason
            } else {
                format!("the execution already ended: {status}")
            },
        }))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.config().limits;
        for (field, id) in [
            ("task_id", &req.task_id),
            ("invocation_id", &req.invocation_id),
            ("page_token", &req.page_token),
        ] {
            limits::check_id(field, id, limits)?;
        }
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        if let Some(token) = after {
            if self.ledger.get(token).is_none() {
                return Err(Error::InvalidRequest {
                    field: "page_token",
                    reason: format!("`{token}` names no execution this node still lists"),
                }
                .into());
            }
        }
        let (page, more) = self.ledger.list(after, page_size(req.limit), |e| {
            (req.task_id.is_empty() || *e.task_id == *req.task_id)
                && (req.invocation_id.is_empty() || *e.invocation_id == *req.invocation_id)
        });
        Ok(Response::new(pb::ListExecutionsResponse {
            next_page_token: if more {
                page.last()
                    .map(|e| e.execution_id.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            executions: page.iter().map(|e| self.entry_view(e, false)).collect(),
        }))
    }
}

#[tonic::async_trait]
impl InstanceService for NodeApi {
    async fn destroy_instance(
        &self,
        request: Request<pb::DestroyInstanceRequest>,
    ) -> Result<Response<pb::DestroyInstanceResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.config().limits;
        limits::check_id("instance_id", &req.instance_id, limits)?;
        let reason = if req.reason.is_empty() {
            "destroyed on request".to_owned()
        } else {
            req.reason.clone()
        };
        // A serving execution is its own instance.
        if let Some(entry) = serving::by_instance(&self.ledger, &req.instance_id) {
            invoke::terminate(
                self,
                &entry.execution_id,
                &format!("instance destroyed: {reason}"),
            )?;
            return Ok(Response::new(pb::DestroyInstanceResponse {
                success: true,
                message: format!("serving execution {} terminated", entry.execution_id),
            }));
        }
        let destroyed = self.host.destroy_instance(&req.instance_id, &reason)?;
        report::instance_gone(
            &self.host,
            &destroyed.task_id,
            &req.instance_id,
            SystemTime::now(),
        );
        Ok(Response::new(pb::DestroyInstanceResponse {
            success: true,
            message: if destroyed.was_idle {
                "destroyed".to_owned()
            } else {
                format!(
                    "{} running execution(s) terminated; the instance is dropped as its call returns",
                    destroyed.terminated
                )
            },
        }))
    }
}
