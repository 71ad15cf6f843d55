//! Every execution ends and every slot comes back: callers that go away,
//! cancels racing starts, deleted tasks, plugins that ignore cancellation,
//! stream consumers that stop reading.

use std::sync::Arc;
use std::time::Duration;

use spearlet::artifact::ArtifactSpec;
use spearlet::exec::{ExecutionMode, ExecutionStatus};
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::{Config, Error, Host, Value};
use spearlet_test_artifacts::Artifact;

use crate::helpers::yield_waiting;

fn host_with(edit: impl FnOnce(&mut Config)) -> (Host, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::config_in(data.path());
    config.pool.max_instances = 1;
    edit(&mut config);
    (Host::new(config).unwrap(), data)
}

fn probe(function: &str, ms: i64) -> InvokeRequest {
    InvokeRequest::new(
        Target::NewTask {
            name: "probe".into(),
            description: String::new(),
            artifact: ArtifactSpec::at(Artifact::Probe.path().to_string_lossy()),
        },
        function,
    )
    .param("ms", Value::I64(ms))
}

fn asynchronous(mut req: InvokeRequest) -> InvokeRequest {
    req.mode = ExecutionMode::Async;
    req
}

async fn until_status(host: &Host, id: &str, status: ExecutionStatus) {
    loop {
        let now = host.execution(id).unwrap().status;
        if now == status {
            return;
        }
        assert!(!now.is_final(), "{id} ended {now}, expected {status}");
        yield_waiting("the execution to reach the status").await;
    }
}

async fn until_ended(host: &Host, id: &str) -> spearlet::exec::ExecutionSnapshot {
    loop {
        let e = host.execution(id).unwrap();
        if e.status.is_final() {
            return e;
        }
        yield_waiting("the execution to end").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_while_waiting_for_an_instance_ends_its_execution() {
    let (host, _data) = host_with(|_| {});
    let busy = host
        .invoke(asynchronous(probe("spin", 2_000)))
        .await
        .unwrap();
    until_status(
        &host,
        &busy.execution.execution_id,
        ExecutionStatus::Running,
    )
    .await;

    // A SYNC call queues behind it; its caller gives up while it waits.
    let mut queued = probe("spin", 0);
    queued.execution_id = Some("x".into());
    let mut waiting = Box::pin(host.invoke(queued.clone()));
    while host.execution("x").is_err() {
        tokio::select! {
            biased;
            _ = &mut waiting => panic!("the pool is busy: the call must wait"),
            () = tokio::task::yield_now() => {}
        }
    }
    assert_eq!(
        host.execution("x").unwrap().status,
        ExecutionStatus::Pending
    );
    drop(waiting);

    let ended = host.execution("x").unwrap();
    assert_eq!(ended.status, ExecutionStatus::Cancelled);
    assert_eq!(ended.error.unwrap().code, "cancelled");
    // Asking again with the same id reports the ended execution.
    let again = host.invoke(queued).await.unwrap();
    assert_eq!(again.execution.status, ExecutionStatus::Cancelled);
    assert_eq!(host.stats().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_cancel_of_a_running_call_waits_for_the_plugin() {
    let (host, _data) = host_with(|_| {});
    let running = host.invoke(asynchronous(probe("spin", 300))).await.unwrap();
    let id = running.execution.execution_id.clone();
    until_status(&host, &id, ExecutionStatus::Running).await;
    let (accepted, status) = host.cancel(&id, false).unwrap();
    assert!(accepted);
    assert_eq!(
        status,
        ExecutionStatus::Running,
        "not ended behind the plugin's back"
    );
    let task = host.task(&running.task_id).unwrap();
    assert_eq!(
        task.pool.stats().quarantined,
        0,
        "the instance is not abandoned"
    );
    let done = until_ended(&host, &id).await;
    // The plugin ignores cancellation and returns its result.
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(task.pool.stats().quarantined, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_task_cancels_its_queued_executions_and_creates_no_instance() {
    let (host, _data) = host_with(|_| {});
    let running = host.invoke(asynchronous(probe("spin", 500))).await.unwrap();
    until_status(
        &host,
        &running.execution.execution_id,
        ExecutionStatus::Running,
    )
    .await;
    let queued = host.invoke(asynchronous(probe("spin", 0))).await.unwrap();
    let task = host.task(&running.task_id).unwrap();
    let created = task.pool.stats().created;

    let deleted = host.delete_task(&running.task_id, true, false).unwrap();
    assert_eq!(
        deleted.cancelled_running,
        2,
        "{:?} {:?}",
        host.execution(&running.execution.execution_id).unwrap(),
        host.execution(&queued.execution.execution_id).unwrap()
    );
    let ended = until_ended(&host, &queued.execution.execution_id).await;
    assert_eq!(ended.status, ExecutionStatus::Cancelled);
    assert_eq!(ended.error.unwrap().code, "task_deleted");
    until_ended(&host, &running.execution.execution_id).await;
    assert_eq!(
        task.pool.stats().created,
        created,
        "no instance was made after the delete"
    );
    assert_eq!(
        task.pool.stats().live,
        0,
        "the running instance was destroyed on return"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_is_bounded_and_then_new_calls_are_refused() {
    let (host, _data) = host_with(|c| c.pool.max_quarantined = 3);
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let mut req = probe("spin", 3_000);
        req.timeout = Some(Duration::from_millis(10));
        outcomes.push(host.invoke(req).await);
    }
    let timed_out = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(out) if out.execution.status == ExecutionStatus::Timeout))
        .count();
    assert_eq!(timed_out, 3);
    for refused in &outcomes[3..] {
        match refused {
            Err(Error::QuarantineFull {
                scope,
                quarantined,
                limit,
                ..
            }) => assert_eq!((*scope, *quarantined, *limit), ("task", 3, 3)),
            other => panic!("expected quarantine_full, got {other:?}"),
        }
    }
    let task = host
        .task(&host.tasks().by_name("probe").unwrap().id)
        .unwrap();
    let stats = task.pool.stats();
    // Each timed-out call left its instance quarantined; no more were made.
    assert_eq!((stats.quarantined, stats.live), (3, 3));
    assert_eq!(host.stats().quarantined, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_abandoned_together_never_quarantine_past_the_host_bound() {
    let (host, _data) = host_with(|c| {
        c.pool.max_instances = 6;
        c.pool.max_quarantined = 6;
        c.pool.max_quarantined_total = 2;
    });
    host.invoke(probe("spin", 0)).await.unwrap();
    let task = host.tasks().by_name("probe").unwrap();
    // Six calls running at once, all abandoned before any acquire could
    // look at the count: before the bound was kept at quarantine time,
    // all six were quarantined (and six replacements could be made).
    let mut leases = Vec::new();
    for _ in 0..6 {
        let wait = spearlet::pool::Wait::For(Duration::from_secs(5));
        leases.push(task.pool.acquire(false, wait).await.unwrap());
    }
    for lease in &mut leases {
        lease.quarantine_handle().quarantine();
    }
    let stats = task.pool.stats();
    assert_eq!(stats.quarantined, 2, "{stats:?}");
    assert_eq!(host.stats().quarantined, 2);
    assert!(
        task.pool.try_acquire_idle().is_some_and(|r| r.is_err()),
        "the host's bound is reached: new calls are refused"
    );
    drop(leases);
    assert_eq!(task.pool.stats().quarantined, 0);
    assert_eq!(host.stats().quarantined, 0);
    host.invoke(probe("spin", 0)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_count_never_goes_below_zero_whatever_the_interleaving() {
    let (host, _data) = host_with(|c| c.pool.max_instances = 4);
    host.invoke(probe("spin", 0)).await.unwrap();
    let task = host.tasks().by_name("probe").unwrap();
    for round in 0..200 {
        let mut lease = task
            .pool
            .acquire(false, spearlet::pool::Wait::For(Duration::from_secs(5)))
            .await
            .unwrap();
        let quarantine = lease.quarantine_handle();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let b = Arc::clone(&barrier);
        // The call "returns" on one thread while the waiter gives up on another.
        let returning = std::thread::spawn(move || {
            b.wait();
            drop(lease);
        });
        barrier.wait();
        if round % 2 == 0 {
            quarantine.quarantine();
        } else {
            std::thread::yield_now();
            quarantine.quarantine();
        }
        returning.join().unwrap();
        let stats = task.pool.stats();
        assert_eq!(stats.quarantined, 0, "round {round}: {stats:?}");
        assert!(stats.live <= 4, "round {round}: {stats:?}");
    }
    assert_eq!(host.stats().quarantined, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_consumer_that_stops_reading_cannot_pin_the_plugin() {
    let (host, _data) = host_with(|_| {});
    let mut req = InvokeRequest::new(
        Target::NewTask {
            name: "s".into(),
            description: String::new(),
            artifact: ArtifactSpec::at(Artifact::Stream.path().to_string_lossy()),
        },
        "count",
    )
    .param("n", Value::I64(1_000_000));
    req.timeout = Some(Duration::from_millis(200));
    // Room for one chunk, and nobody reads.
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let outcome = host.stream(req, tx).await.unwrap();
    assert_eq!(outcome.execution.status, ExecutionStatus::Timeout);
    let task = host.task(&outcome.task_id).unwrap();
    // The plugin's `emit` gave up at the deadline, so it returned: nothing
    // stays running or quarantined although the receiver is still alive.
    // Its instance comes back to the pool.
    while task.pool.stats().idle != 1 {
        yield_waiting("the plugin to return").await;
    }
    assert_eq!(task.pool.stats().quarantined, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_refuses_new_calls_and_cancels_async_work_after_the_grace() {
    let (host, _data) = host_with(|c| c.server.shutdown_grace = Duration::from_millis(100));
    let running = host
        .invoke(asynchronous(
            InvokeRequest::new(
                Target::NewTask {
                    name: "z".into(),
                    description: String::new(),
                    artifact: ArtifactSpec::at(Artifact::Sleepy.path().to_string_lossy()),
                },
                "sleep",
            )
            .param("ms", Value::I64(60_000)),
        ))
        .await
        .unwrap();
    let id = running.execution.execution_id.clone();
    until_status(&host, &id, ExecutionStatus::Running).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(spearlet::api::serve(host.clone(), listener, async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();

    assert!(host.is_stopping());
    assert!(matches!(
        host.invoke(probe("spin", 0)).await,
        Err(Error::HostStopping)
    ));
    let ended = host.execution(&id).unwrap();
    assert_eq!(ended.status, ExecutionStatus::Cancelled);
    assert_eq!(ended.error.unwrap().code, "host_stopping");
}
