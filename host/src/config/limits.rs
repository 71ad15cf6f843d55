//! `[limits]`: every size a client controls in one request, kept in one
//! place so that each is visibly capped and none is forgotten.

use serde::{Deserialize, Serialize};

/// Bounds on what one request may carry. A request past one is refused
/// (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for message size) with the
/// limit's key in the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Task name, bytes. Default: 256.
    pub max_name_bytes: usize,
    /// Task description, bytes. Default: 4096.
    pub max_description_bytes: usize,
    /// Task, execution and artifact ids, bytes. Default: 128.
    pub max_id_bytes: usize,
    /// Function name and parameter names, bytes. Default: 256.
    pub max_function_name_bytes: usize,
    /// Parameters per call. Default: 256.
    pub max_parameters: usize,
    /// All parameter values of a call together, bytes. Default: 4 MiB.
    pub max_parameter_bytes: usize,
    /// Invocation metadata and artifact metadata entries, each. Default: 64.
    pub max_metadata_entries: usize,
    /// Environment variables and headers of a call, each. Default: 256.
    pub max_environment_entries: usize,
    /// A gRPC message, decoded or encoded, bytes. Default: 16 MiB.
    pub max_message_bytes: usize,
    /// Concurrent streams (calls) per HTTP/2 connection. Default: 1024.
    pub max_concurrent_streams: u32,
    /// Retries one call may ask for (`context.max_retries`). Default: 10.
    pub max_retries: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_name_bytes: 256,
            max_description_bytes: 4096,
            max_id_bytes: 128,
            max_function_name_bytes: 256,
            max_parameters: 256,
            max_parameter_bytes: 4 * 1024 * 1024,
            max_metadata_entries: 64,
            max_environment_entries: 256,
            max_message_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 1024,
            max_retries: 10,
        }
    }
}
