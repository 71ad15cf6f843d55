//! `[pool]`: the per-task instance pools are what bounds the memory and
//! threads plugins hold, so their sizes and timeouts are found together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Instance pools (per task; a task's invocation metadata may override
/// `spearlet.pool.min` and `spearlet.pool.max`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Instances created with the task and kept when idle. Default: 1.
    pub min_instances: usize,
    /// Instances (and so concurrent calls) per task at most. Default: 8.
    pub max_instances: usize,
    /// Idle instances above the minimum are destroyed after this. Default: 5 min.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a call without a deadline waits for a free instance before
    /// RESOURCE_EXHAUSTED. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Abandoned calls (timed out or force-cancelled while their plugin runs
    /// on, ignoring cancellation) each pin an instance and a thread. Past
    /// this many in one task, new calls to it are refused
    /// (RESOURCE_EXHAUSTED) until one returns. Default: 8.
    pub max_quarantined: usize,
    /// The same bound across all tasks. Default: 128.
    pub max_quarantined_total: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_instances: 1,
            max_instances: 8,
            idle_timeout: Duration::from_secs(300),
            acquire_timeout: Duration::from_secs(30),
            max_quarantined: 8,
            max_quarantined_total: 128,
        }
    }
}
