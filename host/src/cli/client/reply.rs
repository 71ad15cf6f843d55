//! How `spearlet invoke` shows what came back: a unary reply, or a
//! stream's chunks and its final message; as text or JSON Lines, and raw
//! to `--output FILE`.

use std::process::ExitCode;

use serde::Serialize;
use spearlet_proto::spearlet as pb;

use super::present::describe_status;
use super::value::{save, Value};
use super::view::{non_empty, print_line, Outcome};
use super::{status_error, Client};

/// How the invoke command was asked to show its outcome.
pub(super) struct Shown<'a> {
    /// `--format json`.
    pub json: bool,
    /// `--output FILE`.
    pub output: Option<&'a std::path::Path>,
}

/// `invoke --format json` of a unary call: the outcome, and what only a
/// reply says.
#[derive(Serialize)]
struct InvokeView {
    #[serde(flatten)]
    outcome: Outcome,
    /// The task now runs this plugin digest (`--upgrade` switched it).
    task_upgraded_to: Option<String>,
    /// For an execution still pending or running (`--async`).
    estimated_completion_ms: Option<i64>,
}

/// `invoke --dry-run --format json`: what would run.
#[derive(Serialize)]
struct DryRunView {
    dry_run: bool,
    success: bool,
    message: String,
    /// `task_id`, `plugin`, `digest`, `function`, `signature`, `kind`,
    /// `parameters`, as the server reported them.
    details: std::collections::BTreeMap<String, String>,
}

/// One line of `invoke --stream --format json`: a chunk, or (`"kind":
/// "end"`) the outcome.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StreamLine {
    Chunk {
        execution_id: String,
        /// 0 for the first chunk.
        sequence: u64,
        value: Value,
    },
    End(Outcome),
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

impl Shown<'_> {
    pub(super) async fn unary(
        &self,
        client: &mut Client,
        request: tonic::Request<pb::InvokeFunctionRequest>,
    ) -> anyhow::Result<ExitCode> {
        let reply = client
            .invoke_function(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let result = reply.result.clone().unwrap_or_default();
        if result.metrics.get("dry_run").map(String::as_str) == Some("true") {
            if self.json {
                print_line(&DryRunView {
                    dry_run: true,
                    success: reply.success,
                    message: reply.message,
                    details: result.metrics.into_iter().collect(),
                })?;
            } else {
                println!("{}", reply.message);
            }
            return Ok(exit(reply.success));
        }
        let value = result.result.as_ref().map(Value::decode);
        if let Some(file) = self.output {
            save(file, value.as_slice())?;
        }
        let status = pb::ExecutionStatus::try_from(result.status).unwrap_or_default();
        let unfinished =
            status == pb::ExecutionStatus::Pending || status == pb::ExecutionStatus::Running;
        if self.json {
            let mut outcome = Outcome::of(&reply.execution_id, &result);
            outcome.success = reply.success;
            outcome.task_id = non_empty(&reply.task_id);
            outcome.instance_id = non_empty(&reply.instance_id);
            print_line(&InvokeView {
                outcome,
                task_upgraded_to: result.metrics.get("task_upgraded_to").cloned(),
                estimated_completion_ms: (unfinished && reply.estimated_completion_ms > 0)
                    .then_some(reply.estimated_completion_ms),
            })?;
            return Ok(exit(reply.success));
        }
        println!(
            "execution  {}  {}  (task {}, instance {})",
            reply.execution_id,
            describe_status(status, result.execution_time_ms, &result),
            reply.task_id,
            if reply.instance_id.is_empty() {
                "-"
            } else {
                &reply.instance_id
            }
        );
        if let Some(value) = &value {
            println!("result     {}", value.show());
        }
        if let Some(digest) = result.metrics.get("task_upgraded_to") {
            println!("upgraded   the task now runs sha256:{digest} (spearlet task rollback returns to the previous one)");
        }
        if let Some(trace) = result.metrics.get("trace_id") {
            println!("trace      {trace}");
        }
        if unfinished {
            let estimate = match reply.estimated_completion_ms {
                // Nothing to estimate from before the function's first run.
                0 => String::new(),
                ms => format!(" (estimated {ms} ms)"),
            };
            println!(
                "follow     spearlet status {}{estimate}",
                reply.execution_id
            );
        }
        Ok(exit(reply.success))
    }

    pub(super) async fn stream(
        &self,
        client: &mut Client,
        request: tonic::Request<pb::InvokeFunctionRequest>,
    ) -> anyhow::Result<ExitCode> {
        let mut chunks = client
            .stream_function(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let mut ok = false;
        let mut sequence = 0;
        // Kept only for --output, which writes them once the stream ends.
        let mut saved = Vec::new();
        while let Some(message) = chunks.message().await.map_err(status_error)? {
            if message.is_final {
                let value = message.chunk_data.as_ref().map(Value::decode);
                saved.extend(value.clone());
                ok = self.end(&message, value)?;
            } else if let Some(data) = &message.chunk_data {
                let value = Value::decode(data);
                if self.json {
                    print_line(&StreamLine::Chunk {
                        execution_id: message.execution_id.clone(),
                        sequence,
                        value: value.clone(),
                    })?;
                } else {
                    println!("chunk      {}", value.show());
                }
                sequence += 1;
                if self.output.is_some() {
                    saved.push(value);
                }
            }
        }
        if let Some(file) = self.output {
            save(file, &saved)?;
        }
        Ok(exit(ok))
    }

    /// Shows a stream's final message; whether the execution completed.
    fn end(
        &self,
        message: &pb::StreamExecutionResult,
        value: Option<Value>,
    ) -> anyhow::Result<bool> {
        let status = pb::ExecutionStatus::try_from(message.status).unwrap_or_default();
        let meta = |key: &str| message.metadata.get(key).cloned().unwrap_or_default();
        // The same last line a unary call ends with.
        let result = pb::ExecutionResult {
            status: message.status,
            error_code: meta("error_code"),
            error_message: message.error_message.clone(),
            metrics: message
                .metadata
                .iter()
                .filter(|(k, _)| *k == "execution_time_us" || *k == "trace_id")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Default::default()
        };
        if self.json {
            let mut outcome = Outcome::of(&message.execution_id, &result);
            outcome.task_id = non_empty(&meta("task_id"));
            outcome.instance_id = non_empty(&meta("instance_id"));
            outcome.result = value;
            print_line(&StreamLine::End(outcome))?;
        } else {
            if let Some(value) = &value {
                println!("result     {}", value.show());
            }
            let or_dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
            println!(
                "execution  {}  {}  (task {}, instance {})",
                message.execution_id,
                describe_status(status, 0, &result),
                or_dash(meta("task_id")),
                or_dash(meta("instance_id"))
            );
            if let Some(trace) = message.metadata.get("trace_id") {
                println!("trace      {trace}");
            }
        }
        Ok(status == pb::ExecutionStatus::Completed)
    }
}
