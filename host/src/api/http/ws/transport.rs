//! The socket under a session, as a trait: the session reads and writes
//! messages through it, so that tests can drive a session over an
//! in-memory connection whose writes they hold back.

use std::future::Future;

use axum::extract::ws::{Message, WebSocket};

/// The messages a session reads and writes: the WebSocket, or a stand-in
/// in tests.
pub(in crate::api::http) trait Transport: Send {
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
