//! spearlet: a function host whose functions are native plugins.
//!
//! A plugin is a shared library built with `spear-plugin-sdk`. spearlet
//! verifies its sha256 on the bytes it loads, checks its ABI before running
//! any of its code, and calls its functions directly through the plugin's
//! function table.
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

pub mod api;
pub mod artifact;
pub mod auth;
mod backoff;
pub mod config;
pub mod digest;
mod error;
pub mod exec;
mod execution;
mod histogram;
mod host;
pub mod http;
pub mod invoke;
pub mod isolate;
#[allow(unsafe_code)]
pub mod loader;
pub mod metrics;
pub mod pool;
pub mod registry;
pub mod server;
pub mod signature;
pub mod sms;
pub mod state;
pub mod telemetry;
pub mod tier;
pub mod trace;

pub use config::Config;
pub use error::{Error, Result};
pub use host::{
    Deleted, DestroyedInstance, DryRun, Host, HostStats, Switched, DRY_RUN_KEY, HOST_RESTARTED,
};
pub use spear_plugin_sdk::{LogLevel, Value};
