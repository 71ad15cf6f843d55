//! The session loop of one connection: what it waits on, in which order,
//! and what each wake-up does to the socket. Kept apart from the frame
//! and stream bookkeeping so that the order of the waits, on which
//! termination, back-pressure and the idle timeout depend, reads as one
//! piece.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::bounds::{Budget, Limits};
use super::calls::Calls;
use super::close::{closing_for, terminated, truncated, Close};
use super::streams::{Answer, StreamState};
use super::transport::Transport;

/// One connection's state.
#[derive(Debug)]
pub(in crate::api::http) struct Session<C> {
    pub(super) calls: C,
    pub(super) limits: Limits,
    /// Turns `true` when the execution ends.
    pub(super) stopped: watch::Receiver<bool>,
    /// This connection's permits ([`Limits::calls`]).
    pub(super) permits: Arc<Semaphore>,
    pub(super) budget: Budget,
    pub(super) streams: HashMap<u32, StreamState>,
    /// The calls running and the answers not yet taken from them.
    pub(super) running: JoinSet<Answer>,
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
    pub(in crate::api::http) fn new(
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
    pub(in crate::api::http) async fn run(mut self, mut socket: impl Transport) {
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
}
