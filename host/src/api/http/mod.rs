//! The node's HTTP port (`server.http_listen`): the stream plane SPEAR's
//! endpoint gateway connects to — `GET /api/v1/executions/{id}/streams/ws`,
//! SSF v1 frames over a WebSocket, each request frame one call of a
//! serving execution — plus `GET /health` and `GET /metrics`
//! (`docs/cluster.md`, "The stream plane").
//!
//! The WebSocket needs no token, as SPEAR's gateway sends none: it only
//! reaches executions started by an Invoke (which does), named by an id
//! the caller chose or was given.
//!
//! What the stream plane holds is bounded (the constants below; `ws`
//! says how each is enforced):
//!
//! - [`MAX_CONNECTIONS`] (1024) WebSocket connections at once; past it an
//!   upgrade is refused with 503 `TOO_MANY_CONNECTIONS`. A connection's
//!   slot is given back only once its calls have ended.
//! - [`MAX_CALLS_PER_CONNECTION`] (64) calls and unsent answers per
//!   connection (then its frames wait unread), on at most
//!   [`MAX_STREAMS_PER_CONNECTION`] (1024) streams.
//! - [`MAX_CALLS_IN_FLIGHT`] (1024) calls and unsent answers across all
//!   connections; past it a frame is answered with a retryable error frame
//!   `overloaded`. With frames of at most 4 MiB ([`ssf::MAX_FRAME_BYTES`])
//!   each way, that bounds the request and answer bytes held to 1024 of
//!   each.
//! - Answers over 4 MiB are sent as an error frame `output_too_large`.
//! - A write not done within [`WRITE_TIMEOUT`] (10 s) drops the
//!   connection; one with no frame, call or answer for [`IDLE_TIMEOUT`]
//!   (5 minutes) is closed (1000); terminating the execution closes its
//!   connections (1001).
//! - A connection's calls end with it: dropped, which cancels their
//!   executions.

pub mod ssf;
mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::NodeApi;
use crate::error::{Error, Result};

/// WebSocket connections open at once, across executions.
pub const MAX_CONNECTIONS: usize = 1024;
/// Calls one connection may have running, or answered but not yet sent,
/// at once; past it, the connection's frames wait to be read.
pub const MAX_CALLS_PER_CONNECTION: usize = 64;
/// Calls all connections together may have running, or answered but not
/// yet sent, at once; past it, a frame is answered with a retryable error
/// frame `overloaded`. As many as [`MAX_CONNECTIONS`]: 16 connections
/// busy to their own bound reach it, and it caps the frames held at
/// 1024 × 4 MiB each way.
pub const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// How long one write to a connection may take before the connection is
/// dropped (its peer is not reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may go without a frame received, a call running
/// or an answer sent before it is closed (1000).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Streams one connection may have calls on at once (SPEAR's gateway
/// allows as many per connection).
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

#[derive(Debug, Clone)]
struct Plane {
    api: NodeApi,
    connections: Arc<Semaphore>,
    /// [`MAX_CALLS_IN_FLIGHT`], shared by every connection.
    calls: ws::Budget,
}

/// The node's HTTP port for `api`'s host and executions.
///
/// # Errors
///
/// [`Error::InvalidRequest`] for an empty `metrics.token`.
pub fn router(api: NodeApi) -> Result<axum::Router> {
    let metrics = crate::metrics::router(api.host().clone())?;
    let plane = Plane {
        api,
        connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        calls: ws::Budget::default(),
    };
    Ok(axum::Router::new()
        .route("/api/v1/executions/{id}/streams/ws", get(stream_socket))
        .route("/health", get(health))
        .with_state(plane)
        .merge(metrics))
}

/// Serves `router` (see [`router`]) on `listener` until `shutdown`
/// completes.
///
/// # Errors
///
/// [`Error::Endpoint`] when the HTTP server fails.
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::endpoint("the node's HTTP port"))
}

async fn health(State(plane): State<Plane>) -> Response {
    if plane.api.host().is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else {
        (StatusCode::OK, "serving\n").into_response()
    }
}

/// Errors before the upgrade are JSON `{error, message}`, as SPEAR's
/// gateway writes its own.
fn refusal(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "error": code, "message": message });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn stream_socket(
    State(plane): State<Plane>,
    Path(execution_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(entry) = plane
        .api
        .ledger()
        .get(&execution_id)
        .filter(|e| e.is_serving())
    else {
        return refusal(
            StatusCode::NOT_FOUND,
            "EXECUTION_NOT_FOUND",
            format!(
                "no serving execution `{execution_id}` on this node (an Invoke with \
                 metadata spear.endpoint_gateway=true starts one)"
            ),
        );
    };
    let Ok(permit) = Arc::clone(&plane.connections).try_acquire_owned() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            format!("this node has {MAX_CONNECTIONS} stream connections open"),
        );
    };
    // Only a serving execution has one, and `entry` is one.
    let Some(stopped) = entry.stopped() else {
        return refusal(
            StatusCode::NOT_FOUND,
            "EXECUTION_NOT_FOUND",
            format!("execution `{execution_id}` is not serving"),
        );
    };
    let calls = ws::Serving {
        host: plane.api.host().clone(),
        entry,
    };
    let session = ws::Session::new(calls, stopped, ws::Limits::default(), plane.calls);
    upgrade
        .protocols(["ssf.v1"])
        .max_message_size(ssf::MAX_FRAME_BYTES)
        .max_frame_size(ssf::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            // `run` returns once the connection's calls have ended: only
            // then is its slot given back.
            session.run(socket).await;
            drop(permit);
        })
}
