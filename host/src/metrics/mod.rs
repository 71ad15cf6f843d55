//! `GET /metrics`: the host's counters in the Prometheus / OpenMetrics text
//! format (`spearlet serve --metrics-listen ADDR`, `[metrics] listen`).
//!
//! Nothing here keeps counters of its own: every scrape reads the counters
//! the host keeps anyway — the same ones `GetHealth` and `GetStats` report
//! — so the endpoint and the RPCs never disagree, and a host nobody scrapes
//! pays nothing for it. Task labels use the task's name; past
//! `metrics.max_task_labels` tasks (oldest first keep theirs), the rest are
//! added up under `task="_other"`, so a host with many tasks cannot blow up
//! the time series count.

use std::future::Future;

use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::host::Host;

mod families;
mod process;

pub use process::resident_bytes;

/// The label under which tasks past the cap are counted.
pub const OTHER_TASKS: &str = "_other";

/// The host's counters as a Prometheus collector.
#[derive(Debug)]
pub struct HostCollector {
    host: Host,
}

impl HostCollector {
    /// A collector reading `host`.
    pub fn new(host: Host) -> Self {
        HostCollector { host }
    }
}

/// The exposition of `host`'s counters now, in the OpenMetrics text format.
///
/// # Errors
///
/// [`Error::Endpoint`] if encoding fails (it writes to a string).
pub fn render(host: &Host) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HostCollector::new(host.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).map_err(|e| {
        Error::Endpoint {
            what: "encoding metrics",
            reason: e.to_string(),
        }
    })?;
    Ok(out)
}

/// The warning to give when `/metrics` is served at `addr` beyond loopback
/// with no `metrics.token`: the exposition names every task, so whoever
/// reaches the address learns what runs here. `None` when there is no
/// reason to warn.
pub fn exposure_warning(addr: std::net::SocketAddr, token: Option<&str>) -> Option<String> {
    if addr.ip().is_loopback() || token.is_some() {
        return None;
    }
    Some(format!(
        "metrics are served on {addr}, beyond loopback, with no metrics.token: anyone who \
         reaches this address reads the task names and counters; set metrics.token"
    ))
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. With
/// `metrics.token` set, a scrape must send `authorization: Bearer TOKEN`
/// (else 401), compared in constant time.
///
/// # Errors
///
/// [`Error::InvalidRequest`] for an empty `metrics.token`;
/// [`Error::Endpoint`] when the HTTP server fails.
pub async fn serve(
    host: Host,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        if let Some(warning) = exposure_warning(addr, host.config().metrics.token.as_deref()) {
            tracing::warn!(%addr, "{warning}");
        }
    }
    let app = router(host)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::endpoint("the metrics endpoint"))
}

/// `GET /metrics`, with `metrics.token` checked, for any HTTP server of
/// the host (the metrics listener, the node's HTTP port).
///
/// # Errors
///
/// [`Error::InvalidRequest`] for an empty `metrics.token`.
pub fn router(host: Host) -> Result<axum::Router> {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let token = match host.config().metrics.token.as_deref() {
        Some(token) if token.trim().is_empty() => {
            return Err(Error::InvalidRequest {
                field: "metrics.token",
                reason: "is empty: set a token, or remove the key to serve without one".into(),
            })
        }
        Some(token) => Some(crate::auth::Tokens::of(&[token.trim()])),
        None => None,
    };
    Ok(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let host = host.clone();
            let allowed = token.as_ref().is_none_or(|token| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::auth::bearer)
                    .is_some_and(|given| token.accepts(given))
            });
            async move {
                if !allowed {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "this endpoint needs `authorization: Bearer TOKEN` (metrics.token)\n",
                    )
                        .into_response();
                }
                match render(&host) {
                    Ok(text) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    ))
}
