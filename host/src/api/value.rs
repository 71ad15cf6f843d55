//! `google.protobuf.Any` ⇄ the SDK's typed values.
//!
//! The well-known wrappers become typed values (integers of every width
//! become i64); anything else passes through raw, type URL and all.

use prost::Message;
use prost_types::Any;

use crate::error::{Error, Result};
use crate::Value;

const PREFIX: &str = "type.googleapis.com/google.protobuf.";

/// Decodes a parameter value.
pub(super) fn from_any(name: &str, any: Any) -> Result<Value> {
    let Some(kind) = any.type_url.strip_prefix(PREFIX) else {
        return Ok(Value::Raw {
            type_url: any.type_url,
            bytes: any.value,
        });
    };
    let bad = |e: prost::DecodeError| Error::InvalidRequest {
        field: "parameters",
        reason: format!("parameter `{name}`: malformed google.protobuf.{kind}: {e}"),
    };
    // The two wrappers whose payload is a buffer: taken out of the
    // request's own bytes, not decoded into a copy.
    match kind {
        "BytesValue" => {
            return match payload_in_place(any.value) {
                Ok(payload) => Ok(Value::Bytes(payload)),
                Err(other) => Ok(Value::Bytes(Vec::<u8>::decode(&*other).map_err(bad)?)),
            }
        }
        "StringValue" => {
            return match payload_in_place(any.value) {
                Ok(payload) => String::from_utf8(payload).map(Value::String).map_err(|_| {
                    Error::InvalidRequest {
                        field: "parameters",
                        reason: format!(
                            "parameter `{name}`: malformed google.protobuf.StringValue: not UTF-8"
                        ),
                    }
                }),
                Err(other) => Ok(Value::String(String::decode(&*other).map_err(bad)?)),
            }
        }
        _ => {}
    }
    let bytes = any.value.as_slice();
    Ok(match kind {
        "Int64Value" => Value::I64(i64::decode(bytes).map_err(bad)?),
        "Int32Value" => Value::I64(i32::decode(bytes).map_err(bad)?.into()),
        "UInt32Value" => Value::I64(u32::decode(bytes).map_err(bad)?.into()),
        "UInt64Value" => {
            let v = u64::decode(bytes).map_err(bad)?;
            Value::I64(i64::try_from(v).map_err(|_| Error::InvalidRequest {
                field: "parameters",
                reason: format!("parameter `{name}`: {v} does not fit in a signed 64-bit integer"),
            })?)
        }
        "DoubleValue" => Value::F64(f64::decode(bytes).map_err(bad)?),
        "FloatValue" => Value::F64(f32::decode(bytes).map_err(bad)?.into()),
        "BoolValue" => Value::Bool(bool::decode(bytes).map_err(bad)?),
        "Empty" => Value::Unit,
        _ => Value::Raw {
            type_url: any.type_url,
            bytes: any.value,
        },
    })
}

/// The payload of a wrapper whose one field (number 1) is a buffer, taken
/// out of `encoded` in place when it is encoded the usual way — nothing, or
/// the field's tag, its length and its bytes, nothing after — so that a
/// parameter's bytes are copied once on their way in (by the transport),
/// not again here. Anything else comes back as it was, for prost to decode.
fn payload_in_place(mut encoded: Vec<u8>) -> std::result::Result<Vec<u8>, Vec<u8>> {
    const FIELD_1_LENGTH_DELIMITED: u8 = 0x0a;
    if encoded.is_empty() {
        return Ok(encoded);
    }
    if encoded[0] != FIELD_1_LENGTH_DELIMITED {
        return Err(encoded);
    }
    let mut rest = &encoded[1..];
    let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
        return Err(encoded);
    };
    if usize::try_from(len).ok() != Some(rest.len()) {
        return Err(encoded);
    }
    let header = encoded.len() - rest.len();
    encoded.drain(..header);
    Ok(encoded)
}

/// Encodes a result value as the matching wrapper.
pub(crate) fn to_any(value: Value) -> Any {
    let wrap = |kind: &str, value: Vec<u8>| Any {
        type_url: [PREFIX, kind].concat(),
        value,
    };
    match value {
        Value::Unit => wrap("Empty", Vec::new()),
        Value::String(value) => wrap("StringValue", value.encode_to_vec()),
        Value::I64(value) => wrap("Int64Value", value.encode_to_vec()),
        Value::F64(value) => wrap("DoubleValue", value.encode_to_vec()),
        Value::Bool(value) => wrap("BoolValue", value.encode_to_vec()),
        Value::Bytes(value) => wrap("BytesValue", value.encode_to_vec()),
        Value::Raw { type_url, bytes } => Any {
            type_url,
            value: bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_taken_in_place_and_unusual_encodings_still_decode() {
        let payload = vec![7u8; 300];
        let encoded = payload.encode_to_vec();
        let address = encoded.as_ptr();
        let taken = payload_in_place(encoded).unwrap();
        assert_eq!(taken, payload);
        assert_eq!(taken.as_ptr(), address, "the request's own buffer");
        assert_eq!(payload_in_place(Vec::new()), Ok(Vec::new()));
        // A field after the payload, or a truncated one: left to prost.
        let mut extra = b"ab".to_vec().encode_to_vec();
        extra.extend([0x10, 0x01]);
        assert!(payload_in_place(extra.clone()).is_err());
        let any = |kind: &str, value: Vec<u8>| Any {
            type_url: format!("{PREFIX}{kind}"),
            value,
        };
        assert_eq!(
            from_any("p", any("BytesValue", extra)).unwrap(),
            Value::Bytes(b"ab".to_vec()),
            "prost skips the unknown field"
        );
        assert!(from_any("p", any("BytesValue", vec![0x0a, 0x05, 1])).is_err());
        assert!(matches!(
            from_any("p", any("StringValue", vec![0x0a, 0x02, 0xff, 0xfe])),
            Err(Error::InvalidRequest { .. })
        ));
        assert_eq!(
            from_any("p", any("StringValue", "hé".to_owned().encode_to_vec())).unwrap(),
            Value::String("hé".into())
        );
    }

    #[test]
    fn wrappers_round_trip_and_widen() {
        for v in [
            Value::String("x".into()),
            Value::I64(-3),
            Value::F64(1.5),
            Value::Bool(true),
            Value::Bytes(vec![1, 2]),
            Value::Unit,
        ] {
            assert_eq!(from_any("p", to_any(v.clone())).unwrap(), v);
        }
        let i32_any = Any {
            type_url: format!("{PREFIX}Int32Value"),
            value: 7i32.encode_to_vec(),
        };
        assert_eq!(from_any("p", i32_any).unwrap(), Value::I64(7));
        let raw = Any {
            type_url: "type.googleapis.com/acme.Point".into(),
            value: vec![8, 1],
        };
        assert_eq!(
            from_any("p", raw).unwrap(),
            Value::Raw {
                type_url: "type.googleapis.com/acme.Point".into(),
                bytes: vec![8, 1]
            }
        );
        let big = Any {
            type_url: format!("{PREFIX}UInt64Value"),
            value: u64::MAX.encode_to_vec(),
        };
        assert!(matches!(
            from_any("p", big),
            Err(Error::InvalidRequest { .. })
        ));
    }
}
