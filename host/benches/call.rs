//! What crossing the plugin ABI costs: a call through a loaded plugin's
//! function table against a local function pointer with the same body.
//!
//! `cargo bench -p spearlet --bench call` (the plugins are built in release
//! mode for benches). The figures go in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use criterion::{criterion_group, criterion_main, Criterion};
use spearlet::loader::{CallRequest, Plugin, PluginInstance};
use spearlet::Value;
use spearlet_test_artifacts::Artifact;

fn local_nop() -> Value {
    Value::Unit
}

fn local_echo(input: &Value) -> Value {
    input.clone()
}

fn calls(c: &mut Criterion) {
    let plugin = Plugin::load_verified(Artifact::Echo.path(), None).expect("echo plugin");
    let nop = plugin.function("nop").unwrap();
    let echo = plugin.function("echo").unwrap();
    let mut instance = PluginInstance::new(&plugin, &[]).unwrap();
    let cancelled = AtomicBool::new(false);
    let payload = vec![("input".to_owned(), Value::Bytes(vec![0xAB; 64]))];

    let mut group = c.benchmark_group("nop");
    let local: fn() -> Value = local_nop;
    group.bench_function("local_fn_pointer", |b| {
        b.iter(|| black_box(black_box(local)()))
    });
    let request = CallRequest::new("bench", &cancelled);
    group.bench_function("plugin_table", |b| {
        b.iter(|| black_box(instance.call(nop, black_box(&request)).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("echo_64B");
    let local: fn(&Value) -> Value = local_echo;
    group.bench_function("local_fn_pointer", |b| {
        b.iter(|| black_box(black_box(local)(black_box(&payload[0].1))))
    });
    let request = CallRequest::new("bench", &cancelled).with_params(&payload);
    group.bench_function("plugin_table", |b| {
        b.iter(|| black_box(instance.call(echo, black_box(&request)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
