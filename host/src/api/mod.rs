//! The gRPC layer over [`Host`]: `spearlet.FunctionService`
//! ([`FunctionApi`]), the admin service ([`AdminApi`]) and SPEAR's node API
//! ([`NodeApi`]) convert, validate and map errors, holding no business
//! logic; [`serve`] (and [`serve_node`], [`serve_with_tokens`]) serves them
//! all on one listener, with the node's HTTP port beside them when
//! configured.

mod admin;
mod calls;
mod convert;
mod executions;
mod health;
#[doc(hidden)] // The integration tests speak SSF through its codec; not part of the embedding API.
pub mod http;
mod limits;
mod node;
mod reply;
mod server;
mod status;
mod stream;
mod tasks;
mod value;

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_server::FunctionService;
use tonic::{Request, Response, Status};

pub use crate::auth::Tokens;
pub use admin::AdminApi;
pub use node::NodeApi;
pub use server::{http_address, serve, serve_node, serve_with_tokens};
pub use status::{code, retry_delay, ERROR_KIND_KEY};

use crate::host::Host;

/// Chunks buffered between a streaming plugin and its client, per stage: a
/// slower client makes the plugin's `emit` block once these fill.
pub const STREAM_BUFFER: usize = 16;

/// `spearlet.FunctionService`, served by a [`Host`].
#[derive(Debug, Clone)]
pub struct FunctionApi {
    host: Host,
}

impl FunctionApi {
    /// The service for `host`.
    pub fn new(host: Host) -> Self {
        FunctionApi { host }
    }
}

type StreamResult = Pin<Box<dyn Stream<Item = Result<pb::StreamExecutionResult, Status>> + Send>>;

/// Each handler's body lives with its group: calls in `calls`,
/// executions in `executions`, tasks in `tasks`, health and stats in
/// `health`.
#[tonic::async_trait]
impl FunctionService for FunctionApi {
    // Written out rather than `async fn`: `async_trait` would wrap the
    // handler's future in one more that holds the request a second time,
    // and the box every call's future is moved into would be that much
    // larger (see `FunctionApi::invoke`).
    fn invoke_function<'life0, 'async_trait>(
        &'life0 self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<Response<pb::InvokeFunctionResponse>, Status>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.invoke(request))
    }

    async fn get_execution_status(
        &self,
        request: Request<pb::GetExecutionStatusRequest>,
    ) -> Result<Response<pb::GetExecutionStatusResponse>, Status> {
        self.execution_status(request).await
    }

    async fn cancel_execution(
        &self,
        request: Request<pb::CancelExecutionRequest>,
    ) -> Result<Response<pb::CancelExecutionResponse>, Status> {
        self.cancel(request).await
    }

    type StreamFunctionStream = StreamResult;

    async fn stream_function(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Response<Self::StreamFunctionStream>, Status> {
        self.invoke_streaming(request).await
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.task_page(request).await
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        self.task(request).await
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        self.remove_task(request).await
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        self.execution_page(request).await
    }

    async fn get_health(
        &self,
        request: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::GetHealthResponse>, Status> {
        self.health(request).await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.stats(request).await
    }
}
