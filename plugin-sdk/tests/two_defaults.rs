//! Two functions marked `#[function(default)]`: the root module is refused
//! when it is built (what a host's load reports), naming both.

use spear_plugin_sdk::ffi::init_root_module;
use spear_plugin_sdk::prelude::*;

/// One default.
#[function(default)]
fn first() -> i64 {
    1
}

/// Another.
#[function(default)]
fn second() -> i64 {
    2
}

export_plugin! {
    name: "two-defaults",
}

#[test]
fn two_defaults_are_refused_naming_both() {
    let Err(err) = init_root_module(&__SPEAR_PLUGIN_HEADER) else {
        panic!("two defaults must be refused");
    };
    let err = err.to_string();
    assert!(
        err.contains(
            "plugin `two-defaults` marks 2 functions `#[function(default)]` (`first`, `second`)"
        ),
        "{err}"
    );
}
