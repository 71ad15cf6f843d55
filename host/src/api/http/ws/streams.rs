//! What the session does with each frame it reads, and the streams it
//! keeps for them: a request starts a call on its stream, a CANCEL starts
//! the stream's next generation, and an answer is sent only if its
//! generation is still current. Kept apart from the session loop, which
//! only decides when a frame is read and when an answer is written.

use std::panic::AssertUnwindSafe;

use axum::extract::ws::close_code;
use futures_util::FutureExt as _;
use tokio::sync::OwnedSemaphorePermit;

use super::calls::{answer_frame, Calls};
use super::close::Close;
use super::session::Session;
use crate::api::http::ssf::{self, Frame, MsgType, RequestMeta};
use crate::api::node::serving::CallFailure;

/// An answer on its way back: the stream's generation it belongs to (a
/// CANCEL starts a new one, and older answers are dropped), and the
/// permits its call took, given back once it is written or dropped.
#[derive(Debug)]
pub(super) struct Answer {
    stream_id: u32,
    generation: u64,
    frame: Vec<u8>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Calls in flight on one stream, and its generation.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StreamState {
    calls: usize,
    generation: u64,
}

impl<C: Calls> Session<C> {
    /// Handles one binary message: starts its call, or returns the error
    /// frame that answers it at once; `Err` closes the connection.
    pub(super) fn frame(&mut self, bytes: &[u8]) -> Result<Option<Frame>, Close> {
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

    /// Starts one frame's call on the session's [`JoinSet`].
    ///
    /// [`JoinSet`]: tokio::task::JoinSet
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
    pub(super) fn settle(&mut self, answer: &mut Answer) -> Option<Vec<u8>> {
        let stream = self.streams.get_mut(&answer.stream_id)?;
        stream.calls -= 1;
        let current = stream.generation == answer.generation;
        if stream.calls == 0 {
            self.streams.remove(&answer.stream_id);
        }
        current.then(|| std::mem::take(&mut answer.frame))
    }
}
