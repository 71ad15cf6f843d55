//! Artifacts from `http(s)://` and the SMS: verified against the checksum
//! the client gives, downloaded once at a time per digest (racing requests
//! wait for the same download), cached under their digest, and redirected
//! only where the location itself could have pointed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use url::Url;

use super::fetch::{self, Download};
use super::{blocking, location, ArtifactStore, Flight, Progress};
use crate::config::AllowedHosts;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::isolate::Isolation;
use crate::loader::Plugin;

impl ArtifactStore {
    pub(super) async fn load_remote(
        &self,
        location: &str,
        url: Url,
        expected: Option<Sha256Digest>,
        progress: Option<Progress<'_>>,
        isolation: Isolation,
    ) -> Result<Arc<Plugin>> {
        let digest = expected.ok_or_else(|| Error::ChecksumRequired {
            location: location.to_owned(),
            reason: "remote artifacts are verified against the checksum the client gives",
        })?;
        if let Some(plugin) = Self::held(&self.cache, &digest, isolation) {
            return Ok(plugin);
        }
        let max_size = self.config.max_size_bytes;
        for _ in 0..2 {
            self.fetch(location, &url, &digest, progress).await?;
            let cache = self.cache.clone();
            let (workers, first) = (Arc::clone(&self.workers), self.first_load_in_worker);
            // A cached copy that no longer matches its name is removed, and
            // fetched once more.
            match blocking(move || match cache.open_verified(&digest, max_size)? {
                Some(file) => Self::open(&cache, &workers, first, file, isolation).map(Some),
                None => Ok(None),
            })
            .await
            {
                Ok(Some(plugin)) => return Ok(plugin),
                Ok(None) | Err(Error::ChecksumMismatch { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::CacheUnstable {
            digest: digest.to_string(),
        })
    }

    /// The cached file for `digest`, downloading it at most once at a time.
    async fn fetch(
        &self,
        location: &str,
        url: &Url,
        digest: &Sha256Digest,
        progress: Option<Progress<'_>>,
    ) -> Result<PathBuf> {
        if let Some(path) = self.lookup(digest).await {
            return Ok(path);
        }
        let flight = Arc::clone(self.flights().entry(*digest).or_default());
        let outcome = flight
            .get_or_init(|| async {
                if let Some(path) = self.lookup(digest).await {
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
                    counters: &self.telemetry,
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
                let cache = self.cache.clone();
                let digest = *digest;
                blocking(move || cache.insert(done.file, &digest)).await
            })
            .await
            .clone();
        let mut flights = self.flights();
        if flights.get(digest).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(digest);
        }
        outcome
    }

    async fn lookup(&self, digest: &Sha256Digest) -> Option<PathBuf> {
        let cache = self.cache.clone();
        let digest = *digest;
        blocking(move || Ok(cache.lookup(&digest)))
            .await
            .ok()
            .flatten()
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Sha256Digest, Flight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The most redirects one download attempt follows (reqwest's own default).
const MAX_REDIRECTS: usize = 10;

/// Redirects are followed only to where the location itself could have
/// pointed: a host `artifacts.allowed_hosts` lists, or, for a file the SMS
/// serves, the SMS itself. Anything else would let an allowed host send the
/// server anywhere.
pub(super) fn redirects(allowed: Arc<AllowedHosts>, sms: Option<Url>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let to = attempt.url();
        let first = attempt.previous().first();
        let within_sms = sms.as_ref().is_some_and(|sms| {
            first.is_some_and(|first| location::same_origin(sms, first))
                && location::same_origin(sms, to)
        });
        if within_sms || allowed.permits(to) {
            return attempt.follow();
        }
        let refusal = Error::HostNotAllowed {
            location: first.map_or_else(|| to.to_string(), Url::to_string),
            host: location::host_and_port(to),
        };
        attempt.error(refusal)
    })
}

pub(super) fn sms_file_url(base: &Url, id: &str, location: &str) -> Result<Url> {
    let text = format!("{}/api/v1/files/{id}", base.as_str().trim_end_matches('/'));
    Url::parse(&text).map_err(|e| Error::UnsupportedLocation {
        location: location.to_owned(),
        reason: format!("cannot build the SMS file URL `{text}`: {e}"),
    })
}
