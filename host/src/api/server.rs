//! Serving a [`Host`] over gRPC — the original `FunctionService` and
//! today's SPEAR node API side by side — with the standard health and
//! reflection services so generic clients (`grpcurl`, load balancers)
//! work, and the node's HTTP port beside it when configured.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use spearlet_proto::node::execution_service_server::ExecutionServiceServer;
use spearlet_proto::node::instance_service_server::InstanceServiceServer;
use spearlet_proto::node::invocation_service_server::InvocationServiceServer;
use spearlet_proto::spearlet::admin::v1::admin_service_server::AdminServiceServer;
use spearlet_proto::spearlet::function_service_server::FunctionServiceServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::api::{AdminApi, FunctionApi, NodeApi};
use crate::auth::Tokens;
use crate::error::{Error, Result};
use crate::host::Host;

/// Serves `host` on `listener` until `shutdown` completes, then stops
/// gracefully (see `drain`). Calls need a token from `auth.tokens_file`
/// when it is set.
///
/// # Errors
///
/// [`Error::Endpoint`] when the transport fails; the errors of
/// [`Tokens::from_file`].
pub async fn serve(
    host: Host,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let tokens = match &host.config().auth.tokens_file {
        Some(file) => Some(Tokens::from_file(file)?),
        None => None,
    };
    serve_with_tokens(host, listener, tokens, shutdown).await
}

/// As [`serve`], with the tokens calls need (`None`: none), which the
/// caller may [reload](Tokens::reload) while serving: each call is checked
/// against the tokens current when it arrives.
///
/// # Errors
///
/// [`Error::Endpoint`] when the transport fails.
pub async fn serve_with_tokens(
    host: Host,
    listener: TcpListener,
    tokens: Option<Tokens>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let http = match http_address(host.config(), &listener)? {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| Error::InvalidRequest {
                    field: "server.http_listen",
                    reason: format!("cannot listen on {addr}: {e}"),
                })?,
        ),
        None => None,
    };
    serve_node(host, listener, http, tokens, shutdown).await
}

/// Where the node's HTTP port listens: `server.http_listen`, else — when
/// the host joins an SMS, whose gateway needs it — the gRPC listener's IP
/// on a port the system chooses (the node registers it). `None`: no HTTP
/// port.
///
/// # Errors
///
/// [`Error::Endpoint`] when `grpc` has no address.
pub fn http_address(
    config: &crate::Config,
    grpc: &TcpListener,
) -> Result<Option<std::net::SocketAddr>> {
    if let Some(addr) = config.server.http_listen {
        return Ok(Some(addr));
    }
    if config.sms.grpc.is_none() {
        return Ok(None);
    }
    let grpc = grpc
        .local_addr()
        .map_err(Error::endpoint("the listener's address"))?;
    Ok(Some(std::net::SocketAddr::new(grpc.ip(), 0)))
}

/// As [`serve_with_tokens`], with the node's HTTP port (the stream plane,
/// `/health`, `/metrics`) served on `http` when given.
///
/// # Errors
///
/// [`Error::Endpoint`] when a transport fails.
pub async fn serve_node(
    host: Host,
    listener: TcpListener,
    http: Option<TcpListener>,
    tokens: Option<Tokens>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (reporter, health) = health().await;
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let tls = tls_config(&host.config().tls)?;
    warn_if_exposed(&listener, tokens.is_some(), tls.is_some());
    // Every service but health needs a token when tokens are configured.
    let authorize = move |request: tonic::Request<()>| match &tokens {
        Some(tokens) => tokens.check(request),
        None => Ok(request),
    };
    let maintenance = host.spawn_maintenance();
    let local = listener
        .local_addr()
        .map_err(Error::endpoint("the listener's address"))?;
    let node_api = NodeApi::new(host.clone());
    let (http_stop, http_stopped) = tokio::sync::watch::channel(false);
    let http_plane = match http {
        Some(http) => Some(spawn_http_plane(&node_api, http, http_stopped)?),
        None => None,
    };
    let node = host.join_cluster(local, http_plane.as_ref().map(|(addr, _)| *addr));
    if host.config().tasks.preload {
        let preloading = host.clone();
        tokio::spawn(async move { preloading.preload().await });
    }
    let stopping = drain(host.clone(), node_api.clone(), reporter, node, shutdown);
    let limits = host.config().limits.clone();
    let admin = AdminServiceServer::new(AdminApi::new(host.clone()))
        .max_decoding_message_size(limits.max_message_bytes);
    let functions = FunctionServiceServer::new(FunctionApi::new(host))
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let invocations = InvocationServiceServer::new(node_api.clone())
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let executions = ExecutionServiceServer::new(node_api.clone())
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let instances = InstanceServiceServer::new(node_api.clone())
        .max_decoding_message_size(limits.max_message_bytes);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(Error::endpoint("TLS configuration"))?;
    }
    let result = builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .add_service(health)
        .add_service(InterceptedService::new(reflection_v1, authorize.clone()))
        .add_service(InterceptedService::new(
            reflection_v1alpha,
            authorize.clone(),
        ))
        .add_service(InterceptedService::new(admin, authorize.clone()))
        .add_service(InterceptedService::new(invocations, authorize.clone()))
        .add_service(InterceptedService::new(executions, authorize.clone()))
        .add_service(InterceptedService::new(instances, authorize.clone()))
        .add_service(InterceptedService::new(functions, authorize))
        // Small unary replies must not wait out Nagle's algorithm, and go
        // out in one write (see `OneWrite`).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|conn| conn.map(OneWrite)),
            stopping,
        )
        .await
        .map_err(Error::endpoint("gRPC transport"));
    wind_down(&node_api, &http_stop, http_plane.map(|(_, plane)| plane)).await;
    maintenance.abort();
    result
}

/// After the gRPC transport stopped: serving executions started during the
/// drain end, the HTTP port stops, and the SMS gets the last reports.
async fn wind_down(
    node_api: &NodeApi,
    http_stop: &tokio::sync::watch::Sender<bool>,
    http_plane: Option<tokio::task::JoinHandle<Result<()>>>,
) {
    node_api.stop_serving("host_stopping", "the node stopped");
    let _ = http_stop.send(true);
    if let Some(plane) = http_plane {
        match plane.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the node's HTTP port failed"),
            Err(e) => tracing::warn!(error = %e, "the node's HTTP port did not stop cleanly"),
            Ok(Ok(())) => {}
        }
    }
    flush_reports(node_api.host()).await;
}

/// The longest a stop waits for the SMS to take the reports still queued
/// (the final ones of executions the stop ended among them: else the SMS
/// would route to them until it forgets the instances).
const REPORT_FLUSH: Duration = Duration::from_secs(2);

async fn flush_reports(host: &Host) {
    let Some(sms) = host.sms() else {
        return;
    };
    if tokio::time::timeout(REPORT_FLUSH, sms.reports().flush())
        .await
        .is_err()
    {
        let stats = sms.reports().stats();
        tracing::warn!(
            queued = stats.queued,
            "the SMS did not take every report before the stop; the rest are lost"
        );
    }
}

/// The health service, both node APIs SERVING (until the stop).
async fn health() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<FunctionServiceServer<FunctionApi>>()
        .await;
    reporter
        .set_serving::<InvocationServiceServer<NodeApi>>()
        .await;
    (reporter, health)
}

/// Server reflection, v1 for current tools and v1alpha for the older
/// grpcurl, Evans, Postman and grpcio clients that only speak it. Only the
/// services served here are advertised: the descriptor set also holds the
/// SMS's, which this process calls but does not serve.
fn reflection() -> Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(spearlet_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(spearlet_proto::node::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("spearlet.FunctionService")
            .with_service_name("spearlet.InvocationService")
            .with_service_name("spearlet.ExecutionService")
            .with_service_name("spearlet.InstanceService")
            .with_service_name("spearlet.admin.v1.AdminService")
            .with_service_name("grpc.health.v1.Health")
    };
    let error = |e: tonic_reflection::server::Error| Error::Endpoint {
        what: "reflection service",
        reason: e.to_string(),
    };
    Ok((
        builder().build_v1().map_err(error)?,
        builder().build_v1alpha().map_err(error)?,
    ))
}

/// The node's HTTP port, served until `stopped` turns true: its address
/// and the serving task.
fn spawn_http_plane(
    node_api: &NodeApi,
    http: TcpListener,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
    let addr = http
        .local_addr()
        .map_err(Error::endpoint("the HTTP listener's address"))?;
    tracing::info!(%addr, "the node's HTTP port (stream plane, /health, /metrics) listens");
    let router = super::http::router(node_api.clone())?;
    let plane = tokio::spawn(super::http::serve(router, http, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    Ok((addr, plane))
}

/// Until the stop: `spearlet.FunctionService` is NOT_SERVING while the
/// host's persistence fails (see [`Host::persistence`]) — a balancer
/// should send new work elsewhere, as what it records waits in the journal
/// and is refused past its limit — and SERVING again once it recovers. The
/// server as a whole (`""`) stays SERVING: the process is alive and its
/// calls run, and restarting it would not mend a full disk.
async fn follow_persistence(host: &Host, reporter: &tonic_health::server::HealthReporter) {
    let mut changes = host.persistence_changes();
    let mut failing = false;
    loop {
        let now = changes.borrow_and_update().failure.is_some();
        if now != failing {
            failing = now;
            if failing {
                reporter
                    .set_not_serving::<FunctionServiceServer<FunctionApi>>()
                    .await;
            } else {
                reporter
                    .set_serving::<FunctionServiceServer<FunctionApi>>()
                    .await;
            }
        }
        if changes.changed().await.is_err() {
            // The store is gone: nothing changes any more.
            return std::future::pending().await;
        }
    }
}

/// A graceful stop, once `signal` fires: health turns NOT_SERVING and new
/// calls are refused (UNAVAILABLE, `host_stopping`) at once; serving
/// executions of the node API end and the SMS is told; the node
/// leaves the cluster, so no one routes to it any more; SYNC and STREAM
/// calls in flight finish, for up to `server.shutdown_grace`; ASYNC
/// executions still running then are cancelled (`host_stopping`; a plugin
/// that ignores its flag is abandoned); then the transport closes.
async fn drain(
    host: Host,
    node_api: NodeApi,
    reporter: tonic_health::server::HealthReporter,
    node: Option<crate::sms::NodeAgent>,
    signal: impl Future<Output = ()> + Send,
) {
    tokio::select! {
        () = signal => {}
        () = follow_persistence(&host, &reporter) => {}
    }
    host.begin_shutdown();
    // Serving executions end now (their connections close), and the SMS
    // hears of it before the node leaves, so its gateway stops routing to
    // them.
    node_api.stop_serving("host_stopping", "the node stopped");
    flush_reports(&host).await;
    reporter
        .set_not_serving::<FunctionServiceServer<FunctionApi>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    if let Some(node) = node {
        match node.leave().await {
            Ok(()) => tracing::info!("left the cluster: the node is deleted from the SMS"),
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the node from the SMS; it expires there")
            }
        }
    }
    let grace = host.config().server.shutdown_grace;
    tracing::info!(grace = ?grace, "stopping: new calls are refused, calls in flight finish");
    if tokio::time::timeout(grace, host.drained()).await.is_ok() {
        return;
    }
    // Cooperatively first: the plugins are told to stop, and get a moment.
    let (code, message) = (
        "host_stopping",
        "the host stopped before the execution ended",
    );
    let asked = host.cancel_async(false, code, message);
    tracing::warn!(
        asked,
        "the shutdown grace ran out; ASYNC executions still running are cancelled"
    );
    let moment = (grace / 10).min(Duration::from_secs(1));
    let unfinished = host.unfinished_async();
    if tokio::time::timeout(moment, host.drained()).await.is_err() {
        let abandoned = host.cancel_async(true, code, message);
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "plugins that ignored their cancellation are abandoned"
            );
        }
    }
    // An abandoned plugin's task never gets to record how its execution
    // ended: recorded here, so a restart reports it CANCELLED, not cut short.
    host.record_endings(&unfinished).await;
}

/// Serving beyond this machine with no token check is allowed — a private
/// network may be the point — but never silently.
fn warn_if_exposed(listener: &TcpListener, authenticated: bool, encrypted: bool) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    if addr.ip().is_loopback() {
        return;
    }
    if !authenticated {
        tracing::warn!(
            %addr,
            "listening beyond loopback with no authentication: anyone who reaches this address can load plugins \
             from the artifact roots and run them; set auth.tokens_file"
        );
    }
    if !encrypted {
        tracing::warn!(
            %addr,
            "listening beyond loopback without TLS: requests, results and tokens cross the network in clear; \
             set tls.cert and tls.key"
        );
    }
}

/// The server's TLS settings, if `[tls]` asks for them.
fn tls_config(tls: &crate::config::TlsConfig) -> Result<Option<ServerTlsConfig>> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| Error::io(path, e));
    let (cert, key) = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => (read(cert)?, read(key)?),
        (None, None) if tls.client_ca.is_none() => return Ok(None),
        _ => {
            return Err(Error::InvalidRequest {
                field: "tls",
                reason: "tls.cert and tls.key go together (and tls.client_ca needs both)"
                    .to_owned(),
            })
        }
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(config))
}

/// A TCP connection that tells the HTTP/2 layer it has no vectored writes.
///
/// With vectored writes, h2 sends any DATA frame over 256 bytes as a buffer
/// of its own and must flush it before it can queue the trailers, so a
/// unary reply larger than that (ours are, with their ids and metrics) takes
/// two `writev` calls and reaches the client as two segments: the client
/// wakes twice. Without them, frames up to 1 KiB are copied into one buffer
/// with the headers and trailers and the whole reply is one `write`.
struct OneWrite(TcpStream);

impl Connected for OneWrite {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for OneWrite {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
