//! The calls of `FunctionService`, `InvokeFunction` and `StreamFunction`,
//! apart from the bookkeeping handlers: they are the hot path and the
//! only handlers that run plugin code, so they are read and tuned on
//! their own.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{convert, limits, pb, reply, stream, FunctionApi, StreamResult, STREAM_BUFFER};
use crate::exec::{ExecutionMode, ExecutionStatus};
use crate::Value;

impl FunctionApi {
    /// `InvokeFunction`: runs the call (or its dry run) and replies with
    /// its result, or with where to ask for it.
    #[inline]
    pub(super) async fn invoke(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Response<pb::InvokeFunctionResponse>, Status> {
        let timeout = convert::grpc_timeout(request.metadata());
        let (trace, tracestate) = convert::trace_context(request.metadata());
        let req = request.into_inner();
        limits::check_invoke(&req, &self.host.config().limits)?;
        let mut req = convert::invoke_request(req, timeout)?;
        req.trace = Some(trace);
        req.tracestate = tracestate;
        if req.is_dry_run() {
            let dry = self.host.dry_run(&req).await?;
            return Ok(Response::new(reply::dry_run(&dry)));
        }
        let sync = req.mode == ExecutionMode::Sync;
        // Disabled below debug level: a level check, nothing more.
        let span =
            tracing::debug_span!("invoke", trace_id = %trace.trace_id, function = %req.function);
        let outcome = self.host.invoke(req).instrument(span).await?;
        let e = outcome.execution;
        if sync && e.status == ExecutionStatus::Timeout {
            let elapsed_ms = u64::try_from(e.execution_time.as_millis()).unwrap_or(u64::MAX);
            return Err(crate::error::Error::DeadlineExceeded {
                execution_id: e.execution_id.to_string(),
                elapsed_ms,
            }
            .into());
        }
        let (success, message) = match e.status {
            ExecutionStatus::Completed => (true, "completed".to_owned()),
            ExecutionStatus::Pending | ExecutionStatus::Running => {
                (true, format!("accepted: {}", e.status))
            }
            other => (
                false,
                e.error.as_ref().map_or_else(
                    || other.to_string(),
                    |err| format!("{other}: {}: {}", err.code, err.message),
                ),
            ),
        };
        let (estimated, status_endpoint) = if e.status.is_final() {
            (0, String::new())
        } else {
            let estimate = self.host.estimated_duration(&outcome.task_id, &e.function);
            (
                i64::try_from(estimate.as_millis()).unwrap_or(i64::MAX),
                format!(
                    "/spearlet.FunctionService/GetExecutionStatus?execution_id={}",
                    e.execution_id
                ),
            )
        };
        let (execution_id, instance_id) = (
            e.execution_id.to_string(),
            e.instance_id.as_deref().unwrap_or_default().to_owned(),
        );
        let mut result = reply::into_execution_result(e);
        let mut message = message;
        if outcome.upgraded_task {
            // Said in the reply, never silent: the task runs new code now.
            if let Some(task) = self.host.task(&outcome.task_id) {
                let digest = task.plugin.digest().to_hex();
                message = format!("{message} (task upgraded to sha256:{digest})");
                result.metrics.insert("task_upgraded_to".to_owned(), digest);
            }
        }
        Ok(Response::new(pb::InvokeFunctionResponse {
            success,
            message,
            execution_id,
            task_id: outcome.task_id.to_string(),
            instance_id,
            status_endpoint,
            estimated_completion_ms: estimated,
            result: Some(result),
        }))
    }

    /// `StreamFunction`: starts the call and relays its chunks as they
    /// come.
    pub(super) async fn invoke_streaming(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Response<StreamResult>, Status> {
        let timeout = convert::grpc_timeout(request.metadata());
        let (trace, tracestate) = convert::trace_context(request.metadata());
        let req = request.into_inner();
        limits::check_invoke(&req, &self.host.config().limits)?;
        let mut req = convert::invoke_request(req, timeout)?;
        req.mode = ExecutionMode::Stream;
        req.trace = Some(trace);
        req.tracestate = tracestate;
        let execution_id = req
            .execution_id
            .get_or_insert_with(|| crate::exec::new_id().to_string())
            .clone();
        let (chunk_tx, chunk_rx) = mpsc::channel::<Value>(STREAM_BUFFER);
        let (out_tx, out_rx) = mpsc::channel(STREAM_BUFFER);
        let host = self.host.clone();
        tokio::spawn(stream::relay(
            host,
            req,
            execution_id,
            chunk_tx,
            chunk_rx,
            out_tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
