//! Ids unknown here, asked of the SMS: another node's task run here, one
//! lookup for many concurrent calls, registrations that cannot run here,
//! and an SMS that cannot be asked.

use spearlet::task::Membership;
use spearlet_proto::sms::{ExecutableType, Task, TaskExecutable, TaskStatus};
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::fake_sms::FakeSms;
use crate::grpc_util::{existing, kind, new_task, result_i64, spec, TestServer};

use super::{add, bare_node, sha256_hex};

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
async fn an_unknown_id_is_asked_of_the_sms_once_per_ttl() {
    let sms = FakeSms::start().await;
    let b = TestServer::start_with(|c| sms.join(c)).await;
    for _ in 0..5 {
        let err = b
            .invoke(add(existing("nowhere", "add"), 1, 1))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), "task_not_found");
    }
    let (gets, lists) = {
        let seen = sms.seen();
        (seen.get_task_calls, seen.list_task_calls)
    };
    assert_eq!(gets, 1, "remembered as unknown after the first lookup");
    assert!(lists >= 1);

    // An id this node creates is known at once, whatever was remembered.
    let mut create = add(existing("nowhere", "add"), 3, 4);
    create.create_if_not_exists = true;
    create.artifact_spec = Some(spec(Artifact::Math));
    assert_eq!(result_i64(&b.invoke(create).await.unwrap()), 7);
    b.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn a_lookup_ends_by_the_call_s_deadline() {
    let sms = FakeSms::start().await;
    // The SMS's own timeout would hold the call for an hour: only the
    // call's deadline can end it.
    let b = TestServer::start_with(|c| {
        sms.join(c);
        c.sms.request_timeout = std::time::Duration::from_secs(3600);
    })
    .await;
    sms.hold_lookups(true);
    let mut call = add(existing("slow-id", "add"), 1, 1);
    call.context = Some(pb::ExecutionContext {
        timeout_ms: 200,
        ..Default::default()
    });
    let err = b.invoke(call).await.unwrap_err();
    assert_eq!(
        (err.code(), kind(&err)),
        (Code::Unavailable, "sms_unavailable")
    );
    assert!(err.message().contains("deadline"), "{}", err.message());
    sms.hold_lookups(false);
    b.stop().await;
    sms.stop().await;
}
