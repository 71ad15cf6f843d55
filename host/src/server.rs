//! Serving a [`Host`] over gRPC, with the standard health and reflection
//! services so generic clients (`grpcurl`, load balancers) work.

use std::future::Future;

use spearlet_proto::spearlet::function_service_server::FunctionServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::api::FunctionApi;
use crate::error::{Error, Result};
use crate::host::Host;

/// Serves `host` on `listener` until `shutdown` completes, then drains.
///
/// # Errors
///
/// [`Error::Internal`] when the transport fails.
pub async fn serve(
    host: Host,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<FunctionServiceServer<FunctionApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spearlet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection service: {e}")))?;
    let maintenance = host.spawn_maintenance();
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(FunctionServiceServer::new(FunctionApi::new(host)))
        // Small unary replies must not wait out Nagle's algorithm.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| Error::Internal(format!("gRPC transport: {e}")));
    maintenance.abort();
    result
}
