use spear_plugin_sdk::prelude::*;

#[function(default)]
fn first() -> i64 {
    1
}

#[function(default)]
fn second() -> i64 {
    2
}

export_plugin! {
    name: "two-defaults",
    functions: [first, second],
}

fn main() {}
