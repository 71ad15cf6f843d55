//! The execution handlers of `FunctionService` (status, cancel, list):
//! they read and steer what the execution store records, and change
//! together when what an execution records changes.

use tonic::{Request, Response, Status};

use super::{convert, limits, pb, reply, FunctionApi};
use crate::exec::{ExecutionQuery, ExecutionStatus};

impl FunctionApi {
    /// `GetExecutionStatus`: one execution's status, and its result and
    /// logs if asked.
    pub(super) async fn execution_status(
        &self,
        request: Request<pb::GetExecutionStatusRequest>,
    ) -> Result<Response<pb::GetExecutionStatusResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.config().limits;
        limits::check_id("execution_id", &req.execution_id, limits)?;
        let reply = match self.host.execution(&req.execution_id) {
            Ok(e) => pb::GetExecutionStatusResponse {
                found: true,
                result: Some(reply::execution_result(&e, req.include_result)),
                logs: if req.include_logs {
                    e.logs.clone()
                } else {
                    Vec::new()
                },
                message: e.status.to_string(),
            },
            Err(err) => pb::GetExecutionStatusResponse {
                found: false,
                result: None,
                logs: Vec::new(),
                message: err.to_string(),
            },
        };
        Ok(Response::new(reply))
    }

    /// `CancelExecution`: asks one execution to stop.
    pub(super) async fn cancel(
        &self,
        request: Request<pb::CancelExecutionRequest>,
    ) -> Result<Response<pb::CancelExecutionResponse>, Status> {
        let req = request.into_inner();
        let limits = &self.host.config().limits;
        limits::check_id("execution_id", &req.execution_id, limits)?;
        let (success, status) = self.host.cancel(&req.execution_id, req.force)?;
        let message = if success {
            match status {
                ExecutionStatus::Cancelled => "cancelled".to_owned(),
                s => {
                    format!("cancellation requested; the execution is {s} until the plugin returns")
                }
            }
        } else {
            format!("the execution already ended: {status}")
        };
        Ok(Response::new(pb::CancelExecutionResponse {
            success,
            message,
            final_status: reply::status(status).into(),
        }))
    }

    /// `ListExecutions`: one page of the executions recorded.
    pub(super) async fn execution_page(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let req = request.into_inner();
        let query = ExecutionQuery {
            task_id: (!req.task_id.is_empty()).then_some(req.task_id),
            status: convert::status_filter(req.status_filter)?,
            start_after: (!req.start_after.is_empty()).then_some(req.start_after),
            limit: convert::page_limit(req.limit),
            logs: false,
        };
        let (page, has_more) = self.host.executions(&query)?;
        Ok(Response::new(pb::ListExecutionsResponse {
            next_start_after: if has_more {
                page.last()
                    .map(|e| e.execution_id.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            executions: page.iter().map(reply::execution_info).collect(),
            has_more,
        }))
    }
}
