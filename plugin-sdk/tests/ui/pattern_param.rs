use spear_plugin_sdk::prelude::*;

#[function]
fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

fn main() {}
