//! A loaded plugin library: identity, function table, entry points.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use foldhash::fast::RandomState;

use spear_plugin_sdk::ffi::abi::{RResult, RawLibrary};
use spear_plugin_sdk::ffi::{
    FfiCallContext, FfiCallOutcome, FfiError, FfiInstance, FfiValue, PluginModRef,
};

use super::elf;
use super::table::{default_handle, function_infos, index_by_name};
pub use super::table::{FunctionHandle, FunctionInfo, FunctionKind};
use super::verified::{anonymous_file, VerifiedFile};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::signature::Accepts;

/// Every library loaded (or refused) in this process, by digest. Libraries
/// are never unloaded, so neither are these entries.
///
/// Each digest has a lock of its own, held while that library is checked,
/// mapped and initialised (plugin code runs then); the table's own lock is
/// held only to find a digest's entry, so one slow constructor stalls only
/// the loads of the same bytes.
static LOADED: LazyLock<Mutex<HashMap<Sha256Digest, Arc<LoadSlot>>>> =
    LazyLock::new(Mutex::default);

/// One digest's load: empty until it ends (or while it may be retried).
type LoadSlot = Mutex<Option<Result<Arc<Plugin>>>>;

fn entry(digest: &Sha256Digest) -> Arc<LoadSlot> {
    let mut table = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(table.entry(*digest).or_default())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A plugin's `call` (ABI 1.0 on): a panic comes back as code `panic`.
pub(super) type CallFn =
    unsafe extern "C" fn(FfiInstance, u32, &FfiCallContext<'_>) -> RResult<FfiValue, FfiError>;

/// A plugin's `call_outcome` (ABI 1.3 on): a panic is its own variant.
pub(super) type CallOutcomeFn =
    unsafe extern "C" fn(FfiInstance, u32, &FfiCallContext<'_>) -> FfiCallOutcome;

/// The entry point calls go through, chosen once at load: the newest the
/// plugin has. A call then costs one branch on which it is, predicted the
/// same way on every call to the plugin.
#[derive(Clone, Copy)]
pub(super) enum CallEntry {
    /// ABI 1.3's `call_outcome`: whether the function panicked is in the
    /// outcome's type, whatever code an error carries.
    Outcome(CallOutcomeFn),
    /// The `call` of a plugin before ABI 1.3, which has nothing but the
    /// error code to say it panicked: only for such a plugin is an error
    /// with code `panic` taken for a panic.
    Legacy(CallFn),
}

impl CallEntry {
    /// The newest entry point `module` provides.
    fn of(module: PluginModRef) -> CallEntry {
        match module.call_outcome() {
            Some(call) => CallEntry::Outcome(call),
            // A plugin that predates ABI 1.3.
            None => CallEntry::Legacy(module.call()),
        }
    }
}

/// A plugin library, loaded and checked.
pub struct Plugin {
    path: PathBuf,
    digest: Sha256Digest,
    name: String,
    version: String,
    sdk_version: String,
    abi_version: String,
    functions: Vec<FunctionInfo>,
    names: Box<[Arc<str>]>,
    /// The parameter names each function takes, read from its signature
    /// at load: a call's names are checked against these, not reparsed.
    accepts: Box<[Accepts]>,
    /// Looked up on every call: hashed with foldhash, not SipHash (the
    /// names are the plugin's own, not an attacker's keys to collide).
    by_name: HashMap<String, FunctionHandle, RandomState>,
    /// The function the plugin marks `#[function(default)]` (ABI 1.2).
    default_function: Option<FunctionHandle>,
    needed: Vec<String>,
    /// The loaded code; `None` for a plugin a worker process loaded and
    /// described, whose code never runs in this process.
    module: Option<PluginModRef>,
    pub(super) call: Option<CallEntry>,
    /// For a plugin described by a worker: the verified bytes, kept open
    /// so that every worker started for it loads exactly these.
    held: Option<std::fs::File>,
    /// The plugin's memory counter (SDK feature `alloc-stats`), if it
    /// exports one: read after each call, on the thread that made it.
    pub(super) alloc_stats: Option<AllocStatsFn>,
    /// Another handle on the library, for symbols besides the root module
    /// (a library is never unloaded while abi_stable's own handle lives).
    symbols: Option<RawLibrary>,
    /// Root-module fields the library provides (see `ABI_MINORS`).
    root_fields: usize,
}

/// What a plugin exports as `spear_plugin_alloc_stats`.
pub(super) type AllocStatsFn = extern "C" fn() -> spear_plugin_sdk::ffi::FfiAllocStats;

/// What a plugin exports as `spear_plugin_panic_probe`.
type PanicProbeFn = extern "C" fn() -> RResult<(), FfiError>;

/// What a plugin exports as `spear_plugin_panic_outcome_probe` (SDKs of
/// ABI 1.3 on).
type PanicOutcomeProbeFn = extern "C" fn() -> FfiCallOutcome;

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("digest", &self.digest)
            .field("functions", &self.functions.len())
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Loads the plugin at `path`: its bytes are copied into a private
    /// anonymous file while being hashed, and that copy is what the dynamic
    /// loader maps (see [`VerifiedFile`]), so a later change to `path` can
    /// never reach the loaded code.
    ///
    /// With `expected`, a different digest is refused before anything is
    /// loaded ([`Error::ChecksumMismatch`]). The returned plugin records the
    /// digest of what was loaded either way.
    ///
    /// # Errors
    ///
    /// One distinct variant per reason: [`Error::Io`],
    /// [`Error::NotRegularFile`], [`Error::ChecksumMismatch`],
    /// [`Error::ArtifactFormat`], [`Error::UnverifiedDependency`],
    /// [`Error::NotSharedLibrary`], [`Error::NoRootModule`],
    /// [`Error::LayoutUnchecked`], [`Error::IncompatibleSdk`],
    /// [`Error::LayoutMismatch`], [`Error::RootModuleFailed`],
    /// [`Error::NoFunctions`], [`Error::DuplicateFunction`].
    ///
    /// A digest this process has loaded (or refused) before is answered from
    /// memory without touching the dynamic loader again.
    pub fn load_verified(path: &Path, expected: Option<&Sha256Digest>) -> Result<Arc<Plugin>> {
        let real = path.canonicalize().map_err(|e| Error::io(path, e))?;
        let copy = anonymous_file("spearlet-plugin")?;
        let file = VerifiedFile::copy(&real, copy, u64::MAX)?;
        file.expect(expected)?;
        Plugin::load(file)
    }

    /// Loads, in a worker process, the verified copy its host holds open
    /// at `source` (`/proc/PID/fd/N`): copied and hashed again here, and
    /// refused unless the digest is `expected`.
    ///
    /// # Errors
    ///
    /// As [`Plugin::load_verified`].
    pub fn load_handed_over(source: &Path, expected: &Sha256Digest) -> Result<Arc<Plugin>> {
        let copy = anonymous_file("spearlet-plugin")?;
        let file = VerifiedFile::copy_handed_over(source, copy, u64::MAX)?;
        file.expect(Some(expected))?;
        Plugin::load(file)
    }

    /// Maps, in a worker process, the verified copy its host holds open at
    /// `source` — nothing more: the library's ELF constructors run, and
    /// that is what is being tried. It is not hashed again (the host
    /// hashed these very bytes, the file it holds open) and none of the
    /// plugin checks run (the host's own load makes them); its
    /// dependencies are checked first, so that nothing unverified is
    /// mapped with it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], [`Error::ArtifactFormat`],
    /// [`Error::UnverifiedDependency`], [`Error::NotSharedLibrary`].
    pub fn probe_handed_over(source: &Path) -> Result<()> {
        let file = std::fs::File::open(source).map_err(|e| Error::io(source, e))?;
        let deps = elf::dependencies(&file).map_err(|reason| Error::ArtifactFormat {
            path: source.to_owned(),
            reason,
        })?;
        if let Some(reason) = deps.refusal() {
            return Err(Error::UnverifiedDependency {
                path: source.to_owned(),
                reason,
            });
        }
        match RawLibrary::load_at(source) {
            // Never unloaded: the worker exists to have tried this.
            Ok(library) => {
                std::mem::forget(library);
                Ok(())
            }
            Err(e) => Err(Error::NotSharedLibrary {
                path: source.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Loads bytes already verified into a file spearlet owns.
    ///
    /// # Errors
    ///
    /// As [`Plugin::load_verified`], from the dependency check on.
    pub fn load(file: VerifiedFile) -> Result<Arc<Plugin>> {
        let entry = entry(&file.digest());
        let mut slot = lock(&entry);
        if let Some(outcome) = slot.as_ref() {
            return outcome.clone();
        }
        let outcome = load_new(file);
        if !matches!(
            outcome,
            Err(Error::NotSharedLibrary { .. } | Error::Io { .. })
        ) {
            // Everything else is a property of the bytes: answer it again.
            *slot = Some(outcome.clone());
        }
        outcome
    }

    /// The plugin with this digest, if this process has already loaded it.
    ///
    /// Lets a caller that knows the digest skip reading the file. Never
    /// waits for a load in progress.
    pub fn already_loaded(digest: &Sha256Digest) -> Option<Arc<Plugin>> {
        let entry = {
            let table = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(table.get(digest)?)
        };
        let slot = entry.try_lock().ok()?;
        slot.as_ref()
            .and_then(|outcome| outcome.as_ref().ok().cloned())
    }

    fn from_module(
        file: &VerifiedFile,
        module: PluginModRef,
        abi_version: String,
    ) -> Result<Plugin> {
        let name = module.name().as_str().to_owned();
        // The library is open already: this only takes another reference.
        let symbols = RawLibrary::load_at(&file.loader_path()).ok();
        let functions = function_infos(file, module)?;
        if functions.is_empty() {
            return Err(Error::NoFunctions {
                path: file.path().to_owned(),
                plugin: name,
            });
        }
        let by_name = index_by_name(&name, &functions)?;
        // A plugin that predates ABI 1.2 marks no default.
        let marked = module
            .default_function()
            .and_then(|d| d.into_option())
            .map(|i| i as usize);
        let default_function = default_handle(&name, &functions, marked).map_err(|details| {
            Error::RootModuleFailed {
                path: file.path().to_owned(),
                details,
            }
        })?;
        Ok(Plugin {
            path: file.path().to_owned(),
            digest: file.digest(),
            version: module.version().as_str().to_owned(),
            sdk_version: module.sdk_version().as_str().to_owned(),
            abi_version,
            name,
            names: functions
                .iter()
                .map(|f| Arc::from(f.name.as_str()))
                .collect(),
            accepts: functions
                .iter()
                .map(|f| Accepts::of(&f.signature))
                .collect(),
            needed: Vec::new(),
            functions,
            by_name,
            default_function,
            call: Some(CallEntry::of(module)),
            held: None,
            alloc_stats: symbols
                .as_ref()
                .and_then(|l| optional_symbol(l, spear_plugin_sdk::ffi::ALLOC_STATS_SYMBOL)),
            symbols,
            root_fields: spear_plugin_sdk::ffi::provided_fields(module),
            module: Some(module),
        })
    }

    /// The memory of the last call this thread made into the plugin:
    /// `(bytes allocated, peak bytes live)`. `None` when the plugin does not
    /// count (built without the SDK's `alloc-stats` feature, or before it).
    pub fn call_memory(&self) -> Option<(u64, u64)> {
        self.alloc_stats.map(|read| {
            let stats = read();
            (stats.allocated, stats.peak)
        })
    }

    /// Root-module fields the library provides: which 1.x versions' fields
    /// it has (see `spear_plugin_sdk::ffi::ABI_MINORS`).
    pub fn root_fields(&self) -> usize {
        self.root_fields
    }

    /// Panics inside the plugin's panic barrier (the SDK's probe) and says
    /// what came back: `Ok` is the caught panic's message, as it should
    /// be. `None` when the plugin exports no probe (hand-written, or built
    /// before the SDK had one). A library built with `panic = "abort"`
    /// aborts the process here: call it only where that is the verdict
    /// (`spearlet plugin check`'s child process).
    ///
    /// The typed probe (ABI 1.3 on) says it panicked by its outcome's
    /// variant; only a plugin that predates it is judged by the code of
    /// the error its older probe returns.
    pub fn probe_panic_barrier(&self) -> Option<std::result::Result<String, String>> {
        let symbols = self.symbols.as_ref()?;
        let typed: Option<PanicOutcomeProbeFn> =
            optional_symbol(symbols, spear_plugin_sdk::ffi::PANIC_OUTCOME_PROBE_SYMBOL);
        if let Some(probe) = typed {
            return Some(match probe() {
                FfiCallOutcome::Panicked(message) => Ok(message.into_string()),
                FfiCallOutcome::Failed(e) => Err(format!(
                    "the probe returned an error (`{}`: {}) instead of its panic",
                    e.code, e.message
                )),
                FfiCallOutcome::Returned(_) => {
                    Err("the probe returned without its panic".to_owned())
                }
            });
        }
        let probe: PanicProbeFn =
            optional_symbol(symbols, spear_plugin_sdk::ffi::PANIC_PROBE_SYMBOL)?;
        Some(match probe() {
            RResult::RErr(e) => {
                let e = spear_plugin_sdk::PluginError::from(e);
                if e.code == spear_plugin_sdk::PluginError::PANIC {
                    Ok(e.message)
                } else {
                    Err(format!(
                        "the probe answered `{}` instead of `panic`: {}",
                        e.code, e.message
                    ))
                }
            }
            RResult::ROk(()) => Err("the probe returned without its panic".to_owned()),
        })
    }

    /// Resolves a function by name, once; keep the handle for calls.
    ///
    /// # Errors
    ///
    /// [`Error::FunctionNotFound`], listing the names the plugin does have.
    pub fn function(&self, name: &str) -> Result<FunctionHandle> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::FunctionNotFound {
                plugin: self.name.clone(),
                function: name.to_owned(),
                available: self
                    .functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The function the plugin marks `#[function(default)]`, if it marks
    /// one (a plugin built before ABI 1.2 never does). Only a hint for
    /// resolving a task's default entry: see
    /// [`Task::function`](crate::task::Task::function).
    pub fn default_function(&self) -> Option<FunctionHandle> {
        self.default_function
    }

    /// The function at `index` of the table (how a worker process is told
    /// which function to call).
    pub fn function_at(&self, index: usize) -> Option<FunctionHandle> {
        let info = self.functions.get(index)?;
        Some(FunctionHandle {
            index: u32::try_from(index).ok()?,
            kind: info.kind,
        })
    }

    /// Refuses a parameter in `given` that `function` does not take
    /// (unless it takes extra ones): a few string compares on a call whose
    /// names are all declared.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownParameter`], with the closest declared name.
    #[inline]
    pub fn check_params(
        &self,
        function: FunctionHandle,
        given: &[(String, crate::Value)],
    ) -> Result<()> {
        self.accepts[function.index()].check(self.function_name(function), given)
    }

    /// The name of a function resolved from this plugin.
    pub fn function_name(&self, function: FunctionHandle) -> &Arc<str> {
        &self.names[function.index()]
    }

    /// The libraries it needs (`DT_NEEDED`): only the C runtime's.
    pub fn needed_libraries(&self) -> &[String] {
        &self.needed
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's own version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `spear-plugin-sdk` version it was built with.
    pub fn sdk_version(&self) -> &str {
        &self.sdk_version
    }

    /// The plugin ABI version the plugin declares (checked against the host's).
    pub fn abi_version(&self) -> &str {
        &self.abi_version
    }

    /// Its function table, in the plugin's order.
    pub fn functions(&self) -> &[FunctionInfo] {
        &self.functions
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sha256 of the bytes that were loaded.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// The loaded root module; `None` for a plugin only described here.
    pub(super) fn module(&self) -> Option<PluginModRef> {
        self.module
    }

    /// Whether its code is loaded in this process (else a worker process
    /// loaded it: see [`Plugin::described`]).
    pub fn is_loaded_here(&self) -> bool {
        self.module.is_some()
    }

    /// A plugin that a worker process loaded from `file` and described:
    /// the same checks of the file as a load here (ELF dependencies), the
    /// worker's description of its table, and no code in this process.
    /// The file stays open for the plugin's life, so every worker started
    /// for it loads these very bytes ([`Plugin::worker_source`]).
    ///
    /// # Errors
    ///
    /// [`Error::ArtifactFormat`], [`Error::UnverifiedDependency`],
    /// [`Error::NoFunctions`], [`Error::DuplicateFunction`].
    pub fn described(file: VerifiedFile, description: PluginDescription) -> Result<Arc<Plugin>> {
        let deps = checked_dependencies(&file)?;
        let PluginDescription {
            name,
            version,
            sdk_version,
            abi_version,
            root_fields,
            functions,
            default_function,
        } = description;
        if functions.is_empty() {
            return Err(Error::NoFunctions {
                path: file.path().to_owned(),
                plugin: name,
            });
        }
        let by_name = index_by_name(&name, &functions)?;
        let default_function =
            default_handle(&name, &functions, default_function).map_err(|details| {
                Error::RootModuleFailed {
                    path: file.path().to_owned(),
                    details,
                }
            })?;
        Ok(Arc::new(Plugin {
            path: file.path().to_owned(),
            digest: file.digest(),
            name,
            version,
            sdk_version,
            abi_version,
            names: functions
                .iter()
                .map(|f| Arc::from(f.name.as_str()))
                .collect(),
            accepts: functions
                .iter()
                .map(|f| Accepts::of(&f.signature))
                .collect(),
            functions,
            by_name,
            default_function,
            needed: deps.needed,
            module: None,
            call: None,
            alloc_stats: None,
            symbols: None,
            root_fields,
            held: Some(file.into_file()),
        }))
    }

    /// Where a worker process of this host opens the verified bytes of a
    /// plugin [described](Plugin::described) here.
    pub fn worker_source(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd;
        self.held
            .as_ref()
            .map(|f| PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd())))
    }
}

/// What a worker process reports of a plugin it loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The SDK version it was built with.
    pub sdk_version: String,
    /// Its plugin ABI version.
    pub abi_version: String,
    /// Root-module fields it provides.
    pub root_fields: usize,
    /// Its function table.
    pub functions: Vec<FunctionInfo>,
    /// The index in `functions` of the function it marks
    /// `#[function(default)]`, if any.
    pub default_function: Option<usize>,
}

/// The library's `DT_NEEDED` and search paths, refused unless it needs
/// nothing spearlet did not verify.
fn checked_dependencies(file: &VerifiedFile) -> Result<elf::Dependencies> {
    let deps = elf::dependencies(file.file()).map_err(|reason| Error::ArtifactFormat {
        path: file.path().to_owned(),
        reason,
    })?;
    if let Some(reason) = deps.refusal() {
        return Err(Error::UnverifiedDependency {
            path: file.path().to_owned(),
            reason,
        });
    }
    Ok(deps)
}

/// Dependencies, then dlopen, then abi_stable's version and layout
/// checks, then the plugin's own table.
fn load_new(file: VerifiedFile) -> Result<Arc<Plugin>> {
    let deps = checked_dependencies(&file)?;
    let outcome = super::root_module::open(&file).and_then(|(module, abi)| {
        let mut plugin = Plugin::from_module(&file, module, abi)?;
        plugin.needed = deps.needed;
        Ok(Arc::new(plugin))
    });
    if !matches!(outcome, Err(Error::NotSharedLibrary { .. })) {
        // The dynamic loader accepted the file, so it stays mapped
        // (refused or not) under the descriptor's name.
        file.keep_open();
    }
    outcome
}

/// A symbol the SDK exports besides the root module (the memory counter,
/// the panic-barrier probe), if the plugin has it.
fn optional_symbol<F: Copy>(library: &RawLibrary, symbol: &str) -> Option<F> {
    let name = format!("{symbol}\0");
    // SAFETY: the SDK exports these symbols (under these names, only from
    // `export_plugin!`) with exactly the function types the callers read
    // them as (`AllocStatsFn`, `PanicProbeFn`, `PanicOutcomeProbeFn`); the
    // library stays loaded for the life of the process.
    let symbol = unsafe { library.get::<F>(name.as_bytes()) }.ok()?;
    Some(*symbol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spearlet_test_artifacts::Artifact;

    fn echo_file() -> VerifiedFile {
        let copy = anonymous_file("spearlet-test").unwrap();
        VerifiedFile::copy(Artifact::Echo.path(), copy, u64::MAX).unwrap()
    }

    fn description(default_function: Option<usize>) -> PluginDescription {
        PluginDescription {
            name: "echo".into(),
            version: "0.1.0".into(),
            sdk_version: "0.1.0".into(),
            abi_version: "1.3.0".into(),
            root_fields: 10,
            functions: ["echo", "upper"]
                .iter()
                .map(|name| FunctionInfo {
                    name: (*name).to_owned(),
                    kind: FunctionKind::Unary,
                    description: String::new(),
                    signature: "()".into(),
                    blocking: false,
                })
                .collect(),
            default_function,
        }
    }

    /// A worker's description carries the default function to the host.
    #[test]
    fn a_described_plugin_keeps_its_default_function() {
        let plugin = Plugin::described(echo_file(), description(Some(1))).unwrap();
        let default = plugin.default_function().expect("described with one");
        assert_eq!(plugin.function_name(default).as_ref(), "upper");
        let plugin = Plugin::described(echo_file(), description(None)).unwrap();
        assert!(plugin.default_function().is_none());
    }

    #[test]
    fn a_default_outside_the_table_is_refused() {
        match Plugin::described(echo_file(), description(Some(2))) {
            Err(Error::RootModuleFailed { details, .. }) => assert!(
                details.contains("marks function number 2 as its default, but it has 2"),
                "{details}"
            ),
            other => panic!("expected RootModuleFailed, got {other:?}"),
        }
    }
}
