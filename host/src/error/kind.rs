//! The stable snake_case name of each error: what logs, the CLI and the
//! gRPC error details (`spearlet-error-kind`) carry, so tools can match on
//! it while messages change.

use super::Error;

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
            Error::NoDefaultFunction { .. } => "no_default_function",
            Error::InvalidFrame { .. } => "invalid_frame",
            Error::InstanceNotFound { .. } => "instance_not_found",
            Error::InstanceCreation { .. } => "instance_creation",
            Error::PluginFailed { .. } => "plugin_error",
            Error::PluginPanicked { .. } => "plugin_panic",
            Error::PluginCrashed { .. } => "plugin_crashed",
            Error::CrashLooping { .. } => "crash_looping",
            Error::MemoryLimitExceeded { .. } => "memory_limit_exceeded",
            Error::ConstructorCrashed { .. } => "constructor_crashed",
            Error::Worker { .. } => "worker",
            Error::RefusedByWorker { kind, .. } => kind,
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::ArtifactFormat { .. } => "artifact_format",
            Error::NotRegularFile { .. } => "not_regular_file",
            Error::UnverifiedDependency { .. } => "unverified_dependency",
            Error::LayoutUnchecked { .. } => "layout_unchecked",
            Error::UnsupportedArtifactType { .. } => "unsupported_artifact_type",
            Error::UnsupportedLocation { .. } => "unsupported_location",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::HostNotAllowed { .. } => "host_not_allowed",
            Error::ChecksumRequired { .. } => "checksum_required",
            Error::InvalidChecksum(_) => "invalid_checksum",
            Error::DownloadFailed { .. } => "download_failed",
            Error::ArtifactTooLarge { .. } => "artifact_too_large",
            Error::SmsNotConfigured { .. } => "sms_not_configured",
            Error::SmsUnavailable { .. } => "sms_unavailable",
            Error::FunctionsRemoved { .. } => "functions_removed",
            Error::StaleArtifact { .. } => "stale_artifact",
            Error::StateSchema { .. } => "state_schema",
            Error::State { .. } => "state",
            Error::JournalCorrupt { .. } => "state_journal_corrupt",
            Error::JournalFull { .. } => "state_journal_full",
            Error::NoPreviousVersion { .. } => "no_previous_version",
            Error::TaskChanged { .. } => "task_changed",
            Error::SmsRefused { .. } => "sms_refused",
            Error::TaskNotRunnableHere { .. } => "task_not_runnable_here",
            Error::PluginIdentityMismatch { .. } => "plugin_identity_mismatch",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::TaskNotFound { .. } => "task_not_found",
            Error::ArtifactSpecRequired { .. } => "artifact_spec_required",
            Error::TaskNameTaken { .. } => "task_name_taken",
            Error::MissingParameter { .. } => "missing_parameter",
            Error::UnknownParameter { .. } => "unknown_parameter",
            Error::PoolExhausted { .. } => "pool_exhausted",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::UseStreamFunction => "use_stream_function",
            Error::ExecutionNotFound { .. } => "execution_not_found",
            Error::ExecutionIdInUse { .. } => "execution_id_in_use",
            Error::TaskBusy { .. } => "task_busy",
            Error::TooManyPending { .. } => "too_many_pending",
            Error::TaskDeleted { .. } => "task_deleted",
            Error::HostStopping => "host_stopping",
            Error::QuarantineFull { .. } => "quarantine_full",
            Error::Background { .. } | Error::Endpoint { .. } | Error::CacheUnstable { .. } => {
                "internal"
            }
            Error::Io { .. } => "io",
        }
    }
}
