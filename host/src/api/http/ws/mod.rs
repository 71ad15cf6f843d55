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

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures_util::FutureExt as _;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::ssf::{self, Frame, MsgType, RequestMeta};
use super::{
    IDLE_TIMEOUT, MAX_CALLS_IN_FLIGHT, MAX_CALLS_PER_CONNECTION, MAX_STREAMS_PER_CONNECTION,
    WRITE_TIMEOUT,
};
use crate::api::node::serving::{self, CallFailure};
use crate::api::node::Entry;
use crate::host::Host;

/// What a call answers: the output's content type and bytes.
type CallResult = Result<(String, Vec<u8>), CallFailure>;

/// The error code of a frame refused because the node's stream plane holds
/// [`MAX_CALLS_IN_FLIGHT`] calls already.
pub(super) const OVERLOADED: &str = "overloaded";

/// Runs one frame's call. The future owns what it needs, as it runs on a
/// task of its own; dropping it must cancel the call.
pub(super) trait Calls: Send + Sync + 'static {
    /// The call `meta` names, with `data` as its input.
    fn call(
        &self,
        meta: RequestMeta,
        data: Vec<u8>,
    ) -> impl Future<Output = CallResult> + Send + 'static;
}

/// The calls of a serving execution, run by the host.
#[derive(Debug, Clone)]
pub(super) struct Serving {
    pub(super) host: Host,
    pub(super) entry: Arc<Entry>,
}

impl Calls for Serving {
    fn call(
        &self,
        meta: RequestMeta,
        data: Vec<u8>,
    ) -> impl Future<Output = CallResult> + Send + 'static {
        let host = self.host.clone();
        let entry = Arc::clone(&self.entry);
        async move {
            let content_type = meta
                .content_type
                .as_deref()
                .unwrap_or(crate::api::node::payload::OCTETS);
            serving::call(&host, &entry, meta.function.as_deref(), content_type, data).await
        }
    }
}

/// The messages a session reads and writes: the WebSocket, or a stand-in
/// in tests.
pub(super) trait Transport: Send {
    /// The next message; `None` once the peer is gone. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Message, axum::Error>>> + Send;
    /// Writes `message`.
    fn send(&mut self, message: Message) -> impl Future<Output = Result<(), axum::Error>> + Send;
}

impl Transport for WebSocket {
    fn recv(&mut self) -> impl Future<Output = Option<Result<Message, axum::Error>>> + Send {
        WebSocket::recv(self)
    }

    fn send(&mut self, message: Message) -> impl Future<Output = Result<(), axum::Error>> + Send {
        WebSocket::send(self, message)
    }
}

/// The calls the node's stream plane may hold at once, across connections.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    permits: Arc<Semaphore>,
    size: usize,
}

impl Budget {
    pub(super) fn new(size: usize) -> Self {
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
pub(super) struct Limits {
    pub(super) calls: usize,
    pub(super) streams: usize,
    pub(super) write_timeout: Duration,
    pub(super) idle_timeout: Duration,
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

/// An answer on its way back: the stream's generation it belongs to (a
/// CANCEL starts a new one, and older answers are dropped), and the
/// permits its call took, given back once it is written or dropped.
#[derive(Debug)]
struct Answer {
    stream_id: u32,
    generation: u64,
    frame: Vec<u8>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Calls in flight on one stream, and its generation.
#[derive(Debug, Default, Clone, Copy)]
struct StreamState {
    calls: usize,
    generation: u64,
}

/// One connection's state.
#[derive(Debug)]
pub(super) struct Session<C> {
    calls: C,
    limits: Limits,
    /// Turns `true` when the execution ends.
    stopped: watch::Receiver<bool>,
    /// This connection's permits ([`Limits::calls`]).
    permits: Arc<Semaphore>,
    budget: Budget,
    streams: HashMap<u32, StreamState>,
    /// The calls running and the answers not yet taken from them.
    running: JoinSet<Answer>,
}

/// Why the connection ends.
#[derive(Debug, PartialEq, Eq)]
enum Close {
    /// The client closed it, or the transport failed.
    Gone,
    /// A write did not complete in time: the peer is not reading, so no
    /// close frame is sent either.
    Stuck,
    /// This side closes it with a code and reason.
    With(u16, String),
}

fn terminated() -> Close {
    Close::With(close_code::AWAY, "the execution was terminated".to_owned())
}

/// Whether a step counts against the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    Some,
    None,
}

/// What woke the session.
enum Event {
    Stopped,
    Answer(Answer),
    Message(Option<Result<Message, axum::Error>>),
    Idle,
}

impl<C: Calls> Session<C> {
    pub(super) fn new(
        calls: C,
        stopped: watch::Receiver<bool>,
        limits: Limits,
        budget: Budget,
    ) -> Self {
        Session {
            calls,
            limits,
            stopped,
            permits: Arc::new(Semaphore::new(limits.calls)),
            budget,
            streams: HashMap::new(),
            running: JoinSet::new(),
        }
    }

    /// Serves the connection until either side ends it, then ends its
    /// calls (awaiting them, so that the caller may give the connection's
    /// slot back) and sends the close frame, if any, within the write
    /// timeout.
    pub(super) async fn run(mut self, mut socket: impl Transport) {
        let close = self.serve(&mut socket).await;
        // Dropping each call's future cancels its execution.
        self.running.shutdown().await;
        self.streams.clear();
        if let Close::With(code, reason) = close {
            let frame = CloseFrame {
                code,
                reason: truncated(reason).into(),
            };
            let _ = timeout(
                self.limits.write_timeout,
                socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    async fn serve(&mut self, socket: &mut impl Transport) -> Close {
        if *self.stopped.borrow_and_update() {
            return terminated();
        }
        let mut active_at = Instant::now();
        loop {
            let step = match self.next_event(socket, active_at).await {
                Event::Stopped => Err(terminated()),
                Event::Idle => Err(Close::With(
                    close_code::NORMAL,
                    format!(
                        "idle for {:?} (no frame and no call)",
                        self.limits.idle_timeout
                    ),
                )),
                Event::Answer(answer) => self.answer(socket, answer).await,
                Event::Message(message) => self.message(socket, message).await,
            };
            match step {
                Ok(Activity::Some) => active_at = Instant::now(),
                Ok(Activity::None) => {}
                Err(close) => return close,
            }
        }
    }

    /// Waits for what the session acts on next: termination first, then
    /// answers, then frames (only while a permit is free: past the bound,
    /// frames wait unread), then the idle timeout (only with no call).
    async fn next_event(&mut self, socket: &mut impl Transport, active_at: Instant) -> Event {
        loop {
            // Only this loop gives permits back, so this holds until it
            // next runs.
            let reading = self.permits.available_permits() > 0;
            let idle = tokio::time::sleep_until(active_at + self.limits.idle_timeout);
            tokio::select! {
                biased;
                changed = self.stopped.changed() => {
                    if changed.is_err() || *self.stopped.borrow() {
                        return Event::Stopped;
                    }
                }
                Some(done) = self.running.join_next() => {
                    // Calls are aborted only on the way out, and their
                    // panics are caught: an error has nothing to answer.
                    if let Ok(answer) = done {
                        return Event::Answer(answer);
                    }
                }
                message = socket.recv(), if reading => return Event::Message(message),
                () = idle, if self.running.is_empty() => return Event::Idle,
            }
        }
    }

    /// Sends `answer`'s frame, unless its stream was cancelled since; its
    /// permits are given back only then, once written.
    async fn answer(
        &mut self,
        socket: &mut impl Transport,
        mut answer: Answer,
    ) -> Result<Activity, Close> {
        let Some(frame) = self.settle(&mut answer) else {
            return Ok(Activity::None);
        };
        self.write(socket, frame).await?;
        drop(answer);
        Ok(Activity::Some)
    }

    /// Handles one message from the peer.
    async fn message(
        &mut self,
        socket: &mut impl Transport,
        message: Option<Result<Message, axum::Error>>,
    ) -> Result<Activity, Close> {
        let message = match message {
            None => return Err(Close::Gone),
            Some(Err(e)) => return Err(closing_for(&e)),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => {
                if let Some(refusal) = self.frame(&bytes)? {
                    self.write(socket, refusal.encode()).await?;
                }
                Ok(Activity::Some)
            }
            Message::Text(_) => Err(Close::With(
                close_code::UNSUPPORTED,
                "SSF frames are binary messages".to_owned(),
            )),
            Message::Close(_) => Err(Close::Gone),
            // Not activity: a peer's pings alone do not keep a connection.
            Message::Ping(_) | Message::Pong(_) => Ok(Activity::None),
        }
    }

    /// Writes one frame within the write timeout, unless the execution
    /// ends first.
    async fn write(&mut self, socket: &mut impl Transport, frame: Vec<u8>) -> Result<(), Close> {
        let send = timeout(
            self.limits.write_timeout,
            socket.send(Message::Binary(frame.into())),
        );
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                changed = self.stopped.changed() => {
                    if changed.is_err() || *self.stopped.borrow() {
                        return Err(terminated());
                    }
                }
                sent = &mut send => {
                    return match sent {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(Close::Gone),
                        Err(_) => {
                            tracing::debug!(
                                timeout = ?self.limits.write_timeout,
                                "a stream connection's peer is not reading; dropping it"
                            );
                            Err(Close::Stuck)
                        }
                    };
                }
            }
        }
    }

    /// Handles one binary message: starts its call, or returns the error
    /// frame that answers it at once; `Err` closes the connection.
    fn frame(&mut self, bytes: &[u8]) -> Result<Option<Frame>, Close> {
        let frame =
            ssf::decode(bytes).map_err(|e| Close::With(close_code::POLICY, e.to_string()))?;
        let (stream_id, seq) = (frame.stream_id, frame.seq);
        match frame.msg_type {
            MsgType::Cancel => {
                // Answers still due on it are dropped when they arrive.
                if let Some(stream) = self.streams.get_mut(&stream_id) {
                    stream.generation += 1;
                }
                return Ok(None);
            }
            // The client's own error frames need no answer.
            MsgType::Error => return Ok(None),
            MsgType::Request | MsgType::Data => {}
        }
        let meta = match RequestMeta::parse(frame.meta.as_bytes()) {
            Ok(meta) => meta,
            Err(e) => {
                return Ok(Some(Frame::error(
                    stream_id,
                    seq,
                    e.kind(),
                    &e.to_string(),
                    false,
                )))
            }
        };
        if !self.streams.contains_key(&stream_id) && self.streams.len() >= self.limits.streams {
            return Ok(Some(Frame::error(
                stream_id,
                seq,
                "too_many_streams",
                &format!(
                    "this connection has calls on {} streams already",
                    self.limits.streams
                ),
                true,
            )));
        }
        match self.permits_for(stream_id, seq) {
            Ok(permits) => {
                self.spawn(stream_id, seq, meta, frame.data.to_vec(), permits);
                Ok(None)
            }
            Err(refusal) => Ok(Some(refusal)),
        }
    }

    /// The connection's permit and the plane's for one call, or the
    /// retryable refusal that answers its frame.
    fn permits_for(
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

    /// Starts one frame's call on the session's [`JoinSet`].
    fn spawn(
        &mut self,
        stream_id: u32,
        seq: u64,
        meta: RequestMeta,
        data: Vec<u8>,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        let stream = self.streams.entry(stream_id).or_default();
        stream.calls += 1;
        let generation = stream.generation;
        let call = self.calls.call(meta, data);
        self.running.spawn(async move {
            let result = AssertUnwindSafe(call)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(CallFailure {
                        code: "internal".to_owned(),
                        message: "the call panicked".to_owned(),
                        retryable: false,
                    })
                });
            Answer {
                stream_id,
                generation,
                frame: answer_frame(stream_id, seq, result),
                _permits: permits,
            }
        });
    }

    /// The frame to send for `answer`, unless its stream was cancelled
    /// since; forgets streams with nothing left in flight.
    fn settle(&mut self, answer: &mut Answer) -> Option<Vec<u8>> {
        let stream = self.streams.get_mut(&answer.stream_id)?;
        stream.calls -= 1;
        let current = stream.generation == answer.generation;
        if stream.calls == 0 {
            self.streams.remove(&answer.stream_id);
        }
        current.then(|| std::mem::take(&mut answer.frame))
    }
}

/// A retryable refusal: the frame was not run, and may be sent again.
fn overloaded(stream_id: u32, seq: u64, message: String) -> Frame {
    Frame::error(stream_id, seq, OVERLOADED, &message, true)
}

/// The encoded answer to a call: its output, or its error; in place of
/// one over [`ssf::MAX_FRAME_BYTES`], an error frame
/// [`ssf::OUTPUT_TOO_LARGE`] naming the size and the limit.
fn answer_frame(stream_id: u32, seq: u64, result: CallResult) -> Vec<u8> {
    let frame = match result {
        Ok((content_type, data)) => Frame::data(
            stream_id,
            seq,
            &serde_json::json!({ "content_type": content_type }),
            data,
        ),
        Err(failure) => Frame::error(
            stream_id,
            seq,
            &failure.code,
            &failure.message,
            failure.retryable,
        ),
    };
    match frame.try_encode(ssf::MAX_FRAME_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => {
            let message = match e {
                ssf::EncodeError::OverLimit { size, limit } => format!(
                    "the answer is {size} bytes, over the {limit}-byte limit of a stream frame"
                ),
                e @ ssf::EncodeError::Unrepresentable { .. } => e.to_string(),
            };
            Frame::error(stream_id, seq, ssf::OUTPUT_TOO_LARGE, &message, false).encode()
        }
    }
}

/// A receive error: an oversized message closes with 1009, anything else
/// ends the connection.
fn closing_for(error: &axum::Error) -> Close {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(capacity)) =
            e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return Close::With(close_code::SIZE, capacity.to_string());
        }
        source = e.source();
    }
    Close::Gone
}

/// A close reason fits in a control frame (123 bytes).
fn truncated(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut at = 120;
        while !reason.is_char_boundary(at) {
            at -= 1;
        }
        reason.truncate(at);
        reason.push_str("...");
    }
    reason
}

#[cfg(test)]
mod tests;
