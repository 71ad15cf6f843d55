//! Write native spearlet function plugins in ordinary Rust.
//!
//! A plugin is a `cdylib` crate. Its functions are plain Rust functions marked
//! with [`#[function]`](macro@function); one [`export_plugin!`] publishes
//! every one of them in a table the host checks (ABI version and full type layout) before
//! calling any of your code, then calls through directly — no serialisation,
//! no interpreter, one indirect call.
//!
//! # Example
//!
//! ```
//! use spear_plugin_sdk::prelude::*;
//!
//! /// Adds two integers.
//! #[function]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! /// Divides `a` by `b`.
//! #[function]
//! fn divide(a: f64, b: f64) -> Result<f64, PluginError> {
//!     if b == 0.0 {
//!         return Err(PluginError::new("division_by_zero", "b must not be 0"));
//!     }
//!     Ok(a / b)
//! }
//!
//! /// Per-instance state: the host keeps instances in a pool and runs one
//! /// call at a time on each.
//! #[derive(Default)]
//! struct Calls(i64);
//!
//! impl Instance for Calls {
//!     fn new(_config: &Config) -> Result<Self, PluginError> {
//!         Ok(Calls::default())
//!     }
//! }
//!
//! /// Counts the calls made on this instance.
//! #[function]
//! fn next(calls: &mut Calls) -> i64 {
//!     calls.0 += 1;
//!     calls.0
//! }
//!
//! /// Emits `0..n`, stopping early when the call is cancelled.
//! #[function(stream(i64))]
//! fn count(ctx: &Context, n: i64) -> Result<(), PluginError> {
//!     for i in 0..n {
//!         if ctx.should_stop() {
//!             return Err(PluginError::cancelled("stopped by the host"));
//!         }
//!         ctx.emit(i)?;
//!     }
//!     Ok(())
//! }
//!
//! export_plugin! {
//!     name: "math",
//!     instance: Calls,
//! }
//! # fn main() {}
//! ```
//!
//! With `crate-type = ["cdylib"]` in its `Cargo.toml`, `cargo build` gives a
//! `lib<crate>.so` that `spearlet plugin inspect` describes and spearlet runs.
//!
//! # Writing functions
//!
//! A `#[function]`'s parameters are, by type:
//! - `&Context` — the call: execution id, environment, headers, deadline,
//!   cancellation ([`Context::should_stop`]), stream sink ([`Context::emit`])
//!   and log ([`Context::log`]);
//! - `&mut State` — the instance state named in `export_plugin!`'s `instance:`;
//! - anything else — a call parameter of that name, converted by
//!   [`FromParam`] (`i64` and other integers, `f64`, `bool`, `String`, `&str`,
//!   `Vec<u8>`, `&[u8]`, [`Value`]; wrap in `Option` when it may be absent).
//!
//! It returns anything [`IntoValue`] or `Result<_, E>` with `E:
//! Into<`[`PluginError`]`>` — every `std::error::Error` qualifies, so `?`
//! works. `#[function(stream(T))]` marks a function that emits chunks of
//! type `T` (published in its signature as `-> Stream<T>`, so `plugin
//! inspect` shows what arrives); its return value ends the stream. Plain
//! `#[function(stream)]` declares no chunk type. `#[function(name = "...")]` publishes the
//! function under another name; the doc comment becomes its description.
//!
//! The host refuses a call that sends a parameter the function does not
//! declare (`unknown_parameter`, with the closest declared name), so a
//! misspelled name is never silently ignored. A function that reads
//! parameters beyond its declared ones through [`Context::params`] says so
//! with `#[function(extra_params)]` (published as a trailing `..` in its
//! signature, `(text: &str, ..) -> String`).
//!
//! # Testing
//!
//! With the `testing` feature, [`testing::MockCall`] calls a function the way
//! the host does — parameters, environment, headers, deadline, cancellation —
//! and records what it emits and logs, so plain `#[test]`s cover a plugin
//! without building or loading a library.
//!
//! # Safety at the boundary
//!
//! Every entry point catches panics; the host discards the instance whose
//! call panicked, and the execution fails with code `panic`. The host learns
//! of the panic from the type of the call's outcome, not from that code, so
//! an error your function returns with code `panic` is just an error: its
//! instance is kept. (`MockCall` reports a caught panic as a [`PluginError`]
//! with code `panic`.) The unsafe code lives in [`ffi`] alone.

#![deny(missing_docs)]
// Unsafe code is `ffi`'s alone (allowed there, below): the rest of the SDK
// is safe Rust, which the compiler checks.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod context;
mod error;
#[allow(unsafe_code)]
pub mod ffi;
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
mod json;
mod registry;
mod value;

pub use config::{Config, Instance};
pub use context::{Context, LogLevel};
pub use error::{ErrorCode, PluginError};
#[cfg(feature = "json")]
pub use json::Json;
pub use spear_plugin_sdk_macros::function;
pub use value::{FromParam, IntoOutput, IntoValue, Value, ValueRef};

/// A mock host for unit-testing plugin functions (feature `testing`:
/// enable it for your dev-dependency on the SDK).
#[cfg(any(feature = "testing", doc))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing {
    pub use crate::ffi::testing::MockCall;
}

/// Installs the counting allocator and exports what the host reads it by
/// (feature `alloc-stats`, on by default; turn it off to use an allocator
/// of your own, and calls report no memory).
#[cfg(feature = "alloc-stats")]
#[doc(hidden)]
#[macro_export]
macro_rules! __count_allocations {
    () => {
        #[global_allocator]
        static __SPEAR_ALLOCATOR: $crate::ffi::CountingAllocator = $crate::ffi::CountingAllocator;

        #[doc(hidden)]
        #[export_name = "spear_plugin_alloc_stats"]
        pub extern "C" fn __spear_plugin_alloc_stats() -> $crate::ffi::FfiAllocStats {
            $crate::ffi::alloc_stats()
        }
    };
}

/// Without `alloc-stats`: nothing (the plugin keeps its own allocator).
#[cfg(not(feature = "alloc-stats"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __count_allocations {
    () => {};
}

/// Exports the typed panic-barrier probe (ABI 1.3 on).
#[cfg(not(any(
    feature = "abi-1-2-fixture",
    feature = "abi-1-1-fixture",
    feature = "abi-previous-fixture"
)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __panic_outcome_probe {
    () => {
        #[doc(hidden)]
        #[export_name = "spear_plugin_panic_outcome_probe"]
        pub extern "C" fn __spear_plugin_panic_outcome_probe() -> $crate::ffi::FfiCallOutcome {
            $crate::ffi::panic_outcome_probe()
        }
    };
}

/// A plugin built as an SDK before ABI 1.3 built them exports no typed
/// probe.
#[cfg(any(
    feature = "abi-1-2-fixture",
    feature = "abi-1-1-fixture",
    feature = "abi-previous-fixture"
))]
#[doc(hidden)]
#[macro_export]
macro_rules! __panic_outcome_probe {
    () => {};
}

/// Version of this SDK crate, recorded in every plugin's root module.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a plugin author needs: `use spear_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        export_plugin, function, Config, Context, ErrorCode, Instance, IntoValue, LogLevel,
        PluginError, Value, ValueRef,
    };
}

/// Used by the code the macros generate. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{
        at_most_one_default, descriptor, hints, param, registered, state, FunctionDef,
        FunctionTable, Handler, InstanceOf, Output, PluginDef, Registration, ViaCode,
        ViaIntoOutput, SPEAR_PLUGIN_FUNCTIONS,
    };
    pub use crate::IntoOutput;
    pub use linkme;
}

/// Publishes a plugin: its name, optional version and instance type.
///
/// ```ignore
/// export_plugin! {
///     name: "math",                 // required
///     version: "1.2.0",             // default: the crate's version
///     instance: Calls,              // default: `()` (no state)
/// }
/// ```
///
/// Its functions are every `#[function]` linked into the library, sorted by
/// name: a function is named once, where it is written. An explicit list,
/// `functions: [add, divide],`, publishes those alone, in that order.
///
/// Use it once per plugin crate, at the crate root.
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr
        $(, version: $version:expr)?
        $(, instance: $instance:ty)?
        $(, functions: [$($function:ident),* $(,)?])?
        $(,)?
    ) => {
        #[doc(hidden)]
        struct __SpearPlugin;

        impl $crate::__private::PluginDef for __SpearPlugin {
            type Instance = $crate::export_plugin!(@instance $($instance)?);
            const NAME: &'static str = $name;
            const VERSION: &'static str = $crate::export_plugin!(@version $($version)?);
            fn functions() -> &'static $crate::__private::FunctionTable {
                $crate::export_plugin!(@table $([$($function),*])?)
            }
        }

        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __SPEAR_PLUGIN_HEADER: $crate::ffi::abi::LibHeader =
            $crate::ffi::lib_header::<__SpearPlugin>();

        #[doc(hidden)]
        #[export_name = "spear_plugin_panic_probe"]
        pub extern "C" fn __spear_plugin_panic_probe(
        ) -> $crate::ffi::abi::RResult<(), $crate::ffi::FfiError> {
            $crate::ffi::panic_probe()
        }

        $crate::__panic_outcome_probe!();

        $crate::__count_allocations!();
    };
    (@instance) => { () };
    (@instance $instance:ty) => { $instance };
    (@version) => { env!("CARGO_PKG_VERSION") };
    (@version $version:expr) => { $version };
    (@table) => { $crate::__private::registered() };
    (@table [$($function:ident),*]) => {{
        // Two defaults in the list are a compile error here.
        const _: () = $crate::__private::at_most_one_default(
            &[$(<$function as $crate::__private::FunctionDef>::DEFAULT),*],
        );
        static TABLE: $crate::__private::FunctionTable = $crate::__private::FunctionTable {
            descriptors: &[$(<$function as $crate::__private::FunctionDef>::DESCRIPTOR),*],
            hints: &[$(<$function as $crate::__private::FunctionDef>::HINTS),*],
            defaults: &[$(<$function as $crate::__private::FunctionDef>::DEFAULT),*],
            handlers: &[$(<$function as $crate::__private::FunctionDef>::call),*],
        };
        &TABLE
    }};
}
