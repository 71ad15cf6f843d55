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
