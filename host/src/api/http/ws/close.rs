//! How a connection ends: why, and the close frame that says so. Every
//! step of the session can end it, so the reasons and their close codes
//! are gathered here rather than spread over the steps.

use axum::extract::ws::close_code;

/// Why the connection ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Close {
    /// The client closed it, or the transport failed.
    Gone,
    /// A write did not complete in time: the peer is not reading, so no
    /// close frame is sent either.
    Stuck,
    /// This side closes it with a code and reason.
    With(u16, String),
}

pub(super) fn terminated() -> Close {
    Close::With(close_code::AWAY, "the execution was terminated".to_owned())
}

/// A receive error: an oversized message closes with 1009, anything else
/// ends the connection.
pub(super) fn closing_for(error: &axum::Error) -> Close {
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
pub(super) fn truncated(mut reason: String) -> String {
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
