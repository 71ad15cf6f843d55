//! `#[repr(C)]` types that cross the plugin boundary, and their conversions
//! to and from the SDK's plain Rust types.

use std::ffi::c_void;
use std::sync::atomic::AtomicBool;

use abi_stable::std_types::{RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;

use crate::{Context, LogLevel, PluginError, Value, ValueRef};

/// A value owned by whoever receives it (plugin outputs, stream chunks).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum FfiValue {
    /// No value.
    Unit,
    /// UTF-8 text.
    Str(RString),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 64-bit float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Raw bytes.
    Bytes(RVec<u8>),
    /// An encoded value the SDK does not interpret (e.g. a protobuf message).
    Raw {
        /// Names the encoding, as a `google.protobuf.Any` type URL does.
        type_url: RString,
        /// The encoded bytes.
        bytes: RVec<u8>,
    },
}

/// A value borrowed from the host for the duration of one call (parameters).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub enum FfiValueRef<'a> {
    /// No value.
    Unit,
    /// UTF-8 text.
    Str(RStr<'a>),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 64-bit float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Raw bytes.
    Bytes(RSlice<'a, u8>),
    /// An encoded value the SDK does not interpret.
    Raw {
        /// Names the encoding.
        type_url: RStr<'a>,
        /// The encoded bytes.
        bytes: RSlice<'a, u8>,
    },
}

/// A named parameter of a call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiParam<'a> {
    /// The parameter's name, as the client sent it.
    pub name: RStr<'a>,
    /// Its value.
    pub value: FfiValueRef<'a>,
}

/// A key/value pair (task config, environment, headers).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiKv<'a> {
    /// The key.
    pub key: RStr<'a>,
    /// The value.
    pub value: RStr<'a>,
}

/// An error reported by a plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiError {
    /// A short machine-readable code, e.g. `division_by_zero` or `panic`.
    pub code: RString,
    /// A human-readable explanation.
    pub message: RString,
    /// Whether trying again may succeed.
    pub retriable: bool,
}

/// How one call ended, as the plugin's panic barrier saw it (ABI 1.3).
///
/// The variant, not an error code, says whether the function returned an
/// error or panicked: a function may return any code it likes (`panic`
/// included), and only a panic the barrier caught may make the host
/// discard the instance. One enum, so a host tells the three apart with
/// the one match it needs anyway.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum FfiCallOutcome {
    /// The function returned this value.
    Returned(FfiValue),
    /// The function returned this error.
    Failed(FfiError),
    /// The function panicked; the panic's message.
    Panicked(RString),
}

/// Whether a function returns one value or emits a stream of chunks.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiFunctionKind {
    /// Returns a single value.
    Unary,
    /// Emits chunks through the call context's sink, then returns.
    Stream,
}

/// Severity of a plugin log line.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiLogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// A failure.
    Error,
}

/// One entry of a plugin's function table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiFunctionDesc {
    /// The name clients call the function by.
    pub name: RStr<'static>,
    /// Unary or stream.
    pub kind: FfiFunctionKind,
    /// What the function does (may be empty).
    pub description: RStr<'static>,
    /// Its parameters and output as written in Rust, e.g. `(a: i64, b: i64) -> i64`.
    pub signature: RStr<'static>,
}

/// How the host may run one function, index for index with the function
/// table (ABI 1.1; a 1.0 plugin has none, and every function reads as
/// `blocking: false`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FfiFunctionHints {
    /// Never run this function on the host's calling thread, however short
    /// its runs: it may block (I/O, locks) or sometimes run long.
    pub blocking: bool,
}

/// An opaque per-instance state pointer, created and destroyed by the plugin.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfiInstance(pub *mut c_void);

/// The host's receiver for stream chunks and log lines of one call.
///
/// `data` is opaque to the plugin and passed back unchanged to `emit` and `log`.
///
/// It is `Copy` and carries no lifetime, as a C struct would: nothing in the
/// type ties `data` to the call it was made for. The contract is the
/// host's — the sink stays valid until the call it came with returns — and
/// code that calls through it must hold on to it no longer (the SDK only
/// does so through a [`Context`](crate::Context), whose constructor is
/// `unsafe` for that reason).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiSink {
    /// The host's state for this call.
    pub data: *const c_void,
    /// Hands one chunk to the host; `false` means the consumer is gone.
    pub emit: unsafe extern "C" fn(data: *const c_void, chunk: FfiValue) -> bool,
    /// Records one log line for the execution.
    pub log: unsafe extern "C" fn(data: *const c_void, level: FfiLogLevel, line: RStr<'_>),
}

/// Everything a plugin learns about one call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiCallContext<'a> {
    /// The execution this call belongs to.
    pub execution_id: RStr<'a>,
    /// Named parameters, in the order the client sent them.
    pub params: RSlice<'a, FfiParam<'a>>,
    /// Environment variables for the call.
    pub environment: RSlice<'a, FfiKv<'a>>,
    /// Request headers.
    pub headers: RSlice<'a, FfiKv<'a>>,
    /// Deadline as nanoseconds since the Unix epoch; 0 means none.
    pub deadline_unix_nanos: u64,
    /// Raised by the host when the call should stop early.
    pub cancelled: &'a AtomicBool,
    /// Where stream chunks and log lines go.
    pub sink: FfiSink,
}

/// A call's context with the promise that its sink is live: the one way
/// the SDK calls through an [`FfiSink`].
///
/// Only [`LiveCall::new`] makes one, and its caller vouches for what the
/// type cannot check (the sink's `data` is the host's state for a call
/// still running); the methods that call through the sink are safe on
/// the strength of that promise. Not `#[repr(C)]`: it never crosses the
/// boundary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveCall<'a> {
    raw: &'a FfiCallContext<'a>,
}

impl<'a> LiveCall<'a> {
    /// Vouches for `raw`'s sink.
    ///
    /// # Safety
    ///
    /// `raw.sink` must be a sink whose `data` its `emit` and `log` accept,
    /// valid for as long as the result (or a copy of it) is used: the
    /// host's sink for a call still running, or one made for the purpose,
    /// as `MockCall` does.
    pub(crate) unsafe fn new(raw: &'a FfiCallContext<'a>) -> Self {
        LiveCall { raw }
    }

    /// The context as the host passed it.
    pub(crate) fn raw(self) -> &'a FfiCallContext<'a> {
        self.raw
    }

    /// Hands `chunk` to the host; `false` means the consumer is gone.
    pub(crate) fn emit(self, chunk: FfiValue) -> bool {
        let sink = self.raw.sink;
        // SAFETY: per `LiveCall::new`'s contract, `sink.data` is the
        // pointer these callbacks accept, valid while this `LiveCall` is
        // used; `chunk` is owned and handed over, as `emit` expects.
        unsafe { (sink.emit)(sink.data, chunk) }
    }

    /// Records one log line for the execution.
    pub(crate) fn log(self, level: FfiLogLevel, line: &str) {
        let sink = self.raw.sink;
        // SAFETY: as in `emit`, per `LiveCall::new`'s contract; `line` is
        // borrowed for the duration of the call only.
        unsafe { (sink.log)(sink.data, level, line.into()) }
    }
}

// `Context`'s constructor is written here rather than beside the rest of
// `Context`, so that the crate's unsafe code (an `unsafe fn` included)
// stays in `ffi`, the one module allowed it.
impl<'a> Context<'a> {
    /// Wraps the raw context the host passed in.
    ///
    /// # Safety
    ///
    /// `raw.sink` must be a sink whose `data` its `emit` and `log` accept,
    /// valid for as long as this context is used: the host's sink for a
    /// call still running (what the SDK's entry points receive), or one
    /// made for the purpose, as `MockCall` does. [`Context::emit`] and
    /// [`Context::log`] call through it.
    pub unsafe fn new(raw: &'a FfiCallContext<'a>) -> Self {
        // SAFETY: the caller makes `LiveCall::new`'s promise, the same as
        // this function's, for as long as the context is used.
        Context::from_call(unsafe { LiveCall::new(raw) })
    }
}

impl From<Value> for FfiValue {
    fn from(value: Value) -> Self {
        match value {
            Value::Unit => FfiValue::Unit,
            Value::String(s) => FfiValue::Str(s.into()),
            Value::I64(v) => FfiValue::I64(v),
            Value::F64(v) => FfiValue::F64(v),
            Value::Bool(v) => FfiValue::Bool(v),
            Value::Bytes(b) => FfiValue::Bytes(b.into()),
            Value::Raw { type_url, bytes } => FfiValue::Raw {
                type_url: type_url.into(),
                bytes: bytes.into(),
            },
        }
    }
}

impl From<FfiValue> for Value {
    fn from(value: FfiValue) -> Self {
        match value {
            FfiValue::Unit => Value::Unit,
            FfiValue::Str(s) => Value::String(s.into_string()),
            FfiValue::I64(v) => Value::I64(v),
            FfiValue::F64(v) => Value::F64(v),
            FfiValue::Bool(v) => Value::Bool(v),
            FfiValue::Bytes(b) => Value::Bytes(b.into_vec()),
            FfiValue::Raw { type_url, bytes } => Value::Raw {
                type_url: type_url.into_string(),
                bytes: bytes.into_vec(),
            },
        }
    }
}

impl<'a> From<FfiValueRef<'a>> for ValueRef<'a> {
    fn from(value: FfiValueRef<'a>) -> Self {
        match value {
            FfiValueRef::Unit => ValueRef::Unit,
            FfiValueRef::Str(s) => ValueRef::String(s.as_str()),
            FfiValueRef::I64(v) => ValueRef::I64(v),
            FfiValueRef::F64(v) => ValueRef::F64(v),
            FfiValueRef::Bool(v) => ValueRef::Bool(v),
            FfiValueRef::Bytes(b) => ValueRef::Bytes(b.as_slice()),
            FfiValueRef::Raw { type_url, bytes } => ValueRef::Raw {
                type_url: type_url.as_str(),
                bytes: bytes.as_slice(),
            },
        }
    }
}

impl<'a> From<ValueRef<'a>> for FfiValueRef<'a> {
    fn from(value: ValueRef<'a>) -> Self {
        match value {
            ValueRef::Unit => FfiValueRef::Unit,
            ValueRef::String(s) => FfiValueRef::Str(s.into()),
            ValueRef::I64(v) => FfiValueRef::I64(v),
            ValueRef::F64(v) => FfiValueRef::F64(v),
            ValueRef::Bool(v) => FfiValueRef::Bool(v),
            ValueRef::Bytes(b) => FfiValueRef::Bytes(b.into()),
            ValueRef::Raw { type_url, bytes } => FfiValueRef::Raw {
                type_url: type_url.into(),
                bytes: bytes.into(),
            },
        }
    }
}

impl From<PluginError> for FfiError {
    fn from(err: PluginError) -> Self {
        FfiError {
            code: err.code.into(),
            message: err.message.into(),
            retriable: err.retriable,
        }
    }
}

impl From<FfiError> for PluginError {
    fn from(err: FfiError) -> Self {
        PluginError {
            code: err.code.into_string(),
            message: err.message.into_string(),
            retriable: err.retriable,
        }
    }
}

impl From<FfiLogLevel> for LogLevel {
    fn from(level: FfiLogLevel) -> Self {
        match level {
            FfiLogLevel::Trace => LogLevel::Trace,
            FfiLogLevel::Debug => LogLevel::Debug,
            FfiLogLevel::Info => LogLevel::Info,
            FfiLogLevel::Warn => LogLevel::Warn,
            FfiLogLevel::Error => LogLevel::Error,
        }
    }
}

impl From<LogLevel> for FfiLogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => FfiLogLevel::Trace,
            LogLevel::Debug => FfiLogLevel::Debug,
            LogLevel::Info => FfiLogLevel::Info,
            LogLevel::Warn => FfiLogLevel::Warn,
            LogLevel::Error => FfiLogLevel::Error,
        }
    }
}
