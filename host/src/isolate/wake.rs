//! Waiting for the other side of a channel: spin while it is running on
//! another CPU, sleep on a futex otherwise.
//!
//! A round trip through shared memory takes well under a microsecond when
//! both sides are running on CPUs of their own and spin; a futex sleep and
//! wake costs several microseconds more. But spinning while the peer is
//! *not* running — it sleeps, or it waits for the very CPU the spinner
//! holds — only burns the time the peer needs: on a busy two-CPU machine
//! that made a round trip a hundred times slower than sleeping at once. So
//! each side publishes whether it is awake and on which CPU, and a waiter
//! spins only while its peer is awake on another CPU, for at most a budget
//! that adapts to how often spinning paid off (BENCHMARKS.md, P7, has the
//! figures the bounds come from).
//!
//! The sleep is the classic futex protocol: the waiter announces it sleeps
//! (`SeqCst`), looks at the counter once more, and sleeps only if it is
//! still the value it saw; the poster bumps the counter (`SeqCst`) and
//! wakes the futex only if the waiter announced it sleeps. Either the
//! waiter sees the new value, or the poster sees the announcement.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::futex;

use super::shm::{Channel, Word};

/// A side is awake (working, or spinning).
const AWAKE: u32 = 0;
/// A side sleeps on the futex.
const ASLEEP: u32 = 1;

/// The longest spin. Past a few tens of microseconds a futex sleep costs
/// less than the CPU the spin takes from everyone else.
const MAX_SPIN: Duration = Duration::from_micros(50);
/// Where the budget starts, and what it returns to after giving up.
const START_SPIN: Duration = Duration::from_micros(20);
/// Sleeps in a row after which the budget, shrunk to nothing, gets a try again.
const RETRY_AFTER_SLEEPS: u32 = 64;

/// Waits in this process that ended while spinning, and that slept.
static SPUN: AtomicU64 = AtomicU64::new(0);
static SLEPT: AtomicU64 = AtomicU64::new(0);

/// How this process's waits on its peers ended so far: `(spun, slept)`.
pub fn counts() -> (u64, u64) {
    (SPUN.load(Ordering::Relaxed), SLEPT.load(Ordering::Relaxed))
}

/// Which side of the channel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host, waiting for a worker.
    Host,
    /// A worker, waiting for the host.
    Worker,
}

impl Side {
    /// The counter this side waits on, its state and CPU, the peer's.
    fn words(self) -> (Word, Word, Word, Word, Word) {
        match self {
            Side::Host => (
                Word::ToHost,
                Word::HostState,
                Word::HostCpu,
                Word::WorkerState,
                Word::WorkerCpu,
            ),
            Side::Worker => (
                Word::ToWorker,
                Word::WorkerState,
                Word::WorkerCpu,
                Word::HostState,
                Word::HostCpu,
            ),
        }
    }

    /// The counter the peer waits on.
    fn peer_counter(self) -> Word {
        match self {
            Side::Host => Word::ToWorker,
            Side::Worker => Word::ToHost,
        }
    }
}

/// How long this side spins before it sleeps, adapted to what spinning has
/// bought lately.
#[derive(Debug)]
pub struct SpinBudget {
    spin: Duration,
    sleeps: u32,
    /// False on a machine where spinning cannot pay off: it stays at zero.
    enabled: bool,
}

impl Default for SpinBudget {
    fn default() -> Self {
        SpinBudget {
            spin: START_SPIN,
            sleeps: 0,
            enabled: true,
        }
    }
}

impl SpinBudget {
    /// The budget for this machine: none with one CPU, where a spin only
    /// takes the time the peer needs.
    pub fn for_this_machine() -> Self {
        if spinning_helps() {
            SpinBudget::default()
        } else {
            SpinBudget::never()
        }
    }

    /// A budget that never spins (a machine with one CPU).
    pub fn never() -> Self {
        SpinBudget {
            spin: Duration::ZERO,
            sleeps: 0,
            enabled: false,
        }
    }

    fn paid_off(&mut self) {
        SPUN.fetch_add(1, Ordering::Relaxed);
        self.sleeps = 0;
        self.spin = (self.spin * 2).clamp(START_SPIN, MAX_SPIN);
    }

    fn gave_up(&mut self) {
        SLEPT.fetch_add(1, Ordering::Relaxed);
        self.sleeps += 1;
        if !self.enabled {
            return;
        }
        if self.sleeps >= RETRY_AFTER_SLEEPS {
            self.sleeps = 0;
            self.spin = START_SPIN;
        } else {
            self.spin /= 2;
        }
    }
}

/// Whether spinning can pay off on this machine at all.
pub fn spinning_helps() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// Posts a message to the peer: bumps its counter, and wakes it if it
/// sleeps. A peer being woken is marked awake at once: it will be running
/// in a moment (on the CPU it last ran on, when that one is free), and a
/// poster that now waits for its answer may spin for it instead of taking
/// the stale "asleep" for "away" — else each side would sleep because the
/// other did, and every call would pay two futex round trips.
pub fn post(channel: &Channel, side: Side) {
    let (_, _, _, peer_state, _) = side.words();
    let counter = channel.word(side.peer_counter());
    counter.fetch_add(1, Ordering::SeqCst);
    if channel.word(peer_state).swap(AWAKE, Ordering::SeqCst) == ASLEEP {
        // An error here (EFAULT cannot happen on a live mapping) would only
        // mean nobody was woken; the waiter's own timeout covers that.
        let _ = futex::wake(counter, futex::Flags::empty(), 1);
    }
}

/// Wakes whoever of this side sleeps on its counter (a worker's death is
/// announced this way: the host's waiter wakes up and looks).
pub fn wake_waiter(channel: &Channel, side: Side) {
    let (counter, ..) = side.words();
    let _ = futex::wake(
        channel.word(counter),
        futex::Flags::empty(),
        i32::MAX as u32,
    );
}

/// The counter this side waits on, now.
pub fn current(channel: &Channel, side: Side) -> u32 {
    channel.word(side.words().0).load(Ordering::Acquire)
}

/// Waits until this side's counter is no longer `seen`, for at most
/// `timeout`; `None` when it ran out. `interrupted` is looked at between
/// sleeps of at most `slice`, and ends the wait early (`None`) when true.
pub fn wait(
    channel: &Channel,
    side: Side,
    seen: u32,
    budget: &mut SpinBudget,
    timeout: Option<Duration>,
    interrupted: &dyn Fn() -> bool,
    slice: Duration,
) -> Option<u32> {
    let started = Instant::now();
    spin_for(channel, side, seen, budget)
        .or_else(|| sleep_for(channel, side, seen, started, timeout, interrupted, slice))
}

/// The spinning half of [`wait`]: `Some` when the counter moved while
/// this side spun (only while its peer is awake on another CPU, for at
/// most the budget).
pub fn spin_for(channel: &Channel, side: Side, seen: u32, budget: &mut SpinBudget) -> Option<u32> {
    let (counter, _, my_cpu, peer_state, peer_cpu) = side.words();
    spin(
        channel,
        channel.word(counter),
        seen,
        budget,
        (my_cpu, peer_state, peer_cpu),
        Instant::now(),
    )
}

/// The sleeping half of [`wait`], for a wait that began at `started`.
pub fn sleep_for(
    channel: &Channel,
    side: Side,
    seen: u32,
    started: Instant,
    timeout: Option<Duration>,
    interrupted: &dyn Fn() -> bool,
    slice: Duration,
) -> Option<u32> {
    let (counter, mine, ..) = side.words();
    let counter = channel.word(counter);
    let state = channel.word(mine);
    state.store(ASLEEP, Ordering::SeqCst);
    let outcome = loop {
        let value = counter.load(Ordering::SeqCst);
        if value != seen {
            break Some(value);
        }
        if interrupted() {
            break None;
        }
        let mut nap = slice;
        if let Some(timeout) = timeout {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break None;
            }
            nap = nap.min(left);
        }
        let nap = rustix::thread::futex::Timespec {
            tv_sec: i64::try_from(nap.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(nap.subsec_nanos()),
        };
        // EAGAIN (the value changed), EINTR and ETIMEDOUT all mean: look again.
        let _ = futex::wait(counter, futex::Flags::empty(), seen, Some(&nap));
    };
    state.store(AWAKE, Ordering::SeqCst);
    outcome
}

/// The spinning phase: `Some` when the counter moved while spinning.
fn spin(
    channel: &Channel,
    counter: &AtomicU32,
    seen: u32,
    budget: &mut SpinBudget,
    (my_cpu, peer_state, peer_cpu): (Word, Word, Word),
    started: Instant,
) -> Option<u32> {
    let cpu = u32::try_from(rustix::thread::sched_getcpu()).unwrap_or(u32::MAX);
    channel.word(my_cpu).store(cpu, Ordering::Relaxed);
    if budget.spin.is_zero() {
        budget.gave_up();
        return None;
    }
    let mut turns = 0u32;
    loop {
        let value = counter.load(Ordering::Acquire);
        if value != seen {
            budget.paid_off();
            return Some(value);
        }
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(64) {
            // The peer is asleep, or wants this very CPU: spinning only
            // delays it.
            let peer_away = channel.word(peer_state).load(Ordering::Relaxed) == ASLEEP
                || channel.word(peer_cpu).load(Ordering::Relaxed) == cpu;
            if peer_away || started.elapsed() >= budget.spin {
                budget.gave_up();
                return None;
            }
        }
        std::hint::spin_loop();
    }
}
