//! Counter: per-instance state, to tell a reused instance from a fresh one.

use spear_plugin_sdk::prelude::*;

/// How many calls this instance has served.
struct Calls(i64);

impl Instance for Calls {
    fn new(config: &Config) -> Result<Self, PluginError> {
        // `start` lets a task begin counting elsewhere; it proves task config
        // reaches the instance.
        Ok(Calls(config.parse::<i64>("start")?.unwrap_or(0)))
    }
}

/// Returns this instance's call count, starting at 1.
#[function]
fn next(calls: &mut Calls) -> i64 {
    calls.0 += 1;
    calls.0
}

export_plugin! {
    name: "counter",
    instance: Calls,
}
