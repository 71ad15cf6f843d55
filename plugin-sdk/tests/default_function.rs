//! `#[function(default)]` reaches the root module: the table index of the
//! marked function is its `default_function` (ABI 1.2).

use spear_plugin_sdk::ffi::init_root_module;
use spear_plugin_sdk::prelude::*;

/// The one a call naming no function gets.
#[function(default)]
fn main_entry() -> i64 {
    1
}

/// Sorted before `main_entry`, so the index is not simply 0.
#[function]
fn helper() -> i64 {
    2
}

export_plugin! {
    name: "defaults",
}

#[test]
fn the_marked_function_is_the_root_modules_default() {
    let module = init_root_module(&__SPEAR_PLUGIN_HEADER).expect("the root module builds");
    let table = module.functions();
    let names: Vec<&str> = table.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["helper", "main_entry"]);
    let index = module
        .default_function()
        .expect("an ABI 1.2 root module has the field")
        .into_option()
        .expect("a function is marked");
    assert_eq!(table[index as usize].name.as_str(), "main_entry");
}
