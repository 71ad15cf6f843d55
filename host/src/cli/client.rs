//! The client commands: `invoke`, `tasks`, `task`, `executions`, `status`, `cancel`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use prost::Message;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use tonic::transport::Channel;

/// Where the server is.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The spearlet server.
    #[arg(
        long,
        global = true,
        env = "SPEARLET_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    endpoint: String,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function to call.
    function: String,

    /// Parameters: `name=value` (the type is inferred: integer, float,
    /// true/false, else string) or `name:type=value` with type one of
    /// str, i64, f64, bool, bytes (`@FILE` reads the bytes from a file).
    #[arg(short = 'p', long = "param", value_name = "NAME[:TYPE]=VALUE")]
    params: Vec<String>,

    /// Run on the task with this name, creating it from --artifact if it
    /// does not exist (NEW_TASK).
    #[arg(long, conflicts_with = "task_id")]
    task_name: Option<String>,

    /// Run on the task with this id (EXISTING_TASK).
    #[arg(long)]
    task_id: Option<String>,

    /// With --task-id: create the task under that id if it does not exist.
    #[arg(long, requires = "task_id")]
    create: bool,

    /// The plugin: a file path (made absolute) or an http(s):// URL.
    #[arg(long, value_name = "PATH|URL")]
    artifact: Option<String>,

    /// The artifact's sha256 (required for URLs).
    #[arg(long, value_name = "SHA256")]
    checksum: Option<String>,

    /// Return at once with an execution id (ASYNC).
    #[arg(long = "async", conflicts_with = "stream")]
    run_async: bool,

    /// Print the chunks the function emits as they arrive (StreamFunction).
    #[arg(long)]
    stream: bool,

    /// Time allowed for the execution, in milliseconds.
    #[arg(long, value_name = "MS")]
    timeout: Option<u64>,

    /// Attempts after the first, for retriable failures.
    #[arg(long, default_value_t = 0)]
    retries: u32,

    /// Run on a new instance rather than a pooled one.
    #[arg(long)]
    fresh: bool,

    /// Name the execution (a repeated id returns the first run's state).
    #[arg(long)]
    execution_id: Option<String>,

    /// Environment for the call, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    environment: Vec<String>,

    /// Invocation metadata, `KEY=VALUE`; repeatable. When the call creates
    /// its task, this becomes the instances' configuration.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only tasks whose name starts with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: i32,
    /// Continue after this task name.
    #[arg(long)]
    start_after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Show a task and its recent executions.
    Get {
        /// The task's id.
        task_id: String,
        /// How many recent executions to show.
        #[arg(long, default_value_t = 10)]
        executions: i32,
    },
    /// Delete a task (its artifact stays cached).
    Delete {
        /// The task's id.
        task_id: String,
        /// Delete even while executions run (they are asked to stop).
        #[arg(long)]
        force: bool,
        /// Also remove its finished execution records.
        #[arg(long)]
        cleanup: bool,
    },
}

#[derive(Debug, Args)]
pub struct ExecutionsArgs {
    /// Only this task's executions.
    #[arg(long)]
    task_id: Option<String>,
    /// Only executions with this status (pending, running, completed,
    /// failed, cancelled, timeout).
    #[arg(long)]
    status: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: i32,
    /// Continue after this execution id.
    #[arg(long)]
    start_after: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The execution's id.
    execution_id: String,
    /// Include the plugin's log lines.
    #[arg(long)]
    logs: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The execution's id.
    execution_id: String,
    /// Mark it cancelled now, without waiting for the plugin to return.
    #[arg(long)]
    force: bool,
    /// Why (recorded by the server).
    #[arg(long, default_value = "")]
    reason: String,
}

async fn connect(endpoint: &Endpoint) -> anyhow::Result<FunctionServiceClient<Channel>> {
    FunctionServiceClient::connect(endpoint.endpoint.clone())
        .await
        .with_context(|| format!("cannot connect to spearlet at {}", endpoint.endpoint))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A gRPC error, readably: `NOT_FOUND: task `x` not found`.
fn status_error(status: tonic::Status) -> anyhow::Error {
    let kind = status
        .metadata()
        .get(spearlet::api::ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|k| format!(" [{k}]"))
        .unwrap_or_default();
    anyhow::anyhow!("{:?}{kind}: {}", status.code(), status.message())
}

pub fn invoke(endpoint: &Endpoint, args: &InvokeArgs) -> anyhow::Result<std::process::ExitCode> {
    let request = build_request(args)?;
    runtime()?.block_on(async {
        let mut client = connect(endpoint).await?;
        if args.stream {
            return stream(&mut client, request).await;
        }
        let reply = client
            .invoke_function(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let result = reply.result.unwrap_or_default();
        let status = pb::ExecutionStatus::try_from(result.status).unwrap_or_default();
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
        if let Some(value) = result.result {
            println!("result     {}", show_any(&value));
        }
        if status == pb::ExecutionStatus::Pending || status == pb::ExecutionStatus::Running {
            println!(
                "follow     spearlet status {} (estimated {} ms)",
                reply.execution_id, reply.estimated_completion_ms
            );
        }
        Ok(if reply.success {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        })
    })
}

async fn stream(
    client: &mut FunctionServiceClient<Channel>,
    request: pb::InvokeFunctionRequest,
) -> anyhow::Result<std::process::ExitCode> {
    let mut chunks = client
        .stream_function(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut ok = false;
    while let Some(message) = chunks.message().await.map_err(status_error)? {
        if message.is_final {
            let status = pb::ExecutionStatus::try_from(message.status).unwrap_or_default();
            if let Some(value) = &message.chunk_data {
                println!("result     {}", show_any(value));
            }
            let error = if message.error_message.is_empty() {
                String::new()
            } else {
                format!(": {}", message.error_message)
            };
            println!(
                "execution  {}  {}{error}",
                message.execution_id,
                status_name(status)
            );
            ok = status == pb::ExecutionStatus::Completed;
        } else if let Some(value) = &message.chunk_data {
            println!("chunk      {}", show_any(value));
        }
    }
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn build_request(args: &InvokeArgs) -> anyhow::Result<pb::InvokeFunctionRequest> {
    let artifact_spec = args
        .artifact
        .as_deref()
        .map(|a| -> anyhow::Result<pb::ArtifactSpec> {
            let location = if a.contains("://") || a.starts_with('/') {
                a.to_owned()
            } else {
                std::fs::canonicalize(a)
                    .with_context(|| format!("artifact {a}"))?
                    .to_string_lossy()
                    .into_owned()
            };
            Ok(pb::ArtifactSpec {
                location,
                artifact_type: "native".to_owned(),
                checksum: args.checksum.clone().unwrap_or_default(),
                ..Default::default()
            })
        })
        .transpose()?;
    let (invocation_type, task_name, task_id) = match (&args.task_name, &args.task_id) {
        (Some(name), None) => (pb::InvocationType::NewTask, name.clone(), String::new()),
        (None, Some(id)) => (pb::InvocationType::ExistingTask, String::new(), id.clone()),
        (None, None) => bail!("name the task: --task-name NAME (with --artifact) or --task-id ID"),
        (Some(_), Some(_)) => unreachable!("clap rejects --task-name with --task-id"),
    };
    let mode = if args.stream {
        pb::ExecutionMode::Stream
    } else if args.run_async {
        pb::ExecutionMode::Async
    } else {
        pb::ExecutionMode::Sync
    };
    Ok(pb::InvokeFunctionRequest {
        invocation_type: invocation_type.into(),
        task_name,
        task_id,
        artifact_spec,
        function_name: args.function.clone(),
        parameters: args
            .params
            .iter()
            .map(|p| parse_param(p))
            .collect::<anyhow::Result<_>>()?,
        execution_mode: mode.into(),
        context: Some(pb::ExecutionContext {
            timeout_ms: args
                .timeout
                .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
            max_retries: i32::try_from(args.retries).unwrap_or(i32::MAX),
            environment: pairs(&args.environment, "--env")?,
            ..Default::default()
        }),
        create_if_not_exists: args.create,
        force_new_instance: args.fresh,
        invocation_metadata: pairs(&args.metadata, "--meta")?,
        execution_id: args.execution_id.clone(),
        ..Default::default()
    })
}

fn pairs(raw: &[String], flag: &str) -> anyhow::Result<std::collections::HashMap<String, String>> {
    raw.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{flag} takes KEY=VALUE, got `{kv}`"))
        })
        .collect()
}

const WRAPPER: &str = "type.googleapis.com/google.protobuf.";

/// `name=value` or `name:type=value` as a typed parameter.
fn parse_param(raw: &str) -> anyhow::Result<pb::FunctionParameter> {
    let (key, value) = raw
        .split_once('=')
        .with_context(|| format!("-p takes NAME=VALUE or NAME:TYPE=VALUE, got `{raw}`"))?;
    let (name, ty) = match key.split_once(':') {
        Some((name, ty)) => (name, Some(ty)),
        None => (key, None),
    };
    let bad = |ty: &str| anyhow::anyhow!("parameter `{name}`: `{value}` is not a valid {ty}");
    let (kind, bytes) = match ty {
        Some("str" | "string") => ("StringValue", value.to_owned().encode_to_vec()),
        Some("i64" | "int") => (
            "Int64Value",
            value
                .parse::<i64>()
                .map_err(|_| bad("i64"))?
                .encode_to_vec(),
        ),
        Some("f64" | "float") => (
            "DoubleValue",
            value
                .parse::<f64>()
                .map_err(|_| bad("f64"))?
                .encode_to_vec(),
        ),
        Some("bool") => (
            "BoolValue",
            value
                .parse::<bool>()
                .map_err(|_| bad("bool"))?
                .encode_to_vec(),
        ),
        Some("bytes") => {
            let data = match value.strip_prefix('@') {
                Some(path) => {
                    std::fs::read(path).with_context(|| format!("parameter `{name}`: {path}"))?
                }
                None => value.as_bytes().to_vec(),
            };
            ("BytesValue", data.encode_to_vec())
        }
        Some(other) => {
            bail!("parameter `{name}`: unknown type `{other}` (use str, i64, f64, bool or bytes)")
        }
        None => {
            if let Ok(i) = value.parse::<i64>() {
                ("Int64Value", i.encode_to_vec())
            } else if let Ok(f) = value.parse::<f64>() {
                ("DoubleValue", f.encode_to_vec())
            } else if let Ok(b) = value.parse::<bool>() {
                ("BoolValue", b.encode_to_vec())
            } else {
                ("StringValue", value.to_owned().encode_to_vec())
            }
        }
    };
    Ok(pb::FunctionParameter {
        name: name.to_owned(),
        value: Some(prost_types::Any {
            type_url: format!("{WRAPPER}{kind}"),
            value: bytes,
        }),
        required: true,
        ..Default::default()
    })
}

/// A result value, readably: `5 (i64)`, `"text" (string)`.
fn show_any(any: &prost_types::Any) -> String {
    let v = any.value.as_slice();
    match any.type_url.strip_prefix(WRAPPER) {
        Some("StringValue") => {
            String::decode(v).map_or_else(|_| "?".into(), |s| format!("{s:?} (string)"))
        }
        Some("Int64Value") => i64::decode(v).map_or_else(|_| "?".into(), |n| format!("{n} (i64)")),
        Some("DoubleValue") => f64::decode(v).map_or_else(|_| "?".into(), |n| format!("{n} (f64)")),
        Some("BoolValue") => bool::decode(v).map_or_else(|_| "?".into(), |b| format!("{b} (bool)")),
        Some("BytesValue") => Vec::<u8>::decode(v).map_or_else(
            |_| "?".into(),
            |b| match std::str::from_utf8(&b) {
                Ok(text) => format!("{text:?} ({} bytes)", b.len()),
                Err(_) => format!("{} bytes", b.len()),
            },
        ),
        Some("Empty") => "(none)".to_owned(),
        _ => format!("{} bytes of {}", any.value.len(), any.type_url),
    }
}

fn status_name(status: pb::ExecutionStatus) -> &'static str {
    match status {
        pb::ExecutionStatus::Unknown => "unknown",
        pb::ExecutionStatus::Pending => "pending",
        pb::ExecutionStatus::Running => "running",
        pb::ExecutionStatus::Completed => "completed",
        pb::ExecutionStatus::Failed => "failed",
        pb::ExecutionStatus::Cancelled => "cancelled",
        pb::ExecutionStatus::Timeout => "timeout",
    }
}

fn describe_status(status: pb::ExecutionStatus, ms: i64, result: &pb::ExecutionResult) -> String {
    let micros = result
        .metrics
        .get("execution_time_us")
        .and_then(|m| m.parse::<u64>().ok())
        .map_or_else(
            || format!("{ms} ms"),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        );
    match status {
        pb::ExecutionStatus::Completed => format!("completed in {micros}"),
        pb::ExecutionStatus::Pending | pb::ExecutionStatus::Running => {
            status_name(status).to_owned()
        }
        other => format!(
            "{}: {}: {}",
            status_name(other),
            result.error_code,
            result.error_message
        ),
    }
}

fn parse_status(s: &str) -> anyhow::Result<pb::ExecutionStatus> {
    Ok(match s {
        "pending" => pb::ExecutionStatus::Pending,
        "running" => pb::ExecutionStatus::Running,
        "completed" => pb::ExecutionStatus::Completed,
        "failed" => pb::ExecutionStatus::Failed,
        "cancelled" => pb::ExecutionStatus::Cancelled,
        "timeout" => pb::ExecutionStatus::Timeout,
        other => bail!("unknown status `{other}`"),
    })
}

fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map_or_else(
        || "-".to_owned(),
        |t| {
            let secs = u64::try_from(t.seconds).unwrap_or(0);
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::new(secs, u32::try_from(t.nanos).unwrap_or(0)),
            )
            .to_string()
        },
    )
}

pub fn tasks(endpoint: &Endpoint, args: &TasksArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let reply = connect(endpoint)
            .await?
            .list_tasks(pb::ListTasksRequest {
                prefix: args.prefix.clone(),
                limit: args.limit,
                start_after: args.start_after.clone().unwrap_or_default(),
                include_details: true,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        println!(
            "{:<24} {:<36} {:<10} {:>10}  LAST",
            "NAME", "ID", "PLUGIN", "EXECUTIONS"
        );
        for t in &reply.tasks {
            let last = pb::ExecutionStatus::try_from(t.last_status).unwrap_or_default();
            println!(
                "{:<24} {:<36} {:<10} {:>10}  {}",
                t.task_name,
                t.task_id,
                t.metadata.get("plugin").map_or("-", String::as_str),
                t.execution_count,
                if last == pb::ExecutionStatus::Unknown {
                    "-"
                } else {
                    status_name(last)
                }
            );
        }
        if reply.has_more {
            println!("(more: --start-after {})", reply.next_start_after);
        }
        Ok(())
    })
}

pub fn task(endpoint: &Endpoint, command: &TaskCommand) -> anyhow::Result<std::process::ExitCode> {
    runtime()?.block_on(async {
        let mut client = connect(endpoint).await?;
        match command {
            TaskCommand::Get {
                task_id,
                executions,
            } => {
                let reply = client
                    .get_task(pb::GetTaskRequest {
                        task_id: task_id.clone(),
                        include_executions: true,
                        execution_limit: *executions,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                let Some(t) = reply.task.filter(|_| reply.found) else {
                    eprintln!("{}", reply.message);
                    return Ok(std::process::ExitCode::FAILURE);
                };
                println!("task        {} ({})", t.task_name, t.task_id);
                let spec = t.artifact_spec.unwrap_or_default();
                println!("artifact    {}", spec.location);
                let meta = |k: &str| t.metadata.get(k).cloned().unwrap_or_default();
                println!(
                    "plugin      {} {} sha256:{}",
                    meta("plugin"),
                    meta("plugin_version"),
                    meta("digest")
                );
                println!("functions   {}", meta("functions"));
                println!("instances   {}", meta("instances"));
                println!("executions  {}", t.execution_count);
                for e in &reply.executions {
                    print_execution(e);
                }
            }
            TaskCommand::Delete {
                task_id,
                force,
                cleanup,
            } => {
                let reply = client
                    .delete_task(pb::DeleteTaskRequest {
                        task_id: task_id.clone(),
                        force: *force,
                        cleanup_executions: *cleanup,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                println!(
                    "{} ({} execution records removed)",
                    reply.message, reply.cleaned_executions
                );
            }
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

fn print_execution(e: &pb::ExecutionInfo) {
    let status = pb::ExecutionStatus::try_from(e.status).unwrap_or_default();
    println!(
        "  {}  {:<10} {:<10} {:>6} ms  {}{}",
        e.execution_id,
        e.function_name,
        status_name(status),
        e.execution_time_ms,
        time(e.started_at.as_ref()),
        if e.error_message.is_empty() {
            String::new()
        } else {
            format!("  {}", e.error_message)
        }
    );
}

pub fn executions(endpoint: &Endpoint, args: &ExecutionsArgs) -> anyhow::Result<()> {
    let status_filter = args
        .status
        .as_deref()
        .map(parse_status)
        .transpose()?
        .unwrap_or_default();
    runtime()?.block_on(async {
        let reply = connect(endpoint)
            .await?
            .list_executions(pb::ListExecutionsRequest {
                task_id: args.task_id.clone().unwrap_or_default(),
                limit: args.limit,
                start_after: args.start_after.clone().unwrap_or_default(),
                status_filter: status_filter.into(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        for e in &reply.executions {
            print_execution(e);
        }
        if reply.has_more {
            println!("(more: --start-after {})", reply.next_start_after);
        }
        Ok(())
    })
}

pub fn status(endpoint: &Endpoint, args: &StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    runtime()?.block_on(async {
        let reply = connect(endpoint)
            .await?
            .get_execution_status(pb::GetExecutionStatusRequest {
                execution_id: args.execution_id.clone(),
                include_result: true,
                include_logs: args.logs,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if !reply.found {
            eprintln!("{}", reply.message);
            return Ok(std::process::ExitCode::FAILURE);
        }
        let result = reply.result.unwrap_or_default();
        let status = pb::ExecutionStatus::try_from(result.status).unwrap_or_default();
        println!(
            "execution  {}  {}",
            args.execution_id,
            describe_status(status, result.execution_time_ms, &result)
        );
        if let Some(value) = &result.result {
            println!("result     {}", show_any(value));
        }
        for line in &reply.logs {
            println!("log        {line}");
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

pub fn cancel(endpoint: &Endpoint, args: &CancelArgs) -> anyhow::Result<std::process::ExitCode> {
    runtime()?.block_on(async {
        let reply = connect(endpoint)
            .await?
            .cancel_execution(pb::CancelExecutionRequest {
                execution_id: args.execution_id.clone(),
                reason: args.reason.clone(),
                force: args.force,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        println!("{}", reply.message);
        Ok(if reply.success {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed_by_inference_or_annotation() {
        let url = |raw: &str| parse_param(raw).unwrap().value.unwrap().type_url;
        assert!(url("a=5").ends_with("Int64Value"));
        assert!(url("a=2.5").ends_with("DoubleValue"));
        assert!(url("a=true").ends_with("BoolValue"));
        assert!(url("a=hello").ends_with("StringValue"));
        assert!(url("a:str=5").ends_with("StringValue"));
        assert!(url("a:bytes=xyz").ends_with("BytesValue"));
        assert!(parse_param("a:i64=x").is_err());
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("a:weird=1").is_err());
    }
}
