//! Downloads over HTTP(S): streamed to a temporary file beside the cache,
//! hashed on the way, size-capped, retried with backoff when retrying can help.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::backoff::full_jitter;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Reports bytes received so far and the announced total, if any.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// One download, as configured.
pub(super) struct Download<'a> {
    pub url: &'a Url,
    /// The location as the client wrote it, for messages.
    pub location: &'a str,
    /// Directory for the temporary file (same filesystem as the cache).
    pub temp_dir: &'a Path,
    pub max_bytes: u64,
    pub attempts: u32,
    pub base_delay: Duration,
    pub timeout: Duration,
    pub progress: Option<Progress<'a>>,
    pub counters: &'a crate::counters::ArtifactTelemetry,
}

/// What a finished download produced.
pub(super) struct Downloaded {
    pub file: NamedTempFile,
    pub digest: Sha256Digest,
}

const MAX_DELAY: Duration = Duration::from_secs(10);

/// How one attempt failed.
enum Failure {
    /// Worth another attempt (connection trouble, 5xx, timeout).
    Retry(String),
    /// Final: a 4xx, a size violation, a local I/O error.
    Final(Error),
}

pub(super) async fn download(client: &reqwest::Client, d: &Download<'_>) -> Result<Downloaded> {
    let mut log = Vec::new();
    for attempt in 1..=d.attempts.max(1) {
        if attempt > 1 {
            tokio::time::sleep(full_jitter(d.base_delay, MAX_DELAY, attempt - 1)).await;
        }
        d.counters.attempt();
        let outcome = match tokio::time::timeout(d.timeout, attempt_once(client, d)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Retry(format!("timed out after {:?}", d.timeout))),
        };
        match &outcome {
            Ok(done) => d
                .counters
                .received(done.file.as_file().metadata().map_or(0, |m| m.len())),
            Err(_) => d.counters.attempt_failed(),
        }
        match outcome {
            Ok(done) => return Ok(done),
            Err(Failure::Final(Error::DownloadFailed { attempts, .. })) => {
                log.extend(
                    attempts
                        .into_iter()
                        .map(|a| format!("attempt {attempt}: {a}")),
                );
                break;
            }
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(why)) => {
                tracing::warn!(url = %d.url, attempt, error = %why, "artifact download failed");
                log.push(format!("attempt {attempt}: {why}"));
            }
        }
    }
    Err(Error::DownloadFailed {
        url: d.url.to_string(),
        attempts: log,
    })
}

async fn attempt_once(client: &reqwest::Client, d: &Download<'_>) -> Result<Downloaded, Failure> {
    let response =
        client
            .get(d.url.clone())
            .send()
            .await
            .map_err(|e| match refused_redirect(&e) {
                Some(refusal) => Failure::Final(refusal),
                None => Failure::Retry(describe(&e)),
            })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(Failure::Retry(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(Failure::Final(Error::DownloadFailed {
            url: d.url.to_string(),
            attempts: vec![format!("HTTP {status} (not retried)")],
        }));
    }
    let total = response.content_length();
    if let Some(size) = total.filter(|&n| n > d.max_bytes) {
        return Err(Failure::Final(too_large(d, size)));
    }

    let local = |e: std::io::Error| Failure::Final(Error::io(d.temp_dir, e));
    let dir = d.temp_dir.to_owned();
    let (file, out) = tokio::task::spawn_blocking(move || {
        let file = NamedTempFile::new_in(dir)?;
        let out = file.reopen()?;
        Ok::<_, std::io::Error>((file, out))
    })
    .await
    .map_err(|e| local(std::io::Error::other(e)))?
    .map_err(local)?;
    let mut out = tokio::fs::File::from_std(out);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failure::Retry(describe(&e)))?;
        received += chunk.len() as u64;
        if received > d.max_bytes {
            return Err(Failure::Final(too_large(d, received)));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(local)?;
        if let Some(progress) = d.progress {
            progress(received, total);
        }
    }
    if let Some(expected) = total.filter(|&n| n != received) {
        return Err(Failure::Retry(format!(
            "connection closed after {received} of {expected} bytes"
        )));
    }
    out.flush().await.map_err(local)?;
    out.sync_all().await.map_err(local)?;
    Ok(Downloaded {
        file,
        digest: Sha256Digest::from_bytes(hasher.finalize().into()),
    })
}

fn too_large(d: &Download<'_>, size: u64) -> Error {
    Error::ArtifactTooLarge {
        location: d.location.to_owned(),
        size,
        limit: d.max_bytes,
    }
}

/// The refusal of a redirect to a host not allowed (see the store's
/// redirect policy): final, never retried.
fn refused_redirect(err: &reqwest::Error) -> Option<Error> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Error>() {
            return Some(refusal.clone());
        }
        source = cause.source();
    }
    None
}

/// reqwest's own message plus its causes (the useful part, e.g. "connection refused").
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
