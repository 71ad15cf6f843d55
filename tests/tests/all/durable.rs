//! What survives a restart: tasks created here come back under their ids
//! (loaded on first use, from the bytes verified at creation), and every
//! ASYNC execution accepted here has a final status.

use std::path::Path;

use spearlet::exec::ExecutionStatus;
use spearlet::state::{StateDb, StoredExecution};
use spearlet::Value;
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;

use crate::grpc_util::{
    any_i64, existing, new_task, result_i64, spec, until_final, with_params, TestServer,
};

fn add(req: pb::InvokeFunctionRequest, a: i64, b: i64) -> pb::InvokeFunctionRequest {
    with_params(req, &[("a", any_i64(a)), ("b", any_i64(b))])
}

async fn serve_in(dir: &Path, root: Option<&Path>) -> TestServer {
    TestServer::start_with(|c| {
        c.data_dir = dir.to_owned();
        if let Some(root) = root {
            c.artifacts.roots = vec![root.to_owned()];
        }
    })
    .await
}

#[tokio::test]
async fn tasks_and_async_executions_come_back_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let first = serve_in(data.path(), None).await;
    let math = first
        .invoke(add(new_task("math", Artifact::Math, "add"), 2, 40))
        .await
        .unwrap();
    let mut counter = existing("my-counter", "next");
    counter.create_if_not_exists = true;
    counter.artifact_spec = Some(spec(Artifact::Counter));
    first.invoke(counter.clone()).await.unwrap();
    let mut background = add(new_task("math", Artifact::Math, "add"), 1, 2);
    background.execution_mode = pb::ExecutionMode::Async.into();
    background.execution_id = Some("async-before-restart".into());
    first.invoke(background).await.unwrap();
    until_final(&first, "async-before-restart").await;
    let gone = first
        .invoke(add(new_task("gone", Artifact::Math, "add"), 0, 0))
        .await
        .unwrap();
    first
        .client
        .clone()
        .delete_task(pb::DeleteTaskRequest {
            task_id: gone.task_id,
            ..Default::default()
        })
        .await
        .unwrap();
    first.stop().await;

    let second = serve_in(data.path(), None).await;
    let mut dormant: Vec<String> = second
        .host
        .dormant_tasks()
        .into_iter()
        .map(|t| t.name)
        .collect();
    dormant.sort();
    assert_eq!(
        dormant,
        ["math", "my-counter"],
        "deleted tasks stay deleted"
    );
    assert!(
        second.host.tasks().is_empty(),
        "nothing loaded before first use"
    );

    let listed = second
        .client
        .clone()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, &str)> = listed
        .tasks
        .iter()
        .map(|t| (t.task_name.as_str(), t.metadata["state"].as_str()))
        .collect();
    assert_eq!(names, [("math", "dormant"), ("my-counter", "dormant")]);

    let status = second.host.execution("async-before-restart").unwrap();
    assert_eq!(status.status, ExecutionStatus::Completed);
    assert_eq!(status.output, Some(Value::I64(3)));

    let again = second
        .invoke(add(existing(&math.task_id, "add"), 20, 22))
        .await
        .unwrap();
    assert_eq!(
        (again.task_id.as_str(), result_i64(&again)),
        (math.task_id.as_str(), 42)
    );
    let by_name = second
        .invoke(add(new_task("math", Artifact::Math, "add"), 1, 1))
        .await
        .unwrap();
    assert_eq!(by_name.task_id, math.task_id, "NEW_TASK finds it by name");
    assert_eq!(
        result_i64(&second.invoke(existing("my-counter", "next")).await.unwrap()),
        1
    );
    assert!(second.host.dormant_tasks().is_empty());
    second.stop().await;
}

#[tokio::test]
async fn a_restored_task_runs_the_bytes_verified_at_creation() {
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let plugin = root.path().join("libplugin.so");
    std::fs::copy(Artifact::Math.path(), &plugin).unwrap();
    let mut req = add(new_task("pinned", Artifact::Math, "add"), 1, 2);
    req.artifact_spec.as_mut().unwrap().location = plugin.to_str().unwrap().to_owned();
    let first = serve_in(data.path(), Some(root.path())).await;
    let created = first.invoke(req).await.unwrap();
    first.stop().await;

    // The file at the location is now another plugin altogether.
    std::fs::copy(Artifact::Echo.path(), &plugin).unwrap();
    let second = serve_in(data.path(), Some(root.path())).await;
    let reply = second
        .invoke(add(existing(&created.task_id, "add"), 40, 2))
        .await
        .unwrap();
    assert_eq!(result_i64(&reply), 42);
    assert_eq!(
        second.host.task(&created.task_id).unwrap().plugin.name(),
        "math"
    );
    second.stop().await;
}

#[tokio::test]
async fn an_async_execution_a_crash_cut_short_is_reported_failed() {
    let data = tempfile::tempdir().unwrap();
    {
        // What a crashed run leaves: accepted, never ended.
        let state = StateDb::open(data.path()).unwrap();
        state
            .put_execution(StoredExecution {
                id: "cut-short".into(),
                task_id: "t".into(),
                function: "work".into(),
                accepted_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                status: None,
                output: None,
                error_code: String::new(),
                error_message: String::new(),
            })
            .unwrap();
    }
    for _ in 0..2 {
        let server = serve_in(data.path(), None).await;
        let e = server.host.execution("cut-short").unwrap();
        assert_eq!(e.status, ExecutionStatus::Failed);
        assert_eq!(e.error.unwrap().code, spearlet::HOST_RESTARTED);
        server.stop().await;
    }
}
