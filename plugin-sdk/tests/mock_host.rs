//! Everything the host hands a call reaches the function, through the same
//! FFI context a real host builds.

use std::time::{Duration, SystemTime};

use spear_plugin_sdk::prelude::*;
use spear_plugin_sdk::testing::MockCall;

/// Reports what it sees of the call.
#[function]
fn describe(ctx: &Context, tag: Option<String>) -> String {
    format!(
        "{} env={:?} header={:?} tag={:?} params={}",
        ctx.execution_id(),
        ctx.env("REGION"),
        ctx.header("x-trace"),
        tag,
        ctx.params().count()
    )
}

#[test]
fn execution_id_env_headers_and_params_reach_the_function() {
    let out = MockCall::new()
        .execution_id("exec-42")
        .env("REGION", "eu")
        .header("X-Trace", "t-1")
        .param("tag", "blue")
        .call::<describe>(&mut ());
    assert_eq!(
        out.unwrap(),
        Value::String(
            r#"exec-42 env=Some("eu") header=Some("t-1") tag=Some("blue") params=1"#.into()
        )
    );
    let bare = MockCall::new().call::<describe>(&mut ()).unwrap();
    assert_eq!(
        bare,
        Value::String("mock-execution env=None header=None tag=None params=0".into())
    );
}

/// Emits until stopped.
#[function(stream)]
fn ticks(ctx: &Context, n: i64) -> Result<(), PluginError> {
    ctx.info("starting");
    for i in 0..n {
        if ctx.should_stop() {
            return Err(PluginError::cancelled("stopped"));
        }
        ctx.emit(i)?;
    }
    Ok(())
}

/// Emits `0..n`, declaring its chunks' type.
#[function(stream(i64))]
fn typed_ticks(ctx: &Context, n: i64) -> Result<(), PluginError> {
    for i in 0..n {
        ctx.emit(i)?;
    }
    Ok(())
}

/// Emits the letters of `word`, then returns how many it sent.
#[function(stream(String))]
fn letters(ctx: &Context, word: &str) -> Result<i64, PluginError> {
    for c in word.chars() {
        ctx.emit(c.to_string())?;
    }
    Ok(word.chars().count() as i64)
}

#[test]
fn a_declared_chunk_type_is_published_in_the_signature() {
    use spear_plugin_sdk::__private::FunctionDef;
    use spear_plugin_sdk::ffi::FfiFunctionKind;
    let t = <typed_ticks as FunctionDef>::DESCRIPTOR;
    assert_eq!(t.kind, FfiFunctionKind::Stream);
    assert_eq!(t.signature.as_str(), "(n: i64) -> Stream<i64>");
    let l = <letters as FunctionDef>::DESCRIPTOR;
    assert_eq!(l.kind, FfiFunctionKind::Stream);
    assert_eq!(l.signature.as_str(), "(word: &str) -> Stream<String, i64>");

    // Declaring the type changes nothing about the call itself.
    let call = MockCall::new().param("n", 3);
    assert_eq!(call.call::<typed_ticks>(&mut ()), Ok(Value::Unit));
    assert_eq!(call.chunks(), (0..3).map(Value::I64).collect::<Vec<_>>());
    let call = MockCall::new().param("word", "ab");
    assert_eq!(call.call::<letters>(&mut ()), Ok(Value::I64(2)));
    assert_eq!(call.chunks().len(), 2);
}

#[test]
fn stream_chunks_logs_and_a_departed_consumer() {
    let call = MockCall::new().param("n", 4);
    assert_eq!(call.call::<ticks>(&mut ()), Ok(Value::Unit));
    assert_eq!(call.chunks(), (0..4).map(Value::I64).collect::<Vec<_>>());
    assert_eq!(call.logs(), [(LogLevel::Info, "starting".to_owned())]);

    let limited = MockCall::new().param("n", 10).consumer_capacity(2);
    let err = limited.call::<ticks>(&mut ()).unwrap_err();
    assert_eq!(err.code, PluginError::CONSUMER_GONE);
    assert_eq!(limited.chunks().len(), 2);
}

#[test]
fn cancellation_and_deadlines_are_visible() {
    let err = MockCall::new()
        .param("n", 3)
        .cancelled()
        .call::<ticks>(&mut ())
        .unwrap_err();
    assert_eq!(err.code, PluginError::CANCELLED);

    let past = SystemTime::now() - Duration::from_secs(1);
    let err = MockCall::new()
        .param("n", 3)
        .deadline(past)
        .call::<ticks>(&mut ())
        .unwrap_err();
    assert_eq!(err.code, PluginError::CANCELLED);
}

struct Tally(i64);

/// Adds to the instance's tally.
#[function]
fn bump(tally: &mut Tally, by: i64) -> i64 {
    tally.0 += by;
    tally.0
}

#[test]
fn instance_state_is_the_one_passed_in() {
    let mut tally = Tally(10);
    assert_eq!(
        MockCall::new().param("by", 5).call::<bump>(&mut tally),
        Ok(Value::I64(15))
    );
    assert_eq!(tally.0, 15);
    let err = MockCall::new()
        .param("by", 1)
        .call::<bump>(&mut ())
        .unwrap_err();
    assert_eq!(err.code, "instance_type");
}

/// Fails through `?` on an ordinary error.
#[function]
fn parse(text: &str) -> Result<i64, PluginError> {
    Ok(text.parse::<i64>()?)
}

#[test]
fn std_errors_convert_with_question_mark() {
    assert_eq!(
        MockCall::new().param("text", "12").call::<parse>(&mut ()),
        Ok(Value::I64(12))
    );
    let err = MockCall::new()
        .param("text", "x")
        .call::<parse>(&mut ())
        .unwrap_err();
    assert_eq!(err.code, "error");
    assert!(err.message.contains("invalid digit"), "{}", err.message);
}

/// Published under another name, with an explicit description.
#[function(name = "renamed", description = "explicit")]
fn original() {}

#[test]
fn descriptors_carry_name_kind_description_and_signature() {
    use spear_plugin_sdk::__private::FunctionDef;
    use spear_plugin_sdk::ffi::FfiFunctionKind;
    let d = <original as FunctionDef>::DESCRIPTOR;
    assert_eq!(
        (
            d.name.as_str(),
            d.description.as_str(),
            d.signature.as_str()
        ),
        ("renamed", "explicit", "()")
    );
    let t = <ticks as FunctionDef>::DESCRIPTOR;
    assert_eq!(t.kind, FfiFunctionKind::Stream);
    assert_eq!(t.signature.as_str(), "(n: i64) -> ()");
    assert_eq!(t.description.as_str(), "Emits until stopped.");
    let d = <describe as FunctionDef>::DESCRIPTOR;
    assert_eq!(d.signature.as_str(), "(tag: Option<String>) -> String");
}

/// Takes `key` and any other parameters the caller sends.
#[function(extra_params)]
fn tagged(ctx: &Context, key: &str) -> String {
    let others: Vec<&str> = ctx
        .params()
        .map(|(name, _)| name)
        .filter(|name| *name != "key")
        .collect();
    format!("{key}: {}", others.join(","))
}

/// `extra_params` is published as a trailing `..`, the one thing the host
/// reads to let undeclared names through; the function sees them all.
#[test]
fn extra_params_end_the_signature_with_a_rest() {
    use spear_plugin_sdk::__private::FunctionDef;
    let d = <tagged as FunctionDef>::DESCRIPTOR;
    assert_eq!(d.signature.as_str(), "(key: &str, ..) -> String");
    let out = MockCall::new()
        .param("key", "k")
        .param("colour", "blue")
        .call::<tagged>(&mut ());
    assert_eq!(out, Ok(Value::String("k: colour".into())));
}

mod coded {
    use spear_plugin_sdk::prelude::*;
    use spear_plugin_sdk::testing::MockCall;

    #[derive(Debug)]
    enum LookupError {
        NotFound(String),
        Backend,
    }

    impl std::fmt::Display for LookupError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                LookupError::NotFound(key) => write!(f, "no entry `{key}`"),
                LookupError::Backend => f.write_str("backend unavailable"),
            }
        }
    }

    impl std::error::Error for LookupError {}

    impl ErrorCode for LookupError {
        fn code(&self) -> &str {
            match self {
                LookupError::NotFound(_) => "not_found",
                LookupError::Backend => "backend_unavailable",
            }
        }

        fn retriable(&self) -> bool {
            matches!(self, LookupError::Backend)
        }
    }

    /// Looks a key up.
    #[function]
    fn lookup(key: &str) -> Result<String, LookupError> {
        match key {
            "down" => Err(LookupError::Backend),
            "ok" => Ok("found".to_owned()),
            other => Err(LookupError::NotFound(other.to_owned())),
        }
    }

    #[derive(Debug)]
    struct Plain;

    impl std::fmt::Display for Plain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("plain failure")
        }
    }

    impl std::error::Error for Plain {}

    /// Fails with an error type that has no codes.
    #[function]
    fn plain() -> Result<i64, Plain> {
        Err(Plain)
    }

    #[test]
    fn an_error_type_with_codes_reports_them() {
        let missing = MockCall::new()
            .param("key", "k")
            .call::<lookup>(&mut ())
            .unwrap_err();
        assert_eq!(
            (missing.code.as_str(), missing.retriable),
            ("not_found", false)
        );
        assert_eq!(missing.message, "no entry `k`");
        let down = MockCall::new()
            .param("key", "down")
            .call::<lookup>(&mut ())
            .unwrap_err();
        assert_eq!(
            (down.code.as_str(), down.retriable),
            ("backend_unavailable", true)
        );
        assert_eq!(
            MockCall::new().param("key", "ok").call::<lookup>(&mut ()),
            Ok(Value::String("found".into()))
        );
        // Any other error type still converts, with the generic code.
        let plain = MockCall::new().call::<plain>(&mut ()).unwrap_err();
        assert_eq!(plain.message, "plain failure");
        assert_ne!(plain.code, "");
    }
}

/// Panics on purpose.
#[function]
fn explode(why: &str) -> i64 {
    panic!("exploded: {why}")
}

#[test]
fn a_panic_ends_as_it_would_under_a_host() {
    let out = MockCall::new()
        .param("why", "on purpose")
        .call::<explode>(&mut ());
    let err = out.expect_err("a panic is an error, not an unwinding test");
    assert_eq!(err.code, PluginError::PANIC);
    assert!(
        err.message.contains("exploded: on purpose"),
        "{}",
        err.message
    );
}

/// Reads the trace the host hands it.
#[function]
fn trace(ctx: &Context) -> String {
    ctx.trace_id().unwrap_or("-").to_owned()
}

#[test]
fn the_trace_id_comes_from_the_traceparent_header() {
    let out = MockCall::new()
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .call::<trace>(&mut ());
    assert_eq!(
        out,
        Ok(Value::String("4bf92f3577b34da6a3ce929d0e0e4736".into()))
    );
    assert_eq!(
        MockCall::new().call::<trace>(&mut ()),
        Ok(Value::String("-".into()))
    );
}

/// The README's stateful and streaming examples, as written there.
mod readme {
    use spear_plugin_sdk::prelude::*;
    use spear_plugin_sdk::testing::MockCall;

    struct Greetings(i64);

    impl Instance for Greetings {
        fn new(config: &Config) -> Result<Self, PluginError> {
            Ok(Greetings(config.parse("start")?.unwrap_or(0)))
        }
    }

    #[function]
    fn served(count: &mut Greetings) -> i64 {
        count.0 += 1;
        count.0
    }

    #[function(stream)]
    fn chorus(ctx: &Context, n: i64) -> Result<(), PluginError> {
        for i in 0..n {
            if ctx.should_stop() {
                return Err(PluginError::cancelled("stopped early"));
            }
            ctx.emit(format!("hello #{i}"))?;
        }
        Ok(())
    }

    #[test]
    fn stateful_and_streaming_functions_test_as_documented() {
        let mut state = Greetings(41);
        assert_eq!(
            MockCall::new().call::<served>(&mut state),
            Ok(Value::I64(42))
        );
        let call = MockCall::new().param("n", 3);
        assert_eq!(call.call::<chorus>(&mut ()), Ok(Value::Unit));
        assert_eq!(call.chunks().len(), 3);
        let impatient = MockCall::new().param("n", 10).consumer_capacity(2);
        assert!(impatient.call::<chorus>(&mut ()).is_err());
    }
}

/// Wider integers and optional results, as a plugin author writes them.
mod wide_results {
    use spear_plugin_sdk::prelude::*;
    use spear_plugin_sdk::testing::MockCall;

    #[function]
    fn length(text: &str) -> usize {
        text.len()
    }

    #[function]
    fn biggest() -> u64 {
        u64::MAX
    }

    #[function]
    fn find(items: &str, wanted: &str) -> Option<u32> {
        items
            .split(',')
            .position(|i| i == wanted)
            .and_then(|p| u32::try_from(p).ok())
    }

    #[function]
    fn checked(n: u8) -> Result<u64, PluginError> {
        if n == 0 {
            return Err(PluginError::invalid_argument("n must not be 0"));
        }
        Ok(u64::from(n) * 2)
    }

    #[test]
    fn they_convert_or_say_why_not() {
        assert_eq!(
            MockCall::new().param("text", "abc").call::<length>(&mut ()),
            Ok(Value::I64(3))
        );
        assert_eq!(
            MockCall::new().call::<biggest>(&mut ()).unwrap_err().code,
            "out_of_range"
        );
        let find_in = |wanted: &str| {
            MockCall::new()
                .param("items", "a,b,c")
                .param("wanted", wanted)
                .call::<find>(&mut ())
        };
        assert_eq!(find_in("c"), Ok(Value::I64(2)));
        assert_eq!(find_in("z"), Ok(Value::Unit), "None is no value");
        assert_eq!(
            MockCall::new().param("n", 21).call::<checked>(&mut ()),
            Ok(Value::I64(42))
        );
        assert_eq!(
            MockCall::new()
                .param("n", 300)
                .call::<checked>(&mut ())
                .unwrap_err()
                .code,
            "invalid_argument",
            "parameters are range-checked too"
        );
    }
}

/// Records in and out as JSON (feature `json`).
mod json_records {
    use spear_plugin_sdk::prelude::*;
    use spear_plugin_sdk::testing::MockCall;
    use spear_plugin_sdk::Json;

    #[derive(serde::Deserialize, serde::Serialize)]
    struct Order {
        id: u32,
        items: Vec<String>,
    }

    #[function]
    fn sorted(order: Json<Order>) -> Json<Order> {
        let Json(mut order) = order;
        order.items.sort();
        Json(order)
    }

    #[test]
    fn records_come_in_and_go_out_as_json() {
        let out = MockCall::new()
            .param("order", r#"{"id": 7, "items": ["b", "a"]}"#)
            .call::<sorted>(&mut ());
        assert_eq!(
            out,
            Ok(Value::String(r#"{"id":7,"items":["a","b"]}"#.into()))
        );
        let bad = MockCall::new()
            .param("order", r#"{"id": "seven"}"#)
            .call::<sorted>(&mut ())
            .unwrap_err();
        assert_eq!(bad.code, "invalid_argument");
        assert!(bad.message.contains("parameter `order`"), "{}", bad.message);
    }
}
