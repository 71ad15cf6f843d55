//! Request limits over gRPC: each refusal names its limit, and the server
//! serves normally afterwards.

use spearlet_proto::spearlet as pb;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

#[tokio::test]
async fn an_oversized_field_is_refused_naming_its_limit() {
    let server = TestServer::start().await;
    let huge_name = new_task(&"n".repeat(100_000), Artifact::Math, "add");
    let err = server.invoke(huge_name).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("limits.max_name_bytes"),
        "{}",
        err.message()
    );
    let too_many = pb::InvokeFunctionRequest {
        parameters: (0..1000)
            .map(|i| pb::FunctionParameter {
                name: format!("p{i}"),
                value: Some(any_i64(i)),
                ..Default::default()
            })
            .collect(),
        ..new_task("m", Artifact::Math, "add")
    };
    let err = server.invoke(too_many).await.unwrap_err();
    assert!(
        err.message().contains("limits.max_parameters"),
        "{}",
        err.message()
    );
    let ok = with_params(
        new_task("m", Artifact::Math, "add"),
        &[("a", any_i64(2)), ("b", any_i64(3))],
    );
    assert_eq!(result_i64(&server.invoke(ok).await.unwrap()), 5);
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_by_the_transport() {
    let server = TestServer::start_with(|c| c.limits.max_message_bytes = 64 * 1024).await;
    let big = with_params(
        new_task("e", Artifact::Echo, "echo"),
        &[("input", any_bytes(&vec![7; 100 * 1024]))],
    );
    let err = server.invoke(big).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let small = with_params(
        new_task("e", Artifact::Echo, "echo"),
        &[("input", any_bytes(&[1, 2, 3]))],
    );
    assert!(server.invoke(small).await.unwrap().success);
    server.stop().await;
}

#[tokio::test]
async fn lookups_refuse_oversized_ids() {
    let server = TestServer::start().await;
    let err = server
        .client
        .clone()
        .get_execution_status(pb::GetExecutionStatusRequest {
            execution_id: "x".repeat(10_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("limits.max_id_bytes"),
        "{}",
        err.message()
    );
    server.stop().await;
}
