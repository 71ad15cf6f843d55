//! P2: in process. The cost of a call through a loaded plugin's function
//! table over a local function pointer, and a full `Host` invoke of a
//! promoted function (task lookup, execution record, instance lease, the
//! call in place, the outcome).

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use spearlet::loader::{CallRequest, Plugin, PluginInstance};
use spearlet::Value;
use spearlet_test_artifacts::Artifact;

use crate::stats::{micros, summary};

pub struct P2 {
    pub table_call_ns: f64,
    pub local_call_ns: f64,
    /// Per round: table call minus local call, ns.
    pub overheads_ns: Vec<f64>,
    /// Per block of calls: Host::invoke p50, ns.
    pub invoke_p50s_ns: Vec<f64>,
    /// Per round: what recording one execution for the metrics costs
    /// (it is always on: the counters the task keeps), ns.
    pub metrics_overheads_ns: Vec<f64>,
    /// Rendering `/metrics` for the P2 host, µs.
    pub scrape_us: f64,
    /// Per round: reading a call's memory from the plugin's counting
    /// allocator after the call (done on every call), ns.
    pub memory_reads_ns: Vec<f64>,
    /// Host-side allocations per promoted 64-byte echo through
    /// `Host::invoke`, outcome dropped included (the plugin's own
    /// allocator is not the bench's and is not counted).
    pub allocs_per_invoke: f64,
    /// The gRPC handler of a 64-byte echo, called in process (no transport,
    /// no protobuf decoding or encoding): p50 ns, and allocations per call.
    pub handler_p50_ns: f64,
    pub handler_allocs: f64,
    /// What the operations a call is made of cost here, alone.
    pub units: crate::p2_units::Units,
}

fn local_nop() -> Value {
    Value::Unit
}

pub async fn run(quick: bool, data_dir: &std::path::Path) -> anyhow::Result<P2> {
    let plugin = Plugin::load_verified(Artifact::Echo.path(), None)?;
    let n = if quick { 200_000 } else { 2_000_000 };
    let rounds = if quick { 5 } else { 15 };
    let (table, direct) = table_calls(&plugin, n, rounds)?;
    let overheads_ns = table.iter().zip(&direct).map(|(t, d)| t - d).collect();
    let memory_reads_ns = memory_reads(&plugin, n, rounds);
    let metrics_overheads_ns = metrics_overheads(n, rounds);
    let (host, task_id) = crate::echo_task(data_dir, "p2").await?;
    let invoke_p50s_ns = invoke_p50s(&host, &task_id, quick).await?;
    let allocs_per_invoke = echo_allocations(&host, &task_id).await?;
    let (handler_p50_ns, handler_allocs) = handler(&host, &task_id, quick).await?;
    let units = crate::p2_units::measure(quick);
    let start = Instant::now();
    let scrapes = 100;
    for _ in 0..scrapes {
        black_box(spearlet::metrics::render(&host)?);
    }
    let scrape_us = micros(start.elapsed()) / f64::from(scrapes);
    Ok(P2 {
        memory_reads_ns,
        metrics_overheads_ns,
        scrape_us,
        table_call_ns: summary(&table).median,
        local_call_ns: summary(&direct).median,
        overheads_ns,
        invoke_p50s_ns,
        allocs_per_invoke,
        handler_p50_ns,
        handler_allocs,
        units,
    })
}

/// Per round, ns per call: `nop` through the plugin's table, and a local
/// function pointer doing the same.
fn table_calls(
    plugin: &std::sync::Arc<Plugin>,
    n: u32,
    rounds: u32,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let nop = plugin.function("nop")?;
    let mut instance = PluginInstance::new(plugin, &[])?;
    let cancelled = AtomicBool::new(false);
    let request = CallRequest::new("bench", &cancelled);
    let local: fn() -> Value = local_nop;
    let (mut table, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..n {
            black_box(instance.call(nop, black_box(&request))?);
        }
        table.push(start.elapsed().as_nanos() as f64 / f64::from(n));
        let start = Instant::now();
        for _ in 0..n {
            black_box(black_box(local)());
        }
        direct.push(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    Ok((table, direct))
}

/// Per round, ns to read a call's memory from the plugin's counters.
fn memory_reads(plugin: &Plugin, n: u32, rounds: u32) -> Vec<f64> {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(black_box(plugin).call_memory());
            }
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect()
}

/// Per round, ns of the per-execution metrics work, exactly as the host
/// does it when an execution ends, over the loop alone.
fn metrics_overheads(n: u32, rounds: u32) -> Vec<f64> {
    let metrics = spearlet::counters::FunctionMetrics::default();
    (0..rounds)
        .map(|round| {
            let took = std::time::Duration::from_nanos(700 + u64::from(round));
            let start = Instant::now();
            for _ in 0..n {
                metrics.record(
                    black_box(spearlet::exec::ExecutionMode::Sync),
                    black_box(spearlet::exec::ExecutionStatus::Completed),
                    black_box(took),
                );
            }
            let recorded = start.elapsed().as_nanos() as f64 / f64::from(n);
            let start = Instant::now();
            for _ in 0..n {
                black_box((
                    black_box(spearlet::exec::ExecutionMode::Sync),
                    black_box(spearlet::exec::ExecutionStatus::Completed),
                    black_box(took),
                ));
            }
            recorded - start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect()
}

/// Per block of calls, the p50 of `Host::invoke` of `nop`, ns. The first
/// calls also promote `nop` to the inline tier, as they would in a
/// serving host, and are not counted.
async fn invoke_p50s(
    host: &spearlet::Host,
    task_id: &str,
    quick: bool,
) -> anyhow::Result<Vec<f64>> {
    let call = crate::call_existing(task_id, "nop");
    let mut latencies = Vec::new();
    for i in 0..if quick { 20_000 } else { 200_000 } {
        let request = call.clone();
        let start = Instant::now();
        let out = host.invoke(request).await?;
        let elapsed = start.elapsed();
        if i >= 1_000 {
            latencies.push(micros(elapsed) * 1000.0);
        }
        black_box(out);
    }
    Ok(latencies
        .chunks(latencies.len().div_ceil(10).max(1))
        .map(|block| crate::stats::percentile(block, 50.0))
        .collect())
}

/// The `InvokeFunction` handler of a 64-byte echo on the existing task,
/// called directly: what spearlet adds to a gRPC call between the decoded
/// request and the reply to encode (conversion, trace context, the
/// invocation, building the reply).
async fn handler(host: &spearlet::Host, task_id: &str, quick: bool) -> anyhow::Result<(f64, f64)> {
    use spearlet_proto::spearlet::function_service_server::FunctionService;
    let api = spearlet::api::FunctionApi::new(host.clone());
    let request = echo_message(task_id);
    for _ in 0..1_000 {
        black_box(
            api.invoke_function(tonic::Request::new(request.clone()))
                .await?,
        );
    }
    let calls = if quick { 20_000 } else { 100_000 };
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let call = tonic::Request::new(request.clone());
        let start = Instant::now();
        let reply = api.invoke_function(call).await?;
        latencies.push(start.elapsed().as_nanos() as f64);
        black_box(reply);
    }
    let requests: Vec<_> = (0..10_000)
        .map(|_| tonic::Request::new(request.clone()))
        .collect();
    let before = crate::alloc_count::allocations();
    crate::alloc_count::counting(true);
    for call in requests {
        black_box(api.invoke_function(call).await?);
    }
    crate::alloc_count::counting(false);
    let allocs = (crate::alloc_count::allocations() - before) as f64 / 10_000.0;
    Ok((crate::stats::percentile(&latencies, 50.0), allocs))
}

/// The `InvokeFunction` message of a 64-byte echo on the existing task,
/// as P1's client sends it.
fn echo_message(task_id: &str) -> spearlet_proto::spearlet::InvokeFunctionRequest {
    use prost::Message;
    use spearlet_proto::spearlet as pb;
    pb::InvokeFunctionRequest {
        invocation_type: pb::InvocationType::ExistingTask.into(),
        task_id: task_id.to_owned(),
        function_name: "echo".into(),
        parameters: vec![pb::FunctionParameter {
            name: "input".into(),
            value: Some(prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.BytesValue".into(),
                value: vec![0xA5u8; 64].encode_to_vec(),
            }),
            ..Default::default()
        }],
        execution_mode: pb::ExecutionMode::Sync.into(),
        ..Default::default()
    }
}

/// The handler P2 times, on 64-byte echoes for `seconds`, for a profiler
/// to look at (`--profile-handler`).
pub async fn profile_handler(seconds: u64, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use spearlet_proto::spearlet::function_service_server::FunctionService;
    let (host, task_id) = crate::echo_task(data_dir, "profile").await?;
    let api = spearlet::api::FunctionApi::new(host.clone());
    let request = echo_message(&task_id);
    for_seconds(seconds, || async {
        black_box(
            api.invoke_function(tonic::Request::new(request.clone()))
                .await?,
        );
        Ok(())
    })
    .await
}

/// A 64-byte echo on the existing task, the request P6 and P1 send.
fn echo_call(task_id: &str) -> spearlet::invoke::InvokeRequest {
    crate::call_existing(task_id, "echo").param("input", Value::Bytes(vec![0xA5; 64]))
}

/// Host-side allocations per promoted 64-byte echo: the requests are
/// built before counting starts, each outcome is dropped while it counts.
async fn echo_allocations(host: &spearlet::Host, task_id: &str) -> anyhow::Result<f64> {
    let call = echo_call(task_id);
    for _ in 0..1_000 {
        black_box(host.invoke(call.clone()).await?);
    }
    let calls = 10_000;
    let requests: Vec<_> = (0..calls).map(|_| call.clone()).collect();
    let before = crate::alloc_count::allocations();
    crate::alloc_count::counting(true);
    for request in requests {
        black_box(host.invoke(request).await?);
    }
    crate::alloc_count::counting(false);
    Ok((crate::alloc_count::allocations() - before) as f64 / f64::from(calls))
}

/// Promoted 64-byte echoes through `Host::invoke` for `seconds`, for a
/// profiler to look at (`--profile-invoke`): the loop P2 and P6 time.
pub async fn profile(seconds: u64, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let (host, task_id) = crate::echo_task(data_dir, "profile").await?;
    let call = echo_call(&task_id);
    for_seconds(seconds, || async {
        black_box(host.invoke(call.clone()).await?);
        Ok(())
    })
    .await
}

/// Runs `call` over and over for `seconds`, for a profiler, and says how
/// long each took (the request's clone included).
async fn for_seconds<F, Fut>(seconds: u64, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let until = Instant::now() + std::time::Duration::from_secs(seconds);
    let mut calls = 0u64;
    while Instant::now() < until {
        for _ in 0..10_000 {
            call().await?;
        }
        calls += 10_000;
    }
    eprintln!(
        "{calls} calls in {seconds} s: {:.0} ns each, request clone included",
        seconds as f64 * 1e9 / calls as f64
    );
    Ok(())
}
