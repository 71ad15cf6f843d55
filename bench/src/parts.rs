//! The benchmark's parts, each measuring its goals into a [`Report`].

use std::path::Path;

use tokio::runtime::Runtime;

#[cfg(feature = "peers")]
use crate::p6_peers;
use crate::report::{at_least, at_most, Report, Row};
use crate::stats::summary;
use crate::{p1_grpc, p2_inproc, p2_units, p3_load, p4_sha, p5_rss, p7_isolated};

/// P1: gRPC through `spearlet serve` against a bare tonic server.
pub fn p1(runtime: &Runtime, quick: bool, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P1 gRPC, spearlet serve vs a bare tonic server, each in its own process …");
    let p1 = runtime.block_on(p1_grpc::run(quick, &data.join("p1")))?;
    report.rows.push(Row::new(
        ("P1", "p1_p50_ratio"),
        "gRPC echo p50 / bare tonic",
        summary(&p1.p50_ratios),
        "x",
        "<= 1.05",
        at_most(1.05),
    ));
    report.rows.push(Row::new(
        ("P1", "p1_p99_ratio"),
        "gRPC echo p99 / bare tonic",
        summary(&p1.p99_ratios),
        "x",
        "<= 1.10",
        at_most(1.10),
    ));
    report.rows.push(Row::new(
        ("P1", "p1_rps_1"),
        "throughput, 1 in flight / bare",
        summary(&p1.rps_1_ratios),
        "x",
        ">= 0.95",
        at_least(0.95),
    ));
    report.rows.push(Row::new(
        ("P1", "p1_throughput_ratio"),
        "throughput, 32 in flight / bare",
        summary(&p1.throughput_ratios),
        "x",
        ">= 0.95",
        at_least(0.95),
    ));
    if !p1.spearlet_cpu_us.is_empty() && p1.spearlet_cpu_us.len() == p1.bare_cpu_us.len() {
        let ratios: Vec<f64> = p1
            .spearlet_cpu_us
            .iter()
            .zip(&p1.bare_cpu_us)
            .map(|(a, b)| a / b)
            .collect();
        report.rows.push(Row::new(
            ("P1", "p1_server_cpu_ratio"),
            "server CPU per request / bare",
            summary(&ratios),
            "x",
            "(info)",
            |_| true,
        ));
        report.notes.push(format!(
            "P1 server CPU per request at 32 in flight, µs: spearlet {:.1}, bare {:.1}",
            summary(&p1.spearlet_cpu_us).median,
            summary(&p1.bare_cpu_us).median
        ));
    }
    let flaps = (p1.tier.0 + p1.tier.1) as f64;
    report.rows.push(Row::new(
        ("P1", "p1_inline_flaps"),
        "server's tier: promotions + demotions",
        summary(&[flaps]),
        "",
        "<= 2",
        at_most(2.0),
    ));
    report.notes.push(format!(
        "P1 latency µs (1 in flight): spearlet p50 {:.1} p99 {:.1}; bare p50 {:.1} p99 {:.1}",
        p1.spearlet_p50_us, p1.spearlet_p99_us, p1.bare_p50_us, p1.bare_p99_us
    ));
    report.notes.push(format!(
        "P1 req/s: 1 in flight spearlet {:.0}, bare {:.0}; 32 in flight spearlet {:.0}, bare {:.0}",
        p1.spearlet_rps_1, p1.bare_rps_1, p1.spearlet_rps, p1.bare_rps
    ));
    report.notes.push(format!(
        "P1 server's inline tier: {} promotion(s), {} demotion(s), {} calls inline",
        p1.tier.0, p1.tier.1, p1.tier.2
    ));
    Ok(())
}

/// P2: in-process calls: `Host::invoke`, the table call, the handler.
pub fn p2(runtime: &Runtime, quick: bool, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P2 in-process calls …");
    let p2 = runtime.block_on(p2_inproc::run(quick, &data.join("p2")))?;
    report.rows.push(Row::new(
        ("P2", "p2_call_overhead_ns"),
        "table call over local fn pointer",
        summary(&p2.overheads_ns),
        "ns",
        "<= +2",
        at_most(2.0),
    ));
    report.rows.push(Row::new(
        ("P2", "p2_invoke_p50_ns"),
        "Host::invoke p50 (inline tier)",
        summary(&p2.invoke_p50s_ns),
        "ns",
        "<= 300",
        at_most(300.0),
    ));
    report.rows.push(Row::new(
        ("P2", "p2_invoke_metrics_overhead_ns"),
        "metrics recorded per execution (always on)",
        summary(&p2.metrics_overheads_ns),
        "ns",
        "<= 50",
        at_most(50.0),
    ));
    report.rows.push(Row::new(
        ("P2", "p2_memory_read_ns"),
        "memory per call: reading the plugin's counters",
        summary(&p2.memory_reads_ns),
        "ns",
        "<= 50",
        at_most(50.0),
    ));
    report.rows.push(Row::new(
        ("P2", "p2_allocs_per_invoke"),
        "host allocations per 64-byte echo",
        summary(&[p2.allocs_per_invoke]),
        "",
        "<= 1",
        at_most(1.0),
    ));
    report.notes.push(format!(
        "P2 gRPC handler in process (no transport), 64-byte echo: p50 {:.0} ns, {:.1} allocations per call",
        p2.handler_p50_ns, p2.handler_allocs
    ));
    report
        .extra
        .insert("p2_handler_p50_ns", serde_json::json!(p2.handler_p50_ns));
    report
        .extra
        .insert("p2_handler_allocs", serde_json::json!(p2.handler_allocs));
    report.notes.push(format!(
        "P2 ns per call: plugin table {:.2}, local fn pointer {:.2}; rendering /metrics for one task: {:.1} µs",
        p2.table_call_ns, p2.local_call_ns, p2.scrape_us
    ));
    unit_costs(&p2.units, report);
    Ok(())
}

/// P2's unit costs: a note, and one extra key each.
fn unit_costs(u: &p2_units::Units, report: &mut Report) {
    report.notes.push(format!(
        "P2 unit costs, ns: clock read {:.1}, atomic read-modify-write {:.1}, owned counter add {:.1}, \
         mutex lock+unlock {:.1}, Arc clone+drop {:.1}, 384-byte move {:.1} (BENCHMARKS.md prices the call with these)",
        u.clock_ns, u.atomic_rmw_ns, u.owned_add_ns, u.mutex_pair_ns, u.arc_pair_ns, u.move_384_ns
    ));
    for (key, value) in [
        ("p2_unit_clock_ns", u.clock_ns),
        ("p2_unit_atomic_rmw_ns", u.atomic_rmw_ns),
        ("p2_unit_owned_add_ns", u.owned_add_ns),
        ("p2_unit_mutex_pair_ns", u.mutex_pair_ns),
        ("p2_unit_arc_pair_ns", u.arc_pair_ns),
        ("p2_unit_move_384_ns", u.move_384_ns),
    ] {
        report.extra.insert(key, serde_json::json!(value));
    }
}

/// P3: task creation and loading.
pub fn p3(runtime: &Runtime, quick: bool, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P3 task creation and loading …");
    let p3 = runtime.block_on(p3_load::run(quick, &data.join("p3")))?;
    report.rows.push(Row::new(
        ("P3", "p3_cold_ms"),
        "NEW_TASK, cold file",
        summary(&p3.cold_ms),
        "ms",
        "<= 2",
        at_most(2.0),
    ));
    report.rows.push(Row::new(
        ("P3", "p3_warm_us"),
        "NEW_TASK, warm file",
        summary(&p3.warm_us),
        "us",
        "<= 150",
        at_most(150.0),
    ));
    report.rows.push(Row::new(
        ("P3", "p3_warm_floor_ratio"),
        "NEW_TASK warm / (sha256 + bare load)",
        summary(&p3.warm_floor_ratios),
        "x",
        "<= 1.2",
        at_most(1.2),
    ));
    report.rows.push(Row::new(
        ("P3", "p3_same_digest_us"),
        "NEW_TASK, digest loaded and served",
        summary(&p3.same_digest_us),
        "us",
        "<= 5",
        at_most(5.0),
    ));
    report.rows.push(Row::new(
        ("P3", "p3_same_digest_cold_tier_us"),
        "NEW_TASK, digest loaded, tier cold",
        summary(&p3.same_digest_cold_tier_us),
        "us",
        "(info)",
        |_| true,
    ));
    report.rows.push(Row::new(
        ("P3", "p3_load_ratio"),
        "verified load / bare dlopen",
        summary(&p3.load_ratios),
        "x",
        "<= 1.5",
        at_most(1.5),
    ));
    report.notes.push(format!(
        "P3 µs: verified load {:.0}, bare dlopen+dlsym {:.0}",
        p3.load_us, p3.bare_load_us
    ));
    Ok(())
}

/// P4: sha256 against openssl.
pub fn p4(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P4 sha256 vs openssl …");
    let p4 = p4_sha::run(quick)?;
    report.rows.push(Row::new(
        ("P4", "p4_sha256_ratio"),
        "sha256 / openssl -evp",
        summary(&p4.ratios),
        "x",
        ">= 0.95",
        at_least(0.95),
    ));
    report.notes.push(match p4.openssl_gib_s {
        Some(o) => format!(
            "P4 GiB/s: sha2 in memory {:.3}, read from file {:.3}, openssl {:.3}",
            p4.memory_gib_s, p4.file_gib_s, o
        ),
        None => format!(
            "P4 GiB/s: sha2 in memory {:.3}, read from file {:.3}, openssl not installed",
            p4.memory_gib_s, p4.file_gib_s
        ),
    });
    Ok(())
}

/// P5: memory, in a child process.
pub fn p5(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P5 memory (child process) …");
    let p5 = p5_rss::run(quick)?;
    let one = |v: f64| summary(&[v]);
    report.rows.push(Row::new(
        ("P5", "p5_idle_rss_mib"),
        "RSS idle",
        one(p5.idle_rss_mib),
        "MiB",
        "<= 15",
        at_most(15.0),
    ));
    report.rows.push(Row::new(
        ("P5", "p5_10k_tasks_rss_mib"),
        "RSS added by the tasks",
        one(p5.tasks_rss_delta_mib),
        "MiB",
        "<= +50",
        at_most(50.0),
    ));
    report.rows.push(Row::new(
        ("P5", "p5_rss_growth_mib"),
        "RSS growth over the calls",
        one(p5.rss_after_calls_mib - p5.rss_after_warmup_mib),
        "MiB",
        "flat (<= 2)",
        at_most(2.0),
    ));
    report.notes.push(format!(
        "P5 MiB: idle {:.1}; +{:.1} for {} tasks; {:.1} -> {:.1} over {} calls ({:.0} calls/s)",
        p5.idle_rss_mib,
        p5.tasks_rss_delta_mib,
        p5.tasks,
        p5.rss_after_warmup_mib,
        p5.rss_after_calls_mib,
        p5.calls,
        p5.calls_per_sec
    ));
    report.extra.insert("p5_tasks", serde_json::json!(p5.tasks));
    report.extra.insert("p5_calls", serde_json::json!(p5.calls));
    Ok(())
}

/// P7: the process tier.
pub fn p7(runtime: &Runtime, quick: bool, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P7 the process tier: isolated echo, Unix-socket baseline, restarts, throughput …");
    let p7 = runtime.block_on(p7_isolated::run(quick, &data.join("p7")))?;
    let one = |v: f64| summary(&[v]);
    report.rows.push(Row::new(
        ("P7", "p7_isolated_p50_us"),
        "isolated 64-byte echo, Host::invoke p50",
        one(p7.isolated_p50_us),
        "us",
        "(info)",
        |_| true,
    ));
    report.rows.push(Row::new(
        ("P7", "p7_isolated_p99_us"),
        "isolated 64-byte echo, Host::invoke p99",
        one(p7.isolated_p99_us),
        "us",
        "(info)",
        |_| true,
    ));
    report.rows.push(Row::new(
        ("P7", "p7_channel_p50_us"),
        "the channel alone: echo on a worker instance, p50",
        one(p7.channel_p50_us),
        "us",
        "(info)",
        |_| true,
    ));
    report.rows.push(Row::new(
        ("P7", "p7_socket_p50_us"),
        "Unix socket 64-byte round trip p50",
        one(p7.socket_p50_us),
        "us",
        "(info)",
        |_| true,
    ));
    report.rows.push(Row::new(
        ("P7", "p7_socket_ratio"),
        "socket p50 / isolated p50",
        one(p7.socket_p50_us / p7.isolated_p50_us),
        "x",
        ">= 3",
        at_least(3.0),
    ));
    report.rows.push(Row::new(
        ("P7", "p7_restart_ms"),
        "worker crash to next successful call",
        summary(&p7.restarts_ms),
        "ms",
        "<= 50",
        at_most(50.0),
    ));
    report.rows.push(Row::new(
        ("P7", "p7_throughput_ratio"),
        "isolated / in-process, 32 in flight",
        one(p7.isolated_rps / p7.in_process_rps),
        "x",
        "(info)",
        |_| true,
    ));
    report.notes.push(format!(
        "P7 req/s at 32 in flight: isolated {:.0}, in process {:.0}; host waits on workers: {} ended spinning, {} slept",
        p7.isolated_rps, p7.in_process_rps, p7.wake.0, p7.wake.1
    ));
    Ok(())
}

/// P6: the peers, Extism and wasmtime.
#[cfg(feature = "peers")]
pub fn p6(runtime: &Runtime, quick: bool, data: &Path, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("P6 peers: Extism and wasmtime …");
    let p6 = runtime.block_on(p6_peers::run(quick, &data.join("p6")))?;
    report.rows.push(Row::new(
        ("P6", "p6_extism_ratio"),
        "Extism call / Host::invoke (echo 64 B)",
        summary(&p6.extism_ratios),
        "x",
        ">= 10",
        at_least(10.0),
    ));
    report.notes.push(format!(
        "P6 ns per 64-byte echo: spearlet Host::invoke {:.0}, Extism Plugin::call {:.0}; wasmtime typed nop {:.1}",
        p6.spearlet_ns, p6.extism_ns, p6.wasmtime_nop_ns
    ));
    Ok(())
}
