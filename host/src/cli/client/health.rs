//! `spearlet health`.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;
use spearlet_proto::spearlet as pb;

use super::view::print_line;
use super::{connect, runtime, status_error, ClientOptions};

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    client: ClientOptions,
}

/// `health --format json`: the reply's fields, the details flattened in
/// (`null` from a server that sends none), `system_info` as it came.
#[derive(Serialize)]
struct HealthView {
    status: String,
    message: String,
    uptime_seconds: i64,
    active_tasks: Option<i32>,
    running_executions: Option<i32>,
    pending_executions: Option<i32>,
    total_executions: Option<i64>,
    system_info: BTreeMap<String, String>,
}

impl From<pb::GetHealthResponse> for HealthView {
    fn from(reply: pb::GetHealthResponse) -> Self {
        let details = reply.details.as_ref();
        HealthView {
            active_tasks: details.map(|d| d.active_tasks),
            running_executions: details.map(|d| d.running_executions),
            pending_executions: details.map(|d| d.pending_executions),
            total_executions: details.map(|d| d.total_executions),
            system_info: details
                .map(|d| d.system_info.clone().into_iter().collect())
                .unwrap_or_default(),
            status: reply.status,
            message: reply.message,
            uptime_seconds: reply.uptime_seconds,
        }
    }
}

/// The server's health, its counters, and its link to the SMS when it is
/// part of a cluster.
pub fn health(args: &HealthArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let reply = connect(&args.client.endpoint)
            .await?
            .get_health(pb::GetHealthRequest {
                include_details: true,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if args.client.json() {
            return print_line(&HealthView::from(reply));
        }
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
        print_cluster(info);
        Ok(())
    })
}

/// The node's link to the SMS, when it is part of a cluster.
fn print_cluster(info: &std::collections::HashMap<String, String>) {
    let get = |key: &str| info.get(key).map_or("-", String::as_str);
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
}
