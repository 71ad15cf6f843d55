//! One WebSocket connection to a serving execution: SSF frames in, each
//! request frame a call run beside the others, its answer sent back on
//! the frame's stream (same `seq`) as it finishes.
//!
//! Bounded like every input: frames over [`ssf::MAX_FRAME_BYTES`] close
//! the connection (1009), undecodable ones too (1008, as SPEAR's gateway
//! does), at most [`MAX_CALLS_PER_CONNECTION`] calls run at once (then
//! reading pauses) on at most [`MAX_STREAMS_PER_CONNECTION`] streams. A
//! CANCEL frame drops the answers still due on its stream. Terminating the
//! execution closes the connection (1001).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::ssf::{self, Frame, MsgType, RequestMeta};
use super::{MAX_CALLS_PER_CONNECTION, MAX_STREAMS_PER_CONNECTION};
use crate::api::node::serving;
use crate::api::node::Entry;
use crate::host::Host;

/// An answer on its way back: the stream's generation it belongs to (a
/// CANCEL starts a new one, and older answers are dropped).
#[derive(Debug)]
struct Answer {
    stream_id: u32,
    generation: u64,
    frame: Vec<u8>,
}

/// Calls in flight on one stream, and its generation.
#[derive(Debug, Default, Clone, Copy)]
struct StreamState {
    calls: usize,
    generation: u64,
}

/// One connection's state.
#[derive(Debug)]
pub(super) struct Session {
    host: Host,
    entry: Arc<Entry>,
    calls: Arc<Semaphore>,
    streams: HashMap<u32, StreamState>,
}

/// Why the connection ends.
#[derive(Debug)]
enum Close {
    /// The client closed it, or the transport failed.
    Gone,
    /// This side closes it with a code and reason.
    With(u16, String),
}

impl Session {
    pub(super) fn new(host: Host, entry: Arc<Entry>) -> Self {
        Session {
            host,
            entry,
            calls: Arc::new(Semaphore::new(MAX_CALLS_PER_CONNECTION)),
            streams: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut socket: WebSocket) {
        let Some(mut stopped) = self.entry.stopped() else {
            return;
        };
        let (answers_tx, mut answers) = mpsc::channel::<Answer>(MAX_CALLS_PER_CONNECTION);
        let close = loop {
            tokio::select! {
                changed = stopped.changed() => {
                    if changed.is_err() || *stopped.borrow() {
                        break Close::With(close_code::AWAY, "the execution was terminated".to_owned());
                    }
                }
                Some(answer) = answers.recv() => {
                    if let Some(frame) = self.settle(answer) {
                        if socket.send(Message::Binary(frame.into())).await.is_err() {
                            break Close::Gone;
                        }
                    }
                }
                message = socket.recv() => {
                    let message = match message {
                        None => break Close::Gone,
                        Some(Err(e)) => break closing_for(&e),
                        Some(Ok(message)) => message,
                    };
                    match message {
                        Message::Binary(bytes) => match self.frame(&bytes, &answers_tx).await {
                            Err(close) => break close,
                            Ok(Some(refusal)) => {
                                if socket.send(Message::Binary(refusal.encode().into())).await.is_err() {
                                    break Close::Gone;
                                }
                            }
                            Ok(None) => {}
                        },
                        Message::Text(_) => {
                            break Close::With(
                                close_code::UNSUPPORTED,
                                "SSF frames are binary messages".to_owned(),
                            )
                        }
                        Message::Close(_) => break Close::Gone,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        };
        if let Close::With(code, reason) = close {
            let frame = CloseFrame {
                code,
                reason: truncated(reason).into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
    }

    /// Handles one binary message: starts its call, or returns the error
    /// frame that answers it at once; `Err` closes the connection.
    async fn frame(
        &mut self,
        bytes: &[u8],
        answers: &mpsc::Sender<Answer>,
    ) -> Result<Option<Frame>, Close> {
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
        if !self.streams.contains_key(&stream_id)
            && self.streams.len() >= MAX_STREAMS_PER_CONNECTION
        {
            return Ok(Some(Frame::error(
                stream_id,
                seq,
                "too_many_streams",
                &format!(
                    "this connection has calls on {MAX_STREAMS_PER_CONNECTION} streams already"
                ),
                true,
            )));
        }
        // Backpressure: past the bound, reading waits for a call to end.
        let permit = Arc::clone(&self.calls)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = self.streams.entry(stream_id).or_default();
        stream.calls += 1;
        let generation = stream.generation;
        let call = PendingCall {
            host: self.host.clone(),
            entry: Arc::clone(&self.entry),
            meta,
            data: frame.data.to_vec(),
            stream_id,
            seq,
            generation,
        };
        tokio::spawn(call.run(answers.clone(), permit));
        Ok(None)
    }

    /// The frame to send for `answer`, unless its stream was cancelled
    /// since; forgets streams with nothing left in flight.
    fn settle(&mut self, answer: Answer) -> Option<Vec<u8>> {
        let stream = self.streams.get_mut(&answer.stream_id)?;
        stream.calls -= 1;
        let current = stream.generation == answer.generation;
        if stream.calls == 0 {
            self.streams.remove(&answer.stream_id);
        }
        current.then_some(answer.frame)
    }
}

/// One frame's call, run on its own task.
#[derive(Debug)]
struct PendingCall {
    host: Host,
    entry: Arc<Entry>,
    meta: RequestMeta,
    data: Vec<u8>,
    stream_id: u32,
    seq: u64,
    generation: u64,
}

impl PendingCall {
    async fn run(self, answers: mpsc::Sender<Answer>, permit: OwnedSemaphorePermit) {
        let content_type = self
            .meta
            .content_type
            .as_deref()
            .unwrap_or(crate::api::node::payload::OCTETS);
        let result = serving::call(
            &self.host,
            &self.entry,
            self.meta.function.as_deref(),
            content_type,
            self.data,
        )
        .await;
        let frame = match result {
            Ok((content_type, data)) => Frame::data(
                self.stream_id,
                self.seq,
                &serde_json::json!({ "content_type": content_type }),
                data,
            ),
            Err(failure) => Frame::error(
                self.stream_id,
                self.seq,
                &failure.code,
                &failure.message,
                failure.retryable,
            ),
        };
        drop(permit);
        // The connection may be gone: nothing waits for the answer then.
        let _ = answers
            .send(Answer {
                stream_id: self.stream_id,
                generation: self.generation,
                frame: frame.encode(),
            })
            .await;
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
