//! The plugin side of the boundary: the `extern "C"` entry points that
//! [`export_plugin!`](crate::export_plugin) wires into a plugin's root module.
//!
//! Every entry point runs the author's code inside `catch_unwind`, so a panic
//! never unwinds into the host. `call_outcome` (ABI 1.3) hands it back as
//! [`FfiCallOutcome::Panicked`], told apart from an error by its variant;
//! the older entry points, which have only an error to return, make it an
//! [`FfiError`] with code `panic`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RBoxError, RResult, RSlice, RStr};

use super::root::{PluginMod, PluginModRef};
use super::types::{FfiCallContext, FfiCallOutcome, FfiError, FfiInstance, FfiKv, FfiValue};
use crate::registry::PluginDef;
use crate::{Config, Context, Instance, PluginError};

/// The header a plugin exports under [`ROOT_MODULE_SYMBOL`](super::ROOT_MODULE_SYMBOL).
///
/// Used by [`export_plugin!`](crate::export_plugin); not meant to be called by hand.
pub const fn lib_header<P: PluginDef>() -> LibHeader {
    // SAFETY: `root_loader::<P>` goes through abi_stable's own
    // `__call_root_module_loader`, which erases exactly a `PluginModRef`, the
    // type named here.
    unsafe { LibHeader::from_constructor::<PluginModRef>(root_loader::<P>, CheckTypeLayout::Yes) }
}

extern "C" fn root_loader<P: PluginDef>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(build_module::<P>)
}

/// The root module; refused (the host reads the constructor's error) when
/// the plugin marks more than one function `#[function(default)]`.
fn build_module<P: PluginDef>() -> Result<PluginModRef, RBoxError> {
    #[cfg_attr(
        any(feature = "abi-1-1-fixture", feature = "abi-previous-fixture"),
        allow(unused_variables)
    )]
    let default_function = P::functions()
        .default_function()
        .map_err(|e| RBoxError::from_fmt(&format!("plugin `{}` {e}", P::NAME)))?;
    Ok(PluginMod {
        sdk_version: RStr::from_str(crate::SDK_VERSION),
        name: RStr::from_str(P::NAME),
        version: RStr::from_str(P::VERSION),
        functions: RSlice::from_slice(P::functions().descriptors),
        new_instance: new_instance_fn_wrapper::<P>,
        drop_instance: drop_instance_fn_wrapper::<P>,
        call: call_fn_wrapper::<P>,
        #[cfg(not(feature = "abi-previous-fixture"))]
        function_hints: RSlice::from_slice(P::functions().hints),
        #[cfg(not(any(feature = "abi-1-1-fixture", feature = "abi-previous-fixture")))]
        default_function: default_function.into(),
        #[cfg(not(any(
            feature = "abi-1-2-fixture",
            feature = "abi-1-1-fixture",
            feature = "abi-previous-fixture"
        )))]
        call_outcome: call_outcome_fn_wrapper::<P>,
        #[cfg(feature = "abi-next-fixture")]
        next_fixture_field: 0,
    }
    .leak_into_prefix())
}

extern "C" fn new_instance_fn_wrapper<P: PluginDef>(
    config: RSlice<'_, FfiKv<'_>>,
) -> RResult<FfiInstance, FfiError> {
    guarded(|| {
        let config = Config::from_pairs(
            config
                .iter()
                .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().to_owned())),
        );
        let state = <P::Instance as Instance>::new(&config)?;
        Ok(FfiInstance(Box::into_raw(Box::new(state)).cast()))
    })
}

/// # Safety
///
/// `instance` must come from this plugin's `new_instance`, and must not be
/// used again afterwards.
unsafe extern "C" fn drop_instance_fn_wrapper<P: PluginDef>(instance: FfiInstance) {
    // A panicking Drop must not unwind into the host; the state is gone either way.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `instance` is a live `Box<P::Instance>`
        // created by `new_instance_fn_wrapper::<P>` and hands over ownership.
        drop(unsafe { Box::from_raw(instance.0.cast::<P::Instance>()) });
    }));
}

/// The entry point of ABI 1.0 to 1.2, for hosts that predate
/// `call_outcome`: a panic comes back as an error with code `panic`.
///
/// # Safety
///
/// `instance` must be a live instance from this plugin's `new_instance`, used
/// by no other call at the same time.
unsafe extern "C" fn call_fn_wrapper<P: PluginDef>(
    instance: FfiInstance,
    function: u32,
    ctx: &FfiCallContext<'_>,
) -> RResult<FfiValue, FfiError> {
    super::alloc::begin_call();
    // SAFETY: this function's own contract, passed on unchanged.
    guarded(|| unsafe { run_call::<P>(instance, function, ctx) })
}

/// The entry point of ABI 1.3: the outcome's variant says whether the
/// function returned, failed or panicked.
///
/// # Safety
///
/// As [`call_fn_wrapper`].
#[cfg_attr(
    any(
        feature = "abi-1-2-fixture",
        feature = "abi-1-1-fixture",
        feature = "abi-previous-fixture"
    ),
    allow(dead_code)
)]
unsafe extern "C" fn call_outcome_fn_wrapper<P: PluginDef>(
    instance: FfiInstance,
    function: u32,
    ctx: &FfiCallContext<'_>,
) -> FfiCallOutcome {
    super::alloc::begin_call();
    // SAFETY: this function's own contract, passed on unchanged.
    match caught(|| unsafe { run_call::<P>(instance, function, ctx) }) {
        Caught::Returned(value) => FfiCallOutcome::Returned(value),
        Caught::Failed(err) => FfiCallOutcome::Failed(err.into()),
        Caught::Panicked(message) => FfiCallOutcome::Panicked(message.into()),
    }
}

/// One call of function number `function`, to be run behind the panic
/// barrier.
///
/// # Safety
///
/// `instance` must be a live instance from this plugin's `new_instance`, used
/// by no other call at the same time; `ctx` (its sink included) must stay
/// valid until this returns.
unsafe fn run_call<P: PluginDef>(
    instance: FfiInstance,
    function: u32,
    ctx: &FfiCallContext<'_>,
) -> Result<FfiValue, PluginError> {
    // SAFETY: the caller guarantees `instance` points to a live `P::Instance`
    // with no other reference to it for the duration of this call.
    let state: &mut P::Instance = unsafe { &mut *instance.0.cast::<P::Instance>() };
    let handlers = P::functions().handlers;
    let handler = handlers.get(function as usize).ok_or_else(|| {
        PluginError::new(
            "no_such_function",
            format!(
                "plugin `{}` has no function number {function} (it has {})",
                P::NAME,
                handlers.len()
            ),
        )
    })?;
    // SAFETY: `ctx` is the host's context for this call, whose sink the
    // host keeps valid until the call returns (the `call` contract on
    // `PluginMod`); the context does not outlive the call.
    let ctx = unsafe { Context::new(ctx) };
    let value = handler(state as &mut dyn Any, &ctx)?;
    Ok(FfiValue::from(value))
}

/// The symbol under which a plugin exports its panic-barrier probe
/// (`extern "C" fn() -> RResult<(), FfiError>`, from `export_plugin!`).
pub const PANIC_PROBE_SYMBOL: &str = "spear_plugin_panic_probe";

/// Panics inside the plugin's own panic barrier, for `spearlet plugin
/// check`. Returns the `panic` error the barrier makes of it; in a library
/// built with `panic = "abort"` it never returns (the process aborts),
/// which is what the probe is for: such a plugin would take its host down
/// with its first panic.
pub extern "C" fn panic_probe() -> RResult<(), FfiError> {
    guarded(|| -> Result<(), PluginError> {
        panic!("spearlet panic-barrier probe: a panic the SDK must catch")
    })
}

/// The symbol under which a plugin exports its typed panic-barrier probe
/// (`extern "C" fn() -> FfiCallOutcome`, from `export_plugin!`; SDKs of
/// ABI 1.3 on).
pub const PANIC_OUTCOME_PROBE_SYMBOL: &str = "spear_plugin_panic_outcome_probe";

/// As [`panic_probe`], through the barrier `call_outcome` uses: returns
/// [`FfiCallOutcome::Panicked`], so a host tells the caught panic from an
/// error by the variant, not by the code `panic`.
pub extern "C" fn panic_outcome_probe() -> FfiCallOutcome {
    match caught(|| -> Result<(), PluginError> {
        panic!("spearlet panic-barrier probe: a panic the SDK must catch")
    }) {
        Caught::Returned(()) => FfiCallOutcome::Returned(FfiValue::Unit),
        Caught::Failed(err) => FfiCallOutcome::Failed(err.into()),
        Caught::Panicked(message) => FfiCallOutcome::Panicked(message.into()),
    }
}

/// How a closure run behind the panic barrier ended.
pub(crate) enum Caught<T> {
    /// It returned a value.
    Returned(T),
    /// It returned an error.
    Failed(PluginError),
    /// It panicked; the panic's message.
    Panicked(String),
}

/// The panic barrier itself: runs `f`, catching a panic.
///
/// `AssertUnwindSafe` is sound here because the host discards an instance
/// whose call panicked: state a panic left half-updated is never seen again.
pub(crate) fn caught<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Caught<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Caught::Returned(value),
        Ok(Err(err)) => Caught::Failed(err),
        Err(payload) => Caught::Panicked(panic_message(payload.as_ref())),
    }
}

/// Runs `f`, turning a panic into a `panic` error: for the entry points
/// whose result can only be an error (`new_instance`, ABI 1.0's `call`).
fn guarded<T>(f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, FfiError> {
    match barrier(f) {
        Ok(value) => RResult::ROk(value),
        Err(err) => RResult::RErr(err.into()),
    }
}

/// The panic barrier with a panic made a `panic` error, shared with
/// `testing::MockCall` so that a panic in a unit test ends as it would
/// under a host.
pub(crate) fn barrier<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match caught(f) {
        Caught::Returned(value) => Ok(value),
        Caught::Failed(err) => Err(err),
        Caught::Panicked(message) => Err(PluginError::panic(message)),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the plugin panicked with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #25: the barrier says "panicked" by its variant; an error a
    /// function returns with code `panic` stays an error.
    #[test]
    fn a_panic_and_an_error_coded_panic_are_told_apart() {
        let chosen = caught(|| -> Result<(), PluginError> { Err(PluginError::panic("chosen")) });
        assert!(matches!(chosen, Caught::Failed(e) if e.code == PluginError::PANIC));
        let real = caught(|| -> Result<(), PluginError> { panic!("real") });
        assert!(matches!(real, Caught::Panicked(m) if m == "real"));
    }

    #[test]
    fn the_typed_probe_reports_its_panic_by_variant() {
        assert!(matches!(
            panic_outcome_probe(),
            FfiCallOutcome::Panicked(m) if m.as_str().contains("panic-barrier probe")
        ));
    }
}
