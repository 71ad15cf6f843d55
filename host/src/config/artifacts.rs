//! `[artifacts]`: where plugins may come from is the host's trust boundary,
//! so every rule about it (roots, checksums, allowed hosts, download and
//! cache bounds) is kept in one place a reviewer can read whole.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Artifact locations, integrity rules, downloads and the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactConfig {
    /// Directories local artifacts (absolute paths, `file://`) may come from,
    /// checked after resolving `..` and symlinks. Default: none, so local
    /// artifacts are refused until a root is configured.
    pub roots: Vec<PathBuf>,
    /// Refuse local artifacts that come without a checksum. Default: `false`
    /// (the file is hashed and its digest recorded). Remote artifacts always
    /// need one.
    pub require_local_checksum: bool,
    /// The largest artifact accepted, in bytes. Default: 256 MiB.
    pub max_size_bytes: u64,
    /// Size bound of the download cache, in bytes; least recently used
    /// artifacts no task uses are removed beyond it. Default: 2 GiB.
    pub cache_max_bytes: u64,
    /// Download attempts in all (connect errors and 5xx are retried, 4xx
    /// not). Default: 4.
    pub download_attempts: u32,
    /// Delay before the first retry; it doubles per attempt, with full
    /// jitter, capped at 10 s. Default: 200 ms.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Time allowed for one download attempt. Default: 60 s.
    #[serde(with = "humantime_serde")]
    pub download_timeout: Duration,
    /// Hosts http(s) artifacts may be fetched from: exact host names or
    /// addresses, or `*.example.com` for its subdomains, each optionally
    /// with `:PORT`. A location on any other host is refused before any
    /// connection (PERMISSION_DENIED). The configured SMS (`sms.http`) is
    /// always allowed for `smsfile://` artifacts. Default: none (no remote
    /// fetch).
    pub allowed_hosts: Vec<String>,
    /// Loaded plugins no task uses any more that stay mapped (their file
    /// open), so a task created again on one loads nothing; the least
    /// recently used beyond this are unmapped and closed. Default: 16.
    pub max_unused_loaded: usize,
    /// The old name of `sms.http`, still read (see [`Config::normalized`](super::Config::normalized)).
    #[serde(skip_serializing)]
    pub sms_http: Option<Url>,
}

impl Default for ArtifactConfig {
    fn default() -> Self {
        ArtifactConfig {
            roots: Vec::new(),
            require_local_checksum: false,
            max_size_bytes: 256 * 1024 * 1024,
            cache_max_bytes: 2 * 1024 * 1024 * 1024,
            download_attempts: 4,
            retry_base_delay: Duration::from_millis(200),
            download_timeout: Duration::from_secs(60),
            allowed_hosts: Vec::new(),
            max_unused_loaded: 16,
            sms_http: None,
        }
    }
}
