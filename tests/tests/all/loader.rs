//! Loader behaviour: integrity, identity, name resolution, coexistence.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use spearlet::digest::Sha256Digest;
use spearlet::loader::Plugin;
use spearlet::{Error, Value};
use spearlet_test_artifacts::Artifact;

use crate::helpers::{call, instance, load};

#[test]
fn two_different_plugins_are_loaded_and_called_in_one_process() {
    let math = load(Artifact::Math);
    let echo = load(Artifact::Echo);
    assert_ne!(math.name(), echo.name());
    let mut m = instance(&math);
    let mut e = instance(&echo);
    for i in 0..3 {
        let sum = call(&mut m, "add", &[("a", Value::I64(i)), ("b", Value::I64(1))]);
        assert_eq!(sum.unwrap(), Value::I64(i + 1));
        let said = call(
            &mut e,
            "upper",
            &[("input", Value::String(format!("x{i}")))],
        );
        assert_eq!(said.unwrap(), Value::String(format!("X{i}")));
    }
}

#[test]
fn successive_loads_of_different_files_never_alias() {
    // Regression: the loader dlopens `/proc/self/fd/N`; a reused descriptor
    // number once made every later load return the first library.
    let names: Vec<String> = Artifact::SAMPLES
        .iter()
        .map(|a| load(*a).name().to_owned())
        .collect();
    assert_eq!(
        names,
        ["echo", "math", "counter", "stream", "sleepy", "faulty"]
    );
}

#[test]
fn the_recorded_digest_is_the_sha256_of_the_file() {
    let bytes = std::fs::read(Artifact::Math.path()).unwrap();
    let expected = hex::encode(Sha256::digest(&bytes));
    assert_eq!(load(Artifact::Math).digest().to_hex(), expected);
}

#[test]
fn a_wrong_checksum_is_refused_before_loading() {
    let wrong: Sha256Digest =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap();
    match Plugin::load_verified(Artifact::Counter.path(), Some(&wrong)) {
        Err(Error::ChecksumMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, wrong.to_hex());
            assert_eq!(actual, load(Artifact::Counter).digest().to_hex());
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let right = load(Artifact::Counter).digest();
    assert!(Plugin::load_verified(Artifact::Counter.path(), Some(&right)).is_ok());
}

#[test]
fn the_same_bytes_at_another_path_are_the_same_loaded_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy-of-echo.so");
    std::fs::copy(Artifact::Echo.path(), &copy).unwrap();
    let original = load(Artifact::Echo);
    let again = Plugin::load_verified(&copy, None).unwrap();
    assert!(Arc::ptr_eq(&original, &again));
    assert!(Arc::ptr_eq(
        &Plugin::already_loaded(&original.digest()).unwrap(),
        &original
    ));
}

#[test]
fn an_unknown_function_names_the_ones_that_exist() {
    match load(Artifact::Math).function("multiply") {
        Err(Error::FunctionNotFound {
            plugin,
            function,
            available,
        }) => {
            assert_eq!(plugin, "math");
            assert_eq!(function, "multiply");
            assert_eq!(available, "add, divide");
        }
        other => panic!("expected FunctionNotFound, got {other:?}"),
    }
}

#[test]
fn files_that_are_not_shared_libraries_are_refused_before_dlopen() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.so");
    std::fs::write(&text, "not an ELF file").unwrap();
    match Plugin::load_verified(&text, None) {
        Err(Error::ArtifactFormat { reason, .. }) => assert_eq!(reason, "not an ELF file"),
        other => panic!("expected ArtifactFormat, got {other:?}"),
    }
    let empty = dir.path().join("empty.so");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        Plugin::load_verified(&empty, None),
        Err(Error::ArtifactFormat { .. })
    ));
    assert!(matches!(
        Plugin::load_verified(&dir.path().join("missing.so"), None),
        Err(Error::Io { .. })
    ));
}
