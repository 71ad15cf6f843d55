//! The root module every plugin exports, and its identity for `abi_stable`.

use abi_stable::library::{LibHeader, LibraryError, RootModule};
use abi_stable::sabi_types::VersionStrings;
#[cfg(not(any(feature = "abi-1-1-fixture", feature = "abi-previous-fixture")))]
use abi_stable::std_types::ROption;
use abi_stable::std_types::{RResult, RSlice, RStr};
use abi_stable::StableAbi;

#[cfg(not(any(
    feature = "abi-1-2-fixture",
    feature = "abi-1-1-fixture",
    feature = "abi-previous-fixture"
)))]
use super::types::FfiCallOutcome;
#[cfg(not(feature = "abi-previous-fixture"))]
use super::types::FfiFunctionHints;
use super::types::{FfiCallContext, FfiError, FfiFunctionDesc, FfiInstance, FfiKv, FfiValue};

/// The plugin ABI version, checked by the host before it calls anything in
/// the plugin (its root-module constructor included).
///
/// Same major version: compatible (appended root-module fields are optional).
/// A new major version is a deliberate break and is refused with a clear error.
///
/// - 1.0: the function table and its entry points;
/// - 1.1: `function_hints` (e.g. `#[function(blocking)]`);
/// - 1.2: `default_function` (`#[function(default)]`);
/// - 1.3: `call_outcome`, a call whose result says by its type whether the
///   function returned an error or panicked.
#[cfg(not(any(
    feature = "abi-next-fixture",
    feature = "abi-1-2-fixture",
    feature = "abi-1-1-fixture",
    feature = "abi-previous-fixture"
)))]
pub const ABI_VERSION: &str = "1.3.0";
/// The plugin ABI version, checked by the host before it calls anything in
/// the plugin.
#[cfg(feature = "abi-1-2-fixture")]
pub const ABI_VERSION: &str = "1.2.0";
/// The plugin ABI version, checked by the host before it calls anything in
/// the plugin.
#[cfg(feature = "abi-1-1-fixture")]
pub const ABI_VERSION: &str = "1.1.0";
/// The plugin ABI version, checked by the host before it calls anything in
/// the plugin.
#[cfg(feature = "abi-previous-fixture")]
pub const ABI_VERSION: &str = "1.0.0";
/// The plugin ABI version, checked by the host before it calls anything in
/// the plugin.
#[cfg(feature = "abi-next-fixture")]
pub const ABI_VERSION: &str = "1.4.0";

/// The symbol under which a plugin exports its [`abi::LibHeader`](super::abi::LibHeader).
///
/// Equal to `abi_stable::library::ROOT_MODULE_LOADER_NAME` (checked by a test);
/// spelled out because `#[export_name]` needs a literal.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// The table a plugin exports: who it is and how to call it.
///
/// A prefix type: fields may only ever be appended, after `call`; a host
/// reads a field the plugin predates as `None`.
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
    ///
    /// Instances are `Send`: the host moves them between its threads (one
    /// call at a time each). The SDK only builds them from types that
    /// implement `Instance`, which requires `Send`; a hand-written plugin
    /// must give the same guarantee.
    pub new_instance:
        extern "C" fn(config: RSlice<'_, FfiKv<'_>>) -> RResult<FfiInstance, FfiError>,
    /// Destroys an instance created by `new_instance`.
    pub drop_instance: unsafe extern "C" fn(instance: FfiInstance),
    /// Runs function number `function` on `instance`. A panic comes back
    /// as an error with code `panic`, which a function may also return on
    /// purpose: a host that has [`call_outcome`](Self::call_outcome) calls
    /// that instead, and only a host reading a plugin that predates it
    /// (ABI 1.0 to 1.2) has to take code `panic` for a panic.
    ///
    /// Safety contract for the host: `instance` comes from this plugin's
    /// `new_instance` and no other call uses it at the same time; `ctx`,
    /// and everything it points to (its sink's data included), stays valid
    /// until the call returns.
    #[sabi(last_prefix_field)]
    pub call: unsafe extern "C" fn(
        instance: FfiInstance,
        function: u32,
        ctx: &FfiCallContext<'_>,
    ) -> RResult<FfiValue, FfiError>,
    /// How each function may be run, index for index with `functions` (ABI 1.1).
    #[cfg(not(feature = "abi-previous-fixture"))]
    pub function_hints: RSlice<'static, FfiFunctionHints>,
    /// The index in `functions` of the function the plugin marks as its
    /// default (`#[function(default)]`), called when a caller names no
    /// function; `RNone` when it marks none (ABI 1.2).
    ///
    /// A host refuses an index outside the table. The SDK refuses (in the
    /// root-module constructor) a plugin that marks more than one.
    #[cfg(not(any(feature = "abi-1-1-fixture", feature = "abi-previous-fixture")))]
    pub default_function: ROption<u32>,
    /// Runs function number `function` on `instance`, as `call` does, and
    /// says in the outcome's variant whether the function returned, failed
    /// or panicked (ABI 1.3): a host never reads a panic from an error
    /// code, which the function chooses.
    ///
    /// The same safety contract as `call`.
    #[cfg(not(any(
        feature = "abi-1-2-fixture",
        feature = "abi-1-1-fixture",
        feature = "abi-previous-fixture"
    )))]
    pub call_outcome: unsafe extern "C" fn(
        instance: FfiInstance,
        function: u32,
        ctx: &FfiCallContext<'_>,
    ) -> FfiCallOutcome,
    /// Present only in the conformance fixture that plays a later SDK.
    #[cfg(feature = "abi-next-fixture")]
    pub next_fixture_field: u64,
}

/// One minor version of ABI 1: the root-module fields a plugin of that
/// version has, and what the version added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiMinor {
    /// The version, `1.<minor>`.
    pub version: &'static str,
    /// Root-module fields a plugin of this version provides, at least.
    pub fields: usize,
    /// What it added, as a host would miss it.
    pub added: &'static str,
}

/// Every 1.x version a host built with this SDK accepts, oldest first.
pub const ABI_MINORS: &[AbiMinor] = &[
    AbiMinor {
        version: "1.0",
        fields: 7,
        added: "the function table and its entry points",
    },
    AbiMinor {
        version: "1.1",
        fields: 8,
        added: "function_hints (e.g. `#[function(blocking)]`)",
    },
    AbiMinor {
        version: "1.2",
        fields: 9,
        added: "default_function (`#[function(default)]`)",
    },
    AbiMinor {
        version: "1.3",
        fields: 10,
        added: "call_outcome (a panic told from an error by type, not by its code)",
    },
];

/// How many root-module fields the library behind `module` provides (its
/// own metadata says; fields it predates are not counted).
pub fn provided_fields(module: PluginModRef) -> usize {
    let access = module.0.field_accessibility();
    (0..64)
        .take_while(|&i| access.at(i).is_accessible())
        .count()
}

/// Fields of the current [`PluginMod`].
#[cfg(not(any(
    feature = "abi-next-fixture",
    feature = "abi-1-2-fixture",
    feature = "abi-1-1-fixture",
    feature = "abi-previous-fixture"
)))]
const CURRENT_FIELDS: usize = 10;
#[cfg(feature = "abi-1-2-fixture")]
const CURRENT_FIELDS: usize = 9;
#[cfg(feature = "abi-1-1-fixture")]
const CURRENT_FIELDS: usize = 8;
#[cfg(feature = "abi-previous-fixture")]
const CURRENT_FIELDS: usize = 7;
#[cfg(feature = "abi-next-fixture")]
const CURRENT_FIELDS: usize = 11;

/// Fields of ABI 1.1's root module ([`v1_1::PluginMod`]).
const V1_1_FIELDS: usize = 8;
/// Fields of ABI 1.2's root module ([`v1_2::PluginMod`]).
const V1_2_FIELDS: usize = 9;
/// Fields of ABI 1.3's root module ([`v1_3::PluginMod`]): all of today's,
/// frozen so that a host of a later SDK checks a 1.3 plugin's
/// `call_outcome` before it calls through it.
const V1_3_FIELDS: usize = 10;

impl RootModule for PluginModRef {
    abi_stable::declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "spear_plugin";
    const NAME: &'static str = "spear_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

/// Checks a library's ABI version and root-module layout, returning its root
/// module. No plugin code runs before both checks pass.
///
/// abi_stable on its own accepts only libraries at least as new as the host
/// (the expected layout must be a prefix of the found one). A spearlet host
/// also accepts older 1.x plugins: the layout is checked against the fields
/// of ABI 1.0, then against the full current layout when the plugin has all
/// of its fields, else against the newest frozen layout whose fields it has
/// (ABI 1.3's, 1.2's or 1.1's); the fields the plugin predates read as
/// `None`.
///
/// # Errors
///
/// abi_stable's own: incompatible version, layout mismatch, or a failing
/// root-module constructor.
pub fn init_root_module(header: &LibHeader) -> Result<PluginModRef, LibraryError> {
    let base = header.init_root_module::<v1_0::PluginModRef>()?;
    let access = base.0.field_accessibility();
    let library_fields = (0..64)
        .take_while(|&i| access.at(i).is_accessible())
        .count();
    if library_fields >= CURRENT_FIELDS {
        return header.check_layout::<PluginModRef>();
    }
    // Reached only by a host whose SDK is newer than ABI 1.3 (today, the
    // abi-next conformance fixture): a 1.3 plugin there is checked against
    // the frozen 1.3 layout, `call_outcome` included.
    if library_fields >= V1_3_FIELDS {
        let checked = header.check_layout::<v1_3::PluginModRef>()?;
        // SAFETY: the library's layout was checked against ABI 1.3's
        // fields, which the current `PluginMod` starts with, in order and
        // unchanged; the fields it lacks are marked inaccessible in the
        // metadata it carries, so their accessors return `None`.
        return Ok(PluginModRef(unsafe { checked.0.cast() }));
    }
    if library_fields >= V1_2_FIELDS {
        let checked = header.check_layout::<v1_2::PluginModRef>()?;
        // SAFETY: the library's layout was checked against ABI 1.2's
        // fields, which the current `PluginMod` starts with, in order and
        // unchanged; the fields it lacks are marked inaccessible in the
        // metadata it carries, so their accessors return `None`.
        return Ok(PluginModRef(unsafe { checked.0.cast() }));
    }
    if library_fields >= V1_1_FIELDS {
        let checked = header.check_layout::<v1_1::PluginModRef>()?;
        // SAFETY: the library's layout was checked against ABI 1.1's
        // fields, which the current `PluginMod` starts with, in order and
        // unchanged; the fields it lacks are marked inaccessible in the
        // metadata it carries, so their accessors return `None`.
        return Ok(PluginModRef(unsafe { checked.0.cast() }));
    }
    // SAFETY: the library's layout was checked against ABI 1.0's fields,
    // which the current `PluginMod` starts with, in order and unchanged.
    // The fields it lacks are marked inaccessible in the metadata it
    // carries, so their accessors return `None` instead of reading them.
    Ok(PluginModRef(unsafe { base.0.cast() }))
}

/// The ABI 1.0 root module, frozen: what every 1.x plugin starts with.
/// Only its layout is used (to check against); its accessors never are.
#[allow(dead_code)]
mod v1_0 {
    use abi_stable::library::RootModule;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::std_types::{RResult, RSlice, RStr};
    use abi_stable::StableAbi;

    use crate::ffi::types::{
        FfiCallContext, FfiError, FfiFunctionDesc, FfiInstance, FfiKv, FfiValue,
    };

    /// ABI 1.0's fields, exactly (read through the current module's accessors).
    #[repr(C)]
    #[derive(StableAbi, Debug)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(option))]
    pub struct PluginMod {
        pub sdk_version: RStr<'static>,
        pub name: RStr<'static>,
        pub version: RStr<'static>,
        pub functions: RSlice<'static, FfiFunctionDesc>,
        pub new_instance:
            extern "C" fn(config: RSlice<'_, FfiKv<'_>>) -> RResult<FfiInstance, FfiError>,
        pub drop_instance: unsafe extern "C" fn(instance: FfiInstance),
        #[sabi(last_prefix_field)]
        pub call: unsafe extern "C" fn(
            instance: FfiInstance,
            function: u32,
            ctx: &FfiCallContext<'_>,
        ) -> RResult<FfiValue, FfiError>,
    }

    impl RootModule for PluginModRef {
        abi_stable::declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "spear_plugin";
        const NAME: &'static str = "spear_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
    }
}

/// The ABI 1.1 root module, frozen: ABI 1.0's fields and `function_hints`.
/// Only its layout is used (to check a 1.1 plugin's against); its
/// accessors never are.
#[allow(dead_code)]
mod v1_1 {
    use abi_stable::library::RootModule;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::std_types::{RResult, RSlice, RStr};
    use abi_stable::StableAbi;

    use crate::ffi::types::{
        FfiCallContext, FfiError, FfiFunctionDesc, FfiFunctionHints, FfiInstance, FfiKv, FfiValue,
    };

    /// ABI 1.1's fields, exactly (read through the current module's accessors).
    #[repr(C)]
    #[derive(StableAbi, Debug)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(option))]
    pub struct PluginMod {
        pub sdk_version: RStr<'static>,
        pub name: RStr<'static>,
        pub version: RStr<'static>,
        pub functions: RSlice<'static, FfiFunctionDesc>,
        pub new_instance:
            extern "C" fn(config: RSlice<'_, FfiKv<'_>>) -> RResult<FfiInstance, FfiError>,
        pub drop_instance: unsafe extern "C" fn(instance: FfiInstance),
        #[sabi(last_prefix_field)]
        pub call: unsafe extern "C" fn(
            instance: FfiInstance,
            function: u32,
            ctx: &FfiCallContext<'_>,
        ) -> RResult<FfiValue, FfiError>,
        pub function_hints: RSlice<'static, FfiFunctionHints>,
    }

    impl RootModule for PluginModRef {
        abi_stable::declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "spear_plugin";
        const NAME: &'static str = "spear_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.1.0");
    }
}

/// The ABI 1.2 root module, frozen: ABI 1.1's fields and
/// `default_function`. Only its layout is used (to check a 1.2 plugin's
/// against); its accessors never are.
#[allow(dead_code)]
mod v1_2 {
    use abi_stable::library::RootModule;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::std_types::{ROption, RResult, RSlice, RStr};
    use abi_stable::StableAbi;

    use crate::ffi::types::{
        FfiCallContext, FfiError, FfiFunctionDesc, FfiFunctionHints, FfiInstance, FfiKv, FfiValue,
    };

    /// ABI 1.2's fields, exactly (read through the current module's accessors).
    #[repr(C)]
    #[derive(StableAbi, Debug)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(option))]
    pub struct PluginMod {
        pub sdk_version: RStr<'static>,
        pub name: RStr<'static>,
        pub version: RStr<'static>,
        pub functions: RSlice<'static, FfiFunctionDesc>,
        pub new_instance:
            extern "C" fn(config: RSlice<'_, FfiKv<'_>>) -> RResult<FfiInstance, FfiError>,
        pub drop_instance: unsafe extern "C" fn(instance: FfiInstance),
        #[sabi(last_prefix_field)]
        pub call: unsafe extern "C" fn(
            instance: FfiInstance,
            function: u32,
            ctx: &FfiCallContext<'_>,
        ) -> RResult<FfiValue, FfiError>,
        pub function_hints: RSlice<'static, FfiFunctionHints>,
        pub default_function: ROption<u32>,
    }

    impl RootModule for PluginModRef {
        abi_stable::declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "spear_plugin";
        const NAME: &'static str = "spear_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.2.0");
    }
}

/// The ABI 1.3 root module, frozen: ABI 1.2's fields and `call_outcome`.
/// Only its layout is used (to check a 1.3 plugin's against, in a host of a
/// later SDK); its accessors never are.
#[allow(dead_code)]
mod v1_3 {
    use abi_stable::library::RootModule;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::std_types::{ROption, RResult, RSlice, RStr};
    use abi_stable::StableAbi;

    use crate::ffi::types::{
        FfiCallContext, FfiCallOutcome, FfiError, FfiFunctionDesc, FfiFunctionHints, FfiInstance,
        FfiKv, FfiValue,
    };

    /// ABI 1.3's fields, exactly (read through the current module's accessors).
    #[repr(C)]
    #[derive(StableAbi, Debug)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(option))]
    pub struct PluginMod {
        pub sdk_version: RStr<'static>,
        pub name: RStr<'static>,
        pub version: RStr<'static>,
        pub functions: RSlice<'static, FfiFunctionDesc>,
        pub new_instance:
            extern "C" fn(config: RSlice<'_, FfiKv<'_>>) -> RResult<FfiInstance, FfiError>,
        pub drop_instance: unsafe extern "C" fn(instance: FfiInstance),
        #[sabi(last_prefix_field)]
        pub call: unsafe extern "C" fn(
            instance: FfiInstance,
            function: u32,
            ctx: &FfiCallContext<'_>,
        ) -> RResult<FfiValue, FfiError>,
        pub function_hints: RSlice<'static, FfiFunctionHints>,
        pub default_function: ROption<u32>,
        pub call_outcome: unsafe extern "C" fn(
            instance: FfiInstance,
            function: u32,
            ctx: &FfiCallContext<'_>,
        ) -> FfiCallOutcome,
    }

    impl RootModule for PluginModRef {
        abi_stable::declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "spear_plugin";
        const NAME: &'static str = "spear_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.3.0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest minor listed is the layout this SDK builds.
    #[cfg(not(any(
        feature = "abi-next-fixture",
        feature = "abi-1-2-fixture",
        feature = "abi-1-1-fixture",
        feature = "abi-previous-fixture"
    )))]
    #[test]
    fn the_newest_minor_has_the_current_fields() {
        let newest = ABI_MINORS.last().expect("at least one minor");
        assert_eq!(newest.fields, CURRENT_FIELDS);
        assert!(ABI_VERSION.starts_with(newest.version));
    }

    #[test]
    fn export_symbol_matches_abi_stable() {
        assert_eq!(
            ROOT_MODULE_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
