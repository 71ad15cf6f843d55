use spear_plugin_sdk::prelude::*;

#[function]
fn pick<T: Default>(n: i64) -> i64 {
    n
}

fn main() {}
