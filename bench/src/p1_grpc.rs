//! P1: gRPC SYNC InvokeFunction of a 64-byte `echo` on an existing task,
//! against a bare tonic unary echo server — same process, same client
//! stack, alternating A B A B.

use std::time::{Duration, Instant};

use prost::Message;
use spearlet::Host;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use spearlet_test_artifacts::Artifact;
use tokio::net::TcpListener;
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
    pub spearlet_rps: f64,
    pub bare_rps: f64,
    /// Per round: spearlet p50 / bare p50.
    pub p50_ratios: Vec<f64>,
    /// Per round: spearlet p99 / bare p99.
    pub p99_ratios: Vec<f64>,
    /// Per round: spearlet req/s / bare req/s.
    pub throughput_ratios: Vec<f64>,
}

struct BareEcho;

#[tonic::async_trait]
impl Echo for BareEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply {
            payload: request.into_inner().payload,
        }))
    }
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

pub async fn run(quick: bool, data_dir: &std::path::Path) -> anyhow::Result<P1> {
    let host = Host::new(crate::host_config(
        data_dir,
        Artifact::Echo.path().parent().unwrap(),
    ))?;
    let spearlet_addr = spawn_server(|listener| async move {
        spearlet::server::serve(host, listener, std::future::pending())
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;
    let bare_addr = spawn_server(|listener| async move {
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(BareEcho))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await
            .map_err(anyhow::Error::from)
    })
    .await?;

    let payload = vec![0xA5u8; 64];
    let mut spearlet_client =
        FunctionServiceClient::connect(format!("http://{spearlet_addr}")).await?;
    let any = prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.BytesValue".into(),
        value: payload.clone().encode_to_vec(),
    };
    let created = spearlet_client
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
    let a = SpearletTarget {
        client: spearlet_client,
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
    };
    let b = BareTarget {
        client: EchoClient::connect(format!("http://{bare_addr}")).await?,
        payload,
    };

    let (rounds, per_round) = if quick { (6, 500) } else { (20, 2_000) };
    let (mut lat_a, mut lat_b) = (Vec::new(), Vec::new());
    let (mut p50_ratios, mut p99_ratios) = (Vec::new(), Vec::new());
    warm(&mut a.clone(), 500).await?;
    warm(&mut b.clone(), 500).await?;
    for _ in 0..rounds {
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        latencies(&mut a.clone(), per_round, &mut ra).await?;
        latencies(&mut b.clone(), per_round, &mut rb).await?;
        p50_ratios.push(percentile(&ra, 50.0) / percentile(&rb, 50.0));
        p99_ratios.push(percentile(&ra, 99.0) / percentile(&rb, 99.0));
        lat_a.extend(ra);
        lat_b.extend(rb);
    }

    let window = if quick {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(3)
    };
    let (mut rps_a, mut rps_b, mut throughput_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..if quick { 2 } else { 4 } {
        let (ta, tb) = (
            throughput(&a, 32, window).await?,
            throughput(&b, 32, window).await?,
        );
        throughput_ratios.push(ta / tb);
        rps_a.push(ta);
        rps_b.push(tb);
    }
    Ok(P1 {
        spearlet_p50_us: percentile(&lat_a, 50.0),
        bare_p50_us: percentile(&lat_b, 50.0),
        spearlet_p99_us: percentile(&lat_a, 99.0),
        bare_p99_us: percentile(&lat_b, 99.0),
        spearlet_rps: crate::stats::summary(&rps_a).median,
        bare_rps: crate::stats::summary(&rps_b).median,
        p50_ratios,
        p99_ratios,
        throughput_ratios,
    })
}

async fn spawn_server<F, Fut>(serve: F) -> anyhow::Result<std::net::SocketAddr>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(addr)
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

/// Requests per second with `in_flight` concurrent callers on one channel.
async fn throughput<T: Target>(
    target: &T,
    in_flight: usize,
    window: Duration,
) -> anyhow::Result<f64> {
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
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
