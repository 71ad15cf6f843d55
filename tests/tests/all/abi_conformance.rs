//! The ABI conformance fixtures: each refusal is its own error variant, and
//! a plugin built today loads into a host whose SDK has grown a field.

use std::process::Command;

use spearlet::loader::Plugin;
use spearlet::{Error, Value};
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
fn a_header_without_layout_information_is_refused() {
    match refusal(Artifact::UncheckedLayout) {
        Error::LayoutUnchecked { path } => assert_eq!(path, Artifact::UncheckedLayout.path()),
        other => panic!("expected LayoutUnchecked, got {other:?}"),
    }
}

#[test]
fn a_library_search_path_is_refused_before_dlopen() {
    match refusal(Artifact::Rpath) {
        Error::UnverifiedDependency { reason, .. } => {
            assert!(reason.contains("RUNPATH `$ORIGIN`"), "{reason}")
        }
        other => panic!("expected UnverifiedDependency, got {other:?}"),
    }
}

#[test]
fn a_dependency_beyond_the_c_runtime_is_refused_before_dlopen() {
    // The echo plugin, with its `libgcc_s.so.1` dependency renamed in place
    // (same length, so the rest of the file is untouched).
    let mut bytes = std::fs::read(Artifact::Echo.path()).unwrap();
    let (from, to) = (b"libgcc_s.so.1\0", b"libspear.so.9\0");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the echo plugin needs libgcc_s");
    bytes[at..at + from.len()].copy_from_slice(to);
    let dir = tempfile::tempdir().unwrap();
    let patched = dir.path().join("libneeds-foreign.so");
    std::fs::write(&patched, &bytes).unwrap();
    match Plugin::load_verified(&patched, None) {
        Err(Error::UnverifiedDependency { reason, .. }) => {
            assert!(reason.contains("libspear.so.9"), "{reason}")
        }
        other => panic!("expected UnverifiedDependency, got {other:?}"),
    }
}

#[test]
fn the_samples_need_only_the_c_runtime() {
    let echo = Plugin::load_verified(Artifact::Echo.path(), None).unwrap();
    let needed = echo.needed_libraries();
    assert!(
        needed.iter().any(|l| l.starts_with("libc.so")),
        "{needed:?}"
    );
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
            "host_abi=1.4.0",
            "load=ok",
            "plugin=echo",
            "plugin_abi=1.3.0",
            "function_hints=present 3",
            "default_function=present echo",
            "call_outcome=present",
            "next_fixture_field=absent",
            "upper=Str(\"ABI\")",
            "upper_outcome=Returned(Str(\"ABI\"))",
        ]
    );
}

/// The other direction of the compatibility matrix: a plugin built the way
/// the previous SDK minor version (ABI 1.0) built them loads and runs here,
/// and the field it predates reads as absent (so no function is taken for
/// blocking, whatever its source says).
#[test]
fn a_plugin_built_with_the_previous_minor_abi_loads_and_runs() {
    use spearlet_test_artifacts::abi_previous_plugin;
    let plugin = Plugin::load_verified(abi_previous_plugin(), None)
        .unwrap_or_else(|e| panic!("a 1.0 plugin must load: {e}"));
    assert_eq!(plugin.abi_version(), "1.0.0");
    assert_eq!(plugin.name(), "abi-previous");
    assert!(
        plugin.functions().iter().all(|f| !f.blocking),
        "ABI 1.0 has no function hints"
    );
    assert!(
        plugin.default_function().is_none(),
        "ABI 1.0 has no default function, whatever its source marks"
    );
    let mut instance = crate::helpers::instance(&plugin);
    assert_eq!(
        crate::helpers::call(
            &mut instance,
            "add",
            &[("a", Value::I64(40)), ("b", Value::I64(2))]
        )
        .unwrap(),
        Value::I64(42)
    );
    assert_eq!(
        crate::helpers::call(
            &mut instance,
            "slow_echo",
            &[("text", Value::String("hi".into()))]
        )
        .unwrap(),
        Value::String("hi".into())
    );
}

/// A plugin built the way the previous SDK minor version (ABI 1.1) built
/// them loads and runs: its layout is checked against ABI 1.1's, its
/// function hints are read, and the 1.2 field it predates
/// (`default_function`) reads as absent, though its source marks one.
#[test]
fn a_plugin_built_with_abi_1_1_loads_with_its_hints_and_no_default() {
    use spearlet_test_artifacts::abi_1_1_plugin;
    let plugin = Plugin::load_verified(abi_1_1_plugin(), None)
        .unwrap_or_else(|e| panic!("a 1.1 plugin must load: {e}"));
    assert_eq!(plugin.abi_version(), "1.1.0");
    assert_eq!(plugin.name(), "abi-previous");
    assert_eq!(plugin.root_fields(), 8);
    let blocking: Vec<&str> = plugin
        .functions()
        .iter()
        .filter(|f| f.blocking)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(blocking, ["slow_echo"], "ABI 1.1 carries function hints");
    assert!(
        plugin.default_function().is_none(),
        "ABI 1.1 has no default function, whatever its source marks"
    );
    let mut instance = crate::helpers::instance(&plugin);
    assert_eq!(
        crate::helpers::call(
            &mut instance,
            "add",
            &[("a", Value::I64(40)), ("b", Value::I64(2))]
        )
        .unwrap(),
        Value::I64(42)
    );
}

/// A plugin built the way the SDK before ABI 1.3 built them loads and
/// runs: its layout is checked against ABI 1.2's, its hints and default
/// are read, and `call_outcome`, which it predates, reads as absent. Its
/// calls go through `call`, whose only way to say "panicked" is the code
/// `panic`: for such a plugin alone an error with that code is taken for a
/// panic, and its instance is discarded (the documented limit).
#[test]
fn a_plugin_built_with_abi_1_2_is_judged_by_the_code_it_returns() {
    use spearlet_test_artifacts::abi_1_2_plugin;
    let plugin = Plugin::load_verified(abi_1_2_plugin(), None)
        .unwrap_or_else(|e| panic!("a 1.2 plugin must load: {e}"));
    assert_eq!(plugin.abi_version(), "1.2.0");
    assert_eq!(plugin.root_fields(), 9);
    let default = plugin.default_function().expect("ABI 1.2 marks a default");
    assert_eq!(plugin.function_name(default).as_ref(), "add");
    let mut instance = crate::helpers::instance(&plugin);
    assert_eq!(
        crate::helpers::call(
            &mut instance,
            "add",
            &[("a", Value::I64(40)), ("b", Value::I64(2))]
        )
        .unwrap(),
        Value::I64(42)
    );
    match crate::helpers::call(&mut instance, "says_panic", &[]) {
        Err(Error::PluginPanicked { message, .. }) => {
            assert_eq!(message, "not really a panic")
        }
        other => panic!("a pre-1.3 plugin's `panic` code reads as a panic: {other:?}"),
    }
    assert!(instance.is_poisoned());
}

/// The same fallback for a plugin of ABI 1.0.
#[test]
fn a_plugin_built_with_abi_1_0_is_judged_by_the_code_it_returns() {
    use spearlet_test_artifacts::abi_previous_plugin;
    let plugin = Plugin::load_verified(abi_previous_plugin(), None).unwrap();
    let mut instance = crate::helpers::instance(&plugin);
    assert!(matches!(
        crate::helpers::call(&mut instance, "says_panic", &[]),
        Err(Error::PluginPanicked { .. })
    ));
    assert!(instance.is_poisoned());
}

/// A plugin of today (ABI 1.3) provides every field this host knows.
#[test]
fn a_plugin_built_today_has_every_field_of_abi_1_3() {
    let echo = Plugin::load_verified(Artifact::Echo.path(), None).unwrap();
    assert_eq!(echo.abi_version(), "1.3.0");
    let newest = spear_plugin_sdk::ffi::ABI_MINORS
        .last()
        .expect("at least one minor");
    assert_eq!(newest.version, "1.3");
    assert!(newest.added.contains("call_outcome"));
    assert_eq!(echo.root_fields(), newest.fields);
    assert!(echo.default_function().is_some());
}
