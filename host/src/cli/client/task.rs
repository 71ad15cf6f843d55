//! `spearlet task get|upgrade|rollback|delete`.

use clap::Subcommand;
use serde::Serialize;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::admin::v1 as admin;

use super::present::{print_executions, show_isolation};
use super::view::{self, print_line};
use super::{connect, connect_admin, runtime, status_error, ClientOptions};

fn print_switch(s: &admin::TaskSwitch, client: &ClientOptions) -> anyhow::Result<()> {
    if client.json() {
        return print_line(&view::Switch::from(s));
    }
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
        return Ok(());
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
         carried over); the task's counters start anew, the host's totals (health) do not"
    );
    Ok(())
}

impl TaskCommand {
    fn client(&self) -> &ClientOptions {
        match self {
            TaskCommand::Get { client, .. }
            | TaskCommand::Upgrade { client, .. }
            | TaskCommand::Rollback { client, .. }
            | TaskCommand::Delete { client, .. } => client,
        }
    }
}

/// `task delete --format json`.
#[derive(Serialize)]
struct Deleted<'a> {
    task_id: &'a str,
    success: bool,
    deleted: bool,
    message: &'a str,
    cleaned_executions: i32,
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
        #[command(flatten)]
        client: ClientOptions,
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
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Switch a task back to the version its last upgrade replaced.
    Rollback {
        /// The task's id.
        task_id: String,
        #[command(flatten)]
        client: ClientOptions,
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
        #[command(flatten)]
        client: ClientOptions,
    },
}

/// `task get` in text: the task, its plugin, its functions with their
/// tier, its instances, and its recent executions.
fn print_task(t: pb::TaskInfo, executions: &[pb::ExecutionInfo]) {
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
    if !executions.is_empty() {
        print_executions(executions);
    }
}

pub fn task(command: &TaskCommand) -> anyhow::Result<std::process::ExitCode> {
    let options = command.client();
    let endpoint = &options.endpoint;
    runtime()?.block_on(async {
        let mut client = connect(endpoint).await?;
        match command {
            TaskCommand::Get {
                task_id,
                executions,
                ..
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
                if options.json() {
                    print_line(&view::Task::of(&t, Some(&reply.executions)))?;
                    return Ok(std::process::ExitCode::SUCCESS);
                }
                print_task(t, &reply.executions);
            }
            TaskCommand::Upgrade {
                task_id,
                artifact,
                checksum,
                allow_removed,
                drain_timeout,
                ..
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
                print_switch(&reply, options)?;
            }
            TaskCommand::Rollback { task_id, .. } => {
                let reply = connect_admin(endpoint)
                    .await?
                    .rollback_task(admin::RollbackTaskRequest {
                        task_id: task_id.clone(),
                        drain_timeout_ms: 0,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_switch(&reply, options)?;
            }
            TaskCommand::Delete {
                task_id,
                force,
                cleanup,
                ..
            } => delete(&mut client, task_id, *force, *cleanup, options).await?,
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn delete(
    client: &mut super::Client,
    task_id: &str,
    force: bool,
    cleanup: bool,
    options: &ClientOptions,
) -> anyhow::Result<()> {
    let reply = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: task_id.to_owned(),
            force,
            cleanup_executions: cleanup,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if options.json() {
        return print_line(&Deleted {
            task_id,
            success: reply.success,
            deleted: reply.deleted,
            message: &reply.message,
            cleaned_executions: reply.cleaned_executions,
        });
    }
    println!(
        "{} ({} execution records removed)",
        reply.message, reply.cleaned_executions
    );
    Ok(())
}
