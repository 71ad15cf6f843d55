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

#[test]
fn a_file_rewritten_in_place_loads_as_its_new_bytes() {
    // glibc recognises a loaded library by device and inode: loading the
    // same inode again after an in-place rewrite must still map the new
    // bytes, under the new digest.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libplugin.so");
    std::fs::copy(Artifact::Math.path(), &path).unwrap();
    let before = Plugin::load_verified(&path, None).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"one more byte").unwrap();
    drop(file);
    let expected = spearlet::digest::Sha256Digest::of(&std::fs::read(&path).unwrap());
    let after = Plugin::load_verified(&path, None).unwrap();
    assert_eq!(after.digest(), expected);
    assert_ne!(after.digest(), before.digest());
    assert!(
        !Arc::ptr_eq(&before, &after),
        "a new library, not the old one"
    );
    let mut instance = crate::helpers::instance(&after);
    assert_eq!(
        crate::helpers::call(
            &mut instance,
            "add",
            &[("a", Value::I64(2)), ("b", Value::I64(3))]
        )
        .unwrap(),
        Value::I64(5)
    );
}

#[test]
fn fifos_and_huge_files_are_refused_at_once_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libfifo.so");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    match Plugin::load_verified(&fifo, None) {
        Err(Error::NotRegularFile { kind, .. }) => assert_eq!(kind, "FIFO"),
        other => panic!("expected NotRegularFile, got {other:?}"),
    }
    // 4 GiB of holes: refused on its header, nothing hashed.
    let sparse = dir.path().join("libsparse.so");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    match Plugin::load_verified(&sparse, None) {
        Err(Error::ArtifactFormat { reason, .. }) => assert_eq!(reason, "not an ELF file"),
        other => panic!("expected ArtifactFormat, got {other:?}"),
    }
    let directory = dir.path().join("libdir.so");
    std::fs::create_dir(&directory).unwrap();
    assert!(matches!(
        Plugin::load_verified(&directory, None),
        Err(Error::NotRegularFile {
            kind: "directory",
            ..
        })
    ));
}

#[test]
fn what_is_loaded_is_the_ingested_copy_not_the_source() {
    let data = tempfile::tempdir().unwrap();
    let cache = spearlet::artifact::ArtifactCache::open(data.path(), 1 << 30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("libsource.so");
    let mut bytes = std::fs::read(Artifact::Counter.path()).unwrap();
    bytes.extend_from_slice(b"ingest-test");
    std::fs::write(&source, &bytes).unwrap();
    let ingested = cache.ingest(&source, None, u64::MAX).unwrap();
    // Someone rewrites the source in place right after ingestion.
    std::fs::write(&source, std::fs::read(Artifact::Math.path()).unwrap()).unwrap();
    let plugin = Plugin::load(ingested).unwrap();
    assert_eq!(plugin.name(), "counter");
    assert_eq!(plugin.digest(), spearlet::digest::Sha256Digest::of(&bytes));
    let cached = cache.path_of(&plugin.digest());
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);
    assert!(std::fs::metadata(&cached).unwrap().permissions().readonly());
}

#[test]
fn a_load_in_progress_does_not_hold_up_loaded_plugins() {
    // Loaded before the slow load starts.
    let math = load(Artifact::Math);
    let dir = tempfile::tempdir().unwrap();
    // The slow fixture's constructor waits only when this directory exists
    // (see its source); only this test loads it.
    let signals =
        std::env::temp_dir().join(format!("spearlet-slow-fixture-{}", std::process::id()));
    std::fs::create_dir_all(&signals).unwrap();
    let (started, release) = (signals.join("started"), signals.join("release"));
    // Made before the slow load starts: creating a thread while a
    // constructor runs inside dlopen waits for glibc's loader lock.
    let copy = dir.path().join("libmath-copy.so");
    std::fs::copy(Artifact::Math.path(), &copy).unwrap();
    let digest = math.digest();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let answering = std::thread::spawn(move || {
        wait.recv().unwrap();
        let found = Plugin::already_loaded(&digest).is_some();
        (found, Plugin::load_verified(&copy, None))
    });
    let slow = std::thread::spawn(|| Plugin::load_verified(Artifact::SlowConstructor.path(), None));
    let mut waits = 0u64;
    while !started.exists() {
        waits += 1;
        assert!(waits < 100_000_000, "the slow constructor never started");
        std::thread::yield_now();
    }
    // While that library's constructor runs inside dlopen, the same bytes as
    // a loaded plugin, from another path, are answered from memory: no lock
    // of the slow load's is in the way. (A load of *new* bytes would wait:
    // glibc holds its own loader lock while constructors run.)
    go.send(()).unwrap();
    let mut waits = 0u64;
    while !answering.is_finished() {
        waits += 1;
        if waits > 100_000_000 {
            std::fs::write(&release, b"").unwrap();
            panic!("a loaded plugin waited for a load in progress");
        }
        std::thread::yield_now();
    }
    let (found, again) = answering.join().unwrap();
    assert!(found);
    assert!(Arc::ptr_eq(&again.unwrap(), &math));
    assert!(
        !slow.is_finished(),
        "the slow load is still in its constructor"
    );
    std::fs::write(&release, b"").unwrap();
    assert_eq!(slow.join().unwrap().unwrap().name(), "slow-constructor");
    std::fs::remove_dir_all(&signals).unwrap();
}

#[test]
fn the_function_a_plugin_marks_default_is_its_default() {
    // Echo marks `echo` with `#[function(default)]` (ABI 1.2).
    let echo = load(Artifact::Echo);
    let marked = echo
        .default_function()
        .expect("echo marks a default function");
    assert_eq!(echo.function_name(marked).as_ref(), "echo");
    assert_eq!(Some(marked), echo.function("echo").ok());
    // A plugin that marks none has none, however many functions it has.
    assert!(load(Artifact::Math).default_function().is_none());
    assert!(load(Artifact::Counter).default_function().is_none());
}
