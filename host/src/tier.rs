//! The inline tier: which plugin code has *proven* short enough to run on
//! an async runtime worker, and the bound that keeps it from stalling one.
//!
//! Plugin code runs off the async runtime's workers, paying a thread
//! hand-off per call, unless it has earned the right not to: a function
//! whose last `warm_up` off-worker runs all finished within the budget is
//! promoted, and its SYNC calls then run on a runtime worker.
//!
//! Run time is measured on the wall clock, so a run also counts the time
//! its thread was preempted: on a busy machine a 1 µs function now and then
//! "takes" a scheduler slice (0.2–1.5 ms), ten times the default budget.
//! One slow run therefore says little, and demoting on it made short
//! functions flap in and out of the tier (59 round trips in a 300k-call
//! benchmark), each sending calls through the slower path. So a promoted
//! function is judged on its recent inline runs, with hysteresis:
//!
//! - **Too often over the budget**: a decaying count of its inline runs
//!   over the budget (each weighs less the more runs came after it, by e
//!   every [`SLOW_WINDOW`] runs) estimates the share of recent runs that
//!   were slow. Above [`DEMOTE_SLOW_SHARE`], its p99 is over the budget and
//!   it is demoted. Isolated preemptions never get there; a function slow
//!   every time does in five runs.
//! - **Over the hard limit** ([`TierPolicy::hard_limit`], far above the
//!   budget and above a scheduler slice): one such run demotes at once, and
//!   so does the watchdog on seeing a call in flight that long. That is
//!   what a stuck or genuinely long call looks like; a preempted short
//!   call rarely does.
//!
//! The warm-up a demoted function needs to come back doubles, so a function
//! that is sometimes slow stops flapping. A function demoted after a long
//! stable stretch inline ([`STABLE_FACTOR`] times its warm-up) needs only
//! the configured warm-up again: a rare cluster of preemptions must not
//! price a short function out of the tier. [`BAR_AFTER_DEMOTIONS`]
//! demotions in a row with no stable stretch between them bar the code from
//! the tier for good (for as long as its plugin is loaded): it is not
//! short, whatever its warm-ups said. Functions marked
//! `#[function(blocking)]` are never promoted.
//!
//! Running plugin code on a worker is only safe while it stays short, so
//! the tier is bounded ([`Bound`]):
//!
//! - **A cap**: at most (runtime workers − 1) inline calls run at once
//!   across the host, so one worker is always free for health checks,
//!   admin calls and I/O; a call that finds the cap reached takes the
//!   pooled path. A current-thread runtime, or one with a single worker,
//!   runs nothing inline.
//! - **A watchdog** looks at the inline calls in flight every
//!   [`WATCH_TICK`] and demotes the code of one that has run past the hard
//!   limit *while it runs*, so the next calls take the pooled path even if
//!   this one never returns: code that hangs stops running inline within
//!   the hard limit and a tick. A call between the budget and the hard
//!   limit is left to its end, to be judged with the function's other runs.
//! - **Deadlines**: a call with a deadline never runs on its caller's own
//!   future (see `exec`), so the caller is answered at the deadline even if
//!   the plugin ignores cancellation.
//!
//! The same rules cover a plugin's instance constructor, so that a second
//! task on an already-loaded plugin can be created without a hand-off.
//!
//! A profile belongs to a loaded plugin (one per digest): every task running
//! that code shares what was learnt about it.

mod bound;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use bound::Seat;
pub use bound::{Bound, Code, PARK_AFTER_IDLE_TICKS, WATCH_TICK};

/// Inline runs since its promotion, in warm-ups, after which a demotion
/// starts the function over from the configured warm-up.
pub const STABLE_FACTOR: u64 = 16;

/// Demotions in a row, each before a stable stretch inline, after which
/// code is never promoted again while its plugin stays loaded. Four: with
/// the warm-up doubling each time (so it reaches at most 8 times the
/// configured one), the fourth comes after the function proved short in
/// 32, 64, 128 and 256 (by default) runs in a row and still overran soon
/// after each promotion — a pattern, not noise, and every further
/// promotion would risk stalling a worker again.
pub const BAR_AFTER_DEMOTIONS: u32 = 4;

/// How many inline runs a slow run is remembered over: its weight in the
/// estimate falls by e every this many runs. Long enough that the share of
/// slow runs it estimates means something at 1% (it counts a handful of
/// them, not one), short enough that a function which turns slow is judged
/// on what it does now, not on the thousands of short runs before.
pub const SLOW_WINDOW: u32 = 400;

/// The estimated share of recent inline runs over the budget above which
/// code is demoted: 1%, that is its p99 is over the budget. With
/// [`SLOW_WINDOW`] it means a weight of four slow runs, so a function over
/// the budget every time is demoted at its fifth inline run, while a
/// preempted run among hundreds of short ones (or two close together) is
/// not: on a busy machine preemptions land in maybe one short run in
/// thousands, and rarely five within a few hundred runs.
pub const DEMOTE_SLOW_SHARE: f64 = 0.01;

/// The hard limit in budgets: a run this much over the budget is not a
/// short function's bad luck.
pub const HARD_LIMIT_BUDGETS: u32 = 20;

/// The least hard limit, whatever the budget: above the time a preempted
/// thread waits out on a busy machine — single preemptions of 2–4 ms were
/// seen on 2 cores under 32 gRPC calls in flight, and at a 2 ms floor each
/// of them demoted a 1 µs function — yet a stuck call stops further inline
/// calls within about ten milliseconds (the cap keeps a worker free
/// meanwhile).
pub const HARD_LIMIT_FLOOR: Duration = Duration::from_millis(10);

/// The most the hard limit exceeds the budget: what a preemption adds to a
/// run is not proportional to the budget, and a large budget must not let
/// a stuck call keep admitting inline calls for seconds (each would take a
/// worker until the cap is reached).
pub const HARD_LIMIT_SLACK: Duration = Duration::from_millis(10);

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

    /// The run time over which one run demotes at once, and the watchdog
    /// demotes a call in flight: [`HARD_LIMIT_BUDGETS`] budgets, at least
    /// [`HARD_LIMIT_FLOOR`], at most [`HARD_LIMIT_SLACK`] over the budget.
    /// Runs between the budget and this are judged together
    /// ([`DEMOTE_SLOW_SHARE`]): on the wall clock, one of them may be a
    /// preemption.
    pub const fn hard_limit(&self) -> Duration {
        let scaled = self.budget.saturating_mul(HARD_LIMIT_BUDGETS);
        let ceiling = self.budget.saturating_add(HARD_LIMIT_SLACK);
        let limit = if scaled.as_nanos() < ceiling.as_nanos() {
            scaled
        } else {
            ceiling
        };
        if limit.as_nanos() > HARD_LIMIT_FLOOR.as_nanos() {
            limit
        } else {
            HARD_LIMIT_FLOOR
        }
    }
}

/// Where a function's calls run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Off the async workers, with a hand-off (the default; also code
    /// barred from the tier after repeated demotions).
    OffWorker,
    /// On a runtime worker, within the tier's bound: the function has
    /// proven short.
    Inline,
    /// Never inline: the author marked it `#[function(blocking)]`.
    Blocking,
}

/// What the tier learnt about one piece of plugin code.
#[derive(Debug)]
pub struct Profile {
    blocking: bool,
    inline: AtomicBool,
    /// Never promoted again: demoted [`BAR_AFTER_DEMOTIONS`] times in a row.
    barred: AtomicBool,
    /// Short off-worker runs in a row.
    streak: AtomicU32,
    /// The streak needed for the next promotion.
    needed: AtomicU32,
    /// Demotions in a row with no stable stretch between them.
    strikes: AtomicU32,
    promotions: AtomicU64,
    demotions: AtomicU64,
    inline_runs: AtomicU64,
    /// `inline_runs` when last promoted.
    promoted_at: AtomicU64,
    /// Recent inline runs over the budget, each weighted by how recent it
    /// is ([`SLOW_WINDOW`]): the bits of an `f64`, as of `last_slow`.
    slow_weight: AtomicU64,
    /// The number (in `inline_runs`) of the last run folded into `slow_weight`.
    last_slow: AtomicU64,
    /// Recent completed run time (exponentially weighted), in ns; 0: none yet.
    mean_nanos: AtomicU64,
}

/// Counters of one profile (or a sum of several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierCounts {
    /// Times promoted to the inline tier.
    pub promotions: u64,
    /// Times demoted: too many inline runs over the budget, or one over
    /// the hard limit.
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
        /// How long the slow run took (or had run, when the watchdog saw it).
        took: Duration,
    },
    /// The code was demoted for the [`BAR_AFTER_DEMOTIONS`]th time in a row
    /// and is never promoted again.
    Barred {
        /// How long the slow run took (or had run, when the watchdog saw it).
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
                "demoted from the inline tier: too often over the budget, or past the hard limit"
            ),
            Change::Barred { took } => tracing::warn!(
                plugin,
                code,
                demotions = BAR_AFTER_DEMOTIONS,
                took_us = took.as_micros(),
                "barred from the inline tier for good: it kept going over the budget"
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
            barred: AtomicBool::new(false),
            streak: AtomicU32::new(0),
            needed: AtomicU32::new(policy.warm_up.max(1)),
            strikes: AtomicU32::new(0),
            promotions: AtomicU64::new(0),
            demotions: AtomicU64::new(0),
            inline_runs: AtomicU64::new(0),
            promoted_at: AtomicU64::new(0),
            slow_weight: AtomicU64::new(0f64.to_bits()),
            last_slow: AtomicU64::new(0),
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

    /// Where the next call runs, unless the tier's cap is reached.
    pub fn tier(&self) -> Tier {
        if self.blocking {
            Tier::Blocking
        } else if self.inline.load(Ordering::Relaxed) {
            Tier::Inline
        } else {
            Tier::OffWorker
        }
    }

    /// Whether the next call may run inline (if the cap allows).
    #[inline]
    pub fn is_inline(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// Whether the code was barred from the tier for good.
    pub fn is_barred(&self) -> bool {
        self.barred.load(Ordering::Relaxed)
    }

    /// Folds in an off-worker run that took `took`.
    pub fn off_worker_run(&self, took: Duration, policy: &TierPolicy) -> Change {
        if self.blocking || !policy.enabled() || self.is_inline() || self.is_barred() {
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
            // A new stretch inline is judged on its own runs: the slow ones
            // that ended the last stretch are not held against it.
            self.slow_weight.store(0f64.to_bits(), Ordering::Relaxed);
            self.promoted_at
                .store(self.inline_runs.load(Ordering::Relaxed), Ordering::Relaxed);
            self.promotions.fetch_add(1, Ordering::Relaxed);
            return Change::Promoted;
        }
        Change::None
    }

    /// Folds in an inline run that took `took`. One over the hard limit
    /// demotes; one over the budget demotes if too many recent runs were
    /// ([`DEMOTE_SLOW_SHARE`]). This runs after every inline call: a short
    /// run costs the count of runs and one comparison, nothing more.
    #[inline]
    pub fn inline_run(&self, took: Duration, policy: &TierPolicy) -> Change {
        let run = self.inline_runs.fetch_add(1, Ordering::Relaxed);
        if took <= policy.budget {
            return Change::None;
        }
        self.slow_inline_run(run, took, policy)
    }

    /// An inline run over the budget, the `run`th since the profile was
    /// made.
    #[cold]
    fn slow_inline_run(&self, run: u64, took: Duration, policy: &TierPolicy) -> Change {
        let weight = self.fold_slow_run(run);
        if took > policy.hard_limit() || weight > f64::from(SLOW_WINDOW) * DEMOTE_SLOW_SHARE {
            return self.demote(took, policy);
        }
        Change::None
    }

    /// Adds the slow run numbered `run` to the decaying weight of recent
    /// slow runs, and returns the new weight: the weight so far decays by
    /// the runs since the last slow one (short runs touch nothing, so they
    /// cost nothing), and this one adds 1. Over a long stretch it
    /// approaches [`SLOW_WINDOW`] times the share of slow runs. Racing
    /// updates may lose one another's slow run: it is an estimate.
    fn fold_slow_run(&self, run: u64) -> f64 {
        let last = self.last_slow.swap(run, Ordering::Relaxed);
        // Past 2^32 runs since the last slow one, the weight is gone anyway.
        let since = f64::from(u32::try_from(run.saturating_sub(last)).unwrap_or(u32::MAX));
        let before = f64::from_bits(self.slow_weight.load(Ordering::Relaxed));
        let weight = before * (-since / f64::from(SLOW_WINDOW)).exp() + 1.0;
        self.slow_weight.store(weight.to_bits(), Ordering::Relaxed);
        weight
    }

    /// Counts an inline run the watchdog has judged already.
    pub(crate) fn count_inline_run(&self) {
        self.inline_runs.fetch_add(1, Ordering::Relaxed);
    }

    /// Demotes the code after too many runs over the budget, or one over
    /// the hard limit (seen ended, or still running by the watchdog): its
    /// warm-up starts again, doubled unless it had a stable stretch inline,
    /// and the [`BAR_AFTER_DEMOTIONS`]th demotion in a row bars it. Nothing
    /// if it is not inline (the other side — the run's end or the watchdog
    /// — was first).
    pub(crate) fn demote(&self, took: Duration, policy: &TierPolicy) -> Change {
        if !self.inline.swap(false, Ordering::Relaxed) {
            return Change::None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.demotions.fetch_add(1, Ordering::Relaxed);
        let base = policy.warm_up.max(1);
        let needed = self.needed.load(Ordering::Relaxed);
        let since_promotion = self
            .inline_runs
            .load(Ordering::Relaxed)
            .saturating_sub(self.promoted_at.load(Ordering::Relaxed));
        let (warm_up, strikes) = if since_promotion >= STABLE_FACTOR * u64::from(needed) {
            // A stable stretch forgives the demotions before it: this one
            // is the first of a new series.
            (base, 1)
        } else {
            (
                needed.saturating_mul(2),
                self.strikes.load(Ordering::Relaxed).saturating_add(1),
            )
        };
        self.strikes.store(strikes, Ordering::Relaxed);
        self.needed.store(warm_up, Ordering::Relaxed);
        if strikes >= BAR_AFTER_DEMOTIONS {
            self.barred.store(true, Ordering::Relaxed);
            return Change::Barred { took };
        }
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
/// with its table, and one for its instance constructor. Made by
/// [`Bound::profile`], whose cap and watchdog its inline calls are under.
#[derive(Debug)]
pub struct PluginProfile {
    /// Per function.
    pub functions: Box<[Profile]>,
    /// The instance constructor.
    pub constructor: Profile,
    /// For the watchdog's log lines: the plugin's name and its functions'.
    plugin: Box<str>,
    names: Box<[Box<str>]>,
    /// Its number in `bound`, which names it in a seat's owner word.
    serial: u32,
    bound: Arc<Bound>,
}

impl PluginProfile {
    /// All its functions' counters, summed.
    pub fn counts(&self) -> TierCounts {
        let mut sum = TierCounts::default();
        for p in self.functions.iter() {
            sum += p.counts();
        }
        sum
    }

    /// The profile of `code`.
    pub fn of(&self, code: Code) -> &Profile {
        match code {
            Code::Function(i) => &self.functions[i],
            Code::Constructor => &self.constructor,
        }
    }

    /// A seat for an inline run of `code`, if the cap allows one now.
    /// Whether the code is promoted is the caller's to check.
    #[inline]
    pub(crate) fn seat(&self, code: Code) -> Option<Seat<&Bound>> {
        self.bound.seat(self.serial, code)
    }

    fn name_of(&self, code: Code) -> &str {
        match code {
            Code::Function(i) => self.names.get(i).map_or("?", |n| n),
            Code::Constructor => "constructor",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const POLICY: TierPolicy = TierPolicy {
        budget: Duration::from_micros(100),
        warm_up: 4,
    };
    const SHORT: Duration = Duration::from_micros(10);
    /// Over the budget, under the hard limit: a preempted short run, or a
    /// function a little too slow.
    const SLOW: Duration = Duration::from_micros(150);
    /// Over the hard limit: a stuck or long run.
    const HUNG: Duration = Duration::from_millis(20);

    #[test]
    fn the_hard_limit_is_twenty_budgets_at_least_ten_milliseconds_at_most_ten_over() {
        let with_budget = |budget| TierPolicy { budget, ..POLICY }.hard_limit();
        assert_eq!(POLICY.hard_limit(), Duration::from_millis(10));
        assert_eq!(
            with_budget(Duration::from_micros(10)),
            Duration::from_millis(10)
        );
        assert_eq!(
            with_budget(Duration::from_micros(600)),
            Duration::from_millis(10) + Duration::from_micros(600),
            "twenty budgets would be 12 ms: ten over"
        );
        assert_eq!(
            with_budget(Duration::from_millis(1)),
            Duration::from_millis(11)
        );
        assert_eq!(
            with_budget(Duration::from_millis(50)),
            Duration::from_millis(60),
            "a large budget's limit is ten milliseconds over it, not a second"
        );
        assert_eq!(with_budget(Duration::MAX), Duration::MAX);
        assert!(POLICY.budget < SLOW && SLOW < POLICY.hard_limit() && POLICY.hard_limit() < HUNG);
    }

    #[test]
    fn promoted_after_a_short_warm_up_and_demoted_at_once_over_the_hard_limit() {
        let p = Profile::new(false, &POLICY);
        for _ in 0..3 {
            assert_eq!(p.off_worker_run(SHORT, &POLICY), Change::None);
        }
        assert_eq!(p.tier(), Tier::OffWorker);
        assert_eq!(p.off_worker_run(SHORT, &POLICY), Change::Promoted);
        assert_eq!(p.tier(), Tier::Inline);
        assert_eq!(p.inline_run(SHORT, &POLICY), Change::None);
        assert_eq!(
            p.inline_run(HUNG, &POLICY),
            Change::Demoted {
                warm_up: 8,
                took: HUNG
            },
            "one run over the hard limit demotes, and the next warm-up is twice as long"
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
    fn isolated_slow_runs_never_demote() {
        let p = Profile::new(false, &POLICY);
        promote(&p);
        // One preempted run in a thousand...
        for run in 0..5_000u32 {
            let took = if run % 1_000 == 999 { SLOW } else { SHORT };
            assert_eq!(p.inline_run(took, &POLICY), Change::None, "run {run}");
        }
        // ...or two close together...
        for run in 0..5_000u32 {
            let took = if run % 1_000 == 0 || run % 1_000 == 7 {
                SLOW
            } else {
                SHORT
            };
            assert_eq!(p.inline_run(took, &POLICY), Change::None, "run {run}");
        }
        // ...or even one in two hundred, spread out: its p99 is within the
        // budget.
        for run in 0..20_000u32 {
            let took = if run % 200 == 199 { SLOW } else { SHORT };
            assert_eq!(p.inline_run(took, &POLICY), Change::None, "run {run}");
        }
        assert!(p.is_inline());
        let c = p.counts();
        assert_eq!((c.promotions, c.demotions, c.inline_runs), (1, 0, 30_000));
    }

    #[test]
    fn a_function_a_little_over_the_budget_every_run_is_demoted_in_five_runs() {
        let p = Profile::new(false, &POLICY);
        promote(&p);
        for run in 1..5 {
            assert_eq!(p.inline_run(SLOW, &POLICY), Change::None, "run {run}");
        }
        assert_eq!(
            p.inline_run(SLOW, &POLICY),
            Change::Demoted {
                warm_up: 8,
                took: SLOW
            }
        );
        // Promoted again, it starts with a clean slate: the slow runs that
        // demoted it do not count against it...
        promote(&p);
        for run in 1..5 {
            assert_eq!(p.inline_run(SLOW, &POLICY), Change::None, "run {run}");
        }
        // ...but the same pattern demotes it the same way.
        assert_eq!(
            p.inline_run(SLOW, &POLICY),
            Change::Demoted {
                warm_up: 16,
                took: SLOW
            }
        );
        // A long clean history does not shield a function that turns slow.
        let q = Profile::new(false, &POLICY);
        promote(&q);
        for _ in 0..100_000 {
            q.inline_run(SHORT, &POLICY);
        }
        let mut runs = 0;
        while q.inline_run(SLOW, &POLICY) == Change::None {
            runs += 1;
            assert!(runs < 5, "still inline after {runs} slow runs in a row");
        }
        assert!(!q.is_inline());
    }

    #[test]
    fn a_function_slow_in_two_percent_of_its_runs_is_demoted() {
        let p = Profile::new(false, &POLICY);
        promote(&p);
        let mut demoted = None;
        for run in 0..2_000u32 {
            let took = if run % 50 == 49 { SLOW } else { SHORT };
            if p.inline_run(took, &POLICY) != Change::None {
                demoted = Some(run);
                break;
            }
        }
        // The sixth slow run: the estimate needs a few to be sure.
        assert_eq!(demoted, Some(6 * 50 - 1));
        assert_eq!(p.tier(), Tier::OffWorker);
    }

    #[test]
    fn a_slow_run_restarts_the_warm_up() {
        let p = Profile::new(false, &POLICY);
        for _ in 0..3 {
            p.off_worker_run(SHORT, &POLICY);
        }
        p.off_worker_run(SLOW, &POLICY);
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
        p.inline_run(HUNG, &POLICY);
        while p.off_worker_run(SHORT, &POLICY) != Change::Promoted {}
        assert_eq!(
            p.inline_run(HUNG, &POLICY),
            Change::Demoted {
                warm_up: 16,
                took: HUNG
            }
        );
        while p.off_worker_run(SHORT, &POLICY) != Change::Promoted {}
        // ...but after a long stable stretch inline, a demotion (a rare
        // cluster of preemptions, say) costs only the configured warm-up.
        for _ in 0..STABLE_FACTOR * 16 {
            p.inline_run(SHORT, &POLICY);
        }
        assert_eq!(
            p.inline_run(HUNG, &POLICY),
            Change::Demoted {
                warm_up: POLICY.warm_up,
                took: HUNG
            }
        );
    }

    #[test]
    fn each_demotion_in_a_row_doubles_the_warm_up_until_the_bar() {
        let p = Profile::new(false, &POLICY);
        let mut changes = Vec::new();
        for _ in 0..BAR_AFTER_DEMOTIONS {
            promote(&p);
            changes.push(p.inline_run(HUNG, &POLICY));
        }
        let demoted = |factor: u32| Change::Demoted {
            warm_up: POLICY.warm_up * factor,
            took: HUNG,
        };
        assert_eq!(
            changes,
            [
                demoted(2),
                demoted(4),
                demoted(8),
                Change::Barred { took: HUNG }
            ]
        );
    }

    /// A plugin profile with one function, `f`, under `bound`.
    fn plugin(bound: &Bound) -> Arc<PluginProfile> {
        bound.profile("p", [("f", false)])
    }

    /// Promotes `p` with short off-worker runs.
    fn promote(p: &Profile) {
        for _ in 0..10_000 {
            if p.off_worker_run(SHORT, &POLICY) == Change::Promoted {
                return;
            }
        }
        panic!("never promoted");
    }

    /// Runs `code` inline in a seat, past the hard limit, and lets the
    /// watchdog look at it while it runs; returns what its end changed.
    fn overrun(bound: &Bound, plugin: &PluginProfile, code: Code) -> Change {
        let seat = plugin.seat(code).expect("a free seat");
        let started = Instant::now();
        seat.begin(started);
        let mut seen = Vec::new();
        assert!(
            bound.scan(started, &mut seen),
            "a call in flight is activity"
        );
        assert!(plugin.of(code).is_inline(), "within the budget so far");
        bound.scan(started + SLOW, &mut seen);
        assert!(
            plugin.of(code).is_inline(),
            "over the budget but not the hard limit: it may only be preempted"
        );
        bound.scan(started + HUNG, &mut seen);
        assert!(!plugin.of(code).is_inline(), "demoted while it still runs");
        seat.end(plugin.of(code), HUNG, &POLICY)
    }

    #[test]
    fn the_watchdog_demotes_a_call_while_it_runs_and_its_end_does_not_again() {
        let bound = Bound::with_capacity(POLICY, 1, false);
        let plugin = plugin(&bound);
        let f = &plugin.functions[0];
        promote(f);
        assert_eq!(
            overrun(&bound, &plugin, Code::Function(0)),
            Change::None,
            "the watchdog demoted it already"
        );
        let c = f.counts();
        assert_eq!((c.promotions, c.demotions, c.inline_runs), (1, 1, 1));
        // Not promoted again without a fresh warm-up, twice as long.
        for _ in 0..2 * POLICY.warm_up - 1 {
            assert_eq!(f.off_worker_run(SHORT, &POLICY), Change::None);
        }
        assert_eq!(f.off_worker_run(SHORT, &POLICY), Change::Promoted);
        // The constructor is watched the same way.
        promote(&plugin.constructor);
        overrun(&bound, &plugin, Code::Constructor);
        assert_eq!(plugin.constructor.tier(), Tier::OffWorker);
        assert_eq!(f.tier(), Tier::Inline, "the function's profile is its own");
    }

    #[test]
    fn the_watchdog_leaves_a_call_under_the_hard_limit_to_its_end() {
        let bound = Bound::with_capacity(POLICY, 1, false);
        let plugin = plugin(&bound);
        let f = &plugin.functions[0];
        promote(f);
        let limit = POLICY.hard_limit();
        let almost = limit - Duration::from_micros(1);
        let mut seen = Vec::new();
        // Calls over the budget but under the hard limit while they run
        // are judged when they end, together: one is not demoted...
        let seat = plugin.seat(Code::Function(0)).unwrap();
        let started = Instant::now();
        seat.begin(started);
        bound.scan(started + SLOW, &mut seen);
        assert!(
            bound.scan(started + almost, &mut seen),
            "a call it has not judged keeps it watching"
        );
        assert!(f.is_inline(), "not demoted while under the hard limit");
        assert_eq!(seat.end(f, almost, &POLICY), Change::None);
        // ...five in a row are.
        let mut ends = Vec::new();
        for _ in 0..4 {
            let seat = plugin.seat(Code::Function(0)).unwrap();
            let started = Instant::now();
            seat.begin(started);
            bound.scan(started + almost, &mut seen);
            assert!(f.is_inline());
            ends.push(seat.end(f, SLOW, &POLICY));
        }
        assert_eq!(
            ends,
            [
                Change::None,
                Change::None,
                Change::None,
                Change::Demoted {
                    warm_up: 8,
                    took: SLOW
                }
            ]
        );
        // A call past the hard limit is demoted while it runs, and then
        // no longer keeps the watchdog awake.
        promote(f);
        let seat = plugin.seat(Code::Function(0)).unwrap();
        let started = Instant::now();
        seat.begin(started);
        assert!(bound.scan(started + almost, &mut seen));
        assert!(f.is_inline());
        bound.scan(started + limit + Duration::from_micros(1), &mut seen);
        assert!(!f.is_inline(), "demoted past the hard limit");
        assert!(!bound.scan(started + HUNG, &mut seen), "judged already");
        assert_eq!(seat.end(f, HUNG, &POLICY), Change::None);
        let c = f.counts();
        assert_eq!((c.promotions, c.demotions, c.inline_runs), (2, 2, 6));
    }

    #[test]
    fn repeated_demotions_bar_the_code_for_good() {
        let bound = Bound::with_capacity(POLICY, 1, false);
        let plugin = plugin(&bound);
        let f = &plugin.functions[0];
        for n in 1..=BAR_AFTER_DEMOTIONS {
            promote(f);
            let seat = plugin.seat(Code::Function(0)).unwrap();
            let started = Instant::now();
            seat.begin(started);
            bound.scan(started + HUNG, &mut Vec::new());
            seat.end(f, HUNG, &POLICY);
            assert_eq!(f.is_barred(), n == BAR_AFTER_DEMOTIONS, "after {n}");
        }
        for _ in 0..10_000 {
            assert_eq!(f.off_worker_run(SHORT, &POLICY), Change::None);
        }
        assert_eq!(f.tier(), Tier::OffWorker);
        assert_eq!(
            f.counts().promotions,
            u64::from(BAR_AFTER_DEMOTIONS),
            "never promoted again"
        );
        // The run that ends over the hard limit bars the same way...
        let g = Profile::new(false, &POLICY);
        let mut last = Change::None;
        for _ in 0..BAR_AFTER_DEMOTIONS {
            promote(&g);
            last = g.inline_run(HUNG, &POLICY);
        }
        assert_eq!(last, Change::Barred { took: HUNG });
        // ...and so do runs that end over the budget too often.
        let h = Profile::new(false, &POLICY);
        for _ in 0..BAR_AFTER_DEMOTIONS {
            promote(&h);
            while h.is_inline() {
                last = h.inline_run(SLOW, &POLICY);
            }
        }
        assert_eq!(last, Change::Barred { took: SLOW });
    }

    #[test]
    fn a_stable_stretch_forgives_earlier_demotions() {
        let p = Profile::new(false, &POLICY);
        for _ in 0..BAR_AFTER_DEMOTIONS - 1 {
            promote(&p);
            p.inline_run(HUNG, &POLICY);
        }
        promote(&p);
        let needed = POLICY.warm_up * 8;
        for _ in 0..STABLE_FACTOR * u64::from(needed) {
            p.inline_run(SHORT, &POLICY);
        }
        assert_eq!(
            p.inline_run(HUNG, &POLICY),
            Change::Demoted {
                warm_up: POLICY.warm_up,
                took: HUNG
            }
        );
        assert!(!p.is_barred());
        for _ in 0..BAR_AFTER_DEMOTIONS - 2 {
            promote(&p);
            p.inline_run(HUNG, &POLICY);
        }
        assert!(!p.is_barred(), "the series started over");
        promote(&p);
        assert_eq!(p.inline_run(HUNG, &POLICY), Change::Barred { took: HUNG });
    }

    #[test]
    fn the_cap_bounds_inline_calls_in_flight() {
        let bound = Bound::with_capacity(POLICY, 2, false);
        let plugin = plugin(&bound);
        let a = plugin.seat(Code::Function(0)).unwrap();
        let b = plugin.seat(Code::Constructor).unwrap();
        assert!(
            plugin.seat(Code::Function(0)).is_none(),
            "the cap is reached"
        );
        assert_eq!(bound.in_flight(), 2);
        drop(a);
        let c = plugin.seat(Code::Function(0)).expect("a seat was freed");
        assert_eq!(b.end(&plugin.constructor, SHORT, &POLICY), Change::None);
        let detached = c.detach();
        assert_eq!(bound.in_flight(), 1, "a detached seat is the same seat");
        drop(detached);
        assert_eq!(bound.in_flight(), 0);
    }

    #[test]
    fn the_cap_is_one_less_than_the_runtime_workers() {
        let seats_on = |runtime: tokio::runtime::Runtime| {
            let bound = Bound::new(POLICY);
            let plugin = plugin(&bound);
            runtime.block_on(async {
                let mut held = Vec::new();
                while let Some(seat) = plugin.seat(Code::Function(0)) {
                    held.push(seat);
                }
                assert_eq!(Some(held.len()), bound.capacity());
                held.len()
            })
        };
        let multi = |workers| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .build()
                .unwrap()
        };
        assert_eq!(seats_on(multi(3)), 2);
        assert_eq!(seats_on(multi(1)), 0, "a single worker runs nothing inline");
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(seats_on(current), 0);
        // Outside any runtime: no seat, and nothing fixed yet.
        let bound = Bound::new(POLICY);
        assert!(plugin(&bound).seat(Code::Function(0)).is_none());
        assert_eq!(bound.capacity(), None);
    }

    #[test]
    fn the_watchdog_thread_demotes_a_stuck_call_and_then_parks() {
        // Generous bounds that only a hang reaches.
        const GIVE_UP: Duration = Duration::from_secs(60);
        let bound = Bound::with_capacity(POLICY, 1, true);
        let plugin = plugin(&bound);
        let f = &plugin.functions[0];
        promote(f);
        let seat = plugin.seat(Code::Function(0)).unwrap();
        // Began long enough ago to be past the hard limit at the first look.
        let started = Instant::now();
        seat.begin(started.checked_sub(HUNG).unwrap_or(started));
        let waiting = Instant::now();
        while f.is_inline() {
            assert!(waiting.elapsed() < GIVE_UP, "the watchdog never looked");
            std::thread::yield_now();
        }
        // A call it has judged does not keep it awake, however long it
        // runs on.
        while !bound.watchdog_parked() {
            assert!(waiting.elapsed() < GIVE_UP, "the watchdog never parked");
            std::thread::yield_now();
        }
        assert_eq!(bound.in_flight(), 1);
        assert_eq!(seat.end(f, HUNG, &POLICY), Change::None);
        assert_eq!(f.counts().demotions, 1);
        // A call wakes it (it parks for good otherwise): the demotion
        // shows it looked.
        promote(f);
        let seat = plugin.seat(Code::Function(0)).unwrap();
        seat.begin(started.checked_sub(HUNG).unwrap_or(started));
        while f.is_inline() {
            assert!(waiting.elapsed() < GIVE_UP, "the call did not wake it");
            std::thread::yield_now();
        }
        drop(seat);
    }
}
