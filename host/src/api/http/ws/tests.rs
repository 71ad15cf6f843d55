use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::bounds::OVERLOADED;
use super::calls::{CallResult, Calls};
use super::transport::Transport;
use super::{Budget, Limits, Session};
use crate::api::http::ssf::{self, Frame, MsgType, RequestMeta};
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
