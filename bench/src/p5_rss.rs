//! P5: resident memory of a host — idle, with many registered tasks, and
//! across many calls. Measured in a child process so that the other
//! benchmarks' allocations do not count.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use spearlet::artifact::ArtifactSpec;
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::Host;
use spearlet_test_artifacts::Artifact;

#[derive(Debug, Serialize, Deserialize)]
pub struct P5 {
    pub idle_rss_mib: f64,
    pub tasks: usize,
    pub tasks_rss_delta_mib: f64,
    pub calls: usize,
    pub rss_after_warmup_mib: f64,
    pub rss_after_calls_mib: f64,
    pub calls_per_sec: f64,
}

fn rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kib / 1024.0)
}

/// Runs in the child process; prints the figures as JSON on stdout.
pub async fn child(quick: bool) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let host = Host::new(crate::host_config(
        data.path(),
        Artifact::Echo.path().parent().unwrap(),
    ))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let serving = host.clone();
    tokio::spawn(spearlet::api::serve(
        serving,
        listener,
        std::future::pending(),
    ));
    tokio::task::yield_now().await;
    let idle = rss_mib()?;

    let digest = spearlet::digest::Sha256Digest::of(&std::fs::read(Artifact::Echo.path())?);
    let spec =
        ArtifactSpec::at(Artifact::Echo.path().to_string_lossy()).with_checksum(digest.to_hex());
    let tasks = if quick { 2_000 } else { 10_000 };
    let mut first_task = String::new();
    for i in 0..tasks {
        let out = host
            .invoke(InvokeRequest::new(
                Target::NewTask {
                    name: format!("task-{i:05}"),
                    description: String::new(),
                    artifact: spec.clone(),
                },
                "nop",
            ))
            .await?;
        if i == 0 {
            first_task = out.task_id.to_string();
        }
    }
    let with_tasks = rss_mib()?;

    let call = InvokeRequest::new(
        Target::ExistingTask {
            task_id: first_task,
            create_if_not_exists: false,
            artifact: None,
            name: String::new(),
            description: String::new(),
        },
        "nop",
    );
    let calls = if quick { 100_000 } else { 1_000_000 };
    let warmup = calls / 10;
    for _ in 0..warmup {
        host.invoke(call.clone()).await?;
    }
    let after_warmup = rss_mib()?;
    let start = Instant::now();
    for _ in warmup..calls {
        host.invoke(call.clone()).await?;
    }
    let rate = (calls - warmup) as f64 / start.elapsed().as_secs_f64();
    let report = P5 {
        idle_rss_mib: idle,
        tasks,
        tasks_rss_delta_mib: with_tasks - idle,
        calls,
        rss_after_warmup_mib: after_warmup,
        rss_after_calls_mib: rss_mib()?,
        calls_per_sec: rate,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs the child and reads its report.
pub fn run(quick: bool) -> anyhow::Result<P5> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--p5-child");
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "the P5 child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
