//! spearlet.FunctionService end to end: one test per branch of the seed's
//! flows 2 and 3, every validation error, pools, task management, health.

use prost::Message;
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

#[tokio::test]
async fn new_task_is_created_and_its_function_runs() {
    let server = TestServer::start().await;
    let req = with_params(
        new_task("math", Artifact::Math, "add"),
        &[("a", any_i64(2)), ("b", any_i64(40))],
    );
    let resp = server.invoke(req).await.unwrap();
    assert!(resp.success, "{}", resp.message);
    assert!(
        !resp.execution_id.is_empty() && !resp.task_id.is_empty() && !resp.instance_id.is_empty()
    );
    assert_eq!(status_of(&resp), pb::ExecutionStatus::Completed);
    assert_eq!(result_i64(&resp), 42);
    let result = resp.result.unwrap();
    let (start, end) = (result.started_at.unwrap(), result.completed_at.unwrap());
    assert!(
        (end.seconds, end.nanos) > (start.seconds, start.nanos),
        "distinct, ordered timestamps"
    );
    assert!(result.execution_time_ms >= 0);
    let task = server.host.task(&resp.task_id).expect("registered");
    assert_eq!(task.name, "math");
    assert_eq!(task.plugin.name(), "math");
    server.stop().await;
}

#[tokio::test]
async fn new_task_with_an_existing_name_uses_that_task_and_its_pooled_instance() {
    let server = TestServer::start().await;
    let first = server
        .invoke(new_task("ctr", Artifact::Counter, "next"))
        .await
        .unwrap();
    let second = server
        .invoke(new_task("ctr", Artifact::Counter, "next"))
        .await
        .unwrap();
    assert_eq!(first.task_id, second.task_id);
    assert_eq!(
        (result_i64(&first), result_i64(&second)),
        (1, 2),
        "the same instance served both"
    );
    assert_eq!(first.instance_id, second.instance_id);
    assert_eq!(server.host.tasks().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn force_new_instance_runs_on_a_fresh_instance_of_the_same_task() {
    let server = TestServer::start().await;
    let first = server
        .invoke(new_task("ctr", Artifact::Counter, "next"))
        .await
        .unwrap();
    let mut again = new_task("ctr", Artifact::Counter, "next");
    again.force_new_instance = true;
    let fresh = server.invoke(again).await.unwrap();
    assert_eq!(first.task_id, fresh.task_id);
    assert_ne!(first.instance_id, fresh.instance_id);
    assert_eq!(
        result_i64(&fresh),
        1,
        "a fresh instance starts counting at 1"
    );

    let mut existing_fresh = existing(&first.task_id, "next");
    existing_fresh.force_new_instance = true;
    assert_eq!(result_i64(&server.invoke(existing_fresh).await.unwrap()), 1);
    server.stop().await;
}

#[tokio::test]
async fn existing_task_is_found_by_id() {
    let server = TestServer::start().await;
    let created = server
        .invoke(new_task("ctr", Artifact::Counter, "next"))
        .await
        .unwrap();
    let resp = server
        .invoke(existing(&created.task_id, "next"))
        .await
        .unwrap();
    assert_eq!(resp.task_id, created.task_id);
    assert_eq!(result_i64(&resp), 2);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_task_is_not_found_unless_creation_is_asked_for() {
    let server = TestServer::start().await;
    let err = server
        .invoke(existing("no-such-task", "next"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(kind(&err), "task_not_found");
    assert!(err.message().contains("no-such-task"), "{}", err.message());

    let mut no_spec = existing("no-such-task", "next");
    no_spec.create_if_not_exists = true;
    let err = server.invoke(no_spec).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(kind(&err), "artifact_spec_required");

    let mut create = existing("my-counter", "next");
    create.create_if_not_exists = true;
    create.artifact_spec = Some(spec(Artifact::Counter));
    let resp = server.invoke(create).await.unwrap();
    assert_eq!(resp.task_id, "my-counter", "created under the requested id");
    assert_eq!(result_i64(&resp), 1);
    assert_eq!(
        result_i64(&server.invoke(existing("my-counter", "next")).await.unwrap()),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn every_validation_error_names_its_field() {
    let server = TestServer::start().await;
    let base = new_task("v", Artifact::Echo, "upper");
    let cases: Vec<(pb::InvokeFunctionRequest, &str)> = vec![
        (
            pb::InvokeFunctionRequest {
                invocation_type: 0,
                ..base.clone()
            },
            "invocation_type",
        ),
        (
            pb::InvokeFunctionRequest {
                invocation_type: 99,
                ..base.clone()
            },
            "invocation_type",
        ),
        (
            pb::InvokeFunctionRequest {
                task_name: String::new(),
                ..base.clone()
            },
            "task_name is required",
        ),
        (
            pb::InvokeFunctionRequest {
                artifact_spec: None,
                ..base.clone()
            },
            "artifact_spec is required",
        ),
        (
            pb::InvokeFunctionRequest {
                function_name: String::new(),
                ..base.clone()
            },
            "function_name is required",
        ),
        (existing("", "upper"), "task_id is required"),
        (
            pb::InvokeFunctionRequest {
                execution_mode: 99,
                ..base.clone()
            },
            "execution_mode",
        ),
        (with_context(base.clone(), -1, 0), "timeout_ms"),
    ];
    for (req, expected) in cases {
        let err = server.invoke(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{expected}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{expected}: {}",
            err.message()
        );
    }

    let stream_mode = pb::InvokeFunctionRequest {
        execution_mode: pb::ExecutionMode::Stream.into(),
        ..base.clone()
    };
    let err = server.invoke(stream_mode).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("StreamFunction"),
        "{}",
        err.message()
    );

    let mut missing_value = base.clone();
    missing_value.parameters = vec![pb::FunctionParameter {
        name: "input".into(),
        required: true,
        ..Default::default()
    }];
    let err = server.invoke(missing_value).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(kind(&err), "missing_parameter");
    assert!(
        server.host.tasks().is_empty(),
        "no request above created anything"
    );
    server.stop().await;
}

/// SPEAR's clients leave `execution_mode` unset (0) and expect a SYNC call.
#[tokio::test]
async fn an_unset_execution_mode_runs_sync() {
    let server = TestServer::start().await;
    let req = pb::InvokeFunctionRequest {
        execution_mode: 0,
        ..with_params(
            new_task("unset-mode", Artifact::Math, "add"),
            &[("a", any_i64(2)), ("b", any_i64(40))],
        )
    };
    let resp = server.invoke(req).await.unwrap();
    assert_eq!(status_of(&resp), pb::ExecutionStatus::Completed);
    assert_eq!(result_i64(&resp), 42, "the result comes back in the reply");
    server.stop().await;
}

#[tokio::test]
async fn refused_artifacts_map_to_their_codes() {
    let elsewhere = tempfile::tempdir().unwrap();
    let root = elsewhere.path().to_owned();
    let server = TestServer::start_with(|c| c.artifacts.roots = vec![root]).await;
    let err = server
        .invoke(new_task("outside", Artifact::Echo, "echo"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    server.stop().await;

    let server = TestServer::start().await;
    let mut bad = new_task("bad", Artifact::BadVersion, "x");
    bad.artifact_spec.as_mut().unwrap().artifact_type = String::new();
    let err = server.invoke(bad).await.unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "incompatible_sdk")
    );

    let mut wasm = new_task("wasm", Artifact::Echo, "echo");
    wasm.artifact_spec.as_mut().unwrap().artifact_type = "wasm".into();
    let err = server.invoke(wasm).await.unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::InvalidArgument, "unsupported_artifact_type")
    );

    let mut mismatch = new_task("mm", Artifact::Echo, "echo");
    mismatch.artifact_spec.as_mut().unwrap().checksum = "00".repeat(32);
    let err = server.invoke(mismatch).await.unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "checksum_mismatch")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_function_is_not_found_and_a_plugin_error_is_a_failed_result() {
    let server = TestServer::start().await;
    let err = server
        .invoke(new_task("math", Artifact::Math, "multiply"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("add, divide"), "{}", err.message());

    let req = with_params(
        new_task("math", Artifact::Math, "divide"),
        &[("a", any_f64(1.0)), ("b", any_f64(0.0))],
    );
    let resp = server.invoke(req).await.unwrap();
    assert!(!resp.success);
    let result = resp.result.unwrap();
    assert_eq!(result.status, pb::ExecutionStatus::Failed as i32);
    assert_eq!(result.error_code, "division_by_zero");
    assert!(result.error_message.contains("zero"));
    server.stop().await;
}

#[tokio::test]
async fn values_cross_as_well_known_wrappers() {
    let server = TestServer::start().await;
    for value in [
        any_str("héllo"),
        any_i64(-9),
        any_f64(0.25),
        any_bool(true),
        any_bytes(&[0, 1, 2]),
    ] {
        let resp = server
            .invoke(with_params(
                new_task("echo", Artifact::Echo, "echo"),
                &[("input", value.clone())],
            ))
            .await
            .unwrap();
        assert_eq!(resp.result.unwrap().result.unwrap(), value);
    }
    // Narrower integers widen to Int64Value; unknown messages pass raw.
    let resp = server
        .invoke(with_params(
            new_task("echo", Artifact::Echo, "echo"),
            &[("input", any_i32(7))],
        ))
        .await
        .unwrap();
    assert_eq!(result_i64(&resp), 7);
    let raw = prost_types::Any {
        type_url: "type.googleapis.com/acme.Point".into(),
        value: vec![8, 3, 16, 4],
    };
    let resp = server
        .invoke(with_params(
            new_task("echo", Artifact::Echo, "echo"),
            &[("input", raw.clone())],
        ))
        .await
        .unwrap();
    assert_eq!(resp.result.unwrap().result.unwrap(), raw);
    let resp = server
        .invoke(with_params(
            new_task("echo", Artifact::Echo, "upper"),
            &[("input", any_str("abc"))],
        ))
        .await
        .unwrap();
    let out = resp.result.unwrap().result.unwrap();
    assert_eq!(String::decode(out.value.as_slice()).unwrap(), "ABC");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_task_requests_create_one_task() {
    let server = TestServer::start().await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut client = server.client.clone();
            tokio::spawn(async move {
                client
                    .invoke_function(new_task("once", Artifact::Echo, "nop"))
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap().unwrap().into_inner().task_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(server.host.tasks().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_sync_call_past_its_deadline_is_deadline_exceeded() {
    let server = TestServer::start().await;
    let req = with_context(
        with_params(
            new_task("sleepy", Artifact::Sleepy, "sleep"),
            &[("ms", any_i64(60_000))],
        ),
        100,
        0,
    );
    let err = server.invoke(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    server.stop().await;
}
