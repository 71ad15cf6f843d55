//! Shorthands that build an `Error` from what the code at hand has: a
//! `map_err` adapter, an `io::Error` with its path, a kind name a worker
//! sent. Kept apart from the enum so that its file is only the catalogue of
//! what can go wrong, and these stay `pub(crate)` plumbing.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::Error;

impl Error {
    /// For `map_err`: a failure of the endpoint `what`.
    pub(crate) fn endpoint<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
        move |e| Error::Endpoint {
            what,
            reason: e.to_string(),
        }
    }

    /// For `map_err`: a background task or thread doing `what` that did
    /// not finish.
    pub(crate) fn background<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
        move |e| Error::Background {
            what,
            reason: e.to_string(),
        }
    }

    /// A refusal a worker reported by kind name: the kind is kept when it
    /// is one of the loader's, else it is `worker`.
    pub(crate) fn refused_by_worker(kind: &str, message: String) -> Self {
        const LOADER_KINDS: &[&str] = &[
            "not_shared_library",
            "no_root_module",
            "incompatible_sdk",
            "layout_mismatch",
            "layout_unchecked",
            "root_module_failed",
            "no_functions",
            "duplicate_function",
            "unverified_dependency",
            "checksum_mismatch",
            "artifact_format",
            "not_regular_file",
            "artifact_too_large",
            "io",
        ];
        let kind = LOADER_KINDS
            .iter()
            .copied()
            .find(|k| *k == kind)
            .unwrap_or("worker");
        Error::RefusedByWorker { kind, message }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
