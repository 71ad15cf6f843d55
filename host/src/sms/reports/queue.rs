//! The queue of reports waiting to be sent: in order, at most one per id,
//! bounded (the oldest non-final report dropped first).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use spearlet_proto::sms::{Execution, Instance};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Execution(String),
    Instance(String),
}

#[derive(Debug, Clone)]
pub(super) enum Outgoing {
    Execution(Execution),
    Instance(Instance),
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) key: Key,
    pub(super) report: Outgoing,
    pub(super) is_final: bool,
    /// An instance report that clears `current_execution_id`: kept like a
    /// final one when the queue is full, since nothing else would tell the
    /// SMS that the instance no longer serves its execution.
    pub(super) clears: bool,
    /// The SMS already kept a later copy once; it is sent again once.
    pub(super) rejected: bool,
}

impl Entry {
    /// Dropped only when nothing but such reports is left in a full queue.
    pub(super) fn kept(&self) -> bool {
        self.is_final || self.clears
    }
}

/// Queued reports in order, at most one per id.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) next: u64,
    pub(super) entries: BTreeMap<u64, Entry>,
    pub(super) by_key: HashMap<Key, u64>,
    pub(super) non_final: BTreeSet<u64>,
}

impl Queue {
    /// Queues `entry` (at `seq` when given, else last), replacing a queued
    /// one for its id; returns what the bound made it drop.
    ///
    /// A replacement goes last, not in its predecessor's place: reports are
    /// sent in the order they were made across ids too. That matters to
    /// SPEAR's SMS, where an execution's report also marks its instance as
    /// serving it: an instance's IDLE report must not overtake the final
    /// report of the execution it ran.
    pub(super) fn put(&mut self, entry: Entry, seq: Option<u64>, capacity: usize) -> Vec<Entry> {
        if let Some(&old) = self.by_key.get(&entry.key) {
            if seq.is_some() {
                // An entry put back after a failed attempt: the newer
                // report queued for its id since supersedes it.
                return Vec::new();
            }
            self.remove(old);
        }
        let seq = seq.unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.by_key.insert(entry.key.clone(), seq);
        if !entry.kept() {
            self.non_final.insert(seq);
        }
        self.entries.insert(seq, entry);
        let mut dropped = Vec::new();
        while self.entries.len() > capacity.max(1) {
            let victim = self
                .non_final
                .first()
                .copied()
                .or_else(|| self.entries.keys().next().copied());
            match victim.and_then(|seq| self.remove(seq)) {
                Some(entry) => dropped.push(entry),
                None => break,
            }
        }
        dropped
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.by_key.remove(&entry.key);
        self.non_final.remove(&seq);
        Some(entry)
    }

    pub(super) fn pop(&mut self) -> Option<(u64, Entry)> {
        let seq = *self.entries.keys().next()?;
        self.remove(seq).map(|entry| (seq, entry))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
