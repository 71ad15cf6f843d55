//! The process tier as a task's tier, through the host: crashes in every
//! mode, backoff, garbage, the memory cap, deadlines, and what crosses the
//! process boundary.

use std::collections::BTreeMap;

use spearlet::artifact::ArtifactSpec;
use spearlet::exec::{ExecutionMode, ExecutionStatus};
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::isolate::ISOLATION_KEY;
use spearlet::{Host, Value};
use spearlet_test_artifacts::Artifact;

use crate::helpers::yield_waiting;

fn host() -> (Host, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let host = Host::new(crate::helpers::config_in(data.path())).unwrap();
    (host, data)
}

/// Creates task `name` in the process tier (with `extra` metadata) by
/// calling `function`; returns its id.
async fn isolated_task(
    host: &Host,
    name: &str,
    artifact: Artifact,
    extra: &[(&str, &str)],
) -> String {
    let (function, args) = first_call(artifact);
    let mut request = InvokeRequest::new(
        Target::NewTask {
            name: name.into(),
            description: String::new(),
            artifact: ArtifactSpec::at(artifact.path().to_string_lossy()),
        },
        function,
    );
    for (name, value) in args {
        request = request.param(name, value);
    }
    request.metadata = BTreeMap::from([(ISOLATION_KEY.to_owned(), "process".to_owned())]);
    for (k, v) in extra {
        request.metadata.insert((*k).to_owned(), (*v).to_owned());
    }
    let out = host.invoke(request).await.expect("the task is created");
    assert_eq!(
        out.execution.status,
        ExecutionStatus::Completed,
        "{:?}",
        out.execution.error
    );
    out.task_id.to_string()
}

/// A harmless call of each plugin, to create its task with.
fn first_call(artifact: Artifact) -> (&'static str, Vec<(&'static str, Value)>) {
    match artifact {
        Artifact::Faulty => ("flaky", vec![("fail_times", Value::I64(0))]),
        Artifact::Probe => ("trace", vec![]),
        Artifact::Stream => ("count", vec![("n", Value::I64(0))]),
        _ => ("nop", vec![]),
    }
}

fn on(task_id: &str, function: &str, args: &[(&str, Value)]) -> InvokeRequest {
    let mut request = InvokeRequest::new(
        Target::ExistingTask {
            task_id: task_id.to_owned(),
            create_if_not_exists: false,
            artifact: None,
            name: String::new(),
            description: String::new(),
        },
        function,
    );
    for (name, value) in args {
        request = request.param(*name, value.clone());
    }
    request
}

async fn ended(host: &Host, id: &str) -> spearlet::exec::ExecutionSnapshot {
    loop {
        let e = host.execution(id).unwrap();
        if e.status.is_final() {
            return e;
        }
        yield_waiting("the execution to end").await;
    }
}

/// Waits until no call holds or quarantines an instance of `task`: a
/// worker that ignored its deadline has been killed.
async fn until_nothing_held(host: &Host, task: &str) {
    loop {
        let stats = host.task(task).unwrap().pool.stats();
        if stats.quarantined == 0 && stats.busy == 0 {
            return;
        }
        yield_waiting("the stuck worker to be killed").await;
    }
}

/// Runs `request` in `mode` to its end.
async fn run_in(
    host: &Host,
    mut request: InvokeRequest,
    mode: ExecutionMode,
) -> spearlet::exec::ExecutionSnapshot {
    match mode {
        ExecutionMode::Sync => host.invoke(request).await.unwrap().execution,
        ExecutionMode::Async => {
            request.mode = ExecutionMode::Async;
            let accepted = host.invoke(request).await.unwrap();
            ended(host, &accepted.execution.execution_id).await
        }
        ExecutionMode::Stream => {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let out = host.stream(request, tx).await.unwrap();
            drain.await.unwrap();
            out.execution
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_kind_in_every_mode_fails_one_call_and_the_next_succeeds() {
    let (host, _data) = host();
    let task = isolated_task(&host, "faulty", Artifact::Faulty, &[]).await;
    let ok = || on(&task, "flaky", &[("fail_times", Value::I64(0))]);
    for mode in [
        ExecutionMode::Sync,
        ExecutionMode::Async,
        ExecutionMode::Stream,
    ] {
        for (function, args, ended) in [
            ("segfault", vec![], "SIGSEGV"),
            ("abort", vec![], "SIGABRT"),
            ("exit", vec![("code", Value::I64(7))], "status 7"),
            ("overflow", vec![], "killed by signal"),
        ] {
            let crashed = run_in(&host, on(&task, function, &args), mode).await;
            assert_eq!(
                crashed.status,
                ExecutionStatus::Failed,
                "{function} {mode:?}"
            );
            let error = crashed.error.expect("a failed execution says why");
            assert_eq!(error.code, "plugin_crashed", "{function} {mode:?}");
            assert!(
                error.message.contains(ended),
                "{function} {mode:?}: {}",
                error.message
            );
            let next = run_in(&host, ok(), mode).await;
            assert_eq!(
                next.status,
                ExecutionStatus::Completed,
                "after {function} {mode:?}: {:?}",
                next.error
            );
        }
    }
    let stats = host.task(&task).unwrap().pool.stats();
    assert_eq!(stats.worker_crashes, 12);
    assert!(
        !stats.crash_looping,
        "a success between crashes resets the backoff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_retried_on_a_fresh_worker_when_the_caller_allows() {
    let (host, _data) = host();
    let task = isolated_task(&host, "faulty", Artifact::Faulty, &[]).await;
    let mut request = on(&task, "abort", &[]);
    request.max_retries = 1;
    let out = host.invoke(request).await.unwrap().execution;
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.attempts, 2, "the crash was retried once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loops_are_refused_at_once_with_a_time_to_come_back() {
    let (host, _data) = host();
    let task = isolated_task(&host, "faulty", Artifact::Faulty, &[]).await;
    for _ in 0..3 {
        let out = host
            .invoke(on(&task, "abort", &[]))
            .await
            .unwrap()
            .execution;
        assert_eq!(out.error.unwrap().code, "plugin_crashed");
    }
    let refused = host
        .invoke(on(&task, "flaky", &[("fail_times", Value::I64(0))]))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), "crash_looping", "{refused}");
    assert!(host.task(&task).unwrap().pool.stats().crash_looping);
    let status = tonic::Status::from(refused);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    let retry = status.get_details_retry_info().expect("a RetryInfo detail");
    assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_writing_garbage_into_its_channel_counts_as_a_crash() {
    let (host, _data) = host();
    let task = isolated_task(&host, "faulty", Artifact::Faulty, &[]).await;
    let out = host
        .invoke(on(&task, "scribble", &[]))
        .await
        .unwrap()
        .execution;
    let error = out.error.expect("failed");
    assert_eq!(error.code, "plugin_crashed");
    assert!(error.message.contains("garbage"), "{}", error.message);
    let next = host
        .invoke(on(&task, "flaky", &[("fail_times", Value::I64(0))]))
        .await
        .unwrap();
    assert_eq!(next.execution.status, ExecutionStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_memory_cap_fails_and_its_worker_is_replaced() {
    let (host, _data) = host();
    let task = isolated_task(
        &host,
        "faulty",
        Artifact::Faulty,
        &[("spearlet.memory.max", "67108864")],
    )
    .await;
    let small = host
        .invoke(on(&task, "hog", &[("bytes", Value::I64(1 << 20))]))
        .await
        .unwrap();
    assert_eq!(small.execution.output, Some(Value::I64(1 << 20)));
    let big = host
        .invoke(on(&task, "hog", &[("bytes", Value::I64(256 << 20))]))
        .await
        .unwrap();
    let error = big.execution.error.expect("failed");
    assert_eq!(error.code, "memory_limit_exceeded", "{}", error.message);
    let again = host
        .invoke(on(&task, "hog", &[("bytes", Value::I64(1 << 20))]))
        .await
        .unwrap();
    assert_eq!(again.execution.output, Some(Value::I64(1 << 20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_gets_its_worker_killed_and_leaves_no_thread() {
    let (host, _data) = host();
    let task = isolated_task(&host, "probe", Artifact::Probe, &[]).await;
    let mut request = on(&task, "spin", &[("ms", Value::I64(60_000))]);
    request.timeout = Some(std::time::Duration::from_millis(100));
    let out = host.invoke(request).await.unwrap().execution;
    assert_eq!(out.status, ExecutionStatus::Timeout);
    // The worker that ignored its deadline is killed after the grace, and
    // its slot comes back: nothing stays quarantined.
    until_nothing_held(&host, &task).await;
    let next = host
        .invoke(on(&task, "spin", &[("ms", Value::I64(0))]))
        .await
        .unwrap();
    assert_eq!(
        next.execution.status,
        ExecutionStatus::Completed,
        "{:?}",
        next.execution.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_traces_logs_and_memory_figures_cross_the_process_boundary() {
    let (host, _data) = host();
    let task = isolated_task(&host, "stream", Artifact::Stream, &[]).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let collect = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    });
    let out = host
        .stream(on(&task, "count", &[("n", Value::I64(10))]), tx)
        .await
        .unwrap();
    assert_eq!(out.execution.status, ExecutionStatus::Completed);
    assert_eq!(
        collect.await.unwrap(),
        (0..10).map(Value::I64).collect::<Vec<_>>()
    );

    let probe = isolated_task(&host, "probe", Artifact::Probe, &[]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = on(&probe, "trace", &[]);
    request.trace =
        spearlet::trace::TraceContext::parse(&format!("00-{trace}-00f067aa0ba902b7-01"));
    let traced = host.invoke(request).await.unwrap().execution;
    assert_eq!(
        traced.output,
        Some(Value::String(trace.to_owned())),
        "the caller's trace crosses into the worker"
    );
    assert!(
        traced.logs.iter().any(|l| l.contains("tracing this call")),
        "the plugin's log line reaches the execution: {:?}",
        traced.logs
    );
    let allocated = host
        .invoke(on(&probe, "allocate", &[("bytes", Value::I64(1 << 20))]))
        .await
        .unwrap()
        .execution;
    let (_, peak) = allocated.memory.expect("the probe counts its memory");
    assert!(
        peak >= 1 << 20,
        "the worker's memory figure comes back: {peak}"
    );

    // A stream whose consumer goes away is cancelled in the worker too.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let out = host
        .stream(on(&task, "count", &[("n", Value::I64(1_000_000))]), tx)
        .await
        .unwrap();
    assert_ne!(out.execution.status, ExecutionStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_talking_past_its_deadline_is_still_killed() {
    let (host, _data) = host();
    let task = isolated_task(&host, "faulty", Artifact::Faulty, &[]).await;
    let mut request = on(&task, "chatter", &[("ms", Value::I64(60_000))]);
    request.timeout = Some(std::time::Duration::from_millis(100));
    let out = host.invoke(request).await.unwrap().execution;
    assert_eq!(out.status, ExecutionStatus::Timeout);
    until_nothing_held(&host, &task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_truncate_the_memory_it_shares_with_the_host() {
    let (host, _data) = host();
    let task = isolated_task(&host, "faulty", Artifact::Faulty, &[]).await;
    let out = host
        .invoke(on(&task, "shrink", &[]))
        .await
        .unwrap()
        .execution;
    let error = out.error.expect("the truncation is refused");
    assert_eq!(error.code, "shrink_refused", "{}", error.message);
    let next = host
        .invoke(on(&task, "flaky", &[("fail_times", Value::I64(0))]))
        .await
        .unwrap();
    assert_eq!(next.execution.status, ExecutionStatus::Completed);
}
