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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use serde_json::Value as Json;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::api::node::payload::OCTETS;

    /// An upper bound on every wait: a test that reaches it has failed.
    const BOUND: Duration = Duration::from_secs(10);

    type CallFn = dyn Fn(RequestMeta, Vec<u8>) -> BoxFuture<'static, CallResult> + Send + Sync;

    /// Calls played by a closure.
    #[derive(Clone)]
    struct Fake(Arc<CallFn>);

    impl std::fmt::Debug for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Fake")
        }
    }

    impl Calls for Fake {
        fn call(
            &self,
            meta: RequestMeta,
            data: Vec<u8>,
        ) -> impl Future<Output = CallResult> + Send + 'static {
            (self.0)(meta, data)
        }
    }

    fn fake(
        call: impl Fn(RequestMeta, Vec<u8>) -> BoxFuture<'static, CallResult> + Send + Sync + 'static,
    ) -> Fake {
        Fake(Arc::new(call))
    }

    /// Calls that answer their input at once.
    fn echoing() -> Fake {
        fake(|_, data| async move { Ok((OCTETS.to_owned(), data)) }.boxed())
    }

    /// Counts the calls whose future was dropped.
    struct Ended(Arc<AtomicUsize>);

    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What calls that never end report: their input as they start, and
    /// how many of them have been dropped.
    struct Probe {
        started: mpsc::UnboundedReceiver<Vec<u8>>,
        ended: Arc<AtomicUsize>,
    }

    impl Probe {
        async fn started(&mut self) -> Vec<u8> {
            timeout(BOUND, self.started.recv())
                .await
                .expect("a call starts")
                .expect("the calls are alive")
        }

        fn ended(&self) -> usize {
            self.ended.load(Ordering::SeqCst)
        }
    }

    /// Calls that start, then wait for ever (until dropped).
    fn hanging() -> (Fake, Probe) {
        let (started_tx, started) = mpsc::unbounded_channel();
        let ended = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ended);
        let calls = fake(move |_, data| {
            let started = started_tx.clone();
            let guard = Ended(Arc::clone(&counter));
            async move {
                let _guard = guard;
                let _ = started.send(data);
                std::future::pending().await
            }
            .boxed()
        });
        (calls, Probe { started, ended })
    }

    /// The session's side of an in-memory connection. Every write is
    /// reported to the peer as it is attempted, and completes only with a
    /// permit of `gate`.
    struct FakeSocket {
        incoming: mpsc::UnboundedReceiver<Message>,
        attempts: mpsc::UnboundedSender<Message>,
        gate: Arc<Semaphore>,
        sent: Arc<AtomicUsize>,
    }

    impl Transport for FakeSocket {
        async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
            self.incoming.recv().await.map(Ok)
        }

        async fn send(&mut self, message: Message) -> Result<(), axum::Error> {
            let _ = self.attempts.send(message);
            self.gate
                .acquire()
                .await
                .map_err(axum::Error::new)?
                .forget();
            self.sent.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// The client's side.
    struct Peer {
        frames: Option<mpsc::UnboundedSender<Message>>,
        attempts: mpsc::UnboundedReceiver<Message>,
        /// Permits for the session's writes to complete.
        gate: Arc<Semaphore>,
        /// The session's writes completed.
        sent: Arc<AtomicUsize>,
    }

    impl Peer {
        fn send(&self, stream_id: u32, seq: u64, data: &[u8]) {
            let frame = Frame {
                msg_type: MsgType::Request,
                flags: 0,
                stream_id,
                seq,
                meta: b"{}".to_vec(),
                data: data.to_vec(),
            };
            let frames = self.frames.as_ref().expect("the peer is open");
            frames
                .send(Message::Binary(frame.encode().into()))
                .expect("the session reads");
        }

        /// The client goes away.
        fn close(&mut self) {
            self.frames = None;
        }

        /// The next write the session attempts.
        async fn next(&mut self) -> Message {
            timeout(BOUND, self.attempts.recv())
                .await
                .expect("the session writes")
                .expect("the session is alive")
        }

        async fn next_frame(&mut self) -> Frame {
            match self.next().await {
                Message::Binary(bytes) => ssf::decode(&bytes).unwrap().to_frame(),
                other => panic!("expected a frame, got {other:?}"),
            }
        }

        async fn next_close(&mut self) -> CloseFrame {
            match self.next().await {
                Message::Close(Some(close)) => close,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// A connection whose writes complete at once (`open`) or only with
    /// the peer's permits.
    fn connect(open: bool) -> (FakeSocket, Peer) {
        let (frames, incoming) = mpsc::unbounded_channel();
        let (attempts_tx, attempts) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(if open {
            Semaphore::MAX_PERMITS
        } else {
            0
        }));
        let sent = Arc::new(AtomicUsize::new(0));
        let socket = FakeSocket {
            incoming,
            attempts: attempts_tx,
            gate: Arc::clone(&gate),
            sent: Arc::clone(&sent),
        };
        let peer = Peer {
            frames: Some(frames),
            attempts,
            gate,
            sent,
        };
        (socket, peer)
    }

    /// Runs a session on its own task; the sender terminates the execution.
    fn start(
        calls: Fake,
        socket: FakeSocket,
        limits: Limits,
        budget: &Budget,
    ) -> (JoinHandle<()>, watch::Sender<bool>) {
        let (stop, stopped) = watch::channel(false);
        let session = Session::new(calls, stopped, limits, budget.clone());
        (tokio::spawn(session.run(socket)), stop)
    }

    async fn ended(session: JoinHandle<()>) {
        timeout(BOUND, session)
            .await
            .expect("the session ends")
            .expect("the session does not panic");
    }

    fn error_of(frame: &Frame) -> Json {
        assert_eq!(frame.msg_type, MsgType::Error, "{frame:?}");
        let meta: Json = serde_json::from_slice(&frame.meta).unwrap();
        meta["error"].clone()
    }

    #[tokio::test]
    async fn calls_are_cancelled_when_their_connection_closes() {
        let (calls, mut probe) = hanging();
        let (socket, mut peer) = connect(true);
        let budget = Budget::new(8);
        let (session, _stop) = start(calls, socket, Limits::default(), &budget);
        for seq in 0..3 {
            peer.send(1 + seq as u32, seq, b"x");
        }
        for _ in 0..3 {
            probe.started().await;
        }
        assert_eq!(budget.permits.available_permits(), 5);
        peer.close();
        // The session ends only once its calls have: the connection's
        // slot is not given back while they hold an instance.
        ended(session).await;
        assert_eq!(probe.ended(), 3, "every call ends with its connection");
        assert_eq!(budget.permits.available_permits(), 8);
    }

    #[tokio::test]
    async fn past_the_nodes_call_bound_frames_are_answered_overloaded() {
        let (calls, mut probe) = hanging();
        let budget = Budget::new(1);
        let (socket, mut a) = connect(true);
        let (first, _stop_a) = start(calls.clone(), socket, Limits::default(), &budget);
        let (socket, mut b) = connect(true);
        let (second, _stop_b) = start(calls, socket, Limits::default(), &budget);
        a.send(1, 1, b"a");
        assert_eq!(probe.started().await, b"a");
        // Another connection, well under its own bound: refused, not queued.
        b.send(1, 2, b"b");
        let refused = b.next_frame().await;
        assert_eq!((refused.stream_id, refused.seq), (1, 2));
        let error = error_of(&refused);
        assert_eq!(error["code"], OVERLOADED);
        assert_eq!(error["retryable"], true);
        assert!(
            error["message"].as_str().unwrap().contains("1 calls"),
            "{error}"
        );
        // Once the first connection (and so its call) ends, frames run again.
        a.close();
        ended(first).await;
        b.send(1, 3, b"again");
        assert_eq!(probe.started().await, b"again");
        b.close();
        ended(second).await;
        assert_eq!(probe.ended(), 2);
    }

    #[tokio::test]
    async fn an_unsent_answer_keeps_its_calls_permit() {
        const CALLS: usize = 1;
        // Writes complete only as the test lets them.
        let (socket, mut peer) = connect(false);
        let sent = Arc::clone(&peer.sent);
        let started = Arc::new(AtomicUsize::new(0));
        let over_the_bound = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&over_the_bound);
        let calls = fake(move |_, data| {
            // Answers not yet written, were this call to start now.
            let k = started.fetch_add(1, Ordering::SeqCst) + 1;
            if k > sent.load(Ordering::SeqCst) + CALLS {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            async move { Ok((OCTETS.to_owned(), data)) }.boxed()
        });
        let limits = Limits {
            calls: CALLS,
            ..Limits::default()
        };
        let (session, _stop) = start(calls, socket, limits, &Budget::default());
        for seq in 1..=4 {
            peer.send(1, seq, &[seq as u8]);
        }
        for seq in 1..=4 {
            let answer = peer.next_frame().await;
            assert_eq!((answer.msg_type, answer.seq), (MsgType::Data, seq));
            assert_eq!(answer.data, [seq as u8]);
            peer.gate.add_permits(1);
        }
        assert_eq!(
            over_the_bound.load(Ordering::SeqCst),
            0,
            "a call started while its connection's bound was taken by unsent answers"
        );
        peer.close();
        ended(session).await;
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
        // Writes never complete.
        let (socket, mut peer) = connect(false);
        let limits = Limits {
            write_timeout: Duration::from_millis(50),
            ..Limits::default()
        };
        let (session, _stop) = start(echoing(), socket, limits, &Budget::default());
        peer.send(1, 1, b"x");
        assert_eq!(peer.next_frame().await.msg_type, MsgType::Data);
        // The client is still connected, and still not reading.
        ended(session).await;
        assert!(
            peer.attempts.try_recv().is_err(),
            "no close frame is written to a peer that does not read"
        );
    }

    #[tokio::test]
    async fn termination_closes_a_session_blocked_on_a_write() {
        let (socket, mut peer) = connect(false);
        let (session, stop) = start(echoing(), socket, Limits::default(), &Budget::default());
        peer.send(1, 1, b"x");
        assert_eq!(peer.next_frame().await.msg_type, MsgType::Data);
        // The answer's write is pending (10 s write timeout) when the
        // execution ends.
        stop.send(true).unwrap();
        let close = peer.next_close().await;
        assert_eq!(close.code, close_code::AWAY);
        peer.gate.add_permits(1);
        ended(session).await;
    }

    #[tokio::test]
    async fn termination_closes_a_session_whose_reading_is_paused() {
        let (calls, mut probe) = hanging();
        let (socket, mut peer) = connect(true);
        let limits = Limits {
            calls: 1,
            ..Limits::default()
        };
        let (session, stop) = start(calls, socket, limits, &Budget::default());
        peer.send(1, 1, b"first");
        peer.send(1, 2, b"second");
        assert_eq!(probe.started().await, b"first");
        // The second frame waits for the first call's permit.
        stop.send(true).unwrap();
        let close = peer.next_close().await;
        assert_eq!(close.code, close_code::AWAY);
        assert_eq!(&*close.reason, "the execution was terminated");
        ended(session).await;
        assert_eq!(probe.ended(), 1);
        assert!(
            probe.started.try_recv().is_err(),
            "the second frame never ran"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_but_not_while_a_call_runs() {
        let release = Arc::new(Semaphore::new(0));
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let gate = Arc::clone(&release);
        let calls = fake(move |_, data| {
            let gate = Arc::clone(&gate);
            let started = started_tx.clone();
            async move {
                let _ = started.send(());
                gate.acquire().await.unwrap().forget();
                Ok((OCTETS.to_owned(), data))
            }
            .boxed()
        });
        let limits = Limits {
            idle_timeout: Duration::from_millis(50),
            ..Limits::default()
        };
        let (socket, mut peer) = connect(true);
        let (mut session, _stop) = start(calls, socket, limits, &Budget::default());
        peer.send(1, 1, b"slow");
        timeout(BOUND, started.recv()).await.unwrap().unwrap();
        // Six idle timeouts pass while the call runs: not idle.
        assert!(
            timeout(Duration::from_millis(300), &mut session)
                .await
                .is_err(),
            "a connection with a call running is not idle"
        );
        release.add_permits(1);
        let answer = peer.next_frame().await;
        assert_eq!(
            (answer.msg_type, &answer.data[..]),
            (MsgType::Data, &b"slow"[..])
        );
        // Nothing since the answer: the client is still connected, idle.
        let close = peer.next_close().await;
        assert_eq!(close.code, close_code::NORMAL);
        assert!(close.reason.contains("idle"), "{}", close.reason);
        ended(session).await;
    }

    #[tokio::test]
    async fn an_answer_over_the_frame_limit_is_output_too_large() {
        let calls =
            fake(|_, _| async { Ok((OCTETS.to_owned(), vec![0; ssf::MAX_FRAME_BYTES])) }.boxed());
        let (socket, mut peer) = connect(true);
        let (session, _stop) = start(calls, socket, Limits::default(), &Budget::default());
        peer.send(4, 2, b"");
        let answer = peer.next_frame().await;
        assert_eq!((answer.stream_id, answer.seq), (4, 2));
        let error = error_of(&answer);
        assert_eq!(error["code"], ssf::OUTPUT_TOO_LARGE);
        assert_eq!(error["retryable"], false);
        let size = ssf::HEADER_LEN
            + serde_json::json!({ "content_type": OCTETS })
                .to_string()
                .len()
            + ssf::MAX_FRAME_BYTES;
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{size} bytes")) && message.contains("4194304-byte limit"),
            "{message}"
        );
        // The connection stays up: the next answer that fits is sent.
        peer.close();
        ended(session).await;
    }
}
