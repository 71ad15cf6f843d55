//! One plugin-side state object, and calls on it.

use std::sync::Arc;

use smallvec::SmallVec;
use spear_plugin_sdk::ffi::abi::{RResult, RSlice};
use spear_plugin_sdk::ffi::{
    FfiCallContext, FfiCallOutcome, FfiError, FfiInstance, FfiKv, FfiParam, FfiValue, PluginModRef,
};
use spear_plugin_sdk::{PluginError, Value};

use super::call::{kv_pairs, kv_slice, sink_for, unix_nanos, CallRequest};
use super::library::{CallEntry, FunctionHandle, Plugin};
use crate::error::{Error, Result};

/// A plugin instance: state created by the plugin, owned by the host.
///
/// `call` takes `&mut self`, so one call at a time runs on an instance;
/// concurrency comes from having several. An instance whose call panicked is
/// [poisoned](PluginInstance::is_poisoned) and must be dropped, not reused;
/// one whose function returned an error (whatever its code) is not.
pub struct PluginInstance {
    plugin: Arc<Plugin>,
    /// The plugin's entry points, copied here: a call reads them from the
    /// instance it already has in hand.
    module: PluginModRef,
    call: CallEntry,
    raw: FfiInstance,
    poisoned: bool,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

// SAFETY: the SDK only builds instances from `Instance: Send` types, and the
// layout check guarantees the plugin was built with our SDK. Moving the
// handle to another thread moves that `Send` state. No `Sync`: `call` needs
// `&mut self`, so calls on one instance never overlap.
unsafe impl Send for PluginInstance {}

impl PluginInstance {
    /// Creates an instance of `plugin` from the task's configuration.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceCreation`] when the plugin refuses the configuration
    /// (or panics while creating the instance).
    pub fn new(plugin: &Arc<Plugin>, config: &[(String, String)]) -> Result<Self> {
        let (Some(module), Some(call)) = (plugin.module(), plugin.call) else {
            return Err(Error::Worker {
                reason: format!(
                    "plugin `{}` runs in worker processes; its code is not loaded in the host",
                    plugin.name()
                ),
            });
        };
        let pairs: SmallVec<[FfiKv<'_>; 8]> = kv_pairs(config);
        match (module.new_instance())(RSlice::from_slice(&pairs)) {
            RResult::ROk(raw) => Ok(PluginInstance {
                plugin: Arc::clone(plugin),
                module,
                call,
                raw,
                poisoned: false,
            }),
            RResult::RErr(e) => {
                let e = PluginError::from(e);
                Err(Error::InstanceCreation {
                    plugin: plugin.name().to_owned(),
                    code: e.code,
                    message: e.message,
                })
            }
        }
    }

    /// Calls `function` on this instance, on the current thread.
    ///
    /// # Errors
    ///
    /// [`Error::PluginFailed`] for an error the function returned, and
    /// [`Error::PluginPanicked`] for a panic (which poisons the instance),
    /// told apart by the outcome's type (ABI 1.3; older plugins are judged
    /// by the code `panic`).
    pub fn call(&mut self, function: FunctionHandle, request: &CallRequest<'_>) -> Result<Value> {
        // Built in place: these run on every call, and moving inline
        // buffers around costs more than the call itself.
        let mut params = SmallVec::<[FfiParam<'_>; 4]>::new();
        for (name, value) in request.params {
            params.push(FfiParam {
                name: name.as_str().into(),
                value: value.as_ref().into(),
            });
        }
        let (mut env_storage, mut header_storage) = (SmallVec::new(), SmallVec::new());
        let sink: &dyn super::CallSink = request.sink;
        let ctx = FfiCallContext {
            execution_id: request.execution_id.into(),
            params: RSlice::from_slice(&params),
            environment: kv_slice(request.environment, None, &mut env_storage),
            headers: kv_slice(
                request.headers,
                request.traceparent.map(|t| ("traceparent", t)),
                &mut header_storage,
            ),
            deadline_unix_nanos: request.deadline.map_or(0, unix_nanos),
            cancelled: request.cancelled,
            sink: sink_for(&sink),
        };
        let outcome = match self.call {
            // SAFETY: `self.raw` was created by this plugin's `new_instance`
            // and is dropped only in `Drop`; `&mut self` makes this the only
            // call on it; `ctx` and everything it borrows (including `sink`,
            // which the sink's data pointer refers to) outlive the call.
            CallEntry::Outcome(call) => unsafe { call(self.raw, function.index, &ctx) },
            CallEntry::Legacy(call) => {
                // SAFETY: as for `call_outcome` above (the same contract).
                let result = unsafe { call(self.raw, function.index, &ctx) };
                legacy_outcome(result)
            }
        };
        match outcome {
            FfiCallOutcome::Returned(value) => Ok(value.into()),
            FfiCallOutcome::Failed(e) => Err(self.failed(function, e.into())),
            FfiCallOutcome::Panicked(message) => {
                self.poisoned = true;
                Err(Error::PluginPanicked {
                    function: self.function_name(function),
                    message: message.into_string(),
                })
            }
        }
    }

    /// The error for a function that returned `e`: never a panic, whatever
    /// its code, so the instance stays usable.
    fn failed(&self, function: FunctionHandle, e: PluginError) -> Error {
        Error::PluginFailed {
            function: self.function_name(function),
            code: e.code,
            message: e.message,
            retriable: e.retriable,
        }
    }

    fn function_name(&self, function: FunctionHandle) -> String {
        self.plugin
            .functions()
            .get(function.index as usize)
            .map_or_else(|| format!("#{}", function.index), |f| f.name.clone())
    }

    /// Whether a call panicked on this instance; it must not be reused.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The plugin this instance belongs to.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}

/// The outcome of a call through the `call` of a plugin before ABI 1.3,
/// which returns a caught panic as an error with code `panic`: for such a
/// plugin alone that code is taken for a panic (a function of it that
/// returns code `panic` on purpose poisons its instance). A plugin of ABI
/// 1.3 on is called through `call_outcome` and never judged by its code.
fn legacy_outcome(result: RResult<FfiValue, FfiError>) -> FfiCallOutcome {
    match result {
        RResult::ROk(value) => FfiCallOutcome::Returned(value),
        RResult::RErr(e) if e.code.as_str() == PluginError::PANIC => {
            FfiCallOutcome::Panicked(e.message)
        }
        RResult::RErr(e) => FfiCallOutcome::Failed(e),
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        // SAFETY: `self.raw` came from this plugin's `new_instance`, and this
        // is its last use.
        unsafe { (self.module.drop_instance())(self.raw) }
    }
}
