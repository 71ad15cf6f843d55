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
mod p2_units;
mod p3_load;
mod p4_sha;
mod p5_rss;
#[cfg(feature = "peers")]
mod p6_peers;
mod p7_isolated;
mod parts;
mod report;
mod soak;
mod soak_results;
mod stats;

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

    /// Run NEW_TASK invocations of a digest the host has loaded and served
    /// (P3's "same digest") for this many seconds and nothing else, for a
    /// profiler (each thousand tasks are deleted before the next).
    #[arg(long, value_name = "SECONDS")]
    profile_new_task: Option<u64>,

    /// Run the in-process `InvokeFunction` handler of 64-byte echoes (P2's
    /// "gRPC handler") for this many seconds and nothing else, for a
    /// profiler.
    #[arg(long, value_name = "SECONDS")]
    profile_handler: Option<u64>,

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
    let data = tempfile::tempdir()?;
    if let Some(seconds) = args.profile_invoke {
        return runtime.block_on(p2_inproc::profile(seconds, &data.path().join("profile")));
    }
    if let Some(seconds) = args.profile_handler {
        return runtime.block_on(p2_inproc::profile_handler(
            seconds,
            &data.path().join("profile"),
        ));
    }
    if let Some(seconds) = args.profile_new_task {
        return runtime.block_on(p3_load::profile(seconds, &data.path().join("profile")));
    }
    if let Some(calls) = args.soak {
        return run_soak(&runtime, calls, data.path());
    }
    if let Some(minutes) = args.soak_results {
        return run_soak_results(&runtime, minutes, data.path());
    }
    let mut report = report::Report::default();
    let (quick, data) = (args.quick, data.path());
    if args.wants("P1") {
        parts::p1(&runtime, quick, data, &mut report)?;
    }
    if args.wants("P2") {
        parts::p2(&runtime, quick, data, &mut report)?;
    }
    if args.wants("P3") {
        parts::p3(&runtime, quick, data, &mut report)?;
    }
    if args.wants("P7") {
        parts::p7(&runtime, quick, data, &mut report)?;
    }
    if args.wants("P4") {
        parts::p4(quick, &mut report)?;
    }
    if args.wants("P5") {
        parts::p5(quick, &mut report)?;
    }
    #[cfg(feature = "peers")]
    if args.wants("P6") {
        parts::p6(&runtime, quick, data, &mut report)?;
    }
    #[cfg(not(feature = "peers"))]
    if !args.only.is_empty() && args.wants("P6") {
        eprintln!("P6 needs `--features peers` (it builds Extism and wasmtime)");
    }
    report.print(quick);
    let out = match args.out {
        Some(path) => path,
        None => target_dir()?.join("bench/summary.json"),
    };
    report.write(quick, &out)
}

/// `--soak`: a million checked calls against a real server.
fn run_soak(
    runtime: &tokio::runtime::Runtime,
    calls: u64,
    data: &std::path::Path,
) -> anyhow::Result<()> {
    let s = runtime.block_on(soak::run(calls, &data.join("soak")))?;
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
    Ok(())
}

/// `--soak-results`: large SYNC and ASYNC results for minutes.
fn run_soak_results(
    runtime: &tokio::runtime::Runtime,
    minutes: u64,
    data: &std::path::Path,
) -> anyhow::Result<()> {
    let s = runtime.block_on(soak_results::run(minutes, &data.join("soak")))?;
    let (Some(first), Some(last)) = (s.samples.first(), s.samples.last()) else {
        anyhow::bail!("the soak ended before its first sample");
    };
    let peak = |f: fn(&soak_results::Sample) -> f64| s.samples.iter().map(f).fold(0.0, f64::max);
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
        tiers: spearlet::config::TiersConfig {
            worker_program: std::env::current_exe().ok(),
            ..spearlet::config::TiersConfig::default()
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
