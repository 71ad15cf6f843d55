//! The process tier's machinery, below the pool: worker processes loading a
//! plugin, calls across shared memory, and every way a worker can die.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use spearlet::isolate::{self, CrashGate, IsolatedInstance, Workers};
use spearlet::loader::{CallRequest, Plugin, VerifiedFile};
use spearlet::{Error, Value};
use spearlet_test_artifacts::Artifact;

use crate::helpers::{params, Collect};

fn described(workers: &Workers, artifact: Artifact) -> Arc<Plugin> {
    let file = VerifiedFile::rehash(artifact.path(), u64::MAX).expect("readable");
    isolate::describe(file, workers).expect("a worker describes it")
}

fn instance(workers: &Workers, plugin: &Arc<Plugin>, gate: &Arc<CrashGate>) -> IsolatedInstance {
    IsolatedInstance::create(workers, &Arc::from("task"), plugin, &[], None, gate)
        .expect("a worker makes an instance")
}

fn call(
    instance: &mut IsolatedInstance,
    plugin: &Plugin,
    function: &str,
    args: &[(&str, Value)],
) -> spearlet::Result<Value> {
    let handle = plugin.function(function)?;
    let cancelled = AtomicBool::new(false);
    let params = params(args);
    instance.call(
        handle,
        &CallRequest::new("exec", &cancelled).with_params(&params),
    )
}

#[test]
fn a_described_plugin_runs_in_a_worker_and_is_never_loaded_here() {
    let workers = Workers::new(None, 0);
    let plugin = described(&workers, Artifact::Echo);
    assert!(!plugin.is_loaded_here());
    let gate = Arc::new(CrashGate::default());
    let mut worker = instance(&workers, &plugin, &gate);
    for word in ["one", "two"] {
        assert_eq!(
            call(
                &mut worker,
                &plugin,
                "echo",
                &[("input", Value::String(word.into()))]
            )
            .unwrap(),
            Value::String(word.into())
        );
    }
    let big = Value::Bytes(vec![7; 3 << 20]);
    assert_eq!(
        call(&mut worker, &plugin, "echo", &[("input", big.clone())]).unwrap(),
        big
    );
}

#[test]
fn streams_and_logs_cross_with_backpressure() {
    let workers = Workers::new(None, 0);
    let plugin = described(&workers, Artifact::Stream);
    let gate = Arc::new(CrashGate::default());
    let mut worker = instance(&workers, &plugin, &gate);
    let sink = Collect::default();
    let cancelled = AtomicBool::new(false);
    let args = params(&[("n", Value::I64(5))]);
    let request = CallRequest {
        sink: &sink,
        ..CallRequest::new("exec", &cancelled).with_params(&args)
    };
    worker
        .call(plugin.function("count").unwrap(), &request)
        .expect("the stream ends");
    assert_eq!(sink.chunks.lock().unwrap().len(), 5);
}

#[test]
fn every_crash_kind_fails_the_call_with_how_the_worker_ended() {
    let workers = Workers::new(None, 1);
    let plugin = described(&workers, Artifact::Faulty);
    for (function, args, ended) in [
        ("segfault", vec![], "SIGSEGV"),
        ("abort", vec![], "SIGABRT"),
        ("exit", vec![("code", Value::I64(3))], "status 3"),
        ("overflow", vec![], "signal"),
    ] {
        let gate = Arc::new(CrashGate::default());
        let mut worker = instance(&workers, &plugin, &gate);
        let error = call(&mut worker, &plugin, function, &args).unwrap_err();
        match &error {
            Error::PluginCrashed { ended: how, .. } => {
                assert!(how.contains(ended), "{function}: {how}")
            }
            other => panic!("{function}: expected plugin_crashed, got {other:?}"),
        }
        assert_eq!(error.kind(), "plugin_crashed");
        assert!(worker.is_poisoned());
        // A fresh worker serves the task's next call.
        let mut next = instance(&workers, &plugin, &gate);
        assert_eq!(
            call(
                &mut next,
                &plugin,
                "flaky",
                &[("fail_times", Value::I64(0))]
            )
            .unwrap(),
            Value::String("succeeded after 0 failures".into())
        );
    }
}

#[test]
fn repeated_crashes_back_off_and_refuse_at_once() {
    let workers = Workers::new(None, 1);
    let plugin = described(&workers, Artifact::Faulty);
    let gate = Arc::new(CrashGate::default());
    for _ in 0..3 {
        let mut worker = instance(&workers, &plugin, &gate);
        call(&mut worker, &plugin, "abort", &[]).unwrap_err();
    }
    assert!(gate.is_looping(), "three crashes in a row back off");
    assert!(matches!(
        IsolatedInstance::create(&workers, &Arc::from("task"), &plugin, &[], None, &gate),
        Err(Error::CrashLooping { .. })
    ));
}

#[test]
fn a_worker_over_its_memory_cap_is_replaced() {
    let workers = Workers::new(None, 0);
    let plugin = described(&workers, Artifact::Faulty);
    let gate = Arc::new(CrashGate::default());
    let mut worker = IsolatedInstance::create(
        &workers,
        &Arc::from("task"),
        &plugin,
        &[],
        Some(64 << 20),
        &gate,
    )
    .expect("instance");
    assert_eq!(
        call(
            &mut worker,
            &plugin,
            "hog",
            &[("bytes", Value::I64(1 << 20))]
        )
        .unwrap(),
        Value::I64(1 << 20)
    );
    let error = call(
        &mut worker,
        &plugin,
        "hog",
        &[("bytes", Value::I64(512 << 20))],
    )
    .unwrap_err();
    assert!(
        matches!(error, Error::MemoryLimitExceeded { limit, .. } if limit == 64 << 20),
        "{error:?}"
    );
}

/// Issue #25, across the process tier: the worker's loader tells a
/// function's own `panic`-coded error from a panic by type, the channel
/// carries which it was, and only the panic costs the worker.
#[test]
fn an_error_with_code_panic_keeps_its_worker_and_a_panic_does_not() {
    let workers = Workers::new(None, 0);
    let plugin = described(&workers, Artifact::Faulty);
    let gate = Arc::new(CrashGate::default());
    let mut worker = instance(&workers, &plugin, &gate);
    let pid = worker.pid();
    for _ in 0..2 {
        match call(&mut worker, &plugin, "fake_panic", &[]) {
            Err(Error::PluginFailed { code, message, .. }) => {
                assert_eq!(code, "panic");
                assert_eq!(message, "an error that only calls itself a panic");
            }
            other => panic!("expected PluginFailed, got {other:?}"),
        }
        assert!(!worker.is_poisoned(), "an error never poisons");
        assert_eq!(worker.pid(), pid);
    }
    assert!(matches!(
        call(&mut worker, &plugin, "panic", &[]),
        Err(Error::PluginPanicked { .. })
    ));
    assert!(worker.is_poisoned(), "a panic does");
}
