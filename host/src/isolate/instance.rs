//! One instance of a process-tier task: a worker process holding the
//! plugin and one instance of it. A call is a message each way (plus one
//! exchange per stream chunk or log line); a crash fails only the call
//! running on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spear_plugin_sdk::{PluginError, Value};

use super::codec::{encode_call_into, CallEnd, LoadMode, ToHost, ToWorker};
use super::process::{Fault, StopClock, Watch, WorkerProcess};
use super::workers::Workers;
use crate::error::{Error, Result};
use crate::loader::{CallRequest, FunctionHandle, Plugin};

/// A worker process running one instance of a task's plugin.
#[derive(Debug)]
pub struct IsolatedInstance {
    worker: WorkerProcess,
    plugin: Arc<Plugin>,
    task_id: Arc<str>,
    memory_max: Option<u64>,
    gate: Arc<CrashGate>,
    poisoned: bool,
    memory: Option<(u64, u64)>,
    /// The storage each call's message is encoded into.
    out: Vec<u8>,
}

impl IsolatedInstance {
    /// Starts (or takes a warm) worker, loads `plugin` there and makes an
    /// instance from `config`. Blocks: run it off the async workers.
    ///
    /// # Errors
    ///
    /// [`Error::CrashLooping`] while the task backs off;
    /// [`Error::InstanceCreation`]; [`Error::PluginCrashed`] when loading
    /// killed the worker; [`Error::Worker`].
    pub fn create(
        workers: &Workers,
        task_id: &Arc<str>,
        plugin: &Arc<Plugin>,
        config: &[(String, String)],
        memory_max: Option<u64>,
        gate: &Arc<CrashGate>,
    ) -> Result<Self> {
        gate.check(task_id)?;
        let source = plugin.worker_source().ok_or_else(|| Error::Worker {
            reason: format!(
                "plugin `{}` was loaded in the host, not described for workers",
                plugin.name()
            ),
        })?;
        let mut worker = workers.take()?;
        let load = ToWorker::Load {
            source: source.display().to_string(),
            digest: *plugin.digest().as_bytes(),
            config: config.to_vec(),
            memory_max: memory_max.unwrap_or(0),
            mode: LoadMode::Instance,
        };
        let crashed = |fault: Fault| {
            gate.crashed(&fault.to_string());
            Error::PluginCrashed {
                task_id: task_id.to_string(),
                function: "(instance constructor)".to_owned(),
                ended: fault.to_string(),
            }
        };
        match worker
            .load(&load, workers.load_timeout())
            .map_err(crashed)?
        {
            ToHost::Loaded(_) => Ok(IsolatedInstance {
                worker,
                plugin: Arc::clone(plugin),
                task_id: Arc::clone(task_id),
                memory_max,
                gate: Arc::clone(gate),
                poisoned: false,
                memory: None,
                out: Vec::new(),
            }),
            ToHost::InstanceRefused { code, message } => Err(Error::InstanceCreation {
                plugin: plugin.name().to_owned(),
                code,
                message,
            }),
            ToHost::Refused { kind, message } => Err(Error::refused_by_worker(&kind, message)),
            other => Err(Error::Worker {
                reason: format!("a worker answered a load with {}", other.name()),
            }),
        }
    }

    /// Runs `function` in the worker and waits for it, passing its chunks
    /// and log lines to the request's sink. Past the deadline (or once
    /// cancelled) the plugin is asked to stop; past a short grace after
    /// that, the worker is killed: an isolated call never leaves a thread
    /// behind.
    ///
    /// # Errors
    ///
    /// As an in-process call ([`Error::PluginFailed`],
    /// [`Error::PluginPanicked`]), and [`Error::PluginCrashed`],
    /// [`Error::MemoryLimitExceeded`], [`Error::DeadlineExceeded`] (killed
    /// past its deadline) when the worker is gone; the instance is then
    /// poisoned.
    pub fn call(&mut self, function: FunctionHandle, request: &CallRequest<'_>) -> Result<Value> {
        self.memory = None;
        let mut message = std::mem::take(&mut self.out);
        encode_call_into(
            &mut message,
            u32::try_from(function.index()).unwrap_or(u32::MAX),
            request.execution_id,
            request.params,
            request.environment,
            request.headers,
            request.traceparent,
            request.deadline.map_or(0, unix_nanos),
        );
        self.worker.begin_call();
        if let Err(e) = self.worker.send(&message) {
            // Nothing was sent: the worker is as it was, the call refused.
            self.out = message;
            return Err(Error::InvalidRequest {
                field: "params",
                reason: format!("too large for a worker process: {e}"),
            });
        }
        // Poisoned until the call ends cleanly: a call abandoned half-way
        // (a panic in a sink) must not leave its answer to the next one.
        self.poisoned = true;
        let started = Instant::now();
        let outcome = self.exchange(request);
        self.out = message;
        match outcome {
            Ok(end) => {
                self.poisoned = false;
                self.ended(function, end)
            }
            Err(fault) => Err(self.error_of(function, fault, request, started.elapsed())),
        }
    }

    fn exchange(&mut self, request: &CallRequest<'_>) -> Result<CallEnd, Fault> {
        let watch = Watch {
            deadline: request.deadline,
            cancelled: Some(request.cancelled),
            patience: None,
        };
        let mut stop = StopClock::default();
        loop {
            match self.worker.receive(&watch, &mut stop)? {
                ToHost::Done { end, memory } => {
                    self.memory = memory;
                    return Ok(end);
                }
                ToHost::Chunk(chunk) => {
                    let accepted = request.sink.emit(chunk);
                    self.worker.post(&ToWorker::Ack { accepted })?;
                }
                ToHost::Log(level, line) => {
                    request.sink.log(level, &line);
                    self.worker.post(&ToWorker::Ack { accepted: true })?;
                }
                other => {
                    self.worker.kill();
                    return Err(Fault::Garbage(format!("{} during a call", other.name())));
                }
            }
        }
    }

    fn ended(&mut self, function: FunctionHandle, end: CallEnd) -> Result<Value> {
        let name = || self.plugin.function_name(function).to_string();
        // A call that returned proves the worker healthy; a panic does not.
        if !matches!(end, CallEnd::Panicked { .. }) {
            self.gate.succeeded();
        }
        match end {
            CallEnd::Returned(value) => Ok(value),
            CallEnd::Failed {
                code,
                message,
                retriable,
            } => Err(Error::PluginFailed {
                function: name(),
                code,
                message,
                retriable,
            }),
            CallEnd::Panicked { message } => {
                self.poisoned = true;
                Err(Error::PluginPanicked {
                    function: name(),
                    message,
                })
            }
        }
    }

    fn error_of(
        &self,
        function: FunctionHandle,
        fault: Fault,
        request: &CallRequest<'_>,
        ran: Duration,
    ) -> Error {
        let function = self.plugin.function_name(function).to_string();
        let task_id = self.task_id.to_string();
        match fault {
            Fault::OutOfMemory(_) => {
                self.gate.crashed(&fault.to_string());
                Error::MemoryLimitExceeded {
                    task_id,
                    function,
                    limit: self.memory_max.unwrap_or(0),
                }
            }
            Fault::Stopped if request.deadline.is_some_and(|d| SystemTime::now() >= d) => {
                Error::DeadlineExceeded {
                    execution_id: request.execution_id.to_owned(),
                    elapsed_ms: u64::try_from(ran.as_millis()).unwrap_or(u64::MAX),
                }
            }
            Fault::Stopped => Error::PluginFailed {
                function,
                code: PluginError::CANCELLED.to_owned(),
                message: "the call ignored its cancellation; its worker was killed".to_owned(),
                retriable: false,
            },
            Fault::Crashed(_) | Fault::Garbage(_) | Fault::Hung(_) => {
                self.gate.crashed(&fault.to_string());
                Error::PluginCrashed {
                    task_id,
                    function,
                    ended: fault.to_string(),
                }
            }
        }
    }

    /// Whether this instance must be discarded (its worker died, was
    /// killed, or the plugin panicked).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned || self.worker.has_ended()
    }

    /// `(allocated, peak)` bytes of the last call, when the plugin counts.
    pub fn call_memory(&self) -> Option<(u64, u64)> {
        self.memory
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.worker.pid()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(1, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

/// Crashes in a row after which a task backs off before starting another worker.
const FREE_RESTARTS: u32 = 2;
/// The first backoff, doubled with every further crash in a row.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// The longest backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A task's record of its workers' crashes: the first few in a row are
/// replaced at once; after that each crash doubles a pause (capped) during
/// which the task is `crash_looping` and its calls are refused at once. A
/// call that returns resets it.
#[derive(Debug, Default)]
pub struct CrashGate {
    total: AtomicU64,
    /// Crashes in a row, and until when calls are refused (with the last
    /// crash's description): one lock, so a crash and a success racing
    /// cannot leave a backoff behind a reset count.
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    in_a_row: u32,
    backoff: Option<(Instant, String)>,
}

impl CrashGate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails while the task backs off.
    ///
    /// # Errors
    ///
    /// [`Error::CrashLooping`].
    pub fn check(&self, task_id: &str) -> Result<()> {
        let state = self.state();
        match &state.backoff {
            Some((until, ended)) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                Err(Error::CrashLooping {
                    task_id: task_id.to_owned(),
                    crashes: state.in_a_row,
                    ended: ended.clone(),
                    retry_after_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
                })
            }
            None => Ok(()),
        }
    }

    /// Whether the task is backing off now.
    pub fn is_looping(&self) -> bool {
        self.state()
            .backoff
            .as_ref()
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// Worker crashes since the task was created.
    pub fn crashes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn crashed(&self, ended: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        state.in_a_row += 1;
        let n = state.in_a_row;
        tracing::warn!(crashes_in_a_row = n, "a worker process crashed: {ended}");
        if n > FREE_RESTARTS {
            let pause = BACKOFF_BASE
                .saturating_mul(1 << (n - FREE_RESTARTS - 1).min(16))
                .min(BACKOFF_CAP);
            state.backoff = Some((Instant::now() + pause, ended.to_owned()));
        }
    }

    fn succeeded(&self) {
        let mut state = self.state();
        if state.in_a_row > 0 {
            *state = GateState::default();
        }
    }
}
