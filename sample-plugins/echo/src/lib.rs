//! Echo: hands its input back. The smallest useful plugin, and the one the
//! latency benchmarks call.

use spear_plugin_sdk::prelude::*;

/// Returns `input` unchanged, whatever its type.
// The plugin's default function: what a call naming no function gets.
#[function(default)]
fn echo(input: Value) -> Value {
    input
}

/// Returns the string `input` in upper case.
#[function]
fn upper(input: &str) -> String {
    input.to_uppercase()
}

/// Does nothing; measures the bare cost of a call.
#[function]
fn nop() {}

export_plugin! {
    name: "echo",
}
