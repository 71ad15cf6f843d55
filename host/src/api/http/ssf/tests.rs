use super::decoding::u16_at;
use super::encoding::part_lengths;
use super::*;
use proptest::prelude::*;
use serde_json::Value as Json;

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
    let meta =
        RequestMeta::parse(br#"{"function":"add","content_type":"application/json","other":[1]}"#)
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
