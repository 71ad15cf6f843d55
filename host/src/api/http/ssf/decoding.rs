//! Reading a frame: the checks a message must pass before its meta and
//! data are borrowed. Every way a peer's bytes can be wrong is refused
//! here, so that nothing past it handles a malformed frame.

use super::frame::{FrameRef, MsgType};
use super::{invalid, HEADER_LEN, MAGIC, MAX_FRAME_BYTES, VERSION};

pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
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
///
/// [`Error::InvalidFrame`]: crate::error::Error::InvalidFrame
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
