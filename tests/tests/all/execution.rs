//! The execution engine end to end: async status transitions, streaming,
//! cancellation, timeouts, retries, idempotency, record bounds, limits.

use std::time::Duration;

use prost::Message;
use spearlet::exec::ExecutionStatus;
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

fn asynchronous(mut req: pb::InvokeFunctionRequest) -> pb::InvokeFunctionRequest {
    req.execution_mode = pb::ExecutionMode::Async.into();
    req
}

async fn status_rpc(server: &TestServer, id: &str) -> pb::GetExecutionStatusResponse {
    server
        .client
        .clone()
        .get_execution_status(pb::GetExecutionStatusRequest {
            execution_id: id.into(),
            include_result: true,
            include_logs: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// `spin(ms)` of the probe plugin (which ignores cancellation) on a task
/// with a single instance.
fn spin(ms: i64) -> pb::InvokeFunctionRequest {
    with_metadata(
        with_params(
            new_task("stubborn", Artifact::Probe, "spin"),
            &[("ms", any_i64(ms))],
        ),
        &[("spearlet.pool.max", "1")],
    )
}

fn sleep_req(name: &str, ms: i64) -> pb::InvokeFunctionRequest {
    with_params(
        new_task(name, Artifact::Sleepy, "sleep"),
        &[("ms", any_i64(ms))],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_executions_go_pending_running_completed_with_result_and_logs() {
    let server = TestServer::start().await;
    let accepted = server
        .invoke(asynchronous(sleep_req("z", 5)))
        .await
        .unwrap();
    assert!(accepted.success);
    assert_eq!(status_of(&accepted), pb::ExecutionStatus::Pending);
    assert!(accepted.status_endpoint.contains(&accepted.execution_id));
    let done = until_final(&server, &accepted.execution_id).await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    let reply = status_rpc(&server, &accepted.execution_id).await;
    assert!(reply.found);
    let result = reply.result.unwrap();
    assert_eq!(result.status, pb::ExecutionStatus::Completed as i32);
    assert_eq!(
        String::decode(result.result.unwrap().value.as_slice()).unwrap(),
        "slept 5 ms"
    );
    assert_eq!(reply.logs, ["INFO sleeping 5 ms"]);
    let missing = status_rpc(&server, "no-such-execution").await;
    assert!(!missing.found);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_comes_from_recent_run_times() {
    let server = TestServer::start().await;
    for _ in 0..3 {
        server.invoke(sleep_req("z", 20)).await.unwrap();
    }
    let accepted = server
        .invoke(asynchronous(sleep_req("z", 20)))
        .await
        .unwrap();
    assert!(
        accepted.estimated_completion_ms >= 20,
        "{}",
        accepted.estimated_completion_ms
    );
    until_final(&server, &accepted.execution_id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_execution_is_cancelled_when_the_plugin_stops() {
    let server = TestServer::start().await;
    let accepted = server
        .invoke(asynchronous(sleep_req("z", 600_000)))
        .await
        .unwrap();
    until(&server, &accepted.execution_id, ExecutionStatus::Running).await;
    let mut client = server.client.clone();
    let reply = client
        .cancel_execution(pb::CancelExecutionRequest {
            execution_id: accepted.execution_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.success);
    let done = until_final(&server, &accepted.execution_id).await;
    assert_eq!(done.status, ExecutionStatus::Cancelled);
    assert!(
        done.logs
            .iter()
            .any(|l| l.starts_with("WARN stopped after")),
        "{:?}",
        done.logs
    );

    let again = client
        .cancel_execution(pb::CancelExecutionRequest {
            execution_id: accepted.execution_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.success, "already finished");
    assert_eq!(again.final_status, pb::ExecutionStatus::Cancelled as i32);
    let unknown = client
        .cancel_execution(pb::CancelExecutionRequest {
            execution_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_execution_is_cancelled_at_once() {
    let server = TestServer::start().await;
    let hold = with_metadata(sleep_req("one", 600_000), &[("spearlet.pool.max", "1")]);
    let first = server.invoke(asynchronous(hold)).await.unwrap();
    until(&server, &first.execution_id, ExecutionStatus::Running).await;
    let queued = server
        .invoke(asynchronous(sleep_req("one", 1)))
        .await
        .unwrap();
    assert_eq!(
        server.host.execution(&queued.execution_id).unwrap().status,
        ExecutionStatus::Pending
    );
    let (ok, status) = server.host.cancel(&queued.execution_id, false).unwrap();
    assert!(ok);
    assert_eq!(status, ExecutionStatus::Cancelled);
    server.host.cancel(&first.execution_id, false).unwrap();
    until_final(&server, &first.execution_id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_cancel_ends_at_once_and_quarantines_the_busy_instance() {
    let server = TestServer::start().await;
    let stuck = server.invoke(asynchronous(spin(1_500))).await.unwrap();
    until(&server, &stuck.execution_id, ExecutionStatus::Running).await;
    let (ok, status) = server.host.cancel(&stuck.execution_id, true).unwrap();
    assert!(ok);
    assert_eq!(status, ExecutionStatus::Cancelled);
    let task = server.host.task(&stuck.task_id).unwrap();
    while task.pool.stats().quarantined != 1 {
        crate::helpers::yield_waiting("the instance to be quarantined").await;
    }
    // The pool's only slot was given back: a replacement instance serves.
    let next = server.invoke(spin(0)).await.unwrap();
    assert!(next.success, "{}", next.message);
    let stuck_instance = server
        .host
        .execution(&stuck.execution_id)
        .unwrap()
        .instance_id;
    assert_ne!(
        Some(next.instance_id.as_str()),
        stuck_instance.as_deref(),
        "the busy instance is not reused"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_returns_promptly_and_the_stuck_instance_is_not_reused() {
    let server = TestServer::start().await;
    let err = server
        .invoke(with_context(spin(1_500), 100, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let (executions, _) = server.host.executions(&Default::default()).unwrap();
    let timed_out = &executions[0];
    assert_eq!(timed_out.status, ExecutionStatus::Timeout);
    let next = server.invoke(spin(0)).await.unwrap();
    assert!(next.success);
    assert_ne!(
        Some(next.instance_id.as_str()),
        timed_out.instance_id.as_deref()
    );
    assert_eq!(server.pool(&next.task_id).quarantined, 1);
    server.stop().await;
}

#[tokio::test]
async fn retriable_failures_are_retried_within_max_retries() {
    let server = TestServer::start().await;
    let flaky = |fail: i64, retries: i32| {
        with_context(
            with_params(
                new_task(
                    &format!("flaky-{fail}-{retries}"),
                    Artifact::Faulty,
                    "flaky",
                ),
                &[("fail_times", any_i64(fail))],
            ),
            0,
            retries,
        )
    };
    let ok = server.invoke(flaky(2, 2)).await.unwrap();
    assert!(ok.success, "{}", ok.message);
    assert_eq!(ok.result.unwrap().metrics["attempts"], "3");
    let logs = server.host.execution(&ok.execution_id).unwrap().logs;
    assert_eq!(
        logs.iter()
            .filter(|l| l.starts_with("RETRY attempt"))
            .count(),
        2,
        "{logs:?}"
    );
    assert!(logs[0].contains("flaky: failure 1 of 2"), "{logs:?}");

    let exhausted = server.invoke(flaky(3, 2)).await.unwrap();
    assert!(!exhausted.success);
    let result = exhausted.result.unwrap();
    assert_eq!(
        (
            result.error_code.as_str(),
            result.metrics["attempts"].as_str()
        ),
        ("flaky", "3")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_non_retriable_error_is_not_retried() {
    let server = TestServer::start().await;
    let req = with_context(
        with_params(
            new_task("math", Artifact::Math, "divide"),
            &[("a", any_f64(1.0)), ("b", any_f64(0.0))],
        ),
        0,
        5,
    );
    let resp = server.invoke(req).await.unwrap();
    assert_eq!(resp.result.unwrap().metrics["attempts"], "1");
    server.stop().await;
}

#[tokio::test]
async fn a_panic_is_retried_on_a_fresh_instance() {
    let server = TestServer::start().await;
    let resp = server
        .invoke(with_context(
            new_task("faulty", Artifact::Faulty, "panic"),
            0,
            1,
        ))
        .await
        .unwrap();
    let result = resp.result.unwrap();
    assert_eq!(
        (
            result.error_code.as_str(),
            result.metrics["attempts"].as_str()
        ),
        ("panic", "2")
    );
    assert_eq!(server.pool(&resp.task_id).discarded, 2);
    server.stop().await;
}

#[tokio::test]
async fn an_execution_id_names_one_execution() {
    let server = TestServer::start().await;
    let mut req = new_task("ctr", Artifact::Counter, "next");
    req.execution_id = Some("exec-once".into());
    let first = server.invoke(req.clone()).await.unwrap();
    let repeat = server.invoke(req).await.unwrap();
    assert_eq!(first.execution_id, "exec-once");
    assert_eq!(
        (result_i64(&first), result_i64(&repeat)),
        (1, 1),
        "not run again"
    );
    let mut by_context = new_task("ctr", Artifact::Counter, "next");
    by_context.context = Some(pb::ExecutionContext {
        execution_id: "exec-once".into(),
        ..Default::default()
    });
    assert_eq!(result_i64(&server.invoke(by_context).await.unwrap()), 1);
    assert_eq!(
        result_i64(
            &server
                .invoke(new_task("ctr", Artifact::Counter, "next"))
                .await
                .unwrap()
        ),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reused_execution_id_for_another_call_is_already_exists() {
    let server = TestServer::start().await;
    let add = |a: f64| {
        let mut req = with_params(
            new_task("math", Artifact::Math, "divide"),
            &[("a", any_f64(a)), ("b", any_f64(1.0))],
        );
        req.execution_id = Some("exec-shared".into());
        req
    };
    let first = server.invoke(add(1.0)).await.unwrap();
    let retry = server.invoke(add(1.0)).await.unwrap();
    assert_eq!(
        retry.execution_id, first.execution_id,
        "a retry is the same execution"
    );
    let other_parameters = server.invoke(add(2.0)).await.unwrap_err();
    assert_eq!(
        other_parameters.code(),
        tonic::Code::AlreadyExists,
        "{other_parameters:?}"
    );
    assert!(
        other_parameters.message().contains("exec-shared")
            && other_parameters.message().contains("parameters"),
        "{}",
        other_parameters.message()
    );
    let mut other_function = add(1.0);
    other_function.function_name = "add".into();
    let err = server.invoke(other_function).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains("function"), "{}", err.message());
    let mut other_task = with_params(new_task("ctr", Artifact::Counter, "next"), &[]);
    other_task.execution_id = Some("exec-shared".into());
    let err = server.invoke(other_task).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains("task"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn environment_and_headers_reach_the_plugin() {
    let server = TestServer::start().await;
    let mut req = new_task("probe", Artifact::Probe, "context");
    req.execution_id = Some("exec-ctx".into());
    req.context = Some(pb::ExecutionContext {
        environment: [("REGION".to_owned(), "eu-west".to_owned())].into(),
        headers: [("X-Trace".to_owned(), "t-42".to_owned())].into(),
        ..Default::default()
    });
    let resp = server.invoke(req).await.unwrap();
    let text = String::decode(resp.result.unwrap().result.unwrap().value.as_slice()).unwrap();
    assert_eq!(text, "execution=exec-ctx region=eu-west trace=t-42");
    server.stop().await;
}

#[tokio::test]
async fn records_are_evicted_by_count_and_by_age() {
    // Completed SYNC executions kept, so that there is something to evict.
    let server = TestServer::start_with(|c| {
        c.executions.max_records = 2;
        c.executions.keep_completed_sync = true;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            server
                .invoke(new_task("e", Artifact::Echo, "nop"))
                .await
                .unwrap()
                .execution_id,
        );
    }
    assert!(!status_rpc(&server, &ids[0]).await.found);
    assert!(status_rpc(&server, &ids[2]).await.found);
    server.stop().await;

    let server = TestServer::start_with(|c| {
        c.executions.record_ttl = Duration::ZERO;
        c.executions.keep_completed_sync = true;
    })
    .await;
    let id = server
        .invoke(new_task("e", Artifact::Echo, "nop"))
        .await
        .unwrap()
        .execution_id;
    assert!(!status_rpc(&server, &id).await.found);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_async_executions_are_bounded() {
    let server = TestServer::start_with(|c| c.executions.max_pending = 1).await;
    let first = server
        .invoke(asynchronous(sleep_req("z", 600_000)))
        .await
        .unwrap();
    let err = server
        .invoke(asynchronous(sleep_req("z", 1)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::ResourceExhausted, "too_many_pending")
    );
    server.host.cancel(&first.execution_id, false).unwrap();
    until_final(&server, &first.execution_id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_deadline_bounds_the_execution_too() {
    let server = TestServer::start().await;
    let mut request = tonic::Request::new(sleep_req("z", 600_000));
    request.set_timeout(Duration::from_millis(150));
    let err = server
        .client
        .clone()
        .invoke_function(request)
        .await
        .unwrap_err();
    // The client's own timer and the server's reply race; either way the call failed on time.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The server saw the deadline as well: its execution timed out (and the
    // plugin was told to stop) instead of sleeping on for ten minutes.
    let id = loop {
        let (all, _) = server.host.executions(&Default::default()).unwrap();
        if let Some(e) = all.iter().find(|e| &*e.function == "sleep") {
            break e.execution_id.clone();
        }
        crate::helpers::yield_waiting("the execution to be recorded").await;
    };
    let done = until_final(&server, &id).await;
    // Whether the server's deadline or the transport's (which drops the
    // handler) fired first, the execution ended and the plugin was stopped.
    assert!(
        matches!(
            done.status,
            ExecutionStatus::Timeout | ExecutionStatus::Cancelled
        ),
        "{:?}",
        done.status
    );
    let task = server.host.task(&done.task_id).unwrap();
    while task.activity().running > 0 || task.pool.stats().quarantined > 0 {
        crate::helpers::yield_waiting("the plugin to stop").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn records_keep_results_within_their_bounds_and_say_when_they_do_not() {
    let server = TestServer::start_with(|c| {
        c.executions.max_result_bytes = 4096;
        c.executions.max_total_result_bytes = 8192;
        c.executions.keep_completed_sync = true;
    })
    .await;
    let echo = |n: usize, mode: pb::ExecutionMode| {
        let mut req = with_params(
            new_task("echo", Artifact::Echo, "echo"),
            &[("input", any_bytes(&vec![7u8; n]))],
        );
        req.execution_mode = mode.into();
        req
    };
    let result_len = |r: &pb::ExecutionResult| {
        r.result
            .as_ref()
            .map(|any| Vec::<u8>::decode(any.value.as_slice()).unwrap().len())
    };

    // Past the per-record bound: its caller gets it, the record does not.
    let big = server
        .invoke(echo(5000, pb::ExecutionMode::Sync))
        .await
        .unwrap();
    assert_eq!(result_len(big.result.as_ref().unwrap()), Some(5000));
    let status = status_rpc(&server, &big.execution_id).await;
    let kept = status.result.unwrap();
    assert_eq!(result_len(&kept), None);
    assert!(
        kept.metrics["output_dropped"].contains("executions.max_result_bytes (4096)"),
        "{:?}",
        kept.metrics
    );

    // Within it, until the total is reached.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = server
            .invoke(echo(3000, pb::ExecutionMode::Sync))
            .await
            .unwrap();
        assert_eq!(result_len(r.result.as_ref().unwrap()), Some(3000));
        ids.push(r.execution_id);
    }
    let kept: Vec<_> = {
        let mut kept = Vec::new();
        for id in &ids {
            kept.push(result_len(&status_rpc(&server, id).await.result.unwrap()));
        }
        kept
    };
    assert_eq!(
        kept,
        [Some(3000), Some(3000), None],
        "the third is past the total"
    );
    assert_eq!(server.host.stats().result_bytes, 6000);

    // ASYNC: decided when it ends, before it is recorded durably.
    let accepted = server
        .invoke(echo(5000, pb::ExecutionMode::Async))
        .await
        .unwrap();
    let done = until_final(&server, &accepted.execution_id).await;
    assert_eq!(done.output, None);
    assert!(done.output_dropped.is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_completed_sync_call_without_an_id_is_not_kept_unless_it_failed_or_logged() {
    let server = TestServer::start().await;
    let found = |id: String| {
        let server = &server;
        async move { status_rpc(server, &id).await.found }
    };
    // Its caller has everything the record would say.
    let plain = server
        .invoke(new_task("e", Artifact::Echo, "nop"))
        .await
        .unwrap();
    assert!(!plain.execution_id.is_empty());
    assert!(
        !found(plain.execution_id).await,
        "a completed SYNC call is not kept"
    );
    // A named one is kept: repeating its id returns it.
    let mut named = new_task("e", Artifact::Echo, "nop");
    named.execution_id = Some("named-sync".into());
    server.invoke(named).await.unwrap();
    assert!(found("named-sync".into()).await);
    // A failure is kept, for `executions --status failed`.
    let failed = server
        .invoke(with_params(
            new_task("math", Artifact::Math, "divide"),
            &[("a", any_f64(1.0)), ("b", any_f64(0.0))],
        ))
        .await
        .unwrap();
    assert!(
        found(failed.execution_id).await,
        "a failed SYNC call is kept"
    );
    // So is one that logged: its reply does not carry the lines.
    let logged = server
        .invoke(new_task("probe", Artifact::Probe, "trace"))
        .await
        .unwrap();
    assert!(
        found(logged.execution_id).await,
        "a SYNC call that logged is kept"
    );
    // Every execution is counted all the same.
    let stats = server.host.stats();
    assert_eq!(
        stats.ended_by_status[&spearlet::exec::ExecutionStatus::Completed],
        3
    );
    assert_eq!(
        stats.ended_by_status[&spearlet::exec::ExecutionStatus::Failed],
        1
    );
    server.stop().await;
}
