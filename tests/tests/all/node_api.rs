//! Today's SPEAR node API (`spearlet.InvocationService`,
//! `ExecutionService`, `InstanceService`) and the node's stream plane, end
//! to end through clients generated from SPEAR's protos
//! (`proto/proto/spearlet/node/`), beside the seed-era FunctionService.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use spearlet::api::http::ssf::{self, Frame, MsgType};
use spearlet_proto::node as node_pb;
use spearlet_proto::node::execution_service_client::ExecutionServiceClient;
use spearlet_proto::node::instance_service_client::InstanceServiceClient;
use spearlet_proto::node::invocation_service_client::InvocationServiceClient;
use spearlet_test_artifacts::Artifact;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;
use tonic::Code;

use crate::fake_sms::FakeSms;
use crate::grpc_util::{new_task, TestServer};

struct Node {
    invocations: InvocationServiceClient<Channel>,
    executions: ExecutionServiceClient<Channel>,
    instances: InstanceServiceClient<Channel>,
}

async fn node(server: &TestServer) -> Node {
    let channel = Channel::from_shared(server.channel_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Node {
        invocations: InvocationServiceClient::new(channel.clone()),
        executions: ExecutionServiceClient::new(channel.clone()),
        instances: InstanceServiceClient::new(channel),
    }
}

/// Creates `name` from `artifact` through FunctionService; its id.
async fn task(server: &TestServer, name: &str, artifact: Artifact, function: &str) -> String {
    server
        .invoke(new_task(name, artifact, function))
        .await
        .unwrap()
        .task_id
}

fn json(data: &str) -> Option<node_pb::Payload> {
    Some(node_pb::Payload {
        content_type: "application/json".into(),
        data: data.as_bytes().to_vec(),
    })
}

fn invoke(
    task_id: &str,
    function: &str,
    input: Option<node_pb::Payload>,
) -> node_pb::InvokeRequest {
    node_pb::InvokeRequest {
        task_id: task_id.into(),
        function_name: function.into(),
        input,
        ..Default::default()
    }
}

fn status(raw: i32) -> node_pb::ExecutionStatus {
    node_pb::ExecutionStatus::try_from(raw).unwrap()
}

#[tokio::test]
async fn sync_invoke_keeps_the_callers_ids_and_answers_the_result() {
    let server = TestServer::start().await;
    let math = task(&server, "math", Artifact::Math, "add").await;
    let mut node = node(&server).await;
    let mut req = invoke(&math, "add", json(r#"{"a": 2, "b": 40}"#));
    req.invocation_id = "inv-1".into();
    req.execution_id = "exec-1".into();
    let reply = node
        .invocations
        .invoke(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(reply.status), node_pb::ExecutionStatus::Completed);
    assert_eq!(
        (reply.invocation_id.as_str(), reply.execution_id.as_str()),
        ("inv-1", "exec-1")
    );
    assert!(
        reply.instance_id.starts_with(&math),
        "{}",
        reply.instance_id
    );
    let output = reply.output.expect("a SYNC reply carries the output");
    assert_eq!(output.content_type, "application/json");
    assert_eq!(output.data, b"42");
    assert!(reply.started_at.is_some() && reply.completed_at.is_some());

    // The same execution id again: where it stands, not a second run.
    let again = node.invocations.invoke(req).await.unwrap().into_inner();
    assert_eq!(again.execution_id, "exec-1");
    assert_eq!(again.output.unwrap().data, b"42");

    let got = node
        .executions
        .get_execution(node_pb::GetExecutionRequest {
            execution_id: "exec-1".into(),
            include_output: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.invocation_id.as_str(), got.function_name.as_str()),
        ("inv-1", "add")
    );
    assert!(got.output.is_none(), "output only when asked for");
    let got = node
        .executions
        .get_execution(node_pb::GetExecutionRequest {
            execution_id: "exec-1".into(),
            include_output: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.output.unwrap().data, b"42");

    // A run that fails is a reply, not an error status.
    let failed = node
        .invocations
        .invoke(invoke(&math, "divide", json(r#"{"a": 1, "b": 0}"#)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(failed.status), node_pb::ExecutionStatus::Failed);
    assert!(!failed.error.unwrap().code.is_empty());
    assert!(!failed.invocation_id.is_empty() && !failed.execution_id.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn raw_input_is_the_one_parameter_and_the_default_entry_resolves() {
    let server = TestServer::start().await;
    let echo = task(&server, "echo", Artifact::Echo, "nop").await;
    let mut node = node(&server).await;
    let text = node_pb::Payload {
        content_type: "text/plain".into(),
        data: b"shout".to_vec(),
    };
    let reply = node
        .invocations
        .invoke(invoke(&echo, "upper", Some(text.clone())))
        .await
        .unwrap()
        .into_inner();
    let output = reply.output.unwrap();
    assert_eq!(output.data, b"SHOUT");
    assert!(output.content_type.starts_with("text/plain"));
    // The echo sample marks `echo` its default function.
    for name in ["", "__spear_default_entry__"] {
        let reply = node
            .invocations
            .invoke(invoke(&echo, name, Some(text.clone())))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status(reply.status), node_pb::ExecutionStatus::Completed);
        assert_eq!(reply.output.unwrap().data, b"shout", "`{name}`");
    }
    // Several functions and none marked: a clear refusal naming them.
    let math = task(&server, "math", Artifact::Math, "add").await;
    let err = node
        .invocations
        .invoke(invoke(&math, "", json(r#"{"a": 1, "b": 2}"#)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("add") && err.message().contains("divide"),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_and_unknown_ids_get_spears_codes() {
    let server = TestServer::start().await;
    let mut node = node(&server).await;
    let err = node
        .invocations
        .invoke(invoke("", "f", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("task_id"), "{err:?}");
    let err = node
        .invocations
        .invoke(invoke("no-such-task", "f", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = node
        .executions
        .get_execution(node_pb::GetExecutionRequest {
            execution_id: "nope".into(),
            include_output: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = node
        .executions
        .terminate_execution(node_pb::TerminateExecutionRequest {
            execution_id: "nope".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = node
        .instances
        .destroy_instance(node_pb::DestroyInstanceRequest {
            instance_id: "nope-1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let math = task(&server, "math", Artifact::Math, "add").await;
    let err = node
        .invocations
        .invoke(invoke(&math, "add", json(r#"{"a": "two", "b": 1}"#)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`a`"), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn async_invoke_answers_at_once_and_terminate_ends_it() {
    let server = TestServer::start().await;
    let sleepy = task(&server, "sleepy", Artifact::Sleepy, "sleep").await;
    let mut node = node(&server).await;
    let mut req = invoke(&sleepy, "sleep", json(r#"{"ms": 60000}"#));
    req.mode = node_pb::ExecutionMode::Async.into();
    req.execution_id = "long".into();
    req.invocation_id = "inv-long".into();
    let reply = node.invocations.invoke(req).await.unwrap().into_inner();
    let accepted = status(reply.status);
    assert!(
        matches!(
            accepted,
            node_pb::ExecutionStatus::Pending | node_pb::ExecutionStatus::Running
        ),
        "{accepted:?}"
    );
    let ended = node
        .executions
        .terminate_execution(node_pb::TerminateExecutionRequest {
            execution_id: "long".into(),
            reason: "enough".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ended.success, "{ended:?}");
    assert_eq!(
        status(ended.final_status),
        node_pb::ExecutionStatus::Terminated
    );
    let got = node
        .executions
        .get_execution(node_pb::GetExecutionRequest {
            execution_id: "long".into(),
            include_output: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(got.status), node_pb::ExecutionStatus::Terminated);
    // Terminating it again says it had ended.
    let again = node
        .executions
        .terminate_execution(node_pb::TerminateExecutionRequest {
            execution_id: "long".into(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.success);

    // Listed by invocation id, newest first, in pages.
    for n in 0..3 {
        let mut req = invoke(&sleepy, "sleep", json(r#"{"ms": 0}"#));
        req.invocation_id = "inv-page".into();
        req.execution_id = format!("page-{n}");
        node.invocations.invoke(req).await.unwrap();
    }
    let first = node
        .executions
        .list_executions(node_pb::ListExecutionsRequest {
            invocation_id: "inv-page".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = first
        .executions
        .iter()
        .map(|e| e.execution_id.as_str())
        .collect();
    assert_eq!(ids, ["page-2", "page-1"]);
    assert_eq!(first.next_page_token, "page-1");
    let rest = node
        .executions
        .list_executions(node_pb::ListExecutionsRequest {
            invocation_id: "inv-page".into(),
            limit: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = rest
        .executions
        .iter()
        .map(|e| e.execution_id.as_str())
        .collect();
    assert_eq!(ids, ["page-0"]);
    assert!(rest.next_page_token.is_empty());
    let by_task = node
        .executions
        .list_executions(node_pb::ListExecutionsRequest {
            task_id: sleepy.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_task.executions.len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn destroying_an_idle_instance_drops_it_from_the_pool() {
    let server = TestServer::start().await;
    let math = task(&server, "math", Artifact::Math, "add").await;
    let mut node = node(&server).await;
    let reply = node
        .invocations
        .invoke(invoke(&math, "add", json(r#"{"a": 1, "b": 1}"#)))
        .await
        .unwrap()
        .into_inner();
    let before = server.pool(&math);
    let destroyed = node
        .instances
        .destroy_instance(node_pb::DestroyInstanceRequest {
            instance_id: reply.instance_id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(destroyed.success, "{destroyed:?}");
    assert_eq!(server.pool(&math).live, before.live - 1);
    let err = node
        .instances
        .destroy_instance(node_pb::DestroyInstanceRequest {
            instance_id: reply.instance_id,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}

fn request_frame(stream_id: u32, seq: u64, meta: &str, data: &[u8]) -> Vec<u8> {
    Frame {
        msg_type: MsgType::Request,
        flags: 0,
        stream_id,
        seq,
        meta: meta.as_bytes().to_vec(),
        data: data.to_vec(),
    }
    .encode()
}

#[tokio::test]
async fn a_gateway_execution_serves_frames_on_multiplexed_streams_until_terminated() {
    let server = TestServer::start_node_with(|_| {}).await;
    let echo = task(&server, "echo", Artifact::Echo, "nop").await;
    let mut node = node(&server).await;
    let mut req = invoke(&echo, "__spear_default_entry__", None);
    req.mode = node_pb::ExecutionMode::Async.into();
    req.execution_id = "served".into();
    req.metadata = HashMap::from([("spear.endpoint_gateway".to_owned(), "true".to_owned())]);
    let reply = node.invocations.invoke(req).await.unwrap().into_inner();
    assert_eq!(status(reply.status), node_pb::ExecutionStatus::Running);
    assert_eq!(reply.instance_id, "serve-served");

    let http = server.http_addr.unwrap();
    let url = format!("ws://{http}/api/v1/executions/served/streams/ws");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Two streams on one connection: the default entry, and a named function.
    socket
        .send(Message::Binary(request_frame(1, 7, "{}", b"hello").into()))
        .await
        .unwrap();
    socket
        .send(Message::Binary(
            request_frame(
                2,
                9,
                r#"{"function": "upper", "content_type": "text/plain"}"#,
                b"hello",
            )
            .into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Binary(
            request_frame(3, 1, r#"{"function": "missing"}"#, b"").into(),
        ))
        .await
        .unwrap();
    let mut answers = HashMap::new();
    while answers.len() < 3 {
        let message = socket.next().await.unwrap().unwrap();
        let Message::Binary(bytes) = message else {
            panic!("unexpected message {message:?}");
        };
        let frame = ssf::decode(&bytes).unwrap().to_frame();
        answers.insert(frame.stream_id, frame);
    }
    assert_eq!((answers[&1].msg_type, answers[&1].seq), (MsgType::Data, 7));
    assert_eq!(answers[&1].data, b"hello");
    assert_eq!((answers[&2].msg_type, answers[&2].seq), (MsgType::Data, 9));
    assert_eq!(answers[&2].data, b"HELLO");
    assert_eq!(answers[&3].msg_type, MsgType::Error);
    let meta: serde_json::Value = serde_json::from_slice(&answers[&3].meta).unwrap();
    assert_eq!(meta["error"]["code"], "function_not_found", "{meta}");

    // Unknown executions are refused before the upgrade.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{http}/api/v1/executions/nope/streams/ws"))
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("404"), "{refused}");

    // A frame that is not SSF closes the connection (1008).
    let (mut bad, _) = tokio_tungstenite::connect_async(format!(
        "ws://{http}/api/v1/executions/served/streams/ws"
    ))
    .await
    .unwrap();
    bad.send(Message::Binary(b"not a frame".to_vec().into()))
        .await
        .unwrap();
    let Some(Ok(Message::Close(Some(close)))) = bad.next().await else {
        panic!("a bad frame closes the connection");
    };
    assert_eq!(u16::from(close.code), 1008);

    // Terminated: the execution ends and its connections close.
    let ended = node
        .executions
        .terminate_execution(node_pb::TerminateExecutionRequest {
            execution_id: "served".into(),
            reason: "done".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ended.success);
    let closed = loop {
        match socket.next().await {
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(u16::from(closed.unwrap().code), 1001);
    let got = node
        .executions
        .get_execution(node_pb::GetExecutionRequest {
            execution_id: "served".into(),
            include_output: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(got.status), node_pb::ExecutionStatus::Terminated);
    server.stop().await;
}

/// A task registered at the SMS by another node: `bytes` served by its
/// file API, pinned by their sha256.
fn register_elsewhere(sms: &FakeSms, id: &str, bytes: Vec<u8>) {
    use sha2::Digest;
    use spearlet_proto::sms::{ExecutableType, Task, TaskExecutable, TaskStatus};
    let file = format!("file-of-{id}");
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
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
async fn the_sms_learns_of_executions_and_instances_and_places_the_node() {
    use spearlet_proto::sms::{ExecutionStatus as Reported, InstanceStatus};
    let sms = FakeSms::start().await;
    let server = TestServer::start_node_with(|c| sms.join(c)).await;
    sms.until("the node registered", |s| !s.nodes.is_empty())
        .await;
    {
        let seen = sms.seen();
        let node = seen.nodes.values().next().unwrap();
        assert_eq!(node.status, "online");
        assert_eq!(node.port, i32::from(server.addr.port()));
        assert_eq!(node.http_port, i32::from(server.http_addr.unwrap().port()));
        assert!(
            node.ip_address.parse::<std::net::IpAddr>().is_ok(),
            "{node:?}"
        );
    }
    // A task this node has never seen: fetched from the SMS, after the
    // ASYNC call was accepted.
    let mut bytes = std::fs::read(Artifact::Math.path()).unwrap();
    bytes.extend_from_slice(b"spearlet-test-variant:node-api-reports");
    register_elsewhere(&sms, "remote-math", bytes);
    let mut node = node(&server).await;
    let mut req = invoke("remote-math", "add", json(r#"{"a": 20, "b": 22}"#));
    req.mode = node_pb::ExecutionMode::Async.into();
    req.execution_id = "reported".into();
    req.invocation_id = "inv-reported".into();
    let reply = node.invocations.invoke(req).await.unwrap().into_inner();
    assert_ne!(status(reply.status), node_pb::ExecutionStatus::Failed);
    sms.until_execution("reported", |e| e.status == Reported::Completed as i32)
        .await;
    let reports: Vec<_> = sms
        .executions()
        .into_iter()
        .filter(|e| e.execution_id == "reported")
        .collect();
    // A start report still queued when the end comes is replaced by it (the
    // reporter coalesces): the end always arrives, after any start.
    let (end, starts) = reports.split_last().expect("the end is reported");
    assert_eq!(end.status, Reported::Completed as i32);
    assert!(
        starts.iter().all(|r| r.status == Reported::Running as i32),
        "{reports:?}"
    );
    assert!(reports
        .windows(2)
        .all(|w| w[1].updated_at_ms > w[0].updated_at_ms));
    let last = reports.last().unwrap();
    assert_eq!(
        (
            last.invocation_id.as_str(),
            last.task_id.as_str(),
            last.function_name.as_str()
        ),
        ("inv-reported", "remote-math", "add")
    );
    assert!(last.completed_at_ms >= last.started_at_ms && last.started_at_ms > 0);
    let instance = last.instance_id.clone();
    sms.until("the instance idle", |s| {
        s.stored_instances.get(&instance).is_some_and(|i| {
            i.status == InstanceStatus::Idle as i32 && i.current_execution_id.is_empty()
        })
    })
    .await;
    let got = node
        .executions
        .get_execution(node_pb::GetExecutionRequest {
            execution_id: "reported".into(),
            include_output: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.output.unwrap().data, b"42");

    // An execution that never got an instance (its task is nowhere) is
    // reported on a placeholder instance, gone at once: the SMS requires an
    // instance, and must not route to one that never served.
    let mut req = invoke("nowhere", "add", None);
    req.mode = node_pb::ExecutionMode::Async.into();
    req.execution_id = "unplaced".into();
    let _ = node.invocations.invoke(req).await;
    sms.until_execution("unplaced", |e| e.status == Reported::Failed as i32)
        .await;
    sms.until("the placeholder instance gone", |s| {
        s.stored_instances
            .get("unplaced-unplaced")
            .is_some_and(|i| {
                i.status == InstanceStatus::Terminated as i32 && i.current_execution_id.is_empty()
            })
    })
    .await;

    // A gateway execution is reported at once, as its own instance, which
    // names it current until it is terminated.
    let mut req = invoke("remote-math", "add", None);
    req.mode = node_pb::ExecutionMode::Async.into();
    req.execution_id = "gateway".into();
    req.metadata = HashMap::from([("spear.endpoint_gateway".to_owned(), "true".to_owned())]);
    node.invocations.invoke(req).await.unwrap();
    sms.until("the serving instance", |s| {
        s.stored_instances
            .get("serve-gateway")
            .is_some_and(|i| i.current_execution_id == "gateway")
    })
    .await;
    node.executions
        .terminate_execution(node_pb::TerminateExecutionRequest {
            execution_id: "gateway".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    sms.until_execution("gateway", |e| e.status == Reported::Cancelled as i32)
        .await;
    sms.until("the serving instance gone", |s| {
        s.stored_instances.get("serve-gateway").is_some_and(|i| {
            i.status == InstanceStatus::Terminated as i32 && i.current_execution_id.is_empty()
        })
    })
    .await;
    server.stop().await;
    sms.stop().await;
}
