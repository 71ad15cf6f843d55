//! The host's worker processes not yet given to a task: where the worker
//! program is, a few started ahead of need, and the first load of a
//! library (which runs in a worker before anything else, for every tier).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::codec::{LoadMode, ToHost, ToWorker};
use super::process::WorkerProcess;
use crate::error::{Error, Result};
use crate::loader::{PluginDescription, VerifiedFile};

/// How long loading a library (its ELF constructors, the layout checks) may
/// take in a worker before the library is refused as hanging, unless
/// configured otherwise (`[tiers] load_timeout`).
pub const LOAD_PATIENCE: Duration = Duration::from_secs(30);

/// Started workers waiting for a library, and how to start more.
#[derive(Debug)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    program: std::result::Result<PathBuf, String>,
    ready: Mutex<Vec<WorkerProcess>>,
    /// Workers kept ready.
    target: usize,
    /// How long a load may take in a worker.
    load_timeout: Duration,
    refilling: AtomicBool,
}

impl Workers {
    /// Workers of `program` (located as [`worker_program`] says when
    /// `None`), keeping `warm` started once the first one was asked for.
    pub fn new(program: Option<&Path>, warm: usize) -> Self {
        Workers {
            inner: Arc::new(Inner {
                program: worker_program(program),
                ready: Mutex::new(Vec::new()),
                target: warm,
                load_timeout: LOAD_PATIENCE,
                refilling: AtomicBool::new(false),
            }),
        }
    }

    /// The same workers, refusing a library whose load takes longer than
    /// `timeout` (a constructor that hangs).
    pub fn with_load_timeout(self, timeout: Duration) -> Self {
        let mut inner = Arc::into_inner(self.inner).expect("not shared before it is configured");
        inner.load_timeout = timeout;
        Workers {
            inner: Arc::new(inner),
        }
    }

    /// How long a load may take in a worker.
    pub fn load_timeout(&self) -> Duration {
        self.inner.load_timeout
    }

    /// Starts the warm workers now (or tops them up), in the background.
    pub fn prestart(&self) {
        Inner::refill(&self.inner);
    }

    /// A started worker: a warm one, or one started now.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`] when none can be started.
    pub fn take(&self) -> Result<WorkerProcess> {
        let worker = self.take_unreplaced();
        Inner::refill(&self.inner);
        worker
    }

    /// A started worker, without starting its replacement yet (the caller
    /// does, once the CPU it would take is free again).
    fn take_unreplaced(&self) -> Result<WorkerProcess> {
        let warm = {
            let mut ready = self
                .inner
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            ready.retain(|w| !w.has_ended());
            ready.pop()
        };
        match warm {
            Some(worker) => Ok(worker),
            None => self.inner.start(),
        }
    }

    /// Loads `file` in a worker and describes it, without making an
    /// instance; the worker is discarded after. A library whose loading
    /// kills or hangs the worker is refused here, before the host (or any
    /// other worker) maps it.
    ///
    /// # Errors
    ///
    /// [`Error::ConstructorCrashed`]; [`Error::RefusedByWorker`] for what
    /// the loader refused; [`Error::Worker`].
    pub fn describe(&self, file: &VerifiedFile) -> Result<PluginDescription> {
        match self.first_load(file, LoadMode::Describe)? {
            ToHost::Loaded(description) => Ok(description),
            ToHost::Refused { kind, message } => Err(Error::refused_by_worker(&kind, message)),
            other => Err(unexpected(&other)),
        }
    }

    /// Maps `file` in a worker, which is discarded after: its ELF
    /// constructors run there, and a library they crash or hang is refused
    /// before the host maps it. No other check runs there: the host's own
    /// load, next, makes them all.
    ///
    /// # Errors
    ///
    /// [`Error::ConstructorCrashed`]; [`Error::RefusedByWorker`] (a library
    /// the dynamic loader refuses, or that needs unverified code);
    /// [`Error::Worker`].
    pub fn probe(&self, file: &VerifiedFile) -> Result<()> {
        match self.first_load(file, LoadMode::Probe)? {
            ToHost::Probed => Ok(()),
            ToHost::Refused { kind, message } => Err(Error::refused_by_worker(&kind, message)),
            other => Err(unexpected(&other)),
        }
    }

    /// The worker that loads first is thrown away after, and not replaced
    /// here: the caller calls [`Workers::prestart`] once the whole load is
    /// done, so that on a small machine the new process does not compete
    /// with the load for a CPU.
    fn first_load(&self, file: &VerifiedFile, mode: LoadMode) -> Result<ToHost> {
        let mut worker = self.take_unreplaced()?;
        let source = format!("/proc/{}/fd/{}", std::process::id(), raw_fd(file));
        let load = ToWorker::Load {
            source,
            digest: *file.digest().as_bytes(),
            config: Vec::new(),
            memory_max: 0,
            mode,
        };
        worker
            .load(&load, self.inner.load_timeout)
            .map_err(|fault| Error::ConstructorCrashed {
                path: file.path().to_owned(),
                ended: fault.to_string(),
            })
    }
}

fn unexpected(reply: &ToHost) -> Error {
    Error::Worker {
        reason: format!("a worker answered a load with {}", reply.name()),
    }
}

impl Inner {
    fn start(&self) -> Result<WorkerProcess> {
        let program = self.program.as_ref().map_err(|reason| Error::Worker {
            reason: reason.clone(),
        })?;
        WorkerProcess::start(program).map_err(|reason| Error::Worker { reason })
    }

    /// Tops the warm workers up to the target on a thread of its own, one
    /// refill at a time.
    fn refill(this: &Arc<Inner>) {
        if this.target == 0 || this.program.is_err() || this.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let inner = Arc::clone(this);
        let spawned = std::thread::Builder::new()
            .name("spearlet-warm-workers".into())
            .spawn(move || {
                loop {
                    let missing = {
                        let ready = inner.ready.lock().unwrap_or_else(PoisonError::into_inner);
                        inner.target.saturating_sub(ready.len())
                    };
                    if missing == 0 {
                        break;
                    }
                    match inner.start() {
                        Ok(worker) => inner
                            .ready
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(worker),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start a warm worker process");
                            break;
                        }
                    }
                }
                inner.refilling.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            this.refilling.store(false, Ordering::Release);
        }
    }
}

fn raw_fd(file: &VerifiedFile) -> i32 {
    use std::os::fd::AsRawFd;
    file.file().as_raw_fd()
}

/// The `spearlet` executable that runs workers: `configured` if given;
/// else this executable when it is `spearlet`; else a `spearlet` beside it
/// or one directory up (cargo puts test binaries in `target/*/deps/`).
///
/// # Errors
///
/// A sentence naming where it looked.
pub fn worker_program(configured: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    if exe.file_name().is_some_and(|n| n == "spearlet") {
        return Ok(exe);
    }
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("spearlet"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no spearlet executable to run worker processes (looked for {}); \
                 set [tiers] worker_program",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
