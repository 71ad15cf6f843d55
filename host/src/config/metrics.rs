//! `[metrics]`: the Prometheus endpoint is a second listener that exposes
//! task names, so its address and token stand apart from the gRPC server's.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The Prometheus / OpenMetrics endpoint (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on. Default: none (not served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Tasks that get a `task` label of their own (the oldest); the rest
    /// are added up under `task="_other"`. Default: 1000.
    pub max_task_labels: usize,
    /// A bearer token scrapers must send (`authorization: Bearer TOKEN`).
    /// Without one, anyone who reaches `listen` reads the task names; the
    /// server warns at start when `listen` is not a loopback address.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            max_task_labels: 1000,
            token: None,
        }
    }
}
