//! Loading plugins and calling their functions.
//!
//! This is where spearlet crosses the ABI, so it is the only module of the
//! crate allowed `unsafe`. The path from file to call:
//!
//! 1. [`Plugin::load_verified`] opens the file, hashes the open file's bytes
//!    through a memory map, checks its ELF header (a shared object for this
//!    machine, not truncated), and hands the dynamic loader *that same open
//!    file* (`/proc/self/fd/N`), so the bytes verified are the bytes loaded;
//! 2. abi_stable checks the plugin's ABI version and the full layout of its
//!    root module before any plugin code runs; the library header is taken
//!    per library (`lib_header_from_path`), so any number of different
//!    plugins live side by side;
//! 3. the function table is checked (non-empty, unique names) and indexed by
//!    name once; a call is then an index plus one indirect call;
//! 4. [`PluginInstance`] owns one plugin-side state object and runs one call
//!    at a time on it, on the caller's thread.
//!
//! Libraries are never unloaded (abi_stable leaks the handle on purpose), so
//! a changed artifact must come from a new path.

mod call;
mod elf;
mod instance;
mod library;
mod verified;

pub use call::{CallRequest, CallSink, NullSink};
pub use instance::PluginInstance;
pub use library::{FunctionHandle, FunctionInfo, FunctionKind, Plugin};
pub use verified::sha256_file;
