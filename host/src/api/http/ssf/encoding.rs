//! Writing a frame: its 32-byte header, and what takes its place when the
//! header cannot describe it. The one place that knows the header's byte
//! layout on the way out, so that it is checked against `decoding` (and
//! the table in the module doc) in one read.

use super::frame::{Frame, FrameRef, MsgType};
use super::{HEADER_LEN, MAGIC, MAX_PART_BYTES, OUTPUT_TOO_LARGE, VERSION};

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

impl FrameRef<'_> {
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

impl Frame {
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
    ///
    /// [`MAX_FRAME_BYTES`]: super::MAX_FRAME_BYTES
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
pub(super) fn part_lengths(meta: usize, data: usize) -> Result<(u32, u32), EncodeError> {
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
