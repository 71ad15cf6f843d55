//! Execution and instance reports to the SMS (`sms.ExecutionRegistryService`,
//! `sms.InstanceRegistryService`; `docs/cluster.md`, "Reports to the SMS").
//!
//! The SMS's gateway finds an execution it just invoked through these
//! reports, and reuses a live instance's `current_execution_id`; so the
//! node reports each execution when it starts and when it ends, each
//! instance as it changes, and each instance serving an execution again
//! every [`LIVE_INSTANCE_REFRESH`] (the SMS forgets an instance not seen
//! for 180 s).
//!
//! A report never blocks nor fails its caller: [`Reporter::execution`] and
//! [`Reporter::instance`] put it in a bounded queue
//! ([`REPORT_QUEUE_CAPACITY`]) and return; one background task sends the
//! queue in order, one report at a time, so each id's reports arrive in
//! the order they were made.
//!
//! - **Coalescing.** A queued, unsent report is replaced by a newer one for
//!   the same id (it keeps its place in the queue): the final report of an
//!   execution supersedes its start one when both wait.
//! - **`updated_at_ms`.** The SMS keeps the copy with the larger value (last
//!   arrival wins on equal), so each id's reports carry strictly increasing
//!   values: `max(now_ms, last + 1)`, the last value being remembered per
//!   id (at most [`MAX_TRACKED_IDS`]; forgotten once an id's final report
//!   went out). The value is given when the report is sent.
//! - **An SMS that is down.** A report the SMS could not take is put back
//!   at the head of the queue (unless a newer one for its id came) and
//!   retried with jittered exponential backoff. The queue keeps what it
//!   holds up to its bound; past it, the oldest non-final report is dropped
//!   first (a final one only when nothing else is left), and drops are
//!   counted and logged (the first, then every 1000th). A report the SMS
//!   refuses (a malformed one) is dropped and counted as a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use spearlet_proto::sms::execution_registry_service_client::ExecutionRegistryServiceClient;
use spearlet_proto::sms::instance_registry_service_client::InstanceRegistryServiceClient;
use spearlet_proto::sms::{Execution, ExecutionStatus, Instance, InstanceStatus};
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::{Counters, SmsCall};
use crate::error::Error;

/// The most reports waiting to be sent. Past it the oldest non-final report
/// is dropped (see the module's documentation).
pub const REPORT_QUEUE_CAPACITY: usize = 4096;
/// How often an instance serving an execution is reported again, so that
/// the SMS (which forgets instances not seen for 180 s) keeps it active.
pub const LIVE_INSTANCE_REFRESH: Duration = Duration::from_secs(30);
/// The most ids whose last `updated_at_ms` is remembered; past it the
/// half with the oldest values is forgotten (their next report is stamped
/// `now`, which is later unless the clock went back).
const MAX_TRACKED_IDS: usize = 65_536;
/// The most live instances refreshed.
const MAX_LIVE_INSTANCES: usize = 65_536;
/// The first retry's pause ceiling, and the most any retry waits.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// An execution's status, as reported (the SMS's `ExecutionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedStatus {
    /// Accepted, not started.
    Pending,
    /// Running.
    Running,
    /// Ended with a result.
    Completed,
    /// Ended with an error.
    Failed,
    /// Cancelled (SPEAR's "terminated").
    Cancelled,
    /// Ran out of time.
    Timeout,
}

impl ReportedStatus {
    /// Whether the execution has ended (its report is the final one).
    pub const fn is_final(self) -> bool {
        !matches!(self, ReportedStatus::Pending | ReportedStatus::Running)
    }

    fn wire(self) -> ExecutionStatus {
        match self {
            ReportedStatus::Pending => ExecutionStatus::Pending,
            ReportedStatus::Running => ExecutionStatus::Running,
            ReportedStatus::Completed => ExecutionStatus::Completed,
            ReportedStatus::Failed => ExecutionStatus::Failed,
            ReportedStatus::Cancelled => ExecutionStatus::Cancelled,
            ReportedStatus::Timeout => ExecutionStatus::Timeout,
        }
    }
}

/// An instance's status, as reported (the SMS's `InstanceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedInstanceStatus {
    /// Serving.
    Running,
    /// Ready, serving nothing.
    Idle,
    /// Going away.
    Terminating,
    /// Gone (its final report).
    Terminated,
}

impl ReportedInstanceStatus {
    fn wire(self) -> InstanceStatus {
        match self {
            ReportedInstanceStatus::Running => InstanceStatus::Running,
            ReportedInstanceStatus::Idle => InstanceStatus::Idle,
            ReportedInstanceStatus::Terminating => InstanceStatus::Terminating,
            ReportedInstanceStatus::Terminated => InstanceStatus::Terminated,
        }
    }
}

/// One execution's state, for `ReportExecution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    /// The execution's id.
    pub execution_id: String,
    /// The invocation it serves.
    pub invocation_id: String,
    /// Its task (required by the SMS).
    pub task_id: String,
    /// The function it runs.
    pub function_name: String,
    /// The instance running it (required by the SMS).
    pub instance_id: String,
    /// Its status.
    pub status: ReportedStatus,
    /// When it started.
    pub started_at: SystemTime,
    /// When it ended; reported only with a final status.
    pub completed_at: Option<SystemTime>,
    /// Anything else: `execution_time_ms`, `error_message`, ….
    pub metadata: BTreeMap<String, String>,
}

/// One instance's state, for `ReportInstance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    /// The instance's id.
    pub instance_id: String,
    /// Its task (required by the SMS).
    pub task_id: String,
    /// Its status.
    pub status: ReportedInstanceStatus,
    /// When it was made.
    pub created_at: SystemTime,
    /// The execution it serves; "" when it serves nothing (the gateway
    /// routes to a live instance's current execution).
    pub current_execution_id: String,
}

/// What the reporter has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Reports the SMS answered.
    pub sent: u64,
    /// Attempts that failed (the SMS unreachable, or refusing a report).
    pub failed: u64,
    /// Reports dropped unsent because the queue was full.
    pub dropped: u64,
    /// Reports waiting now (the one being sent included).
    pub queued: usize,
}

/// Where reports go and what they are counted under.
#[derive(Debug)]
pub(super) struct Target {
    pub endpoint: Endpoint,
    pub grpc: String,
    pub node_uuid: String,
    pub made: Counters,
    pub failed: Counters,
}

/// The reporter's bounds and pace (constants but in tests).
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub capacity: usize,
    pub refresh: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            capacity: REPORT_QUEUE_CAPACITY,
            refresh: LIVE_INSTANCE_REFRESH,
            retry_base: RETRY_BASE,
            retry_cap: RETRY_CAP,
        }
    }
}

/// Execution and instance reports to the SMS, sent in the background (see
/// the module's documentation). Owned by [`super::Sms`].
#[derive(Debug)]
pub struct Reporter {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Execution(String),
    Instance(String),
}

#[derive(Debug, Clone)]
enum Outgoing {
    Execution(Execution),
    Instance(Instance),
}

#[derive(Debug, Clone)]
struct Entry {
    key: Key,
    report: Outgoing,
    is_final: bool,
    /// An instance report that clears `current_execution_id`: kept like a
    /// final one when the queue is full, since nothing else would tell the
    /// SMS that the instance no longer serves its execution.
    clears: bool,
    /// The SMS already kept a later copy once; it is sent again once.
    rejected: bool,
}

impl Entry {
    /// Dropped only when nothing but such reports is left in a full queue.
    fn kept(&self) -> bool {
        self.is_final || self.clears
    }
}

/// Queued reports in order, at most one per id.
#[derive(Debug, Default)]
struct Queue {
    next: u64,
    entries: BTreeMap<u64, Entry>,
    by_key: HashMap<Key, u64>,
    non_final: BTreeSet<u64>,
}

impl Queue {
    /// Queues `entry` (at `seq` when given, else last), replacing a queued
    /// one for its id; returns what the bound made it drop.
    ///
    /// A replacement goes last, not in its predecessor's place: reports are
    /// sent in the order they were made across ids too. That matters to
    /// SPEAR's SMS, where an execution's report also marks its instance as
    /// serving it: an instance's IDLE report must not overtake the final
    /// report of the execution it ran.
    fn put(&mut self, entry: Entry, seq: Option<u64>, capacity: usize) -> Vec<Entry> {
        if let Some(&old) = self.by_key.get(&entry.key) {
            if seq.is_some() {
                // An entry put back after a failed attempt: the newer
                // report queued for its id since supersedes it.
                return Vec::new();
            }
            self.remove(old);
        }
        let seq = seq.unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.by_key.insert(entry.key.clone(), seq);
        if !entry.kept() {
            self.non_final.insert(seq);
        }
        self.entries.insert(seq, entry);
        let mut dropped = Vec::new();
        while self.entries.len() > capacity.max(1) {
            let victim = self
                .non_final
                .first()
                .copied()
                .or_else(|| self.entries.keys().next().copied());
            match victim.and_then(|seq| self.remove(seq)) {
                Some(entry) => dropped.push(entry),
                None => break,
            }
        }
        dropped
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.by_key.remove(&entry.key);
        self.non_final.remove(&seq);
        Some(entry)
    }

    fn pop(&mut self) -> Option<(u64, Entry)> {
        let seq = *self.entries.keys().next()?;
        self.remove(seq).map(|entry| (seq, entry))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug, Default)]
struct State {
    queue: Queue,
    /// A report is being sent.
    in_flight: bool,
    /// Per id, the last `updated_at_ms` given.
    last: HashMap<Key, i64>,
    /// Instances serving an execution, refreshed periodically.
    live: HashMap<String, Instance>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    settings: Settings,
    state: Mutex<State>,
    /// New work, or closing.
    wake: Notify,
    /// The reporter was dropped.
    close: Notify,
    /// A report was sent or given up (for [`Reporter::flush`]).
    progress: Notify,
    closed: AtomicBool,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Reporter {
    /// A reporter sending to `target`; its task starts now if a tokio
    /// runtime is current, else on the first report made inside one.
    pub(super) fn new(target: Target, settings: Settings) -> Reporter {
        let reporter = Reporter {
            inner: Arc::new(Inner {
                target,
                settings,
                state: Mutex::default(),
                wake: Notify::new(),
                close: Notify::new(),
                progress: Notify::new(),
                closed: AtomicBool::new(false),
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                task: Mutex::new(None),
            }),
        };
        reporter.ensure_started();
        reporter
    }

    /// Queues an execution's report; never blocks, never fails.
    pub fn execution(&self, report: ExecutionReport) {
        let is_final = report.status.is_final();
        let completed_at_ms = match report.completed_at {
            Some(at) if is_final => unix_ms(at),
            // Ended without a time: now.
            None if is_final => unix_ms(SystemTime::now()),
            _ => 0,
        };
        let execution = Execution {
            execution_id: report.execution_id.clone(),
            invocation_id: report.invocation_id,
            task_id: report.task_id,
            function_name: report.function_name,
            node_uuid: self.inner.target.node_uuid.clone(),
            instance_id: report.instance_id,
            status: report.status.wire().into(),
            started_at_ms: unix_ms(report.started_at),
            completed_at_ms,
            log_ref: None,
            metadata: report.metadata.into_iter().collect(),
            updated_at_ms: 0,
        };
        self.inner.push(
            Entry {
                key: Key::Execution(report.execution_id),
                report: Outgoing::Execution(execution),
                is_final,
                clears: false,
                rejected: false,
            },
            |_| {},
        );
        self.ensure_started();
    }

    /// Queues an instance's report; never blocks, never fails. An instance
    /// serving an execution (not terminated, `current_execution_id` set)
    /// is reported again every [`LIVE_INSTANCE_REFRESH`] until a later
    /// report clears it.
    pub fn instance(&self, report: InstanceReport) {
        let is_final = report.status == ReportedInstanceStatus::Terminated;
        let clears = report.current_execution_id.is_empty();
        let live = !is_final && !clears;
        let instance = Instance {
            instance_id: report.instance_id.clone(),
            task_id: report.task_id,
            node_uuid: self.inner.target.node_uuid.clone(),
            status: report.status.wire().into(),
            created_at_ms: unix_ms(report.created_at),
            updated_at_ms: 0,
            last_seen_ms: 0,
            current_execution_id: report.current_execution_id,
            metadata: HashMap::new(),
        };
        let id = report.instance_id;
        let copy = live.then(|| instance.clone());
        self.inner.push(
            Entry {
                key: Key::Instance(id.clone()),
                report: Outgoing::Instance(instance),
                is_final,
                clears,
                rejected: false,
            },
            move |state| match copy {
                Some(instance) => {
                    if state.live.len() < MAX_LIVE_INSTANCES || state.live.contains_key(&id) {
                        state.live.insert(id, instance);
                    }
                }
                None => {
                    state.live.remove(&id);
                }
            },
        );
        self.ensure_started();
    }

    /// What the reporter has done so far.
    pub fn stats(&self) -> ReportStats {
        let state = self.inner.state();
        ReportStats {
            sent: self.inner.sent.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            queued: state.queue.len() + usize::from(state.in_flight),
        }
    }

    /// Waits until every queued report was sent (or given up); callers
    /// bound it (`tokio::time::timeout`): while the SMS is down it waits.
    pub async fn flush(&self) {
        self.ensure_started();
        loop {
            let progress = self.inner.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let state = self.inner.state();
                if state.queue.len() == 0 && !state.in_flight {
                    return;
                }
            }
            progress.await;
        }
    }

    /// The instances refreshed periodically now.
    #[cfg(test)]
    fn live_instances(&self) -> usize {
        self.inner.state().live.len()
    }

    /// Starts the sending task when it is not running and a runtime is
    /// current (a task whose runtime went away is started again).
    fn ensure_started(&self) {
        let mut task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *task = Some(runtime.spawn(Arc::clone(&self.inner).run()));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.close.notify_one();
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `entry`, with `also` done under the same lock.
    fn push(&self, entry: Entry, also: impl FnOnce(&mut State)) {
        let dropped = {
            let mut state = self.state();
            also(&mut state);
            state.queue.put(entry, None, self.settings.capacity)
        };
        self.count_drops(dropped.len());
        self.wake.notify_one();
    }

    fn count_drops(&self, n: usize) {
        for _ in 0..n {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if total == 1 || total.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = total,
                    capacity = self.settings.capacity,
                    "the SMS report queue is full: dropping the oldest unsent reports"
                );
            }
        }
    }

    async fn run(self: Arc<Self>) {
        // Made here, in the runtime this task runs on (a lazy channel's
        // worker lives there).
        let channel = self.target.endpoint.connect_lazy();
        let refresh = self.settings.refresh;
        let mut next_refresh = Instant::now() + refresh;
        let mut failures = 0u32;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            if Instant::now() >= next_refresh {
                self.refresh_live();
                next_refresh = Instant::now() + refresh;
            }
            let next = {
                let mut state = self.state();
                match state.queue.pop() {
                    Some((seq, mut entry)) => {
                        state.in_flight = true;
                        let at = stamp(&mut state.last, &entry.key);
                        set_updated_at(&mut entry.report, at);
                        Some((seq, entry, at))
                    }
                    None => None,
                }
            };
            let Some((seq, entry, at)) = next else {
                self.progress.notify_waiters();
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep_until(next_refresh) => {}
                }
                continue;
            };
            let result = self.send(&channel, &entry.report).await;
            let (dropped, retry) = self.settle(seq, entry, at, result, &mut failures);
            self.progress.notify_waiters();
            self.count_drops(dropped);
            if retry {
                let pause = crate::backoff::full_jitter(
                    self.settings.retry_base,
                    self.settings.retry_cap,
                    failures,
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.close.notified() => return,
                }
            }
        }
    }

    /// Takes a sent report's outcome: what the bound dropped, and whether
    /// to pause before the next attempt.
    fn settle(
        &self,
        seq: u64,
        entry: Entry,
        at: i64,
        result: Result<(bool, i64), Error>,
        failures: &mut u32,
    ) -> (usize, bool) {
        let mut state = self.state();
        state.in_flight = false;
        let capacity = self.settings.capacity;
        match result {
            Ok((accepted, stored)) => {
                *failures = 0;
                self.sent.fetch_add(1, Ordering::Relaxed);
                let superseded = state.queue.by_key.contains_key(&entry.key);
                if !accepted && stored >= at {
                    // The SMS holds a later copy (a clock gone back): send
                    // this one once more, stamped after that copy.
                    let last = state.last.entry(entry.key.clone()).or_insert(stored);
                    *last = (*last).max(stored);
                    if !superseded && !entry.rejected {
                        let again = Entry {
                            rejected: true,
                            ..entry
                        };
                        return (state.queue.put(again, Some(seq), capacity).len(), false);
                    }
                } else if entry.is_final && !superseded {
                    state.last.remove(&entry.key);
                }
                (0, false)
            }
            Err(Error::SmsUnavailable { call, reason, .. }) => {
                *failures += 1;
                self.failed.fetch_add(1, Ordering::Relaxed);
                if *failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(
                        %call,
                        %reason,
                        failures = *failures,
                        queued = state.queue.len() + 1,
                        "the SMS cannot take reports; they are kept and retried"
                    );
                }
                // Back at the head, unless a newer one for its id came.
                (state.queue.put(entry, Some(seq), capacity).len(), true)
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "the SMS refused a report; it is dropped");
                (0, false)
            }
        }
    }

    /// Queues a fresh report of every live instance that has none queued.
    fn refresh_live(&self) {
        let dropped = {
            let mut state = self.state();
            let state = &mut *state;
            let mut dropped = Vec::new();
            for (id, instance) in &state.live {
                let key = Key::Instance(id.clone());
                if state.queue.by_key.contains_key(&key) {
                    continue;
                }
                dropped.extend(state.queue.put(
                    Entry {
                        key,
                        report: Outgoing::Instance(instance.clone()),
                        is_final: false,
                        clears: false,
                        rejected: false,
                    },
                    None,
                    self.settings.capacity,
                ));
            }
            dropped.len()
        };
        self.count_drops(dropped);
    }

    /// Sends one report; its answer's `accepted` and stored `updated_at_ms`.
    async fn send(&self, channel: &Channel, report: &Outgoing) -> Result<(bool, i64), Error> {
        let (call, result) = match report {
            Outgoing::Execution(execution) => (
                SmsCall::ReportExecution,
                ExecutionRegistryServiceClient::new(channel.clone())
                    .report_execution(execution.clone())
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.accepted, r.stored_updated_at_ms)
                    }),
            ),
            Outgoing::Instance(instance) => (
                SmsCall::ReportInstance,
                InstanceRegistryServiceClient::new(channel.clone())
                    .report_instance(instance.clone())
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.accepted, r.stored_updated_at_ms)
                    }),
            ),
        };
        self.target.made[call.index()].fetch_add(1, Ordering::Relaxed);
        result.map_err(|status| {
            self.target.failed[call.index()].fetch_add(1, Ordering::Relaxed);
            super::status_error(call, &self.target.grpc, &status)
        })
    }
}

/// The next `updated_at_ms` for `key`: `max(now, last + 1)`, remembered.
fn stamp(last: &mut HashMap<Key, i64>, key: &Key) -> i64 {
    let now = unix_ms(SystemTime::now());
    let at = last.get(key).map_or(now, |&l| now.max(l.saturating_add(1)));
    last.insert(key.clone(), at);
    if last.len() > MAX_TRACKED_IDS {
        // Forget the older half (a burst within one millisecond is never
        // in it).
        let mut values: Vec<i64> = last.values().copied().collect();
        let middle = values.len() / 2;
        let (_, &mut cut, _) = values.select_nth_unstable(middle);
        last.retain(|k, v| *v > cut || k == key);
    }
    at
}

fn set_updated_at(report: &mut Outgoing, at: i64) {
    match report {
        Outgoing::Execution(execution) => execution.updated_at_ms = at,
        Outgoing::Instance(instance) => {
            instance.updated_at_ms = at;
            instance.last_seen_ms = at;
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use spearlet_proto::sms::execution_registry_service_server::{
        ExecutionRegistryService, ExecutionRegistryServiceServer,
    };
    use spearlet_proto::sms::instance_registry_service_server::{
        InstanceRegistryService, InstanceRegistryServiceServer,
    };
    use spearlet_proto::sms::{ReportExecutionResponse, ReportInstanceResponse};
    use tokio::sync::{mpsc, Semaphore};
    use tonic::{Request, Response, Status};

    use super::*;

    /// The longest any wait below may take: a bound for a broken reporter,
    /// never a means of synchronisation.
    const PATIENCE: Duration = Duration::from_secs(30);

    #[derive(Debug, Clone)]
    enum Got {
        Execution(Execution),
        Instance(Instance),
    }

    impl Got {
        fn id(&self) -> String {
            match self {
                Got::Execution(e) => format!("e:{}", e.execution_id),
                Got::Instance(i) => format!("i:{}", i.instance_id),
            }
        }

        fn updated_at(&self) -> i64 {
            match self {
                Got::Execution(e) => e.updated_at_ms,
                Got::Instance(i) => i.updated_at_ms,
            }
        }
    }

    /// The SMS's registries: each report goes to a channel, then (with a
    /// gate) waits for a permit; kept as the SMS keeps it.
    #[derive(Debug, Clone)]
    struct Registry {
        got: mpsc::UnboundedSender<Got>,
        gate: Option<Arc<Semaphore>>,
        stored: Arc<Mutex<HashMap<String, i64>>>,
    }

    impl Registry {
        async fn take(&self, got: Got) -> (bool, i64) {
            let (id, at) = (got.id(), got.updated_at());
            let _ = self.got.send(got);
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            let mut stored = self.stored.lock().unwrap();
            let kept = stored.entry(id).or_insert(0);
            let accepted = at >= *kept;
            if accepted {
                *kept = at;
            }
            (accepted, *kept)
        }
    }

    #[tonic::async_trait]
    impl ExecutionRegistryService for Registry {
        async fn report_execution(
            &self,
            request: Request<Execution>,
        ) -> Result<Response<ReportExecutionResponse>, Status> {
            let (accepted, stored_updated_at_ms) =
                self.take(Got::Execution(request.into_inner())).await;
            Ok(Response::new(ReportExecutionResponse {
                accepted,
                stored_updated_at_ms,
            }))
        }
    }

    #[tonic::async_trait]
    impl InstanceRegistryService for Registry {
        async fn report_instance(
            &self,
            request: Request<Instance>,
        ) -> Result<Response<ReportInstanceResponse>, Status> {
            let (accepted, stored_updated_at_ms) =
                self.take(Got::Instance(request.into_inner())).await;
            Ok(Response::new(ReportInstanceResponse {
                accepted,
                stored_updated_at_ms,
            }))
        }
    }

    /// Serves the registries on `listener`; what they receive comes out of
    /// the channel.
    fn serve(
        listener: tokio::net::TcpListener,
        gate: Option<Arc<Semaphore>>,
    ) -> mpsc::UnboundedReceiver<Got> {
        let (got, received) = mpsc::unbounded_channel();
        let registry = Registry {
            got,
            gate,
            stored: Arc::default(),
        };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ExecutionRegistryServiceServer::new(registry.clone()))
                .add_service(InstanceRegistryServiceServer::new(registry))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        received
    }

    async fn server(gate: Option<Arc<Semaphore>>) -> (SocketAddr, mpsc::UnboundedReceiver<Got>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, serve(listener, gate))
    }

    /// An address nothing listens on.
    async fn closed_port() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn settings() -> Settings {
        Settings {
            capacity: REPORT_QUEUE_CAPACITY,
            refresh: Duration::from_secs(3600),
            retry_base: Duration::from_millis(1),
            retry_cap: Duration::from_millis(20),
        }
    }

    fn reporter(addr: SocketAddr, settings: Settings) -> Reporter {
        let grpc = format!("http://{addr}");
        let endpoint = Endpoint::from_shared(grpc.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        Reporter::new(
            Target {
                endpoint,
                grpc,
                node_uuid: "node-1".into(),
                made: Counters::default(),
                failed: Counters::default(),
            },
            settings,
        )
    }

    fn execution(id: &str, status: ReportedStatus) -> ExecutionReport {
        ExecutionReport {
            execution_id: id.into(),
            invocation_id: format!("inv-{id}"),
            task_id: "task-1".into(),
            function_name: "add".into(),
            instance_id: "instance-1".into(),
            status,
            started_at: SystemTime::now(),
            completed_at: status.is_final().then(SystemTime::now),
            metadata: BTreeMap::from([("execution_time_ms".into(), "1".into())]),
        }
    }

    fn instance(id: &str, status: ReportedInstanceStatus, serving: &str) -> InstanceReport {
        InstanceReport {
            instance_id: id.into(),
            task_id: "task-1".into(),
            status,
            created_at: SystemTime::now(),
            current_execution_id: serving.into(),
        }
    }

    async fn flush(reporter: &Reporter) {
        tokio::time::timeout(PATIENCE, reporter.flush())
            .await
            .expect("the reports were sent");
    }

    async fn next(received: &mut mpsc::UnboundedReceiver<Got>) -> Got {
        tokio::time::timeout(PATIENCE, received.recv())
            .await
            .expect("a report arrived")
            .unwrap()
    }

    /// Waits (bounded) until `done` holds of the reporter's stats; checked
    /// after each attempt.
    async fn until(reporter: &Reporter, done: impl Fn(&ReportStats) -> bool) {
        let wait = async {
            loop {
                let progress = reporter.inner.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if done(&reporter.stats()) {
                    return;
                }
                progress.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("the reporter got there");
    }

    fn drain(received: &mut mpsc::UnboundedReceiver<Got>) -> Vec<Got> {
        std::iter::from_fn(|| received.try_recv().ok()).collect()
    }

    /// Per id, what arrived, in order.
    fn by_id(got: &[Got]) -> HashMap<String, Vec<Got>> {
        let mut out: HashMap<String, Vec<Got>> = HashMap::new();
        for g in got {
            out.entry(g.id()).or_default().push(g.clone());
        }
        out
    }

    #[tokio::test]
    async fn each_ids_reports_arrive_in_order_with_increasing_updated_at() {
        let (addr, mut received) = server(None).await;
        let reports = reporter(addr, settings());
        for i in 0..50 {
            let id = format!("x{i}");
            reports.execution(execution(&id, ReportedStatus::Running));
            reports.instance(instance("i0", ReportedInstanceStatus::Running, &id));
            reports.execution(execution(&id, ReportedStatus::Completed));
            reports.instance(instance("i0", ReportedInstanceStatus::Idle, ""));
        }
        // One id, every report sent: within one millisecond the values
        // still grow.
        for i in 0..20 {
            let status = if i % 2 == 0 {
                ReportedInstanceStatus::Running
            } else {
                ReportedInstanceStatus::Idle
            };
            reports.instance(instance("i1", status, ""));
            flush(&reports).await;
        }
        let got = drain(&mut received);
        let ids = by_id(&got);
        for (id, reports) in &ids {
            for pair in reports.windows(2) {
                assert!(
                    pair[0].updated_at() < pair[1].updated_at(),
                    "{id}: {:?}",
                    reports
                );
            }
        }
        assert_eq!(ids["i:i1"].len(), 20);
        for i in 0..50 {
            let Some(Got::Execution(last)) = ids[&format!("e:x{i}")].last().cloned() else {
                unreachable!()
            };
            assert_eq!(last.status, ExecutionStatus::Completed as i32);
            assert!(last.completed_at_ms > 0);
            assert_eq!(last.node_uuid, "node-1");
            assert_eq!(last.metadata["execution_time_ms"], "1");
        }
        for g in &got {
            if let Got::Execution(e) = g {
                if e.status == ExecutionStatus::Running as i32 {
                    assert_eq!(e.completed_at_ms, 0);
                }
            }
        }
        let Some(Got::Instance(last)) = ids["i:i0"].last().cloned() else {
            unreachable!()
        };
        assert_eq!(
            (last.status, last.current_execution_id.as_str()),
            (InstanceStatus::Idle as i32, "")
        );
        let stats = reports.stats();
        assert_eq!(stats.sent, got.len() as u64);
        assert_eq!((stats.failed, stats.dropped, stats.queued), (0, 0, 0));
        let made = &reports.inner.target.made;
        assert_eq!(
            made[SmsCall::ReportExecution.index()].load(Ordering::Relaxed)
                + made[SmsCall::ReportInstance.index()].load(Ordering::Relaxed),
            stats.sent
        );
        // Ended executions are forgotten; the instances are not.
        let last = &reports.inner.state().last;
        assert!(
            last.keys().all(|k| matches!(k, Key::Instance(_))),
            "{last:?}"
        );
    }

    #[tokio::test]
    async fn a_queued_report_is_replaced_by_a_newer_one() {
        let gate = Arc::new(Semaphore::new(0));
        let (addr, mut received) = server(Some(Arc::clone(&gate))).await;
        let reports = reporter(addr, settings());
        reports.execution(execution("y", ReportedStatus::Running));
        // "y" is being sent (held at the SMS): the rest waits.
        assert_eq!(next(&mut received).await.id(), "e:y");
        reports.execution(execution("x", ReportedStatus::Pending));
        reports.execution(execution("x", ReportedStatus::Running));
        reports.execution(execution("x", ReportedStatus::Completed));
        reports.instance(instance("i", ReportedInstanceStatus::Running, "x"));
        reports.instance(instance("i", ReportedInstanceStatus::Idle, ""));
        assert_eq!(reports.stats().queued, 3);
        gate.add_permits(100);
        let Got::Execution(x) = next(&mut received).await else {
            panic!("the execution first")
        };
        assert_eq!(
            (x.execution_id.as_str(), x.status),
            ("x", ExecutionStatus::Completed as i32)
        );
        let Got::Instance(i) = next(&mut received).await else {
            panic!("then the instance")
        };
        assert_eq!(
            (i.status, i.current_execution_id.as_str()),
            (InstanceStatus::Idle as i32, "")
        );
        flush(&reports).await;
        assert!(drain(&mut received).is_empty());
        assert_eq!(reports.stats().sent, 3);
        assert_eq!(reports.live_instances(), 0);
    }

    #[tokio::test]
    async fn an_instance_cleared_after_its_execution_ended_is_told_after_that_end() {
        // The SMS marks an execution's instance as serving it on every
        // report of the execution: the instance's IDLE report must come
        // after the execution's final one, even when its RUNNING report was
        // queued first.
        let gate = Arc::new(Semaphore::new(0));
        let (addr, mut received) = server(Some(Arc::clone(&gate))).await;
        let reports = reporter(addr, settings());
        reports.execution(execution("e", ReportedStatus::Running));
        assert_eq!(next(&mut received).await.id(), "e:e");
        reports.instance(instance("i", ReportedInstanceStatus::Running, "e"));
        reports.execution(execution("e", ReportedStatus::Completed));
        reports.instance(instance("i", ReportedInstanceStatus::Idle, ""));
        gate.add_permits(100);
        let order: Vec<String> = [
            next(&mut received).await.id(),
            next(&mut received).await.id(),
        ]
        .into();
        assert_eq!(order, ["e:e", "i:i"]);
        flush(&reports).await;
        assert!(drain(&mut received).is_empty());
    }

    #[test]
    fn a_full_queue_keeps_the_report_that_clears_an_instance() {
        let entry = |key: Key, clears| Entry {
            key,
            report: Outgoing::Execution(Execution::default()),
            is_final: false,
            clears,
            rejected: false,
        };
        let mut queue = Queue::default();
        queue.put(entry(Key::Instance("i".into()), true), None, 2);
        queue.put(entry(Key::Execution("a".into()), false), None, 2);
        let dropped = queue.put(entry(Key::Execution("b".into()), false), None, 2);
        assert_eq!(dropped[0].key, Key::Execution("a".into()));
        assert_eq!(queue.pop().unwrap().1.key, Key::Instance("i".into()));
    }

    #[test]
    fn the_queue_drops_the_oldest_non_final_first() {
        let entry = |id: &str, is_final| Entry {
            key: Key::Execution(id.into()),
            report: Outgoing::Execution(Execution::default()),
            is_final,
            clears: false,
            rejected: false,
        };
        let mut queue = Queue::default();
        assert!(queue.put(entry("f1", true), None, 3).is_empty());
        assert!(queue.put(entry("a", false), None, 3).is_empty());
        assert!(queue.put(entry("b", false), None, 3).is_empty());
        let dropped = queue.put(entry("c", false), None, 3);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].key, Key::Execution("a".into()));
        // Replacing moves it last and drops nothing.
        assert!(queue.put(entry("b", true), None, 3).is_empty());
        let dropped = queue.put(entry("d", true), None, 3);
        assert_eq!(dropped[0].key, Key::Execution("c".into()));
        // Only finals: the oldest goes.
        let dropped = queue.put(entry("e", true), None, 3);
        assert_eq!(dropped[0].key, Key::Execution("f1".into()));
        let order: Vec<Key> = std::iter::from_fn(|| queue.pop().map(|(_, e)| e.key)).collect();
        assert_eq!(order, ["b", "d", "e"].map(|id| Key::Execution(id.into())));
        // An entry put back after a failure yields to a newer one.
        queue.put(entry("g", false), None, 3);
        let (seq, old) = queue.pop().unwrap();
        queue.put(entry("g", true), None, 3);
        assert!(queue.put(old, Some(seq), 3).is_empty());
        assert!(queue.pop().unwrap().1.is_final);
    }

    #[tokio::test]
    async fn an_unreachable_sms_keeps_a_bounded_queue_and_catches_up() {
        let addr = closed_port().await;
        let capacity = 8;
        let reports = reporter(
            addr,
            Settings {
                capacity,
                ..settings()
            },
        );
        for i in 0..3 {
            reports.execution(execution(&format!("f{i}"), ReportedStatus::Failed));
        }
        for i in 0..20 {
            reports.execution(execution(&format!("n{i}"), ReportedStatus::Running));
        }
        let stats = reports.stats();
        assert!(stats.queued <= capacity + 1, "{stats:?}");
        assert!(stats.dropped >= 23 - (capacity as u64 + 1), "{stats:?}");
        assert_eq!(stats.sent, 0);
        // Attempts fail, and what is queued stays.
        until(&reports, |s| s.failed >= 3).await;
        let stats = reports.stats();
        assert!(stats.queued <= capacity + 1, "{stats:?}");
        assert_eq!(stats.sent, 0);

        // The SMS comes back on the same port.
        let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
            eprintln!("{addr} was taken meanwhile: the catch-up is not checked");
            return;
        };
        let mut received = serve(listener, None);
        flush(&reports).await;
        let got = drain(&mut received);
        let ids: BTreeSet<String> = got.iter().map(Got::id).collect();
        for i in 0..3 {
            assert!(
                ids.contains(&format!("e:f{i}")),
                "final reports are kept: {ids:?}"
            );
        }
        assert!(
            ids.contains("e:n19"),
            "the newest reports are kept: {ids:?}"
        );
        let stats = reports.stats();
        assert_eq!(stats.sent + stats.dropped, 23, "{stats:?}");
        assert!(stats.failed >= 1, "{stats:?}");
        let failed = &reports.inner.target.failed;
        assert!(failed[SmsCall::ReportExecution.index()].load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn reports_never_block() {
        // A current-thread runtime: a report that waited for the sender
        // (which cannot run until this test yields) would never return.
        let reports = reporter(closed_port().await, settings());
        for i in 0..10_000 {
            reports.execution(execution(&format!("x{i}"), ReportedStatus::Running));
            reports.instance(instance(
                &format!("i{i}"),
                ReportedInstanceStatus::Running,
                "x",
            ));
        }
        let stats = reports.stats();
        assert!(stats.queued <= REPORT_QUEUE_CAPACITY + 1, "{stats:?}");
        assert_eq!(stats.dropped as usize + stats.queued, 20_000, "{stats:?}");
    }

    #[test]
    fn reports_made_outside_a_runtime_wait_for_one() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (addr, mut received) = runtime.block_on(server(None));
        // Made and used outside the runtime: queued, nothing started.
        let reports = reporter(addr, settings());
        reports.execution(execution("a", ReportedStatus::Running));
        assert_eq!(reports.stats().queued, 1);
        runtime.block_on(async {
            reports.execution(execution("b", ReportedStatus::Running));
            flush(&reports).await;
        });
        let ids: BTreeSet<String> = drain(&mut received).iter().map(Got::id).collect();
        assert_eq!(ids, BTreeSet::from(["e:a".to_owned(), "e:b".to_owned()]));
        // Its runtime gone, the next one it is used in sends.
        for id in ["c", "d"] {
            let other = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            other.block_on(async {
                reports.execution(execution(id, ReportedStatus::Running));
                flush(&reports).await;
            });
            let got: Vec<String> = drain(&mut received).iter().map(Got::id).collect();
            assert_eq!(got, [format!("e:{id}")]);
        }
    }

    #[tokio::test]
    async fn live_instances_are_reported_again_until_cleared() {
        let (addr, mut received) = server(None).await;
        let reports = reporter(
            addr,
            Settings {
                refresh: Duration::from_millis(5),
                ..settings()
            },
        );
        reports.instance(instance("i", ReportedInstanceStatus::Running, "x"));
        assert_eq!(reports.live_instances(), 1);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let Got::Instance(i) = next(&mut received).await else {
                panic!("only instances are reported")
            };
            assert_eq!(i.current_execution_id, "x");
            assert_eq!(i.last_seen_ms, i.updated_at_ms);
            seen.push(i.updated_at_ms);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        reports.instance(instance("i", ReportedInstanceStatus::Idle, ""));
        assert_eq!(reports.live_instances(), 0);
        flush(&reports).await;
        let Some(Got::Instance(last)) = drain(&mut received).pop() else {
            panic!("the idle report was sent")
        };
        assert_eq!(
            (last.status, last.current_execution_id.as_str()),
            (InstanceStatus::Idle as i32, "")
        );
        // A terminated instance is not refreshed either.
        reports.instance(instance("j", ReportedInstanceStatus::Terminated, "x"));
        assert_eq!(reports.live_instances(), 0);
    }
}
