//! What the client commands print for scripts (`--format json`) and to
//! files (`--output`), how text mode shows bytes, and which commands take
//! the server options.

use serde_json::Value as Json;
use spearlet_test_artifacts::Artifact;

use crate::served::{add_2_40, Served};
use crate::{path, spearlet, text};

/// Each stdout line as a JSON object (failing on any line that is not).
fn json_lines(stdout: &str) -> Vec<Json> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The one JSON object a command printed.
fn one_object(stdout: &str) -> Json {
    let mut lines = json_lines(stdout);
    assert_eq!(lines.len(), 1, "one object, on one line: {stdout}");
    lines.remove(0)
}

#[test]
fn json_output_is_one_object_per_result_and_line() {
    let served = Served::start("");
    let math = path(Artifact::Math);

    let mut call = add_2_40("math", math).to_vec();
    call.extend(["--execution-id", "named-add", "--format", "json"]);
    let reply = one_object(&served.ok(&call));
    assert_eq!(reply["execution_id"], "named-add", "{reply}");
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["result"]["type"], "i64", "{reply}");
    assert_eq!(reply["result"]["value"], 42, "{reply}");
    assert_eq!(reply["error_code"], Json::Null, "{reply}");
    assert!(reply["execution_time_ms"].is_number(), "{reply}");
    let task_id = reply["task_id"].as_str().expect("a task id").to_owned();
    assert!(reply["instance_id"].is_string(), "{reply}");

    // A stream: a line per chunk, then the end.
    let stream = path(Artifact::Stream);
    let lines = json_lines(&served.ok(&[
        "invoke",
        "--task-name",
        "s",
        "--artifact",
        stream,
        "count",
        "-p",
        "n=3",
        "--format",
        "json",
    ]));
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for (i, chunk) in lines[..3].iter().enumerate() {
        assert_eq!(chunk["kind"], "chunk", "{chunk}");
        assert_eq!(chunk["sequence"], i, "{chunk}");
        assert_eq!(chunk["value"]["type"], "i64", "{chunk}");
        assert_eq!(chunk["value"]["value"], i, "{chunk}");
    }
    assert_eq!(lines[3]["kind"], "end", "{}", lines[3]);
    assert_eq!(lines[3]["status"], "completed", "{}", lines[3]);
    assert_eq!(
        lines[3]["execution_id"], lines[0]["execution_id"],
        "{lines:#?}"
    );

    let status = one_object(&served.ok(&["status", "named-add", "--format", "json"]));
    assert_eq!(status["execution_id"], "named-add", "{status}");
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["result"]["value"], 42, "{status}");
    assert_eq!(status["logs"], serde_json::json!([]), "{status}");

    let executions = json_lines(&served.ok(&["executions", "--format", "json"]));
    let add = executions
        .iter()
        .find(|e| e["execution_id"] == "named-add")
        .unwrap_or_else(|| panic!("{executions:#?}"));
    assert_eq!(add["function_name"], "add", "{add}");
    assert_eq!(add["task_id"], task_id.as_str(), "{add}");
    assert_eq!(add["status"], "completed", "{add}");
    assert!(add["started_at"].is_string(), "{add}");

    let tasks = json_lines(&served.ok(&["tasks", "--format", "json"]));
    assert_eq!(tasks.len(), 2, "math and s: {tasks:#?}");
    let math_task = tasks
        .iter()
        .find(|t| t["task_name"] == "math")
        .unwrap_or_else(|| panic!("{tasks:#?}"));
    assert_eq!(math_task["task_id"], task_id.as_str(), "{math_task}");
    assert_eq!(math_task["plugin"], "math", "{math_task}");
    assert_eq!(math_task["execution_count"], 1, "{math_task}");
    assert!(math_task["metadata"].is_object(), "{math_task}");

    let task = one_object(&served.ok(&["task", "get", &task_id, "--format", "json"]));
    assert_eq!(task["task_name"], "math", "{task}");
    assert!(task["executions"].is_array(), "{task}");

    let health = one_object(&served.ok(&["health", "--format", "json"]));
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["active_tasks"], 2, "{health}");
    assert!(health["uptime_seconds"].is_number(), "{health}");
    assert!(health["system_info"]["version"].is_string(), "{health}");

    // A finished execution cannot be cancelled: still one object, saying so.
    let out = served.run(&["cancel", "named-add", "--format", "json"]);
    let cancel = one_object(&text(&out.stdout));
    assert_eq!(cancel["execution_id"], "named-add", "{cancel}");
    assert_eq!(cancel["success"], false, "{cancel}");
    assert!(cancel["message"].is_string(), "{cancel}");

    let deleted = one_object(&served.ok(&["task", "delete", &task_id, "--format", "json"]));
    assert_eq!(deleted["task_id"], task_id.as_str(), "{deleted}");
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert!(served.stop().success());
}

#[test]
fn bytes_are_shown_readably_and_saved_raw() {
    let served = Served::start("");
    let echo = path(Artifact::Echo);
    let dir = tempfile::tempdir().unwrap();
    let binary = [0u8, 1, 0xff, 0xfe];
    let input = dir.path().join("input.bin");
    std::fs::write(&input, binary).unwrap();
    let param = format!("input:bytes=@{}", input.display());
    let saved = dir.path().join("result.bin");
    let call = |extra: &[&str]| {
        let mut all = vec![
            "invoke",
            "--task-name",
            "echo",
            "--artifact",
            echo,
            "echo",
            "-p",
            &param,
        ];
        all.extend_from_slice(extra);
        served.ok(&all)
    };

    let shown = call(&[
        "--output",
        saved.to_str().unwrap(),
        "--execution-id",
        "binary",
    ]);
    assert!(
        shown.contains("result     4 bytes: 00 01 ff fe\n"),
        "short bytes in hex: {shown}"
    );
    assert!(
        shown.starts_with("execution  binary"),
        "the summary: {shown}"
    );
    assert_eq!(std::fs::read(&saved).unwrap(), binary, "--output: raw");

    let reply = one_object(&call(&["--format", "json"]));
    assert_eq!(reply["result"]["type"], "bytes", "{reply}");
    assert_eq!(reply["result"]["value"], "AAH//g==", "base64: {reply}");

    // status --output writes the recorded result, as invoke did.
    let again = dir.path().join("again.bin");
    served.ok(&["status", "binary", "--output", again.to_str().unwrap()]);
    assert_eq!(std::fs::read(&again).unwrap(), binary);

    // Printable bytes read as text.
    let shown = served.ok(&[
        "invoke",
        "--task-name",
        "echo",
        "--artifact",
        echo,
        "echo",
        "-p",
        "input:bytes=hello",
    ]);
    assert!(
        shown.contains("result     \"hello\" (5 bytes)\n"),
        "{shown}"
    );

    // A string result goes to the file as UTF-8.
    let upper = dir.path().join("upper.txt");
    served.ok(&[
        "invoke",
        "--task-name",
        "echo",
        "--artifact",
        echo,
        "upper",
        "-p",
        "input=héllo",
        "--output",
        upper.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&upper).unwrap(), "HÉLLO");
    assert!(served.stop().success());
}

#[test]
fn only_client_commands_show_and_take_the_server_options() {
    for command in [
        &["serve", "--help"][..],
        &["plugin", "check", "--help"],
        &["plugin", "inspect", "--help"],
        &["plugin", "new", "--help"],
    ] {
        let out = spearlet(command);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let help = text(&out.stdout);
        for flag in ["--endpoint", "--token", "--ca "] {
            assert!(!help.contains(flag), "{command:?} lists {flag}: {help}");
        }
    }
    for command in [
        &["invoke", "--help"][..],
        &["tasks", "--help"],
        &["task", "get", "--help"],
        &["health", "--help"],
    ] {
        let help = text(&spearlet(command).stdout);
        assert!(
            help.contains("--endpoint") && help.contains("--format"),
            "{command:?}: {help}"
        );
    }
    let out = spearlet(&["serve", "--endpoint", "http://127.0.0.1:9", "--help"]);
    assert!(!out.status.success(), "serve takes no --endpoint");
    let out = spearlet(&["--endpoint", "http://127.0.0.1:9", "tasks"]);
    assert!(
        text(&out.stderr).contains("--endpoint"),
        "before the command it is refused, named: {}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_shows_wire_types_and_prints_json() {
    let (math, stream) = (path(Artifact::Math), path(Artifact::Stream));
    let out = spearlet(&["plugin", "inspect", math, stream]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("\n      wire (a: i64, b: i64) -> i64\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\n      wire (a: f64, b: f64) -> f64\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\n  count(n: i64) -> Stream<i64>  stream")
            && shown.contains("\n      wire (n: i64) -> a stream of i64\n"),
        "the declared chunk type, in Rust and on the wire: {shown}"
    );

    let out = spearlet(&["plugin", "inspect", math, stream, "--format", "json"]);
    let lines = json_lines(&text(&out.stdout));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines.len(), 2, "one line per file: {lines:#?}");
    assert_eq!(lines[0]["plugin"], "math", "{}", lines[0]);
    assert_eq!(lines[0]["sha256"].as_str().map(str::len), Some(64));
    let add = lines[0]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "add")
        .unwrap();
    assert_eq!(add["kind"], "unary", "{add}");
    assert_eq!(add["params"][0]["name"], "a", "{add}");
    assert_eq!(add["params"][0]["type"], "i64", "{add}");
    assert_eq!(add["params"][0]["wire_type"], "i64", "{add}");
    assert_eq!(add["returns_wire_type"], "i64", "{add}");
    let count = &lines[1]["functions"][0];
    assert_eq!(count["kind"], "stream", "{}", lines[1]);
    assert_eq!(count["signature"], "(n: i64) -> Stream<i64>", "{count}");
    assert_eq!(count["chunk_type"], "i64", "{count}");
    assert_eq!(count["chunk_wire_type"], "i64", "{count}");
    assert_eq!(count["returns"], "()", "{count}");
    assert_eq!(count["returns_wire_type"], Json::Null, "{count}");
    assert_eq!(add["chunk_wire_type"], Json::Null, "{add}");
}

/// A misspelled parameter is refused before anything runs, with the
/// closest declared name, in a dry run and a real call alike.
#[test]
fn an_unknown_parameter_is_refused_naming_the_closest_declared_one() {
    let served = Served::start("");
    let math = path(Artifact::Math);
    served.ok(&add_2_40("sums", math));
    for dry in [true, false] {
        let mut args = vec!["invoke", "--task-name", "sums", "--artifact", &math];
        args.extend(["add", "-p", "a=2", "-p", "bb=40"]);
        if dry {
            args.push("--dry-run");
        }
        let out = served.run(&args);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success() || dry, "{said}");
        assert!(
            said.contains("unknown parameter `bb` of `add`; did you mean `b`?"),
            "dry run {dry}: {said}"
        );
    }
    served.stop();
}
