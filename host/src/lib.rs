//! spearlet: a function host whose functions are native plugins.
//!
//! A plugin is a shared library built with `spear-plugin-sdk`. spearlet
//! verifies its sha256 on the bytes it loads, checks its ABI before running
//! any of its code, and calls its functions directly through the plugin's
//! function table.
//!
//! To embed the host: a [`Host`], made from a [`Config`], runs invocations
//! ([`Host::invoke`] with an [`InvokeRequest`] naming a [`Target`]) and
//! keeps their executions ([`ExecutionSnapshot`]); [`api::serve`] serves it
//! over gRPC. A program using the process tier calls [`serve_worker`] when
//! started as a worker. Without a host, [`loader`] loads and calls a plugin
//! directly:
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use spearlet::loader::{CallRequest, Plugin, PluginInstance};
//! use spearlet::Value;
//!
//! # fn main() -> spearlet::Result<()> {
//! let plugin = Plugin::load_verified("target/release/libsample_math.so".as_ref(), None)?;
//! let add = plugin.function("add")?;
//! let mut instance = PluginInstance::new(&plugin, &[])?;
//! let cancelled = AtomicBool::new(false);
//! let params = [("a".to_owned(), Value::I64(2)), ("b".to_owned(), Value::I64(3))];
//! let sum = instance.call(add, &CallRequest::new("exec-1", &cancelled).with_params(&params))?;
//! assert_eq!(sum, Value::I64(5));
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

// The embedding API: documented, and its main types re-exported below.
pub mod api;
pub mod config;
pub mod digest;
pub mod invoke;
#[allow(unsafe_code)]
pub mod loader;

// Reached into by the bundled binary (`cli`), the bench crate or the
// integration tests, each as its comment says; hidden from the docs.
#[doc(hidden)] // Used by the binary, bench and tests; not part of the embedding API.
pub mod artifact;
#[doc(hidden)] // Used by the bench; not part of the embedding API.
pub mod counters;
#[doc(hidden)] // Used by the tests and bench; not part of the embedding API.
pub mod exec;
#[doc(hidden)] // Used by the binary (its workers), bench and tests; not the embedding API.
pub mod isolate;
#[doc(hidden)] // Used by the binary, bench and tests; not part of the embedding API.
pub mod metrics;
#[doc(hidden)] // Used by the tests; not part of the embedding API.
pub mod pool;
#[doc(hidden)] // Used by the binary (`check`, `inspect`, the client); not the embedding API.
pub mod signature;
#[doc(hidden)] // Used by the tests; not part of the embedding API.
pub mod sms;
#[doc(hidden)] // Used by the tests; not part of the embedding API.
pub mod state;
#[doc(hidden)] // Used by the tests; not part of the embedding API.
pub mod task;
#[doc(hidden)] // Used by the tests; not part of the embedding API.
pub mod tier;
#[doc(hidden)] // Used by the tests; not part of the embedding API.
pub mod trace;

mod auth;
mod backoff;
mod error;
mod execution;
mod hex;
mod host;

pub use artifact::ArtifactSpec;
pub use config::Config;
pub use digest::Sha256Digest;
pub use error::{Error, Result};
pub use exec::{DroppedOutput, ExecutionId, ExecutionQuery, ExecutionSnapshot};
pub use execution::{ExecutionError, ExecutionMode, ExecutionStatus};
pub use host::{
    Deleted, DestroyedInstance, DryRun, Host, HostStats, Switched, DRY_RUN_KEY, HOST_RESTARTED,
};
pub use invoke::{InvokeOutcome, InvokeRequest, Target};
pub use isolate::worker::serve as serve_worker;
pub use isolate::Isolation;
pub use spear_plugin_sdk::{LogLevel, Value};
pub use trace::{TraceContext, TraceId};
