//! `spearlet plugin inspect`, `--help`: plugin files without a server.

use sha2::{Digest, Sha256};
use spearlet_test_artifacts::{Artifact, FileServer};

use crate::{path, spearlet, text};

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
        stdout.contains("sdk:       spear-plugin-sdk 0.1.0 (plugin ABI 1.3.0)\n"),
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

/// Conformance fixtures the loader refuses once it has opened them (a
/// library without a root module is checked apart), with each one's error kind.
const REFUSED: [(Artifact, &str); 6] = [
    (Artifact::BadVersion, "incompatible_sdk"),
    (Artifact::BadLayout, "layout_mismatch"),
    (Artifact::NoFunctions, "no_functions"),
    (Artifact::DuplicateFunctions, "duplicate_function"),
    (Artifact::Rpath, "unverified_dependency"),
    (Artifact::UncheckedLayout, "layout_unchecked"),
];

#[test]
fn each_conformance_fixture_is_refused_with_its_kind() {
    for (fixture, kind) in REFUSED {
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

#[test]
fn plugin_check_passes_every_sample_and_fails_every_refusal_with_its_reason() {
    let mut samples: Vec<&str> = Artifact::SAMPLES.iter().map(|a| path(*a)).collect();
    // Built as the previous SDK minor version built plugins: passes too.
    samples.push(
        spearlet_test_artifacts::abi_previous_plugin()
            .to_str()
            .unwrap(),
    );
    let mut args = vec!["plugin", "check"];
    args.extend(&samples);
    let out = spearlet(&args);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert_eq!(shown.matches("PASS  ").count(), samples.len(), "{shown}");
    assert!(!shown.contains("FAIL"), "{shown}");
    for check in [
        "constructors",
        "loads",
        "abi",
        "function table",
        "instance",
        "missing parameters",
        "panic barrier",
        "instance churn",
    ] {
        assert_eq!(
            shown.matches(&format!("ok   {check:<20} ")).count(),
            samples.len(),
            "{check}: {shown}"
        );
    }
    assert!(
        shown.contains("ok   stream cancel        count: stopped"),
        "the stream sample stops when cancelled: {shown}"
    );
    assert!(
        shown.contains("declares 1.0.0; this host is")
            && shown.contains("1.1: predates it (function_hints"),
        "the previous ABI's plugin is checked against each version: {shown}"
    );

    let no_root = (Artifact::NoRoot, "no_root_module");
    for (fixture, reason) in std::iter::once(no_root).chain(REFUSED) {
        let out = spearlet(&["plugin", "check", path(fixture)]);
        let shown = text(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{fixture:?}: {shown}");
        assert!(
            shown.contains("FAIL loads") && shown.contains(reason),
            "{fixture:?}: {shown}"
        );
    }

    let out = spearlet(&["plugin", "check", path(Artifact::Echo), "--format", "junit"]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.starts_with("<?xml") && shown.contains("failures=\"0\" skipped=\"1\""),
        "{shown}"
    );
}

/// The hostile fixture carries a constructor of its own and a stream that
/// ignores cancellation; its environment variable makes the constructor
/// abort, hang, or install a panic hook that aborts.
#[test]
fn plugin_check_names_what_a_hostile_library_does_and_survives_it() {
    let hostile = path(Artifact::HostileConstructor);
    let check = |mode: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
            .args(["plugin", "check", hostile])
            .args(extra)
            .env("SPEARLET_FIXTURE_CONSTRUCTOR", mode)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout))
    };
    let (code, shown) = check("none", &[]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("FAIL constructors         runs code at load time"),
        "its own constructor is flagged: {shown}"
    );
    assert!(
        shown.contains("FAIL stream cancel        deaf: still running"),
        "{shown}"
    );
    assert!(shown.contains("ok   loads"), "{shown}");

    let (code, shown) = check("abort", &[]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("FAIL loads") && shown.contains("crashed or aborted"),
        "{shown}"
    );
    // A bound, not a synchronisation: the verdict for a hang is the timeout.
    let (code, shown) = check("hang", &["--timeout", "1s"]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("did not finish loading"), "{shown}");

    let (code, shown) = check("abort-on-panic", &[]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("FAIL panic barrier") && shown.contains("killed the process (signal 6)"),
        "{shown}"
    );

    let (code, shown) = check("abort", &["--format", "json"]);
    assert_eq!(code, Some(2));
    let reports: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let outcomes = reports[0]["outcomes"].as_array().unwrap();
    assert_eq!(outcomes[0]["check"], "constructors");
    assert_eq!(outcomes[1]["check"], "loads");
    assert_eq!(outcomes[1]["verdict"], "fail");
    assert_eq!(outcomes[1]["passed"], false);

    let (code, shown) = check("none", &["--format", "junit"]);
    assert_eq!(code, Some(2));
    assert!(shown.contains("failures=\"2\""), "{shown}");
}

/// `plugin new` makes a crate that builds and passes `plugin check`. It is
/// built into the fixture build's target directory, whose dependencies are
/// compiled already, so only the new crate itself compiles here.
#[test]
fn plugin_new_builds_and_passes_plugin_check() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("greeter");
    let sdk = workspace.join("plugin-sdk");
    let out = spearlet(&[
        "plugin",
        "new",
        "greeter",
        "--dir",
        crate_dir.to_str().unwrap(),
        "--sdk",
        sdk.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("spearlet plugin check target/release/libgreeter.so"));
    let again = spearlet(&[
        "plugin",
        "new",
        "greeter",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success(),
        "an existing crate is never overwritten"
    );

    // The workspace's lock file: the same dependency versions, no resolution.
    std::fs::copy(workspace.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let fixture_target = Artifact::Echo.path().parent().unwrap().parent().unwrap();
    let mut build =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--quiet", "--offline", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(fixture_target);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_TARGET_DIR",
    ] {
        build.env_remove(var);
    }
    let built = build.output().unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let library = fixture_target.join("debug/libgreeter.so");
    let out = spearlet(&["plugin", "check", library.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn inspect_survives_a_library_that_aborts_while_loading() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .args([
            "plugin",
            "inspect",
            path(Artifact::HostileConstructor),
            path(Artifact::Echo),
        ])
        .env("SPEARLET_FIXTURE_CONSTRUCTOR", "abort")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("refused [load_crashed]"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("plugin:    echo"),
        "the next file is still inspected: {}",
        text(&out.stdout)
    );
}
