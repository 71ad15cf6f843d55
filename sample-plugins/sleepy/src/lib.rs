//! Sleepy: a long call that honours cancellation and deadlines.

use std::time::{Duration, Instant};

use spear_plugin_sdk::prelude::*;

const STEP: Duration = Duration::from_millis(5);

/// Sleeps `ms` milliseconds in small steps; returns early with `cancelled`
/// when the host raises the flag or the deadline passes.
#[function]
fn sleep(ctx: &Context, ms: i64) -> Result<String, PluginError> {
    let total = Duration::from_millis(
        u64::try_from(ms)
            .map_err(|_| PluginError::invalid_argument(format!("ms must be >= 0, got {ms}")))?,
    );
    let start = Instant::now();
    ctx.info(&format!("sleeping {ms} ms"));
    while start.elapsed() < total {
        if ctx.should_stop() {
            let slept = start.elapsed().as_millis();
            ctx.warn(&format!("stopped after {slept} ms"));
            return Err(PluginError::cancelled(format!(
                "stopped after {slept} of {ms} ms"
            )));
        }
        std::thread::sleep(STEP.min(total - start.elapsed()));
    }
    Ok(format!("slept {ms} ms"))
}

export_plugin! {
    name: "sleepy",
}
