//! Stream: emits chunks through the call's sink.

use spear_plugin_sdk::prelude::*;

/// Emits `n` chunks `0, 1, …, n-1`, stopping early when cancelled.
#[function(stream(i64))]
fn count(ctx: &Context, n: i64) -> Result<(), PluginError> {
    if n < 0 {
        return Err(PluginError::invalid_argument(format!(
            "n must be >= 0, got {n}"
        )));
    }
    for i in 0..n {
        if ctx.should_stop() {
            return Err(PluginError::cancelled(format!(
                "stopped after {i} of {n} chunks"
            )));
        }
        ctx.emit(i)?;
    }
    Ok(())
}

export_plugin! {
    name: "stream",
}
