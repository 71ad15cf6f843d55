//! Serving one invocation: the call a busy host answers in place, and the
//! general path (resolve the task, claim the record, lease an instance or
//! accept for later), each step named after what it does.
//! `docs/invocation-flow.md` has the flow these steps follow.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::stop::PendingSlot;
use super::Host;
use crate::error::{Error, Result};
use crate::exec::{self, Ending, ExecutionMode, ExecutionRecord, Job, UnlistedCall};
use crate::invoke::{InvokeOutcome, InvokeRequest, TaskOrigin};
use crate::loader::{FunctionHandle, FunctionKind};
use crate::task::Task;
use crate::tier::{Bound, Code, Seat};
use crate::Value;

/// Where an in-place call runs.
enum Place<'a> {
    /// In this thread, in its seat under the inline tier's cap.
    Inline(Seat<&'a Bound>),
    /// In an idle worker process, this thread waiting for its answer.
    Worker,
}

/// An execution record claimed for a call on the general path.
struct Claimed {
    record: Arc<ExecutionRecord>,
    /// False when the id named an execution already known: an idempotent
    /// retry, answered from the record and never run again.
    fresh: bool,
}

impl Host {
    /// Invokes a function (SYNC or ASYNC; STREAM goes through [`Host::stream`]).
    ///
    /// A function-level failure (the plugin returned an error, panicked, or
    /// the call timed out) is a successful return whose execution says so;
    /// `Err` is for requests that could not be served at all.
    ///
    /// Dropping the returned future before it completes ends the execution
    /// (CANCELLED, or TIMEOUT past its deadline) and asks the plugin to stop.
    ///
    /// # Errors
    ///
    /// [`Error::UseStreamFunction`] for STREAM mode; the task resolution
    /// errors ([`Error::TaskNotFound`], [`Error::ArtifactSpecRequired`], the
    /// artifact pipeline's); [`Error::FunctionNotFound`];
    /// [`Error::UnknownParameter`]; [`Error::PoolExhausted`]; [`Error::QuarantineFull`];
    /// [`Error::TooManyPending`].
    ///
    /// The future is an `async` block rather than an `async fn`: one
    /// holds its arguments twice (as passed, and moved into the body), and
    /// a caller moves the future at least once per call.
    #[allow(clippy::manual_async_fn)] // On purpose: see the paragraph above.
    pub fn invoke(
        &self,
        mut request: InvokeRequest,
    ) -> impl Future<Output = Result<InvokeOutcome>> + Send + '_ {
        async move {
            if request.mode == ExecutionMode::Stream {
                return Err(Error::UseStreamFunction);
            }
            let _serving = self.serving()?;
            self.check_metadata(&request)?;
            // Not a `match` on the in-place result: a scrutinee lives to
            // the end of the match, so its outcome would take room in this
            // future across the general path's await.
            if let Some(done) = self.invoke_in_place(&mut request) {
                return done;
            }
            Box::pin(self.start(request, None)).await
        }
    }

    /// Invokes a function whose chunks are sent to `chunks` as it emits
    /// them (a unary function's result arrives as the final outcome). The
    /// channel's capacity bounds how far the plugin may run ahead of the
    /// consumer; dropping the receiver cancels the execution.
    ///
    /// # Errors
    ///
    /// As [`Host::invoke`].
    pub async fn stream(
        &self,
        mut request: InvokeRequest,
        chunks: mpsc::Sender<Value>,
    ) -> Result<InvokeOutcome> {
        request.mode = ExecutionMode::Stream;
        let _serving = self.serving()?;
        self.check_metadata(&request)?;
        self.start(request, Some(chunks)).await
    }

    /// Checks the request's `spearlet.` metadata keys up front (most
    /// requests carry none, and pay one length test).
    fn check_metadata(&self, request: &InvokeRequest) -> Result<()> {
        if request.metadata.is_empty() {
            return Ok(());
        }
        crate::invoke::metadata::check(&request.metadata, &self.inner.config)
    }

    /// The call that needs no waiting at all — a known task, a function the
    /// inline tier has promoted, a free seat under the tier's cap, an idle
    /// instance, no retries, no deadline — served without a future: the
    /// common case of a busy host costs what its bookkeeping costs. `None`,
    /// with `request` untouched, for anything else: the general path serves
    /// it. A call with a deadline never runs here: nothing could answer its
    /// caller at the deadline while the plugin holds this thread.
    fn invoke_in_place(&self, request: &mut InvokeRequest) -> Option<Result<InvokeOutcome>> {
        if request.mode != ExecutionMode::Sync
            || request.max_retries > 0
            || request.force_new_instance
            || request.timeout.is_some()
        {
            return None;
        }
        let task = self.known_task(&request.target)?;
        let function = task.function(&request.function).ok()?;
        if let Err(e) = task.plugin.check_params(function, &request.params) {
            return Some(Err(e));
        }
        let place = self.place_in_place(&task, function)?;
        let lease = match task.pool.try_acquire_idle()? {
            Ok(lease) => lease,
            Err(e) => return Some(Err(e)),
        };
        let executions = &self.inner.executions;
        // Unlisted only in the inline tier, whose calls are bounded: a call
        // in a worker process may run for long, and must stay reachable by
        // a cancel, a forced delete or a listing while it does.
        let execution = match place {
            Place::Inline(seat)
                if request.execution_id.is_none() && executions.lists_only_notable_sync() =>
            {
                let started = Instant::now();
                let call = UnlistedCall {
                    trace: request.enter_trace(),
                    task: &task,
                    function,
                    params: &request.params,
                    environment: &request.environment,
                    headers: &request.headers,
                    policy: &self.inner.policy,
                };
                exec::run_unlisted(executions, &call, lease, seat, started)
            }
            place => match self.run_listed_in_place(request, &task, function, place, lease) {
                Ok(execution) => execution,
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(InvokeOutcome::found(&task, execution)))
    }

    /// An in-place call that is listed while it runs (its caller chose its
    /// id, or the store keeps every SYNC execution, or it runs in a worker
    /// process): an ordinary record, claimed, run and snapshotted.
    fn run_listed_in_place(
        &self,
        request: &mut InvokeRequest,
        task: &Arc<Task>,
        function: FunctionHandle,
        place: Place<'_>,
        lease: crate::pool::Lease,
    ) -> Result<crate::exec::ExecutionSnapshot> {
        let Claimed { record, fresh } = self.claim(request, task, function)?;
        if !fresh {
            return Ok(record.snapshot());
        }
        let job = self.job(request, task, function, &record, None, None);
        match place {
            Place::Inline(seat) => exec::run_in_place(job, lease, seat),
            Place::Worker => exec::run_isolated_in_place(job, lease),
        };
        Ok(record.snapshot_for_caller())
    }

    /// Where `function` of `task` may run without a future, if anywhere.
    fn place_in_place<'a>(&'a self, task: &'a Task, function: FunctionHandle) -> Option<Place<'a>> {
        if task.isolation == crate::isolate::Isolation::Process {
            // A worker process runs the call; this thread posts it and
            // waits, giving up its runtime duties if it must sleep — which
            // only a multi-threaded runtime can take over.
            return exec::on_multi_thread_runtime().then_some(Place::Worker);
        }
        if !self.inner.policy.enabled() || !task.profile(function).is_inline() {
            return None;
        }
        // Before the instance: a call over the cap leaves the pool alone.
        task.profile
            .seat(Code::Function(function.index()))
            .map(Place::Inline)
    }

    /// The general path: anything [`Host::invoke_in_place`] would not serve.
    async fn start(
        &self,
        mut request: InvokeRequest,
        chunks: Option<mpsc::Sender<Value>>,
    ) -> Result<InvokeOutcome> {
        let deadline = request.timeout.map(|t| Instant::now() + t);
        let (task, origin) = self.resolve_task(&request).await?;
        let function = task.function(&request.function)?;
        task.plugin.check_params(function, &request.params)?;
        if chunks.is_none() && function.kind() == FunctionKind::Stream {
            tracing::debug!(function = %request.function, "stream function called without a stream; chunks are dropped");
        }
        let Claimed { record, fresh } = self.claim(&request, &task, function)?;
        if !fresh {
            // Idempotent retry of a known execution: report, don't rerun.
            return Ok(InvokeOutcome::of(&task, origin, record.snapshot()));
        }
        let mode = request.mode;
        // From here on the record ends whatever happens to this future.
        let ending = Ending::new(Arc::clone(&record), Arc::clone(&task), deadline);
        let job = self.job(&mut request, &task, function, &record, deadline, chunks);
        match mode {
            ExecutionMode::Sync | ExecutionMode::Stream => {
                self.run_now(job, &task, &record, ending).await?;
            }
            ExecutionMode::Async => self.accept(job, &record, ending).await?,
        }
        let execution = match mode {
            ExecutionMode::Sync => self.inner.executions.release_to_caller(&record),
            ExecutionMode::Async | ExecutionMode::Stream => record.snapshot_for_caller(),
        };
        Ok(InvokeOutcome::of(&task, origin, execution))
    }

    /// The execution record the request names (an idempotent retry finds
    /// its own), or a new one.
    fn claim(
        &self,
        request: &InvokeRequest,
        task: &Task,
        function: FunctionHandle,
    ) -> Result<Claimed> {
        let (record, fresh) = self.inner.executions.claim(
            request.execution_id.as_deref(),
            &request.params,
            &task.id,
            task.plugin.function_name(function),
            request.mode,
        )?;
        Ok(Claimed { record, fresh })
    }

    /// The job of one execution, taking the request's parameters,
    /// environment and headers.
    fn job(
        &self,
        request: &mut InvokeRequest,
        task: &Arc<Task>,
        function: FunctionHandle,
        record: &Arc<ExecutionRecord>,
        deadline: Option<Instant>,
        chunks: Option<mpsc::Sender<Value>>,
    ) -> Job {
        let traceparent = request.join_trace(record);
        Job {
            task: Arc::clone(task),
            function,
            record: Arc::clone(record),
            params: std::mem::take(&mut request.params),
            environment: std::mem::take(&mut request.environment),
            headers: std::mem::take(&mut request.headers),
            traceparent,
            deadline,
            acquire_timeout: self.inner.config.pool.acquire_timeout,
            max_retries: request.max_retries,
            fresh_instance: request.force_new_instance,
            mode: request.mode,
            chunks,
            policy: self.inner.policy,
        }
    }

    /// A SYNC or STREAM execution, run while its caller waits. The instance
    /// is claimed first, so an exhausted pool is an error of the request, as
    /// `docs/invocation-flow.md` has it, not a failed execution.
    async fn run_now(
        &self,
        job: Job,
        task: &Task,
        record: &ExecutionRecord,
        ending: Ending,
    ) -> Result<()> {
        let lease = match task
            .pool
            .acquire(job.fresh_instance, job.acquire_wait())
            .await
        {
            Ok(lease) => lease,
            Err(e) => {
                exec::end_unserved(record, &e);
                return Err(e);
            }
        };
        exec::run(job, Some(lease), ending).await;
        Ok(())
    }

    /// An ASYNC execution: a pending slot, the record made durable before
    /// the client hears it was accepted, then run in a task of its own.
    async fn accept(&self, job: Job, record: &Arc<ExecutionRecord>, ending: Ending) -> Result<()> {
        let limit = self.inner.config.executions.max_pending;
        let Some(slot) = PendingSlot::claim(&self.inner, limit) else {
            let e = Error::TooManyPending {
                pending: limit,
                limit,
            };
            exec::end_unserved(record, &e);
            return Err(e);
        };
        if let Err(e) = self.record_accepted(record).await {
            exec::end_unserved(record, &e);
            return Err(e);
        }
        let host = self.clone();
        let ran = Arc::clone(record);
        tokio::spawn(async move {
            let _slot = slot;
            exec::run(job, None, ending).await;
            host.record_ended(&ran).await;
        });
        Ok(())
    }
}

impl InvokeOutcome {
    /// The outcome of a call on a task that existed already.
    fn found(task: &Task, execution: crate::exec::ExecutionSnapshot) -> Self {
        InvokeOutcome::of(task, TaskOrigin::Found, execution)
    }

    fn of(task: &Task, origin: TaskOrigin, execution: crate::exec::ExecutionSnapshot) -> Self {
        InvokeOutcome {
            task_id: Arc::clone(&task.id),
            created_task: origin == TaskOrigin::Created,
            upgraded_task: origin == TaskOrigin::Upgraded,
            execution,
        }
    }
}
