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
    let bytes = any.value.as_slice();
    Ok(match kind {
        "StringValue" => Value::String(String::decode(bytes).map_err(bad)?),
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
        "BytesValue" => Value::Bytes(Vec::<u8>::decode(bytes).map_err(bad)?),
        "Empty" => Value::Unit,
        _ => Value::Raw {
            type_url: any.type_url,
            bytes: any.value,
        },
    })
}

/// Encodes a result value as the matching wrapper.
pub(crate) fn to_any(value: Value) -> Any {
    let wrap = |kind: &str, value: Vec<u8>| Any {
        type_url: format!("{PREFIX}{kind}"),
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
