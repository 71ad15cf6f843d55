//! What a frame runs and what it answers: the call behind a request frame,
//! and the frame its result becomes. Kept apart from the session so that
//! the session can be driven by stand-in calls in tests, and so that the
//! answer's encoding (and its size limit) is read in one place.

use std::future::Future;
use std::sync::Arc;

use crate::api::http::ssf::{self, Frame, RequestMeta};
use crate::api::node::serving::{self, CallFailure};
use crate::api::node::Entry;
use crate::host::Host;

/// What a call answers: the output's content type and bytes.
pub(super) type CallResult = Result<(String, Vec<u8>), CallFailure>;

/// Runs one frame's call. The future owns what it needs, as it runs on a
/// task of its own; dropping it must cancel the call.
pub(in crate::api::http) trait Calls: Send + Sync + 'static {
    /// The call `meta` names, with `data` as its input.
    fn call(
        &self,
        meta: RequestMeta,
        data: Vec<u8>,
    ) -> impl Future<Output = CallResult> + Send + 'static;
}

/// The calls of a serving execution, run by the host.
#[derive(Debug, Clone)]
pub(in crate::api::http) struct Serving {
    pub(in crate::api::http) host: Host,
    pub(in crate::api::http) entry: Arc<Entry>,
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

/// The encoded answer to a call: its output, or its error; in place of
/// one over [`ssf::MAX_FRAME_BYTES`], an error frame
/// [`ssf::OUTPUT_TOO_LARGE`] naming the size and the limit.
pub(super) fn answer_frame(stream_id: u32, seq: u64, result: CallResult) -> Vec<u8> {
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
