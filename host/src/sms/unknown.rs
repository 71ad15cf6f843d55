//! Task ids the SMS did not know, remembered for `sms.unknown_task_ttl`: a
//! client repeating calls to a wrong id (or many wrong ids) costs the SMS
//! one lookup per id and period, not one per call — a lookup is a GetTask
//! and up to a hundred pages of ListTasks.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Ids remembered at most: past it, the expired go first, then all (an
/// attacker cycling through ids then costs lookups again, never memory).
const MOST_REMEMBERED: usize = 4096;

/// Recently unknown task ids.
#[derive(Debug)]
pub(super) struct UnknownTasks {
    ttl: Duration,
    until: Mutex<HashMap<String, Instant>>,
}

impl UnknownTasks {
    /// Remembering each for `ttl` (zero: not at all).
    pub(super) fn new(ttl: Duration) -> Self {
        UnknownTasks {
            ttl,
            until: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `id` was found unknown within the time to live.
    pub(super) fn is_unknown(&self, id: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        match until.get(id) {
            Some(t) if Instant::now() < *t => true,
            Some(_) => {
                until.remove(id);
                false
            }
            None => false,
        }
    }

    /// The SMS knows no task `id` now.
    pub(super) fn remember(&self, id: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= MOST_REMEMBERED {
            until.retain(|_, t| now < *t);
            if until.len() >= MOST_REMEMBERED {
                until.clear();
            }
        }
        until.insert(id.to_owned(), now + self.ttl);
    }

    /// A task `id` exists now (this node registered it).
    pub(super) fn forget(&self, id: &str) {
        if !self.ttl.is_zero() {
            self.until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_for_the_ttl_and_bounded_in_number() {
        let unknown = UnknownTasks::new(Duration::from_secs(60));
        assert!(!unknown.is_unknown("a"));
        unknown.remember("a");
        assert!(unknown.is_unknown("a"));
        unknown.forget("a");
        assert!(!unknown.is_unknown("a"));
        for i in 0..MOST_REMEMBERED + 10 {
            unknown.remember(&i.to_string());
        }
        assert!(unknown.until.lock().unwrap().len() <= MOST_REMEMBERED);
        let off = UnknownTasks::new(Duration::ZERO);
        off.remember("a");
        assert!(!off.is_unknown("a"));
        let expired = UnknownTasks::new(Duration::from_nanos(1));
        expired.remember("a");
        std::thread::yield_now();
        let past = Instant::now() + Duration::from_millis(1);
        while Instant::now() < past {
            std::hint::spin_loop();
        }
        assert!(!expired.is_unknown("a"));
    }
}
