//! `spearlet tasks`, `task`, `executions`, `status`, `cancel`.

use clap::{Args, Subcommand};
use spearlet_proto::spearlet as pb;

use super::present::{
    describe_status, parse_status, print_executions, show_any, show_isolation, status_name,
};
use super::{connect, connect_admin, runtime, status_error, Endpoint};
use spearlet_proto::spearlet::admin::v1 as admin;

fn print_switch(s: &admin::TaskSwitch) {
    let show = |v: &Option<admin::TaskVersion>| {
        v.as_ref().map_or_else(
            || "-".to_owned(),
            |v| format!("{} sha256:{} ({})", v.plugin_version, v.digest, v.location),
        )
    };
    if s.unchanged {
        println!(
            "task {} already runs {}; nothing switched",
            s.task_id,
            show(&s.current)
        );
        return;
    }
    println!("task      {}", s.task_id);
    println!("now       {}", show(&s.current));
    if s.previous.is_some() {
        println!(
            "previous  {}  (task rollback returns to it)",
            show(&s.previous)
        );
    }
    if !s.removed_functions.is_empty() {
        println!("removed   {}", s.removed_functions.join(", "));
    }
    if s.still_running > 0 {
        println!(
            "draining  {} call(s) still running on the old version finish there",
            s.still_running
        );
    }
    // What a switch does not keep, said where it happens.
    println!(
        "fresh     the new version's instances start afresh (state held in the old ones is not \
         carried over); the task's counters start anew"
    );
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
    /// Switch a task to a new version of its plugin, blue/green: calls in
    /// flight finish on the running version, later calls run on the new
    /// one; the task id stays. The running version is kept for one
    /// `task rollback`.
    Upgrade {
        /// The task's id.
        task_id: String,
        /// The new plugin: a file path (made absolute) or a URL.
        #[arg(long, value_name = "PATH|URL")]
        artifact: String,
        /// Its sha256 (required for URLs).
        #[arg(long, value_name = "SHA256")]
        checksum: Option<String>,
        /// Upgrade even if the new version lacks functions the running one
        /// exports.
        #[arg(long)]
        allow_removed: bool,
        /// How long to wait for calls still running on the old version,
        /// e.g. `30s` (they are never cut short).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        drain_timeout: Option<std::time::Duration>,
    },
    /// Switch a task back to the version its last upgrade replaced.
    Rollback {
        /// The task's id.
        task_id: String,
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
            "{:<24} {:<36} {:<10} {:<22} {:>10}  LAST",
            "NAME", "ID", "PLUGIN", "ISOLATION", "EXECUTIONS"
        );
        for t in &reply.tasks {
            let last = pb::ExecutionStatus::try_from(t.last_status).unwrap_or_default();
            println!(
                "{:<24} {:<36} {:<10} {:<22} {:>10}  {}",
                t.task_name,
                t.task_id,
                // A task recorded before a restart loads on first use.
                t.metadata.get("plugin").map_or_else(
                    || t.metadata.get("state").map_or("-", String::as_str),
                    String::as_str
                ),
                show_isolation(&t.metadata),
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
                println!("isolation   {}", show_isolation(&t.metadata));
                if let Some(crashes) = t.metadata.get("worker_crashes") {
                    println!("crashes     {crashes} worker crash(es)");
                }
                // Each function with where its calls run (the inline tier).
                let functions: Vec<String> = meta("functions")
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(|f| match t.metadata.get(&format!("tier.{f}")) {
                        Some(tier) => format!("{f} ({})", tier.replace('_', "-")),
                        None => f.to_owned(),
                    })
                    .collect();
                println!("functions   {}", functions.join(", "));
                match t.metadata.get("quarantined") {
                    Some(q) => println!("instances   {} ({q} quarantined)", meta("instances")),
                    None => println!("instances   {}", meta("instances")),
                }
                if let Some(at) = t.metadata.get("switched_at") {
                    match t.metadata.get("previous_digest") {
                        Some(previous) => println!(
                            "switched    {at}, from {} sha256:{previous} (task rollback returns to it)",
                            meta("previous_plugin_version")
                        ),
                        None => println!("switched    {at} (a rollback)"),
                    }
                }
                if let Some(cluster) = t.metadata.get("cluster") {
                    println!("cluster     {cluster}, SMS task {}", meta("sms_task_id"));
                }
                println!("executions  {}", t.execution_count);
                if !reply.executions.is_empty() {
                    print_executions(&reply.executions);
                }
            }
            TaskCommand::Upgrade {
                task_id,
                artifact,
                checksum,
                allow_removed,
                drain_timeout,
            } => {
                let reply = connect_admin(endpoint)
                    .await?
                    .upgrade_task(admin::UpgradeTaskRequest {
                        task_id: task_id.clone(),
                        artifact_spec: Some(pb::ArtifactSpec {
                            location: super::invoke::artifact_location(artifact)?,
                            checksum: checksum.clone().unwrap_or_default(),
                            ..Default::default()
                        }),
                        drain_timeout_ms: drain_timeout
                            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                        allow_removed: *allow_removed,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_switch(&reply);
            }
            TaskCommand::Rollback { task_id } => {
                let reply = connect_admin(endpoint)
                    .await?
                    .rollback_task(admin::RollbackTaskRequest {
                        task_id: task_id.clone(),
                        drain_timeout_ms: 0,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_switch(&reply);
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
        print_executions(&reply.executions);
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

#[derive(Debug, Args)]
pub struct HealthArgs {}

/// The server's health, its counters, and its link to the SMS when it is
/// part of a cluster.
pub fn health(endpoint: &Endpoint, _args: &HealthArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let reply = connect(endpoint)
            .await?
            .get_health(pb::GetHealthRequest {
                include_details: true,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        println!("{}: {}", reply.status, reply.message);
        println!("uptime:      {} s", reply.uptime_seconds);
        let Some(details) = reply.details else {
            return Ok(());
        };
        let info = &details.system_info;
        let get = |key: &str| info.get(key).map_or("-", String::as_str);
        println!(
            "tasks:       {}   running: {}   pending: {}   executions: {}",
            details.active_tasks,
            details.running_executions,
            details.pending_executions,
            details.total_executions
        );
        if let (Some(in_process), Some(process)) =
            (info.get("in_process_tasks"), info.get("process_tasks"))
        {
            match info.get("crash_looping_tasks").filter(|n| *n != "0") {
                Some(looping) => println!(
                    "isolation:   {in_process} in-process, {process} process ({looping} crash_looping)"
                ),
                None => println!("isolation:   {in_process} in-process, {process} process"),
            }
        }
        match info.get("persistence").map(String::as_str) {
            Some("failing") => println!(
                "storage:     FAILING since {} ({} attempts, {} journal bytes waiting): {}",
                get("persistence_failing_since"),
                get("persistence_attempts"),
                get("state_journal_bytes"),
                get("persistence_error")
            ),
            Some(state) => println!(
                "storage:     {state} ({} journal bytes waiting)",
                get("state_journal_bytes")
            ),
            None => {}
        }
        if let Some(loaded) = info.get("plugins_loaded") {
            println!(
                "plugins:     {loaded} loaded in use, {} unused; {} result bytes kept in records",
                get("plugins_loaded_unused"),
                get("execution_result_bytes")
            );
        }
        println!(
            "version:     {} (plugin ABI {})",
            get("version"),
            get("plugin_abi")
        );
        match info.get("sms") {
            None => println!("cluster:     none (no SMS configured)"),
            Some(state) => {
                println!("SMS:         {state} at {}", get("sms_endpoint"));
                println!("  node:      {}", get("sms_node_uuid"));
                println!("  since:     {}", get("sms_since"));
                println!("  heartbeat: {}", get("sms_last_heartbeat"));
                println!(
                    "  calls:     {} ({} failed)",
                    get("sms_calls"),
                    get("sms_failures")
                );
                if let Some(error) = info.get("sms_error") {
                    println!("  error:     {error}");
                }
            }
        }
        Ok(())
    })
}
