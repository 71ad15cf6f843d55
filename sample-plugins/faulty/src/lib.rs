//! Faulty: failures on purpose, to exercise the host's recovery paths.

use spear_plugin_sdk::prelude::*;

/// Failures served so far by this instance.
struct Failures(i64);

impl Instance for Failures {
    fn new(_config: &Config) -> Result<Self, PluginError> {
        Ok(Failures(0))
    }
}

/// Panics. The host must report it and keep serving.
#[function]
fn panic() -> i64 {
    panic!("faulty plugin panicked on purpose")
}

/// Fails with a retriable error for the first `fail_times` calls on an
/// instance, then succeeds.
#[function]
fn flaky(failures: &mut Failures, fail_times: i64) -> Result<String, PluginError> {
    if failures.0 < fail_times {
        failures.0 += 1;
        return Err(PluginError::retriable(
            "flaky",
            format!("failure {} of {fail_times}", failures.0),
        ));
    }
    Ok(format!("succeeded after {} failures", failures.0))
}

export_plugin! {
    name: "faulty",
    instance: Failures,
}
