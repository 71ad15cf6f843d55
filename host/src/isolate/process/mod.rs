//! A worker process seen from the host: starting it, posting to it, waiting
//! for it, and knowing at once when it died and how.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Pid, PidfdFlags, Signal};
use std::sync::{mpsc, Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

mod reap;

use super::codec::{ToHost, ToWorker};
use super::shm::{Channel, Direction, SlotError};
use super::wake::{self, Side, SpinBudget};
use reap::reap;

/// How often a host waiting on a worker looks at cancellation and deadlines.
const SLICE: Duration = Duration::from_millis(20);
/// How long a worker that was asked to stop (deadline, cancellation) may
/// take to return before it is killed.
pub const GRACE: Duration = Duration::from_millis(200);
/// Lines of a worker's standard error kept to explain its death.
const TAIL: usize = 8;
/// The environment variable telling a worker its host's process id.
pub const PARENT_ENV: &str = "SPEARLET_WORKER_HOST";
/// The environment variable telling a worker the protocol its host speaks.
pub const PROTOCOL_ENV: &str = "SPEARLET_WORKER_PROTOCOL";
/// What Rust's default allocation-error handler prints before it aborts.
const ALLOCATION_FAILED: &str = "memory allocation of";

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Killed by this signal.
    Signal(i32),
    /// Exited with this status.
    Exit(i32),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ended::Signal(n) => match signal_name(n) {
                Some(name) => write!(f, "killed by signal {n} ({name})"),
                None => write!(f, "killed by signal {n}"),
            },
            Ended::Exit(code) => write!(f, "exited with status {code}"),
        }
    }
}

fn signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Why a wait on a worker did not bring the message hoped for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The worker died on its own.
    Crashed(Ended),
    /// The worker died from an allocation over its memory cap.
    OutOfMemory(Ended),
    /// The worker wrote something that is not a message; it was killed.
    Garbage(String),
    /// The host killed it: it ran past its deadline, or past its
    /// cancellation, by more than [`GRACE`].
    Stopped,
    /// It did not answer in time (loading, or starting); it was killed.
    Hung(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crashed(ended) => write!(f, "{ended}"),
            Fault::OutOfMemory(ended) => write!(f, "ran out of its memory cap ({ended})"),
            Fault::Garbage(what) => write!(f, "wrote garbage into its channel ({what}); killed"),
            Fault::Stopped => f.write_str("ignored its deadline or cancellation; killed"),
            Fault::Hung(after) => write!(f, "hung for {} ms; killed", after.as_millis()),
        }
    }
}

/// What a host-side wait watches besides the worker.
#[derive(Debug, Clone, Copy)]
pub struct Watch<'a> {
    /// The call's deadline.
    pub deadline: Option<SystemTime>,
    /// The host's cancellation flag of the call.
    pub cancelled: Option<&'a AtomicBool>,
    /// Give up (and kill) after this long without a message.
    pub patience: Option<Duration>,
}

/// What the host knows of a worker's life, shared with the thread that
/// reaps it.
#[derive(Debug)]
struct Life {
    ended: Mutex<Option<Ended>>,
    /// Set before the host kills it: its death is then no crash.
    killed: AtomicBool,
    /// Its last lines on standard error since its current call began.
    tail: Mutex<VecDeque<String>>,
    /// The process, by a handle a reused number cannot redirect.
    pidfd: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One worker process and the host's end of its channel.
#[derive(Debug)]
pub struct WorkerProcess {
    id: u32,
    channel: Arc<Channel>,
    life: Arc<Life>,
    seen: u32,
    budget: SpinBudget,
    buf: Vec<u8>,
}

/// Every worker is started from this one thread: a worker asks to die with
/// its parent, and Linux means the parent *thread*, so a worker started
/// from a pool thread that later retires would be killed with it.
type SpawnJob = Box<dyn FnOnce() + Send>;
static SPAWNER: LazyLock<Mutex<mpsc::Sender<SpawnJob>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    std::thread::Builder::new()
        .name("spearlet-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .expect("the worker spawner thread starts");
    Mutex::new(tx)
});

fn on_spawner<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::sync_channel(1);
    lock(&SPAWNER)
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .expect("the spawner thread lives as long as the process");
    rx.recv().expect("the spawner thread answers every job")
}

impl WorkerProcess {
    /// Starts `program worker` and waits until it is ready.
    ///
    /// # Errors
    ///
    /// A description of what failed: the channel, the start, or the worker
    /// dying or hanging before it was ready.
    pub fn start(program: &Path) -> Result<WorkerProcess, String> {
        let (channel, fd) = Channel::create().map_err(|e| format!("cannot make a channel: {e}"))?;
        let mut command = Command::new(program);
        command
            .arg("worker")
            .env(PARENT_ENV, std::process::id().to_string())
            .env(PROTOCOL_ENV, format!("{:016x}", super::PROTOCOL))
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = on_spawner(move || command.spawn())
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        // Signalled through a pidfd, never by number: a number can be
        // reused once the worker is reaped.
        let pidfd = match Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
            .ok_or_else(|| std::io::Error::other("no process id"))
            .and_then(|pid| Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?))
        {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot watch the worker: {e}"));
            }
        };
        let channel = Arc::new(channel);
        let life = Arc::new(Life {
            ended: Mutex::new(None),
            killed: AtomicBool::new(false),
            tail: Mutex::new(VecDeque::with_capacity(TAIL)),
            pidfd,
        });
        let (reaper_life, reaper_channel) = (Arc::clone(&life), Arc::clone(&channel));
        let id = child.id();
        let spawned = std::thread::Builder::new()
            .name(format!("spearlet-worker-{id}"))
            .stack_size(256 << 10)
            .spawn(move || reap(child, &reaper_life, &reaper_channel));
        if let Err(e) = spawned {
            let _ = rustix::process::pidfd_send_signal(&life.pidfd, Signal::KILL);
            return Err(format!("cannot start the thread watching a worker: {e}"));
        }
        let mut worker = WorkerProcess {
            id,
            channel,
            life,
            seen: 0,
            budget: SpinBudget::for_this_machine(),
            buf: Vec::new(),
        };
        let ready = worker.receive(
            &Watch {
                deadline: None,
                cancelled: None,
                patience: Some(Duration::from_secs(10)),
            },
            &mut StopClock::default(),
        );
        match ready {
            Ok(ToHost::Ready) => Ok(worker),
            Ok(other) => {
                worker.kill();
                Err(format!(
                    "the worker began with {} instead of being ready",
                    other.name()
                ))
            }
            Err(fault) => {
                // What it said on the way out explains it best.
                let said = lock(&worker.life.tail).iter().last().cloned();
                Err(match said {
                    Some(line) => format!("the worker did not start: {fault}: {line}"),
                    None => format!("the worker did not start: {fault}"),
                })
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.id
    }

    /// Readies the worker for a new call: its cancellation flag lowered
    /// (before the call is posted, so a cancellation raised after cannot be
    /// lost), and its standard error's tail forgotten (it explains only a
    /// death during this call).
    pub fn begin_call(&self) {
        self.channel.cancel_flag().store(false, Ordering::Release);
        lock(&self.life.tail).clear();
    }

    /// Whether it has died (or been killed).
    pub fn has_ended(&self) -> bool {
        lock(&self.life.ended).is_some()
    }

    /// Posts `message` (already encoded).
    ///
    /// # Errors
    ///
    /// [`SlotError::TooLarge`] when it does not fit the channel: nothing
    /// was sent, and the worker is as it was.
    pub fn send(&mut self, message: &[u8]) -> Result<(), SlotError> {
        self.channel.write(Direction::ToWorker, message)?;
        wake::post(&self.channel, Side::Host);
        Ok(())
    }

    /// Posts a message of the host's own making (small).
    ///
    /// # Errors
    ///
    /// [`Fault::Garbage`] in the unlikely case it does not fit.
    pub fn post(&mut self, message: &ToWorker) -> Result<(), Fault> {
        self.send(&message.encode())
            .map_err(|e| Fault::Garbage(e.to_string()))
    }

    /// Posts a `Load` and waits for its answer, for at most `patience` (a
    /// constructor that hangs is killed then).
    ///
    /// # Errors
    ///
    /// A [`Fault`]: the worker died, hung or spoke garbage while loading.
    pub fn load(&mut self, load: &ToWorker, patience: Duration) -> Result<ToHost, Fault> {
        self.post(load)?;
        self.receive(
            &Watch {
                deadline: None,
                cancelled: None,
                patience: Some(patience),
            },
            &mut StopClock::default(),
        )
    }

    /// Waits for the worker's next message, watching `watch` meanwhile;
    /// `stop` is the call's clock: once its deadline passes or it is
    /// cancelled, the plugin is asked to stop, and killed [`GRACE`] later
    /// — however many chunks or log lines it sends meanwhile.
    ///
    /// # Errors
    ///
    /// A [`Fault`]: after it, the worker is dead (or killed).
    pub fn receive(&mut self, watch: &Watch<'_>, stop: &mut StopClock) -> Result<ToHost, Fault> {
        // A short call is answered while this thread spins; only a wait
        // that must sleep gives up this thread's runtime duties first.
        let moved = match wake::spin_for(&self.channel, Side::Host, self.seen, &mut self.budget) {
            Some(now) => now,
            None => blocking_section(|| self.sleep_until_message(watch, stop))?,
        };
        self.seen = moved;
        let message = self.read()?;
        if !matches!(message, ToHost::Done { .. }) {
            self.check_stop(watch, stop)?;
        }
        Ok(message)
    }

    /// Asks the plugin to stop when its call is past its deadline or
    /// cancelled, and kills it once it ignored that for [`GRACE`].
    fn check_stop(&self, watch: &Watch<'_>, stop: &mut StopClock) -> Result<(), Fault> {
        let due = watch.cancelled.is_some_and(|c| c.load(Ordering::Relaxed))
            || watch.deadline.is_some_and(|d| SystemTime::now() >= d);
        if !due {
            return Ok(());
        }
        let asked = *stop.asked.get_or_insert_with(|| {
            self.channel.cancel_flag().store(true, Ordering::Release);
            Instant::now()
        });
        if asked.elapsed() >= GRACE {
            self.kill();
            return Err(Fault::Stopped);
        }
        Ok(())
    }

    /// Sleeps until the worker posts, watching `watch`.
    fn sleep_until_message(&self, watch: &Watch<'_>, stop: &mut StopClock) -> Result<u32, Fault> {
        let started = Instant::now();
        let life = &self.life;
        let ended = || lock(&life.ended).is_some();
        loop {
            let interrupted = || {
                ended()
                    || watch.cancelled.is_some_and(|c| c.load(Ordering::Relaxed))
                    || watch.deadline.is_some_and(|d| SystemTime::now() >= d)
                    || watch.patience.is_some_and(|p| started.elapsed() >= p)
            };
            let (timeout, check): (Option<Duration>, &dyn Fn() -> bool) = match stop.asked {
                // Asked to stop: look again within the grace, not a slice later.
                Some(asked) => (Some(GRACE.saturating_sub(asked.elapsed())), &ended),
                None => (None, &interrupted),
            };
            let now = Instant::now();
            if let Some(value) = wake::sleep_for(
                &self.channel,
                Side::Host,
                self.seen,
                now,
                timeout,
                check,
                SLICE,
            ) {
                return Ok(value);
            }
            if let Some(ended) = *lock(&self.life.ended) {
                return Err(self.fault_of(ended));
            }
            if let Some(patience) = watch.patience.filter(|p| started.elapsed() >= *p) {
                self.kill();
                return Err(Fault::Hung(patience));
            }
            self.check_stop(watch, stop)?;
        }
    }

    fn read(&mut self) -> Result<ToHost, Fault> {
        let decoded = match self.channel.read(Direction::ToHost, &mut self.buf) {
            Ok(()) => ToHost::decode(&self.buf).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        decoded.map_err(|what| {
            self.kill();
            Fault::Garbage(what)
        })
    }

    fn fault_of(&self, ended: Ended) -> Fault {
        if self.life.killed.load(Ordering::Acquire) {
            return Fault::Stopped;
        }
        // Rust's allocation-error handler prints, then aborts.
        let out_of_memory = ended == Ended::Signal(6)
            && lock(&self.life.tail)
                .iter()
                .any(|line| line.contains(ALLOCATION_FAILED));
        if out_of_memory {
            Fault::OutOfMemory(ended)
        } else {
            Fault::Crashed(ended)
        }
    }

    /// Kills the worker (its reaper thread collects it).
    pub fn kill(&self) {
        self.life.killed.store(true, Ordering::Release);
        let _ = rustix::process::pidfd_send_signal(&self.life.pidfd, Signal::KILL);
    }
}

/// Runs `f`, which may sleep, handing this thread's async runtime duties
/// to another thread first when it is a worker of a multi-threaded runtime.
fn blocking_section<T>(f: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// When a call was asked to stop (its deadline passed, or it was
/// cancelled): kept across every message of the call, so that chatter
/// cannot postpone the kill.
#[derive(Debug, Default)]
pub struct StopClock {
    asked: Option<Instant>,
}
