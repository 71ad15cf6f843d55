//! A parameter the function does not declare is refused before anything
//! runs — through FunctionService, a dry run, today's node API and the
//! process tier alike — unless the function takes extra parameters
//! (`#[function(extra_params)]`).

use std::collections::BTreeMap;

use spearlet::artifact::ArtifactSpec;
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::isolate::ISOLATION_KEY;
use spearlet::{Error, Value};
use spearlet_proto::node as node_pb;
use spearlet_proto::node::invocation_service_client::InvocationServiceClient;
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

const TYPO: &str = "unknown parameter `inpt` of `upper`; did you mean `input`?";

#[tokio::test]
async fn an_unknown_parameter_is_invalid_argument_naming_it_and_the_closest() {
    let server = TestServer::start().await;
    // A task this call creates (the general path)…
    let err = server
        .invoke(with_params(
            new_task("echo", Artifact::Echo, "upper"),
            &[("inpt", any_str("hi"))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), TYPO);
    assert_eq!(kind(&err), "unknown_parameter");

    // …and an existing task.
    let created = server
        .invoke(with_params(
            new_task("echo", Artifact::Echo, "upper"),
            &[("input", any_str("hi"))],
        ))
        .await
        .unwrap();
    assert_eq!(result_str(&created), "HI");
    let call = |params: &[(&str, prost_types::Any)]| {
        with_params(existing(&created.task_id, "upper"), params)
    };
    for _ in 0..3 {
        let ok = server
            .invoke(call(&[("input", any_str("a"))]))
            .await
            .unwrap();
        assert_eq!(result_str(&ok), "A");
        let err = server
            .invoke(call(&[("input", any_str("a")), ("inpt", any_str("b"))]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), TYPO);
    }
    // Nothing near: no suggestion.
    let err = server
        .invoke(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2)), ("extra", any_i64(3))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "unknown parameter `extra` of `add`");
    assert_eq!(
        server.host.stats().total_executions,
        4,
        "no refused call ran"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_function_that_takes_extra_parameters_gets_them() {
    let server = TestServer::start().await;
    let reply = server
        .invoke(with_params(
            new_task("probe", Artifact::Probe, "names"),
            &[("zeta", any_i64(1)), ("alpha", any_str("x"))],
        ))
        .await
        .unwrap();
    assert!(reply.success, "{}", reply.message);
    assert_eq!(result_str(&reply), "alpha,zeta");
    let dry = server
        .invoke(with_metadata(
            with_params(
                existing(&reply.task_id, "names"),
                &[("anything", any_i64(1))],
            ),
            &[("spearlet.dry_run", "true")],
        ))
        .await
        .unwrap();
    assert!(dry.success, "{}", dry.message);
    assert_eq!(dry.result.unwrap().metrics["signature"], "(..) -> String");
    server.stop().await;
}

#[tokio::test]
async fn a_dry_run_refuses_an_unknown_parameter_in_the_same_words() {
    let server = TestServer::start().await;
    let reply = server
        .invoke(with_metadata(
            with_params(
                new_task("echo", Artifact::Echo, "upper"),
                &[("inpt", any_str("hi"))],
            ),
            &[("spearlet.dry_run", "true")],
        ))
        .await
        .unwrap();
    assert!(!reply.success, "{}", reply.message);
    assert_eq!(reply.result.unwrap().metrics["parameters"], TYPO);
    assert!(reply.message.contains(TYPO), "{}", reply.message);
    server.stop().await;
}

#[tokio::test]
async fn a_node_api_json_payload_with_an_unknown_key_is_refused_alike() {
    let server = TestServer::start().await;
    let math = server
        .invoke(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        ))
        .await
        .unwrap()
        .task_id;
    let channel = tonic::transport::Channel::from_shared(server.channel_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut invocations = InvocationServiceClient::new(channel);
    let request = |data: &str| node_pb::InvokeRequest {
        task_id: math.clone(),
        function_name: "add".into(),
        input: Some(node_pb::Payload {
            content_type: "application/json".into(),
            data: data.as_bytes().to_vec(),
        }),
        ..Default::default()
    };
    let err = invocations
        .invoke(request(r#"{"a": 2, "bb": 40}"#))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "unknown parameter `bb` of `add`; did you mean `b`?"
    );
    let ok = invocations
        .invoke(request(r#"{"a": 2, "b": 40}"#))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.output.unwrap().data, b"42");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_tier_refuses_an_unknown_parameter_too() {
    let data = tempfile::tempdir().unwrap();
    let host = spearlet::Host::new(crate::helpers::config_in(data.path())).unwrap();
    let call = |params: &[(&str, Value)]| {
        let mut request = InvokeRequest::new(
            Target::NewTask {
                name: "isolated-echo".into(),
                description: String::new(),
                artifact: ArtifactSpec::at(Artifact::Echo.path().to_string_lossy()),
            },
            "upper",
        );
        for (name, value) in params {
            request = request.param(*name, value.clone());
        }
        request.metadata = BTreeMap::from([(ISOLATION_KEY.to_owned(), "process".to_owned())]);
        request
    };
    let ok = host
        .invoke(call(&[("input", Value::String("hi".into()))]))
        .await
        .unwrap();
    assert_eq!(ok.execution.output, Some(Value::String("HI".into())));
    let err = host
        .invoke(call(&[("inpt", Value::String("hi".into()))]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::UnknownParameter { function, name, suggestion }
                if function == "upper" && name == "inpt" && suggestion.as_deref() == Some("input")
        ),
        "{err:?}"
    );
}

/// A promoted function's call is served in place, without a future: the
/// check is there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inline_tier_refuses_an_unknown_parameter_too() {
    let data = tempfile::tempdir().unwrap();
    // Promoted after two calls under a second each: whatever the load.
    let config = spearlet::Config {
        tiers: spearlet::config::TiersConfig {
            inline_budget: std::time::Duration::from_secs(1),
            inline_warm_up: 2,
            ..spearlet::config::TiersConfig::default()
        },
        ..crate::helpers::config_in(data.path())
    };
    let host = spearlet::Host::new(config).unwrap();
    let create = InvokeRequest::new(
        Target::NewTask {
            name: "inline-echo".into(),
            description: String::new(),
            artifact: ArtifactSpec::at(Artifact::Echo.path().to_string_lossy()),
        },
        "upper",
    )
    .param("input", Value::String("hi".into()));
    let created = host.invoke(create).await.unwrap();
    // By id: the in-place path serves only a task it finds at once.
    let call = |name: &str| {
        InvokeRequest::new(
            Target::ExistingTask {
                task_id: created.task_id.to_string(),
                create_if_not_exists: false,
                artifact: None,
                name: String::new(),
                description: String::new(),
            },
            "upper",
        )
        .param(name, Value::String("hi".into()))
    };
    let task = host.task(&created.task_id).unwrap();
    let upper = task.plugin.function("upper").unwrap();
    let mut calls = 1;
    while task.profile(upper).tier() != spearlet::tier::Tier::Inline {
        assert!(calls < 100, "upper was never promoted");
        host.invoke(call("input")).await.unwrap();
        calls += 1;
    }
    let err = host.invoke(call("inpt")).await.unwrap_err();
    assert_eq!(err.to_string(), TYPO);
    let inline_before = host.stats().tier.inline_runs;
    let ok = host.invoke(call("input")).await.unwrap();
    assert_eq!(ok.execution.output, Some(Value::String("HI".into())));
    assert_eq!(
        host.stats().tier.inline_runs,
        inline_before + 1,
        "served in place"
    );
    assert_eq!(
        host.stats().total_executions,
        calls + 1,
        "the refused call never ran"
    );
}
