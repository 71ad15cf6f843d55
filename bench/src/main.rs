//! `spearlet-bench`: every performance goal of spearlet, measured as a ratio
//! against a baseline in the same run, alternating the compared pairs so
//! drift of the machine affects both sides alike.
//!
//! `cargo run --release -p spearlet-bench -- [--quick] [--only P1,P3]` prints
//! a table and writes the same figures to `target/bench/summary.json`. With
//! `--features peers`, P6 compares the in-process call with Extism's and a
//! raw wasmtime call (not built by default: wasmtime is a large build).

mod alloc_count;
mod p1_grpc;
mod p2_inproc;
mod p3_load;
mod p4_sha;
mod p5_rss;
#[cfg(feature = "peers")]
mod p6_peers;
mod p7_isolated;
mod soak;
mod soak_results;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

/// The bare tonic echo service P1 compares against.
mod echo {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("bench");
}

/// Measures every spearlet performance goal as a ratio in one run.
#[derive(Debug, Parser)]
struct Args {
    /// Fewer rounds: done in a few minutes on two cores.
    #[arg(long)]
    quick: bool,

    /// Only these parts (comma-separated: P1,P2,P3,P4,P5,P6,P7).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,

    /// Run the soak instead: this many SYNC calls (default a million), 64
    /// in flight, against a real server, mixing echoes, panics and
    /// retriable failures; every reply is checked.
    #[arg(long, value_name = "CALLS", num_args = 0..=1, default_missing_value = "1000000")]
    soak: Option<u64>,

    /// Run the large-results soak instead, for this many minutes (default
    /// 10): SYNC and ASYNC echoes of 4 MiB; prints the server's RSS and its
    /// data directory's size every 30 s.
    #[arg(long, value_name = "MINUTES", num_args = 0..=1, default_missing_value = "10")]
    soak_results: Option<u64>,

    /// Run promoted 64-byte echoes through `Host::invoke` for this many
    /// seconds and nothing else, for a profiler (`perf record -g`).
    #[arg(long, value_name = "SECONDS")]
    profile_invoke: Option<u64>,

    /// Internal: run the P5 memory measurement in this (fresh) process.
    #[arg(long, hide = true)]
    p5_child: bool,

    /// Internal: serve the bare echo service P1 compares against.
    #[arg(long, hide = true)]
    bare_echo_server: bool,

    /// Internal: echo 64-byte messages on this Unix socket (P7's baseline).
    #[arg(long, hide = true, value_name = "PATH")]
    socket_echo_child: Option<PathBuf>,

    /// Where to write the JSON summary (default: target/bench/summary.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Args {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p.eq_ignore_ascii_case(part))
    }
}

struct Row {
    id: &'static str,
    key: &'static str,
    what: &'static str,
    value: stats::Summary,
    unit: &'static str,
    goal: &'static str,
    met: bool,
}

impl Row {
    fn new(
        (id, key): (&'static str, &'static str),
        what: &'static str,
        value: stats::Summary,
        unit: &'static str,
        goal: &'static str,
        met: impl Fn(&stats::Summary) -> bool,
    ) -> Row {
        Row {
            id,
            key,
            what,
            met: met(&value),
            value,
            unit,
            goal,
        }
    }
}

fn at_most(goal: f64) -> impl Fn(&stats::Summary) -> bool {
    move |s| s.median <= goal
}

fn at_least(goal: f64) -> impl Fn(&stats::Summary) -> bool {
    move |s| s.median >= goal
}

fn main() -> anyhow::Result<()> {
    // The hosts here start their worker processes from this binary (see
    // `host_config`): it serves as `spearlet worker` does.
    if std::env::args_os().nth(1).is_some_and(|a| a == "worker") {
        return spearlet::isolate::worker::serve().map_err(anyhow::Error::msg);
    }
    let args = Args::parse();
    if let Some(path) = &args.socket_echo_child {
        return p7_isolated::socket_echo_child(path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.p5_child {
        return runtime.block_on(p5_rss::child(args.quick));
    }
    if args.bare_echo_server {
        return runtime.block_on(p1_grpc::serve_bare_echo());
    }
    use stats::summary;
    let data = tempfile::tempdir()?;
    if let Some(seconds) = args.profile_invoke {
        return runtime.block_on(p2_inproc::profile(seconds, &data.path().join("profile")));
    }
    if let Some(calls) = args.soak {
        let s = runtime.block_on(soak::run(calls, &data.path().join("soak")))?;
        println!(
            "soak: {} calls in {:.1} s ({:.0}/s), 64 in flight: {} echoes each checked, {} panics reported, \
             {} retriable failures retried to success; none lost",
            s.calls,
            s.seconds,
            s.calls as f64 / s.seconds,
            s.echoes,
            s.panics,
            s.retried
        );
        println!(
            "soak: server RSS {:.1} MiB before, {:.1} MiB after ({:+.1}); {} threads at the end",
            s.rss_before_mib,
            s.rss_after_mib,
            s.rss_after_mib - s.rss_before_mib,
            s.threads
        );
        return Ok(());
    }
    if let Some(minutes) = args.soak_results {
        let s = runtime.block_on(soak_results::run(minutes, &data.path().join("soak")))?;
        let (Some(first), Some(last)) = (s.samples.first(), s.samples.last()) else {
            anyhow::bail!("the soak ended before its first sample");
        };
        let peak =
            |f: fn(&soak_results::Sample) -> f64| s.samples.iter().map(f).fold(0.0, f64::max);
        println!(
            "soak-results: {} SYNC + {} ASYNC calls of 4 MiB in {:.0} s",
            s.sync_calls, s.async_calls, last.at_s
        );
        println!(
            "soak-results: server RSS {:.1} MiB at {:.0} s, {:.1} MiB at {:.0} s (peak {:.1})",
            first.rss_mib,
            first.at_s,
            last.rss_mib,
            last.at_s,
            peak(|s| s.rss_mib)
        );
        println!(
            "soak-results: data dir {:.1} MiB at {:.0} s, {:.1} MiB at {:.0} s (peak {:.1})",
            first.data_mib,
            first.at_s,
            last.data_mib,
            last.at_s,
            peak(|s| s.data_mib)
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut extra: BTreeMap<&str, serde_json::Value> = BTreeMap::new();

    if args.wants("P1") {
        eprintln!("P1 gRPC, spearlet serve vs a bare tonic server, each in its own process …");
        let p1 = runtime.block_on(p1_grpc::run(args.quick, &data.path().join("p1")))?;
        rows.push(Row::new(
            ("P1", "p1_p50_ratio"),
            "gRPC echo p50 / bare tonic",
            summary(&p1.p50_ratios),
            "x",
            "<= 1.05",
            at_most(1.05),
        ));
        rows.push(Row::new(
            ("P1", "p1_p99_ratio"),
            "gRPC echo p99 / bare tonic",
            summary(&p1.p99_ratios),
            "x",
            "<= 1.10",
            at_most(1.10),
        ));
        rows.push(Row::new(
            ("P1", "p1_rps_1"),
            "throughput, 1 in flight / bare",
            summary(&p1.rps_1_ratios),
            "x",
            ">= 0.95",
            at_least(0.95),
        ));
        rows.push(Row::new(
            ("P1", "p1_throughput_ratio"),
            "throughput, 32 in flight / bare",
            summary(&p1.throughput_ratios),
            "x",
            ">= 0.95",
            at_least(0.95),
        ));
        let flaps = (p1.tier.0 + p1.tier.1) as f64;
        rows.push(Row::new(
            ("P1", "p1_inline_flaps"),
            "server's tier: promotions + demotions",
            summary(&[flaps]),
            "",
            "<= 2",
            at_most(2.0),
        ));
        notes.push(format!(
            "P1 latency µs (1 in flight): spearlet p50 {:.1} p99 {:.1}; bare p50 {:.1} p99 {:.1}",
            p1.spearlet_p50_us, p1.spearlet_p99_us, p1.bare_p50_us, p1.bare_p99_us
        ));
        notes.push(format!(
            "P1 req/s: 1 in flight spearlet {:.0}, bare {:.0}; 32 in flight spearlet {:.0}, bare {:.0}",
            p1.spearlet_rps_1, p1.bare_rps_1, p1.spearlet_rps, p1.bare_rps
        ));
        notes.push(format!(
            "P1 server's inline tier: {} promotion(s), {} demotion(s), {} calls inline",
            p1.tier.0, p1.tier.1, p1.tier.2
        ));
    }
    if args.wants("P2") {
        eprintln!("P2 in-process calls …");
        let p2 = runtime.block_on(p2_inproc::run(args.quick, &data.path().join("p2")))?;
        rows.push(Row::new(
            ("P2", "p2_call_overhead_ns"),
            "table call over local fn pointer",
            summary(&p2.overheads_ns),
            "ns",
            "<= +2",
            at_most(2.0),
        ));
        rows.push(Row::new(
            ("P2", "p2_invoke_p50_ns"),
            "Host::invoke p50 (inline tier)",
            summary(&p2.invoke_p50s_ns),
            "ns",
            "<= 300",
            at_most(300.0),
        ));
        rows.push(Row::new(
            ("P2", "p2_invoke_metrics_overhead_ns"),
            "metrics recorded per execution (always on)",
            summary(&p2.metrics_overheads_ns),
            "ns",
            "<= 50",
            at_most(50.0),
        ));
        rows.push(Row::new(
            ("P2", "p2_memory_read_ns"),
            "memory per call: reading the plugin's counters",
            summary(&p2.memory_reads_ns),
            "ns",
            "<= 50",
            at_most(50.0),
        ));
        rows.push(Row::new(
            ("P2", "p2_allocs_per_invoke"),
            "host allocations per 64-byte echo",
            summary(&[p2.allocs_per_invoke]),
            "",
            "<= 1",
            at_most(1.0),
        ));
        notes.push(format!(
            "P2 gRPC handler in process (no transport), 64-byte echo: p50 {:.0} ns, {:.1} allocations per call",
            p2.handler_p50_ns, p2.handler_allocs
        ));
        extra.insert("p2_handler_p50_ns", serde_json::json!(p2.handler_p50_ns));
        extra.insert("p2_handler_allocs", serde_json::json!(p2.handler_allocs));
        notes.push(format!(
            "P2 ns per call: plugin table {:.2}, local fn pointer {:.2}; rendering /metrics for one task: {:.1} µs",
            p2.table_call_ns, p2.local_call_ns, p2.scrape_us
        ));
    }
    if args.wants("P3") {
        eprintln!("P3 task creation and loading …");
        let p3 = runtime.block_on(p3_load::run(args.quick, &data.path().join("p3")))?;
        rows.push(Row::new(
            ("P3", "p3_cold_ms"),
            "NEW_TASK, cold file",
            summary(&p3.cold_ms),
            "ms",
            "<= 2",
            at_most(2.0),
        ));
        rows.push(Row::new(
            ("P3", "p3_warm_us"),
            "NEW_TASK, warm file",
            summary(&p3.warm_us),
            "us",
            "<= 150",
            at_most(150.0),
        ));
        rows.push(Row::new(
            ("P3", "p3_warm_floor_ratio"),
            "NEW_TASK warm / (sha256 + bare load)",
            summary(&p3.warm_floor_ratios),
            "x",
            "<= 1.2",
            at_most(1.2),
        ));
        rows.push(Row::new(
            ("P3", "p3_same_digest_us"),
            "NEW_TASK, digest loaded and served",
            summary(&p3.same_digest_us),
            "us",
            "<= 5",
            at_most(5.0),
        ));
        rows.push(Row::new(
            ("P3", "p3_same_digest_cold_tier_us"),
            "NEW_TASK, digest loaded, tier cold",
            summary(&p3.same_digest_cold_tier_us),
            "us",
            "(info)",
            |_| true,
        ));
        rows.push(Row::new(
            ("P3", "p3_load_ratio"),
            "verified load / bare dlopen",
            summary(&p3.load_ratios),
            "x",
            "<= 1.5",
            at_most(1.5),
        ));
        notes.push(format!(
            "P3 µs: verified load {:.0}, bare dlopen+dlsym {:.0}",
            p3.load_us, p3.bare_load_us
        ));
    }
    if args.wants("P7") {
        eprintln!(
            "P7 the process tier: isolated echo, Unix-socket baseline, restarts, throughput …"
        );
        let p7 = runtime.block_on(p7_isolated::run(args.quick, &data.path().join("p7")))?;
        let one = |v: f64| summary(&[v]);
        rows.push(Row::new(
            ("P7", "p7_isolated_p50_us"),
            "isolated 64-byte echo, Host::invoke p50",
            one(p7.isolated_p50_us),
            "us",
            "(info)",
            |_| true,
        ));
        rows.push(Row::new(
            ("P7", "p7_isolated_p99_us"),
            "isolated 64-byte echo, Host::invoke p99",
            one(p7.isolated_p99_us),
            "us",
            "(info)",
            |_| true,
        ));
        rows.push(Row::new(
            ("P7", "p7_channel_p50_us"),
            "the channel alone: echo on a worker instance, p50",
            one(p7.channel_p50_us),
            "us",
            "(info)",
            |_| true,
        ));
        rows.push(Row::new(
            ("P7", "p7_socket_p50_us"),
            "Unix socket 64-byte round trip p50",
            one(p7.socket_p50_us),
            "us",
            "(info)",
            |_| true,
        ));
        rows.push(Row::new(
            ("P7", "p7_socket_ratio"),
            "socket p50 / isolated p50",
            one(p7.socket_p50_us / p7.isolated_p50_us),
            "x",
            ">= 3",
            at_least(3.0),
        ));
        rows.push(Row::new(
            ("P7", "p7_restart_ms"),
            "worker crash to next successful call",
            summary(&p7.restarts_ms),
            "ms",
            "<= 50",
            at_most(50.0),
        ));
        rows.push(Row::new(
            ("P7", "p7_throughput_ratio"),
            "isolated / in-process, 32 in flight",
            one(p7.isolated_rps / p7.in_process_rps),
            "x",
            "(info)",
            |_| true,
        ));
        notes.push(format!(
            "P7 req/s at 32 in flight: isolated {:.0}, in process {:.0}; host waits on workers: {} ended spinning, {} slept",
            p7.isolated_rps, p7.in_process_rps, p7.wake.0, p7.wake.1
        ));
    }
    if args.wants("P4") {
        eprintln!("P4 sha256 vs openssl …");
        let p4 = p4_sha::run(args.quick)?;
        rows.push(Row::new(
            ("P4", "p4_sha256_ratio"),
            "sha256 / openssl -evp",
            summary(&p4.ratios),
            "x",
            ">= 0.95",
            at_least(0.95),
        ));
        notes.push(match p4.openssl_gib_s {
            Some(o) => format!(
                "P4 GiB/s: sha2 in memory {:.3}, read from file {:.3}, openssl {:.3}",
                p4.memory_gib_s, p4.file_gib_s, o
            ),
            None => format!(
                "P4 GiB/s: sha2 in memory {:.3}, read from file {:.3}, openssl not installed",
                p4.memory_gib_s, p4.file_gib_s
            ),
        });
    }
    if args.wants("P5") {
        eprintln!("P5 memory (child process) …");
        let p5 = p5_rss::run(args.quick)?;
        let one = |v: f64| summary(&[v]);
        rows.push(Row::new(
            ("P5", "p5_idle_rss_mib"),
            "RSS idle",
            one(p5.idle_rss_mib),
            "MiB",
            "<= 15",
            at_most(15.0),
        ));
        rows.push(Row::new(
            ("P5", "p5_10k_tasks_rss_mib"),
            "RSS added by the tasks",
            one(p5.tasks_rss_delta_mib),
            "MiB",
            "<= +50",
            at_most(50.0),
        ));
        rows.push(Row::new(
            ("P5", "p5_rss_growth_mib"),
            "RSS growth over the calls",
            one(p5.rss_after_calls_mib - p5.rss_after_warmup_mib),
            "MiB",
            "flat (<= 2)",
            at_most(2.0),
        ));
        notes.push(format!(
            "P5 MiB: idle {:.1}; +{:.1} for {} tasks; {:.1} -> {:.1} over {} calls ({:.0} calls/s)",
            p5.idle_rss_mib,
            p5.tasks_rss_delta_mib,
            p5.tasks,
            p5.rss_after_warmup_mib,
            p5.rss_after_calls_mib,
            p5.calls,
            p5.calls_per_sec
        ));
        extra.insert("p5_tasks", serde_json::json!(p5.tasks));
        extra.insert("p5_calls", serde_json::json!(p5.calls));
    }
    #[cfg(feature = "peers")]
    if args.wants("P6") {
        eprintln!("P6 peers: Extism and wasmtime …");
        let p6 = runtime.block_on(p6_peers::run(args.quick, &data.path().join("p6")))?;
        rows.push(Row::new(
            ("P6", "p6_extism_ratio"),
            "Extism call / Host::invoke (echo 64 B)",
            summary(&p6.extism_ratios),
            "x",
            ">= 10",
            at_least(10.0),
        ));
        notes.push(format!(
            "P6 ns per 64-byte echo: spearlet Host::invoke {:.0}, Extism Plugin::call {:.0}; wasmtime typed nop {:.1}",
            p6.spearlet_ns, p6.extism_ns, p6.wasmtime_nop_ns
        ));
    }
    #[cfg(not(feature = "peers"))]
    if !args.only.is_empty() && args.wants("P6") {
        eprintln!("P6 needs `--features peers` (it builds Extism and wasmtime)");
    }

    println!(
        "spearlet-bench{} on {} ({} cores)",
        if args.quick { " --quick" } else { "" },
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<3} {:<38} {:>10} {:>10} {:>10} {:<4} {:<12} met?",
        "id", "measure", "median", "min", "max", "", "goal"
    );
    for r in &rows {
        println!(
            "{:<3} {:<38} {:>10.3} {:>10.3} {:>10.3} {:<4} {:<12} {}",
            r.id,
            r.what,
            r.value.median,
            r.value.min,
            r.value.max,
            r.unit,
            r.goal,
            if r.met { "yes" } else { "NO" }
        );
    }
    println!();
    for note in &notes {
        println!("{note}");
    }

    let mut summary: BTreeMap<&str, serde_json::Value> = rows
        .iter()
        .map(|r| (r.key, serde_json::json!(r.value.median)))
        .collect();
    summary.extend(extra);
    summary.insert("quick", serde_json::json!(args.quick));
    let out = match args.out {
        Some(path) => path,
        None => target_dir()?.join("bench/summary.json"),
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&summary)? + "\n")?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// The CPU model, for the record.
fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned())
}

/// A host configuration for benchmarking: state in `data_dir`, local
/// artifacts from `root`, everything else at its defaults.
pub(crate) fn host_config(data_dir: &std::path::Path, root: &std::path::Path) -> spearlet::Config {
    spearlet::Config {
        data_dir: data_dir.to_owned(),
        artifacts: spearlet::config::ArtifactConfig {
            roots: vec![root.to_owned()],
            ..spearlet::config::ArtifactConfig::default()
        },
        exec: spearlet::config::ExecConfig {
            worker_program: std::env::current_exe().ok(),
            ..spearlet::config::ExecConfig::default()
        },
        ..spearlet::Config::default()
    }
}

/// A host serving the echo sample plugin as task `name`, and the task's id.
pub(crate) async fn echo_task(
    data_dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(spearlet::Host, String)> {
    use spearlet::invoke::{InvokeRequest, Target};
    use spearlet_test_artifacts::Artifact;
    let host = spearlet::Host::new(host_config(
        data_dir,
        Artifact::Echo
            .path()
            .parent()
            .expect("plugins live in a directory"),
    ))?;
    let created = host
        .invoke(InvokeRequest::new(
            Target::NewTask {
                name: name.into(),
                description: String::new(),
                artifact: spearlet::artifact::ArtifactSpec::at(
                    Artifact::Echo.path().to_string_lossy(),
                ),
            },
            "nop",
        ))
        .await?;
    Ok((host, created.task_id.to_string()))
}

/// A SYNC call of `function` on the existing task `task_id`.
pub(crate) fn call_existing(task_id: &str, function: &str) -> spearlet::invoke::InvokeRequest {
    spearlet::invoke::InvokeRequest::new(
        spearlet::invoke::Target::ExistingTask {
            task_id: task_id.to_owned(),
            create_if_not_exists: false,
            artifact: None,
            name: String::new(),
            description: String::new(),
        },
        function,
    )
}

/// The target directory this binary was built in (`target/release/..`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(2)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("cannot place target/ from {}", exe.display()))
}
