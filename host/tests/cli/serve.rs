//! A served instance with the client commands: the quickstart, TLS, tokens,
//! a busy pool, a graceful stop, configuration.

use std::process::Command;

use spearlet_test_artifacts::Artifact;

use crate::served::{add_2_40, Served};
use crate::{path, spearlet, text};

#[test]
fn the_quickstart_path_works_over_tls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let served = Served::start(&format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"));
    let https = served.endpoint.replace("http://", "https://");
    let ca = cert.to_str().unwrap();
    let math = path(Artifact::Math);
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--endpoint", &https, "--ca", ca]);
        spearlet(&all)
    };
    let out = run(&add_2_40("math", math));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("42"), "{}", text(&out.stdout));
    let out = run(&["tasks"]);
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("math ")));
    // Plain HTTP/2 to a TLS server fails, and https without the CA says what is missing.
    assert!(!served.run(&["tasks"]).status.success());
    let out = spearlet(&["tasks", "--endpoint", &https]);
    assert!(text(&out.stderr).contains("--ca"), "{}", text(&out.stderr));
    assert!(served.stop().success());
}

#[test]
fn sigterm_lets_calls_in_flight_finish_and_refuses_new_ones() {
    let served = Served::start("");
    let sleepy = path(Artifact::Sleepy);
    let endpoint = served.endpoint.clone();
    let in_flight = std::thread::spawn(move || {
        spearlet(&[
            "invoke",
            "--endpoint",
            &endpoint,
            "--task-name",
            "z",
            "--artifact",
            sleepy,
            "sleep",
            "-p",
            "ms=800",
            "--execution-id",
            "in-flight",
        ])
    });
    served.until_status("in-flight", |s| s.contains("running"));
    assert!(Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // New calls are refused as soon as the server has seen the signal.
    let math = path(Artifact::Math);
    let refused = (0..10_000).find_map(|_| {
        let out = served.run(&[
            "invoke",
            "--task-name",
            "m",
            "--artifact",
            math,
            "add",
            "-p",
            "a=1",
            "-p",
            "b=2",
        ]);
        let stderr = text(&out.stderr);
        (!out.status.success()).then_some(stderr)
    });
    let refused = refused.expect("new calls are refused while stopping");
    assert!(refused.contains("[host_stopping]"), "{refused}");
    // The call in flight finished normally.
    let out = in_flight.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("slept 800 ms"),
        "{}",
        text(&out.stdout)
    );
    let mut served = served;
    assert!(
        served.child.wait().unwrap().success(),
        "a clean drain exits 0"
    );
}

#[test]
fn a_busy_task_says_when_to_come_back() {
    let served = Served::start("[pool]\nmax_instances = 1\n");
    let sleepy = path(Artifact::Sleepy);
    let out = served.run(&[
        "invoke",
        "--task-name",
        "z",
        "--artifact",
        sleepy,
        "sleep",
        "-p",
        "ms=2000",
        "--async",
        "--execution-id",
        "hold",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The long call holds the instance.
    served.until_status("hold", |s| s.contains("running"));
    let out = served.run(&[
        "invoke",
        "--task-name",
        "z",
        "--artifact",
        sleepy,
        "sleep",
        "-p",
        "ms=1",
        "--timeout",
        "50",
    ]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[pool_exhausted]"), "{stderr}");
    assert!(stderr.contains("(retry after 100 ms)"), "{stderr}");
    served.run(&["cancel", "hold"]);
    let status = served.until_status("hold", |s| !s.contains("running"));
    assert!(status.contains("cancelled: stopped after"), "{status}");
    assert!(!status.contains("cancelled: cancelled"), "{status}");
    let out = text(&served.run(&["executions"]).stdout);
    assert!(
        out.lines().next().unwrap_or("").contains("EXECUTION"),
        "{out}"
    );
    assert!(served.stop().success());
}

#[test]
fn a_server_with_tokens_refuses_calls_without_one() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "# the ops team\ns3cret-token\n").unwrap();
    let served = Served::start(&format!("[auth]\ntokens_file = {:?}\n", tokens.path()));
    let out = served.run(&["tasks"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    let out = served.run(&["tasks", "--token", "wrong"]);
    assert!(
        text(&out.stderr).contains("not accepted"),
        "{}",
        text(&out.stderr)
    );
    let tasks = served.ok(&["tasks", "--token", "s3cret-token"]);
    assert!(tasks.starts_with("NAME"), "{tasks}");
    assert!(served.stop().success());
}

#[test]
fn sighup_reloads_the_tokens_and_keeps_connections_open() {
    use prost::Message;
    use spearlet_proto::spearlet as pb;
    use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;

    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "old-token\n").unwrap();
    let served = Served::start(&format!("[auth]\ntokens_file = {:?}\n", tokens.path()));
    fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // One connection for everything below.
        let channel = tonic::transport::Endpoint::from_shared(served.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FunctionServiceClient::new(channel);
        // A stream opened with the old token, and held open: the plugin
        // waits for the reader (chunks far beyond every buffer on the way).
        const CHUNKS: i64 = 20_000;
        let count = pb::InvokeFunctionRequest {
            invocation_type: pb::InvocationType::NewTask.into(),
            task_name: "s".into(),
            artifact_spec: Some(pb::ArtifactSpec {
                location: path(Artifact::Stream).to_owned(),
                artifact_type: "native".into(),
                ..Default::default()
            }),
            function_name: "count".into(),
            execution_mode: pb::ExecutionMode::Stream.into(),
            parameters: vec![pb::FunctionParameter {
                name: "n".into(),
                value: Some(prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.Int64Value".into(),
                    value: CHUNKS.encode_to_vec(),
                }),
                required: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut stream = client
            .stream_function(with_token("old-token", count))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(!first.is_final, "{first:?}");

        std::fs::write(tokens.path(), "# rotated\nnew-token\n").unwrap();
        assert!(Command::new("kill")
            .args(["-HUP", &served.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        // Polled on the same connection until the reload has happened.
        let mut revoked = false;
        for _ in 0..100_000 {
            match client
                .list_tasks(with_token("old-token", pb::ListTasksRequest::default()))
                .await
            {
                Ok(_) => tokio::task::yield_now().await,
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    revoked = true;
                    break;
                }
                Err(status) => panic!("{status}"),
            }
        }
        assert!(revoked, "the old token is refused after SIGHUP");
        let tasks = client
            .list_tasks(with_token("new-token", pb::ListTasksRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(tasks.tasks.len(), 1, "the new token is accepted");
        // The stream accepted before the reload runs to its end.
        let mut received = 1;
        let last = loop {
            let message = stream.message().await.unwrap().expect("a final message");
            if message.is_final {
                break message;
            }
            received += 1;
        };
        assert_eq!(received, CHUNKS);
        assert_eq!(last.status, pb::ExecutionStatus::Completed as i32);
    });
    assert!(served.stop().success());
}

#[test]
fn serve_and_the_client_commands_work_together() {
    let served = Served::start("[pool]\nmax_instances = 2\n");
    let math = path(Artifact::Math);

    let shown = served.ok(&add_2_40("math", math));
    assert!(shown.contains("result     42 (i64)"), "{shown}");

    let out = served.run(&[
        "invoke",
        "--task-name",
        "math",
        "--artifact",
        math,
        "divide",
        "-p",
        "a=1",
        "-p",
        "b=0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("failed: division_by_zero"),
        "{}",
        text(&out.stdout)
    );

    let out = served.run(&[
        "invoke",
        "--task-name",
        "s",
        "--artifact",
        path(Artifact::Stream),
        "count",
        "-p",
        "n=3",
        "--stream",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout.matches("chunk ").count(), 3, "{stdout}");
    let last = stdout
        .lines()
        .find(|l| l.starts_with("execution  "))
        .unwrap_or_default();
    assert!(
        last.contains("completed in ")
            && last.contains(" ms  (task ")
            && last.contains(", instance "),
        "a stream ends with the line a unary call ends with: {stdout}"
    );
    assert!(stdout.contains("trace      "), "{stdout}");

    let out = served.run(&[
        "invoke",
        "--task-name",
        "z",
        "--artifact",
        path(Artifact::Sleepy),
        "sleep",
        "-p",
        "ms=1",
        "--async",
        "--execution-id",
        "cli-async",
    ]);
    assert!(
        text(&out.stdout).contains("follow     spearlet status cli-async"),
        "{}",
        text(&out.stdout)
    );
    let out = served.run(&["status", "cli-async", "--logs"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("execution  cli-async"),
        "{}",
        text(&out.stdout)
    );

    let out = served.run(&["tasks"]);
    let stdout = text(&out.stdout);
    for name in ["math", "s", "z"] {
        assert!(stdout.lines().any(|l| l.starts_with(name)), "{stdout}");
    }
    let math_id = stdout
        .lines()
        .find(|l| l.starts_with("math "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the math task is listed")
        .to_owned();
    let out = served.run(&["task", "get", &math_id]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("functions   add (off-worker), divide (off-worker)"),
        "where each function runs: {stdout}"
    );
    let out = served.run(&["executions", "--status", "failed"]);
    let failed: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("divide"))
        .map(str::to_owned)
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].contains("division_by_zero: "),
        "the error's code, which scripts match on, beside its message: {}",
        failed[0]
    );

    let out = served.run(&["cancel", "no-such-execution"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("NotFound"),
        "{}",
        text(&out.stderr)
    );

    let out = served.run(&["invoke", "--task-id", "missing", "next"]);
    assert!(
        text(&out.stderr).contains("[task_not_found]"),
        "{}",
        text(&out.stderr)
    );

    assert!(served.stop().success(), "a clean shutdown on SIGINT");
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[pool]\nmax_instancez = 3\n").unwrap();
    let out = spearlet(&[
        "serve",
        "--check-config",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("max_instancez"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        &config,
        "[artifacts]\nallowed_hosts = [\"plugins.example.com\", \"*.example.*\"]\n",
    )
    .unwrap();
    let out = spearlet(&[
        "serve",
        "--check-config",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("artifacts.allowed_hosts") && said.contains("`*.example.*`"),
        "{said}"
    );

    let with_env = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_spearlet"))
            .args([
                "serve",
                "--check-config",
                "--listen",
                "127.0.0.1:7000",
                "--artifact-root",
                "/srv/plugins",
            ])
            .env("SPEARLET_POOL__MAX_INSTANCES", value)
            .env("SPEARLET_ENDPOINT", "http://ignored")
            .output()
            .unwrap()
    };
    let out = with_env("many");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid configuration"),
        "{}",
        text(&out.stderr)
    );

    let out = with_env("3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let effective = text(&out.stdout);
    assert!(effective.contains("max_instances = 3"), "{effective}");
    assert!(
        effective.contains("listen = \"127.0.0.1:7000\""),
        "{effective}"
    );
    assert!(effective.contains("/srv/plugins"), "{effective}");
}

#[test]
fn the_cli_follows_what_the_function_declares() {
    let served = Served::start("");
    // `&str` declared: 42 goes as text, not as an integer.
    let shown = served.ok(&[
        "invoke",
        "--task-name",
        "e",
        "--artifact",
        path(Artifact::Echo),
        "upper",
        "-p",
        "input=42",
    ]);
    assert!(shown.contains("\"42\" (string)"), "{shown}");
    // A stream function streams without --stream, on its first call too.
    let shown = served.ok(&[
        "invoke",
        "--task-name",
        "s",
        "--artifact",
        path(Artifact::Stream),
        "count",
        "-p",
        "n=3",
    ]);
    assert!(
        shown.contains("chunk") || shown.lines().count() >= 3,
        "{shown}"
    );

    let shown = served.ok(&[
        "invoke",
        "--task-name",
        "m",
        "--artifact",
        path(Artifact::Math),
        "add",
        "-p",
        "a=1",
        "-p",
        "b=2",
        "--dry-run",
    ]);
    assert!(
        shown.starts_with("dry run: would run add(a: i64, b: i64) -> i64"),
        "{shown}"
    );
    let tasks = text(&served.run(&["tasks"]).stdout);
    assert!(
        !tasks.contains("\nm "),
        "a dry run creates no task: {tasks}"
    );
    served.stop();
}
