//! What the artifact pipeline did, for the metrics endpoint: loads and how
//! long they took, refusals by reason, download attempts, failures and
//! bytes. Cache hits and misses are the cache's own counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::histogram::{Latency, LatencySnapshot};

/// The counters (shared by the store's clones).
#[derive(Debug, Default)]
pub struct ArtifactTelemetry {
    loads: Latency,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    download_attempts: AtomicU64,
    download_failures: AtomicU64,
    download_bytes: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactCounts {
    /// Successful loads (resolution to a loaded plugin) and their time.
    pub loads: LatencySnapshot,
    /// Refused or failed loads, by error kind.
    pub refused: BTreeMap<&'static str, u64>,
    /// Download attempts (retries included).
    pub download_attempts: u64,
    /// Attempts that failed.
    pub download_failures: u64,
    /// Bytes received by successful downloads.
    pub download_bytes: u64,
}

impl ArtifactTelemetry {
    pub(crate) fn loaded(&self, took: Duration) {
        self.loads.observe(took);
    }

    pub(crate) fn refused(&self, kind: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    pub(crate) fn attempt(&self) {
        self.download_attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempt_failed(&self) {
        self.download_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: u64) {
        self.download_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ArtifactCounts {
        ArtifactCounts {
            loads: self.loads.snapshot(),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            download_attempts: self.download_attempts.load(Ordering::Relaxed),
            download_failures: self.download_failures.load(Ordering::Relaxed),
            download_bytes: self.download_bytes.load(Ordering::Relaxed),
        }
    }
}
