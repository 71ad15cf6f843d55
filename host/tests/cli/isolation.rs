//! Isolation tiers from the command line: `serve --isolation` sets the
//! server's default, `invoke --isolation` / `--memory-max` choose a new
//! task's, and `tasks`, `task get` and `health` show them. Only the setting
//! is tested: math's `add` is harmless in either tier.

use spearlet_test_artifacts::Artifact;

use crate::served::{add_2_40, Served};
use crate::{path, spearlet, text};

#[test]
fn serve_isolation_sets_the_default_tier() {
    let out = spearlet(&["serve", "--check-config", "--isolation", "process"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let effective = text(&out.stdout);
    assert!(effective.contains("isolation = \"process\""), "{effective}");

    let out = spearlet(&["serve", "--check-config", "--isolation", "sandbox"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("sandbox") && said.contains("in-process") && said.contains("process"),
        "the tiers are listed: {said}"
    );
}

#[test]
fn creation_flags_on_a_call_that_creates_nothing_are_refused() {
    // Refused before any connection: no server is needed to say so.
    for flags in [
        &["--isolation", "process"][..],
        &["--memory-max", "1048576"][..],
    ] {
        let mut args = vec![
            "invoke",
            "--endpoint",
            "http://127.0.0.1:9",
            "--task-id",
            "t",
            "add",
        ];
        args.extend_from_slice(flags);
        let out = spearlet(&args);
        assert!(!out.status.success());
        let said = text(&out.stderr);
        assert!(
            said.contains(flags[0]) && said.contains("only when the task is created"),
            "{said}"
        );
    }
    let out = spearlet(&["invoke", "--task-name", "t", "add", "--memory-max", "0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--memory-max"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn invoke_chooses_a_new_task_s_tier_and_the_listings_show_it() {
    let served = Served::start("");
    let math = path(Artifact::Math);
    let mut capped = add_2_40("capped", math).to_vec();
    capped.extend(["--isolation", "process", "--memory-max", "268435456"]);
    let shown = served.ok(&capped);
    assert!(shown.contains("42 (i64)"), "{shown}");
    let shown = served.ok(&[
        "invoke",
        "--task-id",
        "by-id",
        "--create",
        "--artifact",
        math,
        "add",
        "-p",
        "a=1",
        "-p",
        "b=1",
        "--isolation",
        "in-process",
    ]);
    assert!(shown.contains("2 (i64)"), "{shown}");
    // Refused by the server: a cap needs the process tier.
    let mut refused = add_2_40("refused", math).to_vec();
    refused.extend(["--isolation", "in-process", "--memory-max", "1048576"]);
    let out = served.run(&refused);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("[invalid_request]") && said.contains("spearlet.isolation=process"),
        "{said}"
    );

    let listed = served.ok(&["tasks"]);
    let row = |name: &str| {
        listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
            .to_owned()
    };
    assert!(
        listed.lines().next().unwrap().contains("ISOLATION"),
        "{listed}"
    );
    assert!(row("capped").contains("process, max 256 MiB"), "{listed}");
    assert!(row("by-id").contains("in-process"), "{listed}");
    assert!(!listed.contains("refused"), "{listed}");

    let capped_id = row("capped").split_whitespace().nth(1).unwrap().to_owned();
    let shown = served.ok(&["task", "get", &capped_id]);
    assert!(
        shown.contains("isolation   process, max 256 MiB"),
        "{shown}"
    );
    let shown = served.ok(&["health"]);
    assert!(
        shown.contains("isolation:   1 in-process, 1 process"),
        "{shown}"
    );
    assert!(served.stop().success());
}

#[test]
fn the_configured_default_applies_to_tasks_that_do_not_say() {
    // `[exec]`, the earlier name of `[tiers]`: an old file still loads.
    let served = Served::start("[exec]\nisolation = \"process\"\n");
    served.ok(&add_2_40("defaulted", path(Artifact::Math)));
    let listed = served.ok(&["tasks"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("defaulted ") && l.contains(" process ")),
        "{listed}"
    );
    assert!(served.stop().success());
}

#[test]
fn a_library_whose_constructor_aborts_is_refused_in_either_tier_and_the_server_lives() {
    let data = tempfile::tempdir().unwrap();
    let served = Served::start_with_env(
        data.path(),
        "",
        &[("SPEARLET_FIXTURE_CONSTRUCTOR", "abort")],
    );
    let hostile = path(Artifact::HostileConstructor);
    for tier in ["in-process", "process"] {
        let name = format!("hostile-{tier}");
        let out = served.run(&[
            "invoke",
            "--task-name",
            &name,
            "--artifact",
            hostile,
            "nop",
            "--isolation",
            tier,
        ]);
        assert!(!out.status.success(), "{tier}: the load is refused");
        let said = text(&out.stderr);
        assert!(
            said.contains("constructor_crashed") && said.contains("SIGABRT"),
            "{tier}: {said}"
        );
    }
    let shown = served.ok(&add_2_40("math", path(Artifact::Math)));
    assert!(shown.contains("42 (i64)"), "the server serves on: {shown}");
}

#[test]
fn a_plugin_that_aborts_in_the_process_tier_costs_a_worker_not_the_server() {
    let served = Served::start("");
    let faulty = path(Artifact::Faulty);
    let create = [
        "invoke",
        "--task-name",
        "faulty",
        "--artifact",
        faulty,
        "abort",
        "--isolation",
        "process",
    ];
    let out = served.run(&create);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed execution, not an error"
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("plugin_crashed") && said.contains("SIGABRT"),
        "{said}"
    );
    let shown = served.ok(&[
        "invoke",
        "--task-name",
        "faulty",
        "--artifact",
        faulty,
        "flaky",
        "-p",
        "fail_times=0",
    ]);
    assert!(shown.contains("succeeded after 0 failures"), "{shown}");
    let health = served.ok(&["health"]);
    assert!(health.starts_with("healthy"), "{health}");
}

#[test]
fn a_library_whose_constructor_hangs_is_refused_after_the_load_timeout() {
    let data = tempfile::tempdir().unwrap();
    let served = Served::start_with_env(
        data.path(),
        "[tiers]\nload_timeout = \"1s\"\n",
        &[("SPEARLET_FIXTURE_CONSTRUCTOR", "hang")],
    );
    let out = served.run(&[
        "invoke",
        "--task-name",
        "hostile",
        "--artifact",
        path(Artifact::HostileConstructor),
        "nop",
    ]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("constructor_crashed") && said.contains("hung for 1000 ms"),
        "{said}"
    );
    let shown = served.ok(&add_2_40("math", path(Artifact::Math)));
    assert!(shown.contains("42 (i64)"), "the server serves on: {shown}");
}

#[test]
fn a_worker_program_from_another_build_refuses_to_serve_and_says_why() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .arg("worker")
        .env("SPEARLET_WORKER_HOST", std::process::id().to_string())
        .env("SPEARLET_WORKER_PROTOCOL", "0123456789abcdef")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    let said = text(&out.stderr);
    assert!(
        said.contains("different spearlet builds") && said.contains("0123456789abcdef"),
        "{said}"
    );
}

#[test]
fn a_plugin_that_aborts_in_process_is_reported_as_a_connection_the_server_closed() {
    let served = Served::start("");
    let out = served.run(&[
        "invoke",
        "--task-name",
        "faulty",
        "--artifact",
        path(Artifact::Faulty),
        "abort",
    ]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("the server closed the connection during the call")
            && said.contains("--isolation process"),
        "{said}"
    );
    assert!(!said.contains("Unknown: transport error"), "{said}");
}
