//! Builds every sample plugin and conformance fixture from source, with a
//! nested `cargo build` into a target directory of its own (sharing the outer
//! one would deadlock on its lock), and hands their paths to the crate as
//! compile-time environment variables. A fresh clone needs nothing else.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Workspace packages built as plugins: (package, library stem).
const PLUGINS: &[(&str, &str)] = &[
    ("sample-echo", "sample_echo"),
    ("sample-math", "sample_math"),
    ("sample-counter", "sample_counter"),
    ("sample-stream", "sample_stream"),
    ("sample-sleepy", "sample_sleepy"),
    ("sample-faulty", "sample_faulty"),
    ("fixture-no-root", "fixture_no_root"),
    ("fixture-bad-version", "fixture_bad_version"),
    ("fixture-bad-layout", "fixture_bad_layout"),
    ("fixture-no-functions", "fixture_no_functions"),
    ("fixture-duplicate-functions", "fixture_duplicate_functions"),
    ("fixture-probe", "fixture_probe"),
    ("fixture-rpath", "fixture_rpath"),
    ("fixture-slow-constructor", "fixture_slow_constructor"),
    ("fixture-unchecked-layout", "fixture_unchecked_layout"),
    ("fixture-hostile-constructor", "fixture_hostile_constructor"),
    ("fixture-versioned-1", "fixture_versioned_1"),
    ("fixture-versioned-2", "fixture_versioned_2"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("tests/artifacts sits two levels below the workspace root")
        .to_owned();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory")
        .join("spearlet-plugins");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    // Optimised builds get the lean `plugin` profile (stripped, LTO, one
    // codegen unit): what the README recommends and what benchmarks hash.
    let profile_dir = if release { "plugin" } else { "debug" };

    for dir in [
        "plugin-sdk",
        "sample-plugins",
        "tests/fixtures",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    let mut build = nested_cargo(&workspace);
    build.arg("build").arg("--target-dir").arg(&target_root);
    if release {
        build.args(["--profile", "plugin"]);
    }
    for (package, _) in PLUGINS {
        build.args(["-p", package]);
    }
    run(build, "sample plugins and fixtures");

    let plugin_dir = target_root.join(profile_dir);
    for (_, stem) in PLUGINS {
        let path = plugin_dir.join(format!("lib{stem}.so"));
        assert!(
            path.exists(),
            "nested build did not produce {}",
            path.display()
        );
        println!(
            "cargo:rustc-env=SPEARLET_ARTIFACT_{}={}",
            stem.to_uppercase(),
            path.display()
        );
    }

    // The future-SDK host turns on an SDK feature, so it is built alone.
    let next_target = target_root.join("abi-next");
    let mut next = nested_cargo(&workspace);
    next.arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("tests/fixtures/abi-next-host/Cargo.toml"))
        .arg("--target-dir")
        .arg(&next_target);
    run(next, "the abi-next host fixture");
    println!(
        "cargo:rustc-env=SPEARLET_ARTIFACT_ABI_NEXT_HOST={}",
        next_target.join("debug/abi-next-host").display()
    );

    // So is the plugin built as earlier SDK minor versions built them:
    // first as ABI 1.2 and 1.1 (each copied aside, as the same target
    // directory's next build replaces it), then as ABI 1.0.
    let previous_target = target_root.join("abi-previous");
    let previous_manifest = workspace.join("tests/fixtures/abi-previous-plugin/Cargo.toml");
    let built = previous_target.join("debug/libabi_previous_plugin.so");
    for (feature, stem, variable) in [
        ("abi-1-2", "1_2", "SPEARLET_ARTIFACT_ABI_1_2_PLUGIN"),
        ("abi-1-1", "1_1", "SPEARLET_ARTIFACT_ABI_1_1_PLUGIN"),
    ] {
        let mut variant = nested_cargo(&workspace);
        variant
            .arg("build")
            .arg("--manifest-path")
            .arg(&previous_manifest)
            .args(["--no-default-features", "--features", feature])
            .arg("--target-dir")
            .arg(&previous_target);
        run(
            variant,
            &format!("the abi-previous plugin fixture ({feature})"),
        );
        let copy = previous_target.join(format!("libabi_previous_plugin_{stem}.so"));
        std::fs::copy(&built, &copy).unwrap_or_else(|e| {
            panic!("cannot copy {} to {}: {e}", built.display(), copy.display())
        });
        println!("cargo:rustc-env={variable}={}", copy.display());
    }
    let mut previous = nested_cargo(&workspace);
    previous
        .arg("build")
        .arg("--manifest-path")
        .arg(&previous_manifest)
        .arg("--target-dir")
        .arg(&previous_target);
    run(previous, "the abi-previous plugin fixture");
    println!(
        "cargo:rustc-env=SPEARLET_ARTIFACT_ABI_PREVIOUS_PLUGIN={}",
        built.display()
    );
}

fn nested_cargo(workspace: &Path) -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(workspace);
    // The outer build's compiler wrappers and flags (clippy, coverage) are
    // for the outer crates; plugins are built plain.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(mut cmd: Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {what}: {e}"));
    assert!(status.success(), "building {what} failed: {status}");
}
