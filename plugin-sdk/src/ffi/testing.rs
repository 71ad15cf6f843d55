//! A mock host for unit-testing plugin functions without building a library.
//!
//! ```
//! use spear_plugin_sdk::prelude::*;
//! use spear_plugin_sdk::testing::MockCall;
//!
//! #[function]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! let out = MockCall::new().param("a", 2).param("b", 3).call::<add>(&mut ());
//! assert_eq!(out, Ok(Value::I64(5)));
//! ```

use std::any::Any;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use abi_stable::std_types::{RSlice, RStr};

use super::types::{FfiCallContext, FfiKv, FfiLogLevel, FfiParam, FfiSink, FfiValue};
use crate::registry::FunctionDef;
use crate::{Context, IntoValue, LogLevel, PluginError, Value};

/// One call as a host would make it, with everything the function emits
/// or logs recorded.
#[derive(Debug, Default)]
pub struct MockCall {
    execution_id: String,
    params: Vec<(String, Value)>,
    environment: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    deadline: Option<SystemTime>,
    cancelled: AtomicBool,
    consumer_capacity: Option<usize>,
    recorded: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    chunks: Vec<Value>,
    logs: Vec<(LogLevel, String)>,
}

impl MockCall {
    /// A call with execution id `mock-execution` and nothing else set.
    pub fn new() -> Self {
        MockCall {
            execution_id: "mock-execution".to_owned(),
            ..MockCall::default()
        }
    }

    /// Adds a parameter.
    pub fn param(mut self, name: &str, value: impl IntoValue) -> Self {
        self.params.push((name.to_owned(), value.into_value()));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the execution id.
    pub fn execution_id(mut self, id: &str) -> Self {
        self.execution_id = id.to_owned();
        self
    }

    /// Sets the deadline.
    pub fn deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Raises the cancellation flag before the call.
    pub fn cancelled(self) -> Self {
        self.cancelled.store(true, Ordering::Release);
        self
    }

    /// Accepts only this many stream chunks; later `emit`s report the
    /// consumer gone.
    pub fn consumer_capacity(mut self, chunks: usize) -> Self {
        self.consumer_capacity = Some(chunks);
        self
    }

    /// Calls function `F` (the type `#[function]` generated) on `state` —
    /// `&mut ()` for a plugin without instance state — behind the same
    /// panic barrier a host call goes through: a panic comes back as an
    /// error with code `panic` and the panic's message.
    ///
    /// # Errors
    ///
    /// Whatever the function returns, a parameter conversion error, or the
    /// `panic` error.
    pub fn call<F: FunctionDef>(&self, state: &mut dyn Any) -> Result<Value, PluginError> {
        let params: Vec<FfiParam<'_>> = self
            .params
            .iter()
            .map(|(name, value)| FfiParam {
                name: name.as_str().into(),
                value: value.as_ref().into(),
            })
            .collect();
        let environment = kv(&self.environment);
        let headers = kv(&self.headers);
        let raw = FfiCallContext {
            execution_id: self.execution_id.as_str().into(),
            params: RSlice::from_slice(&params),
            environment: RSlice::from_slice(&environment),
            headers: RSlice::from_slice(&headers),
            deadline_unix_nanos: self.deadline.map_or(0, |d| {
                d.duration_since(UNIX_EPOCH).map_or(1, |d| {
                    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
                })
            }),
            cancelled: &self.cancelled,
            sink: FfiSink {
                data: (self as *const MockCall).cast(),
                emit: emit_fn_wrapper,
                log: log_fn_wrapper,
            },
        };
        // SAFETY: the sink's data is this `MockCall`, which outlives `raw`
        // and the context made from it; its callbacks take exactly that.
        let ctx = unsafe { Context::new(&raw) };
        super::export::barrier(|| F::call(state, &ctx))
    }

    /// The chunks the function emitted.
    pub fn chunks(&self) -> Vec<Value> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .chunks
            .clone()
    }

    /// The lines the function logged.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .logs
            .clone()
    }
}

fn kv(pairs: &[(String, String)]) -> Vec<FfiKv<'_>> {
    pairs
        .iter()
        .map(|(k, v)| FfiKv {
            key: k.as_str().into(),
            value: v.as_str().into(),
        })
        .collect()
}

/// # Safety
///
/// `data` must point to the `MockCall` whose `call` is running.
unsafe extern "C" fn emit_fn_wrapper(data: *const c_void, chunk: FfiValue) -> bool {
    // SAFETY: `MockCall::call` passes itself as `data` and outlives the call.
    let mock = unsafe { &*data.cast::<MockCall>() };
    let mut recorded = mock.recorded.lock().unwrap_or_else(|e| e.into_inner());
    if mock
        .consumer_capacity
        .is_some_and(|c| recorded.chunks.len() >= c)
    {
        return false;
    }
    recorded.chunks.push(chunk.into());
    true
}

/// # Safety
///
/// As for [`emit_fn_wrapper`].
unsafe extern "C" fn log_fn_wrapper(data: *const c_void, level: FfiLogLevel, line: RStr<'_>) {
    // SAFETY: `MockCall::call` passes itself as `data` and outlives the call.
    let mock = unsafe { &*data.cast::<MockCall>() };
    let mut recorded = mock.recorded.lock().unwrap_or_else(|e| e.into_inner());
    recorded.logs.push((level.into(), line.as_str().to_owned()));
}
