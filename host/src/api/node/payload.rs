//! SPEAR's `Payload` (typed bytes) to a plugin function's named
//! parameters and back, as `docs/cluster.md` ("Payloads") sets out:
//!
//! - `application/json` input is an object of named parameters, each
//!   typed by the function's declared signature;
//! - any other input is the one parameter of a one-parameter function:
//!   text when it is UTF-8 and the parameter is not bytes, else bytes;
//!   empty input to a function without parameters is no parameter;
//! - a string result is sent as text, bytes as they are, and every other
//!   value as JSON.

use crate::error::{Error, Result};
use crate::loader::FunctionInfo;
use crate::signature::{self, Param, ParamKind};
use crate::Value;

/// The content type that carries named parameters.
pub const JSON: &str = "application/json";
/// Text results.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// Byte results, and input of no declared type.
pub const OCTETS: &str = "application/octet-stream";

/// The parameters `data` (of `content_type`) gives `function`.
///
/// # Errors
///
/// [`Error::InvalidRequest`] (`input`) naming what does not fit: JSON that
/// is not an object, a value of the wrong kind for its parameter, raw
/// input to a function that does not take exactly one parameter. A JSON
/// key the function does not declare passes through untyped: the host
/// refuses it ([`Error::UnknownParameter`]) as it does for every client,
/// unless the function takes extra parameters.
pub fn params(
    function: &FunctionInfo,
    content_type: &str,
    data: Vec<u8>,
) -> Result<Vec<(String, Value)>> {
    let declared = signature::params(&function.signature);
    if is_json(content_type) {
        return json_params(declared.as_deref(), &data);
    }
    let invalid = |reason: String| Error::InvalidRequest {
        field: "input",
        reason,
    };
    let declared = declared.unwrap_or_default();
    match declared.as_slice() {
        [] if data.is_empty() => Ok(Vec::new()),
        [] => Err(invalid(format!(
            "`{}` takes no parameters, but the input has {} bytes of `{}`",
            function.name,
            data.len(),
            shown(content_type)
        ))),
        [one] => Ok(vec![(one.name.clone(), raw_value(one.kind, data))]),
        several => Err(invalid(format!(
            "`{}` takes {} parameters ({}): send them as an `{JSON}` object",
            function.name,
            several.len(),
            several
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Raw input for one parameter: bytes stay bytes where bytes are declared
/// (or the input is not text), else text.
fn raw_value(kind: ParamKind, data: Vec<u8>) -> Value {
    if kind == ParamKind::Bytes {
        return Value::Bytes(data);
    }
    match String::from_utf8(data) {
        Ok(text) => match kind {
            // A number or a flag sent as its text.
            ParamKind::Integer | ParamKind::Float | ParamKind::Bool => {
                match serde_json::from_str::<serde_json::Value>(text.trim()) {
                    Ok(v) => json_value(kind, v).unwrap_or(Value::String(text)),
                    Err(_) => Value::String(text),
                }
            }
            _ => Value::String(text),
        },
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

fn json_params(declared: Option<&[Param]>, data: &[u8]) -> Result<Vec<(String, Value)>> {
    let invalid = |reason: String| Error::InvalidRequest {
        field: "input",
        reason,
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let object = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(other) => {
            return Err(invalid(format!(
                "`{JSON}` input must be an object of named parameters, not {}",
                json_kind(&other)
            )))
        }
        Err(e) => return Err(invalid(format!("`{JSON}` input does not parse: {e}"))),
    };
    let mut params = Vec::with_capacity(object.len());
    for (name, value) in object {
        if value.is_null() {
            // An optional parameter left out.
            continue;
        }
        let kind = declared
            .and_then(|d| d.iter().find(|p| p.name == name))
            .map_or(ParamKind::Other, |p| p.kind);
        let value = json_value(kind, value).map_err(|found| {
            invalid(format!(
                "parameter `{name}` is declared {}, got {found}",
                kind_name(kind)
            ))
        })?;
        params.push((name, value));
    }
    Ok(params)
}

/// One JSON value as the parameter kind wants it; `Err` names what was
/// found instead.
fn json_value(kind: ParamKind, value: serde_json::Value) -> Result<Value, &'static str> {
    use serde_json::Value as J;
    Ok(match (kind, value) {
        (ParamKind::Integer, J::Number(n)) => Value::I64(n.as_i64().ok_or("a non-integer")?),
        (ParamKind::Float, J::Number(n)) => Value::F64(n.as_f64().ok_or("a number out of range")?),
        (ParamKind::Bool, J::Bool(b)) => Value::Bool(b),
        (ParamKind::Text | ParamKind::Bytes, J::String(s)) => match kind {
            ParamKind::Bytes => Value::Bytes(s.into_bytes()),
            _ => Value::String(s),
        },
        (ParamKind::Integer | ParamKind::Float | ParamKind::Bool | ParamKind::Text, other)
        | (ParamKind::Bytes, other) => return Err(json_kind(&other)),
        // Undeclared, or a type the caller cannot see into (`Json<T>`):
        // the natural value, structured data as its JSON text.
        (ParamKind::Other, J::String(s)) => Value::String(s),
        (ParamKind::Other, J::Bool(b)) => Value::Bool(b),
        (ParamKind::Other, J::Number(n)) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        (ParamKind::Other, other) => Value::String(other.to_string()),
    })
}

/// A result as SPEAR's `Payload`: `(content type, bytes)`.
pub fn output(value: Value) -> (String, Vec<u8>) {
    match value {
        Value::String(text) => (TEXT.to_owned(), text.into_bytes()),
        Value::Bytes(bytes) => (OCTETS.to_owned(), bytes),
        Value::Raw { type_url, bytes } => (type_url, bytes),
        Value::Unit => (JSON.to_owned(), b"null".to_vec()),
        Value::I64(n) => (JSON.to_owned(), n.to_string().into_bytes()),
        Value::Bool(b) => (JSON.to_owned(), b.to_string().into_bytes()),
        Value::F64(f) => (
            JSON.to_owned(),
            serde_json::Number::from_f64(f)
                .map_or_else(|| format!("\"{f}\""), |n| n.to_string())
                .into_bytes(),
        ),
    }
}

fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(JSON))
}

fn shown(content_type: &str) -> &str {
    if content_type.is_empty() {
        "no type"
    } else {
        content_type
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::Integer => "an integer",
        ParamKind::Float => "a float",
        ParamKind::Bool => "a boolean",
        ParamKind::Text => "text",
        ParamKind::Bytes => "bytes",
        ParamKind::Other => "any value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::FunctionKind;

    fn function(signature: &str) -> FunctionInfo {
        FunctionInfo {
            name: "f".into(),
            kind: FunctionKind::Unary,
            description: String::new(),
            signature: signature.into(),
            blocking: false,
        }
    }

    #[test]
    fn json_input_is_named_parameters_typed_by_the_signature() {
        let f = function("(a: i64, ratio: f64, name: &str, raw: Vec<u8>, on: bool) -> i64");
        let given = params(
            &f,
            "application/json; charset=utf-8",
            br#"{"a": 2, "ratio": 1, "name": "x", "raw": "hi", "on": true}"#.to_vec(),
        )
        .unwrap();
        assert_eq!(
            given,
            vec![
                ("a".into(), Value::I64(2)),
                ("name".into(), Value::String("x".into())),
                ("on".into(), Value::Bool(true)),
                ("ratio".into(), Value::F64(1.0)),
                ("raw".into(), Value::Bytes(b"hi".to_vec())),
            ]
        );
        let err = params(&f, JSON, br#"{"a": "two"}"#.to_vec()).unwrap_err();
        assert!(
            err.to_string()
                .contains("`a` is declared an integer, got a string"),
            "{err}"
        );
        let err = params(&f, JSON, b"[1]".to_vec()).unwrap_err();
        assert!(err.to_string().contains("not an array"), "{err}");
    }

    #[test]
    fn structured_values_reach_untyped_parameters_as_json_text() {
        let f = function("(order: Json<Order>) -> usize");
        let given = params(&f, JSON, br#"{"order": {"id": 1}}"#.to_vec()).unwrap();
        assert_eq!(
            given,
            vec![("order".into(), Value::String(r#"{"id":1}"#.into()))]
        );
    }

    #[test]
    fn raw_input_is_the_one_parameter() {
        let text = function("(text: &str) -> String");
        assert_eq!(
            params(&text, "text/plain", b"hello".to_vec()).unwrap(),
            vec![("text".into(), Value::String("hello".into()))]
        );
        let bytes = function("(data: &[u8]) -> usize");
        assert_eq!(
            params(&bytes, OCTETS, b"hello".to_vec()).unwrap(),
            vec![("data".into(), Value::Bytes(b"hello".to_vec()))]
        );
        let number = function("(n: i64) -> i64");
        assert_eq!(
            params(&number, "", b" 42\n".to_vec()).unwrap(),
            vec![("n".into(), Value::I64(42))]
        );
        assert_eq!(
            params(&text, OCTETS, vec![0xff, 0xfe]).unwrap(),
            vec![("text".into(), Value::Bytes(vec![0xff, 0xfe]))]
        );
    }

    #[test]
    fn raw_input_to_other_arities_is_refused_by_name() {
        let none = function("() -> u64");
        assert!(params(&none, OCTETS, Vec::new()).unwrap().is_empty());
        let err = params(&none, OCTETS, b"x".to_vec()).unwrap_err();
        assert!(err.to_string().contains("takes no parameters"), "{err}");
        let two = function("(a: i64, b: i64) -> i64");
        let err = params(&two, "text/plain", b"1".to_vec()).unwrap_err();
        assert!(err.to_string().contains("(a, b)"), "{err}");
    }

    #[test]
    fn results_are_text_bytes_or_json() {
        assert_eq!(
            output(Value::String("hi".into())),
            (TEXT.into(), b"hi".to_vec())
        );
        assert_eq!(output(Value::Bytes(vec![1])), (OCTETS.into(), vec![1]));
        assert_eq!(output(Value::I64(-3)), (JSON.into(), b"-3".to_vec()));
        assert_eq!(output(Value::F64(0.5)), (JSON.into(), b"0.5".to_vec()));
        assert_eq!(output(Value::Unit), (JSON.into(), b"null".to_vec()));
    }
}
