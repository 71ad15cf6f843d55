//! SSF v1, SPEAR's stream frame format, as SPEAR's gateway sends it on the
//! node's WebSocket (`docs/cluster.md`, the node's HTTP port).
//!
//! SPEAR's endpoint gateway and console open one WebSocket per execution on
//! the node's HTTP port and exchange frames on it. Each binary WebSocket
//! message is exactly one frame: a little-endian 32-byte header, then the
//! meta (UTF-8 JSON, possibly empty), then the data (opaque bytes).
//!
//! | offset | size | field        |                                         |
//! |-------:|-----:|--------------|-----------------------------------------|
//! |      0 |    4 | magic        | `SPST`                                  |
//! |      4 |    2 | version      | 1                                       |
//! |      6 |    2 | header_len   | ≥ 32; bytes beyond 32 are skipped       |
//! |      8 |    2 | msg_type     | 1 request, 2 data, 3 error, 4 cancel    |
//! |     10 |    2 | flags        |                                         |
//! |     12 |    4 | stream_id    |                                         |
//! |     16 |    8 | seq          |                                         |
//! |     24 |    4 | meta_len     |                                         |
//! |     28 |    4 | data_len     |                                         |
//!
//! `header_len + meta_len + data_len` must equal the message size exactly.
//! SPEAR's gateway closes a connection whose frame is over 4 MiB (close code
//! 1009) and one whose frame is malformed (1008); a session that wants to
//! tell the two apart checks `message.len() > MAX_FRAME_BYTES` before
//! [`decode`].
//!
//! [`decode`] borrows the meta and data from the message ([`FrameRef`]);
//! [`Frame`] owns them, for frames built here and sent back.
//!
//! Encoding never panics. The header's lengths are 32-bit, so a meta or
//! data of 4 GiB or more cannot be described: [`Frame::try_encode`] says
//! so ([`EncodeError`]), and [`Frame::encode`] writes an error frame with
//! code [`OUTPUT_TOO_LARGE`] on the same stream and `seq` in its place. A
//! sender that must stay under the peer's limit — the node's answers, as
//! SPEAR's gateway closes its shared connection (1009) over
//! [`MAX_FRAME_BYTES`] — encodes with [`Frame::try_encode`] and that limit.

use serde_json::Value as Json;

use crate::error::Error;

/// The size of the header this module writes (and the least a frame may
/// declare).
pub const HEADER_LEN: usize = 32;

/// The largest frame (header, meta and data) accepted: SPEAR's gateway
/// closes the connection with 1009 over this.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The magic that opens every frame.
pub const MAGIC: [u8; 4] = *b"SPST";

/// The only version of the format there is.
pub const VERSION: u16 = 1;

/// The error code of a frame sent in place of one too large to send.
pub const OUTPUT_TOO_LARGE: &str = "output_too_large";

/// The largest meta or data a header can describe (its lengths are `u32`).
pub const MAX_PART_BYTES: usize = u32::MAX as usize;

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame would be over the limit the sender asked for.
    #[error("the frame is {size} bytes, over the {limit}-byte frame limit")]
    OverLimit {
        /// The size of the encoded frame (header, meta and data).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The meta or the data is longer than the header's 32-bit length
    /// can say.
    #[error("the frame's {part} is {len} bytes, over the {MAX_PART_BYTES} bytes an SSF header can describe")]
    Unrepresentable {
        /// `"meta"` or `"data"`.
        part: &'static str,
        /// Its length.
        len: usize,
    },
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidFrame {
        reason: reason.into(),
    }
}

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

    /// Appends the encoded frame (32-byte header) to `out`; a frame whose
    /// meta or data is 4 GiB or more is replaced by an error frame (code
    /// [`OUTPUT_TOO_LARGE`]) on the same stream and `seq`, as
    /// [`Frame::encode`] does.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_or_refuse(
            out,
            Parts {
                msg_type: self.msg_type,
                flags: self.flags,
                stream_id: self.stream_id,
                seq: self.seq,
                meta: self.meta.as_bytes(),
                data: self.data,
            },
        );
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

    /// Appends the encoded frame (32-byte header) to `out`; a frame whose
    /// meta or data is 4 GiB or more is replaced by an error frame, as
    /// [`Frame::encode`] says.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_or_refuse(out, self.parts());
    }

    /// The encoded frame (32-byte header).
    ///
    /// Never panics: a frame whose meta or data is 4 GiB or more (which
    /// the header's 32-bit lengths cannot describe) is replaced by an
    /// error frame with code [`OUTPUT_TOO_LARGE`] on the same stream and
    /// `seq`, so the peer learns what became of it. [`Frame::try_encode`]
    /// refuses instead.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// The encoded frame (32-byte header), if it is at most `limit` bytes
    /// ([`MAX_FRAME_BYTES`] for what SPEAR's gateway accepts) and the header
    /// can describe it.
    ///
    /// # Errors
    ///
    /// [`EncodeError::OverLimit`] over `limit`;
    /// [`EncodeError::Unrepresentable`] for a meta or data of 4 GiB or more.
    pub fn try_encode(&self, limit: usize) -> Result<Vec<u8>, EncodeError> {
        let size = self.encoded_len();
        if size > limit {
            return Err(EncodeError::OverLimit { size, limit });
        }
        let mut out = Vec::with_capacity(size);
        write_frame(&mut out, self.parts())?;
        Ok(out)
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            msg_type: self.msg_type,
            flags: self.flags,
            stream_id: self.stream_id,
            seq: self.seq,
            meta: &self.meta,
            data: &self.data,
        }
    }
}

/// A frame's fields, borrowed, for [`write_frame`].
#[derive(Debug, Clone, Copy)]
struct Parts<'a> {
    msg_type: MsgType,
    flags: u16,
    stream_id: u32,
    seq: u64,
    meta: &'a [u8],
    data: &'a [u8],
}

/// The header's `meta_len` and `data_len`, if they fit its 32-bit fields.
fn part_lengths(meta: usize, data: usize) -> Result<(u32, u32), EncodeError> {
    let fit = |part, len: usize| {
        u32::try_from(len).map_err(|_| EncodeError::Unrepresentable { part, len })
    };
    Ok((fit("meta", meta)?, fit("data", data)?))
}

/// Appends the frame to `out`; `out` is untouched on error.
fn write_frame(out: &mut Vec<u8>, frame: Parts<'_>) -> Result<(), EncodeError> {
    let (meta_len, data_len) = part_lengths(frame.meta.len(), frame.data.len())?;
    out.reserve(HEADER_LEN + frame.meta.len() + frame.data.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&frame.msg_type.as_u16().to_le_bytes());
    out.extend_from_slice(&frame.flags.to_le_bytes());
    out.extend_from_slice(&frame.stream_id.to_le_bytes());
    out.extend_from_slice(&frame.seq.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(frame.meta);
    out.extend_from_slice(frame.data);
    Ok(())
}

/// Appends the frame to `out`, or, if the header cannot describe it, the
/// error frame ([`OUTPUT_TOO_LARGE`]) that takes its place.
fn write_or_refuse(out: &mut Vec<u8>, frame: Parts<'_>) {
    if let Err(e) = write_frame(out, frame) {
        let refusal = Frame::error(
            frame.stream_id,
            frame.seq,
            OUTPUT_TOO_LARGE,
            &e.to_string(),
            false,
        );
        // A short meta and no data: its lengths always fit, so this
        // cannot fail.
        let _ = write_frame(out, refusal.parts());
    }
}

/// Encodes `frame` with a 32-byte header; never panics (see
/// [`Frame::encode`]).
pub fn encode(frame: &Frame) -> Vec<u8> {
    // `write_frame` reserves the room once the header can describe it.
    let mut out = Vec::new();
    frame.encode_into(&mut out);
    out
}

/// Appends `frame`, encoded with a 32-byte header, to `out`; never panics
/// (see [`Frame::encode`]).
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) {
    frame.encode_into(out);
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Decodes one WebSocket message as one frame, borrowing its meta and data.
///
/// # Errors
///
/// [`Error::InvalidFrame`], whose reason says what is wrong: the message is
/// over [`MAX_FRAME_BYTES`] or shorter than the 32-byte header; the magic is
/// not `SPST`; the version is not 1; header_len is under 32; msg_type is not
/// 1–4; header_len + meta_len + data_len is not the message size; the meta is
/// not UTF-8.
pub fn decode(message: &[u8]) -> crate::Result<FrameRef<'_>> {
    if message.len() > MAX_FRAME_BYTES {
        return Err(invalid(format!(
            "frame of {} bytes is over the {MAX_FRAME_BYTES}-byte limit",
            message.len()
        )));
    }
    if message.len() < HEADER_LEN {
        return Err(invalid(format!(
            "frame of {} bytes is too short for the {HEADER_LEN}-byte header",
            message.len()
        )));
    }
    if message[0..4] != MAGIC {
        return Err(invalid(format!(
            "bad magic {} (expected \"SPST\")",
            message[0..4].escape_ascii()
        )));
    }
    let version = u16_at(message, 4);
    if version != VERSION {
        return Err(invalid(format!(
            "unsupported version {version} (expected {VERSION})"
        )));
    }
    let header_len = u16_at(message, 6);
    if usize::from(header_len) < HEADER_LEN {
        return Err(invalid(format!(
            "header_len {header_len} is under {HEADER_LEN}"
        )));
    }
    let msg_type = MsgType::try_from(u16_at(message, 8))?;
    let flags = u16_at(message, 10);
    let stream_id = u32_at(message, 12);
    let seq = u64_at(message, 16);
    let meta_len = u32_at(message, 24);
    let data_len = u32_at(message, 28);
    let declared = u64::from(header_len) + u64::from(meta_len) + u64::from(data_len);
    if declared != message.len() as u64 {
        return Err(invalid(format!(
            "header_len {header_len} + meta_len {meta_len} + data_len {data_len} = {declared}, \
             but the frame is {} bytes",
            message.len()
        )));
    }
    // The sum fits the message, so each part does, and all fit in usize.
    let meta_start = usize::from(header_len);
    let data_start = meta_start + meta_len as usize;
    let meta = std::str::from_utf8(&message[meta_start..data_start]).map_err(|e| {
        invalid(format!(
            "meta is not UTF-8 (invalid byte at meta offset {})",
            e.valid_up_to()
        ))
    })?;
    Ok(FrameRef {
        msg_type,
        flags,
        stream_id,
        seq,
        meta,
        data: &message[data_start..],
    })
}

/// What a request frame's meta says about the call (our convention for a
/// serving execution: each request frame is one call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// `function`: the function to call; `None` (absent, null or "") means
    /// the task's default function.
    pub function: Option<String>,
    /// `content_type`: what the data is; `None` if absent, null or "".
    pub content_type: Option<String>,
}

impl RequestMeta {
    /// Parses a frame's meta. Empty (or blank) meta and `{}` give both
    /// fields `None`; keys other than `function` and `content_type` are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFrame`] if the meta is not UTF-8 JSON, is JSON but not
    /// an object, or has a `function` / `content_type` that is neither a
    /// string nor null.
    pub fn parse(meta: &[u8]) -> crate::Result<RequestMeta> {
        if meta.iter().all(u8::is_ascii_whitespace) {
            return Ok(RequestMeta::default());
        }
        let value: Json = serde_json::from_slice(meta)
            .map_err(|e| invalid(format!("meta is not valid JSON: {e}")))?;
        let Json::Object(map) = value else {
            return Err(invalid(format!(
                "meta must be a JSON object, not {}",
                json_kind(&value)
            )));
        };
        let field = |key: &str| -> crate::Result<Option<String>> {
            match map.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) if s.is_empty() => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(format!(
                    "meta `{key}` must be a string, not {}",
                    json_kind(other)
                ))),
            }
        };
        Ok(RequestMeta {
            function: field("function")?,
            content_type: field("content_type")?,
        })
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
