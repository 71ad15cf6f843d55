//! What survives a restart: tasks created here come back under their ids
//! (loaded on first use, from the bytes verified at creation), and every
//! ASYNC execution accepted here has a final status.

use std::path::Path;

use std::future::Future;
use std::time::Duration;

use spearlet::exec::ExecutionStatus;
use spearlet::state::{Persistence, StateDb, StoredExecution};
use spearlet::Value;
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::grpc_util::{
    any_i64, existing, new_task, result_i64, spec, until_final, with_metadata, with_params,
    TestServer,
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
    // Its id still names that one call: the same call again is it, another
    // call is refused.
    let mut retry = add(new_task("math", Artifact::Math, "add"), 1, 2);
    retry.execution_mode = pb::ExecutionMode::Async.into();
    retry.execution_id = Some("async-before-restart".into());
    let same = second.invoke(retry.clone()).await.unwrap();
    assert_eq!(same.execution_id, "async-before-restart");
    let other = second.invoke(add(retry, 5, 5)).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists, "{other:?}");

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
                parameters_hash: 0,
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

/// `what`, which waits on a notification; the deadline only turns a hang
/// into a failure.
async fn within<T>(what: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), what)
        .await
        .expect("it happened within two minutes")
}

async fn dormant_names(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = server
        .host
        .dormant_tasks()
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_torn_journal_tail_is_dropped_and_a_bad_record_before_good_ones_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let first = serve_in(data.path(), None).await;
    first
        .invoke(add(new_task("kept", Artifact::Math, "add"), 1, 2))
        .await
        .unwrap();
    first.stop().await;
    let journal = data.path().join("state.journal");

    // A record, then one a crash tore in the middle of a UTF-8 sequence.
    std::fs::write(
        &journal,
        b"{\"op\":\"remove_task\",\"id\":\"no-such-task\"}\n{\"op\":\"put_task\",\"task\":{\"id\":\"\xe2\x82",
    )
    .unwrap();
    let second = serve_in(data.path(), None).await;
    assert_eq!(dormant_names(&second).await, ["kept"]);
    second.stop().await;

    let good = b"{\"op\":\"remove_task\",\"id\":\"a\"}\n";
    std::fs::write(
        &journal,
        [
            &good[..],
            b"{\"op\":\xff\n",
            b"{\"op\":\"remove_task\",\"id\":\"b\"}\n",
        ]
        .concat(),
    )
    .unwrap();
    let err = spearlet::Host::new(crate::helpers::config_in(data.path())).unwrap_err();
    assert_eq!(err.kind(), "state_journal_corrupt");
    let message = err.to_string();
    assert!(
        message.contains(&journal.display().to_string())
            && message.contains(&format!("byte {}", good.len())),
        "names the file and the offset: {message}"
    );
}

async fn next_status(
    statuses: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> i32 {
    within(statuses.message()).await.unwrap().unwrap().status
}

#[tokio::test]
async fn failing_persistence_is_reported_bounds_the_journal_and_catches_up_when_it_recovers() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.data_dir = data.path().to_owned();
        c.tasks.max_journal_bytes = 1 << 20;
    })
    .await;
    let host = server.host.clone();
    let mut changes = host.persistence_changes();
    server
        .invoke(add(new_task("math", Artifact::Math, "add"), 1, 2))
        .await
        .unwrap();
    within(changes.wait_for(|_| host.state_journal_bytes() == 0))
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(server.channel_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut serving = health
        .watch(HealthCheckRequest {
            service: "spearlet.FunctionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_status(&mut serving).await,
        ServingStatus::Serving as i32
    );

    // A real fault: the journal cannot be renamed over a directory, so no
    // batch reaches the database.
    let folding = data.path().join("state.journal.folding");
    std::fs::create_dir(&folding).unwrap();
    std::fs::write(folding.join("in-the-way"), b"").unwrap();
    let blob = "x".repeat(300_000);
    let big = |name: &str| {
        with_metadata(
            add(new_task(name, Artifact::Math, "add"), 1, 2),
            &[("blob", blob.as_str())],
        )
    };
    server.invoke(big("big-1")).await.unwrap();
    within(changes.wait_for(|r| r.failure.is_some()))
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut serving).await,
        ServingStatus::NotServing as i32,
        "new work goes elsewhere"
    );
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        overall.status,
        ServingStatus::Serving as i32,
        "the process is alive"
    );
    // 300 kB a task: the fourth would take the journal past 1 MiB.
    server.invoke(big("big-2")).await.unwrap();
    server.invoke(big("big-3")).await.unwrap();
    let refused = server.invoke(big("refused")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused.metadata().get("spearlet-error-kind").unwrap(),
        "state_journal_full"
    );
    assert!(
        refused.message().contains("tasks.max_journal_bytes")
            && refused.message().contains("state.journal.folding"),
        "names the limit and why persistence fails: {}",
        refused.message()
    );
    assert!(host.state_journal_bytes() <= 1 << 20);

    let reply = server
        .client
        .clone()
        .get_health(pb::GetHealthRequest {
            include_details: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, "degraded");
    assert!(
        reply.message.contains("persistence failing"),
        "{}",
        reply.message
    );
    let info = reply.details.unwrap().system_info;
    assert_eq!(info["persistence"], "failing");
    assert!(info["persistence_error"].contains("state.journal.folding"));
    let metrics = spearlet::metrics::render(&host).unwrap();
    assert!(
        metrics.contains("spearlet_state_persistence_failing 1\n"),
        "{metrics}"
    );

    std::fs::remove_dir_all(&folding).unwrap();
    within(changes.wait_for(|r| r.failure.is_none()))
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut serving).await,
        ServingStatus::Serving as i32
    );
    assert_eq!(host.persistence(), Persistence::Ok);
    assert_eq!(host.state_journal_bytes(), 0, "everything folded");
    assert_eq!(server.health_info().await["persistence"], "ok");
    let metrics = spearlet::metrics::render(&host).unwrap();
    assert!(metrics.contains("spearlet_state_persistence_failing 0\n"));
    assert!(metrics.contains("spearlet_state_journal_bytes 0\n"));
    server.invoke(big("after")).await.unwrap();
    // A graceful stop waits for the calls still open: the watch is one.
    drop((serving, health));
    server.stop().await;
    // The last handle on the host: its database is closed with it.
    drop(host);

    let again = serve_in(data.path(), None).await;
    assert_eq!(
        dormant_names(&again).await,
        ["after", "big-1", "big-2", "big-3", "math"],
        "every creation acknowledged, none refused"
    );
    again.stop().await;
}
