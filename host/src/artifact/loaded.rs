//! The plugins the store has loaded, by digest and tier.
//!
//! A later request for a digest finds its plugin here without reading a
//! byte. Every plugin found here is one some task may still run, so each is
//! only weakly referenced unless the store chose to keep it: the store
//! keeps every plugin while a task pins its digest, and at most
//! `artifacts.max_unused_loaded` of those no task pins, the least recently
//! used let go first. A plugin let go closes what it holds (a process-tier
//! plugin's verified file) as soon as its last user drops it, so a
//! long-lived host that has seen many digests does not keep one open for
//! each of them.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::digest::Sha256Digest;
use crate::isolate::Isolation;
use crate::loader::Plugin;

/// How many plugins the store knows loaded, by whether a task uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadedStats {
    /// Plugins whose digest a task (or a version kept for rollback) pins.
    pub in_use: usize,
    /// Plugins still loaded that no task pins: kept for a task created
    /// again on them (at most `artifacts.max_unused_loaded`), or still held
    /// by a caller of the store for a moment.
    pub unused: usize,
}

type Key = (Sha256Digest, Isolation);

/// The registry (kept under the cache's lock, beside the pins). Hashed
/// with foldhash: it is looked up on every creation of a task, and its keys
/// are digests, which need no protection from crafted collisions.
#[derive(Debug)]
pub(super) struct Loaded {
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
    max_unused: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    plugin: Weak<Plugin>,
    /// The store's own reference; `None` once let go.
    kept: Option<Arc<Plugin>>,
    last_used: u64,
}

impl Loaded {
    pub(super) fn new(max_unused: usize) -> Self {
        Loaded {
            entries: HashMap::default(),
            max_unused,
            clock: 0,
        }
    }

    pub(super) fn set_max_unused(&mut self, max_unused: usize) {
        self.max_unused = max_unused;
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The plugin of `digest` for `isolation`, if one is still loaded: kept
    /// again, as used now.
    pub(super) fn get(
        &mut self,
        digest: &Sha256Digest,
        isolation: Isolation,
    ) -> Option<Arc<Plugin>> {
        let now = self.tick();
        let entry = self.entries.get_mut(&(*digest, isolation))?;
        let plugin = entry.plugin.upgrade()?;
        entry.kept = Some(Arc::clone(&plugin));
        entry.last_used = now;
        Some(plugin)
    }

    /// Records `plugin`, loaded for `isolation`, as used now.
    pub(super) fn insert(&mut self, plugin: &Arc<Plugin>, isolation: Isolation) {
        let now = self.tick();
        self.entries.insert(
            (plugin.digest(), isolation),
            Entry {
                plugin: Arc::downgrade(plugin),
                kept: Some(Arc::clone(plugin)),
                last_used: now,
            },
        );
    }

    /// `digest` is no longer pinned by any task: it counts as used until now.
    pub(super) fn unpinned(&mut self, digest: &Sha256Digest) {
        let now = self.tick();
        for ((d, _), entry) in &mut self.entries {
            if d == digest {
                entry.last_used = now;
            }
        }
    }

    /// Lets go of the least recently used plugins no task pins beyond the
    /// bound. `spare` (just loaded, its task not pinning it yet) is neither
    /// let go nor counted: the next trim counts it if no task took it up.
    /// Returns what was let go, to be dropped once the caller has released
    /// its lock (dropping the last reference closes files).
    #[must_use]
    pub(super) fn trim(
        &mut self,
        pinned: impl Fn(&Sha256Digest) -> bool,
        spare: Option<Key>,
    ) -> Vec<Arc<Plugin>> {
        self.entries
            .retain(|_, e| e.kept.is_some() || e.plugin.strong_count() > 0);
        let mut unused: Vec<(u64, Key)> = self
            .entries
            .iter()
            .filter(|(key, e)| e.kept.is_some() && !pinned(&key.0) && Some(**key) != spare)
            .map(|(key, e)| (e.last_used, *key))
            .collect();
        if unused.len() <= self.max_unused {
            return Vec::new();
        }
        unused.sort_unstable_by_key(|(last_used, _)| *last_used);
        let excess = unused.len() - self.max_unused;
        unused
            .into_iter()
            .take(excess)
            .filter_map(|(_, key)| self.entries.get_mut(&key).and_then(|e| e.kept.take()))
            .collect()
    }

    /// The plugins still alive, in use or not.
    pub(super) fn stats(&self, pinned: impl Fn(&Sha256Digest) -> bool) -> LoadedStats {
        let mut stats = LoadedStats::default();
        for ((digest, _), entry) in &self.entries {
            if entry.plugin.strong_count() == 0 {
                continue;
            }
            if pinned(digest) {
                stats.in_use += 1;
            } else {
                stats.unused += 1;
            }
        }
        stats
    }
}
