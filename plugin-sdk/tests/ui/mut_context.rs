use spear_plugin_sdk::prelude::*;

#[function]
fn log(ctx: &mut Context) {
    let _ = ctx;
}

fn main() {}
