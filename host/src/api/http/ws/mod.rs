//! One WebSocket connection to a serving execution: SSF frames in, each
//! request frame a call run beside the others, its answer sent back on
//! the frame's stream (same `seq`) as it finishes.
//!
//! Bounded like every input, so that a client can hold neither memory nor
//! calls nor a connection slot past these bounds:
//!
//! - Frames over [`ssf::MAX_FRAME_BYTES`] (4 MiB) close the connection
//!   (1009), undecodable ones too (1008, as SPEAR's gateway does), text
//!   messages with 1003.
//! - A call and its answer hold one of the connection's
//!   [`MAX_CALLS_PER_CONNECTION`] (64) permits from the frame's arrival
//!   until the answer is written to the socket (or dropped by a CANCEL):
//!   calls running and answers not yet sent are 64 at most together, and
//!   while all 64 are taken the connection's frames wait to be read. At
//!   most [`MAX_STREAMS_PER_CONNECTION`] (1024) streams have calls at once;
//!   a frame on one more is answered `too_many_streams` (retryable).
//! - Across connections, at most [`MAX_CALLS_IN_FLIGHT`] (1024) calls and
//!   unsent answers are held at once: past it a frame is answered at once
//!   with an error frame `overloaded` (retryable) rather than queued, so
//!   the plane holds at most 1024 request frames (4 MiB each at most) and
//!   as many answers.
//! - An answer whose frame would be over 4 MiB is sent as an error frame
//!   `output_too_large` naming its size and the limit instead (SPEAR's
//!   gateway would close its connection, shared by all its clients, with
//!   1009).
//! - A write that has not completed within [`WRITE_TIMEOUT`] (10 s) ends
//!   the connection without a close frame: a peer that sends but never
//!   reads cannot pin it.
//! - A connection with no frame received, no call running and no answer
//!   sent for [`IDLE_TIMEOUT`] (5 minutes) is closed (1000), so idle
//!   connections give their slot of [`super::MAX_CONNECTIONS`] back.
//! - Terminating the execution closes the connection (1001) whatever the
//!   session is waiting on: a read, a write, or a free permit.
//!
//! When the connection ends, for whatever reason, its calls end with it:
//! they run in one [`JoinSet`], aborted and awaited before the connection's
//! slot is given back. Dropping a call's `Host::invoke` future cancels its
//! execution (CANCELLED, and the plugin is asked to stop), so nothing a
//! closed connection started keeps an instance or memory.
//!
//! A CANCEL frame drops the answers still due on its stream.
//!
//! The steps live in files of their own: [`session`] is the loop that
//! waits and writes, [`streams`] what each frame does and the streams it
//! keeps, [`bounds`] the permits and refusals, [`calls`] what a frame
//! runs and the answer it becomes, [`close`] how the connection ends, and
//! [`transport`] the socket under it all.
//!
//! [`ssf::MAX_FRAME_BYTES`]: super::ssf::MAX_FRAME_BYTES
//! [`MAX_CALLS_PER_CONNECTION`]: super::MAX_CALLS_PER_CONNECTION
//! [`MAX_STREAMS_PER_CONNECTION`]: super::MAX_STREAMS_PER_CONNECTION
//! [`MAX_CALLS_IN_FLIGHT`]: super::MAX_CALLS_IN_FLIGHT
//! [`WRITE_TIMEOUT`]: super::WRITE_TIMEOUT
//! [`IDLE_TIMEOUT`]: super::IDLE_TIMEOUT
//! [`JoinSet`]: tokio::task::JoinSet

mod bounds;
mod calls;
mod close;
mod session;
mod streams;
mod transport;

pub(super) use bounds::{Budget, Limits};
pub(super) use calls::Serving;
pub(super) use session::Session;

#[cfg(test)]
mod tests;
