//! The gRPC layer over [`Host`]: `spearlet.FunctionService`
//! ([`FunctionApi`]), the admin service ([`AdminApi`]) and SPEAR's node API
//! ([`NodeApi`]) convert, validate and map errors, holding no business
//! logic; [`serve`] (and [`serve_node`], [`serve_with_tokens`]) serves them
//! all on one listener, with the node's HTTP port beside them when
//! configured.

mod admin;
mod convert;
#[doc(hidden)] // The integration tests speak SSF through its codec; not part of the embedding API.
pub mod http;
mod limits;
mod node;
mod reply;
mod server;
mod status;
mod stream;
mod value;

use std::pin::Pin;

use futures_util::Stream;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_server::FunctionService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

pub use crate::auth::Tokens;
pub use admin::AdminApi;
pub use node::NodeApi;
pub use server::{http_address, serve, serve_node, serve_with_tokens};
pub use status::{code, retry_delay, ERROR_KIND_KEY};

use crate::exec::{ExecutionMode, ExecutionQuery, ExecutionStatus};
use crate::host::Host;
use crate::Value;

/// Chunks buffered between a streaming plugin and its client, per stage: a
/// slower client makes the plugin's `emit` block once these fill.
pub const STREAM_BUFFER: usize = 16;

/// `spearlet.FunctionService`, served by a [`Host`].
#[derive(Debug, Clone)]
pub struct FunctionApi {
    host: Host,
}

impl FunctionApi {
    /// The service for `host`.
    pub fn new(host: Host) -> Self {
        FunctionApi { host }
    }
}

type StreamResult = Pin<Box<dyn Stream<Item = Result<pb::StreamExecutionResult, Status>> + Send>>;

#[tonic::async_trait]
impl FunctionService for FunctionApi {
    async fn invoke_function(
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

    async fn get_execution_status(
        &self,
        request: Request<pb::GetExecutionStatusRequest>,
    ) -> Result<Response<pb::GetExecutionStatusResponse>, Status> {
        let req = request.into_inner();
        limits::check_id(
            "execution_id",
            &req.execution_id,
            &self.host.config().limits,
        )?;
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

    async fn cancel_execution(
        &self,
        request: Request<pb::CancelExecutionRequest>,
    ) -> Result<Response<pb::CancelExecutionResponse>, Status> {
        let req = request.into_inner();
        limits::check_id(
            "execution_id",
            &req.execution_id,
            &self.host.config().limits,
        )?;
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

    type StreamFunctionStream = StreamResult;

    async fn stream_function(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Response<Self::StreamFunctionStream>, Status> {
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
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
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

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let start_after = (!req.start_after.is_empty()).then_some(req.start_after.as_str());
        let limit = convert::page_limit(req.limit);
        let (tasks, mut has_more) = self.host.tasks().list(&req.prefix, start_after, limit);
        let mut page: Vec<pb::TaskInfo> = tasks.iter().map(|t| reply::task_info(t)).collect();
        // Tasks recorded before a restart and not loaded yet belong in the
        // list too, in name order with the others.
        page.extend(
            self.host
                .dormant_tasks()
                .iter()
                .filter(|t| t.name.starts_with(&req.prefix))
                .filter(|t| start_after.is_none_or(|after| t.name.as_str() > after))
                .map(reply::dormant_task_info),
        );
        page.sort_by(|a, b| a.task_name.cmp(&b.task_name));
        if page.len() > limit.max(1) {
            page.truncate(limit.max(1));
            has_more = true;
        }
        Ok(Response::new(pb::ListTasksResponse {
            next_start_after: if has_more {
                page.last().map(|t| t.task_name.clone()).unwrap_or_default()
            } else {
                String::new()
            },
            tasks: page,
            has_more,
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let req = request.into_inner();
        limits::check_id("task_id", &req.task_id, &self.host.config().limits)?;
        let task = match self.host.task(&req.task_id) {
            Some(task) => Some(task),
            // Recorded before a restart: asking about it is a first use.
            None => match self.host.dormant_task(&req.task_id, false) {
                Some(stored) => Some(self.host.wake(stored).await?),
                None => None,
            },
        };
        let Some(task) = task else {
            return Ok(Response::new(pb::GetTaskResponse {
                found: false,
                task: None,
                executions: Vec::new(),
                message: format!("task `{}` not found", req.task_id),
            }));
        };
        let executions = if req.include_executions {
            let limit = match usize::try_from(req.execution_limit) {
                Ok(0) | Err(_) => 10,
                Ok(n) => n.min(1000),
            };
            self.host
                .recent_executions(&task.id, limit)
                .iter()
                .map(reply::execution_info)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetTaskResponse {
            found: true,
            task: Some(reply::task_info(&task)),
            executions,
            message: String::new(),
        }))
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let req = request.into_inner();
        limits::check_id("task_id", &req.task_id, &self.host.config().limits)?;
        let deleted = self
            .host
            .remove_task(&req.task_id, req.force, req.cleanup_executions)
            .await?;
        let mut message = "deleted".to_owned();
        if deleted.cancelled_running > 0 {
            message.push_str(&format!(
                "; {} running execution(s) asked to stop",
                deleted.cancelled_running
            ));
        }
        // The local delete stands whatever the SMS says; the reply tells.
        if let Some(cluster) = self.host.withdraw_deleted(&deleted.membership).await {
            message.push_str("; ");
            message.push_str(&cluster);
        }
        Ok(Response::new(pb::DeleteTaskResponse {
            success: true,
            message,
            deleted: true,
            cleaned_executions: i32::try_from(deleted.cleaned_executions).unwrap_or(i32::MAX),
        }))
    }

    async fn list_executions(
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

    async fn get_health(
        &self,
        request: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::GetHealthResponse>, Status> {
        let stats = self.host.stats();
        let sms = self.host.sms_status();
        let details = request
            .into_inner()
            .include_details
            .then(|| health_details(&self.host, &stats, sms.as_ref()));
        // Degraded, not down: calls run, but what is recorded waits in the
        // journal, and past its limit new tasks and ASYNC calls are refused.
        let (status, persistence) = match &stats.persistence {
            crate::state::Persistence::Ok => ("healthy", String::new()),
            crate::state::Persistence::Failing {
                since,
                error,
                journal_bytes,
                ..
            } => (
                "degraded",
                format!(
                    "; persistence failing since {} ({journal_bytes} journal bytes waiting): {error}",
                    humantime::format_rfc3339_seconds(*since)
                ),
            ),
        };
        Ok(Response::new(pb::GetHealthResponse {
            status: status.to_owned(),
            message: format!(
                "{} task(s), {} execution(s) running{}{persistence}",
                stats.tasks,
                stats.running,
                sms.as_ref()
                    .map(|link| format!("; SMS {}", link.state.word()))
                    .unwrap_or_default()
            ),
            uptime_seconds: i64::try_from(stats.uptime.as_secs()).unwrap_or(i64::MAX),
            details,
        }))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let req = request.into_inner();
        let stats = self.host.stats();
        let count = |s: ExecutionStatus| clamp(stats.by_status.get(&s).copied().unwrap_or(0));
        let ended = |s: ExecutionStatus| {
            clamp(
                usize::try_from(stats.ended_by_status.get(&s).copied().unwrap_or(0))
                    .unwrap_or(usize::MAX),
            )
        };
        let task_stats = req.include_task_stats.then(|| {
            let mut tasks = self.host.tasks().all();
            tasks.sort_by_key(|t| std::cmp::Reverse(t.activity().execution_count));
            let mut by_plugin = std::collections::BTreeMap::new();
            for t in &tasks {
                *by_plugin.entry(t.plugin.name().to_owned()).or_insert(0) += 1;
            }
            pb::TaskStats {
                active_tasks: clamp(stats.active_tasks),
                idle_tasks: clamp(stats.tasks - stats.active_tasks),
                tasks_by_type: reply::string_map(by_plugin),
                most_active_tasks: tasks.iter().take(5).map(|t| reply::task_info(t)).collect(),
            }
        });
        let execution_stats = req.include_execution_stats.then(|| pb::ExecutionStats {
            running_executions: count(ExecutionStatus::Running),
            pending_executions: count(ExecutionStatus::Pending),
            completed_executions: ended(ExecutionStatus::Completed),
            failed_executions: ended(ExecutionStatus::Failed),
            average_execution_time_ms: stats.average_execution_time.as_secs_f64() * 1000.0,
            success_rate_percent: stats.success_rate_percent,
            executions_by_function: reply::string_map(stats.by_function.clone()),
        });
        Ok(Response::new(pb::GetStatsResponse {
            service_stats: Some(pb::ServiceStats {
                uptime_seconds: i64::try_from(stats.uptime.as_secs()).unwrap_or(i64::MAX),
                total_tasks: clamp(stats.tasks),
                total_executions: i32::try_from(stats.total_executions).unwrap_or(i32::MAX),
                total_memory_used: 0,
                cpu_usage_percent: 0.0,
                memory_usage_percent: 0.0,
            }),
            task_stats,
            execution_stats,
        }))
    }
}

/// `GetHealth`'s details: the counts, and what SPEAR's `HealthDetails` has
/// no field for in `system_info`.
fn health_details(
    host: &Host,
    stats: &crate::HostStats,
    sms: Option<&crate::sms::LinkStatus>,
) -> pb::HealthDetails {
    let mut system_info = std::collections::HashMap::new();
    system_info.insert("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    system_info.insert(
        "plugin_abi".to_owned(),
        spear_plugin_sdk::ffi::ABI_VERSION.to_owned(),
    );
    system_info.insert(
        "artifact_cache_hits".to_owned(),
        stats.cache.hits.to_string(),
    );
    system_info.insert(
        "artifact_cache_misses".to_owned(),
        stats.cache.misses.to_string(),
    );
    for (key, value) in [
        ("inline_promotions", stats.tier.promotions),
        ("inline_demotions", stats.tier.demotions),
        ("inline_calls", stats.tier.inline_runs),
    ] {
        system_info.insert(key.to_owned(), value.to_string());
    }
    system_info.insert(
        "quarantined_instances".to_owned(),
        stats.quarantined.to_string(),
    );
    system_info.insert(
        "execution_result_bytes".to_owned(),
        stats.result_bytes.to_string(),
    );
    let loaded = host.artifacts().loaded();
    system_info.insert("plugins_loaded".to_owned(), loaded.in_use.to_string());
    system_info.insert(
        "plugins_loaded_unused".to_owned(),
        loaded.unused.to_string(),
    );
    reply::tasks_by_isolation(&host.tasks().all(), &mut system_info);
    if let Some(link) = sms {
        reply::sms_link(link, &mut system_info);
    }
    // SPEAR's HealthDetails has no field for it: `persistence` is
    // `ok` or `failing`, with the error, since when and attempts.
    system_info.insert(
        "state_journal_bytes".to_owned(),
        stats.state_journal_bytes.to_string(),
    );
    match &stats.persistence {
        crate::state::Persistence::Ok => {
            system_info.insert("persistence".to_owned(), "ok".to_owned());
        }
        crate::state::Persistence::Failing {
            since,
            error,
            attempts,
            ..
        } => {
            system_info.insert("persistence".to_owned(), "failing".to_owned());
            system_info.insert("persistence_error".to_owned(), error.clone());
            system_info.insert(
                "persistence_failing_since".to_owned(),
                humantime::format_rfc3339_seconds(*since).to_string(),
            );
            system_info.insert("persistence_attempts".to_owned(), attempts.to_string());
        }
    }
    pb::HealthDetails {
        active_tasks: clamp(stats.tasks),
        running_executions: clamp(stats.running),
        pending_executions: clamp(stats.pending),
        total_memory_used: 0,
        total_executions: i64::try_from(stats.total_executions).unwrap_or(i64::MAX),
        system_info,
    }
}

fn clamp(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
