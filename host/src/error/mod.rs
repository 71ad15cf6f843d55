//! The one error type of the `spearlet` library.
//!
//! Every failure a caller can act on is its own variant with structured
//! fields, grouped below by where it arises (loading, calling, artifacts,
//! the cluster, task versions and state, requests). [`Error::kind`] (in
//! `kind.rs`) gives each a stable snake_case name for logs, the CLI and the
//! gRPC error details; the gRPC status code of each is chosen in
//! `api/status.rs`, the one place errors meet the wire. The crate's
//! shorthand constructors (`Error::io`, the `map_err` adapters) are in
//! `constructors.rs`.

mod constructors;
mod kind;
mod parse_digest;
mod sms_call;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use parse_digest::ParseDigestError;
pub use sms_call::SmsCall;

/// Everything that can go wrong in spearlet.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // Loading a plugin: the library, its root module, its function table.
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

    /// The library's header opts out of abi_stable's layout check.
    #[error(
        "{} exports a root module without layout information (built with \
         CheckTypeLayout::No), so its layout cannot be checked; build it with the spearlet SDK",
        path.display()
    )]
    LayoutUnchecked {
        /// The file.
        path: PathBuf,
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

    /// Loading the library would load code spearlet did not verify: it needs
    /// a library beyond the C runtime, or sets a library search path.
    #[error("{} is refused: {reason}", path.display())]
    UnverifiedDependency {
        /// The file.
        path: PathBuf,
        /// Which dependency or search path, and why.
        reason: String,
    },

    /// The loaded plugin is not the one the artifact spec names.
    #[error("artifact declares plugin {field} `{expected}`, but the library says `{actual}`")]
    PluginIdentityMismatch {
        /// `name` or `version`.
        field: &'static str,
        /// What the spec says.
        expected: String,
        /// What the plugin says.
        actual: String,
    },

    // Calling into a plugin.
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

    /// A call named the task's default entry (an empty function name or
    /// `__spear_default_entry__`), and the task has several functions and
    /// names none of them its default.
    #[error(
        "task `{task}` has no default function: it has several ({available}) and neither its \
         registration (`spear.default_function`) nor its plugin (`#[function(default)]`) \
         chooses one; name the function"
    )]
    NoDefaultFunction {
        /// The task's id.
        task: String,
        /// Its functions, comma-separated.
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

    /// A process-tier worker died while running calls: only its calls fail.
    #[error("the worker process of task `{task_id}` crashed ({ended}) while running `{function}`")]
    PluginCrashed {
        /// The task.
        task_id: String,
        /// The call that was running.
        function: String,
        /// How it ended: the signal, or the exit status.
        ended: String,
    },

    /// A process-tier task's workers keep crashing: calls are refused until
    /// the backoff ends.
    #[error(
        "task `{task_id}` is crash-looping: its worker crashed {crashes} time(s) in a row \
         (last: {ended}); calls are refused for {retry_after_ms} ms"
    )]
    CrashLooping {
        /// The task.
        task_id: String,
        /// Crashes in a row.
        crashes: u32,
        /// How the last one ended.
        ended: String,
        /// How long until a worker is started again.
        retry_after_ms: u64,
    },

    /// A process-tier call went over the task's memory cap; its worker was replaced.
    #[error(
        "function `{function}` of task `{task_id}` went over the task's memory limit of \
         {limit} bytes (spearlet.memory.max); its worker was replaced"
    )]
    MemoryLimitExceeded {
        /// The task.
        task_id: String,
        /// The call that was running.
        function: String,
        /// The cap, in bytes.
        limit: u64,
    },

    /// Loading the library in a worker process killed or hung the worker:
    /// its ELF constructors (or the loader) crashed before any check could run.
    #[error("{} is refused: loading it {ended} (its ELF constructors run on load)", path.display())]
    ConstructorCrashed {
        /// The file.
        path: PathBuf,
        /// What happened: the signal, exit status, or time it hung for.
        ended: String,
    },

    /// A worker process's loader refused the library (the same checks as
    /// a load in the host); `kind` is the refusal's own kind.
    #[error("{message}")]
    RefusedByWorker {
        /// The loader's error kind (`no_root_module`, `incompatible_sdk`, …).
        kind: &'static str,
        /// Its message.
        message: String,
    },

    /// A worker process could not be started or spoke out of turn.
    #[error("worker process: {reason}")]
    Worker {
        /// What went wrong.
        reason: String,
    },

    // Artifacts: where a plugin comes from, and its integrity.
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

    /// A checksum is required for this artifact and none was given.
    #[error("artifact `{location}` needs a sha256 checksum: {reason}")]
    ChecksumRequired {
        /// The location given.
        location: String,
        /// Why it is required here.
        reason: &'static str,
    },

    /// The checksum given is not a sha256 digest.
    #[error(transparent)]
    InvalidChecksum(#[from] ParseDigestError),

    /// The bytes are not a shared object this host can load.
    #[error("{} is not a loadable plugin library: {reason}", path.display())]
    ArtifactFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The artifact is not a regular file (a FIFO, device, directory, or a
    /// symlink where none may be).
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },

    /// The artifact's declared type is not a native shared library.
    #[error(
        "artifact_type `{artifact_type}` is not supported: spearlet runs native plugins \
         (shared libraries); accepted types are {accepted}"
    )]
    UnsupportedArtifactType {
        /// The type given.
        artifact_type: String,
        /// The accepted types, comma-separated.
        accepted: &'static str,
    },

    /// The location is not one spearlet can fetch from.
    #[error("unsupported artifact location `{location}`: {reason}")]
    UnsupportedLocation {
        /// The location given.
        location: String,
        /// Why, and what is accepted.
        reason: String,
    },

    /// The location is outside what the configuration allows.
    #[error("permission denied for artifact `{location}`: {reason}")]
    PermissionDenied {
        /// The location given.
        location: String,
        /// Why.
        reason: String,
    },

    /// An http(s) location (or a redirect it led to) is on a host the
    /// configuration does not allow: refused before any connection, so a
    /// client cannot make the server reach into networks only it can see.
    #[error(
        "permission denied for artifact `{location}`: host `{host}` is not in \
         `artifacts.allowed_hosts` (the hosts http(s) artifacts may come from; none by default)"
    )]
    HostNotAllowed {
        /// The location given.
        location: String,
        /// The host refused, as `HOST:PORT`.
        host: String,
    },

    /// Downloading failed after every attempt allowed.
    #[error("downloading {url} failed after {} attempt(s): {}", attempts.len(), attempts.join("; "))]
    DownloadFailed {
        /// What was fetched.
        url: String,
        /// What each attempt ran into, in order.
        attempts: Vec<String>,
    },

    /// The artifact is larger than the configured limit.
    #[error("artifact `{location}` is too large: {size} bytes, the limit is {limit}")]
    ArtifactTooLarge {
        /// The location given.
        location: String,
        /// Its size as far as it was read (or as announced).
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    // The cluster (the SMS).
    /// An artifact needs the SMS file API (an `smsfile://` location to
    /// fetch, or a local file to publish to the cluster) but no SMS HTTP
    /// address is configured.
    #[error(
        "artifact `{location}` needs the SMS file API {purpose}, but no SMS HTTP address \
         is configured (set `sms.http` or pass --sms-http)"
    )]
    SmsNotConfigured {
        /// The location given.
        location: String,
        /// What the file API was needed for.
        purpose: &'static str,
    },

    /// The SMS could not be reached, or did not answer in time.
    #[error("the SMS at {endpoint} is unreachable ({call}): {reason}")]
    SmsUnavailable {
        /// The call that failed.
        call: SmsCall,
        /// The SMS address.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },

    /// The SMS answered, and refused the call.
    #[error("the SMS at {endpoint} refused {call}: {message}")]
    SmsRefused {
        /// The call refused.
        call: SmsCall,
        /// The SMS address.
        endpoint: String,
        /// What the SMS said.
        message: String,
    },

    /// The SMS knows the task, but this node cannot run what it registered.
    #[error("task `{task_id}` is registered at the SMS but cannot run on this node: {reason}")]
    TaskNotRunnableHere {
        /// The id asked for.
        task_id: String,
        /// Why not.
        reason: String,
    },

    // Task versions and the durable state.
    /// A NEW_TASK names a task whose plugin is evidently not the one the
    /// request's artifact holds: running it would run stale code.
    #[error(
        "task `{name}` ({task_id}) runs another version of its plugin: {reason}. \
         To switch the task to the new one, pass --upgrade (invocation metadata \
         spearlet.upgrade=true) or run `spearlet task upgrade {task_id} --artifact …`; \
         to keep both, use another task name"
    )]
    StaleArtifact {
        /// The task's name.
        name: String,
        /// Its id.
        task_id: String,
        /// How the artifact differs.
        reason: String,
    },

    /// An upgrade's plugin lacks functions the running version exports.
    #[error(
        "the new version of task `{task_id}` lacks functions the running one exports: {}; \
         clients calling them would fail (pass allow_removed / --allow-removed to upgrade anyway)",
        missing.join(", ")
    )]
    FunctionsRemoved {
        /// The task.
        task_id: String,
        /// Functions missing, or changed from unary to stream or back.
        missing: Vec<String>,
    },

    /// A rollback was asked for a task with no previous version.
    #[error("task `{task_id}` has no previous version to roll back to")]
    NoPreviousVersion {
        /// The task.
        task_id: String,
    },

    /// The task was deleted or switched by someone else during the operation.
    #[error("task `{task_id}` changed while this operation ran (deleted, or switched by another upgrade); nothing was changed by this one")]
    TaskChanged {
        /// The task.
        task_id: String,
    },

    /// The state database was written by a newer spearlet.
    #[error(
        "{} was written by a newer spearlet (state schema {found}; this one reads up to {supported}): \
         run that version, or move the file aside to start with no saved tasks",
        path.display()
    )]
    StateSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema.
        found: u64,
        /// The newest this build reads.
        supported: u64,
    },

    /// The state database could not be read or written.
    #[error("cannot {action} in {}: {reason}", path.display())]
    State {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// A state journal holds a record that cannot be read with records
    /// after it that can: no crash leaves that (a torn write is only ever
    /// the last), so nothing is dropped without the operator deciding.
    #[error(
        "the state journal {} is corrupt at byte {offset} ({reason}), with records after it; \
         to start, cut it there (`truncate -s {offset} FILE`: the records from that byte on are lost) \
         or move it away (all the records it holds are lost)",
        path.display()
    )]
    JournalCorrupt {
        /// The journal file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// Why it cannot be read.
        reason: String,
    },

    /// The state journal cannot be folded into the database and has
    /// reached its limit: new tasks and ASYNC executions are refused until
    /// persistence recovers, rather than the journal growing without bound.
    #[error(
        "the state journal holds {bytes} bytes not yet in the database, and the next record would take it \
         past its limit of {limit} bytes (tasks.max_journal_bytes): persistence is failing ({reason}); \
         try again once it recovers"
    )]
    JournalFull {
        /// What the journal holds.
        bytes: u64,
        /// `tasks.max_journal_bytes`.
        limit: u64,
        /// Why it cannot be folded.
        reason: String,
    },

    // Requests, tasks and executions.
    /// The request is malformed: a required field is missing or a value is invalid.
    #[error("invalid request: {field}: {reason}")]
    InvalidRequest {
        /// The offending field, as named on the wire.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// No task of this host has an instance of that id.
    #[error("no instance `{instance_id}` on this node")]
    InstanceNotFound {
        /// The id asked for.
        instance_id: String,
    },

    /// A stream frame (SSF v1, on the node's WebSocket) is malformed.
    #[error("invalid stream frame: {reason}")]
    InvalidFrame {
        /// What is wrong with it.
        reason: String,
    },

    /// A parameter the client marked required has no value.
    #[error("parameter `{name}` is marked required but has no value")]
    MissingParameter {
        /// The parameter.
        name: String,
    },

    /// A parameter the function does not declare, for a function that does
    /// not take extra ones (`#[function(extra_params)]`): refused before
    /// anything runs, so a misspelled name is not mistaken for a missing one.
    #[error(
        "unknown parameter `{name}` of `{function}`{}",
        suggestion.as_deref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
    )]
    UnknownParameter {
        /// The function called.
        function: String,
        /// The parameter it does not take.
        name: String,
        /// The declared parameter closest to `name`, if one is close.
        suggestion: Option<String>,
    },

    /// `create_if_not_exists` was set for an unknown task, without an artifact to create it from.
    #[error("task `{task_id}` does not exist and cannot be created without an artifact_spec")]
    ArtifactSpecRequired {
        /// The id asked for.
        task_id: String,
    },

    /// No task has this id (locally, or in the SMS when one is configured).
    #[error("task `{task_id}` not found (and create_if_not_exists is false)")]
    TaskNotFound {
        /// The id asked for.
        task_id: String,
    },

    /// A task name is taken by another task.
    #[error("task name `{name}` is already used by task `{existing}`")]
    TaskNameTaken {
        /// The name.
        name: String,
        /// The task that has it.
        existing: String,
    },

    /// The task has executions running and the request did not force it.
    #[error("task `{task_id}` has {running} execution(s) running; pass force to delete it anyway")]
    TaskBusy {
        /// The task.
        task_id: String,
        /// Executions in progress.
        running: usize,
    },

    /// The task was deleted while the call waited for one of its instances.
    #[error("task `{task_id}` was deleted; its queued executions are cancelled")]
    TaskDeleted {
        /// The task.
        task_id: String,
    },

    /// No execution has this id.
    #[error("execution `{execution_id}` not found")]
    ExecutionNotFound {
        /// The id asked for.
        execution_id: String,
    },

    /// A caller-chosen execution id names an execution of something else:
    /// reusing an id returns the earlier execution only for the same task,
    /// function and parameters (a retry), never for another call.
    #[error(
        "execution id `{execution_id}` is already used by an execution of `{function}` \
         on task `{task_id}`, and this call differs in its {conflict}; choose another id"
    )]
    ExecutionIdInUse {
        /// The id.
        execution_id: String,
        /// The earlier execution's task.
        task_id: String,
        /// The earlier execution's function.
        function: String,
        /// What differs: `task`, `function` or `parameters`.
        conflict: &'static str,
    },

    /// STREAM mode was asked of InvokeFunction.
    #[error(
        "execution_mode STREAM must be called through the StreamFunction RPC, not InvokeFunction"
    )]
    UseStreamFunction,

    /// The call did not finish before its deadline.
    #[error("execution `{execution_id}` timed out after {elapsed_ms} ms")]
    DeadlineExceeded {
        /// The execution.
        execution_id: String,
        /// How long it ran.
        elapsed_ms: u64,
    },

    /// Every instance of the task stayed busy until the call's deadline.
    #[error("task `{task_id}` has all {max} instances busy; try again later")]
    PoolExhausted {
        /// The task.
        task_id: String,
        /// Its instance limit.
        max: usize,
    },

    /// Too many executions are waiting to run.
    #[error("{pending} executions are already pending (limit {limit}); try again later")]
    TooManyPending {
        /// Executions pending now.
        pending: usize,
        /// The configured limit.
        limit: usize,
    },

    /// Too many abandoned calls (timed out or force-cancelled, their plugins
    /// still running) pin instances and threads; new calls wait for them.
    #[error(
        "task `{task_id}` refuses new calls: {quarantined} abandoned call(s) still run in the \
         {scope}'s quarantine (limit {limit}); their plugin ignores cancellation"
    )]
    QuarantineFull {
        /// The task.
        task_id: String,
        /// `task` or `host`: which bound was reached.
        scope: &'static str,
        /// Instances quarantined in that scope.
        quarantined: usize,
        /// The bound.
        limit: usize,
    },

    /// The host is shutting down and takes no new calls.
    #[error(
        "this spearlet is stopping and takes no new calls; try another node or try again later"
    )]
    HostStopping,

    // Everything else.
    /// A task or thread spearlet runs in the background could not start,
    /// or ended without finishing its work (it panicked or was cancelled).
    #[error("{what} did not finish: {reason}")]
    Background {
        /// What it was doing.
        what: &'static str,
        /// How it ended.
        reason: String,
    },

    /// A network endpoint spearlet serves or calls could not be set up or
    /// failed while serving: a listener, TLS, the transport, a client.
    #[error("{what}: {reason}")]
    Endpoint {
        /// Which endpoint.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// The artifact cache's copy of a digest kept disappearing or changing
    /// while it was being loaded (something else is writing the cache).
    #[error("the cached copy of {digest} kept disappearing or changing while it was loaded")]
    CacheUnstable {
        /// The digest (`sha256:<hex>`).
        digest: String,
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

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
