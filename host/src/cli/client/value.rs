//! A result value (a `google.protobuf.Any` wrapper) decoded once, then
//! shown three ways: readably for people, as JSON for scripts, and raw for
//! `--output FILE`.

use prost::Message;
use serde::Serialize;

use super::present::WRAPPER;

/// Bytes results up to this many are shown in full in text mode (as text
/// when they are printable, else in hex); longer ones only by their size,
/// so a binary result cannot flood a terminal.
const SHOWN_BYTES: usize = 64;

/// A result value as the client received it. In JSON it is
/// `{"type": "i64", "value": 42}`; bytes are base64.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub(super) enum Value {
    String(String),
    I64(i64),
    F64(f64),
    Bool(bool),
    Bytes(#[serde(serialize_with = "base64_bytes")] Vec<u8>),
    /// `google.protobuf.Empty`: the function returns nothing.
    None,
    /// Any other message (or a wrapper that does not decode): its type URL
    /// and its encoded bytes, as received.
    Other {
        type_url: String,
        #[serde(serialize_with = "base64_bytes")]
        bytes: Vec<u8>,
    },
}

/// Serializes bytes as standard base64 (with padding), the usual JSON
/// spelling of binary data.
pub(super) fn base64_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl Value {
    pub(super) fn decode(any: &prost_types::Any) -> Value {
        let v = any.value.as_slice();
        let decoded = match any.type_url.strip_prefix(WRAPPER) {
            Some("StringValue") => String::decode(v).ok().map(Value::String),
            Some("Int64Value") => i64::decode(v).ok().map(Value::I64),
            Some("DoubleValue") => f64::decode(v).ok().map(Value::F64),
            Some("BoolValue") => bool::decode(v).ok().map(Value::Bool),
            Some("BytesValue") => Vec::<u8>::decode(v).ok().map(Value::Bytes),
            Some("Empty") => Some(Value::None),
            _ => None,
        };
        decoded.unwrap_or_else(|| Value::Other {
            type_url: any.type_url.clone(),
            bytes: any.value.clone(),
        })
    }

    /// Readably: `5 (i64)`, `"text" (string)`, `5 bytes: 00 01 02 03 04`.
    pub(super) fn show(&self) -> String {
        match self {
            Value::String(s) => format!("{s:?} (string)"),
            Value::I64(n) => format!("{n} (i64)"),
            Value::F64(n) => format!("{n} (f64)"),
            Value::Bool(b) => format!("{b} (bool)"),
            Value::Bytes(b) => show_bytes(b),
            Value::None => "(none)".to_owned(),
            Value::Other { type_url, bytes } => format!("{} bytes of {type_url}", bytes.len()),
        }
    }

    /// What `--output FILE` writes: bytes as they are, a string as UTF-8,
    /// a number or bool as its JSON, nothing for no value, another message
    /// as its encoded bytes.
    pub(super) fn raw(&self) -> Vec<u8> {
        match self {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::I64(n) => n.to_string().into_bytes(),
            Value::F64(n) => serde_json::to_vec(n).unwrap_or_default(),
            Value::Bool(b) => b.to_string().into_bytes(),
            Value::Bytes(b) | Value::Other { bytes: b, .. } => b.clone(),
            Value::None => Vec::new(),
        }
    }
}

/// Writes `values` raw, one after another, to `file` (`--output`): one
/// for a result, the chunks of a stream in order. No value (a failed call)
/// writes no file, and says so on stderr, so an old file is not mistaken
/// for this call's result.
pub(super) fn save(file: &std::path::Path, values: &[Value]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if values.is_empty() {
        eprintln!("no result: {} not written", file.display());
        return Ok(());
    }
    let raw: Vec<u8> = values.iter().flat_map(Value::raw).collect();
    std::fs::write(file, raw).with_context(|| format!("cannot write {}", file.display()))
}

/// A bytes value: printable UTF-8 as escaped text (as any UTF-8 past
/// [`SHOWN_BYTES`], as before), else up to [`SHOWN_BYTES`] in hex, else
/// only the size.
fn show_bytes(b: &[u8]) -> String {
    let n = b.len();
    match std::str::from_utf8(b) {
        Ok(text) if n > SHOWN_BYTES || printable(text) => format!("{text:?} ({n} bytes)"),
        _ if n <= SHOWN_BYTES => {
            let hex: Vec<String> = b.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("{n} bytes: {}", hex.join(" "))
        }
        _ => format!("{n} bytes (--output FILE saves them)"),
    }
}

/// Text a terminal shows as it is: no control characters but tab and line
/// breaks.
fn printable(text: &str) -> bool {
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(kind: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("{WRAPPER}{kind}"),
            value,
        }
    }

    #[test]
    fn short_bytes_show_as_text_when_printable_else_in_hex() {
        let bytes = |b: &[u8]| Value::decode(&any("BytesValue", b.to_vec().encode_to_vec()));
        assert_eq!(bytes(b"hello").show(), "\"hello\" (5 bytes)");
        assert_eq!(bytes(&[0, 1, 0xff]).show(), "3 bytes: 00 01 ff");
        assert_eq!(
            bytes(b"\x00\x01").show(),
            "2 bytes: 00 01",
            "UTF-8, not printable"
        );
        assert_eq!(
            bytes(&[0xff; 65]).show(),
            "65 bytes (--output FILE saves them)"
        );
    }

    #[test]
    fn values_serialize_with_their_type_and_bytes_in_base64() {
        let json = |v: &Value| serde_json::to_string(v).unwrap();
        assert_eq!(json(&Value::I64(42)), r#"{"type":"i64","value":42}"#);
        assert_eq!(
            json(&Value::Bytes(b"hi".to_vec())),
            r#"{"type":"bytes","value":"aGk="}"#
        );
        assert_eq!(json(&Value::None), r#"{"type":"none"}"#);
        let other = Value::decode(&any("Int64Value", vec![0xff]));
        assert!(matches!(other, Value::Other { .. }), "{other:?}");
    }

    #[test]
    fn raw_values_are_what_output_files_hold() {
        assert_eq!(Value::Bytes(vec![0, 0xff]).raw(), vec![0, 0xff]);
        assert_eq!(Value::String("é".into()).raw(), "é".as_bytes());
        assert_eq!(Value::I64(-3).raw(), b"-3");
        assert_eq!(Value::F64(1.5).raw(), b"1.5");
        assert!(Value::None.raw().is_empty());
    }
}
