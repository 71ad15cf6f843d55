//! P7: the process tier. A 64-byte echo through `Host::invoke` on a task
//! whose plugin runs in a worker process, against a 64-byte round trip over
//! a Unix socket between two processes (what an out-of-process plugin host
//! pays at the least), measured in the same run; how long a crash costs
//! (crash to the next successful call); and throughput against the same
//! task in process, 32 calls in flight.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use spearlet::invoke::{InvokeRequest, Target};
use spearlet::isolate::ISOLATION_KEY;
use spearlet::Value;
use spearlet_test_artifacts::Artifact;

use crate::stats::{micros, percentile};

pub struct P7 {
    pub isolated_p50_us: f64,
    /// The channel alone: a call on a worker instance, no host around it.
    pub channel_p50_us: f64,
    pub isolated_p99_us: f64,
    pub socket_p50_us: f64,
    /// Per crash: from the crashed call's reply to the next call's success, ms.
    pub restarts_ms: Vec<f64>,
    pub isolated_rps: f64,
    pub in_process_rps: f64,
    /// Waits of the host on its workers that ended while spinning / sleeping.
    pub wake: (u64, u64),
}

/// The 64-byte payload both sides carry.
const PAYLOAD: [u8; 64] = [0x5a; 64];

fn new_task(name: &str, artifact: Artifact, isolation: &str, function: &str) -> InvokeRequest {
    let mut request = InvokeRequest::new(
        Target::NewTask {
            name: name.into(),
            description: String::new(),
            artifact: spearlet::artifact::ArtifactSpec::at(artifact.path().to_string_lossy()),
        },
        function,
    );
    request.metadata = BTreeMap::from([(ISOLATION_KEY.to_owned(), isolation.to_owned())]);
    request
}

fn echo(task_id: &str) -> InvokeRequest {
    let mut request = crate::call_existing(task_id, "echo");
    request.params = vec![("input".to_owned(), Value::Bytes(PAYLOAD.to_vec()))];
    request
}

pub async fn run(quick: bool, data_dir: &std::path::Path) -> anyhow::Result<P7> {
    let root = Artifact::Echo
        .path()
        .parent()
        .expect("plugins live in a directory");
    let mut config = crate::host_config(data_dir, root);
    // This benchmark binary serves as the worker program (see `main`).
    config.tiers.worker_program = Some(std::env::current_exe()?);
    let host = spearlet::Host::new(config)?;
    let isolated = host
        .invoke(new_task("p7-isolated", Artifact::Echo, "process", "nop"))
        .await?
        .task_id
        .to_string();
    let in_process = host
        .invoke(new_task(
            "p7-in-process",
            Artifact::Echo,
            "in-process",
            "nop",
        ))
        .await?
        .task_id
        .to_string();

    let n = if quick { 20_000 } else { 200_000 };
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n + 1_000 {
        let start = Instant::now();
        let out = host.invoke(echo(&isolated)).await?;
        let took = start.elapsed();
        anyhow::ensure!(
            out.execution.output == Some(Value::Bytes(PAYLOAD.to_vec())),
            "the isolated echo came back as {:?}",
            out.execution
        );
        if i >= 1_000 {
            latencies.push(micros(took));
        }
    }
    let socket = socket_round_trips(if quick { 20_000 } else { 200_000 })?;
    let channel = channel_round_trips(&host, n)?;

    let restarts_ms = restarts(&host, if quick { 5 } else { 20 }).await?;

    let in_flight = 32;
    let per_task = if quick { 2_000 } else { 20_000 };
    let isolated_rps = throughput(&host, &isolated, in_flight, per_task).await?;
    let in_process_rps = throughput(&host, &in_process, in_flight, per_task).await?;
    Ok(P7 {
        isolated_p50_us: percentile(&latencies, 50.0),
        channel_p50_us: percentile(&channel, 50.0),
        isolated_p99_us: percentile(&latencies, 99.0),
        socket_p50_us: percentile(&socket, 50.0),
        restarts_ms,
        isolated_rps,
        in_process_rps,
        wake: spearlet::isolate::wake_counts(),
    })
}

/// 64-byte echoes straight on a worker instance (the channel, the codec,
/// the plugin call in the worker), in µs each.
fn channel_round_trips(host: &spearlet::Host, n: usize) -> anyhow::Result<Vec<f64>> {
    use spearlet::isolate::{CrashGate, IsolatedInstance};
    use spearlet::loader::{CallRequest, VerifiedFile};
    let workers = host.artifacts().workers();
    let file = VerifiedFile::rehash(Artifact::Echo.path(), u64::MAX)?;
    let plugin = spearlet::isolate::describe(file, workers)?;
    let gate = std::sync::Arc::new(CrashGate::default());
    let mut instance =
        IsolatedInstance::create(workers, &"p7-channel".into(), &plugin, &[], None, &gate)?;
    let echo = plugin.function("echo")?;
    let cancelled = std::sync::atomic::AtomicBool::new(false);
    let params = [("input".to_owned(), Value::Bytes(PAYLOAD.to_vec()))];
    let request = CallRequest::new("p7", &cancelled).with_params(&params);
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 1_000 {
        let start = Instant::now();
        black_box(instance.call(echo, &request)?);
        if i >= 1_000 {
            times.push(micros(start.elapsed()));
        }
    }
    Ok(times)
}

/// From each crash of a worker to the next call that succeeds on the task.
async fn restarts(host: &spearlet::Host, crashes: usize) -> anyhow::Result<Vec<f64>> {
    let faulty = host
        .invoke(new_task("p7-faulty", Artifact::Faulty, "process", "flaky"))
        .await?
        .task_id
        .to_string();
    let mut times = Vec::new();
    for _ in 0..crashes {
        let crashed = host.invoke(crate::call_existing(&faulty, "abort")).await?;
        let code = crashed.execution.error.as_ref().map(|e| e.code.clone());
        anyhow::ensure!(
            code.as_deref() == Some("plugin_crashed"),
            "abort in a worker ended as {:?}",
            crashed.execution
        );
        let start = Instant::now();
        let mut next = crate::call_existing(&faulty, "flaky");
        next.params = vec![("fail_times".to_owned(), Value::I64(0))];
        let out = host.invoke(next).await?;
        anyhow::ensure!(
            out.execution.error.is_none(),
            "the call after a crash failed: {:?}",
            out.execution
        );
        times.push(micros(start.elapsed()) / 1000.0);
    }
    Ok(times)
}

/// Calls per second with `in_flight` callers, `per_caller` calls each.
async fn throughput(
    host: &spearlet::Host,
    task_id: &str,
    in_flight: usize,
    per_caller: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..in_flight {
        let (host, task_id) = (host.clone(), task_id.to_owned());
        callers.push(tokio::spawn(async move {
            for _ in 0..per_caller {
                black_box(host.invoke(echo(&task_id)).await?);
            }
            anyhow::Ok(())
        }));
    }
    for caller in callers {
        caller.await??;
    }
    Ok((in_flight * per_caller) as f64 / start.elapsed().as_secs_f64())
}

/// 64-byte round trips over a Unix socket to a child process that echoes
/// them (this binary, `--socket-echo-child`), in µs each.
fn socket_round_trips(n: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--socket-echo-child")
        .arg(&path)
        .spawn()?;
    let (mut stream, _) = listener.accept()?;
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 1_000 {
        let start = Instant::now();
        stream.write_all(&PAYLOAD)?;
        stream.read_exact(&mut back)?;
        if i >= 1_000 {
            times.push(micros(start.elapsed()));
        }
    }
    drop(stream);
    let _ = child.wait_timeout_or_kill(Duration::from_secs(5));
    Ok(times)
}

/// The child's side of [`socket_round_trips`]: echo 64-byte messages until
/// the parent hangs up.
pub fn socket_echo_child(path: &std::path::Path) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    let mut buf = [0u8; 64];
    while stream.read_exact(&mut buf).is_ok() {
        stream.write_all(&buf)?;
    }
    Ok(())
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl WaitOrKill for std::process::Child {
    fn wait_timeout_or_kill(&mut self, timeout: Duration) -> std::io::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill()?;
        self.wait().map(drop)
    }
}
