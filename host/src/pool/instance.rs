//! What a pool lends: an instance in this process, or a worker process
//! holding one (the process tier). Both run one call at a time and are
//! discarded, not reused, once something went wrong on them.

use crate::error::Result;
use crate::isolate::IsolatedInstance;
use crate::loader::{CallRequest, FunctionHandle, Plugin, PluginInstance};
use crate::Value;

/// One instance of a task's plugin.
#[derive(Debug)]
pub enum Instance {
    /// In this process.
    Here(PluginInstance),
    /// In a worker process (boxed: leases and idle lists move instances
    /// around, and the in-process one is the hot path's).
    Worker(Box<IsolatedInstance>),
}

impl Instance {
    /// Runs `function` on it; blocks until the call ends.
    ///
    /// # Errors
    ///
    /// As [`PluginInstance::call`] and [`IsolatedInstance::call`].
    pub fn call(&mut self, function: FunctionHandle, request: &CallRequest<'_>) -> Result<Value> {
        match self {
            Instance::Here(instance) => instance.call(function, request),
            Instance::Worker(worker) => worker.call(function, request),
        }
    }

    /// Whether it must be discarded (a panic, a dead or killed worker).
    pub fn is_poisoned(&self) -> bool {
        match self {
            Instance::Here(instance) => instance.is_poisoned(),
            Instance::Worker(worker) => worker.is_poisoned(),
        }
    }

    /// `(allocated, peak)` bytes of the last call, when the plugin counts;
    /// read right after the call, on the thread that made it.
    pub fn call_memory(&self, plugin: &Plugin) -> Option<(u64, u64)> {
        match self {
            Instance::Here(_) => plugin.call_memory(),
            Instance::Worker(worker) => worker.call_memory(),
        }
    }

    /// Whether its call waits for another process (and may therefore
    /// start on an async worker: the wait gives the worker up if it must
    /// sleep).
    pub fn is_isolated(&self) -> bool {
        matches!(self, Instance::Worker(_))
    }
}
