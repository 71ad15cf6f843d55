use spear_plugin_sdk::prelude::*;

struct Counter(i64);

impl Instance for Counter {
    fn new(_config: &Config) -> Result<Self, PluginError> {
        Ok(Counter(0))
    }
}

/// Counts, but the plugin below forgets to name its instance type.
#[function]
fn next(counter: &mut Counter) -> i64 {
    counter.0 += 1;
    counter.0
}

export_plugin! {
    name: "forgetful",
}

fn main() {}
