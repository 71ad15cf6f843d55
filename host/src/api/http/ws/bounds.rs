//! The bounds a connection, and the stream plane across connections,
//! hold to, and the refusal a frame past them gets. Gathered here so that
//! what a client can make the node hold is read in one file, beside the
//! permits that enforce it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::calls::Calls;
use super::session::Session;
use crate::api::http::ssf::Frame;
use crate::api::http::{
    IDLE_TIMEOUT, MAX_CALLS_IN_FLIGHT, MAX_CALLS_PER_CONNECTION, MAX_STREAMS_PER_CONNECTION,
    WRITE_TIMEOUT,
};

/// The error code of a frame refused because the node's stream plane holds
/// [`MAX_CALLS_IN_FLIGHT`] calls already.
pub(in crate::api::http) const OVERLOADED: &str = "overloaded";

/// The calls the node's stream plane may hold at once, across connections.
#[derive(Debug, Clone)]
pub(in crate::api::http) struct Budget {
    pub(super) permits: Arc<Semaphore>,
    size: usize,
}

impl Budget {
    pub(in crate::api::http) fn new(size: usize) -> Self {
        Budget {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(MAX_CALLS_IN_FLIGHT)
    }
}

/// One connection's bounds (the module's constants, shorter in tests).
#[derive(Debug, Clone, Copy)]
pub(in crate::api::http) struct Limits {
    pub(in crate::api::http) calls: usize,
    pub(in crate::api::http) streams: usize,
    pub(in crate::api::http) write_timeout: Duration,
    pub(in crate::api::http) idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            calls: MAX_CALLS_PER_CONNECTION,
            streams: MAX_STREAMS_PER_CONNECTION,
            write_timeout: WRITE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

impl<C: Calls> Session<C> {
    /// The connection's permit and the plane's for one call, or the
    /// retryable refusal that answers its frame.
    pub(super) fn permits_for(
        &self,
        stream_id: u32,
        seq: u64,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Frame> {
        // Frames are read only while a permit is free, and only the
        // session takes them: this one is there.
        let Ok(connection) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(overloaded(
                stream_id,
                seq,
                format!(
                    "this connection has {} calls running already",
                    self.limits.calls
                ),
            ));
        };
        let Ok(plane) = Arc::clone(&self.budget.permits).try_acquire_owned() else {
            return Err(overloaded(
                stream_id,
                seq,
                format!(
                    "this node's stream connections have {} calls running already",
                    self.budget.size
                ),
            ));
        };
        Ok((connection, plane))
    }
}

/// A retryable refusal: the frame was not run, and may be sent again.
fn overloaded(stream_id: u32, seq: u64, message: String) -> Frame {
    Frame::error(stream_id, seq, OVERLOADED, &message, true)
}
