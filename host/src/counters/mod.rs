//! Every counter the host keeps, in one place: plain atomics written where
//! things happen, read only when someone asks (the stats RPCs, `/metrics`,
//! task reports). What a call records never takes a lock, allocates or
//! looks up a label, so the hot path can afford it (only rare events, an
//! artifact refused by kind or a drain's last wake-up, take a lock).
//!
//! - [`StatusCounts`]: execution records held by status, and executions
//!   ended by final status, per shard of the execution store;
//! - [`TaskCounters`]: a task's executions started, running and last
//!   ended, and per function its [`FunctionMetrics`];
//! - [`FunctionMetrics`]: how one function's executions ended, their
//!   latency and their memory, as histograms ([`Latency`], [`Memory`]);
//! - [`ArtifactTelemetry`]: loads, refusals and downloads of the artifact
//!   pipeline.
//!
//! The inline tier's promotions and demotions stay with the profile that
//! decides them (`crate::tier`); `Host::stats` and `crate::metrics` read
//! all of these together.

mod artifact;
mod function;
mod histogram;
mod status;
mod task;

pub use artifact::{ArtifactCounts, ArtifactTelemetry};
pub use function::{FunctionMetrics, ENDINGS, MODES};
pub use histogram::{Latency, LatencySnapshot, Memory, LATENCY_BOUNDS_NS, MEMORY_BOUNDS};
pub use status::{CountsSnapshot, StatusCounts, ThreadCounts};
pub(crate) use task::RunningGuard;
pub use task::{TaskActivity, TaskCounters};
