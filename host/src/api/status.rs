//! The one mapping from spearlet errors to gRPC statuses.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// Metadata key carrying [`Error::kind`] on every error status.
pub const ERROR_KIND_KEY: &str = "spearlet-error-kind";

/// The gRPC code for each error.
pub fn code(error: &Error) -> Code {
    match error {
        Error::InvalidRequest { .. }
        | Error::InvalidFrame { .. }
        | Error::NoDefaultFunction { .. }
        | Error::ArtifactSpecRequired { .. }
        | Error::MissingParameter { .. }
        | Error::UnknownParameter { .. }
        | Error::UseStreamFunction
        | Error::UnsupportedArtifactType { .. }
        | Error::UnsupportedLocation { .. }
        | Error::InvalidChecksum(_)
        | Error::ChecksumRequired { .. } => Code::InvalidArgument,
        Error::TaskNotFound { .. }
        | Error::FunctionNotFound { .. }
        | Error::ExecutionNotFound { .. }
        | Error::InstanceNotFound { .. } => Code::NotFound,
        Error::PermissionDenied { .. } | Error::HostNotAllowed { .. } => Code::PermissionDenied,
        Error::ExecutionIdInUse { .. } => Code::AlreadyExists,
        Error::ChecksumMismatch { .. }
        | Error::ArtifactFormat { .. }
        | Error::NotRegularFile { .. }
        | Error::UnverifiedDependency { .. }
        | Error::LayoutUnchecked { .. }
        | Error::NotSharedLibrary { .. }
        | Error::NoRootModule { .. }
        | Error::IncompatibleSdk { .. }
        | Error::LayoutMismatch { .. }
        | Error::RootModuleFailed { .. }
        | Error::ConstructorCrashed { .. }
        | Error::RefusedByWorker { .. }
        | Error::NoFunctions { .. }
        | Error::DuplicateFunction { .. }
        | Error::PluginIdentityMismatch { .. }
        | Error::InstanceCreation { .. }
        | Error::TaskNameTaken { .. }
        | Error::TaskBusy { .. }
        | Error::SmsNotConfigured { .. }
        | Error::SmsRefused { .. }
        | Error::TaskNotRunnableHere { .. }
        | Error::FunctionsRemoved { .. }
        | Error::StaleArtifact { .. }
        | Error::NoPreviousVersion { .. } => Code::FailedPrecondition,
        Error::PoolExhausted { .. }
        | Error::QuarantineFull { .. }
        | Error::ArtifactTooLarge { .. }
        | Error::TooManyPending { .. }
        | Error::MemoryLimitExceeded { .. } => Code::ResourceExhausted,
        Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        Error::DownloadFailed { .. }
        | Error::HostStopping
        | Error::SmsUnavailable { .. }
        | Error::JournalFull { .. }
        | Error::CrashLooping { .. }
        | Error::Worker { .. } => Code::Unavailable,
        Error::TaskDeleted { .. } | Error::TaskChanged { .. } => Code::Aborted,
        Error::PluginFailed { .. }
        | Error::PluginPanicked { .. }
        | Error::PluginCrashed { .. }
        | Error::Io { .. }
        | Error::StateSchema { .. }
        | Error::State { .. }
        | Error::JournalCorrupt { .. }
        | Error::Background { .. }
        | Error::Endpoint { .. }
        | Error::CacheUnstable { .. } => Code::Internal,
    }
}

/// How long a client should wait before trying again, for the errors that
/// mean "busy": sent as a `google.rpc.RetryInfo` detail, so well-behaved
/// clients back off instead of hammering a saturated host.
pub fn retry_delay(error: &Error) -> Option<Duration> {
    match error {
        // A slot frees when a call ends: soon, on a pool of short calls.
        Error::PoolExhausted { .. } => Some(Duration::from_millis(100)),
        Error::TooManyPending { .. } => Some(Duration::from_millis(500)),
        // A plugin that ignores cancellation returns when it returns.
        Error::QuarantineFull { .. } => Some(Duration::from_secs(1)),
        // Persistence is back at the folder's next attempt once the cause
        // is gone: seconds at most.
        Error::JournalFull { .. } => Some(Duration::from_secs(1)),
        // The worker is started again when the backoff ends.
        Error::CrashLooping { retry_after_ms, .. } => Some(Duration::from_millis(*retry_after_ms)),
        _ => None,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let mut status = match retry_delay(&error) {
            Some(delay) => Status::with_error_details(
                code(&error),
                error.to_string(),
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => Status::new(code(&error), error.to_string()),
        };
        if let Ok(kind) = error.kind().parse() {
            status.metadata_mut().insert(ERROR_KIND_KEY, kind);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full state journal is worth retrying once it folds again.
    #[test]
    fn a_full_journal_is_unavailable() {
        let full = Error::JournalFull {
            bytes: 2 << 20,
            limit: 1 << 20,
            reason: "the disk is full".to_owned(),
        };
        assert_eq!(code(&full), tonic::Code::Unavailable);
    }
}
