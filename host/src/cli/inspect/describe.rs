//! What `plugin inspect` says about a loaded plugin: as text, each
//! function's Rust signature with, under it, the types a client sends and
//! receives (its wire types); or as one JSON object.

use std::io::Write;

use serde::Serialize;
use spearlet::loader::{FunctionKind, Plugin};
use spearlet::signature::ParamKind;

/// The type a value of Rust type `ty` has on the wire (a
/// `google.protobuf` wrapper), as a client sees it: every integer is an
/// `i64`, every float an `f64` (a double). `None` for `()`: nothing comes
/// back. `Option<T>` is `T`'s (a missing value is left out). Any other
/// type (`Value`, a message) is passed through as it comes: `any`.
pub(super) fn wire_type(ty: &str) -> Option<&'static str> {
    let ty = ty.trim();
    if ty.is_empty() || ty == "()" {
        return None;
    }
    // The host's own reading of a declared type, on a one-parameter list.
    let kind = spearlet::signature::params(&format!("(x: {ty})"))
        .and_then(|p| p.into_iter().next())
        .map_or(ParamKind::Other, |p| p.kind);
    Some(match kind {
        ParamKind::Integer => "i64",
        ParamKind::Float => "f64",
        ParamKind::Bool => "bool",
        ParamKind::Text => "string",
        ParamKind::Bytes => "bytes",
        ParamKind::Other => "any",
    })
}

/// A signature split into its parameter list (without parentheses) and
/// its output type (empty when it returns nothing); `None` when it is not
/// in the form the SDK writes.
fn split(signature: &str) -> Option<(&str, &str)> {
    let inner = signature.trim().strip_prefix('(')?;
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' if depth == 0 => {
                let rest = inner[i + 1..].trim();
                let output = match rest.strip_prefix("->") {
                    Some(output) => output.trim(),
                    None if rest.is_empty() => "",
                    None => return None,
                };
                return Some((&inner[..i], output));
            }
            ')' | '>' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A declared stream's output, `Stream<T>` or `Stream<T, R>`, as its chunk
/// type `T` and what it returns when its chunks are done (`()` for none);
/// `None` for any other output (a stream that declares no chunk type
/// shows its return type alone, `()`).
fn stream_output(output: &str) -> Option<(&str, &str)> {
    let inner = output.strip_prefix("Stream<")?.strip_suffix('>')?;
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return Some((inner[..i].trim(), inner[i + 1..].trim())),
            _ => {}
        }
    }
    Some((inner.trim(), "()"))
}

/// A function's output read from its signature: its chunk type, when it
/// is a stream that declares one, and its return type (`()` for none).
fn outputs(signature: &str, kind: FunctionKind) -> Option<(Option<&str>, &str)> {
    let (_, output) = split(signature)?;
    Some(match (kind, stream_output(output)) {
        (FunctionKind::Stream, Some((chunk, returns))) => (Some(chunk), returns),
        (_, _) if output.is_empty() => (None, "()"),
        (_, _) => (None, output),
    })
}

/// One parameter in JSON.
#[derive(Serialize)]
struct ParamView {
    name: String,
    r#type: String,
    wire_type: Option<&'static str>,
    optional: bool,
}

/// One function in JSON.
#[derive(Serialize)]
struct FunctionView<'a> {
    name: &'a str,
    kind: String,
    signature: &'a str,
    /// `null` when the signature is not in the form the SDK writes.
    params: Option<Vec<ParamView>>,
    /// It reads parameters beyond `params` too (its signature ends in `..`).
    extra_params: bool,
    /// The Rust type of the result (`()` for none); for a stream, what the
    /// function returns when its chunks are done.
    returns: Option<&'a str>,
    returns_wire_type: Option<&'static str>,
    /// For a stream declaring it (`#[function(stream(T))]`), the Rust type
    /// of its chunks and their wire type; `null` otherwise.
    chunk_type: Option<&'a str>,
    chunk_wire_type: Option<&'static str>,
    blocking: bool,
    default: bool,
    description: &'a str,
}

/// A plugin in JSON (one line per plugin file).
#[derive(Serialize)]
struct PluginView<'a> {
    file: String,
    sha256: String,
    plugin: &'a str,
    version: &'a str,
    sdk_version: &'a str,
    abi_version: &'a str,
    needs: &'a [String],
    functions: Vec<FunctionView<'a>>,
}

pub(super) fn json(out: &mut impl Write, plugin: &Plugin) -> anyhow::Result<()> {
    let default = plugin.default_function().map(|f| f.index());
    let functions = plugin
        .functions()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let outputs = outputs(&f.signature, f.kind);
            let returns = outputs.map(|(_, returns)| returns);
            let chunk_type = outputs.and_then(|(chunk, _)| chunk);
            FunctionView {
                name: &f.name,
                kind: f.kind.to_string(),
                signature: &f.signature,
                params: spearlet::signature::params(&f.signature).map(|params| {
                    params
                        .into_iter()
                        .map(|p| ParamView {
                            wire_type: wire_type(&p.ty),
                            name: p.name,
                            r#type: p.ty,
                            optional: p.optional,
                        })
                        .collect()
                }),
                extra_params: split(&f.signature)
                    .is_some_and(|(list, _)| list.trim_end().ends_with("..")),
                returns_wire_type: returns.and_then(wire_type),
                returns,
                chunk_wire_type: chunk_type.and_then(wire_type),
                chunk_type,
                blocking: f.blocking,
                default: default == Some(i),
                description: &f.description,
            }
        })
        .collect();
    let view = PluginView {
        file: plugin.path().display().to_string(),
        sha256: plugin.digest().to_hex(),
        plugin: plugin.name(),
        version: plugin.version(),
        sdk_version: plugin.sdk_version(),
        abi_version: plugin.abi_version(),
        needs: plugin.needed_libraries(),
        functions,
    };
    writeln!(out, "{}", serde_json::to_string(&view)?)?;
    Ok(())
}

/// The signature as a client sees it, each type its wire type:
/// `(a: u32, s: &str) -> Vec<u8>` is `(a: i64, s: string) -> bytes`; a
/// stream's chunks are `a stream of` their declared type's wire type
/// (`Stream<u8>`: `a stream of i64`), or `a stream of any` when it declares
/// none. `None` when the signature cannot be read.
fn wire_signature(signature: &str, kind: FunctionKind) -> Option<String> {
    let (list, _) = split(signature)?;
    let (chunk, output) = outputs(signature, kind)?;
    let mut shown: Vec<String> = spearlet::signature::params(signature)?
        .iter()
        .map(|p| {
            let optional = if p.optional { " (optional)" } else { "" };
            format!("{}: {}{optional}", p.name, wire_type(&p.ty).unwrap_or("-"))
        })
        .collect();
    // `..`: parameters beyond the named ones are read too.
    if list.trim_end().ends_with("..") {
        shown.push("..".to_owned());
    }
    let returns = match (kind, wire_type(output)) {
        // Without `stream(T)` nothing declares what a stream emits: each
        // chunk arrives with its own type.
        (FunctionKind::Stream, _) => {
            format!("a stream of {}", chunk.and_then(wire_type).unwrap_or("any"))
        }
        (FunctionKind::Unary, Some(wire)) => wire.to_owned(),
        (FunctionKind::Unary, None) => "nothing".to_owned(),
    };
    Some(format!("({}) -> {returns}", shown.join(", ")))
}

pub(super) fn text(out: &mut impl Write, plugin: &Plugin) -> std::io::Result<()> {
    writeln!(out, "file:      {}", plugin.path().display())?;
    writeln!(out, "sha256:    {}", plugin.digest())?;
    writeln!(out, "plugin:    {} {}", plugin.name(), plugin.version())?;
    writeln!(
        out,
        "sdk:       spear-plugin-sdk {} (plugin ABI {})",
        plugin.sdk_version(),
        plugin.abi_version()
    )?;
    writeln!(out, "needs:     {}", plugin.needed_libraries().join(", "))?;
    writeln!(out, "functions:")?;
    let calls: Vec<String> = plugin
        .functions()
        .iter()
        .map(|f| format!("{}{}", f.name, f.signature))
        .collect();
    let width = calls.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let any_blocking = plugin.functions().iter().any(|f| f.blocking);
    let default = plugin.default_function().map(|f| f.index());
    for (i, (f, call)) in plugin.functions().iter().zip(&calls).enumerate() {
        let mut kind = match (any_blocking, f.blocking) {
            (true, true) => format!("{:<6}  blocking", f.kind.to_string()),
            (true, false) => format!("{:<6}          ", f.kind.to_string()),
            (false, _) => format!("{:<6}", f.kind.to_string()),
        };
        // The function `#[function(default)]` marks: what a call naming
        // none gets, unless its task names another.
        match default {
            Some(d) if d == i => kind.push_str("  default"),
            Some(_) => kind.push_str("         "),
            None => {}
        }
        if f.description.is_empty() {
            writeln!(out, "  {call:<width$}  {kind}")?;
        } else {
            writeln!(out, "  {call:<width$}  {kind}  {}", f.description)?;
        }
        // What a client sends and receives, under the Rust types.
        if let Some(wire) = wire_signature(&f.signature, f.kind) {
            writeln!(out, "      wire {wire}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_types_are_what_a_client_receives() {
        for (rust, wire) in [
            ("u32", Some("i64")),
            ("i64", Some("i64")),
            ("f32", Some("f64")),
            ("&str", Some("string")),
            ("String", Some("string")),
            ("&[u8]", Some("bytes")),
            ("Vec<u8>", Some("bytes")),
            ("bool", Some("bool")),
            ("Option<u8>", Some("i64")),
            ("Value", Some("any")),
            ("()", None),
            ("", None),
        ] {
            assert_eq!(wire_type(rust), wire, "{rust}");
        }
    }

    #[test]
    fn a_stream_output_is_its_chunk_type_and_its_return() {
        use FunctionKind::{Stream, Unary};
        assert_eq!(
            outputs("(n: i64) -> Stream<i64>", Stream),
            Some((Some("i64"), "()"))
        );
        assert_eq!(
            outputs("(n: i64) -> Stream<Option<(u8, u8)>, Vec<u8>>", Stream),
            Some((Some("Option<(u8, u8)>"), "Vec<u8>"))
        );
        assert_eq!(outputs("(n: i64) -> ()", Stream), Some((None, "()")));
        assert_eq!(outputs("(n: i64)", Unary), Some((None, "()")));
        assert_eq!(
            outputs("() -> Stream<i64>", Unary),
            Some((None, "Stream<i64>"))
        );
    }

    #[test]
    fn signatures_read_as_a_client_sees_them() {
        use FunctionKind::{Stream, Unary};
        let wire = |sig: &str, kind| wire_signature(sig, kind);
        assert_eq!(
            wire("(a: u32, s: Option<&str>) -> Vec<u8>", Unary).as_deref(),
            Some("(a: i64, s: string (optional)) -> bytes")
        );
        assert_eq!(wire("()", Unary).as_deref(), Some("() -> nothing"));
        assert_eq!(
            wire("(n: i64) -> ()", Stream).as_deref(),
            Some("(n: i64) -> a stream of any")
        );
        assert_eq!(
            wire("(n: i64) -> Stream<u8>", Stream).as_deref(),
            Some("(n: i64) -> a stream of i64")
        );
        assert_eq!(
            wire("(w: &str) -> Stream<Vec<u8>, String>", Stream).as_deref(),
            Some("(w: string) -> a stream of bytes")
        );
        assert_eq!(wire("odd", Unary), None);
    }
}
