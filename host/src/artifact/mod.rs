//! From an [`ArtifactSpec`] to a loaded, verified plugin.
//!
//! This module is spearlet's security boundary: loading a shared library runs
//! its code with the host's privileges, so **nothing is loaded unless its
//! sha256 was verified on the exact bytes being loaded, and it came from an
//! allowed place**:
//!
//! - local files only from configured roots, after resolving `..` and
//!   symlinks; a checksum is checked when given (or required, by config);
//! - `http(s)://` only from hosts `artifacts.allowed_hosts` lists (checked
//!   before any connection, and again on every redirect), SMS files only
//!   from the configured SMS; both only with a checksum; downloads are
//!   hashed as they stream, refused on mismatch (never retried, temp file
//!   removed), and cached read-only under their digest;
//! - local files are ingested: copied into the cache while being hashed, and
//!   the copy is loaded, so what is mapped is exactly what was hashed;
//! - a cached file is hashed again as it is opened for loading, unless that
//!   digest is already loaded in this process — then there is no I/O at all;
//! - loaded plugins no task uses are let go past `artifacts.max_unused_loaded`,
//!   least recently used first (see `loaded.rs`);
//! - every file-system call runs on a blocking thread, never an async worker.

mod cache;
mod fetch;
mod loaded;
mod location;
mod remote;
mod source;
mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;
use url::Url;

pub use crate::config::AllowedHosts;
pub use crate::counters::{ArtifactCounts, ArtifactTelemetry};
pub use cache::{ArtifactCache, CachePin, CacheStats};
pub use fetch::Progress;
pub use loaded::LoadedStats;
pub use source::SourceFile;
pub use spec::{ArtifactSpec, ACCEPTED_TYPES};

use crate::config::{ArtifactConfig, Config};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::isolate::{Isolation, Workers};
use crate::loader::{Plugin, VerifiedFile};
use location::Location;

/// One download of a digest, awaited by every request that wants it.
type Flight = Arc<OnceCell<Result<PathBuf>>>;

/// A plugin and, when it came from a local file, that file's identity as
/// it was when its bytes were read.
pub(crate) type Sourced = (Arc<Plugin>, Option<SourceFile>);

/// Locates, fetches, verifies, caches and loads artifacts.
#[derive(Debug)]
pub struct ArtifactStore {
    config: ArtifactConfig,
    /// The SMS file API, for `smsfile://` locations.
    sms_http: Option<Url>,
    /// Where `http(s)://` locations may point.
    allowed: Arc<AllowedHosts>,
    cache: ArtifactCache,
    client: reqwest::Client,
    telemetry: Arc<ArtifactTelemetry>,
    in_flight: Mutex<HashMap<Sha256Digest, Flight>>,
    /// Local locations already confined to a root that yielded a digest now
    /// loaded, with the file's identity then: asking for the same location
    /// and digest again reads nothing, not even the file's metadata. Keyed
    /// by location, so that a lookup borrows the request's string.
    resolved: Mutex<Resolved>,
    /// Worker processes: where every first load runs, and where
    /// process-tier plugins live.
    workers: Arc<Workers>,
    first_load_in_worker: bool,
}

/// Entries of the resolved-locations memo before it starts over.
const RESOLVED_MEMO: usize = 4096;

/// The resolved-locations memo: per location, each digest it yielded and
/// the file's identity when it did.
#[derive(Debug, Default)]
struct Resolved {
    by_location:
        HashMap<String, Vec<(Sha256Digest, Option<SourceFile>)>, foldhash::fast::RandomState>,
    entries: usize,
}

impl Resolved {
    fn get(&self, location: &str, digest: &Sha256Digest) -> Option<Option<SourceFile>> {
        self.by_location
            .get(location)?
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, source)| *source)
    }

    /// Remembers what `location` yielded, replacing what it yielded before
    /// with the same digest (read again: the file's identity may be new).
    fn insert(&mut self, location: &str, digest: Sha256Digest, source: Option<SourceFile>) {
        if self.entries >= RESOLVED_MEMO {
            self.by_location.clear();
            self.entries = 0;
        }
        let seen = self.by_location.entry(location.to_owned()).or_default();
        match seen.iter_mut().find(|(d, _)| *d == digest) {
            Some(entry) => entry.1 = source,
            None => {
                seen.push((digest, source));
                self.entries += 1;
            }
        }
    }
}

impl ArtifactStore {
    /// Opens the store (and its cache under `config.data_dir`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the cache directories cannot be created;
    /// [`Error::InvalidRequest`] for an invalid `artifacts.allowed_hosts`.
    pub fn new(config: &Config) -> Result<Self> {
        let allowed = Arc::new(
            AllowedHosts::parse(&config.artifacts.allowed_hosts).map_err(|reason| {
                Error::InvalidRequest {
                    field: "artifacts.allowed_hosts",
                    reason,
                }
            })?,
        );
        let sms_http = config
            .sms
            .http
            .clone()
            .or_else(|| config.artifacts.sms_http.clone());
        let cache = ArtifactCache::open(&config.data_dir, config.artifacts.cache_max_bytes)?;
        cache.limit_unused_loaded(config.artifacts.max_unused_loaded);
        let client = reqwest::Client::builder()
            .user_agent(concat!("spearlet/", env!("CARGO_PKG_VERSION")))
            .redirect(remote::redirects(Arc::clone(&allowed), sms_http.clone()))
            .build()
            .map_err(|e| Error::DownloadFailed {
                url: String::new(),
                attempts: vec![format!("cannot build the HTTP client: {e}")],
            })?;
        Ok(ArtifactStore {
            config: config.artifacts.clone(),
            sms_http,
            allowed,
            cache,
            client,
            telemetry: Arc::default(),
            in_flight: Mutex::default(),
            resolved: Mutex::default(),
            workers: Arc::new(
                Workers::new(
                    config.tiers.worker_program.as_deref(),
                    config.tiers.warm_workers,
                )
                .with_load_timeout(config.tiers.load_timeout),
            ),
            first_load_in_worker: config.tiers.first_load_in_worker,
        })
    }

    /// What the pipeline did (loads, refusals, downloads).
    pub fn telemetry(&self) -> ArtifactCounts {
        self.telemetry.snapshot()
    }

    /// The download cache (for pins and statistics).
    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// How many plugins are loaded, in use by a task or not (see
    /// [`LoadedStats`]).
    pub fn loaded(&self) -> LoadedStats {
        self.cache.loaded()
    }

    /// Resolves `spec` to a loaded plugin.
    ///
    /// # Errors
    ///
    /// One variant per reason: [`Error::UnsupportedArtifactType`],
    /// [`Error::UnsupportedLocation`], [`Error::InvalidChecksum`],
    /// [`Error::PermissionDenied`], [`Error::HostNotAllowed`],
    /// [`Error::ChecksumRequired`],
    /// [`Error::SmsNotConfigured`], [`Error::DownloadFailed`],
    /// [`Error::ArtifactTooLarge`], [`Error::ChecksumMismatch`],
    /// [`Error::ArtifactFormat`], [`Error::PluginIdentityMismatch`], and the
    /// loader's own refusals.
    pub async fn load(&self, spec: &ArtifactSpec) -> Result<Arc<Plugin>> {
        self.load_with_progress(spec, None, Isolation::InProcess)
            .await
    }

    /// As [`ArtifactStore::load`], for a task of `isolation`: a
    /// process-tier plugin is loaded and described by a worker process and
    /// never mapped in this one.
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::load`], and [`Error::ConstructorCrashed`].
    pub async fn load_as(&self, spec: &ArtifactSpec, isolation: Isolation) -> Result<Arc<Plugin>> {
        self.load_with_progress(spec, None, isolation).await
    }

    /// As [`ArtifactStore::load_as`], with the identity of the local file
    /// the plugin's bytes were read from (`None` for a remote artifact):
    /// what a task created from it compares the file with later, to tell a
    /// rebuilt plugin from the one it runs.
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::load_as`].
    pub(crate) async fn load_sourced(
        &self,
        spec: &ArtifactSpec,
        isolation: Isolation,
    ) -> Result<Sourced> {
        self.load_counted(spec, None, isolation).await
    }

    /// The worker processes this store loads with.
    pub fn workers(&self) -> &Arc<Workers> {
        &self.workers
    }

    /// The plugin loaded from `file` for `isolation`: first in a worker
    /// (unless configured off), then here or only described; recorded in
    /// `cache`'s registry of loaded plugins. Blocks.
    ///
    /// A process-tier plugin is only described, by a worker, and recorded
    /// in the store's registry, which lets the unused ones (and their open
    /// files) go.
    fn open(
        cache: &ArtifactCache,
        workers: &Workers,
        first_in_worker: bool,
        file: VerifiedFile,
        isolation: Isolation,
    ) -> Result<Arc<Plugin>> {
        let plugin = match isolation {
            Isolation::InProcess if !first_in_worker => Plugin::load(file)?,
            Isolation::InProcess => crate::isolate::load_in_process(file, workers)?,
            Isolation::Process => crate::isolate::describe(file, workers)?,
        };
        cache.loaded_now(&plugin, isolation);
        Ok(plugin)
    }

    /// A plugin of `digest` loaded already for `isolation`.
    fn held(
        cache: &ArtifactCache,
        digest: &Sha256Digest,
        isolation: Isolation,
    ) -> Option<Arc<Plugin>> {
        if let Some(plugin) = cache.loaded_plugin(digest, isolation) {
            return Some(plugin);
        }
        // In process, a library another store of this process loaded is
        // mapped for good (libraries are never unloaded): use it.
        let plugin = match isolation {
            Isolation::InProcess => Plugin::already_loaded(digest)?,
            Isolation::Process => return None,
        };
        cache.loaded_now(&plugin, isolation);
        Some(plugin)
    }

    /// The plugin with `digest` from what this host already holds — loaded
    /// in the process, or in the cache (hashed again as it is opened) —
    /// without going to any location. `None` when it holds neither.
    ///
    /// # Errors
    ///
    /// As [`ArtifactCache::open_verified`], and the loader's refusals.
    pub async fn load_held(
        &self,
        digest: &Sha256Digest,
        isolation: Isolation,
    ) -> Result<Option<Arc<Plugin>>> {
        if let Some(plugin) = Self::held(&self.cache, digest, isolation) {
            return Ok(Some(plugin));
        }
        let (cache, digest, max_size) = (self.cache.clone(), *digest, self.config.max_size_bytes);
        let (workers, first) = (Arc::clone(&self.workers), self.first_load_in_worker);
        blocking(move || match cache.open_verified(&digest, max_size) {
            Ok(Some(file)) => Self::open(&cache, &workers, first, file, isolation).map(Some),
            Ok(None) | Err(Error::ChecksumMismatch { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// As [`ArtifactStore::load`], reporting download progress.
    pub async fn load_with_progress(
        &self,
        spec: &ArtifactSpec,
        progress: Option<Progress<'_>>,
        isolation: Isolation,
    ) -> Result<Arc<Plugin>> {
        self.load_counted(spec, progress, isolation)
            .await
            .map(|(plugin, _)| plugin)
    }

    async fn load_counted(
        &self,
        spec: &ArtifactSpec,
        progress: Option<Progress<'_>>,
        isolation: Isolation,
    ) -> Result<Sourced> {
        let began = std::time::Instant::now();
        let loaded = match spec.checked_digest() {
            Err(e) => Err(e),
            Ok(expected) => match expected.and_then(|d| self.memoized(spec, d, isolation)) {
                Some(found) => Ok(found),
                // Boxed: resolving is a large future (downloads, hand-offs
                // to blocking threads) that a loaded digest asked for again
                // does not need, and every future awaiting this one would
                // carry it.
                None => Box::pin(self.resolve(spec, expected, progress, isolation)).await,
            },
        };
        match &loaded {
            Ok(_) => self.telemetry.loaded(began.elapsed()),
            Err(e) => self.telemetry.refused(e.kind()),
        }
        loaded
    }

    /// The fast path of a local artifact: a location confined to a root
    /// before that yielded `digest`, the one pinned, whose plugin is
    /// loaded. The memo is keyed by the location as given, which parsed as
    /// a local path when it was filled, so nothing is parsed again, and
    /// nothing read. `None` sends the request down the full path, which
    /// also reports whatever is wrong with it.
    fn memoized(
        &self,
        spec: &ArtifactSpec,
        digest: Sha256Digest,
        isolation: Isolation,
    ) -> Option<Sourced> {
        let source = self.resolved().get(&spec.location, &digest)?;
        let plugin = Self::held(&self.cache, &digest, isolation)?;
        check_identity(spec, &plugin).ok()?;
        Some((plugin, source))
    }

    /// The full path: `spec`'s location parsed, confined or fetched,
    /// checked against `expected` (its checksum, checked already).
    async fn resolve(
        &self,
        spec: &ArtifactSpec,
        expected: Option<Sha256Digest>,
        progress: Option<Progress<'_>>,
        isolation: Isolation,
    ) -> Result<Sourced> {
        let (plugin, source) = match Location::parse(&spec.location)? {
            Location::Local(path) => {
                self.load_local(&spec.location, path, expected, isolation)
                    .await?
            }
            Location::Http(url) => {
                // Refused before any connection is made.
                self.allowed.check(&spec.location, &url)?;
                let plugin = self
                    .load_remote(&spec.location, url, expected, progress, isolation)
                    .await?;
                (plugin, None)
            }
            Location::SmsFile(id) => {
                let base = self
                    .sms_http
                    .as_ref()
                    .ok_or_else(|| Error::SmsNotConfigured {
                        location: spec.location.clone(),
                        purpose: "to fetch it",
                    })?;
                let url = remote::sms_file_url(base, &id, &spec.location)?;
                let plugin = self
                    .load_remote(&spec.location, url, expected, progress, isolation)
                    .await?;
                (plugin, None)
            }
        };
        check_identity(spec, &plugin)?;
        Ok((plugin, source))
    }

    async fn load_local(
        &self,
        location: &str,
        path: PathBuf,
        expected: Option<Sha256Digest>,
        isolation: Isolation,
    ) -> Result<Sourced> {
        if expected.is_none() && self.config.require_local_checksum {
            return Err(Error::ChecksumRequired {
                location: location.to_owned(),
                reason: "the configuration requires checksums for local artifacts",
            });
        }
        if let Some(digest) = expected {
            // As in `memoized`, which found nothing to serve: this location
            // gave these bytes before, and they are loaded (the plugin may
            // differ from what the spec asks for, which the caller reports).
            // Nothing to read or check.
            if let Some(source) = self.resolved().get(location, &digest) {
                if let Some(plugin) = Self::held(&self.cache, &digest, isolation) {
                    return Ok((plugin, source));
                }
            }
        }
        let roots = self.config.roots.clone();
        let cache = self.cache.clone();
        let max_size = self.config.max_size_bytes;
        let owned_location = location.to_owned();
        let (workers, first) = (Arc::clone(&self.workers), self.first_load_in_worker);
        let (plugin, source) = blocking(move || {
            let real = location::confine(&owned_location, &path, &roots)?;
            // The file's identity before its bytes are read: a file that
            // changes meanwhile then reads as changed later (its task is
            // refused as stale until upgraded), never as the bytes loaded.
            let source = SourceFile::of(&real);
            if let Some(plugin) = expected.and_then(|d| Self::held(&cache, &d, isolation)) {
                return Ok((plugin, source));
            }
            let file = cache.ingest(&real, expected.as_ref(), max_size)?;
            Ok((
                Self::open(&cache, &workers, first, file, isolation)?,
                source,
            ))
        })
        .await?;
        self.resolved().insert(location, plugin.digest(), source);
        Ok((plugin, source))
    }

    fn resolved(&self) -> std::sync::MutexGuard<'_, Resolved> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// File-system work and loading (which runs the plugin's root-module
/// constructor) on a blocking thread, never an async worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

fn check_identity(spec: &ArtifactSpec, plugin: &Plugin) -> Result<()> {
    let (name, version) = spec.expected_identity();
    for (field, expected, actual) in [
        ("name", name, plugin.name()),
        ("version", version, plugin.version()),
    ] {
        if let Some(expected) = expected.filter(|e| *e != actual) {
            return Err(Error::PluginIdentityMismatch {
                field,
                expected: expected.to_owned(),
                actual: actual.to_owned(),
            });
        }
    }
    Ok(())
}
