//! Destroying one instance on request (SPEAR's `InstanceService`): its
//! running executions are terminated and the instance is dropped, now if
//! idle, else as soon as its call returns.

use super::Host;
use crate::error::{Error, Result};
use crate::exec::{CancelOutcome, CancelReason, ExecutionError};

/// The error code of executions ended because their instance was
/// destroyed on request.
pub const INSTANCE_DESTROYED: &str = "instance_destroyed";

/// What destroying an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyedInstance {
    /// The task it belonged to.
    pub task_id: std::sync::Arc<str>,
    /// Executions running on it that were terminated.
    pub terminated: usize,
    /// Whether it was idle (destroyed now) rather than leased (destroyed
    /// when its call returns).
    pub was_idle: bool,
}

impl Host {
    /// Destroys the instance `instance_id` (`<task id>-<n>`): its running
    /// executions end CANCELLED with `reason`, and the instance is dropped
    /// rather than reused.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`] when no task of this host has an
    /// instance of that id, idle or running.
    pub fn destroy_instance(&self, instance_id: &str, reason: &str) -> Result<DestroyedInstance> {
        let not_found = || Error::InstanceNotFound {
            instance_id: instance_id.to_owned(),
        };
        // Instance ids are the task's id, a dash and a number; task ids
        // may hold dashes themselves, so every split is tried.
        let task = instance_id
            .rmatch_indices('-')
            .find_map(|(at, _)| self.task(&instance_id[..at]))
            .ok_or_else(not_found)?;
        // Remembered before its executions end, so that whoever reports
        // their ending knows the instance went with them.
        self.remember_destroyed(instance_id);
        let message = if reason.is_empty() {
            format!("instance {instance_id} destroyed on request")
        } else {
            format!("instance {instance_id} destroyed: {reason}")
        };
        let (mut terminated, mut on_it) = (0, 0);
        for record in self.inner.executions.unfinished(Some(&task.id)) {
            if record.instance_id().as_deref() != Some(instance_id) {
                continue;
            }
            on_it += 1;
            let error = ExecutionError::new(INSTANCE_DESTROYED, message.clone());
            if !matches!(
                record.cancel(true, CancelReason::Host(error)),
                CancelOutcome::AlreadyEnded(_)
            ) {
                terminated += 1;
            }
        }
        // An execution that just ended may not have returned its instance
        // yet: leased too, so that the instance is dropped on its return.
        let leased = on_it > 0;
        if !task.pool.destroy_instance(instance_id, leased) {
            return Err(not_found());
        }
        Ok(DestroyedInstance {
            task_id: std::sync::Arc::clone(&task.id),
            terminated,
            was_idle: !leased,
        })
    }

    /// Whether `instance_id` was destroyed on request lately (the last
    /// [`REMEMBERED_DESTROYED`]): an execution that ended CANCELLED on it
    /// left no instance to go back to. Known by the host, not read from the
    /// execution's error code, which a plugin could have chosen too.
    pub(crate) fn instance_destroyed(&self, instance_id: &str) -> bool {
        self.inner
            .destroyed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|d| &**d == instance_id)
    }

    fn remember_destroyed(&self, instance_id: &str) {
        let mut destroyed = self
            .inner
            .destroyed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if destroyed.len() == REMEMBERED_DESTROYED {
            destroyed.pop_front();
        }
        destroyed.push_back(std::sync::Arc::from(instance_id));
    }
}

/// How many destroyed instances the host remembers: instance ids are never
/// reused, and an execution on one ends within moments of its destruction.
const REMEMBERED_DESTROYED: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The host knows which instances it destroyed, for as long as their
    /// executions take to end, and forgets the oldest past its bound.
    #[test]
    fn destroyed_instances_are_remembered_within_a_bound() {
        let data = tempfile::tempdir().unwrap();
        let host = Host::new(Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        })
        .unwrap();
        assert!(!host.instance_destroyed("t-1"));
        host.remember_destroyed("t-1");
        assert!(host.instance_destroyed("t-1"));
        assert!(!host.instance_destroyed("t-2"), "only the one destroyed");
        for n in 0..REMEMBERED_DESTROYED {
            host.remember_destroyed(&format!("u-{n}"));
        }
        assert!(!host.instance_destroyed("t-1"), "the oldest is forgotten");
        assert!(host.instance_destroyed(&format!("u-{}", REMEMBERED_DESTROYED - 1)));
    }
}
