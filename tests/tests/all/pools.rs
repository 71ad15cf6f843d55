//! Instance pools over gRPC: exhaustion, pre-warming, idle reaping,
//! discarding panicked instances, task configuration reaching instances.

use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_resource_exhausted_at_the_deadline() {
    let server = TestServer::start().await;
    let hold = with_metadata(
        with_params(
            new_task("one", Artifact::Sleepy, "sleep"),
            &[("ms", any_i64(600_000))],
        ),
        &[("spearlet.pool.max", "1")],
    );
    let hold = pb::InvokeFunctionRequest {
        execution_mode: pb::ExecutionMode::Async.into(),
        ..hold
    };
    let accepted = server.invoke(hold).await.unwrap();
    assert_eq!(status_of(&accepted), pb::ExecutionStatus::Pending);
    // Wait (without sleeping) until the long call holds the only instance.
    until(
        &server,
        &accepted.execution_id,
        spearlet::exec::ExecutionStatus::Running,
    )
    .await;
    let blocked = with_context(
        with_params(existing(&accepted.task_id, "sleep"), &[("ms", any_i64(1))]),
        200,
        0,
    );
    let err = server.invoke(blocked).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(kind(&err), "pool_exhausted");
    // A busy host says when to come back.
    use tonic_types::StatusExt;
    let retry = err.get_details_retry_info().expect("a RetryInfo detail");
    assert_eq!(
        retry.retry_delay,
        Some(std::time::Duration::from_millis(100))
    );
    let (cancelled, _) = server.host.cancel(&accepted.execution_id, false).unwrap();
    assert!(cancelled);
    server.stop().await;
}

#[tokio::test]
async fn a_panic_is_a_failed_result_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let resp = server
        .invoke(new_task("faulty", Artifact::Faulty, "panic"))
        .await
        .unwrap();
    assert!(!resp.success);
    let result = resp.result.unwrap();
    assert_eq!(result.status, pb::ExecutionStatus::Failed as i32);
    assert_eq!(result.error_code, "panic");
    let ok = server
        .invoke(with_params(
            new_task("faulty", Artifact::Faulty, "flaky"),
            &[("fail_times", any_i64(0))],
        ))
        .await
        .unwrap();
    assert!(ok.success, "{}", ok.message);
    assert_eq!(server.pool(&ok.task_id).discarded, 1);
    server.stop().await;
}

/// Issue #25: a function's own error with code `panic` fails the
/// execution with that code, and its instance goes back to the pool.
#[tokio::test]
async fn an_error_with_code_panic_fails_the_execution_and_keeps_the_instance() {
    let server = TestServer::start().await;
    let resp = server
        .invoke(new_task("faulty", Artifact::Faulty, "fake_panic"))
        .await
        .unwrap();
    assert!(!resp.success);
    let result = resp.result.unwrap();
    assert_eq!(result.status, pb::ExecutionStatus::Failed as i32);
    assert_eq!(result.error_code, "panic");
    let created = server.pool(&resp.task_id).created;
    let again = server
        .invoke(existing(&resp.task_id, "fake_panic"))
        .await
        .unwrap();
    assert_eq!(again.result.unwrap().error_code, "panic");
    let pool = server.pool(&resp.task_id);
    assert_eq!(pool.discarded, 0, "no instance thrown away");
    assert_eq!(pool.created, created, "the same instance served again");
    server.stop().await;
}

#[tokio::test]
async fn pools_prewarm_their_minimum_and_reap_idle_instances_above_it() {
    let server = TestServer::start_with(|c| c.pool.idle_timeout = std::time::Duration::ZERO).await;
    let first = server
        .invoke(with_metadata(
            new_task("warm", Artifact::Counter, "next"),
            &[("spearlet.pool.min", "3")],
        ))
        .await
        .unwrap();
    let task = server.host.task(&first.task_id).unwrap();
    assert_eq!(task.pool.stats().live, 3, "pre-warmed to the minimum");
    for _ in 0..2 {
        let mut fresh = existing(&first.task_id, "next");
        fresh.force_new_instance = true;
        server.invoke(fresh).await.unwrap();
    }
    assert_eq!(task.pool.stats().live, 5);
    assert_eq!(server.host.reap_idle(), 2);
    let stats = task.pool.stats();
    assert_eq!((stats.live, stats.idle), (3, 3), "the minimum stays");

    let bad = with_metadata(
        new_task("bad", Artifact::Counter, "next"),
        &[("spearlet.pool.max", "0")],
    );
    let err = server.invoke(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("spearlet.pool.max"),
        "{}",
        err.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn pool_sizes_past_the_configured_maximum_are_refused_naming_the_limit() {
    let server = TestServer::start().await;
    // Before these were bounded, the first panicked the handler (a
    // semaphore's permit limit) and the second allocated until the machine
    // ran out of memory.
    for (key, value) in [
        ("spearlet.pool.max", "2305843009213693952"),
        ("spearlet.pool.min", "1000000000000"),
        ("spearlet.pool.max", "9"),
    ] {
        let req = with_metadata(new_task("huge", Artifact::Counter, "next"), &[(key, value)]);
        let err = server.invoke(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key}={value}: {err:?}");
        assert!(
            err.message().contains(key)
                && err.message().contains(value)
                && err.message().contains("pool.max_instances = 8"),
            "{}",
            err.message()
        );
    }
    assert!(server.host.tasks().is_empty(), "nothing was created");
    let fits = with_metadata(
        new_task("huge", Artifact::Counter, "next"),
        &[("spearlet.pool.max", "8")],
    );
    server.invoke(fits).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn task_config_reaches_instances() {
    let server = TestServer::start().await;
    let resp = server
        .invoke(with_metadata(
            new_task("from-ten", Artifact::Counter, "next"),
            &[("start", "10")],
        ))
        .await
        .unwrap();
    assert_eq!(result_i64(&resp), 11);
    let err = server
        .invoke(with_metadata(
            new_task("broken", Artifact::Counter, "next"),
            &[("start", "ten")],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "instance_creation")
    );
    server.stop().await;
}
