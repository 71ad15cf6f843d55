//! What a function sees of the call it is serving.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ffi::{FfiCallContext, FfiKv, LiveCall};
use crate::{IntoValue, PluginError, ValueRef};

/// Severity of a log line written through [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
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

/// The call a function is serving: its parameters, environment, deadline,
/// cancellation flag, stream sink and logger.
///
/// Take it as a `&Context` parameter of a `#[function]` when you need it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    call: LiveCall<'a>,
}

// `Context::new`, the public constructor, is `unsafe` and so lives in
// `ffi` (`ffi/types.rs`), the one module of this crate allowed unsafe code.
impl<'a> Context<'a> {
    /// Wraps a call whose sink is already vouched for.
    pub(crate) fn from_call(call: LiveCall<'a>) -> Self {
        Context { call }
    }

    /// The context as the host passed it.
    fn raw(&self) -> &'a FfiCallContext<'a> {
        self.call.raw()
    }

    /// The id of the execution this call belongs to.
    pub fn execution_id(&self) -> &'a str {
        self.raw().execution_id.as_str()
    }

    /// The parameter called `name`, if the client sent it.
    pub fn param(&self, name: &str) -> Option<ValueRef<'a>> {
        self.raw()
            .params
            .as_slice()
            .iter()
            .find(|p| p.name.as_str() == name)
            .map(|p| p.value.into())
    }

    /// All parameters, in the order the client sent them.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        self.raw()
            .params
            .as_slice()
            .iter()
            .map(|p| (p.name.as_str(), p.value.into()))
    }

    /// The environment variable `key` set for this call.
    pub fn env(&self, key: &str) -> Option<&'a str> {
        lookup(self.raw().environment.as_slice(), |k| k == key)
    }

    /// The request header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        lookup(self.raw().headers.as_slice(), |k| {
            k.eq_ignore_ascii_case(name)
        })
    }

    /// The W3C trace this call belongs to (32 hex digits), from the
    /// `traceparent` header the host passes: the caller's trace, or one
    /// the host started. Put it in your own log lines and outgoing calls
    /// to tie them to the invocation.
    pub fn trace_id(&self) -> Option<&'a str> {
        let traceparent = self.header("traceparent")?;
        let trace = traceparent.split('-').nth(1)?;
        (trace.len() == 32).then_some(trace)
    }

    /// When the call must be finished by, if it has a deadline.
    pub fn deadline(&self) -> Option<SystemTime> {
        match self.raw().deadline_unix_nanos {
            0 => None,
            nanos => Some(UNIX_EPOCH + Duration::from_nanos(nanos)),
        }
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline().map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// Whether the host asked this call to stop (cancelled, or timed out).
    pub fn is_cancelled(&self) -> bool {
        self.raw().cancelled.load(Ordering::Acquire)
    }

    /// Whether the call should stop now: cancelled, or past its deadline.
    ///
    /// Long-running functions should poll this between steps.
    pub fn should_stop(&self) -> bool {
        self.is_cancelled() || self.remaining() == Some(Duration::ZERO)
    }

    /// Sends one chunk to the client of a streaming call.
    ///
    /// Blocks while the client is slower than the function (backpressure).
    ///
    /// # Errors
    ///
    /// A [`PluginError::CONSUMER_GONE`] error once nobody is listening any
    /// more (client disconnected, call cancelled, or a unary call): return it
    /// with `?` to stop.
    pub fn emit(&self, chunk: impl IntoValue) -> Result<(), PluginError> {
        if self.call.emit(chunk.into_value().into()) {
            Ok(())
        } else {
            Err(PluginError::new(
                PluginError::CONSUMER_GONE,
                "the stream's consumer is gone",
            ))
        }
    }

    /// Writes a line to this execution's log (returned with its status).
    pub fn log(&self, level: LogLevel, line: &str) {
        self.call.log(level.into(), line);
    }

    /// Writes an info line to this execution's log.
    pub fn info(&self, line: &str) {
        self.log(LogLevel::Info, line);
    }

    /// Writes a warning to this execution's log.
    pub fn warn(&self, line: &str) {
        self.log(LogLevel::Warn, line);
    }
}

fn lookup<'a>(pairs: &'a [FfiKv<'a>], matches: impl Fn(&str) -> bool) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| matches(kv.key.as_str()))
        .map(|kv| kv.value.as_str())
}
