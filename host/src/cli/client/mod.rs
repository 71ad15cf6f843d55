//! The client commands: `invoke`, `tasks`, `task`, `executions`, `status`, `cancel`.

mod invoke;
mod manage;
mod present;

use anyhow::Context as _;
use clap::Args;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use tonic::transport::Channel;

pub use invoke::{invoke, InvokeArgs};
pub use manage::{
    cancel, executions, status, task, tasks, CancelArgs, ExecutionsArgs, StatusArgs, TaskCommand,
    TasksArgs,
};

/// Where the server is.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The spearlet server.
    #[arg(
        long,
        global = true,
        env = "SPEARLET_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    endpoint: String,
}

pub(super) async fn connect(endpoint: &Endpoint) -> anyhow::Result<FunctionServiceClient<Channel>> {
    FunctionServiceClient::connect(endpoint.endpoint.clone())
        .await
        .with_context(|| format!("cannot connect to spearlet at {}", endpoint.endpoint))
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A gRPC error, readably: `NOT_FOUND: task `x` not found`.
pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let kind = status
        .metadata()
        .get(spearlet::api::ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|k| format!(" [{k}]"))
        .unwrap_or_default();
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .map(|d| format!(" (retry after {} ms)", d.as_millis()))
        .unwrap_or_default();
    anyhow::anyhow!("{:?}{kind}: {}{retry}", status.code(), status.message())
}
