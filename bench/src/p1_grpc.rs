//! P1: gRPC SYNC InvokeFunction of a 64-byte `echo` on an existing task, as
//! users run it — the real `spearlet serve` binary in a process of its own —
//! against a bare tonic unary echo server, also in a process of its own.
//! The client is this process; the two servers are measured alternately,
//! A B A B, with 1 and with 32 requests in flight.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use spearlet_test_artifacts::Artifact;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::echo::echo_client::EchoClient;
use crate::echo::echo_server::{Echo, EchoServer};
use crate::echo::{EchoReply, EchoRequest};
use crate::stats::{micros, percentile};

pub struct P1 {
    pub spearlet_p50_us: f64,
    pub bare_p50_us: f64,
    pub spearlet_p99_us: f64,
    pub bare_p99_us: f64,
    /// Requests per second with 1 in flight.
    pub spearlet_rps_1: f64,
    pub bare_rps_1: f64,
    /// Requests per second with 32 in flight.
    pub spearlet_rps: f64,
    pub bare_rps: f64,
    /// Per round: spearlet p50 / bare p50.
    pub p50_ratios: Vec<f64>,
    /// Per round: spearlet p99 / bare p99.
    pub p99_ratios: Vec<f64>,
    /// Per round: spearlet req/s / bare req/s, 1 in flight.
    pub rps_1_ratios: Vec<f64>,
    /// Per round: spearlet req/s / bare req/s, 32 in flight.
    pub throughput_ratios: Vec<f64>,
    /// The server's inline tier at the end: promotions, demotions, inline calls.
    pub tier: (u64, u64, u64),
    /// Per round at 32 in flight: the server process's CPU time (user and
    /// system) per request served, µs. Less noisy than requests per second
    /// on a shared VM: a slow spell stretches both servers' wall time, not
    /// the work each request costs.
    pub spearlet_cpu_us: Vec<f64>,
    pub bare_cpu_us: Vec<f64>,
}

/// The bare echo server of the comparison, run by this binary in a child
/// process (`spearlet-bench --bare-echo-server`).
pub async fn serve_bare_echo() -> anyhow::Result<()> {
    struct BareEcho;

    #[tonic::async_trait]
    impl Echo for BareEcho {
        async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
            Ok(Response::new(EchoReply {
                payload: request.into_inner().payload,
            }))
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("bare echo listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(EchoServer::new(BareEcho))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}

trait Target: Clone + Send + 'static {
    fn call(&mut self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Clone)]
struct SpearletTarget {
    client: FunctionServiceClient<Channel>,
    request: pb::InvokeFunctionRequest,
}

impl Target for SpearletTarget {
    async fn call(&mut self) -> anyhow::Result<()> {
        let reply = self
            .client
            .invoke_function(self.request.clone())
            .await?
            .into_inner();
        anyhow::ensure!(reply.success, "echo failed: {}", reply.message);
        Ok(())
    }
}

#[derive(Clone)]
struct BareTarget {
    client: EchoClient<Channel>,
    payload: Vec<u8>,
}

impl Target for BareTarget {
    async fn call(&mut self) -> anyhow::Result<()> {
        let reply = self
            .client
            .echo(EchoRequest {
                payload: self.payload.clone(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(reply.payload.len() == 64);
        Ok(())
    }
}

/// A server child process, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts `command` and waits for the `listening on ADDR` line it
    /// prints on stderr.
    pub(crate) fn start(mut command: Command, what: &str) -> anyhow::Result<Server> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                anyhow::bail!("{what} exited before listening");
            };
            let line = line?;
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().parse()?;
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe;
        // the inline tier's promotions and demotions are shown, with why
        // (`p1_inline_flaps` counts them).
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("inline tier") {
                    eprintln!("  server: {line}");
                }
            }
        });
        Ok(Server { child, addr })
    }
}

impl Server {
    /// The server process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `spearlet` binary of this build, built first if need be.
pub(crate) fn spearlet_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has a directory")?;
    let spearlet = dir.join("spearlet");
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release")
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "spearlet", "--bin", "spearlet"]);
    if profile != "debug" {
        build.args(["--profile", &profile]);
    }
    let status = build.status();
    if !status.is_ok_and(|s| s.success()) && !spearlet.exists() {
        anyhow::bail!(
            "no spearlet binary at {}; build it with `cargo build --release -p spearlet`",
            spearlet.display()
        );
    }
    Ok(spearlet)
}

/// The `spearlet serve` binary on a free loopback port, its state in
/// `data_dir`, the sample plugins' directory as its artifact root. A
/// plugin's panic is reported, not symbolised into a backtrace, as deployed.
pub(crate) fn start_spearlet(data_dir: &Path, log: &str) -> anyhow::Result<Server> {
    let mut command = Command::new(spearlet_binary()?);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--artifact-root")
        .arg(
            Artifact::Echo
                .path()
                .parent()
                .expect("plugins live in a directory"),
        )
        .env("RUST_LOG", log)
        .env_remove("RUST_BACKTRACE");
    Server::start(command, "spearlet serve")
}

pub async fn run(quick: bool, data_dir: &Path) -> anyhow::Result<P1> {
    let spearlet = start_spearlet(data_dir, "warn")?;
    let mut bare_cmd = Command::new(std::env::current_exe()?);
    bare_cmd.arg("--bare-echo-server");
    let bare = Server::start(bare_cmd, "the bare echo server")?;

    let payload = vec![0xA5u8; 64];
    let a = spearlet_target(connect(spearlet.addr).await?, &payload).await?;
    let b = BareTarget {
        client: EchoClient::new(connect_channel(bare.addr).await?),
        payload,
    };
    let latencies = Latencies::measure(&a, &b, quick).await?;
    let rates = Rates::measure((&a, spearlet.pid()), (&b, bare.pid()), quick).await?;
    let tier = inline_tier(&a).await?;
    drop((spearlet, bare));
    Ok(P1 {
        spearlet_p50_us: percentile(&latencies.a, 50.0),
        bare_p50_us: percentile(&latencies.b, 50.0),
        spearlet_p99_us: percentile(&latencies.a, 99.0),
        bare_p99_us: percentile(&latencies.b, 99.0),
        spearlet_rps_1: crate::stats::summary(&rates.a1).median,
        bare_rps_1: crate::stats::summary(&rates.b1).median,
        spearlet_rps: crate::stats::summary(&rates.a32).median,
        bare_rps: crate::stats::summary(&rates.b32).median,
        p50_ratios: latencies.p50_ratios,
        p99_ratios: latencies.p99_ratios,
        rps_1_ratios: rates.a1.iter().zip(&rates.b1).map(|(a, b)| a / b).collect(),
        throughput_ratios: rates
            .a32
            .iter()
            .zip(&rates.b32)
            .map(|(a, b)| a / b)
            .collect(),
        tier,
        spearlet_cpu_us: rates.a_cpu_us,
        bare_cpu_us: rates.b_cpu_us,
    })
}

/// Creates the `echo` task on the spearlet (through a cheap `nop` call)
/// and returns the target that echoes `payload` on it, an existing task:
/// what is measured is the call, not the task's creation.
async fn spearlet_target(
    mut client: FunctionServiceClient<Channel>,
    payload: &[u8],
) -> anyhow::Result<SpearletTarget> {
    let created = client
        .invoke_function(pb::InvokeFunctionRequest {
            invocation_type: pb::InvocationType::NewTask.into(),
            task_name: "bench-echo".into(),
            artifact_spec: Some(pb::ArtifactSpec {
                location: Artifact::Echo.path().to_string_lossy().into_owned(),
                ..Default::default()
            }),
            function_name: "nop".into(),
            execution_mode: pb::ExecutionMode::Sync.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    anyhow::ensure!(created.success, "creating the task: {}", created.message);
    let any = prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.BytesValue".into(),
        value: payload.to_vec().encode_to_vec(),
    };
    Ok(SpearletTarget {
        client,
        request: pb::InvokeFunctionRequest {
            invocation_type: pb::InvocationType::ExistingTask.into(),
            task_id: created.task_id,
            function_name: "echo".into(),
            parameters: vec![pb::FunctionParameter {
                name: "input".into(),
                value: Some(any),
                ..Default::default()
            }],
            execution_mode: pb::ExecutionMode::Sync.into(),
            ..Default::default()
        },
    })
}

/// What the inline tier did meanwhile (a demotion sends the function off
/// the workers for a warm-up): promotions, demotions, inline calls, as
/// the server's health details count them.
async fn inline_tier(a: &SpearletTarget) -> anyhow::Result<(u64, u64, u64)> {
    let health = a
        .client
        .clone()
        .get_health(pb::GetHealthRequest {
            include_details: true,
        })
        .await?
        .into_inner();
    let info = health.details.map(|d| d.system_info).unwrap_or_default();
    let count = |k: &str| info.get(k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    Ok((
        count("inline_promotions"),
        count("inline_demotions"),
        count("inline_calls"),
    ))
}

/// Call latencies, in microseconds, of the two targets, and per round
/// the ratios of their percentiles.
struct Latencies {
    a: Vec<f64>,
    b: Vec<f64>,
    p50_ratios: Vec<f64>,
    p99_ratios: Vec<f64>,
}

impl Latencies {
    /// Rounds of one call at a time, `a` then `b` in each round, after a
    /// warm-up of both.
    async fn measure(a: &SpearletTarget, b: &BareTarget, quick: bool) -> anyhow::Result<Self> {
        let (rounds, per_round) = if quick { (6, 500) } else { (20, 2_000) };
        let mut out = Latencies {
            a: Vec::new(),
            b: Vec::new(),
            p50_ratios: Vec::new(),
            p99_ratios: Vec::new(),
        };
        // The warm-up also promotes `echo` to spearlet's inline tier.
        warm(&mut a.clone(), 500).await?;
        warm(&mut b.clone(), 500).await?;
        for _ in 0..rounds {
            let (mut ra, mut rb) = (Vec::new(), Vec::new());
            latencies(&mut a.clone(), per_round, &mut ra).await?;
            latencies(&mut b.clone(), per_round, &mut rb).await?;
            out.p50_ratios
                .push(percentile(&ra, 50.0) / percentile(&rb, 50.0));
            out.p99_ratios
                .push(percentile(&ra, 99.0) / percentile(&rb, 99.0));
            out.a.extend(ra);
            out.b.extend(rb);
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Rates {
    a1: Vec<f64>,
    b1: Vec<f64>,
    a32: Vec<f64>,
    b32: Vec<f64>,
    /// Per window at 32 in flight, server CPU µs per request.
    a_cpu_us: Vec<f64>,
    b_cpu_us: Vec<f64>,
}

impl Rates {
    /// Requests per second of `a` and `b` alternately, with 1 and with 32
    /// in flight, over a few windows; at 32 in flight, also what each
    /// request cost its server's process in CPU time.
    async fn measure(
        (a, a_pid): (&SpearletTarget, u32),
        (b, b_pid): (&BareTarget, u32),
        quick: bool,
    ) -> anyhow::Result<Self> {
        let window = if quick {
            Duration::from_millis(700)
        } else {
            Duration::from_secs(3)
        };
        let mut rates = Rates::default();
        for _ in 0..if quick { 2 } else { 4 } {
            for in_flight in [1, 32] {
                let (ta, cpu_a) = throughput(a, a_pid, in_flight, window).await?;
                let (tb, cpu_b) = throughput(b, b_pid, in_flight, window).await?;
                rates.push(in_flight, ta, tb);
                if in_flight == 32 {
                    rates.a_cpu_us.extend(cpu_a);
                    rates.b_cpu_us.extend(cpu_b);
                }
            }
        }
        Ok(rates)
    }

    fn push(&mut self, in_flight: usize, a: f64, b: f64) {
        let (va, vb) = if in_flight == 1 {
            (&mut self.a1, &mut self.b1)
        } else {
            (&mut self.a32, &mut self.b32)
        };
        va.push(a);
        vb.push(b);
    }
}

async fn connect_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<FunctionServiceClient<Channel>> {
    Ok(FunctionServiceClient::new(connect_channel(addr).await?))
}

async fn warm(target: &mut impl Target, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        target.call().await?;
    }
    Ok(())
}

async fn latencies(target: &mut impl Target, n: usize, out: &mut Vec<f64>) -> anyhow::Result<()> {
    for _ in 0..n {
        let start = Instant::now();
        target.call().await?;
        out.push(micros(start.elapsed()));
    }
    Ok(())
}

/// Requests per second with `in_flight` concurrent callers on one channel,
/// and the CPU time the server process `pid` spent per request meanwhile
/// (µs; `None` where `/proc` cannot tell).
async fn throughput<T: Target>(
    target: &T,
    pid: u32,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<(f64, Option<f64>)> {
    let cpu_before = cpu_time(pid);
    let end = Instant::now() + window;
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let mut t = target.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    t.call().await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu_time(pid)
        .zip(cpu_before)
        .filter(|_| total > 0)
        .map(|(after, before)| micros(after.saturating_sub(before)) / total as f64);
    Ok((rate, cpu))
}

/// The user and system CPU time process `pid` has used so far, from
/// `/proc/PID/stat` (fields 14 and 15, in the kernel's USER_HZ ticks,
/// 100 a second on Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
