//! `spearlet tasks`, `executions`, `status`, `cancel`.

use clap::Args;
use serde::Serialize;
use spearlet_proto::spearlet as pb;

use super::present::{
    describe_status, parse_status, print_executions, show_isolation, status_name,
};
use super::value::Value;
use super::view::{self, print_line};
use super::{connect, runtime, status_error, ClientOptions};

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
    #[command(flatten)]
    client: ClientOptions,
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
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The execution's id.
    execution_id: String,
    /// Include the plugin's log lines.
    #[arg(long)]
    logs: bool,
    /// Write the result, raw, to FILE (bytes as they are, a string as
    /// UTF-8, a number or bool as JSON); the summary still prints.
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    #[command(flatten)]
    client: ClientOptions,
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
    #[command(flatten)]
    client: ClientOptions,
}

pub fn tasks(args: &TasksArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let reply = connect(&args.client.endpoint)
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
        if args.client.json() {
            for t in &reply.tasks {
                print_line(&view::Task::of(t, None))?;
            }
            more(reply.has_more, &reply.next_start_after);
            return Ok(());
        }
        for line in task_table(&reply.tasks) {
            println!("{line}");
        }
        if reply.has_more {
            println!("(more: --start-after {})", reply.next_start_after);
        }
        Ok(())
    })
}

/// Tasks as a table under a header, each column as wide as its longest
/// cell.
fn task_table(tasks: &[pb::TaskInfo]) -> Vec<String> {
    let header = ["NAME", "ID", "PLUGIN", "ISOLATION", "EXECUTIONS", "LAST"];
    let mut table = super::table::plain(&header, 0, &[4]);
    for t in tasks {
        let last = pb::ExecutionStatus::try_from(t.last_status).unwrap_or_default();
        table.add_row(vec![
            t.task_name.clone(),
            t.task_id.clone(),
            // A task recorded before a restart loads on first use.
            t.metadata
                .get("plugin")
                .or_else(|| t.metadata.get("state"))
                .map_or("-", String::as_str)
                .to_owned(),
            show_isolation(&t.metadata),
            t.execution_count.to_string(),
            if last == pb::ExecutionStatus::Unknown {
                "-"
            } else {
                status_name(last)
            }
            .to_owned(),
        ]);
    }
    super::table::lines(&table)
}

/// Says there is another page. In JSON mode on stderr, so that stdout
/// holds nothing but the listed objects.
fn more(has_more: bool, next: &str) {
    if has_more {
        eprintln!("(more: --start-after {next})");
    }
}

pub fn executions(args: &ExecutionsArgs) -> anyhow::Result<()> {
    let status_filter = args
        .status
        .as_deref()
        .map(parse_status)
        .transpose()?
        .unwrap_or_default();
    runtime()?.block_on(async {
        let reply = connect(&args.client.endpoint)
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
        if args.client.json() {
            for e in &reply.executions {
                print_line(&view::Execution::from(e))?;
            }
            more(reply.has_more, &reply.next_start_after);
            return Ok(());
        }
        print_executions(&reply.executions);
        if reply.has_more {
            println!("(more: --start-after {})", reply.next_start_after);
        }
        Ok(())
    })
}

/// `status --format json`: the outcome, and the log lines asked for.
#[derive(Serialize)]
struct StatusView {
    #[serde(flatten)]
    outcome: view::Outcome,
    logs: Vec<String>,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    runtime()?.block_on(async {
        let reply = connect(&args.client.endpoint)
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
        let value = result.result.as_ref().map(Value::decode);
        if let Some(file) = &args.output {
            super::value::save(file, value.as_slice())?;
        }
        if args.client.json() {
            print_line(&StatusView {
                outcome: view::Outcome::of(&args.execution_id, &result),
                logs: reply.logs,
            })?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        let status = pb::ExecutionStatus::try_from(result.status).unwrap_or_default();
        println!(
            "execution  {}  {}",
            args.execution_id,
            describe_status(status, result.execution_time_ms, &result)
        );
        if let Some(value) = &value {
            println!("result     {}", value.show());
        }
        for line in &reply.logs {
            println!("log        {line}");
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// `cancel --format json`.
#[derive(Serialize)]
struct CancelView<'a> {
    execution_id: &'a str,
    success: bool,
    message: &'a str,
}

pub fn cancel(args: &CancelArgs) -> anyhow::Result<std::process::ExitCode> {
    runtime()?.block_on(async {
        let reply = connect(&args.client.endpoint)
            .await?
            .cancel_execution(pb::CancelExecutionRequest {
                execution_id: args.execution_id.clone(),
                reason: args.reason.clone(),
                force: args.force,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if args.client.json() {
            print_line(&CancelView {
                execution_id: &args.execution_id,
                success: reply.success,
                message: &reply.message,
            })?;
        } else {
            println!("{}", reply.message);
        }
        Ok(if reply.success {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        })
    })
}
