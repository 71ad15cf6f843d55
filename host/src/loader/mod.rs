//! Loading plugins and calling their functions.
//!
//! This is where spearlet crosses the ABI, so it is allowed `unsafe` (the
//! one other place is `isolate::shm`, the memory shared with a worker
//! process: a binary layout two processes agree on). The path from file to call:
//!
//! 1. [`VerifiedFile`] opens the source so that it cannot block or follow a
//!    swapped-in symlink, checks on the descriptor that it is a regular file
//!    within the size limit with an ELF header for this machine, and copies
//!    it into a file spearlet owns while hashing the bytes (read, never
//!    mapped); [`Plugin::load`] hands the dynamic loader *that copy*
//!    (`/proc/self/fd/N`), so the bytes verified are the bytes loaded;
//! 2. the dynamic section is read: a plugin may need only the C runtime, and
//!    may set no library search path (`RPATH`/`RUNPATH`), so nothing
//!    unverified is loaded with it;
//! 3. abi_stable checks the plugin's ABI version and the full layout of its
//!    root module before anything in the plugin is called (`dlopen` has run
//!    the library's ELF constructors by then: the checksum decides which
//!    libraries get that far); the library header is taken
//!    per library (`lib_header_from_path`), so any number of different
//!    plugins live side by side;
//!    (a header that opts out of the layout check is refused);
//! 4. the function table is checked (non-empty, unique names) and indexed by
//!    name once; a call is then an index plus one indirect call;
//! 5. [`PluginInstance`] owns one plugin-side state object and runs one call
//!    at a time on it, on the caller's thread.
//!
//! Libraries are never unloaded (abi_stable leaks the handle on purpose), so
//! a changed artifact must come from a new path.

mod call;
mod constructors;
mod elf;
mod instance;
mod library;
mod root_module;
mod table;
mod verified;

pub use call::{CallRequest, CallSink, NullSink};
pub use constructors::{constructors, Constructor, RUNTIME_CONSTRUCTOR_COUNT};
pub use elf::Dependencies;
pub use instance::PluginInstance;
pub use library::{FunctionHandle, FunctionInfo, FunctionKind, Plugin, PluginDescription};
pub use verified::{anonymous_file, open_regular, sha256_file, VerifiedFile};
