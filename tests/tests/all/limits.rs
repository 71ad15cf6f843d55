//! Request limits and authentication over gRPC: each refusal names its
//! cause, and the server serves normally afterwards.

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

#[tokio::test]
async fn with_tokens_every_call_but_health_needs_one() {
    use tonic_health::pb::health_client::HealthClient;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "alpha\nbeta\n").unwrap();
    let server = TestServer::start_with(|c| c.auth.tokens_file = Some(file.clone())).await;
    let call = || {
        with_params(
            new_task("m", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        )
    };
    let err = server.invoke(call()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    for (token, ok) in [("Bearer gamma", false), ("Bearer beta", true)] {
        let mut request = tonic::Request::new(call());
        request
            .metadata_mut()
            .insert("authorization", token.parse().unwrap());
        let reply = server.client.clone().invoke_function(request).await;
        assert_eq!(reply.is_ok(), ok, "{token}: {reply:?}");
    }
    let channel = tonic::transport::Channel::from_shared(server.channel_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "health needs no token: {health:?}");
    server.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_get_in() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let server_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["a-client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();

    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let path = files.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::config_in(data.path());
    config.tls.cert = Some(write("cert.pem", server_cert.cert.pem()));
    config.tls.key = Some(write("key.pem", server_cert.signing_key.serialize_pem()));
    config.tls.client_ca = Some(write("ca.pem", ca_cert.pem()));
    let host = spearlet::Host::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(spearlet::api::serve(host, listener, async {
        let _ = stopped.await;
    }));

    let trust = Certificate::from_pem(server_cert.cert.pem());
    let channel = |identity: Option<Identity>| {
        let mut tls = ClientTlsConfig::new().ca_certificate(trust.clone());
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    };
    let call = || {
        with_params(
            new_task("m", Artifact::Math, "add"),
            &[("a", any_i64(20)), ("b", any_i64(22))],
        )
    };
    // Without a client certificate the handshake is refused.
    let refused = match channel(None).connect().await {
        Err(_) => true,
        Ok(c) => pb::function_service_client::FunctionServiceClient::new(c)
            .invoke_function(call())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got in");
    let identity = Identity::from_pem(client_cert.pem(), client_key.serialize_pem());
    let mut client = pb::function_service_client::FunctionServiceClient::new(
        channel(Some(identity)).connect().await.unwrap(),
    );
    let reply = client.invoke_function(call()).await.unwrap().into_inner();
    assert_eq!(result_i64(&reply), 42);
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
