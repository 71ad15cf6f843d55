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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use spearlet_proto::sms::execution_registry_service_client::ExecutionRegistryServiceClient;
use spearlet_proto::sms::instance_registry_service_client::InstanceRegistryServiceClient;
use spearlet_proto::sms::{Execution, Instance};
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

mod kinds;
mod queue;

pub use kinds::{
    ExecutionReport, InstanceReport, ReportStats, ReportedInstanceStatus, ReportedStatus,
};
use queue::{Entry, Key, Outgoing, Queue};

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
mod tests;
