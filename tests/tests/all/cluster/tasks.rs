//! Tasks created here: registered at the SMS with their artifact published
//! once, nothing left behind when a registration fails, and an upgrade
//! that the cluster resolves the id to.

use spearlet::task::Membership;
use spearlet_proto::sms::{ExecutableType, Task};
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::fake_sms::FakeSms;
use crate::grpc_util::{existing, new_task, result_i64, spec, with_metadata, TestServer};

use super::{add, bare_node, sha256_hex};

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

#[tokio::test]
async fn a_registration_whose_creation_is_abandoned_is_withdrawn() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use spearlet::sms::{Executable, PendingRegistration, Sms, TaskRegistration};

    let sms = FakeSms::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = spearlet::Config::default();
    sms.join(&mut config);
    let client = Arc::new(Sms::from_config(&config.sms, data.path()).unwrap().unwrap());
    let metadata = BTreeMap::new();
    let register = |name: &'static str| {
        let client = Arc::clone(&client);
        let metadata = metadata.clone();
        async move {
            client
                .register_task(TaskRegistration {
                    name,
                    description: "",
                    version: "1.0.0",
                    metadata: &metadata,
                    alias: None,
                    functions: vec!["f".into()],
                    executable: Executable {
                        uri: "smsfile://x".into(),
                        checksum: "ab".repeat(32).parse().unwrap(),
                        name: name.into(),
                    },
                })
                .await
                .unwrap()
        }
    };
    // What a creation's future holds when its caller goes away mid-way:
    // dropping it withdraws the registration.
    let abandoned = register("abandoned").await;
    drop(PendingRegistration::new(
        Arc::clone(&client),
        abandoned.clone(),
    ));
    sms.until("the withdrawal", |s| {
        s.unregistered.iter().any(|(id, _)| *id == abandoned)
    })
    .await;
    let kept = register("kept").await;
    assert_eq!(
        PendingRegistration::new(Arc::clone(&client), kept.clone()).keep(),
        kept
    );
    let reason = sms
        .seen()
        .unregistered
        .iter()
        .find(|(id, _)| *id == abandoned)
        .map(|(_, why)| why.clone())
        .unwrap();
    assert!(reason.contains("abandoned"), "{reason}");
    assert!(!sms.seen().unregistered.iter().any(|(id, _)| *id == kept));
    sms.stop().await;
}
