//! The binary interface between spearlet and its plugins.
//!
//! Everything that crosses the boundary is defined here and nowhere else, and
//! it is the only place this crate touches `abi_stable`: the rest of the SDK
//! (and every plugin author) sees plain Rust types. Swapping the ABI crate —
//! for `stabby`, say — stays local to this module.
//!
//! The layout rules:
//! - the root module ([`PluginMod`]) is a *prefix type*: later SDK versions
//!   append fields after the last one marked `last_prefix_field`, and a host
//!   reads such a field as `None` when the plugin predates it;
//! - the host checks the ABI version and the full type layout of the root
//!   module before calling anything in the plugin (`LibHeader::init_root_module`;
//!   `dlopen` has run the library's ELF constructors by then);
//! - values handed to the plugin are borrowed ([`FfiValueRef`]); values coming
//!   back are owned ([`FfiValue`]) and freed through their own vtables, so each
//!   side frees with the allocator that allocated;
//! - nothing unwinds across: every entry point the SDK exports catches panics;
//!   since ABI 1.3 a call says whether it panicked by the variant of its
//!   outcome ([`FfiCallOutcome`]), never by an error code a function could
//!   also return.

mod alloc;
mod export;
mod root;
#[cfg(any(feature = "testing", doc))]
pub(crate) mod testing;
mod types;

pub use alloc::{alloc_stats, CountingAllocator, FfiAllocStats, ALLOC_STATS_SYMBOL};
pub use export::{
    lib_header, panic_outcome_probe, panic_probe, PANIC_OUTCOME_PROBE_SYMBOL, PANIC_PROBE_SYMBOL,
};
pub use root::{
    init_root_module, provided_fields, AbiMinor, PluginMod, PluginModRef, ABI_MINORS, ABI_VERSION,
    ROOT_MODULE_SYMBOL,
};
pub(crate) use types::LiveCall;
pub use types::{
    FfiCallContext, FfiCallOutcome, FfiError, FfiFunctionDesc, FfiFunctionHints, FfiFunctionKind,
    FfiInstance, FfiKv, FfiLogLevel, FfiParam, FfiSink, FfiValue, FfiValueRef,
};

/// Our names for the `abi_stable` items a host needs to load a plugin.
///
/// Hosts (spearlet's loader, conformance fixtures) go through these aliases so
/// that they never name `abi_stable` directly.
pub mod abi {
    pub use abi_stable::library::{
        lib_header_from_path, LibHeader, LibraryError, RawLibrary, RootModule,
    };
    pub use abi_stable::sabi_types::VersionNumber;
    pub use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
}
