//! The health handlers of `FunctionService` (`GetHealth`, `GetStats`):
//! they report on the host as a whole rather than on one call or task,
//! and grow with every counter the host keeps, so they live apart from
//! the handlers that serve calls.

use tonic::{Request, Response, Status};

use super::{pb, reply, FunctionApi};
use crate::exec::ExecutionStatus;
use crate::host::Host;

impl FunctionApi {
    /// `GetHealth`: healthy or degraded, with the details if asked.
    pub(super) async fn health(
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

    /// `GetStats`: the host's counters, by task and by execution if asked.
    pub(super) async fn stats(
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
            tasks.sort_by_cached_key(|t| std::cmp::Reverse(t.activity().execution_count));
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
