//! A function's declared signature, read back from the text the SDK's
//! `#[function]` publishes (`(a: i64, name: &str, n: Option<u32>) -> i64`):
//! enough to check a call's parameters without running anything (a dry
//! run), and for clients to type the values they send.

use crate::Value;

/// What a declared parameter holds, as far as a caller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Any integer type.
    Integer,
    /// `f32` or `f64`.
    Float,
    /// `bool`.
    Bool,
    /// `&str` or `String`.
    Text,
    /// `&[u8]` or `Vec<u8>`.
    Bytes,
    /// Anything else: passed through as it comes.
    Other,
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its type, as written.
    pub ty: String,
    /// `Option<…>`: may be left out.
    pub optional: bool,
    /// What it holds.
    pub kind: ParamKind,
}

/// The parameters of `signature`; `None` when it is not in the form the
/// SDK writes.
pub fn params(signature: &str) -> Option<Vec<Param>> {
    let inner = signature.trim().strip_prefix('(')?;
    let mut depth = 0usize;
    let close = inner.char_indices().find(|(_, c)| {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' if depth == 0 => return true,
            ')' | '>' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        false
    })?;
    let list = &inner[..close.0];
    let mut out = Vec::new();
    let (mut start, mut depth) = (0, 0usize);
    let mut pieces = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                pieces.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&list[start..]);
    for piece in pieces.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let (name, ty) = piece.split_once(':')?;
        let ty = ty.trim().to_owned();
        let (optional, inner) = match ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
            Some(inner) => (true, inner.trim().to_owned()),
            None => (false, ty.clone()),
        };
        out.push(Param {
            name: name.trim().to_owned(),
            kind: kind_of(&inner),
            ty,
            optional,
        });
    }
    Some(out)
}

fn kind_of(ty: &str) -> ParamKind {
    let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
    match ty.as_str() {
        "i8" | "i16" | "i32" | "i64" | "isize" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            ParamKind::Integer
        }
        "f32" | "f64" => ParamKind::Float,
        "bool" => ParamKind::Bool,
        "&str" | "String" | "&'staticstr" => ParamKind::Text,
        "&[u8]" | "Vec<u8>" => ParamKind::Bytes,
        _ => ParamKind::Other,
    }
}

/// Why `given` does not fit `declared`: a missing required parameter, one
/// the function does not take, or a value of the wrong kind.
pub fn check(declared: &[Param], given: &[(String, Value)]) -> Result<(), String> {
    for p in declared {
        let value = given.iter().find(|(n, _)| *n == p.name).map(|(_, v)| v);
        match value {
            None if !p.optional => {
                return Err(format!("parameter `{}: {}` is required", p.name, p.ty));
            }
            Some(v) if !fits(p.kind, v) => {
                return Err(format!(
                    "parameter `{}` is declared `{}`, got {}",
                    p.name,
                    p.ty,
                    value_kind(v)
                ));
            }
            _ => {}
        }
    }
    if let Some((name, _)) = given
        .iter()
        .find(|(n, _)| !declared.iter().any(|p| p.name == *n))
    {
        let names: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "the function takes no parameter `{name}` (it takes: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    Ok(())
}

fn fits(kind: ParamKind, value: &Value) -> bool {
    matches!(
        (kind, value),
        (_, Value::Unit)
            | (ParamKind::Other, _)
            | (ParamKind::Integer, Value::I64(_))
            | (ParamKind::Bool, Value::Bool(_))
            | (ParamKind::Float, Value::F64(_) | Value::I64(_))
            | (ParamKind::Text, Value::String(_))
            | (ParamKind::Bytes, Value::Bytes(_) | Value::String(_))
    )
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Unit => "no value",
        Value::String(_) => "a string",
        Value::I64(_) => "an integer",
        Value::F64(_) => "a float",
        Value::Bool(_) => "a boolean",
        Value::Bytes(_) => "bytes",
        Value::Raw { .. } => "an encoded message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_read_back() {
        let p = params("(a: i64, name: &str, n: Option<u32>, raw: Vec<u8>) -> i64").unwrap();
        let shown: Vec<(&str, ParamKind, bool)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.kind, p.optional))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", ParamKind::Integer, false),
                ("name", ParamKind::Text, false),
                ("n", ParamKind::Integer, true),
                ("raw", ParamKind::Bytes, false),
            ]
        );
        assert_eq!(params("() -> String").unwrap(), []);
        assert_eq!(params("not a signature"), None);
    }

    #[test]
    fn calls_are_checked_against_the_declaration() {
        let p = params("(a: i64, b: Option<f64>)").unwrap();
        let given = |pairs: &[(&str, Value)]| -> Vec<(String, Value)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        assert!(check(&p, &given(&[("a", Value::I64(1))])).is_ok());
        assert!(check(&p, &given(&[]))
            .unwrap_err()
            .contains("`a: i64` is required"));
        let wrong = check(&p, &given(&[("a", Value::String("1".into()))])).unwrap_err();
        assert!(wrong.contains("declared `i64`, got a string"), "{wrong}");
        let extra = check(
            &p,
            &given(&[("a", Value::I64(1)), ("c", Value::Bool(true))]),
        )
        .unwrap_err();
        assert!(
            extra.contains("no parameter `c`") && extra.contains("a, b"),
            "{extra}"
        );
    }
}
