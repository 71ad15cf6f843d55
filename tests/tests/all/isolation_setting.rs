//! A task's isolation tier as a setting (`spearlet.isolation`,
//! `spearlet.memory.max`): chosen by the call that creates the task, else
//! the server's default; refused, naming key and value, when it makes no
//! sense; fixed for the task's life — across calls, a restart, an upgrade
//! and a rollback — and reported by `GetTask`, `ListTasks` and `GetHealth`.
//!
//! Only the setting is tested here, never what a tier does: the functions
//! called are harmless in either tier.

use std::path::Path;

use spearlet::invoke::{IsolationSetting, MEMORY_MAX_KEY};
use spearlet::isolate::{Isolation, ISOLATION_KEY};
use spearlet::state::{StateDb, StoredArtifact, StoredMembership, StoredTask};
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::admin::v1 as admin;
use spearlet_proto::spearlet::admin::v1::admin_service_client::AdminServiceClient;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::{
    any_i64, existing, kind, new_task, result_i64, spec, with_metadata, with_params, TestServer,
};

const MIB_256: &str = "268435456";

fn add(req: pb::InvokeFunctionRequest) -> pb::InvokeFunctionRequest {
    with_params(req, &[("a", any_i64(2)), ("b", any_i64(40))])
}

/// NEW_TASK `name` of math's `add(2, 40)` with `metadata`.
fn create(name: &str, metadata: &[(&str, &str)]) -> pb::InvokeFunctionRequest {
    add(with_metadata(
        new_task(name, Artifact::Math, "add"),
        metadata,
    ))
}

async fn serve_in(dir: &Path, default: Isolation) -> TestServer {
    TestServer::start_with(|c| {
        c.data_dir = dir.to_owned();
        c.tiers.isolation = default;
    })
    .await
}

/// `GetTask`'s metadata for `task_id`.
async fn task_metadata(
    server: &TestServer,
    task_id: &str,
) -> std::collections::HashMap<String, String> {
    server
        .client
        .clone()
        .get_task(pb::GetTaskRequest {
            task_id: task_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .expect("the task is found")
        .metadata
}

/// The tier and cap a task runs with, and what `GetTask` says of them.
async fn tier_of(server: &TestServer, task_id: &str) -> (Isolation, Option<u64>) {
    let shown = task_metadata(server, task_id).await;
    let task = server.host.task(task_id).expect("GetTask loads the task");
    assert_eq!(
        shown.get("isolation").map(String::as_str),
        Some(task.isolation.as_str()),
        "GetTask reports the task's tier"
    );
    assert_eq!(
        shown.get("memory_max").map(String::as_str),
        task.memory_max.map(|b| b.to_string()).as_deref(),
        "GetTask reports the task's memory cap"
    );
    (task.isolation, task.memory_max)
}

#[tokio::test]
async fn the_creating_call_chooses_the_tier_and_get_task_shows_it() {
    let server = TestServer::start().await;
    let capped = server
        .invoke(create(
            "capped",
            &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, MIB_256)],
        ))
        .await
        .unwrap();
    assert_eq!(result_i64(&capped), 42);
    assert_eq!(
        tier_of(&server, &capped.task_id).await,
        (Isolation::Process, Some(256 << 20))
    );
    let isolated = server
        .invoke(create("isolated", &[(ISOLATION_KEY, "process")]))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&server, &isolated.task_id).await,
        (Isolation::Process, None)
    );
    let inside = server
        .invoke(create("inside", &[(ISOLATION_KEY, "in-process")]))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&server, &inside.task_id).await,
        (Isolation::InProcess, None)
    );
    let plain = server.invoke(create("plain", &[])).await.unwrap();
    assert_eq!(
        tier_of(&server, &plain.task_id).await,
        (Isolation::InProcess, None),
        "the default default is in-process"
    );

    // EXISTING_TASK creating its task reads the setting too.
    let mut by_id = with_metadata(
        existing("made-by-id", "add"),
        &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, "1048576")],
    );
    by_id.create_if_not_exists = true;
    by_id.artifact_spec = Some(spec(Artifact::Math));
    server.invoke(add(by_id)).await.unwrap();
    assert_eq!(
        tier_of(&server, "made-by-id").await,
        (Isolation::Process, Some(1 << 20))
    );

    let listed = server
        .client
        .clone()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let tiers: Vec<(&str, &str)> = listed
        .tasks
        .iter()
        .map(|t| (t.task_name.as_str(), t.metadata["isolation"].as_str()))
        .collect();
    assert_eq!(
        tiers,
        [
            ("capped", "process"),
            ("inside", "in-process"),
            ("isolated", "process"),
            ("made-by-id", "process"),
            ("plain", "in-process"),
        ]
    );

    let health = server.health_info().await;
    assert_eq!(
        (
            health["in_process_tasks"].as_str(),
            health["process_tasks"].as_str()
        ),
        ("2", "3")
    );
    server.stop().await;
}

#[tokio::test]
async fn without_the_key_the_server_default_applies() {
    let server = TestServer::start_with(|c| c.tiers.isolation = Isolation::Process).await;
    let defaulted = server.invoke(create("defaulted", &[])).await.unwrap();
    assert_eq!(
        tier_of(&server, &defaulted.task_id).await,
        (Isolation::Process, None)
    );
    let capped = server
        .invoke(create("capped", &[(MEMORY_MAX_KEY, MIB_256)]))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&server, &capped.task_id).await,
        (Isolation::Process, Some(256 << 20)),
        "a cap needs no key when the default is process"
    );
    let inside = server
        .invoke(create("inside", &[(ISOLATION_KEY, "in-process")]))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&server, &inside.task_id).await,
        (Isolation::InProcess, None),
        "the request wins over the default"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_tier_is_refused_naming_the_key_and_the_value() {
    let server = TestServer::start().await;
    for value in ["sandbox", "Process", ""] {
        let err = server
            .invoke(create("t", &[(ISOLATION_KEY, value)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{value:?}: {err:?}");
        assert_eq!(kind(&err), "invalid_request");
        assert!(
            err.message().contains("`spearlet.isolation`")
                && err.message().contains(&format!("`{value}`")),
            "{}",
            err.message()
        );
    }
    assert!(server.host.tasks().is_empty(), "no task was created");
    server.stop().await;
}

#[tokio::test]
async fn a_memory_cap_must_be_a_sane_byte_count_for_a_process_task() {
    let server = TestServer::start().await;
    for value in [
        "0",
        "-5",
        "256MiB",
        "1e9",
        "1099511627777",
        "18446744073709551616",
    ] {
        let err = server
            .invoke(create(
                "t",
                &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, value)],
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{value}: {err:?}");
        let message = err.message();
        assert!(
            message.contains("`spearlet.memory.max`")
                && message.contains(&format!("`{value}`"))
                && message.contains("1099511627776"),
            "names the key, the value and the limit: {message}"
        );
    }
    for metadata in [
        &[(ISOLATION_KEY, "in-process"), (MEMORY_MAX_KEY, MIB_256)][..],
        &[(MEMORY_MAX_KEY, MIB_256)][..],
    ] {
        let err = server.invoke(create("t", metadata)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("`spearlet.memory.max`")
                && err.message().contains("spearlet.isolation=process"),
            "{}",
            err.message()
        );
    }
    assert!(server.host.tasks().is_empty(), "no task was created");
    let at_limit = server
        .invoke(create(
            "t",
            &[
                (ISOLATION_KEY, "process"),
                (MEMORY_MAX_KEY, "1099511627776"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(
        tier_of(&server, &at_limit.task_id).await,
        (Isolation::Process, Some(1 << 40))
    );
    server.stop().await;
}

#[tokio::test]
async fn later_calls_never_change_a_task_s_tier() {
    let server = TestServer::start().await;
    let created = server.invoke(create("math", &[])).await.unwrap();
    let id = created.task_id;
    let asks = [(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, MIB_256)];
    let again = server
        .invoke(add(with_metadata(existing(&id, "add"), &asks)))
        .await
        .unwrap();
    assert!(again.success, "{}", again.message);
    let mut fresh = add(with_metadata(existing(&id, "add"), &asks));
    fresh.force_new_instance = true;
    assert!(server.invoke(fresh).await.unwrap().success);
    assert_eq!(
        tier_of(&server, &id).await,
        (Isolation::InProcess, None),
        "EXISTING_TASK metadata does not change the tier"
    );
    server.stop().await;
}

/// `ListTasks`' entry for the one task a server has, dormant after a
/// restart: what its record says, without loading it.
async fn dormant_tier(server: &TestServer) -> (String, String, String) {
    let listed = server
        .client
        .clone()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let shown = &listed.tasks[0].metadata;
    let get = |k: &str| shown.get(k).cloned().unwrap_or_default();
    (get("state"), get("isolation"), get("memory_max"))
}

fn dormant(isolation: &str, memory_max: &str) -> (String, String, String) {
    ("dormant".into(), isolation.into(), memory_max.into())
}

#[tokio::test]
async fn the_tier_survives_an_upgrade_a_rollback_and_restarts() {
    let data = tempfile::tempdir().unwrap();
    let first = serve_in(data.path(), Isolation::InProcess).await;
    let created = first
        .invoke(with_metadata(
            new_task("versioned", Artifact::Versioned1, "version"),
            &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, MIB_256)],
        ))
        .await
        .unwrap();
    let id = created.task_id;
    let expected = (Isolation::Process, Some(256 << 20));
    upgrade_to_version_2(&first, &id).await;
    assert_eq!(tier_of(&first, &id).await, expected, "after an upgrade");
    first.stop().await;

    // The default differs now: the recorded tier is the task's, not the
    // default's. A dormant task shows the tier it will run in.
    let second = serve_in(data.path(), Isolation::Process).await;
    assert_eq!(
        dormant_tier(&second).await,
        dormant("process", MIB_256),
        "the upgraded version's record keeps it"
    );
    second.stop().await;

    let third = serve_in(data.path(), Isolation::InProcess).await;
    assert_eq!(dormant_tier(&third).await, dormant("process", MIB_256));
    third.stop().await;
}

#[tokio::test]
async fn a_rollback_keeps_the_tier() {
    let server = TestServer::start().await;
    let created = server
        .invoke(with_metadata(
            new_task("versioned", Artifact::Versioned1, "version"),
            &[(ISOLATION_KEY, "process")],
        ))
        .await
        .unwrap();
    let id = created.task_id;
    let mut admin = upgrade_to_version_2(&server, &id).await;
    admin
        .rollback_task(admin::RollbackTaskRequest {
            task_id: id.clone(),
            drain_timeout_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        tier_of(&server, &id).await,
        (Isolation::Process, None),
        "after a rollback"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_task_woken_after_a_restart_keeps_its_tier() {
    let data = tempfile::tempdir().unwrap();
    let first = serve_in(data.path(), Isolation::InProcess).await;
    let capped = first
        .invoke(create(
            "capped",
            &[(ISOLATION_KEY, "process"), (MEMORY_MAX_KEY, MIB_256)],
        ))
        .await
        .unwrap();
    let plain = first.invoke(create("plain", &[])).await.unwrap();
    first.stop().await;

    let second = serve_in(data.path(), Isolation::Process).await;
    assert_eq!(
        tier_of(&second, &capped.task_id).await,
        (Isolation::Process, Some(256 << 20)),
        "GetTask wakes it in its tier"
    );
    assert_eq!(
        tier_of(&second, &plain.task_id).await,
        (Isolation::InProcess, None),
        "created in the default of its day, it stays there"
    );
    second.stop().await;
}

#[tokio::test]
async fn a_task_recorded_before_tiers_existed_runs_in_process_whatever_the_default() {
    let data = tempfile::tempdir().unwrap();
    {
        // As the release before the process tier recorded a task: no tier
        // in its metadata.
        let state = StateDb::open(data.path()).unwrap();
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(
                std::fs::read(Artifact::Math.path()).unwrap(),
            ))
        };
        state
            .put_task(StoredTask {
                id: "old".into(),
                name: "old".into(),
                description: String::new(),
                artifact: StoredArtifact::from(&spearlet::artifact::ArtifactSpec::at(
                    Artifact::Math.path().to_str().unwrap(),
                )),
                digest,
                metadata: [("start".to_owned(), "1".to_owned())].into(),
                membership: StoredMembership::Local,
                created_at: 1,
                previous: None,
            })
            .unwrap();
    }
    let server = serve_in(data.path(), Isolation::Process).await;
    let reply = server.invoke(add(existing("old", "add"))).await.unwrap();
    assert_eq!(result_i64(&reply), 42);
    assert_eq!(
        tier_of(&server, "old").await,
        (Isolation::InProcess, None),
        "it ran in-process, and still does"
    );
    let task = server.host.task("old").unwrap();
    assert_eq!(
        IsolationSetting::of_task(&task.metadata).unwrap(),
        IsolationSetting::default()
    );
    server.stop().await;
}

/// Upgrades task `id` on `server` to the versioned plugin's 2.0.0; the
/// admin client, for what the test does next.
async fn upgrade_to_version_2(
    server: &TestServer,
    id: &str,
) -> AdminServiceClient<tonic::transport::Channel> {
    let mut admin = AdminServiceClient::connect(server.channel_url())
        .await
        .unwrap();
    admin
        .upgrade_task(admin::UpgradeTaskRequest {
            task_id: id.to_owned(),
            artifact_spec: Some(spec(Artifact::Versioned2)),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
}
