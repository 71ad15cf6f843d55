//! The host's half of a call: what it hands the plugin, and where the
//! plugin's stream chunks and log lines go.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;
use spear_plugin_sdk::ffi::abi::{RSlice, RStr};
use spear_plugin_sdk::ffi::{FfiKv, FfiLogLevel, FfiSink, FfiValue};
use spear_plugin_sdk::{LogLevel, Value};

/// Receives what a function emits while it runs.
///
/// Called on the thread running the plugin; implementations may block (that
/// is how a slow stream consumer applies backpressure).
pub trait CallSink: Sync {
    /// Takes one stream chunk; `false` tells the plugin nobody is listening.
    fn emit(&self, chunk: Value) -> bool;
    /// Takes one log line of the execution.
    fn log(&self, level: LogLevel, line: &str);
}

/// A sink for calls nobody streams from: chunks are refused, logs dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl CallSink for NullSink {
    fn emit(&self, _chunk: Value) -> bool {
        false
    }

    fn log(&self, _level: LogLevel, _line: &str) {}
}

/// Everything the host hands a function for one call.
#[derive(Clone, Copy)]
pub struct CallRequest<'a> {
    /// The execution this call belongs to.
    pub execution_id: &'a str,
    /// Named parameters.
    pub params: &'a [(String, Value)],
    /// Environment variables.
    pub environment: &'a [(String, String)],
    /// Request headers.
    pub headers: &'a [(String, String)],
    /// The call's W3C `traceparent`, handed to the plugin as one more
    /// header of that name (built inline per call, so kept apart from the
    /// owned `headers`).
    pub traceparent: Option<&'a str>,
    /// When the call must be done by.
    pub deadline: Option<SystemTime>,
    /// Raised to ask the plugin to stop.
    pub cancelled: &'a AtomicBool,
    /// Where chunks and log lines go.
    pub sink: &'a dyn CallSink,
}

impl std::fmt::Debug for CallRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("execution_id", &self.execution_id)
            .field("params", &self.params)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<'a> CallRequest<'a> {
    /// A request with no parameters, environment, headers or deadline, whose
    /// chunks and logs are dropped.
    pub fn new(execution_id: &'a str, cancelled: &'a AtomicBool) -> Self {
        CallRequest {
            execution_id,
            params: &[],
            environment: &[],
            headers: &[],
            traceparent: None,
            deadline: None,
            cancelled,
            sink: &NullSink,
        }
    }

    /// The same request with these parameters.
    pub fn with_params(self, params: &'a [(String, Value)]) -> Self {
        CallRequest { params, ..self }
    }
}

pub(super) fn kv_pairs<'a>(pairs: &'a [(String, String)]) -> SmallVec<[FfiKv<'a>; 8]> {
    pairs
        .iter()
        .map(|(k, v)| FfiKv {
            key: k.as_str().into(),
            value: v.as_str().into(),
        })
        .collect()
}

/// `pairs`, then `extra`, as an FFI slice, converted into `storage` (on
/// the stack for a few) only when there is any.
pub(super) fn kv_slice<'s, 'a: 's>(
    pairs: &'a [(String, String)],
    extra: Option<(&'a str, &'a str)>,
    storage: &'s mut SmallVec<[FfiKv<'a>; 4]>,
) -> RSlice<'s, FfiKv<'a>> {
    if pairs.is_empty() && extra.is_none() {
        return RSlice::EMPTY;
    }
    if let Some((key, value)) = extra {
        storage.reserve(pairs.len() + 1);
        storage.extend(pairs.iter().map(|(k, v)| FfiKv {
            key: k.as_str().into(),
            value: v.as_str().into(),
        }));
        storage.push(FfiKv {
            key: key.into(),
            value: value.into(),
        });
        return RSlice::from_slice(storage);
    }
    storage.extend(pairs.iter().map(|(k, v)| FfiKv {
        key: k.as_str().into(),
        value: v.as_str().into(),
    }));
    RSlice::from_slice(storage)
}

pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    // A deadline before the epoch has passed already: 1 ns is "expired", and
    // 0 would mean "none".
    t.duration_since(UNIX_EPOCH).map_or(1, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

/// The FFI sink for one call; `sink` must outlive the call.
pub(super) fn sink_for(sink: &&dyn CallSink) -> FfiSink {
    FfiSink {
        data: (sink as *const &dyn CallSink).cast::<c_void>(),
        emit: emit_fn_wrapper,
        log: log_fn_wrapper,
    }
}

/// # Safety
///
/// `data` must be the pointer [`sink_for`] made, during the call it was made for.
unsafe extern "C" fn emit_fn_wrapper(data: *const c_void, chunk: FfiValue) -> bool {
    // SAFETY: per this function's contract, `data` points to a live `&dyn CallSink`.
    let sink = unsafe { &*data.cast::<&dyn CallSink>() };
    // A panicking sink must not unwind into the plugin: report "consumer gone".
    catch_unwind(AssertUnwindSafe(|| sink.emit(chunk.into()))).unwrap_or(false)
}

/// # Safety
///
/// As for [`emit_fn_wrapper`].
unsafe extern "C" fn log_fn_wrapper(data: *const c_void, level: FfiLogLevel, line: RStr<'_>) {
    // SAFETY: per this function's contract, `data` points to a live `&dyn CallSink`.
    let sink = unsafe { &*data.cast::<&dyn CallSink>() };
    let _ = catch_unwind(AssertUnwindSafe(|| sink.log(level.into(), line.as_str())));
}
