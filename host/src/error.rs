//! The one error type of the `spearlet` library.
//!
//! Every failure a caller can act on is its own variant with structured
//! fields; [`Error::kind`] gives each a stable snake_case name for logs, the
//! CLI and (later) gRPC error details.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in spearlet.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened by the dynamic loader.
    #[error("{} is not a loadable shared library: {reason}", path.display())]
    NotSharedLibrary {
        /// The file.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },

    /// The library loaded but exports no spearlet root module.
    #[error("{} is not a spearlet plugin: it exports no root module (symbol `{symbol}`)", path.display())]
    NoRootModule {
        /// The file.
        path: PathBuf,
        /// The symbol that was looked for.
        symbol: &'static str,
    },

    /// The plugin was built against an SDK whose ABI version this host refuses.
    #[error(
        "{} was built against an incompatible plugin SDK: its plugin ABI is {actual}, this host needs {expected}",
        path.display()
    )]
    IncompatibleSdk {
        /// The file.
        path: PathBuf,
        /// What this host accepts.
        expected: String,
        /// What the plugin declares.
        actual: String,
    },

    /// The plugin's root module does not have the layout this host expects.
    #[error(
        "{} has a root module whose layout does not match this host's SDK: {summary}",
        path.display()
    )]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// What differs, in one line.
        summary: String,
        /// abi_stable's full report: which type differs, and how.
        details: String,
    },

    /// The plugin's root-module constructor failed.
    #[error("{} failed to initialise its root module: {details}", path.display())]
    RootModuleFailed {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        details: String,
    },

    /// The plugin declares an empty function table.
    #[error("plugin `{plugin}` ({}) declares no functions", path.display())]
    NoFunctions {
        /// The file.
        path: PathBuf,
        /// The plugin's name.
        plugin: String,
    },

    /// The plugin declares two functions with one name.
    #[error("plugin `{plugin}` declares function `{function}` more than once")]
    DuplicateFunction {
        /// The plugin's name.
        plugin: String,
        /// The repeated name.
        function: String,
    },

    /// The plugin has no function of the requested name.
    #[error("plugin `{plugin}` has no function `{function}` (it has: {available})")]
    FunctionNotFound {
        /// The plugin's name.
        plugin: String,
        /// The name asked for.
        function: String,
        /// The names it does have, comma-separated.
        available: String,
    },

    /// The plugin refused to create an instance (e.g. bad task config).
    #[error("plugin `{plugin}` could not create an instance: {code}: {message}")]
    InstanceCreation {
        /// The plugin's name.
        plugin: String,
        /// The plugin's error code.
        code: String,
        /// The plugin's message.
        message: String,
    },

    /// The function returned an error.
    #[error("function `{function}` failed: {code}: {message}")]
    PluginFailed {
        /// The function.
        function: String,
        /// The plugin's error code.
        code: String,
        /// The plugin's message.
        message: String,
        /// Whether the plugin says retrying may help.
        retriable: bool,
    },

    /// The function panicked; its instance has been poisoned.
    #[error("function `{function}` panicked: {message}")]
    PluginPanicked {
        /// The function.
        function: String,
        /// The panic message.
        message: String,
    },

    /// The bytes' sha256 is not the one required.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The required digest (hex).
        expected: String,
        /// The digest of the bytes (hex).
        actual: String,
    },

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
}

impl Error {
    /// A stable snake_case name for this kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotSharedLibrary { .. } => "not_shared_library",
            Error::NoRootModule { .. } => "no_root_module",
            Error::IncompatibleSdk { .. } => "incompatible_sdk",
            Error::LayoutMismatch { .. } => "layout_mismatch",
            Error::RootModuleFailed { .. } => "root_module_failed",
            Error::NoFunctions { .. } => "no_functions",
            Error::DuplicateFunction { .. } => "duplicate_function",
            Error::FunctionNotFound { .. } => "function_not_found",
            Error::InstanceCreation { .. } => "instance_creation",
            Error::PluginFailed { .. } => "plugin_error",
            Error::PluginPanicked { .. } => "plugin_panic",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::Io { .. } => "io",
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
