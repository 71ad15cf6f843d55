//! The calls of `FunctionService`, `InvokeFunction` and `StreamFunction`,
//! apart from the bookkeeping handlers: they are the hot path and the
//! only handlers that run plugin code, so they are read and tuned on
//! their own.

use std::future::Future;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{convert, limits, pb, reply, stream, FunctionApi, StreamResult, STREAM_BUFFER};
use crate::exec::{ExecutionMode, ExecutionStatus};
use crate::invoke::{InvokeOutcome, InvokeRequest};
use crate::Value;

/// An `InvokeFunction` request, converted and checked.
enum Prepared {
    /// A call, and the span it runs in.
    Call(InvokeRequest, tracing::Span),
    /// A dry run (`spearlet.dry_run`): nothing runs.
    DryRun(InvokeRequest),
}

impl FunctionApi {
    /// `InvokeFunction`: runs the call (or its dry run) and replies with
    /// its result, or with where to ask for it.
    ///
    /// The request is converted when this is called, before the returned
    /// future is first polled, and the future holds only what the call
    /// needs across its await (the domain request, its span): a gRPC
    /// handler's future is moved into a box on every call, and as an
    /// `async fn` holding the protobuf request, its conversion and the
    /// reply it would be several kilobytes.
    pub(super) fn invoke(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> impl Future<Output = Result<Response<pb::InvokeFunctionResponse>, Status>> + Send + '_
    {
        let prepared = self.prepare_invoke(request);
        async move {
            let (req, span) = match prepared? {
                Prepared::Call(req, span) => (req, span),
                Prepared::DryRun(req) => return Box::pin(self.dry_run_reply(req)).await,
            };
            let sync = req.mode == ExecutionMode::Sync;
            // Not wrapped when disabled: the wrapper moves the call's
            // future into itself.
            let outcome = if span.is_disabled() {
                self.host.invoke(req).await?
            } else {
                self.host.invoke(req).instrument(span).await?
            };
            self.invoke_reply(outcome, sync)
        }
    }

    /// The domain request of an `InvokeFunction`, with its trace context
    /// and deadline, checked against the service's limits.
    fn prepare_invoke(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Prepared, Status> {
        let timeout = convert::grpc_timeout(request.metadata());
        let (trace, tracestate) = convert::trace_context(request.metadata());
        let req = request.into_inner();
        limits::check_invoke(&req, &self.host.config().limits)?;
        let mut req = convert::invoke_request(req, timeout)?;
        req.trace = Some(trace);
        req.tracestate = tracestate;
        if req.is_dry_run() {
            return Ok(Prepared::DryRun(req));
        }
        // Disabled below debug level: a level check, nothing more.
        let span =
            tracing::debug_span!("invoke", trace_id = %trace.trace_id, function = %req.function);
        Ok(Prepared::Call(req, span))
    }

    /// A dry run's reply; boxed by its caller, as it may load an artifact
    /// and its future is large.
    async fn dry_run_reply(
        &self,
        req: InvokeRequest,
    ) -> Result<Response<pb::InvokeFunctionResponse>, Status> {
        let dry = self.host.dry_run(&req).await?;
        Ok(Response::new(reply::dry_run(&dry)))
    }

    /// The reply to an `InvokeFunction` that ran (or was accepted).
    fn invoke_reply(
        &self,
        outcome: InvokeOutcome,
        sync: bool,
    ) -> Result<Response<pb::InvokeFunctionResponse>, Status> {
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
            e.execution_id.as_str().to_owned(),
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
            task_id: String::from(&*outcome.task_id),
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
