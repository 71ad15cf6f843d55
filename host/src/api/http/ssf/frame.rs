//! What a frame is, as values: its type, a frame borrowed from a message
//! and one owned. Kept apart from the byte layout so that code building or
//! reading frames (the session, the tests) finds the shapes without the
//! header arithmetic around them.

use serde_json::Value as Json;

use super::{invalid, HEADER_LEN};

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MsgType {
    /// A request (a call, in a serving execution).
    Request = 1,
    /// Response data (SPEAR's console also sends its input as this).
    Data = 2,
    /// An error; meta `{"error":{"code","message","retryable"}}`.
    Error = 3,
    /// The sender gives up on the stream.
    Cancel = 4,
}

impl MsgType {
    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl TryFrom<u16> for MsgType {
    type Error = crate::Error;

    fn try_from(value: u16) -> crate::Result<Self> {
        match value {
            1 => Ok(MsgType::Request),
            2 => Ok(MsgType::Data),
            3 => Ok(MsgType::Error),
            4 => Ok(MsgType::Cancel),
            other => Err(invalid(format!(
                "unknown msg_type {other} (expected 1 request, 2 data, 3 error or 4 cancel)"
            ))),
        }
    }
}

impl From<MsgType> for u16 {
    fn from(value: MsgType) -> u16 {
        value.as_u16()
    }
}

/// A decoded frame, borrowing its meta and data from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// What the frame is.
    pub msg_type: MsgType,
    /// The flags, passed through as they are.
    pub flags: u16,
    /// The stream the frame belongs to.
    pub stream_id: u32,
    /// The sender's sequence number.
    pub seq: u64,
    /// The meta: UTF-8 (checked by [`decode`]), JSON by convention, possibly
    /// empty.
    ///
    /// [`decode`]: super::decode
    pub meta: &'a str,
    /// The data.
    pub data: &'a [u8],
}

impl FrameRef<'_> {
    /// A frame that owns copies of the meta and data.
    pub fn to_frame(&self) -> Frame {
        Frame {
            msg_type: self.msg_type,
            flags: self.flags,
            stream_id: self.stream_id,
            seq: self.seq,
            meta: self.meta.as_bytes().to_vec(),
            data: self.data.to_vec(),
        }
    }

    /// The size of the encoded frame (32-byte header).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.meta.len() + self.data.len()
    }
}

/// A frame that owns its meta and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub msg_type: MsgType,
    /// The flags.
    pub flags: u16,
    /// The stream the frame belongs to.
    pub stream_id: u32,
    /// The sender's sequence number.
    pub seq: u64,
    /// The meta: UTF-8 JSON, or empty ([`decode`] refuses other bytes).
    ///
    /// [`decode`]: super::decode
    pub meta: Vec<u8>,
    /// The data.
    pub data: Vec<u8>,
}

impl Frame {
    /// An error frame (msg_type 3) with meta
    /// `{"error":{"code":…,"message":…,"retryable":…}}` and no data: the shape
    /// SPEAR's gateway sends and its clients read.
    pub fn error(stream_id: u32, seq: u64, code: &str, message: &str, retryable: bool) -> Frame {
        let meta = serde_json::json!({
            "error": { "code": code, "message": message, "retryable": retryable }
        });
        Frame {
            msg_type: MsgType::Error,
            flags: 0,
            stream_id,
            seq,
            meta: meta.to_string().into_bytes(),
            data: Vec::new(),
        }
    }

    /// A data frame (msg_type 2) with the given meta (serialized as JSON).
    pub fn data(stream_id: u32, seq: u64, meta: &Json, data: Vec<u8>) -> Frame {
        Frame {
            msg_type: MsgType::Data,
            flags: 0,
            stream_id,
            seq,
            meta: meta.to_string().into_bytes(),
            data,
        }
    }

    /// The size of the encoded frame (32-byte header).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.meta.len() + self.data.len()
    }
}
