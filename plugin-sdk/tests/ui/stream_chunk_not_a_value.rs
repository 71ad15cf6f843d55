use spear_plugin_sdk::prelude::*;

struct Reading;

#[function(stream(Reading))]
fn readings(ctx: &Context) -> Result<(), PluginError> {
    ctx.emit(1)?;
    Ok(())
}

fn main() {}
