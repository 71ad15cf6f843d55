//! A STREAM execution relayed to its gRPC client: chunks as they come, then
//! one final message.

use spearlet_proto::spearlet as pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::{reply, value};
use crate::host::Host;
use crate::Value;

/// Runs a STREAM execution, forwarding its chunks, then one final message.
/// A client that goes away cancels the execution.
///
/// The execution runs as a task of its own, so its deadline fires whatever
/// the client does: a client that stops reading holds only this relay.
pub(super) async fn relay(
    host: Host,
    req: crate::invoke::InvokeRequest,
    execution_id: String,
    chunk_tx: mpsc::Sender<Value>,
    mut chunk_rx: mpsc::Receiver<Value>,
    out: mpsc::Sender<Result<pb::StreamExecutionResult, Status>>,
) {
    let chunk_message = |value: Value| pb::StreamExecutionResult {
        execution_id: execution_id.clone(),
        status: pb::ExecutionStatus::Running.into(),
        chunk_data: Some(value::to_any(value)),
        is_final: false,
        error_message: String::new(),
        metadata: Default::default(),
    };
    let runner = host.clone();
    let mut run = tokio::spawn(async move { runner.stream(req, chunk_tx).await });
    let mut chunks_done = false;
    let outcome = loop {
        tokio::select! {
            chunk = chunk_rx.recv(), if !chunks_done => match chunk {
                Some(value) => {
                    if out.send(Ok(chunk_message(value))).await.is_err() {
                        // The client went away: stop the plugin; its next
                        // `emit` finds the stream closed.
                        let _ = host.cancel(&execution_id, false);
                        return;
                    }
                }
                // The execution dropped its sender: it is about to finish.
                None => chunks_done = true,
            },
            outcome = &mut run => break outcome.unwrap_or_else(|e| {
                Err(crate::Error::Background {
                what: "the stream's execution",
                reason: e.to_string(),
            })
            }),
        }
    };
    while let Ok(value) = chunk_rx.try_recv() {
        if out.send(Ok(chunk_message(value))).await.is_err() {
            return;
        }
    }
    let last = match outcome {
        Ok(outcome) => {
            let e = outcome.execution;
            let mut metadata = std::collections::HashMap::new();
            metadata.insert("task_id".to_owned(), outcome.task_id.to_string());
            if let Some(instance) = &e.instance_id {
                metadata.insert("instance_id".to_owned(), instance.to_string());
            }
            if let Some(err) = &e.error {
                metadata.insert("error_code".to_owned(), err.code.clone());
            }
            // What a unary reply's result carries, for the same last line.
            metadata.insert(
                "execution_time_us".to_owned(),
                e.execution_time.as_micros().to_string(),
            );
            if let Some(trace) = e.trace_id {
                metadata.insert("trace_id".to_owned(), trace.to_string());
            }
            Ok(pb::StreamExecutionResult {
                execution_id: e.execution_id.to_string(),
                status: reply::status(e.status).into(),
                // A unary function's result is the final message's payload.
                chunk_data: e.output.filter(|v| *v != Value::Unit).map(value::to_any),
                is_final: true,
                error_message: e.error.map(|err| err.message).unwrap_or_default(),
                metadata,
            })
        }
        Err(error) => Err(Status::from(error)),
    };
    let _ = out.send(last).await;
}
