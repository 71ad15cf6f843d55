//! `/metrics` scraped from a real server after known calls; W3C trace
//! context from the client to the execution and into the plugin.

use std::collections::HashMap;

use spearlet_test_artifacts::Artifact;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::grpc_util::{
    any_f64, any_i64, any_str, existing, new_task, result_str, with_params, TestServer,
};

/// Scrapes `/metrics` over plain HTTP/1.1 and parses the exposition into
/// `series → value` (series as written: `name{labels}`).
async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("openmetrics-text"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_what_happened_with_bounded_task_labels() {
    let server = TestServer::start_with(|c| c.metrics.max_task_labels = 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = tokio::spawn(spearlet::metrics::serve(
        server.host.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    for b in [1, 2, 3] {
        server
            .invoke(with_params(
                new_task("math", Artifact::Math, "add"),
                &[("a", any_i64(1)), ("b", any_i64(b))],
            ))
            .await
            .unwrap();
    }
    let failed = server
        .invoke(with_params(
            new_task("math", Artifact::Math, "divide"),
            &[("a", any_f64(1.0)), ("b", any_f64(0.0))],
        ))
        .await
        .unwrap();
    assert!(!failed.success);
    // Two tasks past the cap of one: counted together as `_other`.
    for name in ["echo-a", "echo-b"] {
        server
            .invoke(with_params(
                new_task(name, Artifact::Echo, "upper"),
                &[("input", any_str("x"))],
            ))
            .await
            .unwrap();
    }

    let m = scrape(addr).await;
    let get = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no series {series} in {m:#?}"))
    };
    assert_eq!(
        get(
            r#"spearlet_invocations_total{task="math",function="add",mode="sync",status="completed"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"spearlet_invocations_total{task="math",function="divide",mode="sync",status="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"spearlet_invocations_total{task="_other",function="upper",mode="sync",status="completed"}"#
        ),
        2.0
    );
    assert!(
        !m.keys()
            .any(|k| k.contains("echo-a") || k.contains("echo-b")),
        "tasks past the cap have no label of their own"
    );
    assert_eq!(
        get(r#"spearlet_invocation_duration_seconds_count{task="math",function="add"}"#),
        3.0
    );
    assert_eq!(
        get(r#"spearlet_invocation_duration_seconds_bucket{le="+Inf",task="math",function="add"}"#),
        3.0
    );
    assert_eq!(
        get(r#"spearlet_pool_instances{task="math",state="idle"}"#),
        1.0
    );
    assert_eq!(get("spearlet_tasks"), 3.0);
    assert_eq!(get("spearlet_executions_in_flight"), 0.0);
    assert!(get("spearlet_artifact_load_duration_seconds_count") >= 3.0);
    assert!(get("spearlet_process_resident_memory_bytes") > 0.0);
    assert!(get("spearlet_process_threads") > 0.0);

    // The same counters as GetHealth: they cannot disagree.
    assert_eq!(
        get("spearlet_artifact_cache_hits_total").to_string(),
        server.health_info().await["artifact_cache_hits"]
    );

    let _ = stop.send(());
    endpoint.await.unwrap().unwrap();
    server.stop().await;
}

/// `GET /metrics` with `authorization` when given: the status line and body.
async fn get_metrics(addr: std::net::SocketAddr, authorization: Option<&str>) -> (String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = authorization.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: test\r\n{header}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test]
async fn with_a_metrics_token_a_scrape_needs_that_token() {
    let server = TestServer::start_with(|c| c.metrics.token = Some("scrape-s3cret".into())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = tokio::spawn(spearlet::metrics::serve(
        server.host.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    server
        .invoke(with_params(
            new_task("math", Artifact::Math, "add"),
            &[("a", any_i64(1)), ("b", any_i64(2))],
        ))
        .await
        .unwrap();

    for refused in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer scrape-s3cre"),
        Some("Basic scrape-s3cret"),
    ] {
        let (status, body) = get_metrics(addr, refused).await;
        assert!(status.starts_with("HTTP/1.1 401"), "{refused:?}: {status}");
        assert!(
            !body.contains("spearlet_"),
            "{refused:?}: nothing is disclosed"
        );
    }
    let (status, body) = get_metrics(addr, Some("Bearer scrape-s3cret")).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("spearlet_tasks 1"), "{body}");
    assert!(
        body.contains(r#"spearlet_artifact_plugins_loaded{state="in_use"} 1"#),
        "{body}"
    );

    let _ = stop.send(());
    endpoint.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn without_a_token_metrics_are_open_and_an_empty_token_is_refused() {
    let server = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = tokio::spawn(spearlet::metrics::serve(
        server.host.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    for authorization in [None, Some("Bearer anything")] {
        let (status, _) = get_metrics(addr, authorization).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "{authorization:?}: {status}"
        );
    }
    let _ = stop.send(());
    endpoint.await.unwrap().unwrap();
    server.stop().await;

    let blank = TestServer::start_with(|c| c.metrics.token = Some("  ".into())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = spearlet::metrics::serve(blank.host.clone(), listener, async {})
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("metrics.token"), "{refused}");
    blank.stop().await;
}

#[test]
fn serving_metrics_beyond_loopback_without_a_token_is_warned_about() {
    use spearlet::metrics::exposure_warning;
    let open: std::net::SocketAddr = "0.0.0.0:9464".parse().unwrap();
    let warning = exposure_warning(open, None).expect("a warning");
    assert!(
        warning.contains("0.0.0.0:9464") && warning.contains("metrics.token"),
        "{warning}"
    );
    assert_eq!(exposure_warning(open, Some("t")), None);
    for local in ["127.0.0.1:9464", "[::1]:9464"] {
        assert_eq!(exposure_warning(local.parse().unwrap(), None), None);
    }
}

#[tokio::test]
async fn a_traceparent_reaches_the_execution_and_the_plugin() {
    let server = TestServer::start().await;
    let created = server
        .invoke(new_task("probe", Artifact::Probe, "trace"))
        .await
        .unwrap();
    // Without a traceparent, the host starts a trace: the plugin sees it.
    let started = created.result.as_ref().unwrap().metrics["trace_id"].clone();
    assert_eq!(started.len(), 32);
    assert_eq!(result_str(&created), started);

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(existing(&created.task_id, "trace"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let reply = server
        .client
        .clone()
        .invoke_function(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        result_str(&reply),
        trace,
        "the plugin reads the caller's trace"
    );
    assert_eq!(reply.result.as_ref().unwrap().metrics["trace_id"], trace);
    let kept = server.host.execution(&reply.execution_id).unwrap();
    assert_eq!(
        kept.trace_id.unwrap().to_string(),
        trace,
        "the execution keeps it"
    );

    // A malformed traceparent is ignored: a new trace, not an error.
    let mut request = tonic::Request::new(existing(&created.task_id, "trace"));
    request
        .metadata_mut()
        .insert("traceparent", "garbage".parse().unwrap());
    let reply = server
        .client
        .clone()
        .invoke_function(request)
        .await
        .unwrap()
        .into_inner();
    let fresh = result_str(&reply);
    assert!(fresh.len() == 32 && fresh != trace, "{fresh}");
    server.stop().await;
}

/// Every metric the Grafana dashboard queries is one the endpoint serves.
#[tokio::test]
async fn the_dashboard_queries_only_metrics_that_exist() {
    let sms = crate::fake_sms::FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    let families: std::collections::BTreeSet<String> = spearlet::metrics::render(&server.host)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/spearlet.json"),
    )
    .unwrap();
    let mut used = 0;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("spearlet_") {
            continue;
        }
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(word);
        assert!(
            families.contains(family),
            "the dashboard queries {word}, which is not served: {families:?}"
        );
        used += 1;
    }
    assert!(used >= 10, "the dashboard queries the metrics ({used})");
    server.stop().await;
    sms.stop().await;
}

/// The SDK's counting allocator reports each call's memory: on the
/// execution, in the reply, in the metrics.
#[tokio::test]
async fn each_call_reports_the_memory_its_plugin_used() {
    let server = TestServer::start().await;
    let reply = server
        .invoke(with_params(
            new_task("probe", Artifact::Probe, "allocate"),
            &[("bytes", any_i64(1_000_000))],
        ))
        .await
        .unwrap();
    assert!(reply.success, "{}", reply.message);
    let result = reply.result.as_ref().unwrap();
    assert!(
        (1_000_000..1_100_000).contains(&result.memory_used_bytes),
        "peak bytes live: {}",
        result.memory_used_bytes
    );
    let allocated: u64 = result.metrics["memory_allocated_bytes"].parse().unwrap();
    assert!(allocated >= 1_000_000, "{allocated}");
    let small = server
        .invoke(with_params(
            existing(&reply.task_id, "allocate"),
            &[("bytes", any_i64(10))],
        ))
        .await
        .unwrap();
    assert!(
        small.result.as_ref().unwrap().memory_used_bytes < 10_000,
        "counted per call, not cumulatively: {}",
        small.result.as_ref().unwrap().memory_used_bytes
    );
    let exposition = spearlet::metrics::render(&server.host).unwrap();
    assert!(
        exposition.contains(
            r#"spearlet_invocation_memory_peak_bytes_count{task="probe",function="allocate"} 2"#
        ),
        "{exposition}"
    );
    server.stop().await;
}
