//! `spearlet-bench`: every performance goal of spearlet, measured as a ratio
//! against a baseline in the same run, alternating the compared pairs so
//! drift of the machine affects both sides alike.
//!
//! `cargo run --release -p spearlet-bench -- [--quick]` prints a table and
//! writes the same figures to `target/bench/summary.json`.

mod p1_grpc;
mod p2_inproc;
mod p3_load;
mod p4_sha;
mod p5_rss;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

/// The bare tonic echo service P1 compares against.
mod echo {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("bench");
}

/// Measures every spearlet performance goal (P1–P5) as a ratio in one run.
#[derive(Debug, Parser)]
struct Args {
    /// Fewer rounds: done in under two minutes on two cores.
    #[arg(long)]
    quick: bool,

    /// Internal: run the P5 memory measurement in this (fresh) process.
    #[arg(long, hide = true)]
    p5_child: bool,

    /// Where to write the JSON summary (default: target/bench/summary.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Row {
    id: &'static str,
    what: &'static str,
    value: stats::Summary,
    unit: &'static str,
    goal: &'static str,
    met: bool,
}

impl Row {
    fn new(
        id: &'static str,
        what: &'static str,
        value: stats::Summary,
        unit: &'static str,
        goal: &'static str,
        met: impl Fn(&stats::Summary) -> bool,
    ) -> Row {
        Row {
            id,
            what,
            met: met(&value),
            value,
            unit,
            goal,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.p5_child {
        return runtime.block_on(p5_rss::child(args.quick));
    }
    let data = tempfile::tempdir()?;
    eprintln!("P1 gRPC vs bare tonic …");
    let p1 = runtime.block_on(p1_grpc::run(args.quick, &data.path().join("p1")))?;
    eprintln!("P2 in-process calls …");
    let p2 = runtime.block_on(p2_inproc::run(args.quick, &data.path().join("p2")))?;
    eprintln!("P3 task creation and loading …");
    let p3 = runtime.block_on(p3_load::run(args.quick, &data.path().join("p3")))?;
    eprintln!("P4 sha256 vs openssl …");
    let p4 = p4_sha::run(args.quick)?;
    eprintln!("P5 memory (child process) …");
    let p5 = p5_rss::run(args.quick)?;

    use stats::summary;
    let p5_growth = p5.rss_after_calls_mib - p5.rss_after_warmup_mib;
    let one = |v: f64| summary(&[v]);
    let at_most = |s: &stats::Summary, goal: f64| s.median <= goal;
    let rows = [
        Row::new(
            "P1",
            "gRPC echo p50 / bare tonic",
            summary(&p1.p50_ratios),
            "x",
            "<= 1.05",
            |s| at_most(s, 1.05),
        ),
        Row::new(
            "P1",
            "gRPC echo p99 / bare tonic",
            summary(&p1.p99_ratios),
            "x",
            "<= 1.10",
            |s| at_most(s, 1.10),
        ),
        Row::new(
            "P1",
            "throughput, 32 in flight / bare",
            summary(&p1.throughput_ratios),
            "x",
            ">= 0.95",
            |s| s.median >= 0.95,
        ),
        Row::new(
            "P2",
            "table call over local fn pointer",
            summary(&p2.overheads_ns),
            "ns",
            "<= +1",
            |s| at_most(s, 1.0),
        ),
        Row::new(
            "P2",
            "Host::invoke p50",
            summary(&p2.invoke_p50s_ns),
            "ns",
            "<= 300",
            |s| at_most(s, 300.0),
        ),
        Row::new(
            "P3",
            "NEW_TASK, cold file",
            summary(&p3.cold_ms),
            "ms",
            "<= 2",
            |s| at_most(s, 2.0),
        ),
        Row::new(
            "P3",
            "NEW_TASK, warm file",
            summary(&p3.warm_us),
            "us",
            "<= 150",
            |s| at_most(s, 150.0),
        ),
        Row::new(
            "P3",
            "NEW_TASK, digest loaded",
            summary(&p3.same_digest_us),
            "us",
            "<= 5",
            |s| at_most(s, 5.0),
        ),
        Row::new(
            "P3",
            "verified load / bare dlopen",
            summary(&p3.load_ratios),
            "x",
            "<= 1.5",
            |s| at_most(s, 1.5),
        ),
        Row::new(
            "P4",
            "sha256 / openssl -evp",
            summary(&p4.ratios),
            "x",
            ">= 0.95",
            |s| s.median >= 0.95,
        ),
        Row::new(
            "P5",
            "RSS idle",
            one(p5.idle_rss_mib),
            "MiB",
            "<= 15",
            |s| at_most(s, 15.0),
        ),
        Row::new(
            "P5",
            "RSS added by the tasks",
            one(p5.tasks_rss_delta_mib),
            "MiB",
            "<= +50",
            |s| at_most(s, 50.0),
        ),
        Row::new(
            "P5",
            "RSS growth over the calls",
            one(p5_growth),
            "MiB",
            "flat (<= 2)",
            |s| at_most(s, 2.0),
        ),
    ];

    println!(
        "spearlet-bench{} — {} tasks and {} calls for P5",
        if args.quick { " --quick" } else { "" },
        p5.tasks,
        p5.calls
    );
    println!(
        "{:<3} {:<34} {:>10} {:>10} {:>10} {:<4} {:<12} met?",
        "id", "measure", "median", "min", "max", "", "goal"
    );
    for r in &rows {
        println!(
            "{:<3} {:<34} {:>10.3} {:>10.3} {:>10.3} {:<4} {:<12} {}",
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
    println!(
        "P1 latency µs: spearlet p50 {:.1} p99 {:.1}; bare p50 {:.1} p99 {:.1}",
        p1.spearlet_p50_us, p1.spearlet_p99_us, p1.bare_p50_us, p1.bare_p99_us
    );
    println!(
        "P1 throughput req/s: spearlet {:.0}, bare {:.0}",
        p1.spearlet_rps, p1.bare_rps
    );
    println!(
        "P2 ns per call: plugin table {:.2}, local fn pointer {:.2}",
        p2.table_call_ns, p2.local_call_ns
    );
    println!(
        "P3 µs: verified load {:.0}, bare dlopen+dlsym {:.0}",
        p3.load_us, p3.bare_load_us
    );
    match p4.openssl_gib_s {
        Some(o) => println!(
            "P4 GiB/s: sha2 in memory {:.3}, read from file {:.3}, openssl {:.3}",
            p4.memory_gib_s, p4.file_gib_s, o
        ),
        None => println!(
            "P4 GiB/s: sha2 in memory {:.3}, read from file {:.3}, openssl not installed",
            p4.memory_gib_s, p4.file_gib_s
        ),
    }
    println!(
        "P5 MiB: idle {:.1}; +{:.1} for {} tasks; {:.1} -> {:.1} over {} calls ({:.0} calls/s)",
        p5.idle_rss_mib,
        p5.tasks_rss_delta_mib,
        p5.tasks,
        p5.rss_after_warmup_mib,
        p5.rss_after_calls_mib,
        p5.calls,
        p5.calls_per_sec
    );

    let keys = [
        "p1_p50_ratio",
        "p1_p99_ratio",
        "p1_throughput_ratio",
        "p2_call_overhead_ns",
        "p2_invoke_p50_ns",
        "p3_cold_ms",
        "p3_warm_us",
        "p3_same_digest_us",
        "p3_load_ratio",
        "p4_sha256_ratio",
        "p5_idle_rss_mib",
        "p5_10k_tasks_rss_mib",
        "p5_rss_growth_mib",
    ];
    let summary: BTreeMap<&str, serde_json::Value> = keys
        .iter()
        .zip(&rows)
        .map(|(k, r)| (*k, serde_json::json!(r.value.median)))
        .chain([
            ("quick", serde_json::json!(args.quick)),
            ("p5_tasks", serde_json::json!(p5.tasks)),
            ("p5_calls", serde_json::json!(p5.calls)),
        ])
        .collect();
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

/// A host configuration for benchmarking: state in `data_dir`, local
/// artifacts from `root`, everything else at its defaults.
pub(crate) fn host_config(data_dir: &std::path::Path, root: &std::path::Path) -> spearlet::Config {
    spearlet::Config {
        data_dir: data_dir.to_owned(),
        artifacts: spearlet::config::ArtifactConfig {
            roots: vec![root.to_owned()],
            ..spearlet::config::ArtifactConfig::default()
        },
        ..spearlet::Config::default()
    }
}

/// The target directory this binary was built in (`target/release/..`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(2)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("cannot place target/ from {}", exe.display()))
}
