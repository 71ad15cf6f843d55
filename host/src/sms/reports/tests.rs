use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use spearlet_proto::sms::execution_registry_service_server::{
    ExecutionRegistryService, ExecutionRegistryServiceServer,
};
use spearlet_proto::sms::instance_registry_service_server::{
    InstanceRegistryService, InstanceRegistryServiceServer,
};
use spearlet_proto::sms::{
    ExecutionStatus, InstanceStatus, ReportExecutionResponse, ReportInstanceResponse,
};
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
        let (accepted, stored_updated_at_ms) = self.take(Got::Instance(request.into_inner())).await;
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
