//! The plugin author's loop: rebuild, invoke the same task name again. A
//! changed artifact is never run stale without saying so: it is refused
//! with the way to upgrade, or upgraded when asked.

use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::{kind, new_task, result_str, with_metadata, TestServer};

fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn a_rebuilt_plugin_is_refused_or_upgraded_never_run_stale() {
    let root = tempfile::tempdir().unwrap();
    let plugin = root.path().join("libdev.so");
    std::fs::copy(Artifact::Versioned1.path(), &plugin).unwrap();
    let dir = root.path().to_owned();
    let server = TestServer::start_with(|c| c.artifacts.roots = vec![dir]).await;
    let request = || {
        let mut req = new_task("dev", Artifact::Versioned1, "version");
        req.artifact_spec.as_mut().unwrap().location = plugin.to_str().unwrap().to_owned();
        req
    };
    let first = server.invoke(request()).await.unwrap();
    assert_eq!(result_str(&first), "1.0.0");
    let again = server.invoke(request()).await.unwrap();
    assert_eq!(
        (again.task_id.as_str(), result_str(&again).as_str()),
        (first.task_id.as_str(), "1.0.0")
    );

    // Rebuilt: the same path now holds version 2.
    std::fs::remove_file(&plugin).unwrap();
    std::fs::copy(Artifact::Versioned2.path(), &plugin).unwrap();
    let err = server.invoke(request()).await.unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "stale_artifact"),
        "{err:?}"
    );
    assert!(
        err.message().contains("changed since the task was created"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("--upgrade"),
        "says how: {}",
        err.message()
    );

    let upgraded = server
        .invoke(with_metadata(request(), &[("spearlet.upgrade", "true")]))
        .await
        .unwrap();
    assert_eq!(upgraded.task_id, first.task_id, "the same task");
    assert_eq!(result_str(&upgraded), "2.0.0", "the call ran the new code");
    let result = upgraded.result.as_ref().unwrap();
    assert_eq!(result.metrics["task_upgraded_to"], sha256_hex(&plugin));
    assert!(
        upgraded.message.contains("task upgraded"),
        "{}",
        upgraded.message
    );
    // Fresh again: no upgrade the next time.
    let next = server.invoke(request()).await.unwrap();
    assert!(!next
        .result
        .unwrap()
        .metrics
        .contains_key("task_upgraded_to"));
    server.stop().await;
}

#[tokio::test]
async fn another_checksum_or_location_for_a_task_name_is_stale() {
    let server = TestServer::start().await;
    let created = server
        .invoke(new_task("v", Artifact::Versioned1, "version"))
        .await
        .unwrap();
    let mut pinned = new_task("v", Artifact::Versioned1, "version");
    pinned.artifact_spec.as_mut().unwrap().checksum = sha256_hex(Artifact::Versioned1.path());
    assert_eq!(
        result_str(&server.invoke(pinned).await.unwrap()),
        "1.0.0",
        "pinned to what it runs"
    );
    let mut other = new_task("v", Artifact::Versioned1, "version");
    other.artifact_spec.as_mut().unwrap().checksum = "ab".repeat(32);
    let err = server.invoke(other).await.unwrap_err();
    assert_eq!(kind(&err), "stale_artifact");
    assert!(
        err.message().contains("pins sha256:abab"),
        "{}",
        err.message()
    );
    let err = server
        .invoke(new_task("v", Artifact::Versioned2, "version"))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), "stale_artifact");
    assert!(
        err.message().contains(&created.task_id),
        "{}",
        err.message()
    );
    let info = server
        .client
        .clone()
        .get_task(pb::GetTaskRequest {
            task_id: created.task_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.task.unwrap().metadata["plugin_version"],
        "1.0.0",
        "untouched"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dry_run_says_what_would_run_and_runs_nothing() {
    use crate::grpc_util::{any_i64, any_str, existing, with_params};
    let server = TestServer::start().await;
    let dry = |req: pb::InvokeFunctionRequest| with_metadata(req, &[("spearlet.dry_run", "true")]);

    let reply = server
        .invoke(dry(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        )))
        .await
        .unwrap();
    assert!(reply.success, "{}", reply.message);
    assert!(reply.execution_id.is_empty(), "nothing executed");
    let m = &reply.result.as_ref().unwrap().metrics;
    assert_eq!(m["signature"], "(a: i64, b: i64) -> i64");
    assert_eq!(
        (
            m["function"].as_str(),
            m["kind"].as_str(),
            m["task_id"].as_str()
        ),
        ("add", "unary", "")
    );
    assert_eq!(m["digest"], sha256_hex(Artifact::Math.path()));
    assert!(
        reply.message.contains("a task this call would create"),
        "{}",
        reply.message
    );
    assert!(server.host.tasks().is_empty(), "no task was created");

    let wrong = server
        .invoke(dry(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_str("one"))],
        )))
        .await
        .unwrap();
    assert!(!wrong.success);
    let problem = &wrong.result.as_ref().unwrap().metrics["parameters"];
    assert!(
        problem.contains("`a` is declared `i64`, got a string"),
        "{problem}"
    );

    let err = server
        .invoke(dry(new_task("math", Artifact::Math, "nope")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let created = server
        .invoke(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        ))
        .await
        .unwrap();
    let before = server.host.stats().total_executions;
    let reply = server
        .invoke(dry(with_params(
            existing(&created.task_id, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        )))
        .await
        .unwrap();
    assert_eq!(reply.task_id, created.task_id);
    assert_eq!(server.host.stats().total_executions, before, "no execution");
    let err = server
        .invoke(dry(existing("unknown", "add")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}
