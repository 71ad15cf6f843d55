use spear_plugin_sdk::prelude::*;

#[function(streaming)]
fn count(n: i64) -> i64 {
    n
}

fn main() {}
