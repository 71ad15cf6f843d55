//! The inline tier: which plugin code has *proven* short enough to run on
//! the calling thread.
//!
//! Plugin code runs off the async runtime's workers, paying a thread
//! hand-off per call, unless it has earned the right not to: a function
//! whose last `warm_up` off-worker runs all finished within the budget is
//! promoted, and its SYNC calls then run in place. One inline run over the
//! budget demotes it at once, and the warm-up it needs to come back doubles
//! (up to [`MAX_WARM_UP_FACTOR`] times the configured one), so a function
//! that is sometimes slow stops flapping. A function demoted after a long
//! stable stretch inline ([`STABLE_FACTOR`] times its warm-up) needs only
//! the configured warm-up again: run time is measured on the wall clock, and
//! a busy machine's preemption now and then must not price a short function
//! out of the tier for good. Functions marked `#[function(blocking)]` are
//! never promoted.
//!
//! The same rule covers a plugin's instance constructor, so that a second
//! task on an already-loaded plugin can be created without a hand-off.
//!
//! A profile belongs to a loaded plugin (one per digest): every task running
//! that code shares what was learnt about it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How far repeated demotions stretch the warm-up.
pub const MAX_WARM_UP_FACTOR: u32 = 64;

/// Inline runs since its promotion, in warm-ups, after which a demotion
/// starts the function over from the configured warm-up.
pub const STABLE_FACTOR: u64 = 16;

/// The tier's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierPolicy {
    /// The longest run that counts as short; zero disables the tier.
    pub budget: Duration,
    /// Consecutive short off-worker runs needed for a promotion.
    pub warm_up: u32,
}

impl TierPolicy {
    /// Whether the tier is on at all.
    pub fn enabled(&self) -> bool {
        !self.budget.is_zero()
    }
}

/// Where a function's calls run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Off the async workers, with a hand-off (the default).
    OffWorker,
    /// On the calling thread: the function has proven short.
    Inline,
    /// Never inline: the author marked it `#[function(blocking)]`.
    Blocking,
}

/// What the tier learnt about one piece of plugin code.
#[derive(Debug)]
pub struct Profile {
    blocking: bool,
    inline: AtomicBool,
    /// Short off-worker runs in a row.
    streak: AtomicU32,
    /// The streak needed for the next promotion.
    needed: AtomicU32,
    promotions: AtomicU64,
    demotions: AtomicU64,
    inline_runs: AtomicU64,
    /// `inline_runs` when last promoted.
    promoted_at: AtomicU64,
    /// Recent completed run time (exponentially weighted), in ns; 0: none yet.
    mean_nanos: AtomicU64,
}

/// Counters of one profile (or a sum of several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierCounts {
    /// Times promoted to the inline tier.
    pub promotions: u64,
    /// Times demoted after a slow inline run.
    pub demotions: u64,
    /// Calls that ran inline.
    pub inline_runs: u64,
}

impl std::ops::AddAssign for TierCounts {
    fn add_assign(&mut self, other: TierCounts) {
        self.promotions += other.promotions;
        self.demotions += other.demotions;
        self.inline_runs += other.inline_runs;
    }
}

/// What a run's outcome did to the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// The code was promoted to the inline tier.
    Promoted,
    /// The code was demoted; `warm_up` short runs bring it back.
    Demoted {
        /// The warm-up now needed.
        warm_up: u32,
        /// How long the slow run took.
        took: Duration,
    },
}

impl Change {
    /// Logs a promotion or demotion of `code` (a function, or a plugin's
    /// constructor) of `plugin`.
    pub fn log(self, plugin: &str, code: &str) {
        match self {
            Change::None => {}
            Change::Promoted => {
                tracing::info!(
                    plugin,
                    code,
                    "promoted to the inline tier: its runs proved short"
                );
            }
            Change::Demoted { warm_up, took } => tracing::warn!(
                plugin,
                code,
                warm_up,
                took_us = took.as_micros(),
                "demoted from the inline tier: a run went over the budget"
            ),
        }
    }
}

impl Profile {
    /// A fresh profile: off-worker (or blocking for good).
    pub fn new(blocking: bool, policy: &TierPolicy) -> Self {
        Profile {
            blocking,
            inline: AtomicBool::new(false),
            streak: AtomicU32::new(0),
            needed: AtomicU32::new(policy.warm_up.max(1)),
            promotions: AtomicU64::new(0),
            demotions: AtomicU64::new(0),
            inline_runs: AtomicU64::new(0),
            promoted_at: AtomicU64::new(0),
            mean_nanos: AtomicU64::new(0),
        }
    }

    /// Folds a completed run's time into the estimate (recent runs count
    /// most). Racing updates may lose one another: it is an estimate.
    pub fn record_duration(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mean = self.mean_nanos.load(Ordering::Relaxed);
        let next = if mean == 0 {
            took
        } else {
            (mean / 5) * 4 + took / 5
        };
        self.mean_nanos.store(next.max(1), Ordering::Relaxed);
    }

    /// How long a run is expected to take (zero before the first completed one).
    pub fn expected_duration(&self) -> Duration {
        Duration::from_nanos(self.mean_nanos.load(Ordering::Relaxed))
    }

    /// Where the next call runs.
    pub fn tier(&self) -> Tier {
        if self.blocking {
            Tier::Blocking
        } else if self.inline.load(Ordering::Relaxed) {
            Tier::Inline
        } else {
            Tier::OffWorker
        }
    }

    /// Whether the next call may run on the calling thread.
    #[inline]
    pub fn is_inline(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// Folds in an off-worker run that took `took`.
    pub fn off_worker_run(&self, took: Duration, policy: &TierPolicy) -> Change {
        if self.blocking || !policy.enabled() || self.is_inline() {
            return Change::None;
        }
        if took > policy.budget {
            self.streak.store(0, Ordering::Relaxed);
            return Change::None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= self.needed.load(Ordering::Relaxed)
            && !self.inline.swap(true, Ordering::Relaxed)
        {
            self.promoted_at
                .store(self.inline_runs.load(Ordering::Relaxed), Ordering::Relaxed);
            self.promotions.fetch_add(1, Ordering::Relaxed);
            return Change::Promoted;
        }
        Change::None
    }

    /// Folds in a run on the calling thread that took `took`.
    pub fn inline_run(&self, took: Duration, policy: &TierPolicy) -> Change {
        let runs = self.inline_runs.fetch_add(1, Ordering::Relaxed) + 1;
        if took <= policy.budget || !self.inline.swap(false, Ordering::Relaxed) {
            return Change::None;
        }
        self.streak.store(0, Ordering::Relaxed);
        let base = policy.warm_up.max(1);
        let cap = base.saturating_mul(MAX_WARM_UP_FACTOR);
        let needed = self.needed.load(Ordering::Relaxed);
        let since_promotion = runs.saturating_sub(self.promoted_at.load(Ordering::Relaxed));
        let warm_up = if since_promotion >= STABLE_FACTOR * u64::from(needed) {
            base
        } else {
            needed.saturating_mul(2).min(cap)
        };
        self.needed.store(warm_up, Ordering::Relaxed);
        self.demotions.fetch_add(1, Ordering::Relaxed);
        Change::Demoted { warm_up, took }
    }

    /// A run that ended abnormally (timed out, abandoned, panicked): the
    /// code has not proven short this time.
    pub fn interrupted(&self) {
        self.streak.store(0, Ordering::Relaxed);
    }

    /// Its counters.
    pub fn counts(&self) -> TierCounts {
        TierCounts {
            promotions: self.promotions.load(Ordering::Relaxed),
            demotions: self.demotions.load(Ordering::Relaxed),
            inline_runs: self.inline_runs.load(Ordering::Relaxed),
        }
    }
}

/// The profiles of one loaded plugin: one per function, index for index
/// with its table, and one for its instance constructor.
#[derive(Debug)]
pub struct PluginProfile {
    /// Per function.
    pub functions: Box<[Profile]>,
    /// The instance constructor.
    pub constructor: Profile,
}

impl PluginProfile {
    /// Fresh profiles for a plugin whose functions are `blocking[i]`.
    pub fn new(blocking: impl IntoIterator<Item = bool>, policy: &TierPolicy) -> Self {
        PluginProfile {
            functions: blocking
                .into_iter()
                .map(|b| Profile::new(b, policy))
                .collect(),
            constructor: Profile::new(false, policy),
        }
    }

    /// All its functions' counters, summed.
    pub fn counts(&self) -> TierCounts {
        let mut sum = TierCounts::default();
        for p in self.functions.iter() {
            sum += p.counts();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TierPolicy = TierPolicy {
        budget: Duration::from_micros(100),
        warm_up: 4,
    };
    const SHORT: Duration = Duration::from_micros(10);
    const LONG: Duration = Duration::from_millis(1);

    #[test]
    fn promoted_after_a_short_warm_up_and_demoted_by_one_slow_run() {
        let p = Profile::new(false, &POLICY);
        for _ in 0..3 {
            assert_eq!(p.off_worker_run(SHORT, &POLICY), Change::None);
        }
        assert_eq!(p.tier(), Tier::OffWorker);
        assert_eq!(p.off_worker_run(SHORT, &POLICY), Change::Promoted);
        assert_eq!(p.tier(), Tier::Inline);
        assert_eq!(p.inline_run(SHORT, &POLICY), Change::None);
        assert_eq!(
            p.inline_run(LONG, &POLICY),
            Change::Demoted {
                warm_up: 8,
                took: LONG
            },
            "one slow run demotes, and the next warm-up is twice as long"
        );
        assert_eq!(p.tier(), Tier::OffWorker);
        for _ in 0..7 {
            p.off_worker_run(SHORT, &POLICY);
        }
        assert_eq!(p.tier(), Tier::OffWorker);
        assert_eq!(p.off_worker_run(SHORT, &POLICY), Change::Promoted);
        let c = p.counts();
        assert_eq!((c.promotions, c.demotions, c.inline_runs), (2, 1, 2));
    }

    #[test]
    fn a_slow_run_restarts_the_warm_up() {
        let p = Profile::new(false, &POLICY);
        for _ in 0..3 {
            p.off_worker_run(SHORT, &POLICY);
        }
        p.off_worker_run(LONG, &POLICY);
        for _ in 0..3 {
            p.off_worker_run(SHORT, &POLICY);
        }
        assert_eq!(p.tier(), Tier::OffWorker);
        p.interrupted();
        for _ in 0..3 {
            p.off_worker_run(SHORT, &POLICY);
        }
        assert_eq!(p.tier(), Tier::OffWorker);
    }

    #[test]
    fn blocking_code_and_a_zero_budget_never_go_inline() {
        let blocking = Profile::new(true, &POLICY);
        let off = TierPolicy {
            budget: Duration::ZERO,
            ..POLICY
        };
        let disabled = Profile::new(false, &off);
        for _ in 0..100 {
            blocking.off_worker_run(Duration::ZERO, &POLICY);
            disabled.off_worker_run(Duration::ZERO, &off);
        }
        assert_eq!(blocking.tier(), Tier::Blocking);
        assert_eq!(disabled.tier(), Tier::OffWorker);
    }

    #[test]
    fn a_demotion_after_a_long_stable_stretch_starts_over() {
        let p = Profile::new(false, &POLICY);
        while p.off_worker_run(SHORT, &POLICY) != Change::Promoted {}
        // Quick demotions escalate the warm-up...
        p.inline_run(LONG, &POLICY);
        while p.off_worker_run(SHORT, &POLICY) != Change::Promoted {}
        assert_eq!(
            p.inline_run(LONG, &POLICY),
            Change::Demoted {
                warm_up: 16,
                took: LONG
            }
        );
        while p.off_worker_run(SHORT, &POLICY) != Change::Promoted {}
        // ...but after a long stable stretch inline, one slow run (a
        // preemption, say) costs only the configured warm-up.
        for _ in 0..STABLE_FACTOR * 16 {
            p.inline_run(SHORT, &POLICY);
        }
        assert_eq!(
            p.inline_run(LONG, &POLICY),
            Change::Demoted {
                warm_up: POLICY.warm_up,
                took: LONG
            }
        );
    }

    #[test]
    fn repeated_demotions_are_capped() {
        let p = Profile::new(false, &POLICY);
        let mut last = 0;
        for _ in 0..20 {
            while p.off_worker_run(SHORT, &POLICY) != Change::Promoted {}
            if let Change::Demoted { warm_up, .. } = p.inline_run(LONG, &POLICY) {
                last = warm_up;
            }
        }
        assert_eq!(last, POLICY.warm_up * MAX_WARM_UP_FACTOR);
    }
}
