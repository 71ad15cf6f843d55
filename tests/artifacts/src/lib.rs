//! Test support: paths of the sample plugins and ABI conformance fixtures
//! (built from source by this crate's build script), and a real HTTP file
//! server for download tests.

use std::path::Path;

pub mod file_server;

pub use file_server::FileServer;

/// A sample plugin or conformance fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// `echo(input)`, `upper(input)`, `nop()`.
    Echo,
    /// `add(a, b)`, `divide(a, b)`.
    Math,
    /// `next()` — per-instance call count.
    Counter,
    /// `count(n)` — streams `0..n`.
    Stream,
    /// `sleep(ms)` — honours cancellation and deadlines.
    Sleepy,
    /// `panic()`, `flaky(fail_times)`; and, for the process tier only —
    /// each ends (or swells) the process that runs it, so called in-process
    /// it takes the test down: `segfault()` (SIGSEGV), `abort()` (SIGABRT),
    /// `exit(code)`, `overflow()` (stack overflow), `hog(bytes)` (allocates
    /// and touches `bytes` bytes, holds them for the call, returns the
    /// count; an allocation refused aborts the process, as ordinary Rust
    /// code does).
    Faulty,
    /// A shared library without a root module.
    NoRoot,
    /// A root module declaring plugin ABI 2.0.0.
    BadVersion,
    /// A root module with another layout.
    BadLayout,
    /// A plugin with an empty function table.
    NoFunctions,
    /// A plugin declaring one function name twice.
    DuplicateFunctions,
    /// `context()` reports what a call carries; `trace()` returns
    /// `ctx.trace_id()`; `allocate(bytes)` allocates and frees that much;
    /// `spin(ms)` ignores cancellation;
    /// `wait(ms)` is marked `#[function(blocking)]`.
    Probe,
    /// A plugin linked with `RUNPATH` `$ORIGIN`.
    Rpath,
    /// A root module exported without layout information.
    UncheckedLayout,
    /// A plugin whose ELF constructor can be made to wait (see its source).
    SlowConstructor,
    /// A plugin whose ELF constructor aborts or hangs when the loading
    /// process sets `SPEARLET_FIXTURE_CONSTRUCTOR` (`abort`, `hang`).
    HostileConstructor,
    /// `version()`, `hold(ms)`: plugin `versioned` 1.0.0.
    Versioned1,
    /// The same source as [`Artifact::Versioned1`], built as 2.0.0.
    Versioned2,
}

impl Artifact {
    /// Every sample plugin (the ones that must load).
    pub const SAMPLES: [Artifact; 6] = [
        Artifact::Echo,
        Artifact::Math,
        Artifact::Counter,
        Artifact::Stream,
        Artifact::Sleepy,
        Artifact::Faulty,
    ];

    /// The built library's path.
    pub fn path(self) -> &'static Path {
        Path::new(match self {
            Artifact::Echo => env!("SPEARLET_ARTIFACT_SAMPLE_ECHO"),
            Artifact::Math => env!("SPEARLET_ARTIFACT_SAMPLE_MATH"),
            Artifact::Counter => env!("SPEARLET_ARTIFACT_SAMPLE_COUNTER"),
            Artifact::Stream => env!("SPEARLET_ARTIFACT_SAMPLE_STREAM"),
            Artifact::Sleepy => env!("SPEARLET_ARTIFACT_SAMPLE_SLEEPY"),
            Artifact::Faulty => env!("SPEARLET_ARTIFACT_SAMPLE_FAULTY"),
            Artifact::NoRoot => env!("SPEARLET_ARTIFACT_FIXTURE_NO_ROOT"),
            Artifact::BadVersion => env!("SPEARLET_ARTIFACT_FIXTURE_BAD_VERSION"),
            Artifact::BadLayout => env!("SPEARLET_ARTIFACT_FIXTURE_BAD_LAYOUT"),
            Artifact::NoFunctions => env!("SPEARLET_ARTIFACT_FIXTURE_NO_FUNCTIONS"),
            Artifact::DuplicateFunctions => env!("SPEARLET_ARTIFACT_FIXTURE_DUPLICATE_FUNCTIONS"),
            Artifact::Probe => env!("SPEARLET_ARTIFACT_FIXTURE_PROBE"),
            Artifact::Rpath => env!("SPEARLET_ARTIFACT_FIXTURE_RPATH"),
            Artifact::UncheckedLayout => env!("SPEARLET_ARTIFACT_FIXTURE_UNCHECKED_LAYOUT"),
            Artifact::SlowConstructor => env!("SPEARLET_ARTIFACT_FIXTURE_SLOW_CONSTRUCTOR"),
            Artifact::HostileConstructor => {
                env!("SPEARLET_ARTIFACT_FIXTURE_HOSTILE_CONSTRUCTOR")
            }
            Artifact::Versioned1 => env!("SPEARLET_ARTIFACT_FIXTURE_VERSIONED_1"),
            Artifact::Versioned2 => env!("SPEARLET_ARTIFACT_FIXTURE_VERSIONED_2"),
        })
    }
}

/// A plugin with the first SDK minor version's root module (ABI 1.0: no
/// `function_hints`, no `default_function`, no `call_outcome`): `add(a,
/// b)`, marked default in its source, `slow_echo(text)` marked blocking,
/// and `says_panic()`, which returns an error with code `panic`.
pub fn abi_previous_plugin() -> &'static Path {
    Path::new(env!("SPEARLET_ARTIFACT_ABI_PREVIOUS_PLUGIN"))
}

/// The same plugin as [`abi_previous_plugin`], built with the root module
/// of ABI 1.1 (`function_hints`, no `default_function`): `add(a, b)`,
/// marked default in its source, and `slow_echo(text)` marked blocking.
pub fn abi_1_1_plugin() -> &'static Path {
    Path::new(env!("SPEARLET_ARTIFACT_ABI_1_1_PLUGIN"))
}

/// The same plugin as [`abi_previous_plugin`], built with the root module
/// of ABI 1.2 (`function_hints`, `default_function`, no `call_outcome`):
/// `add` is its default, and `says_panic` returns an error with code
/// `panic`, which a host can only take for a panic from such a plugin.
pub fn abi_1_2_plugin() -> &'static Path {
    Path::new(env!("SPEARLET_ARTIFACT_ABI_1_2_PLUGIN"))
}

/// A host binary built against the next SDK (one more root-module field).
///
/// Run it with a plugin path; it prints `key=value` lines.
pub fn abi_next_host() -> &'static Path {
    Path::new(env!("SPEARLET_ARTIFACT_ABI_NEXT_HOST"))
}
