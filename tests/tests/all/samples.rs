//! Every sample plugin function does what the README promises.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use spearlet::{Error, LogLevel, Value};
use spearlet_test_artifacts::Artifact;

use crate::helpers::{call, call_with, instance, load, Collect};

/// The samples name no functions in `export_plugin!`: every `#[function]`
/// is published, sorted by name.
#[test]
fn every_sample_loads_with_its_function_table() {
    let expected: [(Artifact, &str, &[&str]); 6] = [
        (Artifact::Echo, "echo", &["echo", "nop", "upper"]),
        (Artifact::Math, "math", &["add", "divide"]),
        (Artifact::Counter, "counter", &["next"]),
        (Artifact::Stream, "stream", &["count"]),
        (Artifact::Sleepy, "sleepy", &["sleep"]),
        (
            Artifact::Faulty,
            "faulty",
            &[
                "abort",
                "chatter",
                "exit",
                "fake_panic",
                "flaky",
                "hog",
                "overflow",
                "panic",
                "scribble",
                "segfault",
                "shrink",
            ],
        ),
    ];
    for (artifact, name, functions) in expected {
        let plugin = load(artifact);
        assert_eq!(plugin.name(), name);
        assert_eq!(plugin.version(), "0.1.0");
        assert_eq!(plugin.abi_version(), spear_plugin_sdk::ffi::ABI_VERSION);
        assert_eq!(plugin.sdk_version(), spear_plugin_sdk::SDK_VERSION);
        let names: Vec<&str> = plugin.functions().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, functions, "{name}'s function table");
    }
}

/// A plugin that lists its functions publishes those, in its order.
#[test]
fn listed_functions_keep_their_order() {
    let plugin = load(Artifact::Versioned1);
    let names: Vec<&str> = plugin.functions().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["version", "hold"]);
}

#[test]
fn echo_returns_its_input_unchanged_whatever_the_type() {
    let mut echo = instance(&load(Artifact::Echo));
    for value in [
        Value::String("hello".into()),
        Value::I64(-7),
        Value::F64(2.5),
        Value::Bool(true),
        Value::Bytes(vec![0, 1, 255]),
        Value::Raw {
            type_url: "type.googleapis.com/x.Y".into(),
            bytes: vec![8, 1],
        },
    ] {
        assert_eq!(
            call(&mut echo, "echo", &[("input", value.clone())]).unwrap(),
            value
        );
    }
}

#[test]
fn upper_upper_cases_strings_and_names_a_wrong_type() {
    let mut echo = instance(&load(Artifact::Echo));
    assert_eq!(
        call(
            &mut echo,
            "upper",
            &[("input", Value::String("Grüße".into()))]
        )
        .unwrap(),
        Value::String("GRÜSSE".into())
    );
    match call(&mut echo, "upper", &[("input", Value::I64(1))]) {
        Err(Error::PluginFailed {
            code,
            message,
            retriable,
            ..
        }) => {
            assert_eq!(code, "invalid_argument");
            assert!(
                message.contains("`input`") && message.contains("expected string"),
                "{message}"
            );
            assert!(!retriable);
        }
        other => panic!("expected invalid_argument, got {other:?}"),
    }
    match call(&mut echo, "upper", &[]) {
        Err(Error::PluginFailed { message, .. }) => {
            assert!(
                message.contains("missing required parameter `input`"),
                "{message}"
            );
        }
        other => panic!("expected a missing-parameter error, got {other:?}"),
    }
}

#[test]
fn math_adds_divides_and_reports_division_by_zero() {
    let mut math = instance(&load(Artifact::Math));
    let add = call(
        &mut math,
        "add",
        &[("a", Value::I64(2)), ("b", Value::I64(40))],
    );
    assert_eq!(add.unwrap(), Value::I64(42));
    let div = call(
        &mut math,
        "divide",
        &[("a", Value::F64(7.0)), ("b", Value::F64(2.0))],
    );
    assert_eq!(div.unwrap(), Value::F64(3.5));
    match call(
        &mut math,
        "divide",
        &[("a", Value::F64(1.0)), ("b", Value::F64(0.0))],
    ) {
        Err(Error::PluginFailed {
            code, retriable, ..
        }) => {
            assert_eq!(code, "division_by_zero");
            assert!(!retriable);
        }
        other => panic!("expected division_by_zero, got {other:?}"),
    }
    match call(
        &mut math,
        "add",
        &[("a", Value::I64(i64::MAX)), ("b", Value::I64(1))],
    ) {
        Err(Error::PluginFailed { code, .. }) => assert_eq!(code, "overflow"),
        other => panic!("expected overflow, got {other:?}"),
    }
}

#[test]
fn counter_state_belongs_to_one_instance() {
    let counter = load(Artifact::Counter);
    let mut a = instance(&counter);
    let mut b = instance(&counter);
    for expected in 1..=3 {
        assert_eq!(call(&mut a, "next", &[]).unwrap(), Value::I64(expected));
    }
    assert_eq!(
        call(&mut b, "next", &[]).unwrap(),
        Value::I64(1),
        "a fresh instance starts at 1"
    );
    assert_eq!(call(&mut a, "next", &[]).unwrap(), Value::I64(4));
}

#[test]
fn counter_instances_are_built_from_task_config() {
    let counter = load(Artifact::Counter);
    let config = [("start".to_owned(), "10".to_owned())];
    let mut configured = spearlet::loader::PluginInstance::new(&counter, &config).unwrap();
    assert_eq!(call(&mut configured, "next", &[]).unwrap(), Value::I64(11));

    let bad = [("start".to_owned(), "ten".to_owned())];
    match spearlet::loader::PluginInstance::new(&counter, &bad) {
        Err(Error::InstanceCreation {
            plugin,
            code,
            message,
        }) => {
            assert_eq!(plugin, "counter");
            assert_eq!(code, "invalid_argument");
            assert!(message.contains("start"), "{message}");
        }
        other => panic!("expected InstanceCreation, got {other:?}"),
    }
}

#[test]
fn stream_emits_chunks_in_order() {
    let mut stream = instance(&load(Artifact::Stream));
    let sink = Collect::default();
    let cancelled = AtomicBool::new(false);
    let out = call_with(
        &mut stream,
        "count",
        &[("n", Value::I64(5))],
        &cancelled,
        None,
        &sink,
    );
    assert_eq!(out.unwrap(), Value::Unit);
    let chunks = sink.chunks.into_inner().unwrap();
    assert_eq!(chunks, (0..5).map(Value::I64).collect::<Vec<_>>());
}

#[test]
fn stream_stops_when_the_consumer_goes_away() {
    let mut stream = instance(&load(Artifact::Stream));
    let sink = Collect {
        capacity: Some(3),
        ..Collect::default()
    };
    let cancelled = AtomicBool::new(false);
    let out = call_with(
        &mut stream,
        "count",
        &[("n", Value::I64(1000))],
        &cancelled,
        None,
        &sink,
    );
    match out {
        Err(Error::PluginFailed { code, .. }) => assert_eq!(code, "consumer_gone"),
        other => panic!("expected consumer_gone, got {other:?}"),
    }
    assert_eq!(sink.chunks.into_inner().unwrap().len(), 3);
}

#[test]
fn stream_stops_when_cancelled() {
    let mut stream = instance(&load(Artifact::Stream));
    let sink = Collect::default();
    let cancelled = AtomicBool::new(true);
    let out = call_with(
        &mut stream,
        "count",
        &[("n", Value::I64(10))],
        &cancelled,
        None,
        &sink,
    );
    match out {
        Err(Error::PluginFailed { code, .. }) => assert_eq!(code, "cancelled"),
        other => panic!("expected cancelled, got {other:?}"),
    }
    assert!(sink.chunks.into_inner().unwrap().is_empty());
}

#[test]
fn sleepy_sleeps_logs_and_honours_cancellation_and_deadlines() {
    let mut sleepy = instance(&load(Artifact::Sleepy));
    let sink = Collect::default();
    let running = AtomicBool::new(false);
    let out = call_with(
        &mut sleepy,
        "sleep",
        &[("ms", Value::I64(20))],
        &running,
        None,
        &sink,
    );
    assert_eq!(out.unwrap(), Value::String("slept 20 ms".into()));
    assert_eq!(
        sink.logs.lock().unwrap().as_slice(),
        &[(LogLevel::Info, "sleeping 20 ms".to_owned())]
    );

    // A raised flag stops a sleep that would otherwise take an hour.
    let cancelled = AtomicBool::new(true);
    let out = call_with(
        &mut sleepy,
        "sleep",
        &[("ms", Value::I64(3_600_000))],
        &cancelled,
        None,
        &sink,
    );
    assert!(
        matches!(out, Err(Error::PluginFailed { ref code, .. }) if code == "cancelled"),
        "{out:?}"
    );

    // So does a deadline that has passed.
    let past = SystemTime::now() - Duration::from_secs(1);
    let out = call_with(
        &mut sleepy,
        "sleep",
        &[("ms", Value::I64(3_600_000))],
        &running,
        Some(past),
        &sink,
    );
    assert!(
        matches!(out, Err(Error::PluginFailed { ref code, .. }) if code == "cancelled"),
        "{out:?}"
    );
}

#[test]
fn a_panic_is_an_error_and_the_next_call_on_a_fresh_instance_works() {
    let faulty = load(Artifact::Faulty);
    let mut broken = instance(&faulty);
    match call(&mut broken, "panic", &[]) {
        Err(Error::PluginPanicked { function, message }) => {
            assert_eq!(function, "panic");
            assert!(message.contains("panicked on purpose"), "{message}");
        }
        other => panic!("expected PluginPanicked, got {other:?}"),
    }
    assert!(
        broken.is_poisoned(),
        "a panicked instance must not be reused"
    );
    drop(broken);

    let mut fresh = instance(&faulty);
    assert!(!fresh.is_poisoned());
    let ok = call(&mut fresh, "flaky", &[("fail_times", Value::I64(0))]);
    assert_eq!(
        ok.unwrap(),
        Value::String("succeeded after 0 failures".into())
    );
}

/// Issue #25: an error a function returns with code `panic` is its own
/// failure, told from a panic by the outcome's type, not by the code: it
/// is reported with that code and the instance stays in service.
#[test]
fn an_error_with_code_panic_is_a_failure_and_keeps_its_instance() {
    let faulty = load(Artifact::Faulty);
    let mut instance = instance(&faulty);
    for _ in 0..2 {
        match call(&mut instance, "fake_panic", &[]) {
            Err(Error::PluginFailed {
                function,
                code,
                message,
                retriable,
            }) => {
                assert_eq!(function, "fake_panic");
                assert_eq!(code, "panic");
                assert_eq!(message, "an error that only calls itself a panic");
                assert!(!retriable);
            }
            other => panic!("expected PluginFailed, got {other:?}"),
        }
        assert!(!instance.is_poisoned(), "an error never poisons");
    }
    // A real panic still does.
    assert!(matches!(
        call(&mut instance, "panic", &[]),
        Err(Error::PluginPanicked { .. })
    ));
    assert!(instance.is_poisoned());
}

#[test]
fn flaky_fails_retriably_then_succeeds_on_the_same_instance() {
    let mut faulty = instance(&load(Artifact::Faulty));
    for attempt in 1..=2 {
        match call(&mut faulty, "flaky", &[("fail_times", Value::I64(2))]) {
            Err(Error::PluginFailed {
                code,
                retriable,
                message,
                ..
            }) => {
                assert_eq!(code, "flaky");
                assert!(retriable, "flaky's failures are retriable");
                assert_eq!(message, format!("failure {attempt} of 2"));
            }
            other => panic!("attempt {attempt}: expected a retriable failure, got {other:?}"),
        }
    }
    let ok = call(&mut faulty, "flaky", &[("fail_times", Value::I64(2))]);
    assert_eq!(
        ok.unwrap(),
        Value::String("succeeded after 2 failures".into())
    );
}
