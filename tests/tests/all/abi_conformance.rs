//! The ABI conformance fixtures: each refusal is its own error variant, and
//! a plugin built today loads into a host whose SDK has grown a field.

use std::process::Command;

use spearlet::loader::Plugin;
use spearlet::Error;
use spearlet_test_artifacts::{abi_next_host, Artifact};

fn refusal(artifact: Artifact) -> Error {
    match Plugin::load_verified(artifact.path(), None) {
        Ok(p) => panic!(
            "{} must be refused, but loaded as `{}`",
            artifact.path().display(),
            p.name()
        ),
        Err(e) => e,
    }
}

#[test]
fn a_library_without_a_root_module_is_not_a_plugin() {
    assert!(matches!(
        refusal(Artifact::NoRoot),
        Error::NoRootModule { .. }
    ));
}

#[test]
fn another_abi_major_version_is_refused_with_both_versions() {
    match refusal(Artifact::BadVersion) {
        Error::IncompatibleSdk {
            expected, actual, ..
        } => {
            assert_eq!(actual, "2.0.0");
            assert!(expected.starts_with("1.x"), "{expected}");
        }
        other => panic!("expected IncompatibleSdk, got {other:?}"),
    }
}

#[test]
fn a_different_root_module_layout_is_refused_with_abi_stables_report() {
    match refusal(Artifact::BadLayout) {
        Error::LayoutMismatch {
            summary, details, ..
        } => {
            assert!(summary.contains("fixture-bad-layout"), "{summary}");
            assert!(
                details.contains("PluginMod"),
                "the report names the type: {details}"
            );
        }
        other => panic!("expected LayoutMismatch, got {other:?}"),
    }
}

#[test]
fn an_empty_function_table_is_refused() {
    match refusal(Artifact::NoFunctions) {
        Error::NoFunctions { plugin, .. } => assert_eq!(plugin, "empty"),
        other => panic!("expected NoFunctions, got {other:?}"),
    }
}

#[test]
fn duplicate_function_names_are_refused() {
    match refusal(Artifact::DuplicateFunctions) {
        Error::DuplicateFunction { plugin, function } => {
            assert_eq!(plugin, "duplicates");
            assert_eq!(function, "same");
        }
        other => panic!("expected DuplicateFunction, got {other:?}"),
    }
}

#[test]
fn refusals_are_remembered_and_repeatable() {
    // A refused library stays mapped; asking again gives the same answer
    // without going back to the dynamic loader.
    for _ in 0..3 {
        assert!(matches!(
            refusal(Artifact::NoFunctions),
            Error::NoFunctions { .. }
        ));
    }
}

#[test]
fn a_plugin_built_today_loads_into_a_host_expecting_one_more_field() {
    let out = Command::new(abi_next_host())
        .arg(Artifact::Echo.path())
        .output()
        .expect("run the abi-next host fixture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "abi-next host failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "host_abi=1.1.0",
            "load=ok",
            "plugin=echo",
            "plugin_abi=1.0.0",
            "next_fixture_field=absent",
            "upper=Str(\"ABI\")",
        ]
    );
}
