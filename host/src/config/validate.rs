//! The ranges numeric settings must lie in, checked once at start so that
//! no allocation, semaphore or pool is ever sized by an unchecked number
//! (see `docs/reliability.md`).

use super::Config;

/// The most instances one task's pool may have (`pool.max_instances`, and
/// so `spearlet.pool.max`): each is a live plugin instance, and in the
/// process tier a process.
pub const MAX_POOL_INSTANCES: usize = 4096;
/// The most abandoned calls kept (`pool.max_quarantined[_total]`).
pub const MAX_QUARANTINED: usize = 1 << 16;
/// The most execution records (`executions.max_records`, `max_pending`).
pub const MAX_RECORDS: usize = 10_000_000;
/// The most result bytes all records may keep together.
pub const MAX_TOTAL_RESULT_BYTES: usize = 1 << 40;
/// The most warm worker processes.
pub const MAX_WARM_WORKERS: usize = 256;
/// The largest gRPC message (`limits.max_message_bytes`): tonic's own
/// ceiling is `u32`, and a message is held whole in memory.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// SPEAR's heartbeat timeout: its placement skips a node whose last
/// heartbeat is older, so `sms.heartbeat_interval` must be shorter.
pub const SPEAR_HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// A numeric setting and its bounds: `(key, value, low, high)`.
type Range = (&'static str, u64, u64, u64);

impl Config {
    /// Checks every numeric setting against the range it can work in, so
    /// that no later allocation or semaphore is sized by an unchecked
    /// number (see `docs/reliability.md`).
    ///
    /// # Errors
    ///
    /// A message naming the key, its value and the limit.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value, low, high) in self.store_ranges().into_iter().chain(self.service_ranges())
        {
            if value < low || value > high {
                return Err(format!("{key} = {value} is out of range: {low} to {high}"));
            }
        }
        if self.tasks.drain_timeout > self.tasks.max_drain_timeout {
            return Err(format!(
                "tasks.drain_timeout = {} is out of range: at most tasks.max_drain_timeout = {}",
                humantime::format_duration(self.tasks.drain_timeout),
                humantime::format_duration(self.tasks.max_drain_timeout)
            ));
        }
        super::AllowedHosts::parse(&self.artifacts.allowed_hosts)?;
        if self.sms.heartbeat_interval >= SPEAR_HEARTBEAT_TIMEOUT {
            return Err(format!(
                "sms.heartbeat_interval = {} is out of range: it must be under SPEAR's \
                 heartbeat timeout ({}), or the SMS stops placing invocations on this node",
                humantime::format_duration(self.sms.heartbeat_interval),
                humantime::format_duration(SPEAR_HEARTBEAT_TIMEOUT)
            ));
        }
        Ok(())
    }

    /// The pools' and the execution store's numeric settings with their
    /// ranges, `(key, value, low, high)`, in the order they are checked (a
    /// bound may be another setting).
    fn store_ranges(&self) -> [Range; 8] {
        let n = |v: usize| v as u64;
        let (pool, ex) = (&self.pool, &self.executions);
        [
            (
                "pool.max_instances",
                n(pool.max_instances),
                1,
                n(MAX_POOL_INSTANCES),
            ),
            (
                "pool.min_instances",
                n(pool.min_instances),
                0,
                n(pool.max_instances),
            ),
            (
                "pool.max_quarantined",
                n(pool.max_quarantined),
                0,
                n(MAX_QUARANTINED),
            ),
            (
                "pool.max_quarantined_total",
                n(pool.max_quarantined_total),
                0,
                n(MAX_QUARANTINED),
            ),
            (
                "executions.max_records",
                n(ex.max_records),
                1,
                n(MAX_RECORDS),
            ),
            (
                "executions.max_pending",
                n(ex.max_pending),
                1,
                n(MAX_RECORDS),
            ),
            (
                "executions.max_total_result_bytes",
                n(ex.max_total_result_bytes),
                0,
                n(MAX_TOTAL_RESULT_BYTES),
            ),
            (
                "executions.max_result_bytes",
                n(ex.max_result_bytes),
                0,
                n(ex.max_total_result_bytes),
            ),
        ]
    }

    /// The other numeric settings with their ranges, as [`Self::store_ranges`].
    fn service_ranges(&self) -> [Range; 8] {
        let n = |v: usize| v as u64;
        let limits = &self.limits;
        [
            (
                "tiers.warm_workers",
                n(self.tiers.warm_workers),
                0,
                n(MAX_WARM_WORKERS),
            ),
            (
                "tiers.inline_warm_up",
                u64::from(self.tiers.inline_warm_up),
                1,
                1 << 20,
            ),
            (
                "limits.max_message_bytes",
                n(limits.max_message_bytes),
                4096,
                n(MAX_MESSAGE_BYTES),
            ),
            (
                "limits.max_parameter_bytes",
                n(limits.max_parameter_bytes),
                0,
                n(MAX_MESSAGE_BYTES),
            ),
            (
                "limits.max_concurrent_streams",
                u64::from(limits.max_concurrent_streams),
                1,
                1 << 20,
            ),
            (
                "tasks.max_journal_bytes",
                self.tasks.max_journal_bytes,
                1 << 20,
                1 << 40,
            ),
            (
                "metrics.max_task_labels",
                n(self.metrics.max_task_labels),
                0,
                1_000_000,
            ),
            (
                "artifacts.download_attempts",
                u64::from(self.artifacts.download_attempts),
                1,
                100,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_must_beat_spears_timeout() {
        let mut config = Config::default();
        config.sms.heartbeat_interval = std::time::Duration::from_secs(89);
        assert!(config.validate().is_ok());
        config.sms.heartbeat_interval = SPEAR_HEARTBEAT_TIMEOUT;
        let err = config.validate().unwrap_err();
        assert!(err.contains("sms.heartbeat_interval"), "{err}");
    }
}
