//! Joining a SPEAR cluster (docs/cluster.md), against the fake SMS: node
//! registration, heartbeats and leaving; tasks registered on creation with
//! their artifact published once; lookups by id from another node; an SMS
//! that is down.

use std::collections::HashMap;

use spearlet::registry::Membership;
use spearlet_proto::sms::{ExecutableType, Task, TaskExecutable, TaskStatus};
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::fake_sms::FakeSms;
use crate::grpc_util::{
    any_i64, existing, kind, new_task, result_i64, spec, with_metadata, with_params, TestServer,
};

fn add(req: pb::InvokeFunctionRequest, a: i64, b: i64) -> pb::InvokeFunctionRequest {
    with_params(req, &[("a", any_i64(a)), ("b", any_i64(b))])
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn health(server: &TestServer) -> HashMap<String, String> {
    server
        .client
        .clone()
        .get_health(pb::GetHealthRequest {
            include_details: true,
        })
        .await
        .unwrap()
        .into_inner()
        .details
        .unwrap()
        .system_info
}

/// A server that joined `sms`, with no artifact roots: it can run only
/// what the cluster gives it.
async fn bare_node(sms: &FakeSms) -> TestServer {
    TestServer::start_with(|c| {
        sms.join(c);
        c.artifacts.roots.clear();
    })
    .await
}

#[tokio::test]
async fn the_node_registers_heartbeats_and_leaves_when_stopped() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    let uuid = server.host.sms().unwrap().node_uuid().to_owned();
    sms.until("two heartbeats", |s| s.heartbeats.len() >= 2)
        .await;
    {
        let seen = sms.seen();
        let node = &seen.nodes[&uuid];
        assert_eq!(
            (node.ip_address.as_str(), node.port, node.status.as_str()),
            ("127.0.0.1", i32::from(server.addr.port()), "active")
        );
        assert_eq!(node.metadata["kind"], "native-plugins");
        assert_eq!(node.metadata["version"], env!("CARGO_PKG_VERSION"));
        assert!(node.metadata.contains_key("plugin_abi"));
        let beat = &seen.heartbeats[0];
        assert_eq!(beat.uuid, uuid);
        assert_eq!(beat.health_info["tasks"], "0");
        assert_eq!(beat.health_info["status"], "serving");
    }
    let info = health(&server).await;
    assert_eq!(info["sms"], "registered");
    assert_eq!(info["sms_node_uuid"], uuid);
    assert!(info.contains_key("sms_last_heartbeat"));

    server.stop().await;
    let deleted = sms.seen().deleted_nodes.clone();
    assert_eq!(deleted, [uuid], "a graceful stop deletes the node");
    sms.stop().await;
}

#[tokio::test]
async fn a_restart_is_the_same_node() {
    let sms = FakeSms::start().await;
    let data = tempfile::tempdir().unwrap();
    let host = |dir: &std::path::Path| {
        let mut config = crate::helpers::config_in(dir);
        sms.join(&mut config);
        spearlet::Host::new(config).unwrap()
    };
    let first = host(data.path()).sms().unwrap().node_uuid().to_owned();
    let again = host(data.path()).sms().unwrap().node_uuid().to_owned();
    assert_eq!(first, again);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(host(other.path()).sms().unwrap().node_uuid(), first);
    sms.stop().await;
}

#[tokio::test]
async fn an_unreachable_sms_does_not_stop_the_host_and_is_joined_when_back() {
    let sms = FakeSms::start().await;
    sms.set_down(true);
    let server = TestServer::start_with(|c| sms.join(c)).await;
    // Serving: a local call that needs no SMS works.
    let info = loop {
        let info = health(&server).await;
        if info["sms"] == "unreachable" {
            break info;
        }
        tokio::task::yield_now().await;
    };
    assert!(info["sms_error"].contains("unreachable"), "{info:?}");
    sms.set_down(false);
    sms.until("the node registered", |s| s.node_registrations >= 1)
        .await;
    sms.until("a heartbeat", |s| !s.heartbeats.is_empty()).await;
    assert_eq!(health(&server).await["sms"], "registered");
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn a_forgotten_node_registers_again() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    sms.until("a heartbeat", |s| !s.heartbeats.is_empty()).await;
    // The SMS restarts and forgets its nodes: heartbeats get NOT_FOUND.
    sms.seen().nodes.clear();
    sms.until("a second registration", |s| s.node_registrations >= 2)
        .await;
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn created_tasks_are_registered_with_their_artifact_published_once() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    let req = with_metadata(
        add(new_task("math", Artifact::Math, "add"), 2, 40),
        &[("tenant", "blue"), ("spearlet.endpoint", "math_route")],
    );
    let reply = server.invoke(req).await.unwrap();
    assert_eq!(result_i64(&reply), 42);
    let bytes = std::fs::read(Artifact::Math.path()).unwrap();
    let digest = sha256_hex(&bytes);
    {
        let seen = sms.seen();
        let task = &seen.tasks[&reply.task_id];
        assert_eq!(task.task_id, reply.task_id, "the SMS assigns NEW_TASK ids");
        assert_eq!(task.name, "math");
        assert_eq!(task.node_uuid, server.host.sms().unwrap().node_uuid());
        assert_eq!(task.endpoint, "math_route");
        assert_eq!(task.metadata["tenant"], "blue");
        assert!(task.capabilities.contains(&"add".to_owned()));
        let exe = task.executable.as_ref().unwrap();
        assert_eq!(exe.r#type, ExecutableType::Binary as i32);
        assert_eq!(exe.checksum_sha256, digest);
        assert_eq!(exe.name, "math");
        let file = exe.uri.strip_prefix("smsfile://").expect("published");
        assert_eq!(seen.files[file], bytes, "the verified bytes were uploaded");
        assert!(!task.version.is_empty());
    }
    let info = server
        .host
        .task(&reply.task_id)
        .expect("known here under the SMS's id");
    assert!(
        matches!(&info.membership, Membership::Registered { sms_id } if *sms_id == reply.task_id)
    );

    // Another task from the same file: registered, not uploaded again.
    let second = server
        .invoke(add(new_task("math-2", Artifact::Math, "add"), 1, 1))
        .await
        .unwrap();
    assert_ne!(second.task_id, reply.task_id);
    assert_eq!(sms.seen().uploads, 1);
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_is_an_address_is_refused_before_anything_happens() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    let req = with_metadata(
        add(new_task("routed", Artifact::Math, "add"), 1, 2),
        &[("spearlet.endpoint", "127.0.0.1:50052")],
    );
    let err = server.invoke(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("spearlet.endpoint"),
        "{}",
        err.message()
    );
    assert!(sms.seen().tasks.is_empty());
    assert!(server.host.tasks().is_empty());
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn another_node_runs_a_task_by_id() {
    let sms = FakeSms::start().await;
    let a = TestServer::start_with(|c| sms.join(c)).await;
    let b = bare_node(&sms).await;
    let created = a
        .invoke(add(new_task("shared-math", Artifact::Math, "add"), 2, 3))
        .await
        .unwrap();
    let id = created.task_id.clone();

    let reply = b.invoke(add(existing(&id, "add"), 20, 22)).await.unwrap();
    assert_eq!(result_i64(&reply), 42);
    assert_eq!(reply.task_id, id, "the same id on every node");
    let replica = b.host.task(&id).expect("created locally under the id");
    assert_eq!(replica.name, "shared-math");
    assert!(matches!(
        &replica.membership,
        Membership::Replica { node_uuid, .. } if node_uuid == a.host.sms().unwrap().node_uuid()
    ));
    // Known locally now: no second lookup.
    let gets = sms.seen().get_task_calls;
    b.invoke(add(existing(&id, "add"), 1, 1)).await.unwrap();
    assert_eq!(sms.seen().get_task_calls, gets);

    // A client-chosen id resolves on another node too, by its alias.
    let mut chosen = add(existing("my-math", "add"), 1, 2);
    chosen.create_if_not_exists = true;
    chosen.artifact_spec = Some(spec(Artifact::Math));
    a.invoke(chosen).await.unwrap();
    let reply = b
        .invoke(add(existing("my-math", "add"), 5, 5))
        .await
        .unwrap();
    assert_eq!(
        (reply.task_id.as_str(), result_i64(&reply)),
        ("my-math", 10)
    );

    // Deleting the replica leaves the registration alone.
    let deleted = b
        .client
        .clone()
        .delete_task(pb::DeleteTaskRequest {
            task_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        deleted.message.contains("stays registered"),
        "{}",
        deleted.message
    );
    assert!(sms.seen().tasks.contains_key(&id));
    a.stop().await;
    b.stop().await;
    sms.stop().await;
}

/// A registration as another node makes it: `bytes` served by the file
/// API, pinned by their sha256.
fn register_elsewhere(sms: &FakeSms, id: &str, bytes: Vec<u8>) {
    let file = format!("file-of-{id}");
    let digest = sha256_hex(&bytes);
    sms.seen().files.insert(file.clone(), bytes);
    sms.insert_task(Task {
        task_id: id.into(),
        name: format!("name-of-{id}"),
        status: TaskStatus::Registered.into(),
        node_uuid: "11111111-1111-4111-8111-111111111111".into(),
        version: "0.1.0".into(),
        executable: Some(TaskExecutable {
            r#type: ExecutableType::Binary.into(),
            uri: format!("smsfile://{file}"),
            name: "math".into(),
            checksum_sha256: digest,
            ..TaskExecutable::default()
        }),
        ..Task::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_id_make_one_sms_call_and_one_fetch() {
    let sms = FakeSms::start().await;
    let b = bare_node(&sms).await;
    // Bytes no other test loads, so the fetch really happens.
    let mut bytes = std::fs::read(Artifact::Math.path()).unwrap();
    bytes.extend_from_slice(b"spearlet-test-variant:cluster-fetch");
    register_elsewhere(&sms, "remote-1", bytes);

    let calls = (0..8).map(|i| {
        let b = &b;
        async move { b.invoke(add(existing("remote-1", "add"), i, 1)).await }
    });
    for (i, reply) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result_i64(&reply.unwrap()), i as i64 + 1);
    }
    let (lookups, fetches) = {
        let seen = sms.seen();
        (seen.get_task_calls, seen.downloads)
    };
    assert_eq!(lookups, 1, "one SMS lookup");
    assert_eq!(fetches, 1, "one fetch");
    b.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_unrunnable_registrations() {
    let sms = FakeSms::start().await;
    let b = bare_node(&sms).await;
    let err = b
        .invoke(add(existing("nowhere", "add"), 1, 1))
        .await
        .unwrap_err();
    assert_eq!((err.code(), kind(&err)), (Code::NotFound, "task_not_found"));

    let mut wasm = Task {
        task_id: "wasm-task".into(),
        name: "wasm".into(),
        executable: Some(TaskExecutable {
            r#type: ExecutableType::Wasm.into(),
            uri: "smsfile://w".into(),
            checksum_sha256: "ab".repeat(32),
            ..TaskExecutable::default()
        }),
        ..Task::default()
    };
    sms.insert_task(wasm.clone());
    let err = b.invoke(existing("wasm-task", "run")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(kind(&err), "task_not_runnable_here");
    assert!(
        err.message().contains("EXECUTABLE_TYPE_WASM"),
        "{}",
        err.message()
    );

    wasm.task_id = "unpinned".into();
    let exe = wasm.executable.as_mut().unwrap();
    exe.r#type = ExecutableType::Binary.into();
    exe.checksum_sha256.clear();
    sms.insert_task(wasm);
    let err = b.invoke(existing("unpinned", "run")).await.unwrap_err();
    assert_eq!(kind(&err), "task_not_runnable_here");
    assert!(
        err.message().contains("checksum_sha256"),
        "{}",
        err.message()
    );
    assert!(b.host.tasks().is_empty());

    // Unknown everywhere, with create_if_not_exists: created here, and
    // registered under its alias.
    let mut create = add(existing("fresh-id", "add"), 3, 4);
    create.create_if_not_exists = true;
    create.artifact_spec = Some(spec(Artifact::Math));
    let a = TestServer::start_with(|c| sms.join(c)).await;
    let reply = a.invoke(create).await.unwrap();
    assert_eq!(
        (reply.task_id.as_str(), result_i64(&reply)),
        ("fresh-id", 7)
    );
    assert!(sms.seen().tasks.values().any(|t| t
        .metadata
        .get("spearlet.task_id")
        .map(String::as_str)
        == Some("fresh-id")));
    a.stop().await;
    b.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn an_sms_that_is_down_is_unavailable_never_not_found() {
    // Nothing listens here.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = TestServer::start_with(|c| {
        c.sms.grpc = Some(format!("http://{dead}").parse().unwrap());
        c.sms.request_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    let err = server
        .invoke(add(existing("some-id", "add"), 1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(kind(&err), "sms_unavailable");
    assert!(
        err.message().contains(&dead.to_string()),
        "names the SMS: {}",
        err.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_registration_leaves_nothing_behind() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    sms.set_tasks_down(true);
    let err = server
        .invoke(add(new_task("doomed", Artifact::Math, "add"), 1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("RegisterTask"), "{}", err.message());
    assert!(server.host.tasks().is_empty(), "no local task");
    assert!(sms.seen().tasks.is_empty());

    // Back up: the same request creates it.
    sms.set_tasks_down(false);
    let reply = server
        .invoke(add(new_task("doomed", Artifact::Math, "add"), 1, 1))
        .await
        .unwrap();
    assert_eq!(result_i64(&reply), 2);

    // Deleting unregisters; an SMS that is down is reported, and the local
    // delete happens anyway.
    let delete = |id: &str| pb::DeleteTaskRequest {
        task_id: id.to_owned(),
        ..Default::default()
    };
    let deleted = server
        .client
        .clone()
        .delete_task(delete(&reply.task_id))
        .await
        .unwrap()
        .into_inner();
    assert!(
        deleted.message.contains("unregistered"),
        "{}",
        deleted.message
    );
    assert_eq!(sms.seen().unregistered[0].0, reply.task_id);
    assert!(!sms.seen().tasks.contains_key(&reply.task_id));

    let again = server
        .invoke(add(new_task("kept", Artifact::Math, "add"), 1, 1))
        .await
        .unwrap();
    sms.set_tasks_down(true);
    let deleted = server
        .client
        .clone()
        .delete_task(delete(&again.task_id))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert!(
        deleted.message.contains("still registered"),
        "{}",
        deleted.message
    );
    assert!(server.host.tasks().is_empty());
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn an_upgrade_is_what_the_cluster_resolves_the_id_to() {
    use spearlet_proto::spearlet::admin::v1 as admin;
    let sms = FakeSms::start().await;
    let a = TestServer::start_with(|c| sms.join(c)).await;
    let created = a
        .invoke(new_task("versioned", Artifact::Versioned1, "version"))
        .await
        .unwrap();
    let id = created.task_id.clone();
    let mut client = admin::admin_service_client::AdminServiceClient::connect(a.channel_url())
        .await
        .unwrap();
    client
        .upgrade_task(admin::UpgradeTaskRequest {
            task_id: id.clone(),
            artifact_spec: Some(spec(Artifact::Versioned2)),
            ..Default::default()
        })
        .await
        .unwrap();
    let v2 = sha256_hex(&std::fs::read(Artifact::Versioned2.path()).unwrap());
    {
        let seen = sms.seen();
        assert!(!seen.tasks.contains_key(&id), "the old registration went");
        let now: Vec<&Task> = seen
            .tasks
            .values()
            .filter(|t| t.metadata.get("spearlet.task_id") == Some(&id))
            .collect();
        assert_eq!(now.len(), 1, "{now:?}");
        assert_eq!(now[0].executable.as_ref().unwrap().checksum_sha256, v2);
    }
    // A node that did not know the task resolves the id to version 2.
    let b = bare_node(&sms).await;
    let reply = b.invoke(existing(&id, "version")).await.unwrap();
    assert_eq!(crate::grpc_util::result_str(&reply), "2.0.0");
    a.stop().await;
    b.stop().await;
    sms.stop().await;
}
