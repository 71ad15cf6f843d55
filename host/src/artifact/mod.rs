//! From an [`ArtifactSpec`] to a loaded, verified plugin.
//!
//! This module is spearlet's security boundary: loading a shared library runs
//! its code with the host's privileges, so **nothing is loaded unless its
//! sha256 was verified on the exact bytes being loaded, and it came from an
//! allowed place**:
//!
//! - local files only from configured roots, after resolving `..` and
//!   symlinks; a checksum is checked when given (or required, by config);
//! - `http(s)://` and SMS files only with a checksum; downloads are hashed as
//!   they stream, refused on mismatch (never retried, temp file removed), and
//!   cached read-only under their digest;
//! - the loader hashes the file again as it opens it, unless that digest is
//!   already loaded in this process — then there is no I/O at all.

mod cache;
mod fetch;
mod location;
mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;
use url::Url;

pub use cache::{ArtifactCache, CachePin, CacheStats};
pub use fetch::Progress;
pub use spec::{ArtifactSpec, ACCEPTED_TYPES};

use crate::config::{ArtifactConfig, Config};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::loader::Plugin;
use fetch::Download;
use location::Location;

type Flight = Arc<OnceCell<Result<PathBuf>>>;

/// Locates, fetches, verifies, caches and loads artifacts.
#[derive(Debug)]
pub struct ArtifactStore {
    config: ArtifactConfig,
    cache: ArtifactCache,
    client: reqwest::Client,
    in_flight: Mutex<HashMap<Sha256Digest, Flight>>,
}

impl ArtifactStore {
    /// Opens the store (and its cache under `config.data_dir`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the cache directories cannot be created.
    pub fn new(config: &Config) -> Result<Self> {
        let cache = ArtifactCache::open(&config.data_dir, config.artifacts.cache_max_bytes)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("spearlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::DownloadFailed {
                url: String::new(),
                attempts: vec![format!("cannot build the HTTP client: {e}")],
            })?;
        Ok(ArtifactStore {
            config: config.artifacts.clone(),
            cache,
            client,
            in_flight: Mutex::default(),
        })
    }

    /// The download cache (for pins and statistics).
    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }

    /// Resolves `spec` to a loaded plugin.
    ///
    /// # Errors
    ///
    /// One variant per reason: [`Error::UnsupportedArtifactType`],
    /// [`Error::UnsupportedLocation`], [`Error::InvalidChecksum`],
    /// [`Error::PermissionDenied`], [`Error::ChecksumRequired`],
    /// [`Error::SmsNotConfigured`], [`Error::DownloadFailed`],
    /// [`Error::ArtifactTooLarge`], [`Error::ChecksumMismatch`],
    /// [`Error::ArtifactFormat`], [`Error::PluginIdentityMismatch`], and the
    /// loader's own refusals.
    pub async fn load(&self, spec: &ArtifactSpec) -> Result<Arc<Plugin>> {
        self.load_with_progress(spec, None).await
    }

    /// As [`ArtifactStore::load`], reporting download progress.
    pub async fn load_with_progress(
        &self,
        spec: &ArtifactSpec,
        progress: Option<Progress<'_>>,
    ) -> Result<Arc<Plugin>> {
        let expected = spec.checked_digest()?;
        let plugin = match Location::parse(&spec.location)? {
            Location::Local(path) => {
                let path = location::confine(&spec.location, &path, &self.config.roots)?;
                if expected.is_none() && self.config.require_local_checksum {
                    return Err(Error::ChecksumRequired {
                        location: spec.location.clone(),
                        reason: "the configuration requires checksums for local artifacts",
                    });
                }
                match expected.as_ref().and_then(Plugin::already_loaded) {
                    Some(plugin) => plugin,
                    None => load_blocking(path, expected).await?,
                }
            }
            Location::Http(url) => {
                self.load_remote(&spec.location, url, expected, progress)
                    .await?
            }
            Location::SmsFile(id) => {
                let base =
                    self.config
                        .sms_http
                        .as_ref()
                        .ok_or_else(|| Error::SmsNotConfigured {
                            location: spec.location.clone(),
                        })?;
                let url = sms_file_url(base, &id, &spec.location)?;
                self.load_remote(&spec.location, url, expected, progress)
                    .await?
            }
        };
        check_identity(spec, &plugin)?;
        Ok(plugin)
    }

    async fn load_remote(
        &self,
        location: &str,
        url: Url,
        expected: Option<Sha256Digest>,
        progress: Option<Progress<'_>>,
    ) -> Result<Arc<Plugin>> {
        let digest = expected.ok_or_else(|| Error::ChecksumRequired {
            location: location.to_owned(),
            reason: "remote artifacts are verified against the checksum the client gives",
        })?;
        if let Some(plugin) = Plugin::already_loaded(&digest) {
            return Ok(plugin);
        }
        let path = self.fetch(location, &url, &digest, progress).await?;
        match load_blocking(path, Some(digest)).await {
            Err(Error::ChecksumMismatch { .. }) => {
                // The cached copy changed under its name: drop it, fetch afresh.
                tracing::warn!(%digest, "cached artifact no longer matches its digest; fetching again");
                self.cache.remove(&digest);
                let path = self.fetch(location, &url, &digest, progress).await?;
                load_blocking(path, Some(digest)).await
            }
            other => other,
        }
    }

    /// The cached file for `digest`, downloading it at most once at a time.
    async fn fetch(
        &self,
        location: &str,
        url: &Url,
        digest: &Sha256Digest,
        progress: Option<Progress<'_>>,
    ) -> Result<PathBuf> {
        if let Some(path) = self.cache.lookup(digest) {
            return Ok(path);
        }
        let flight = Arc::clone(self.flights().entry(*digest).or_default());
        let outcome = flight
            .get_or_init(|| async {
                if let Some(path) = self.cache.lookup(digest) {
                    return Ok(path);
                }
                let download = Download {
                    url,
                    location,
                    temp_dir: self.cache.temp_dir(),
                    max_bytes: self.config.max_size_bytes,
                    attempts: self.config.download_attempts,
                    base_delay: self.config.retry_base_delay,
                    timeout: self.config.download_timeout,
                    progress,
                };
                let done = fetch::download(&self.client, &download).await?;
                if done.digest != *digest {
                    // Dropping `done.file` removes the temporary file.
                    return Err(Error::ChecksumMismatch {
                        path: PathBuf::from(location),
                        expected: digest.to_hex(),
                        actual: done.digest.to_hex(),
                    });
                }
                self.cache.insert(done.file, digest)
            })
            .await
            .clone();
        let mut flights = self.flights();
        if flights.get(digest).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(digest);
        }
        outcome
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Sha256Digest, Flight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Loading runs the plugin's root-module constructor: keep it off the async workers.
async fn load_blocking(path: PathBuf, expected: Option<Sha256Digest>) -> Result<Arc<Plugin>> {
    tokio::task::spawn_blocking(move || Plugin::load_verified(&path, expected.as_ref()))
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

fn sms_file_url(base: &Url, id: &str, location: &str) -> Result<Url> {
    let text = format!("{}/api/v1/files/{id}", base.as_str().trim_end_matches('/'));
    Url::parse(&text).map_err(|e| Error::UnsupportedLocation {
        location: location.to_owned(),
        reason: format!("cannot build the SMS file URL `{text}`: {e}"),
    })
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
