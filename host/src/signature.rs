//! A function's declared signature, read back from the text the SDK's
//! `#[function]` publishes (`(a: i64, name: &str, n: Option<u32>) -> i64`):
//! enough to check a call's parameters without running anything (a dry
//! run), for clients to type the values they send, and for the host to
//! refuse a parameter the function does not take.
//!
//! A function marked `#[function(extra_params)]` publishes a trailing `..`
//! in its list (`(text: &str, ..) -> String`): it reads parameters beyond
//! the declared ones (`Context::params`), so no name is unknown to it.

use crate::error::Error;
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
/// SDK writes. A trailing `..` (extra parameters accepted) is skipped: see
/// [`takes_extra`].
pub fn params(signature: &str) -> Option<Vec<Param>> {
    Some(parsed(signature)?.0)
}

/// Whether `signature` declares that the function takes parameters beyond
/// its named ones (a trailing `..`, from `#[function(extra_params)]`).
pub fn takes_extra(signature: &str) -> bool {
    parsed(signature).is_some_and(|(_, extra)| extra)
}

/// The named parameters, and whether a trailing `..` follows them.
fn parsed(signature: &str) -> Option<(Vec<Param>, bool)> {
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
    let mut pieces: Vec<&str> = pieces
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    // Only last: `..` anywhere else is not something the SDK writes.
    let extra = pieces.last() == Some(&"..");
    if extra {
        pieces.pop();
    }
    for piece in pieces {
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
    Some((out, extra))
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

/// Why `given` does not fit the declared parameters of `function`: a
/// parameter the function does not take (worded as
/// [`Error::UnknownParameter`], as a real call is refused), a missing
/// required parameter, or a value of the wrong kind. `extra`: the function
/// takes undeclared parameters too ([`takes_extra`]).
pub fn check(
    function: &str,
    declared: &[Param],
    extra: bool,
    given: &[(String, Value)],
) -> Result<(), String> {
    // First: a misspelled name explains the required one it leaves out.
    if !extra {
        let names = || declared.iter().map(|p| p.name.as_str());
        if let Some((name, _)) = given.iter().find(|(n, _)| !names().any(|d| d == n)) {
            return Err(unknown_parameter(function, name, names()).to_string());
        }
    }
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
    Ok(())
}

/// The parameter names a function accepts, worked out once when its plugin
/// loads, so that checking a call costs a few short string compares (one
/// per given name and declared name) and no parsing or allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepts {
    /// Exactly these names.
    Declared(Box<[Box<str>]>),
    /// Any name: the function takes extra parameters (`..`), or its
    /// signature is not in the form the SDK writes (a hand-written plugin),
    /// so nothing can be known about its names.
    Any,
}

impl Accepts {
    /// What a function publishing `signature` accepts.
    pub fn of(signature: &str) -> Accepts {
        match parsed(signature) {
            Some((declared, false)) => Accepts::Declared(
                declared
                    .into_iter()
                    .map(|p| p.name.into_boxed_str())
                    .collect(),
            ),
            Some((_, true)) | None => Accepts::Any,
        }
    }

    /// Refuses the first of `given` that `function` does not take.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownParameter`], with the closest declared name.
    #[inline]
    pub fn check(&self, function: &str, given: &[(String, Value)]) -> Result<(), Error> {
        let Accepts::Declared(names) = self else {
            return Ok(());
        };
        match given
            .iter()
            .find(|(n, _)| !names.iter().any(|d| **d == **n))
        {
            None => Ok(()),
            Some((name, _)) => Err(unknown_parameter(
                function,
                name,
                names.iter().map(|d| &**d),
            )),
        }
    }
}

/// The error for `name`, which `function` (taking `declared`) does not
/// take: cold, so the check above stays small.
#[cold]
fn unknown_parameter<'a>(
    function: &str,
    name: &str,
    declared: impl Iterator<Item = &'a str>,
) -> Error {
    Error::UnknownParameter {
        function: function.to_owned(),
        name: name.to_owned(),
        suggestion: closest(name, declared).map(str::to_owned),
    }
}

/// The candidate nearest `name` by edit distance, if near enough to be a
/// likely misspelling: at most a third of the longer name's characters
/// (rounded up) differ, and not all of them, so `wrd` suggests `word` but
/// `extra` suggests nothing for `text`, nor `c` for `a`.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, c)| {
            let longer = name.chars().count().max(c.chars().count());
            *d <= longer.div_ceil(3) && *d < longer
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edits (insert, delete, substitute a character) from `a` to `b`.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
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
        assert!(check("f", &p, false, &given(&[("a", Value::I64(1))])).is_ok());
        assert!(check("f", &p, false, &given(&[]))
            .unwrap_err()
            .contains("`a: i64` is required"));
        let wrong = check("f", &p, false, &given(&[("a", Value::String("1".into()))])).unwrap_err();
        assert!(wrong.contains("declared `i64`, got a string"), "{wrong}");
        let extra = check(
            "f",
            &p,
            false,
            &given(&[("a", Value::I64(1)), ("c", Value::Bool(true))]),
        )
        .unwrap_err();
        assert_eq!(extra, "unknown parameter `c` of `f`");
        // A misspelling is named before the required parameter it misses.
        let typo = check("f", &p, false, &given(&[("aa", Value::I64(1))])).unwrap_err();
        assert_eq!(typo, "unknown parameter `aa` of `f`; did you mean `a`?");
        assert!(check(
            "f",
            &p,
            true,
            &given(&[("a", Value::I64(1)), ("c", Value::Bool(true))])
        )
        .is_ok());
    }

    fn given(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_trailing_rest_marks_extra_parameters() {
        let sig = "(text: &str, ..) -> String";
        let p = params(sig).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].kind), ("text", ParamKind::Text));
        assert!(takes_extra(sig));
        assert!(takes_extra("(..) -> i64"));
        assert_eq!(params("(..) -> i64").unwrap(), []);
        assert!(!takes_extra("(text: &str) -> String"));
        // `..` is only ever written last.
        assert_eq!(params("(.., text: &str)"), None);
        assert_eq!(Accepts::of(sig), Accepts::Any);
        assert_eq!(Accepts::of("hand-written"), Accepts::Any);
        assert_eq!(
            Accepts::of("(a: i64, b: Vec<(u8, u8)>)"),
            Accepts::Declared(["a".into(), "b".into()].into())
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_closest_declared_one() {
        let accepts = Accepts::of("(word: &str, limit: Option<u32>) -> u64");
        let ok = given(&[("word", Value::String("x".into()))]);
        assert!(accepts.check("tally", &ok).is_ok());
        let typo = given(&[("wrd", Value::String("x".into()))]);
        let err = accepts.check("tally", &typo).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown parameter `wrd` of `tally`; did you mean `word`?"
        );
        assert!(matches!(
            &err,
            Error::UnknownParameter { function, name, suggestion }
                if function == "tally" && name == "wrd" && suggestion.as_deref() == Some("word")
        ));
        let far = given(&[("word", Value::Unit), ("extra", Value::I64(1))]);
        let err = accepts.check("tally", &far).unwrap_err();
        assert_eq!(err.to_string(), "unknown parameter `extra` of `tally`");
        assert!(Accepts::Any.check("tally", &far).is_ok());
        assert!(Accepts::of("() -> u64")
            .check("none", &given(&[("x", Value::Unit)]))
            .is_err());
    }

    #[test]
    fn suggestions_are_near_misses_only() {
        let names = ["word", "limit", "text"];
        assert_eq!(closest("wrd", names.into_iter()), Some("word"));
        assert_eq!(closest("lmit", names.into_iter()), Some("limit"));
        assert_eq!(closest("txet", names.into_iter()), Some("text"));
        assert_eq!(closest("extra", names.into_iter()), None);
        assert_eq!(closest("a", ["b"].into_iter()), None);
        assert_eq!(closest("ab", ["ac"].into_iter()), Some("ac"));
        assert_eq!(closest("x", [].into_iter()), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("naïve", "naive"), 1);
    }
}
