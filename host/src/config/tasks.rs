//! `[tasks]`: tasks outlive a restart and switch versions under load; the
//! settings for both are read by the state and upgrade code alone.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tasks kept across restarts (in `<data_dir>/state.redb`), and how one
/// switches version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Load every recorded task's plugin when the server starts, instead of
    /// on each task's first use. Default: `false`.
    pub preload: bool,
    /// How long an upgrade or rollback waits for calls still running on the
    /// old version when the request does not say. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The longest drain a request may ask for. Default: 10 min.
    #[serde(with = "humantime_serde")]
    pub max_drain_timeout: Duration,
    /// The write-ahead journal's size at most while it cannot be folded into
    /// the database (a full disk, a broken database): past it, task
    /// creation and ASYNC acceptance are refused (UNAVAILABLE) until
    /// persistence recovers, instead of the journal growing without bound.
    /// Default: 64 MiB.
    pub max_journal_bytes: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            preload: false,
            drain_timeout: Duration::from_secs(30),
            max_drain_timeout: Duration::from_secs(600),
            max_journal_bytes: 64 * 1024 * 1024,
        }
    }
}
