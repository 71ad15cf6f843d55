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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason(result: crate::Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidFrame { reason }) => reason,
            other => panic!("expected InvalidFrame, got {other:?}"),
        }
    }

    fn sample() -> Frame {
        Frame {
            msg_type: MsgType::Request,
            flags: 0x0102,
            stream_id: 7,
            seq: 0x0102_0304_0506_0708,
            meta: br#"{"function":"add"}"#.to_vec(),
            data: b"hello".to_vec(),
        }
    }

    /// Re-encodes `frame` with a `header_len` of `header_len`, the extra
    /// header bytes filled with `fill`.
    fn with_header_len(frame: &Frame, header_len: u16, fill: u8) -> Vec<u8> {
        let encoded = encode(frame);
        let mut out = encoded[..HEADER_LEN].to_vec();
        out[6..8].copy_from_slice(&header_len.to_le_bytes());
        out.resize(usize::from(header_len), fill);
        out.extend_from_slice(&encoded[HEADER_LEN..]);
        out
    }

    #[test]
    fn encodes_the_documented_layout() {
        let bytes = encode(&sample());
        assert_eq!(bytes.len(), 32 + 18 + 5);
        assert_eq!(&bytes[0..4], b"SPST");
        assert_eq!(bytes[4..6], [1, 0]);
        assert_eq!(bytes[6..8], [32, 0]);
        assert_eq!(bytes[8..10], [1, 0]);
        assert_eq!(bytes[10..12], [2, 1]);
        assert_eq!(bytes[12..16], [7, 0, 0, 0]);
        assert_eq!(bytes[16..24], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[24..28], [18, 0, 0, 0]);
        assert_eq!(bytes[28..32], [5, 0, 0, 0]);
        assert_eq!(&bytes[32..50], br#"{"function":"add"}"#);
        assert_eq!(&bytes[50..], b"hello");
    }

    #[test]
    fn decodes_what_it_encodes() {
        let frame = sample();
        let bytes = encode(&frame);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.meta, r#"{"function":"add"}"#);
        assert_eq!(decoded.data, b"hello");
        assert_eq!(decoded.to_frame(), frame);
        let mut again = Vec::new();
        decoded.encode_into(&mut again);
        assert_eq!(again, bytes);
        assert_eq!(decoded.encoded_len(), bytes.len());
        assert_eq!(frame.encode(), bytes);
    }

    #[test]
    fn decodes_an_empty_frame() {
        let frame = Frame {
            msg_type: MsgType::Cancel,
            flags: 0,
            stream_id: 1,
            seq: 0,
            meta: Vec::new(),
            data: Vec::new(),
        };
        let bytes = encode(&frame);
        assert_eq!(bytes.len(), HEADER_LEN);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.meta, "");
        assert!(decoded.data.is_empty());
        assert_eq!(decoded.to_frame(), frame);
    }

    #[test]
    fn encode_into_appends() {
        let mut out = b"prefix".to_vec();
        encode_into(&sample(), &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(decode(&out[6..]).unwrap().to_frame(), sample());
    }

    #[test]
    fn skips_header_bytes_beyond_32() {
        let bytes = with_header_len(&sample(), 40, 0xAB);
        assert_eq!(decode(&bytes).unwrap().to_frame(), sample());
    }

    #[test]
    fn rejects_a_short_message() {
        for len in [0, 1, 4, 31] {
            let r = reason(decode(&encode(&sample())[..len]));
            assert!(
                r.contains("too short") && r.contains(&len.to_string()),
                "{r}"
            );
        }
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = encode(&sample());
        bytes[0..4].copy_from_slice(b"SPSX");
        let r = reason(decode(&bytes));
        assert!(r.contains("magic") && r.contains("SPSX"), "{r}");
    }

    #[test]
    fn rejects_another_version() {
        let mut bytes = encode(&sample());
        bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
        let r = reason(decode(&bytes));
        assert!(r.contains("unsupported version 2"), "{r}");
    }

    #[test]
    fn rejects_a_short_header_len() {
        let mut bytes = encode(&sample());
        bytes[6..8].copy_from_slice(&16u16.to_le_bytes());
        let r = reason(decode(&bytes));
        assert!(r.contains("header_len 16 is under 32"), "{r}");
    }

    #[test]
    fn rejects_unknown_msg_types() {
        for t in [0u16, 5, 0xFFFF] {
            let mut bytes = encode(&sample());
            bytes[8..10].copy_from_slice(&t.to_le_bytes());
            let r = reason(decode(&bytes));
            assert!(r.contains(&format!("unknown msg_type {t}")), "{r}");
        }
    }

    #[test]
    fn msg_type_converts_both_ways() {
        for t in [
            MsgType::Request,
            MsgType::Data,
            MsgType::Error,
            MsgType::Cancel,
        ] {
            assert_eq!(MsgType::try_from(u16::from(t)).unwrap(), t);
        }
        assert_eq!(MsgType::Request.as_u16(), 1);
        assert_eq!(MsgType::Cancel.as_u16(), 4);
        assert!(reason(MsgType::try_from(9)).contains("unknown msg_type 9"));
    }

    #[test]
    fn rejects_lengths_that_do_not_add_up() {
        let bytes = encode(&sample());
        // A trailing byte.
        let mut longer = bytes.clone();
        longer.push(0);
        let r = reason(decode(&longer));
        assert!(
            r.contains("header_len 32 + meta_len 18 + data_len 5 = 55")
                && r.contains("frame is 56 bytes"),
            "{r}"
        );
        // A missing byte.
        let r = reason(decode(&bytes[..bytes.len() - 1]));
        assert!(r.contains("= 55") && r.contains("frame is 54 bytes"), "{r}");
        // Lengths that overflow u32 when added.
        let mut huge = bytes.clone();
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let r = reason(decode(&huge));
        assert!(
            r.contains(&format!("= {}", 32 + 2 * u64::from(u32::MAX))),
            "{r}"
        );
        // A header_len beyond the message.
        let mut long_header = bytes;
        long_header[6..8].copy_from_slice(&u16::MAX.to_le_bytes());
        let r = reason(decode(&long_header));
        assert!(r.contains("header_len 65535"), "{r}");
    }

    #[test]
    fn rejects_frames_over_the_limit() {
        let frame = Frame {
            data: vec![0; MAX_FRAME_BYTES - HEADER_LEN - sample().meta.len() + 1],
            ..sample()
        };
        let bytes = encode(&frame);
        assert_eq!(bytes.len(), MAX_FRAME_BYTES + 1);
        let r = reason(decode(&bytes));
        assert!(
            r.contains("4194305 bytes is over the 4194304-byte limit"),
            "{r}"
        );
        // Exactly at the limit is fine.
        let frame = Frame {
            data: vec![0; MAX_FRAME_BYTES - HEADER_LEN - sample().meta.len()],
            ..sample()
        };
        assert_eq!(decode(&encode(&frame)).unwrap().to_frame(), frame);
    }

    #[test]
    fn try_encode_refuses_frames_over_the_limit() {
        let frame = Frame {
            data: vec![0; MAX_FRAME_BYTES - HEADER_LEN - sample().meta.len()],
            ..sample()
        };
        // At the limit: the same bytes as `encode`.
        assert_eq!(frame.try_encode(MAX_FRAME_BYTES).unwrap(), encode(&frame));
        let over = Frame {
            data: vec![0; frame.data.len() + 1],
            ..sample()
        };
        let e = over.try_encode(MAX_FRAME_BYTES).unwrap_err();
        assert_eq!(
            e,
            EncodeError::OverLimit {
                size: MAX_FRAME_BYTES + 1,
                limit: MAX_FRAME_BYTES,
            }
        );
        assert_eq!(
            e.to_string(),
            "the frame is 4194305 bytes, over the 4194304-byte frame limit"
        );
        assert!(sample().try_encode(10).is_err());
    }

    #[test]
    fn lengths_the_header_cannot_describe_are_errors_not_panics() {
        assert_eq!(part_lengths(18, 5), Ok((18, 5)));
        assert_eq!(
            part_lengths(0, MAX_PART_BYTES),
            Ok((0, u32::MAX)),
            "4 GiB less one byte still fits"
        );
        let e = part_lengths(0, MAX_PART_BYTES + 1).unwrap_err();
        assert_eq!(
            e,
            EncodeError::Unrepresentable {
                part: "data",
                len: 1 << 32,
            }
        );
        assert!(e.to_string().contains("data is 4294967296 bytes"), "{e}");
        let e = part_lengths(usize::MAX, 0).unwrap_err();
        assert!(matches!(
            e,
            EncodeError::Unrepresentable { part: "meta", .. }
        ));
    }

    /// The data is a 4 GiB anonymous mapping: address space only, never
    /// touched, as the frame is refused before any byte is copied.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_frame_the_header_cannot_describe_encodes_as_an_error_frame() {
        let data = memmap2::MmapOptions::new()
            .len(MAX_PART_BYTES + 1)
            .map_anon()
            .unwrap();
        let frame = FrameRef {
            msg_type: MsgType::Data,
            flags: 0,
            stream_id: 7,
            seq: 9,
            meta: "{}",
            data: &data,
        };
        let mut out = b"prefix".to_vec();
        frame.encode_into(&mut out);
        assert_eq!(&out[..6], b"prefix");
        let sent = decode(&out[6..]).unwrap();
        assert_eq!(sent.msg_type, MsgType::Error);
        assert_eq!((sent.stream_id, sent.seq), (7, 9));
        let meta: Json = serde_json::from_str(sent.meta).unwrap();
        assert_eq!(meta["error"]["code"], OUTPUT_TOO_LARGE);
        assert_eq!(meta["error"]["retryable"], false);
        let message = meta["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("data is 4294967296 bytes") && message.contains("4294967295"),
            "{message}"
        );
    }

    #[test]
    fn rejects_meta_that_is_not_utf8() {
        let frame = Frame {
            meta: b"{\"a\":\"\xFF\"}".to_vec(),
            ..sample()
        };
        let r = reason(decode(&encode(&frame)));
        assert!(
            r.contains("meta is not UTF-8") && r.contains("offset 6"),
            "{r}"
        );
        // The data may be any bytes.
        let frame = Frame {
            data: vec![0xFF, 0xFE, 0],
            ..sample()
        };
        assert_eq!(decode(&encode(&frame)).unwrap().data, [0xFF, 0xFE, 0]);
    }

    #[test]
    fn error_frames_have_spears_shape() {
        let frame = Frame::error(3, 9, "STREAM_NOT_FOUND", "no \"such\" stream", true);
        assert_eq!(frame.msg_type, MsgType::Error);
        assert_eq!((frame.stream_id, frame.seq, frame.flags), (3, 9, 0));
        assert!(frame.data.is_empty());
        let meta: Json = serde_json::from_slice(&frame.meta).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"error": {
                "code": "STREAM_NOT_FOUND",
                "message": "no \"such\" stream",
                "retryable": true,
            }})
        );
        assert_eq!(decode(&encode(&frame)).unwrap().to_frame(), frame);
    }

    #[test]
    fn data_frames_carry_meta_and_data() {
        let frame = Frame::data(
            1,
            2,
            &serde_json::json!({"content_type": "text/plain"}),
            b"out".to_vec(),
        );
        assert_eq!(frame.msg_type, MsgType::Data);
        assert_eq!(frame.meta, br#"{"content_type":"text/plain"}"#);
        assert_eq!(frame.data, b"out");
        let frame = Frame::data(1, 2, &serde_json::json!({}), Vec::new());
        assert_eq!(frame.meta, b"{}");
    }

    #[test]
    fn request_meta_parses() {
        for empty in [&b""[..], b"{}", b"  ", b" { } ", b"{\"function\":null}"] {
            assert_eq!(RequestMeta::parse(empty).unwrap(), RequestMeta::default());
        }
        let meta = RequestMeta::parse(
            br#"{"function":"add","content_type":"application/json","other":[1]}"#,
        )
        .unwrap();
        assert_eq!(meta.function.as_deref(), Some("add"));
        assert_eq!(meta.content_type.as_deref(), Some("application/json"));
        let meta = RequestMeta::parse(br#"{"function":"","content_type":"text/plain"}"#).unwrap();
        assert_eq!(meta.function, None);
        assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn request_meta_rejects_what_is_not_an_object() {
        for (meta, what) in [
            (&b"[]"[..], "an array"),
            (b"\"add\"", "a string"),
            (b"3", "a number"),
            (b"null", "null"),
            (b"true", "a boolean"),
        ] {
            let r = reason(RequestMeta::parse(meta));
            assert!(
                r.contains("must be a JSON object") && r.contains(what),
                "{r}"
            );
        }
        let r = reason(RequestMeta::parse(b"{\"function\":"));
        assert!(r.contains("not valid JSON"), "{r}");
        let r = reason(RequestMeta::parse(b"\xFF"));
        assert!(r.contains("not valid JSON"), "{r}");
        let r = reason(RequestMeta::parse(br#"{"function":5}"#));
        assert!(
            r.contains("`function` must be a string, not a number"),
            "{r}"
        );
        let r = reason(RequestMeta::parse(br#"{"content_type":{}}"#));
        assert!(
            r.contains("`content_type` must be a string, not an object"),
            "{r}"
        );
    }

    fn msg_type() -> impl Strategy<Value = MsgType> {
        prop_oneof![
            Just(MsgType::Request),
            Just(MsgType::Data),
            Just(MsgType::Error),
            Just(MsgType::Cancel),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        (
            msg_type(),
            any::<u16>(),
            any::<u32>(),
            any::<u64>(),
            // JSON-safe UTF-8: the string, serialized as a JSON string (or
            // left empty).
            prop_oneof![
                Just(String::new()),
                any::<String>().prop_map(|s| Json::String(s).to_string())
            ],
            proptest::collection::vec(any::<u8>(), 0..4096),
        )
            .prop_map(|(msg_type, flags, stream_id, seq, meta, data)| Frame {
                msg_type,
                flags,
                stream_id,
                seq,
                meta: meta.into_bytes(),
                data,
            })
    }

    proptest! {
        #[test]
        fn round_trips(frame in frame()) {
            let bytes = encode(&frame);
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            let decoded = decode(&bytes).unwrap();
            prop_assert_eq!(decoded.to_frame(), frame);
        }

        #[test]
        fn extra_header_bytes_are_skipped(
            frame in frame(),
            extra in 1u16..512,
            fill in any::<u8>(),
        ) {
            let bytes = with_header_len(&frame, 32 + extra, fill);
            prop_assert_eq!(decode(&bytes).unwrap().to_frame(), frame);
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = decode(&bytes);
            let _ = RequestMeta::parse(&bytes);
        }

        #[test]
        fn never_panics_on_headers_after_the_magic(
            header in proptest::collection::vec(any::<u8>(), 28),
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = b"SPST".to_vec();
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&tail);
            if let Ok(f) = decode(&bytes) {
                prop_assert_eq!(f.encoded_len(), bytes.len() - (usize::from(u16_at(&bytes, 6)) - HEADER_LEN));
            }
        }

        #[test]
        fn never_panics_on_mutated_frames(
            frame in frame(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = encode(&frame);
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Ok(f) = decode(&bytes) {
                // Whatever decodes re-encodes to a frame of the declared size
                // less any skipped header bytes.
                let skipped = usize::from(u16_at(&bytes, 6)) - HEADER_LEN;
                prop_assert_eq!(f.encoded_len() + skipped, bytes.len());
                let again = encode(&f.to_frame());
                prop_assert_eq!(decode(&again).unwrap(), f);
            }
        }
    }
}
