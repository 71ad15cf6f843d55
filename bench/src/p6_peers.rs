//! P6: the same 64-byte echo through spearlet's in-process `Host::invoke`
//! and through Extism's `Plugin::call`, plus a raw wasmtime typed call of a
//! nop for scale. The Extism plugin is the cheapest echo its ABI allows: it
//! hands its input back as its output without copying.

use std::hint::black_box;
use std::time::Instant;

use spearlet::Value;

use crate::stats::{percentile, summary};

pub struct P6 {
    pub spearlet_ns: f64,
    pub extism_ns: f64,
    pub wasmtime_nop_ns: f64,
    /// Per round: Extism p50 / spearlet p50.
    pub extism_ratios: Vec<f64>,
}

const EXTISM_ECHO: &str = r#"
(module
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (func (export "echo") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0)))
"#;

const WASM_NOP: &str = r#"(module (func (export "nop")))"#;

pub async fn run(quick: bool, data_dir: &std::path::Path) -> anyhow::Result<P6> {
    let payload = vec![0xA5u8; 64];

    let (host, task_id) = crate::echo_task(data_dir, "p6").await?;
    let call = crate::call_existing(&task_id, "echo").param("input", Value::Bytes(payload.clone()));

    let manifest = extism::Manifest::new([extism::Wasm::data(EXTISM_ECHO.as_bytes().to_vec())]);
    let mut extism = extism::Plugin::new(manifest, [], false)?;
    let echoed: Vec<u8> = extism.call::<&[u8], &[u8]>("echo", &payload)?.to_vec();
    anyhow::ensure!(echoed == payload, "the Extism echo plugin does not echo");

    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, wat::parse_str(WASM_NOP)?)?;
    let mut store = wasmtime::Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[])?;
    let nop = instance.get_typed_func::<(), ()>(&mut store, "nop")?;

    let (rounds, per_round) = if quick { (5, 20_000) } else { (15, 100_000) };
    // Warm both (and promote `echo` to spearlet's inline tier).
    for _ in 0..1_000 {
        black_box(host.invoke(call.clone()).await?);
        black_box(extism.call::<&[u8], &[u8]>("echo", &payload)?);
    }
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut a = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            let request = call.clone();
            let start = Instant::now();
            black_box(host.invoke(request).await?);
            a.push(start.elapsed().as_nanos() as f64);
        }
        let mut b = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            let start = Instant::now();
            black_box(extism.call::<&[u8], &[u8]>("echo", black_box(&payload))?);
            b.push(start.elapsed().as_nanos() as f64);
        }
        let (pa, pb) = (percentile(&a, 50.0), percentile(&b, 50.0));
        ratios.push(pb / pa);
        ours.push(pa);
        theirs.push(pb);
    }
    let n = per_round * 10;
    let start = Instant::now();
    for _ in 0..n {
        nop.call(&mut store, ())?;
    }
    let wasmtime_nop_ns = start.elapsed().as_nanos() as f64 / n as f64;
    Ok(P6 {
        spearlet_ns: summary(&ours).median,
        extism_ns: summary(&theirs).median,
        wasmtime_nop_ns,
        extism_ratios: ratios,
    })
}
