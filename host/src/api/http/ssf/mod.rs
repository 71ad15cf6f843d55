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

mod decoding;
mod encoding;
mod frame;
mod meta;

pub use decoding::decode;
pub use encoding::{encode, encode_into, EncodeError};
pub use frame::{Frame, FrameRef, MsgType};
pub use meta::RequestMeta;

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

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidFrame {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests;
