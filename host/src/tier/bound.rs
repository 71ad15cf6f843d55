//! The inline tier's bound: how many inline calls may run at once, and the
//! watchdog that notices one running past the hard limit while it runs.
//!
//! Both live in one array of seats, one per inline call the cap allows.
//! A call claims a seat (one compare-and-swap on its owner word), writes
//! when it began, and clears both when it ends: a few atomics per call, no
//! lock. A call that finds every seat taken runs on the pooled path
//! instead, so at most (runtime workers − 1) runtime workers are ever
//! inside plugin code.
//!
//! There is one watchdog thread per [`Bound`], that is per
//! [`crate::Host`]: a host's seats, budget and workers are its own, a
//! process may hold several hosts (on different runtimes, as the tests
//! do), and a thread that belongs to one host ends with it, so nothing
//! outlives what it watches. The thread starts with the first inline call
//! of a host that can run any, looks at the seats every [`WATCH_TICK`]
//! while inline calls come and go, and parks after
//! [`PARK_AFTER_IDLE_TICKS`] ticks without any: an idle server is never
//! woken. The call that finds it parked unparks it (one load of a flag
//! otherwise).
//!
//! The watchdog demotes a call's code only once the call has run past the
//! policy's hard limit ([`TierPolicy::hard_limit`]), not its budget: run
//! time is wall-clock time, and a short call whose thread was preempted
//! looks like a slow one for a scheduler slice or so. Such a call is left
//! to end, and its run time is judged with the code's other runs
//! ([`Profile::inline_run`]); only one still running past the hard limit,
//! which a preemption rarely reaches, is stuck or long enough to stop
//! further inline calls without waiting for it. A call the watchdog has
//! demoted is marked `OVERRAN`, so its end does not judge it again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{Change, PluginProfile, Profile, TierPolicy};

/// How often the watchdog looks at the inline calls in flight, while there
/// are any. It bounds how long a call goes unnoticed beyond the hard limit,
/// and costs a wake-up per tick only while calls run inline.
pub const WATCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without an inline call after which the watchdog parks (~100 ms):
/// long enough that a steady trickle of calls does not pay an unpark each,
/// short enough that an idle server is left alone.
pub const PARK_AFTER_IDLE_TICKS: u32 = 100;

/// In a seat's start word: a call holds the seat and is running.
const BUSY: u64 = 1 << 63;
/// In a seat's start word: the watchdog demoted this call's code already
/// (the call ran past the hard limit), so its end counts the run and
/// judges nothing.
const OVERRAN: u64 = 1 << 62;
/// In a seat's start word: when the call began, in ns since `Bound::epoch`.
const NANOS: u64 = OVERRAN - 1;
/// In a seat's owner word: the code is the plugin's constructor.
const CONSTRUCTOR: u64 = u32::MAX as u64;

/// Which code of a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The function at this index of the plugin's table.
    Function(usize),
    /// The instance constructor.
    Constructor,
}

/// The inline tier's cap and watchdog for one host.
pub struct Bound {
    policy: TierPolicy,
    /// What seats' start times count from.
    epoch: Instant,
    /// Itself, for the watchdog thread (which must not keep it alive) and
    /// for seats that outlive a borrow of it.
    me: Weak<Bound>,
    /// Fixed at first use: the runtime's workers decide how many.
    seats: OnceLock<Seats>,
    /// The watchdog is parked, or about to: a call that begins must wake it.
    parked: AtomicBool,
    /// Profiles by serial, for the watchdog to find the code a seat runs.
    profiles: Mutex<Vec<Weak<PluginProfile>>>,
}

struct Seats {
    slots: Box<[Slot]>,
    watchdog: Option<Thread>,
}

/// One inline call's place, on a cache line of its own: seats are written
/// by different workers.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    /// 0: free. Else who holds it: (profile serial + 1) << 32 | code.
    owner: AtomicU64,
    /// [`BUSY`] | [`OVERRAN`] | start nanos. The nanos stay after the call
    /// ends, so the watchdog sees that the seat was used since its last look.
    start: AtomicU64,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("budget", &self.policy.budget)
            .field("capacity", &self.seats.get().map(|s| s.slots.len()))
            .field("parked", &self.parked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The bound of a host with `policy`. Its capacity is read from the
    /// runtime of its first inline call.
    pub fn new(policy: TierPolicy) -> Arc<Bound> {
        Arc::new_cyclic(|me| Bound {
            policy,
            epoch: Instant::now(),
            me: me.clone(),
            seats: OnceLock::new(),
            parked: AtomicBool::new(false),
            profiles: Mutex::default(),
        })
    }

    /// A bound of `capacity` seats whatever the runtime, watched by a
    /// watchdog thread if `watched`.
    #[cfg(test)]
    pub(crate) fn with_capacity(policy: TierPolicy, capacity: usize, watched: bool) -> Arc<Bound> {
        let bound = Bound::new(policy);
        bound
            .seats
            .get_or_init(|| bound.make_seats(capacity, watched));
        bound
    }

    /// Fresh profiles for `plugin`, whose functions are `(name, blocking)`,
    /// index for index with its table; their inline calls are under this
    /// bound.
    pub fn profile<'a>(
        &self,
        plugin: &str,
        functions: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Arc<PluginProfile> {
        let (names, functions): (Vec<Box<str>>, Vec<Profile>) = functions
            .into_iter()
            .map(|(name, blocking)| (Box::from(name), Profile::new(blocking, &self.policy)))
            .unzip();
        let mut profiles = self.profiles.lock().unwrap_or_else(PoisonError::into_inner);
        // Below `u32::MAX`, so that `serial + 1` fits an owner word's high half.
        let serial = u32::try_from(profiles.len())
            .ok()
            .filter(|s| *s < u32::MAX)
            .expect("fewer than 2^32 - 1 plugins per host");
        let profile = Arc::new(PluginProfile {
            functions: functions.into_boxed_slice(),
            constructor: Profile::new(false, &self.policy),
            plugin: Box::from(plugin),
            names: names.into_boxed_slice(),
            serial,
            bound: self.me.upgrade().expect("a bound is alive while used"),
        });
        profiles.push(Arc::downgrade(&profile));
        profile
    }

    /// How many inline calls may run at once: `None` until the first
    /// inline call fixed it.
    pub fn capacity(&self) -> Option<usize> {
        self.seats.get().map(|s| s.slots.len())
    }

    /// Inline calls holding a seat now.
    pub fn in_flight(&self) -> usize {
        self.seats.get().map_or(0, |s| {
            s.slots
                .iter()
                .filter(|slot| slot.owner.load(Ordering::Relaxed) != 0)
                .count()
        })
    }

    /// Whether the watchdog is parked (no inline call for a while).
    pub fn watchdog_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// The seats, made at first use from the current runtime: one fewer
    /// than its workers, none on a current-thread runtime. Outside any
    /// runtime there are none, and nothing is fixed yet.
    #[inline]
    fn seats(&self) -> Option<&Seats> {
        if let Some(seats) = self.seats.get() {
            return Some(seats);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let workers = match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => runtime.metrics().num_workers(),
            _ => 1,
        };
        Some(
            self.seats
                .get_or_init(|| self.make_seats(workers.saturating_sub(1), true)),
        )
    }

    fn make_seats(&self, capacity: usize, watched: bool) -> Seats {
        let slots: Box<[Slot]> = (0..capacity).map(|_| Slot::default()).collect();
        if capacity == 0 || !watched {
            return Seats {
                slots,
                watchdog: None,
            };
        }
        let me = self.me.clone();
        match thread::Builder::new()
            .name("inline-watchdog".into())
            .spawn(move || watch(&me))
        {
            Ok(handle) => Seats {
                slots,
                watchdog: Some(handle.thread().clone()),
            },
            Err(e) => {
                // Unwatched inline calls could stall a worker unnoticed.
                tracing::warn!(error = %e, "no watchdog thread for the inline tier: it is off");
                Seats {
                    slots: Box::default(),
                    watchdog: None,
                }
            }
        }
    }

    /// Claims a seat for a run of `code` of the profile numbered `serial`.
    #[inline]
    pub(super) fn seat(&self, serial: u32, code: Code) -> Option<Seat<&Bound>> {
        let code = match code {
            Code::Function(i) => u64::try_from(i).ok().filter(|i| *i < CONSTRUCTOR)?,
            Code::Constructor => CONSTRUCTOR,
        };
        let owner = (u64::from(serial) + 1) << 32 | code;
        let slots = &self.seats()?.slots;
        for (index, slot) in slots.iter().enumerate() {
            // Acquire: the seat's last holder cleared its start word first.
            if slot.owner.load(Ordering::Relaxed) == 0
                && slot
                    .owner
                    .compare_exchange(0, owner, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(Seat {
                    bound: self,
                    index: Some(index),
                });
            }
        }
        None
    }

    fn slot(&self, index: usize) -> &Slot {
        &self.seats.get().expect("a seat was claimed").slots[index]
    }

    /// Marks the seat's call as running since `started`, and wakes the
    /// watchdog if it is parked.
    #[inline]
    fn begin(&self, index: usize, started: Instant) {
        let nanos = u64::try_from(started.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(NANOS)
            .min(NANOS);
        // Sequentially consistent, like the watchdog's last look before it
        // parks: either it sees this call, or this call sees it parked.
        self.slot(index).start.store(BUSY | nanos, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            if let Some(watchdog) = self.seats.get().and_then(|s| s.watchdog.as_ref()) {
                watchdog.unpark();
            }
        }
    }

    /// Frees the seat; whether the watchdog demoted its call's code.
    fn release(&self, index: usize) -> bool {
        let slot = self.slot(index);
        // One read-modify-write against the watchdog's: either it marked
        // the call before this, and this sees it, or its mark fails.
        let was = slot.start.fetch_and(NANOS, Ordering::AcqRel);
        slot.owner.store(0, Ordering::Release);
        was & OVERRAN != 0
    }

    /// One look at the seats at `now`: demotes the code of each call past
    /// the hard limit (a call between the budget and it is judged when it
    /// ends, with the code's other runs: it may be a preempted short one).
    /// Returns whether any seat was in use since the last look (`seen`
    /// holds the start words that look saw), not counting calls it judged
    /// already: one that hangs for good must not keep the watchdog ticking.
    pub(super) fn scan(&self, now: Instant, seen: &mut Vec<u64>) -> bool {
        let Some(seats) = self.seats.get() else {
            return false;
        };
        seen.resize(seats.slots.len(), 0);
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let hard_limit = u64::try_from(self.policy.hard_limit().as_nanos()).unwrap_or(u64::MAX);
        let mut active = false;
        for (slot, seen) in seats.slots.iter().zip(seen.iter_mut()) {
            let word = slot.start.load(Ordering::Acquire);
            let watched = word & (BUSY | OVERRAN) == BUSY;
            active |= watched || word & NANOS != *seen & NANOS;
            *seen = word;
            if !watched {
                continue;
            }
            let ran = now.saturating_sub(word & NANOS);
            if ran <= hard_limit {
                continue;
            }
            // Read before the mark: if the mark succeeds, the start word did
            // not change in between, so neither did the seat's holder.
            let owner = slot.owner.load(Ordering::Relaxed);
            if slot
                .start
                .compare_exchange(word, word | OVERRAN, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.demote(owner, Duration::from_nanos(ran));
            }
        }
        active
    }

    /// Demotes the code a seat's `owner` word names.
    fn demote(&self, owner: u64, ran: Duration) {
        let serial = usize::try_from((owner >> 32).saturating_sub(1)).unwrap_or(usize::MAX);
        let profile = self
            .profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(serial)
            .and_then(Weak::upgrade);
        let Some(profile) = profile else {
            return;
        };
        let code = match owner & CONSTRUCTOR {
            CONSTRUCTOR => Code::Constructor,
            i => Code::Function(usize::try_from(i).unwrap_or(usize::MAX)),
        };
        if matches!(code, Code::Function(i) if i >= profile.functions.len()) {
            return;
        }
        profile
            .of(code)
            .demote(ran, &self.policy)
            .log(&profile.plugin, profile.name_of(code));
    }

    /// Announces that the watchdog is about to park; false (and it must
    /// not) if a call it has not judged yet holds a seat.
    fn ready_to_park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        let busy = self.seats.get().is_some_and(|s| {
            s.slots
                .iter()
                .any(|slot| slot.start.load(Ordering::SeqCst) & (BUSY | OVERRAN) == BUSY)
        });
        if busy {
            self.parked.store(false, Ordering::SeqCst);
        }
        !busy
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // The watchdog notices that its host is gone when it next wakes.
        if let Some(watchdog) = self.seats.get().and_then(|s| s.watchdog.as_ref()) {
            watchdog.unpark();
        }
    }
}

/// The watchdog thread: looks at the seats every tick while inline calls
/// come and go, parks when there have been none for a while, and ends when
/// its bound does. It holds the bound only while it looks.
fn watch(bound: &Weak<Bound>) {
    let mut seen = Vec::new();
    let mut idle = 0u32;
    loop {
        let Some(watched) = bound.upgrade() else {
            return;
        };
        if watched.scan(Instant::now(), &mut seen) {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
        }
        let park = idle >= PARK_AFTER_IDLE_TICKS && watched.ready_to_park();
        drop(watched);
        if park {
            thread::park();
            idle = 0;
        } else {
            thread::sleep(WATCH_TICK);
        }
    }
}

/// A claim on one of the bound's seats: an inline call may run while it is
/// held. Dropping it frees the seat; [`Seat::end`] frees it and folds the
/// run into the code's profile.
#[derive(Debug)]
pub(crate) struct Seat<B: std::ops::Deref<Target = Bound>> {
    bound: B,
    /// `None` once freed.
    index: Option<usize>,
}

impl<B: std::ops::Deref<Target = Bound>> Seat<B> {
    /// The call begins now (`started`): from here the watchdog times it.
    #[inline]
    pub(crate) fn begin(&self, started: Instant) {
        if let Some(index) = self.index {
            self.bound.begin(index, started);
        }
    }

    /// The call ended after `took`: frees the seat and folds the run into
    /// `profile` (the code the seat was claimed for), unless the watchdog
    /// demoted it for this run already (then the run is only counted). A
    /// short run costs the seat's release and a count.
    #[inline]
    pub(crate) fn end(mut self, profile: &Profile, took: Duration, policy: &TierPolicy) -> Change {
        let overran = self.index.take().is_some_and(|i| self.bound.release(i));
        if overran {
            profile.count_inline_run();
            Change::None
        } else {
            profile.inline_run(took, policy)
        }
    }
}

impl Seat<&Bound> {
    /// The same seat, for a call that outlives this borrow of the bound
    /// (one that runs in a task of its own).
    pub(crate) fn detach(mut self) -> Seat<Arc<Bound>> {
        Seat {
            bound: self
                .bound
                .me
                .upgrade()
                .expect("a bound is alive while borrowed"),
            index: self.index.take(),
        }
    }
}

impl<B: std::ops::Deref<Target = Bound>> Drop for Seat<B> {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            self.bound.release(index);
        }
    }
}
