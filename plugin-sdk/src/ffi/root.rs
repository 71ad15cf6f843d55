//! The root module every plugin exports, and its identity for `abi_stable`.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr};
use abi_stable::StableAbi;

use super::types::{FfiCallContext, FfiError, FfiFunctionDesc, FfiInstance, FfiKv, FfiValue};

/// The plugin ABI version, checked by the host before any plugin code runs.
///
/// Same major version: compatible (appended root-module fields are optional).
/// A new major version is a deliberate break and is refused with a clear error.
#[cfg(not(feature = "abi-next-fixture"))]
pub const ABI_VERSION: &str = "1.0.0";
/// The plugin ABI version, checked by the host before any plugin code runs.
#[cfg(feature = "abi-next-fixture")]
pub const ABI_VERSION: &str = "1.1.0";

/// The symbol under which a plugin exports its [`abi::LibHeader`](super::abi::LibHeader).
///
/// Equal to `abi_stable::library::ROOT_MODULE_LOADER_NAME` (checked by a test);
/// spelled out because `#[export_name]` needs a literal.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// The table a plugin exports: who it is and how to call it.
///
/// A prefix type: fields may only ever be appended, after `call`.
#[repr(C)]
#[derive(StableAbi, Debug)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// Version of the `spear-plugin-sdk` crate the plugin was built with.
    pub sdk_version: RStr<'static>,
    /// The plugin's name.
    pub name: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// The functions it offers; a call names one by its index here.
    pub functions: RSlice<'static, FfiFunctionDesc>,
    /// Creates an instance from the task's configuration.
    pub new_instance:
        extern "C" fn(config: RSlice<'_, FfiKv<'_>>) -> RResult<FfiInstance, FfiError>,
    /// Destroys an instance created by `new_instance`.
    pub drop_instance: unsafe extern "C" fn(instance: FfiInstance),
    /// Runs function number `function` on `instance`.
    #[sabi(last_prefix_field)]
    pub call: unsafe extern "C" fn(
        instance: FfiInstance,
        function: u32,
        ctx: &FfiCallContext<'_>,
    ) -> RResult<FfiValue, FfiError>,
    /// Present only in the conformance fixture that plays a later SDK.
    #[cfg(feature = "abi-next-fixture")]
    pub next_fixture_field: u64,
}

impl RootModule for PluginModRef {
    abi_stable::declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "spear_plugin";
    const NAME: &'static str = "spear_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_symbol_matches_abi_stable() {
        assert_eq!(
            ROOT_MODULE_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
