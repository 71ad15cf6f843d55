//! The `spearlet` binary as a user runs it.

use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use spearlet_test_artifacts::{Artifact, FileServer};

fn spearlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .args(args)
        .output()
        .expect("run spearlet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(a: Artifact) -> &'static str {
    a.path().to_str().expect("utf-8 path")
}

#[test]
fn inspect_describes_a_plugin() {
    let out = spearlet(&["plugin", "inspect", path(Artifact::Math)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let sha = hex::encode(Sha256::digest(
        std::fs::read(Artifact::Math.path()).unwrap(),
    ));
    assert!(stdout.contains(&format!("sha256:    {sha}\n")), "{stdout}");
    assert!(stdout.contains("plugin:    math 0.1.0\n"), "{stdout}");
    assert!(
        stdout.contains("sdk:       spear-plugin-sdk 0.1.0 (plugin ABI 1.1.0)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("add(a: i64, b: i64) -> i64"), "{stdout}");
    assert!(stdout.contains("divide(a: f64, b: f64) -> f64"), "{stdout}");
    assert!(stdout.contains("Adds two integers."), "{stdout}");
    assert!(!stdout.contains("blocking"), "{stdout}");
    assert!(
        stdout.contains("needs:     ") && stdout.contains("libc.so.6"),
        "{stdout}"
    );
}

#[test]
fn inspect_marks_blocking_functions() {
    let out = spearlet(&["plugin", "inspect", path(Artifact::Probe)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line in {stdout}"))
            .to_owned()
    };
    assert!(line("wait(").contains("unary   blocking"), "{stdout}");
    assert!(!line("spin(").contains("blocking"), "{stdout}");
}

#[test]
fn inspect_shows_stream_functions_as_such() {
    let out = spearlet(&["plugin", "inspect", path(Artifact::Stream)]);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("count(n: i64)") && l.contains("stream")),
        "{stdout}"
    );
}

#[test]
fn a_refused_file_gets_one_line_naming_the_error_kind_and_exit_2() {
    let out = spearlet(&[
        "plugin",
        "inspect",
        path(Artifact::Echo),
        path(Artifact::NoRoot),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("plugin:    echo"),
        "good files are still described"
    );
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("refused [no_root_module]: "), "{stderr}");
}

#[test]
fn each_conformance_fixture_is_refused_with_its_kind() {
    for (fixture, kind) in [
        (Artifact::BadVersion, "incompatible_sdk"),
        (Artifact::BadLayout, "layout_mismatch"),
        (Artifact::NoFunctions, "no_functions"),
        (Artifact::DuplicateFunctions, "duplicate_function"),
        (Artifact::Rpath, "unverified_dependency"),
        (Artifact::UncheckedLayout, "layout_unchecked"),
    ] {
        let out = spearlet(&["plugin", "inspect", path(fixture)]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("refused [{kind}]: ")),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn verbose_adds_abi_stables_full_layout_report() {
    let out = spearlet(&["plugin", "inspect", "--verbose", path(Artifact::BadLayout)]);
    let stderr = text(&out.stderr);
    assert!(stderr.lines().count() > 10, "{stderr}");
    assert!(stderr.contains("mismatched package"), "{stderr}");
}

#[test]
fn a_wrong_checksum_is_refused() {
    let zeros = format!("sha256:{}", "0".repeat(64));
    let out = spearlet(&[
        "plugin",
        "inspect",
        "--checksum",
        &zeros,
        path(Artifact::Echo),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("refused [checksum_mismatch]: "));

    let out = spearlet(&[
        "plugin",
        "inspect",
        "--checksum",
        "abc",
        path(Artifact::Echo),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a sha256 checksum"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_describes_every_subcommand() {
    let top = text(&spearlet(&["--help"]).stdout);
    assert!(top.contains("plugin"), "{top}");
    let plugin = text(&spearlet(&["plugin", "--help"]).stdout);
    assert!(plugin.contains("inspect"), "{plugin}");
    let inspect = text(&spearlet(&["plugin", "inspect", "--help"]).stdout);
    assert!(
        inspect.contains("--checksum") && inspect.contains("--verbose"),
        "{inspect}"
    );
}

#[test]
fn inspect_downloads_a_url_once_and_then_uses_the_cache() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(FileServer::start());
    let mut bytes = std::fs::read(Artifact::Echo.path()).unwrap();
    bytes.extend_from_slice(b"cli-download");
    let sha = hex::encode(Sha256::digest(&bytes));
    server.serve("/echo.so", bytes);
    let url = server.url("/echo.so");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();

    for run in 1..=2 {
        let out = spearlet(&[
            "plugin",
            "inspect",
            &url,
            "--checksum",
            &sha,
            "--data-dir",
            data_dir,
        ]);
        assert!(out.status.success(), "run {run}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("plugin:    echo"), "{stdout}");
        assert!(
            stdout.contains(&format!("artifacts/sha256/{sha}.so")),
            "{stdout}"
        );
    }
    assert_eq!(
        server.requests("/echo.so"),
        1,
        "the second run is a cache hit"
    );

    let out = spearlet(&["plugin", "inspect", &url, "--data-dir", data_dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("refused [checksum_required]: "),
        "{}",
        text(&out.stderr)
    );
    runtime.block_on(server.stop());
}

/// `spearlet invoke` of math's `add(2, 40)` on the task `math`.
fn add_2_40(math: &str) -> [&str; 10] {
    [
        "invoke",
        "--task-name",
        "math",
        "--artifact",
        math,
        "add",
        "-p",
        "a=2",
        "-p",
        "b=40",
    ]
}

/// `spearlet serve` as a child process, stopped with SIGINT on drop.
struct Served {
    child: std::process::Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Served {
    fn start(extra_config: &str) -> Served {
        use std::io::{BufRead, BufReader};
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("spearlet.toml");
        let root = Artifact::Echo.path().parent().unwrap();
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[artifacts]\nroots = [{:?}]\n{extra_config}",
                data.path().join("state"),
                root
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spearlet"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().expect("a first line").unwrap();
        let addr = first.rsplit(' ').next().unwrap().to_owned();
        assert!(first.contains("listening on"), "{first}");
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Served {
            child,
            endpoint: format!("http://{addr}"),
            _data: data,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--endpoint", &self.endpoint];
        all.extend_from_slice(args);
        spearlet(&all)
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    /// A test that failed half-way must not leave a server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
        let mut all = vec!["--endpoint", &https, "--ca", ca];
        all.extend_from_slice(args);
        spearlet(&all)
    };
    let out = run(&add_2_40(math));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("42"), "{}", text(&out.stdout));
    let out = run(&["tasks"]);
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("math ")));
    // Plain HTTP/2 to a TLS server fails, and https without the CA says what is missing.
    assert!(!served.run(&["tasks"]).status.success());
    let out = spearlet(&["--endpoint", &https, "tasks"]);
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
            "--endpoint",
            &endpoint,
            "invoke",
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
    let mut polls = 0;
    while !text(&served.run(&["status", "in-flight"]).stdout).contains("running") {
        polls += 1;
        assert!(polls < 10_000, "the call never started");
    }
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
    // Wait (polling the server, no sleeping) until the long call holds the instance.
    let mut polls = 0;
    while !text(&served.run(&["status", "hold"]).stdout).contains("running") {
        polls += 1;
        assert!(polls < 10_000, "the held call never started");
    }
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
    let mut polls = 0;
    let status = loop {
        let out = text(&served.run(&["status", "hold"]).stdout);
        if !out.contains("running") {
            break out;
        }
        polls += 1;
        assert!(polls < 10_000, "the cancelled call never ended");
    };
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
    let out = served.run(&["--token", "wrong", "tasks"]);
    assert!(
        text(&out.stderr).contains("not accepted"),
        "{}",
        text(&out.stderr)
    );
    let out = served.run(&["--token", "s3cret-token", "tasks"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("NAME"),
        "{}",
        text(&out.stdout)
    );
    assert!(served.stop().success());
}

#[test]
fn serve_and_the_client_commands_work_together() {
    let served = Served::start("[pool]\nmax_instances = 2\n");
    let math = path(Artifact::Math);

    let out = served.run(&add_2_40(math));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("result     42 (i64)"),
        "{}",
        text(&out.stdout)
    );

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
    assert!(stdout.contains("completed"), "{stdout}");

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
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains("divide"))
            .count(),
        1
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
