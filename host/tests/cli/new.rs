//! `spearlet plugin new`: the generated crate's own unit tests pass, and the
//! library it builds publishes every example function.

use spearlet_test_artifacts::Artifact;

use crate::{spearlet, text};

/// Generates a crate and runs `cargo test` in it, then builds it and
/// inspects the library. Built into the fixture build's target directory,
/// whose dependencies are compiled already (the crate is named apart from
/// the other `plugin new` test's, so their libraries never collide).
#[test]
fn plugin_new_crate_passes_its_own_tests() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("starter");
    let sdk = workspace.join("plugin-sdk");
    let out = spearlet(&[
        "plugin",
        "new",
        "starter",
        "--dir",
        crate_dir.to_str().unwrap(),
        "--sdk",
        sdk.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The workspace's lock file: the same dependency versions, no resolution.
    std::fs::copy(workspace.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let fixture_target = Artifact::Echo.path().parent().unwrap().parent().unwrap();
    let cargo = |command: &str| {
        let mut run =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        run.args([command, "--offline", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(fixture_target);
        for var in [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "CLIPPY_ARGS",
            "CARGO_TARGET_DIR",
        ] {
            run.env_remove(var);
        }
        run.output().unwrap()
    };

    let tested = cargo("test");
    let report = text(&tested.stdout);
    assert!(tested.status.success(), "{report}{}", text(&tested.stderr));
    for test in [
        "greets",
        "counts_per_instance",
        "division_by_zero_has_its_code",
        "counts_down_and_stops_when_the_caller_goes",
    ] {
        assert!(
            report.contains(&format!("tests::{test} ... ok")),
            "{test}: {report}"
        );
    }
    assert!(report.contains("4 passed; 0 failed"), "{report}");

    let built = cargo("build");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let library = fixture_target.join("debug/libstarter.so");
    let out = spearlet(&["plugin", "inspect", library.to_str().unwrap()]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    for function in [
        "count() -> i64",
        "countdown(from: i64)",
        "divide(a: i64, b: i64) -> i64",
        "greet(name: &str, excited: Option<bool>) -> String",
    ] {
        assert!(shown.contains(function), "{function}: {shown}");
    }
}
