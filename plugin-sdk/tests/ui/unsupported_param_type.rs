use spear_plugin_sdk::prelude::*;

struct Point;

#[function]
fn plot(p: Point) -> i64 {
    let _ = p;
    0
}

fn main() {}
