//! Why a checksum string was not accepted: an error of `crate::digest`,
//! defined here so that the `error` module depends on nothing else of the
//! crate; `crate::digest` re-exports it.

/// Why a checksum string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a sha256 checksum (expected 64 hex digits, optionally prefixed `sha256:`)"
)]
pub struct ParseDigestError {
    /// The rejected text.
    pub input: String,
}
