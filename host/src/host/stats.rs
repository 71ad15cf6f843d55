//! A host's health and counters, read from counters kept as executions
//! change, never by walking the execution records.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use super::Host;
use crate::exec::ExecutionStatus;
use crate::tier::TierCounts;

/// Health and counters of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStats {
    /// Time since the host started.
    pub uptime: Duration,
    /// Tasks registered.
    pub tasks: usize,
    /// Tasks with an execution running now.
    pub active_tasks: usize,
    /// Executions running now.
    pub running: usize,
    /// Executions accepted but not started.
    pub pending: usize,
    /// Executions started since the host started.
    pub total_executions: u64,
    /// Records currently held, by status.
    pub by_status: BTreeMap<ExecutionStatus, usize>,
    /// Executions ended since the host started, by final status (whether
    /// or not their records are held).
    pub ended_by_status: BTreeMap<ExecutionStatus, u64>,
    /// Executions started since the host started, by function name (over
    /// the tasks registered now).
    pub by_function: BTreeMap<String, u64>,
    /// Mean run time of the executions ended since the host started.
    pub average_execution_time: Duration,
    /// Share of the executions ended since the host started that completed, in percent.
    pub success_rate_percent: f64,
    /// The inline tier: promotions, demotions and calls run inline.
    pub tier: TierCounts,
    /// Instances quarantined now (abandoned calls whose plugin runs on).
    pub quarantined: usize,
    /// Result bytes the execution records keep, counted against
    /// `executions.max_total_result_bytes`.
    pub result_bytes: usize,
    /// Artifact cache counters.
    pub cache: crate::artifact::CacheStats,
    /// Whether what is recorded reaches the state database.
    pub persistence: crate::state::Persistence,
    /// Bytes in the state journal, not folded into the database yet.
    pub state_journal_bytes: u64,
}

impl Host {
    /// Health and counters, from counters kept as executions change: no
    /// walk over the execution records.
    pub fn stats(&self) -> HostStats {
        let tasks = self.tasks().all();
        let counts = self.inner.executions.counts();
        let by_status = ExecutionStatus::ALL
            .iter()
            .map(|s| (*s, counts.held(*s)))
            .collect();
        let ended_by_status = ExecutionStatus::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| (*s, counts.finished(*s)))
            .collect();
        let mut by_function = BTreeMap::new();
        for task in &tasks {
            for (f, info) in task.plugin.functions().iter().enumerate() {
                let n = task.function_calls(f);
                if n > 0 {
                    *by_function.entry(info.name.clone()).or_insert(0) += n;
                }
            }
        }
        let mut tier = TierCounts::default();
        for profile in self
            .inner
            .profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            tier += profile.counts();
        }
        HostStats {
            uptime: self.inner.started.elapsed(),
            active_tasks: tasks.iter().filter(|t| t.activity().running > 0).count(),
            tasks: tasks.len(),
            running: counts.held(ExecutionStatus::Running),
            pending: counts.held(ExecutionStatus::Pending),
            // Host-wide, not summed over tasks: an upgraded task starts its
            // own counts afresh, the host's lifetime total does not.
            total_executions: counts.ended + counts.held(ExecutionStatus::Running) as u64,
            average_execution_time: if counts.ended == 0 {
                Duration::ZERO
            } else {
                counts.run_time / u32::try_from(counts.ended).unwrap_or(u32::MAX)
            },
            success_rate_percent: if counts.ended == 0 {
                100.0
            } else {
                counts.completed as f64 * 100.0 / counts.ended as f64
            },
            by_status,
            ended_by_status,
            by_function,
            tier,
            quarantined: self.inner.quarantine.quarantined(),
            result_bytes: self.inner.executions.result_bytes(),
            cache: self.artifacts().cache().stats(),
            persistence: self.persistence(),
            state_journal_bytes: self.state_journal_bytes(),
        }
    }
}
