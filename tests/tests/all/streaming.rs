//! StreamFunction: chunks in order, backpressure, disconnects.

use prost::Message;
use spearlet::exec::ExecutionStatus;
use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tokio::sync::mpsc;

use crate::grpc_util::*;

async fn stream_messages(
    server: &TestServer,
    req: pb::InvokeFunctionRequest,
) -> Vec<pb::StreamExecutionResult> {
    let mut stream = server
        .client
        .clone()
        .stream_function(req)
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn stream_function_streams_chunks_in_order_then_a_final_message() {
    let server = TestServer::start().await;
    let req = with_params(
        new_task("s", Artifact::Stream, "count"),
        &[("n", any_i64(100))],
    );
    let messages = stream_messages(&server, req).await;
    assert_eq!(messages.len(), 101);
    for (i, m) in messages[..100].iter().enumerate() {
        assert!(!m.is_final);
        assert_eq!(
            i64::decode(m.chunk_data.as_ref().unwrap().value.as_slice()).unwrap(),
            i as i64
        );
    }
    let last = &messages[100];
    assert!(last.is_final);
    assert_eq!(last.status, pb::ExecutionStatus::Completed as i32);

    // A unary function's result is the final message.
    let unary = with_params(
        new_task("m", Artifact::Math, "add"),
        &[("a", any_i64(1)), ("b", any_i64(2))],
    );
    let messages = stream_messages(&server, unary).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].is_final);
    assert_eq!(
        i64::decode(messages[0].chunk_data.as_ref().unwrap().value.as_slice()).unwrap(),
        3
    );

    // Errors arrive on the final message too.
    let bad = with_params(
        new_task("s", Artifact::Stream, "count"),
        &[("n", any_i64(-1))],
    );
    let messages = stream_messages(&server, bad).await;
    assert_eq!(
        messages.last().unwrap().status,
        pb::ExecutionStatus::Failed as i32
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_the_plugin_back() {
    // In-process, with a two-chunk buffer: every chunk still arrives, in
    // order, so the plugin must have waited for the consumer each time the
    // buffer was full rather than dropping or piling up chunks.
    let server = TestServer::start().await;
    let host = server.host.clone();
    let (tx, mut rx) = mpsc::channel(2);
    let spec = spearlet::artifact::ArtifactSpec::at(Artifact::Stream.path().to_str().unwrap());
    let request = spearlet::invoke::InvokeRequest::new(
        spearlet::invoke::Target::NewTask {
            name: "s".into(),
            description: String::new(),
            artifact: spec,
        },
        "count",
    )
    .param("n", spearlet::Value::I64(5_000));
    let run = tokio::spawn(async move { host.stream(request, tx).await });
    let mut next = 0;
    while let Some(chunk) = rx.recv().await {
        assert!(rx.len() <= 2);
        assert_eq!(chunk, spearlet::Value::I64(next));
        next += 1;
        if next % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(next, 5_000);
    assert_eq!(
        run.await.unwrap().unwrap().execution.status,
        ExecutionStatus::Completed
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_stream() {
    let server = TestServer::start().await;
    let mut req = with_params(
        new_task("s", Artifact::Stream, "count"),
        &[("n", any_i64(i64::MAX))],
    );
    req.execution_id = Some("stream-gone".into());
    let mut stream = server
        .client
        .clone()
        .stream_function(req)
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.execution_id, "stream-gone");
    drop(stream);
    let done = until_final(&server, "stream-gone").await;
    assert_eq!(done.status, ExecutionStatus::Cancelled);
    server.stop().await;
}
