//! Math: typed parameters and a domain error.

use spear_plugin_sdk::prelude::*;

/// Adds two integers.
#[function]
fn add(a: i64, b: i64) -> Result<i64, PluginError> {
    a.checked_add(b)
        .ok_or_else(|| PluginError::new("overflow", format!("{a} + {b} overflows i64")))
}

/// Divides `a` by `b`; fails with `division_by_zero` when `b` is 0.
#[function]
fn divide(a: f64, b: f64) -> Result<f64, PluginError> {
    if b == 0.0 {
        return Err(PluginError::new(
            "division_by_zero",
            format!("cannot divide {a} by zero"),
        ));
    }
    Ok(a / b)
}

export_plugin! {
    name: "math",
}
