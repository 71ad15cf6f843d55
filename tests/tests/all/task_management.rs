//! Task and execution management over gRPC: ListTasks, GetTask, DeleteTask,
//! ListExecutions, GetHealth, GetStats, and the standard health and
//! reflection services.

use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

#[tokio::test]
async fn tasks_are_listed_in_pages_fetched_and_deleted() {
    // Completed SYNC executions kept, so that the task shows its own.
    let server = TestServer::start_with(|c| c.executions.keep_completed_sync = true).await;
    for name in ["job-a", "job-b", "job-c", "other"] {
        server
            .invoke(new_task(name, Artifact::Echo, "nop"))
            .await
            .unwrap();
    }
    let mut client = server.client.clone();
    let page = client
        .list_tasks(pb::ListTasksRequest {
            prefix: "job-".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = page.tasks.iter().map(|t| t.task_name.as_str()).collect();
    assert_eq!(names, ["job-a", "job-b"]);
    assert!(page.has_more);
    let rest = client
        .list_tasks(pb::ListTasksRequest {
            prefix: "job-".into(),
            limit: 2,
            start_after: page.next_start_after.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.tasks
            .iter()
            .map(|t| t.task_name.as_str())
            .collect::<Vec<_>>(),
        ["job-c"]
    );
    assert!(!rest.has_more);

    let target = page.tasks[0].task_id.clone();
    let got = client
        .get_task(pb::GetTaskRequest {
            task_id: target.clone(),
            include_executions: true,
            execution_limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    let info = got.task.unwrap();
    assert_eq!(
        (info.execution_count, info.last_status),
        (1, pb::ExecutionStatus::Completed as i32)
    );
    assert_eq!(got.executions.len(), 1);
    assert_eq!(got.executions[0].function_name, "nop");

    let digest = server.host.task(&target).unwrap().plugin.digest();
    let deleted = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: target.clone(),
            force: false,
            cleanup_executions: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.success && deleted.deleted);
    assert_eq!(deleted.cleaned_executions, 1);
    let err = server.invoke(existing(&target, "nop")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        spearlet::loader::Plugin::already_loaded(&digest).is_some(),
        "the artifact stays loaded"
    );
    let missing = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: target,
            ..Default::default()
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_task_is_deleted_only_with_force() {
    let server = TestServer::start().await;
    let hold = pb::InvokeFunctionRequest {
        execution_mode: pb::ExecutionMode::Async.into(),
        ..with_params(
            new_task("busy", Artifact::Sleepy, "sleep"),
            &[("ms", any_i64(600_000))],
        )
    };
    let accepted = server.invoke(hold).await.unwrap();
    until(
        &server,
        &accepted.execution_id,
        spearlet::exec::ExecutionStatus::Running,
    )
    .await;
    let mut client = server.client.clone();
    let err = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: accepted.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "task_busy")
    );
    let forced = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: accepted.task_id.clone(),
            force: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(forced.deleted);
    // The running call was asked to stop; it ends cancelled once the plugin returns.
    let record = server.host.execution(&accepted.execution_id).unwrap();
    assert_eq!(server.host.tasks().len(), 0);
    let _ = record;
    server.stop().await;
}

#[tokio::test]
async fn executions_are_listed_in_pages_and_filtered_by_status() {
    let server = TestServer::start_with(|c| c.executions.keep_completed_sync = true).await;
    let math = |a: f64, b: f64| {
        with_params(
            new_task("math", Artifact::Math, "divide"),
            &[("a", any_f64(a)), ("b", any_f64(b))],
        )
    };
    for (a, b) in [(1.0, 1.0), (1.0, 0.0), (2.0, 1.0), (3.0, 0.0), (4.0, 1.0)] {
        server.invoke(math(a, b)).await.unwrap();
    }
    let mut client = server.client.clone();
    let first = client
        .list_executions(pb::ListExecutionsRequest {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.executions.len(), 3);
    assert!(first.has_more);
    let rest = client
        .list_executions(pb::ListExecutionsRequest {
            limit: 3,
            start_after: first.next_start_after,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.executions.len(), 2);
    assert!(!rest.has_more);
    let failed = client
        .list_executions(pb::ListExecutionsRequest {
            status_filter: pb::ExecutionStatus::Failed.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.executions.len(), 2);
    assert!(failed
        .executions
        .iter()
        .all(|e| e.error_message.contains("zero")));
    server.stop().await;
}

#[tokio::test]
async fn health_stats_and_the_standard_services_answer() {
    let server = TestServer::start().await;
    server
        .invoke(new_task("echo", Artifact::Echo, "nop"))
        .await
        .unwrap();
    let mut client = server.client.clone();
    let health = client
        .get_health(pb::GetHealthRequest {
            include_details: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, "healthy");
    let details = health.details.unwrap();
    assert_eq!((details.active_tasks, details.total_executions), (1, 1));

    let stats = client
        .get_stats(pb::GetStatsRequest {
            include_task_stats: true,
            include_execution_stats: true,
            time_range_hours: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.service_stats.unwrap().total_tasks, 1);
    let exec = stats.execution_stats.unwrap();
    assert_eq!(exec.completed_executions, 1);
    assert_eq!(exec.executions_by_function.get("nop"), Some(&1));
    assert_eq!(
        stats.task_stats.unwrap().tasks_by_type.get("echo"),
        Some(&1)
    );

    let channel = tonic::transport::Channel::from_shared(server.channel_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc_health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = grpc_health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "spearlet.FunctionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"spearlet.FunctionService"), "{names:?}");
    // Today's SPEAR node API, beside the seed-era one.
    for today in [
        "spearlet.InvocationService",
        "spearlet.ExecutionService",
        "spearlet.InstanceService",
    ] {
        assert!(names.contains(&today), "{names:?}");
    }
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("sms.")),
        "the SMS's services are called, not served: {names:?}"
    );

    // Older tools (grpcurl before 1.8.8, Evans, Postman) speak v1alpha.
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "spearlet.FunctionService".into(),
            )),
        };
        let mut replies = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha reflection is served")
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
            panic!("unexpected v1alpha reflection reply: {reply:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    server.stop().await;
}
