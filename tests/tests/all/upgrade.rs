//! Blue/green upgrades and rollbacks (`spearlet.admin.v1.AdminService`):
//! no call fails because of a switch, and every reply comes from exactly
//! one version.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::admin::v1 as admin;
use spearlet_proto::spearlet::admin::v1::admin_service_client::AdminServiceClient;
use spearlet_test_artifacts::Artifact;
use tonic::transport::Channel;
use tonic::Code;

use crate::grpc_util::{
    any_i64, existing, kind, new_task, result_str, spec, with_params, TestServer,
};

async fn admin(server: &TestServer) -> AdminServiceClient<Channel> {
    AdminServiceClient::connect(server.channel_url())
        .await
        .unwrap()
}

fn upgrade(task_id: &str, artifact: Artifact) -> admin::UpgradeTaskRequest {
    admin::UpgradeTaskRequest {
        task_id: task_id.into(),
        artifact_spec: Some(spec(artifact)),
        ..Default::default()
    }
}

fn rollback(task_id: &str) -> admin::RollbackTaskRequest {
    admin::RollbackTaskRequest {
        task_id: task_id.into(),
        drain_timeout_ms: 0,
    }
}

async fn version_now(server: &TestServer, id: &str) -> String {
    result_str(&server.invoke(existing(id, "version")).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_through_an_upgrade_and_a_rollback_without_failing() {
    let server = Arc::new(TestServer::start().await);
    let created = server
        .invoke(new_task("versioned", Artifact::Versioned1, "version"))
        .await
        .unwrap();
    let id = created.task_id.clone();
    assert_eq!(result_str(&created), "1.0.0");

    // Callers that never stop while the task is switched under them.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (server, stop, id) = (Arc::clone(&server), Arc::clone(&stop), id.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = server.invoke(existing(&id, "version")).await;
                    seen.push(result_str(
                        &reply.expect("no call fails because of a switch"),
                    ));
                }
                seen
            })
        })
        .collect();

    // A call in flight on version 1 when the switch happens.
    let held = {
        let server = Arc::clone(&server);
        let id = id.clone();
        tokio::spawn(async move {
            server
                .invoke(with_params(existing(&id, "hold"), &[("ms", any_i64(100))]))
                .await
        })
    };
    while server.host.task(&id).unwrap().activity().running == 0 {
        tokio::task::yield_now().await;
    }

    let mut admin = admin(&server).await;
    let switched = admin
        .upgrade_task(upgrade(&id, Artifact::Versioned2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(switched.task_id, id, "the id never changes");
    assert_eq!(switched.current.as_ref().unwrap().plugin_version, "2.0.0");
    assert_eq!(switched.previous.as_ref().unwrap().plugin_version, "1.0.0");
    assert!(!switched.unchanged);
    assert_eq!(
        version_now(&server, &id).await,
        "2.0.0",
        "calls after the switch run on the new version"
    );
    let held = held.await.unwrap().expect("the call in flight finishes");
    assert_eq!(result_str(&held), "1.0.0", "… on the version it started on");

    let info = server
        .client
        .clone()
        .get_task(pb::GetTaskRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(info.metadata["plugin_version"], "2.0.0");
    assert_eq!(
        info.metadata["previous_digest"],
        switched.previous.as_ref().unwrap().digest
    );
    assert!(info.metadata.contains_key("switched_at"));

    let back = admin
        .rollback_task(rollback(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.current.as_ref().unwrap().plugin_version, "1.0.0");
    assert!(
        back.previous.is_none(),
        "one step back is kept, not a history"
    );
    assert_eq!(version_now(&server, &id).await, "1.0.0");

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let seen = caller.await.unwrap();
        // Each caller saw 1.0.0, then 2.0.0, then 1.0.0 again — never a
        // version flapping back and forth within one switch.
        let mut runs: Vec<&str> = seen.iter().map(String::as_str).collect();
        runs.dedup();
        assert!(
            ["1.0.0", "2.0.0", "1.0.0"].starts_with(&runs) || runs.is_empty(),
            "{runs:?}"
        );
    }
    let err = admin.rollback_task(rollback(&id)).await.unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "no_previous_version")
    );
    Arc::into_inner(server)
        .expect("callers are done")
        .stop()
        .await;
}

#[tokio::test]
async fn an_upgrade_that_drops_functions_is_refused_unless_allowed() {
    let server = TestServer::start().await;
    let created = server
        .invoke(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        ))
        .await
        .unwrap();
    let id = created.task_id;
    let mut admin = admin(&server).await;

    let err = admin
        .upgrade_task(upgrade(&id, Artifact::Echo))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::FailedPrecondition, "functions_removed")
    );
    assert!(err.message().contains("add, divide"), "{}", err.message());
    assert_eq!(
        server.host.task(&id).unwrap().plugin.name(),
        "math",
        "untouched"
    );

    let same = admin
        .upgrade_task(upgrade(&id, Artifact::Math))
        .await
        .unwrap()
        .into_inner();
    assert!(same.unchanged, "the running digest: nothing to switch");

    let mut allowed = upgrade(&id, Artifact::Echo);
    allowed.allow_removed = true;
    let switched = admin.upgrade_task(allowed).await.unwrap().into_inner();
    assert_eq!(switched.removed_functions, ["add", "divide"]);
    let err = server.invoke(existing(&id, "add")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    admin.rollback_task(rollback(&id)).await.unwrap();
    assert_eq!(server.host.task(&id).unwrap().plugin.name(), "math");

    let err = admin
        .upgrade_task(upgrade("no-such-task", Artifact::Math))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .upgrade_task(admin::UpgradeTaskRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("artifact_spec"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn a_task_recorded_before_a_restart_is_switched_before_any_call() {
    let data = tempfile::tempdir().unwrap();
    let serve = || {
        let dir = data.path().to_owned();
        TestServer::start_with(move |c| c.data_dir = dir)
    };
    let first = serve().await;
    let created = first
        .invoke(new_task("versioned", Artifact::Versioned1, "version"))
        .await
        .unwrap();
    let id = created.task_id.clone();
    let upgraded = admin(&first)
        .await
        .upgrade_task(upgrade(&id, Artifact::Versioned2))
        .await
        .unwrap()
        .into_inner();
    assert!(!upgraded.unchanged);
    first.stop().await;

    // Dormant: recorded, not loaded, not called since the restart. Before,
    // a switch answered NOT_FOUND task_not_found — and the version to roll
    // back to was not recorded at all.
    let second = serve().await;
    assert_eq!(second.host.dormant_tasks().len(), 1);
    let back = admin(&second)
        .await
        .rollback_task(rollback(&id))
        .await
        .unwrap()
        .into_inner();
    assert!(
        back.previous.is_none(),
        "one step back is kept, not a history"
    );
    assert_eq!(version_now(&second, &id).await, "1.0.0");
    second.stop().await;

    let third = serve().await;
    assert_eq!(third.host.dormant_tasks().len(), 1);
    admin(&third)
        .await
        .upgrade_task(upgrade(&id, Artifact::Versioned2))
        .await
        .unwrap();
    assert_eq!(version_now(&third, &id).await, "2.0.0");
    third.stop().await;
}
