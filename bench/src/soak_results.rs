//! `spearlet-bench --soak-results MINUTES`: large results for minutes.
//! Four callers against the real `spearlet serve` each alternate a SYNC
//! and an ASYNC echo of 4 MiB; records may keep results up to 8 MiB each
//! and 64 MiB in all, finished records live 30 s. Every 30 s the server's
//! resident memory and the size of its data directory are sampled: both
//! must level off (records pruned from memory and from the durable store
//! while running, results past the total dropped), not grow with the
//! number of calls.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use spearlet_test_artifacts::Artifact;

use crate::p1_grpc::{spearlet_binary, Server};

const RESULT_BYTES: usize = 4 << 20;
const CALLERS: usize = 4;
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// One sample: seconds since the start, server RSS and data directory size.
pub struct Sample {
    pub at_s: f64,
    pub rss_mib: f64,
    pub data_mib: f64,
    pub calls: u64,
}

pub struct SoakResults {
    pub samples: Vec<Sample>,
    pub sync_calls: u64,
    pub async_calls: u64,
}

fn echo(task: &str, mode: pb::ExecutionMode, payload: &[u8]) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        invocation_type: pb::InvocationType::NewTask.into(),
        task_name: task.into(),
        artifact_spec: Some(pb::ArtifactSpec {
            location: Artifact::Echo.path().to_string_lossy().into_owned(),
            ..Default::default()
        }),
        function_name: "echo".into(),
        parameters: vec![pb::FunctionParameter {
            name: "input".into(),
            value: Some(prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.BytesValue".into(),
                value: payload.to_vec().encode_to_vec(),
            }),
            ..Default::default()
        }],
        execution_mode: mode.into(),
        ..Default::default()
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn caller(
    mut client: FunctionServiceClient<tonic::transport::Channel>,
    until: Instant,
    sync_calls: Arc<AtomicU64>,
    async_calls: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let payload: Vec<u8> = (0..RESULT_BYTES).map(|i| i as u8).collect();
    while Instant::now() < until {
        let reply = client
            .invoke_function(echo("soak-echo", pb::ExecutionMode::Sync, &payload))
            .await?
            .into_inner();
        let result = reply
            .result
            .and_then(|r| r.result)
            .ok_or_else(|| anyhow::anyhow!("a SYNC call returned no result"))?;
        anyhow::ensure!(
            Vec::<u8>::decode(result.value.as_slice())? == payload,
            "a SYNC result is not its input"
        );
        sync_calls.fetch_add(1, Ordering::Relaxed);
        let accepted = client
            .invoke_function(echo("soak-echo", pb::ExecutionMode::Async, &payload))
            .await?
            .into_inner();
        anyhow::ensure!(accepted.success, "ASYNC refused: {}", accepted.message);
        loop {
            let status = client
                .get_execution_status(pb::GetExecutionStatusRequest {
                    execution_id: accepted.execution_id.clone(),
                    include_result: false,
                    include_logs: false,
                })
                .await?
                .into_inner();
            let ended = status.result.as_ref().is_some_and(|r| {
                r.status == pb::ExecutionStatus::Completed as i32
                    || r.status == pb::ExecutionStatus::Failed as i32
            });
            if ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        async_calls.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

pub async fn run(minutes: u64, data_dir: &Path) -> anyhow::Result<SoakResults> {
    let mut command = Command::new(spearlet_binary()?);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--artifact-root")
        .arg(Artifact::Echo.path().parent().expect("a directory"))
        .env(
            "SPEARLET_EXECUTIONS__MAX_RESULT_BYTES",
            (8u64 << 20).to_string(),
        )
        .env(
            "SPEARLET_EXECUTIONS__MAX_TOTAL_RESULT_BYTES",
            (64u64 << 20).to_string(),
        )
        .env("SPEARLET_EXECUTIONS__RECORD_TTL", "30s")
        // 4 MiB of bytes is a few bytes more once wrapped in its message.
        .env(
            "SPEARLET_LIMITS__MAX_PARAMETER_BYTES",
            (8u64 << 20).to_string(),
        )
        .env("RUST_LOG", "error")
        .env_remove("RUST_BACKTRACE");
    let server = Server::start(command, "spearlet serve")?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let client = FunctionServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let start = Instant::now();
    let until = start + Duration::from_secs(minutes * 60);
    let (sync_calls, async_calls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let run = caller(
                client.clone(),
                until,
                Arc::clone(&sync_calls),
                Arc::clone(&async_calls),
            );
            tokio::spawn(async move {
                // Said at once: a failing caller would otherwise look like a
                // quiet soak until the end.
                run.await
                    .inspect_err(|e| eprintln!("  a caller failed: {e:#}"))
            })
        })
        .collect();
    let pid = server.child.id();
    let mut samples = Vec::new();
    let mut next = start + SAMPLE_EVERY;
    while Instant::now() < until {
        tokio::time::sleep_until(next.min(until).into()).await;
        next += SAMPLE_EVERY;
        let calls = sync_calls.load(Ordering::Relaxed) + async_calls.load(Ordering::Relaxed);
        let sample = Sample {
            at_s: start.elapsed().as_secs_f64(),
            rss_mib: rss_mib(pid),
            data_mib: dir_bytes(data_dir) as f64 / (1024.0 * 1024.0),
            calls,
        };
        eprintln!(
            "  {:>5.0} s: RSS {:>6.1} MiB, data dir {:>6.1} MiB, {} calls",
            sample.at_s, sample.rss_mib, sample.data_mib, sample.calls
        );
        samples.push(sample);
    }
    for c in callers {
        c.await??;
    }
    drop(server);
    Ok(SoakResults {
        samples,
        sync_calls: sync_calls.load(Ordering::Relaxed),
        async_calls: async_calls.load(Ordering::Relaxed),
    })
}
