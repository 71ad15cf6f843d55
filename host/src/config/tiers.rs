//! `[tiers]` (formerly `[exec]`): where plugin code runs. The section that
//! reaches into the tier and isolation modules, kept apart so that the rest
//! of the configuration stays plain data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where plugin code runs (`[tiers]`, formerly `[exec]`): the inline tier
/// and the worker processes of the process tier. SYNC calls of a function whose last
/// `inline_warm_up` runs each took at most `inline_budget` run on the
/// calling thread, with no thread hand-off. Slower runs send the function
/// back off the async workers (doubling the warm-up it needs to return)
/// when they are more than about 1 % of its recent inline runs, or when
/// one run passes the hard limit, twenty budgets (at least 10 ms, at most
/// 10 ms over the budget): a preemption now and then must not demote a
/// short function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// The longest run that counts as short. `0` turns the inline tier off.
    /// Default: 100 µs.
    #[serde(with = "humantime_serde")]
    pub inline_budget: Duration,
    /// Short runs in a row before a function is promoted. Default: 32.
    pub inline_warm_up: u32,
    /// The tier of tasks whose NEW_TASK does not say (`spearlet.isolation`):
    /// `in-process` (the default) or `process`.
    pub isolation: crate::isolate::Isolation,
    /// The `spearlet` executable that runs worker processes. Default: this
    /// executable when it is `spearlet`, else a `spearlet` beside it or one
    /// directory up (where cargo puts test binaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_program: Option<std::path::PathBuf>,
    /// Worker processes kept started and idle, ready to load a plugin: a
    /// process-tier task (and the first load of any plugin, which runs in a
    /// worker before the host loads it) then pays no process start. Default: 1.
    pub warm_workers: usize,
    /// Load every plugin first in a worker process, so that a library whose
    /// ELF constructor crashes or hangs is refused instead of taking the
    /// host down. Default: true. (`plugin inspect` and `plugin check` turn
    /// it off in the child process they already load each file in.)
    pub first_load_in_worker: bool,
    /// How long loading a library in a worker may take — its ELF
    /// constructors run then — before it is refused as hanging
    /// (`constructor_crashed`). Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
}

impl Default for TiersConfig {
    fn default() -> Self {
        TiersConfig {
            inline_budget: Duration::from_micros(100),
            inline_warm_up: 32,
            isolation: crate::isolate::Isolation::InProcess,
            worker_program: None,
            warm_workers: 1,
            first_load_in_worker: true,
            load_timeout: Duration::from_secs(30),
        }
    }
}

impl TiersConfig {
    /// The inline tier's policy.
    pub(crate) fn tier_policy(&self) -> crate::tier::TierPolicy {
        crate::tier::TierPolicy {
            budget: self.inline_budget,
            warm_up: self.inline_warm_up.max(1),
        }
    }
}
