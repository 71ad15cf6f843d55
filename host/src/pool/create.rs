//! Making a new instance: in this thread under the inline tier's cap once
//! the constructor has proven short, else off the async workers; in a
//! worker process for a process-tier task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Instance, InstancePool, Isolated};
use crate::error::{Error, Result};
use crate::isolate::IsolatedInstance;
use crate::loader::PluginInstance;
use crate::tier::Code;

impl InstancePool {
    pub(super) async fn create(&self) -> Result<(Instance, Arc<str>)> {
        let shared = &self.shared;
        if let Some(isolated) = shared.context.isolated.clone() {
            return self.create_isolated(isolated).await;
        }
        let profile = &shared.context.profile.constructor;
        let policy = shared.context.policy;
        let seat = if policy.enabled() && profile.is_inline() {
            shared.context.profile.seat(Code::Constructor)
        } else {
            None
        };
        let instance = if let Some(seat) = seat {
            let start = Instant::now();
            seat.begin(start);
            let instance = PluginInstance::new(&shared.plugin, &shared.config);
            seat.end(profile, start.elapsed(), &policy)
                .log(shared.plugin.name(), "constructor");
            instance?
        } else {
            let plugin = Arc::clone(&shared.plugin);
            let config = shared.config.clone();
            let (instance, took) = tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let instance = PluginInstance::new(&plugin, &config);
                (instance, start.elapsed())
            })
            .await
            .map_err(Error::background("instance creation"))?;
            profile
                .off_worker_run(took, &policy)
                .log(shared.plugin.name(), "constructor");
            instance?
        };
        Ok(self.count_new(Instance::Here(instance)))
    }

    /// A worker process for a process-tier task: a warm one (or one started
    /// now) loads the plugin and makes the instance. Off the async workers:
    /// starting a process and loading a library block.
    async fn create_isolated(&self, isolated: Isolated) -> Result<(Instance, Arc<str>)> {
        let shared = &self.shared;
        let (task_id, plugin, config) = (
            Arc::clone(&shared.task_id),
            Arc::clone(&shared.plugin),
            shared.config.clone(),
        );
        let worker = tokio::task::spawn_blocking(move || {
            IsolatedInstance::create(
                &isolated.workers,
                &task_id,
                &plugin,
                &config,
                isolated.memory_max,
                &isolated.gate,
            )
        })
        .await
        .map_err(Error::background("starting a worker"))??;
        Ok(self.count_new(Instance::Worker(Box::new(worker))))
    }

    fn count_new(&self, instance: Instance) -> (Instance, Arc<str>) {
        let shared = &self.shared;
        shared.state().live += 1;
        shared.created.fetch_add(1, Ordering::Relaxed);
        let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
        (instance, Arc::from(format!("{}-{n}", shared.task_id)))
    }
}
