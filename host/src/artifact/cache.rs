//! The content-addressed artifact cache: `<data_dir>/artifacts/sha256/<hex>.so`.
//!
//! Downloads and local files alike are written to a temporary file in the
//! same filesystem (local files are *ingested*: copied while hashed), made
//! read-only, and renamed into place, so a cache path only ever holds the
//! complete bytes of its digest, in an inode of its own. A size bound evicts
//! the least recently used artifacts that no live task has pinned.
//!
//! The pins also say which loaded plugins are in use: the registry of
//! loaded plugins (`loaded.rs`) lives under the same lock, so a digest's
//! last pin going lets its plugin go in the same step, when the bound on
//! unused plugins asks for it.
//!
//! The methods that touch the file system (`open`, `lookup`, `insert`,
//! `ingest`, `open_verified`, `remove`) block: call them off the async
//! workers.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tempfile::NamedTempFile;

use super::loaded::{Loaded, LoadedStats};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::isolate::Isolation;
use crate::loader::{Plugin, VerifiedFile};

/// Counters and sizes of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to fetch.
    pub misses: u64,
    /// Artifacts held.
    pub entries: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// The cache (cheap to clone; clones share state).
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    temp_dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hashed with foldhash: digests need no protection from crafted
/// collisions, and a task's creation pins one.
#[derive(Debug)]
struct State {
    entries: HashMap<Sha256Digest, Entry, foldhash::fast::RandomState>,
    pins: HashMap<Sha256Digest, usize, foldhash::fast::RandomState>,
    total: u64,
    clock: u64,
    loaded: Loaded,
}

/// Loaded plugins no task uses that are kept, unless configured
/// (`artifacts.max_unused_loaded`).
const DEFAULT_MAX_UNUSED_LOADED: usize = 16;

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
}

/// Keeps a digest from being evicted while held (one per live task).
#[derive(Debug)]
pub struct CachePin {
    cache: ArtifactCache,
    digest: Sha256Digest,
}

impl Drop for CachePin {
    fn drop(&mut self) {
        let let_go = {
            let mut state = self.cache.state();
            let Some(n) = state.pins.get_mut(&self.digest) else {
                return;
            };
            *n -= 1;
            if *n > 0 {
                return;
            }
            state.pins.remove(&self.digest);
            state.loaded.unpinned(&self.digest);
            state.trim_loaded(None)
        };
        // Outside the lock: the last reference closes the plugin's file.
        drop(let_go);
    }
}

impl State {
    fn trim_loaded(&mut self, spare: Option<(Sha256Digest, Isolation)>) -> Vec<Arc<Plugin>> {
        let State { loaded, pins, .. } = self;
        loaded.trim(|d| pins.contains_key(d), spare)
    }
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache under `data_dir`, indexing what
    /// an earlier run left there and clearing its unfinished downloads.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directories cannot be created or read.
    pub fn open(data_dir: &Path, max_bytes: u64) -> Result<Self> {
        let root = data_dir.join("artifacts");
        let dir = root.join("sha256");
        let temp_dir = root.join("tmp");
        for d in [&dir, &temp_dir] {
            fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        for leftover in fs::read_dir(&temp_dir).map_err(|e| Error::io(&temp_dir, e))? {
            let path = leftover.map_err(|e| Error::io(&temp_dir, e))?.path();
            // Best effort: a leftover we cannot remove is only wasted space.
            let _ = fs::remove_file(path);
        }
        let mut state = State {
            entries: HashMap::default(),
            pins: HashMap::default(),
            total: 0,
            clock: 0,
            loaded: Loaded::new(DEFAULT_MAX_UNUSED_LOADED),
        };
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".so"))
                .and_then(|hex| hex.parse::<Sha256Digest>().ok())
            else {
                continue;
            };
            let size = entry
                .metadata()
                .map_err(|e| Error::io(entry.path(), e))?
                .len();
            state.total += size;
            state.entries.insert(digest, Entry { size, last_used: 0 });
        }
        Ok(ArtifactCache {
            inner: Arc::new(Inner {
                dir,
                temp_dir,
                max_bytes,
                state: Mutex::new(state),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        })
    }

    /// Where the artifact with `digest` lives (or would live).
    pub fn path_of(&self, digest: &Sha256Digest) -> PathBuf {
        self.inner.dir.join(format!("{}.so", digest.to_hex()))
    }

    /// Where downloads in progress are written.
    pub fn temp_dir(&self) -> &Path {
        &self.inner.temp_dir
    }

    /// The cached artifact with `digest`, counting a hit or a miss.
    pub fn lookup(&self, digest: &Sha256Digest) -> Option<PathBuf> {
        let path = self.path_of(digest);
        let mut state = self.state();
        let present = state.entries.contains_key(digest) && path.exists();
        if present {
            state.clock += 1;
            let now = state.clock;
            if let Some(e) = state.entries.get_mut(digest) {
                e.last_used = now;
            }
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            Some(path)
        } else {
            if let Some(gone) = state.entries.remove(digest) {
                state.total -= gone.size;
            }
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Moves a verified download into the cache under `digest`, then evicts
    /// what the size bound requires.
    ///
    /// The caller must have checked that `file` hashes to `digest`.
    pub(super) fn insert(&self, file: NamedTempFile, digest: &Sha256Digest) -> Result<PathBuf> {
        let path = self.path_of(digest);
        let size = file
            .as_file()
            .metadata()
            .map_err(|e| Error::io(file.path(), e))?
            .len();
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o444))
            .map_err(|e| Error::io(file.path(), e))?;
        file.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        let mut state = self.state();
        state.clock += 1;
        let now = state.clock;
        if let Some(old) = state.entries.insert(
            *digest,
            Entry {
                size,
                last_used: now,
            },
        ) {
            state.total -= old.size;
        }
        state.total += size;
        self.evict(&mut state, digest);
        Ok(path)
    }

    /// Copies the local file `source` into the cache while hashing it,
    /// refusing it unless it hashes to `expected` (when given). The result
    /// holds the cached copy open: load that, not `source`.
    ///
    /// # Errors
    ///
    /// As [`VerifiedFile::copy`]; [`Error::ChecksumMismatch`].
    pub fn ingest(
        &self,
        source: &Path,
        expected: Option<&Sha256Digest>,
        max_size: u64,
    ) -> Result<VerifiedFile> {
        let temp = NamedTempFile::new_in(&self.inner.temp_dir)
            .map_err(|e| Error::io(&self.inner.temp_dir, e))?;
        let copy = temp
            .as_file()
            .try_clone()
            .map_err(|e| Error::io(temp.path(), e))?;
        // On refusal `temp` is dropped, and with it the partial copy.
        let verified = VerifiedFile::copy(source, copy, max_size)?;
        verified.expect(expected)?;
        self.insert(temp, &verified.digest())?;
        Ok(verified)
    }

    /// The cached artifact with `digest`, hashed again as it is opened
    /// (`None` when it is not cached).
    ///
    /// # Errors
    ///
    /// As [`VerifiedFile::rehash`]; [`Error::ChecksumMismatch`] (the cached
    /// file is removed then).
    pub fn open_verified(
        &self,
        digest: &Sha256Digest,
        max_size: u64,
    ) -> Result<Option<VerifiedFile>> {
        let Some(path) = self.lookup(digest) else {
            return Ok(None);
        };
        let file = VerifiedFile::rehash(&path, max_size)?;
        if let Err(e) = file.expect(Some(digest)) {
            tracing::warn!(%digest, "cached artifact no longer matches its digest; removing it");
            self.remove(digest);
            return Err(e);
        }
        Ok(Some(file))
    }

    /// Drops a cached artifact (e.g. one whose bytes no longer match its name).
    pub(super) fn remove(&self, digest: &Sha256Digest) {
        let mut state = self.state();
        if let Some(gone) = state.entries.remove(digest) {
            state.total -= gone.size;
        }
        let _ = fs::remove_file(self.path_of(digest));
    }

    /// Protects `digest` from eviction until the pin is dropped.
    pub fn pin(&self, digest: &Sha256Digest) -> CachePin {
        *self.state().pins.entry(*digest).or_insert(0) += 1;
        CachePin {
            cache: self.clone(),
            digest: *digest,
        }
    }

    /// Keeps at most `max` loaded plugins no task uses
    /// (`artifacts.max_unused_loaded`).
    pub(super) fn limit_unused_loaded(&self, max: usize) {
        self.state().loaded.set_max_unused(max);
    }

    /// The plugin of `digest` loaded for `isolation`, if it still is.
    pub(super) fn loaded_plugin(
        &self,
        digest: &Sha256Digest,
        isolation: Isolation,
    ) -> Option<Arc<Plugin>> {
        self.state().loaded.get(digest, isolation)
    }

    /// Records a plugin just loaded for `isolation`, and lets go of unused
    /// ones past the bound.
    pub(super) fn loaded_now(&self, plugin: &Arc<Plugin>, isolation: Isolation) {
        let let_go = {
            let mut state = self.state();
            state.loaded.insert(plugin, isolation);
            state.trim_loaded(Some((plugin.digest(), isolation)))
        };
        drop(let_go);
    }

    /// How many plugins are loaded, in use by a task or not.
    pub fn loaded(&self) -> LoadedStats {
        let state = self.state();
        state.loaded.stats(|d| state.pins.contains_key(d))
    }

    /// Current counters and sizes.
    pub fn stats(&self) -> CacheStats {
        let state = self.state();
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            entries: state.entries.len(),
            bytes: state.total,
        }
    }

    fn evict(&self, state: &mut State, keep: &Sha256Digest) {
        while state.total > self.inner.max_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(d, _)| *d != keep && !state.pins.contains_key(*d))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(d, _)| *d);
            let Some(victim) = victim else {
                tracing::warn!(
                    bytes = state.total,
                    limit = self.inner.max_bytes,
                    "artifact cache is over its size bound, but every artifact is in use"
                );
                return;
            };
            if let Some(gone) = state.entries.remove(&victim) {
                state.total -= gone.size;
            }
            if let Err(e) = fs::remove_file(self.path_of(&victim)) {
                tracing::warn!(digest = %victim, error = %e, "could not remove evicted artifact");
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn put(cache: &ArtifactCache, bytes: &[u8]) -> Sha256Digest {
        let digest = Sha256Digest::of(bytes);
        let mut f = NamedTempFile::new_in(cache.temp_dir()).unwrap();
        f.write_all(bytes).unwrap();
        cache.insert(f, &digest).unwrap();
        digest
    }

    #[test]
    fn stores_read_only_by_digest_and_counts_hits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path(), 1 << 20).unwrap();
        let d = put(&cache, b"one");
        let path = cache.lookup(&d).unwrap();
        assert_eq!(
            path,
            dir.path()
                .join(format!("artifacts/sha256/{}.so", d.to_hex()))
        );
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert!(fs::metadata(&path).unwrap().permissions().readonly());
        assert!(cache.lookup(&Sha256Digest::of(b"absent")).is_none());
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.entries, stats.bytes),
            (1, 1, 1, 3)
        );
    }

    #[test]
    fn evicts_least_recently_used_but_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path(), 10).unwrap();
        let a = put(&cache, b"aaaa");
        let b = put(&cache, b"bbbb");
        let _in_use = cache.pin(&a);
        // `a` is older, but pinned: adding `c` evicts `b`.
        let c = put(&cache, b"cccc");
        assert!(cache.lookup(&a).is_some());
        assert!(cache.lookup(&b).is_none());
        assert!(cache.lookup(&c).is_some());
        drop(_in_use);
        cache.lookup(&c);
        let _d = put(&cache, b"dddd");
        assert!(
            cache.lookup(&a).is_none(),
            "unpinned and least recently used"
        );
        assert!(cache.stats().bytes <= 10);
    }

    #[test]
    fn reopening_finds_earlier_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let d = put(&ArtifactCache::open(dir.path(), 1 << 20).unwrap(), b"kept");
        let reopened = ArtifactCache::open(dir.path(), 1 << 20).unwrap();
        assert!(reopened.lookup(&d).is_some());
    }
}
