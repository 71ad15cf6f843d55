//! The error a plugin function reports.

use std::fmt;

/// An error returned by a plugin function.
///
/// `code` is for machines (`division_by_zero`, `invalid_argument`, `panic`),
/// `message` for people, and `retriable` tells the host whether running the
/// call again may succeed (the host retries only then, within the request's
/// `max_retries` and deadline).
///
/// Any `std::error::Error` converts into a `PluginError` (code `error`), so
/// `?` works on ordinary fallible calls inside a function. For that reason
/// this type does not itself implement `std::error::Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// A short machine-readable code.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Whether trying again may succeed.
    pub retriable: bool,
}

impl PluginError {
    /// Code used for panics caught at the plugin boundary. A host since ABI
    /// 1.3 never takes an error a function returns for a panic, whatever
    /// its code: returning this code on purpose fails the call, nothing
    /// more.
    pub const PANIC: &'static str = "panic";
    /// Code used when a call stops early because it was cancelled or timed out.
    pub const CANCELLED: &'static str = "cancelled";
    /// Code used for missing or mistyped parameters.
    pub const INVALID_ARGUMENT: &'static str = "invalid_argument";
    /// Code used when a stream's consumer went away.
    pub const CONSUMER_GONE: &'static str = "consumer_gone";

    /// A non-retriable error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            code: code.into(),
            message: message.into(),
            retriable: false,
        }
    }

    /// An error after which the host may try the call again.
    pub fn retriable(code: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            retriable: true,
            ..PluginError::new(code, message)
        }
    }

    /// A missing or mistyped parameter.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        PluginError::new(Self::INVALID_ARGUMENT, message)
    }

    /// The call stopped early because it was cancelled or its deadline passed.
    pub fn cancelled(message: impl Into<String>) -> Self {
        PluginError::new(Self::CANCELLED, message)
    }

    /// A panic caught at the plugin boundary.
    pub fn panic(message: impl Into<String>) -> Self {
        PluginError::new(Self::PANIC, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if self.retriable {
            f.write_str(" (retriable)")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error> From<E> for PluginError {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        PluginError::new("error", message)
    }
}

/// Gives your own error type its codes, so a function returning
/// `Result<T, YourError>` reports them (and says which failures are worth
/// retrying) instead of the generic code `error`.
///
/// ```
/// use spear_plugin_sdk::prelude::*;
///
/// #[derive(Debug)]
/// enum LookupError {
///     NotFound(String),
///     Backend(String),
/// }
///
/// impl std::fmt::Display for LookupError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         match self {
///             LookupError::NotFound(key) => write!(f, "no entry `{key}`"),
///             LookupError::Backend(why) => write!(f, "backend unavailable: {why}"),
///         }
///     }
/// }
///
/// impl std::error::Error for LookupError {}
///
/// impl ErrorCode for LookupError {
///     fn code(&self) -> &str {
///         match self {
///             LookupError::NotFound(_) => "not_found",
///             LookupError::Backend(_) => "backend_unavailable",
///         }
///     }
///
///     fn retriable(&self) -> bool {
///         matches!(self, LookupError::Backend(_))
///     }
/// }
///
/// #[function]
/// fn lookup(key: &str) -> Result<String, LookupError> {
///     Err(LookupError::NotFound(key.to_owned()))
/// }
/// # fn main() {}
/// ```
///
/// Only a `#[function]`'s own return type is looked at: inside the function,
/// `?` converts into your error type as usual.
pub trait ErrorCode: std::error::Error {
    /// A short machine-readable code, e.g. `not_found`.
    fn code(&self) -> &str;

    /// Whether trying again may succeed (the host retries when the client
    /// allows it). Default: no.
    fn retriable(&self) -> bool {
        false
    }
}

impl PluginError {
    /// The error `e` reports through its [`ErrorCode`].
    pub fn from_coded<E: ErrorCode + ?Sized>(e: &E) -> Self {
        PluginError {
            code: e.code().to_owned(),
            message: e.to_string(),
            retriable: e.retriable(),
        }
    }
}
