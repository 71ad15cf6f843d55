//! `spearlet-bench --soak`: a million SYNC calls, 64 in flight, against the
//! real `spearlet serve` binary, mixing echoes with panics (1 in 1,000) and
//! retriable failures (1 in 100). Every reply must be the caller's own and
//! nothing may be lost; the server's resident memory is read before and
//! after.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use spearlet_test_artifacts::Artifact;
use tonic::transport::Channel;

use crate::p1_grpc::{connect, start_spearlet};

pub struct Soak {
    pub calls: u64,
    pub seconds: f64,
    pub echoes: u64,
    pub panics: u64,
    pub retried: u64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    /// The server's threads at the end.
    pub threads: u64,
}

fn any_bytes(bytes: Vec<u8>) -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.BytesValue".into(),
        value: bytes.encode_to_vec(),
    }
}

fn any_i64(v: i64) -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.Int64Value".into(),
        value: v.encode_to_vec(),
    }
}

fn call(
    artifact: Artifact,
    task: &str,
    function: &str,
    params: Vec<(&str, prost_types::Any)>,
) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        invocation_type: pb::InvocationType::NewTask.into(),
        task_name: task.into(),
        artifact_spec: Some(pb::ArtifactSpec {
            location: artifact.path().to_string_lossy().into_owned(),
            ..Default::default()
        }),
        function_name: function.into(),
        parameters: params
            .into_iter()
            .map(|(name, value)| pb::FunctionParameter {
                name: name.into(),
                value: Some(value),
                ..Default::default()
            })
            .collect(),
        execution_mode: pb::ExecutionMode::Sync.into(),
        ..Default::default()
    }
}

/// A process's thread count.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A call that fails retriably once per fresh instance, allowed retries.
fn flaky() -> pb::InvokeFunctionRequest {
    let mut request = call(
        Artifact::Faulty,
        "faulty",
        "flaky",
        vec![("fail_times", any_i64(1))],
    );
    request.context = Some(pb::ExecutionContext {
        max_retries: 3,
        ..Default::default()
    });
    request
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kib / 1024.0)
}

type Client = FunctionServiceClient<Channel>;

/// The calls each kind has answered, indexed by [`ECHO`], [`PANIC`] and
/// [`RETRIED`].
type Counts = [AtomicU64; 3];

const ECHO: usize = 0;
const PANIC: usize = 1;
const RETRIED: usize = 2;

pub async fn run(calls: u64, data_dir: &Path) -> anyhow::Result<Soak> {
    let server = start_spearlet(data_dir, "error")?;
    let client = connect(server.addr).await?;
    warm_up(&client).await?;
    let rss_before = rss_mib(server.child.id())?;

    let next = Arc::new(AtomicU64::new(0));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let start = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(soak_worker(
                client.clone(),
                Arc::clone(&next),
                Arc::clone(&counts),
                calls,
            ))
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let rss_after = rss_mib(server.child.id())?;
    let threads_after = threads(server.child.id());
    let [echoes, panics, retried] =
        [ECHO, PANIC, RETRIED].map(|i| counts[i].load(Ordering::Relaxed));
    anyhow::ensure!(echoes + panics + retried == calls, "calls were lost");
    Ok(Soak {
        calls,
        seconds,
        echoes,
        panics,
        retried,
        rss_before_mib: rss_before,
        rss_after_mib: rss_after,
        threads: threads_after,
    })
}

/// Creates the tasks and warms up every path (panics, retries), so that
/// the memory read before the soak is that of a server in use.
async fn warm_up(client: &Client) -> anyhow::Result<()> {
    for i in 0..2_000u64 {
        let mut c = client.clone();
        c.invoke_function(call(
            Artifact::Echo,
            "echo",
            "echo",
            vec![("input", any_bytes(i.to_le_bytes().to_vec()))],
        ))
        .await?;
        if i % 100 == 0 {
            c.invoke_function(call(Artifact::Faulty, "faulty", "panic", vec![]))
                .await?;
            c.invoke_function(flaky()).await?;
        }
    }
    Ok(())
}

/// One of the callers: takes the next call number until `calls` are
/// taken, and makes that call (a panic, a retried failure or an echo, by
/// its number), counting it in `counts` under the kind the call returns
/// once its reply checks out.
async fn soak_worker(
    mut client: Client,
    next: Arc<AtomicU64>,
    counts: Arc<Counts>,
    calls: u64,
) -> anyhow::Result<()> {
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= calls {
            return Ok(());
        }
        let kind = if n % 1_000 == 999 {
            panic_call(&mut client, n).await?
        } else if n % 100 == 42 {
            flaky_call(&mut client, n).await?
        } else {
            echo_call(&mut client, n).await?
        };
        counts[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// A call that panics in the plugin: it must fail as a panic.
async fn panic_call(client: &mut Client, n: u64) -> anyhow::Result<usize> {
    let reply = client
        .invoke_function(call(Artifact::Faulty, "faulty", "panic", vec![]))
        .await?
        .into_inner();
    let code = reply.result.as_ref().map_or("", |r| r.error_code.as_str());
    anyhow::ensure!(!reply.success && code == "panic", "call {n}: {reply:?}");
    Ok(PANIC)
}

/// A call that fails retriably once: it must succeed, retried.
async fn flaky_call(client: &mut Client, n: u64) -> anyhow::Result<usize> {
    let reply = client.invoke_function(flaky()).await?.into_inner();
    anyhow::ensure!(reply.success, "call {n}: {}", reply.message);
    Ok(RETRIED)
}

/// An echo whose payload names the call: a reply meant for another caller
/// would not match.
async fn echo_call(client: &mut Client, n: u64) -> anyhow::Result<usize> {
    let mut payload = vec![0xA5u8; 64];
    payload[..8].copy_from_slice(&n.to_le_bytes());
    let reply = client
        .invoke_function(call(
            Artifact::Echo,
            "echo",
            "echo",
            vec![("input", any_bytes(payload.clone()))],
        ))
        .await?
        .into_inner();
    let echoed = reply
        .result
        .and_then(|r| r.result)
        .map(|any| Vec::<u8>::decode(any.value.as_slice()))
        .transpose()?;
    anyhow::ensure!(
        echoed.as_deref() == Some(&payload[..]),
        "call {n} got another reply"
    );
    Ok(ECHO)
}
