//! `[sms]`: joining a SPEAR cluster is optional and only the cluster code
//! reads these settings, so they live apart from the node's own.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Joining a SPEAR cluster: with `grpc` set, spearlet registers itself as a
/// node of the SMS (SPEAR's metadata server), registers the tasks it
/// creates there, and looks up there the task ids it does not know. See
/// `docs/cluster.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// The SMS's gRPC address, `http://HOST:PORT`. Default: none (no cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Url>,
    /// The SMS's HTTP address, for its file API: `smsfile://ID` artifacts are
    /// fetched there and local artifacts of registered tasks are published
    /// there. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Url>,
    /// How often the node's heartbeat is sent. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// `HOST:PORT` other nodes and clients reach this spearlet at.
    /// Default: the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Time allowed for one call to the SMS. Default: 5 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a task id the SMS does not know is remembered as unknown:
    /// calls naming it within that time are answered NOT_FOUND without
    /// asking the SMS again. `0` turns the cache off. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub unknown_task_ttl: Duration,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            grpc: None,
            http: None,
            heartbeat_interval: Duration::from_secs(10),
            advertise: None,
            request_timeout: Duration::from_secs(5),
            unknown_task_ttl: Duration::from_secs(10),
        }
    }
}
