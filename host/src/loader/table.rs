//! A plugin's function table as the host keeps it: each function's name,
//! kind and hints read once at load, the handles calls use instead of
//! names, and the checks on the table (no name twice, a default inside
//! it). Kept apart from the library that holds it: none of this touches
//! the loaded code.

use std::collections::HashMap;
use std::fmt;

use foldhash::fast::RandomState;
use spear_plugin_sdk::ffi::{FfiFunctionHints, FfiFunctionKind, PluginModRef};

use super::verified::VerifiedFile;
use crate::error::{Error, Result};

/// Whether a function returns one value or a stream of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// Returns one value.
    Unary,
    /// Emits chunks, then returns.
    Stream,
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionKind::Unary => "unary",
            FunctionKind::Stream => "stream",
        })
    }
}

/// One entry of a plugin's function table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The name clients call it by.
    pub name: String,
    /// Unary or stream.
    pub kind: FunctionKind,
    /// What it does (may be empty).
    pub description: String,
    /// Parameters and output, e.g. `(a: i64, b: i64) -> i64`.
    pub signature: String,
    /// Marked `#[function(blocking)]`: never run on the calling thread.
    pub blocking: bool,
}

/// A function resolved once by name; calling it is an index into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionHandle {
    pub(super) index: u32,
    pub(super) kind: FunctionKind,
}

impl FunctionHandle {
    /// Unary or stream.
    pub fn kind(&self) -> FunctionKind {
        self.kind
    }

    /// Its position in the plugin's function table.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// The plugin's function table, with each function's hints (none for a
/// plugin that predates ABI 1.1); a hints table of another length is
/// refused.
pub(super) fn function_infos(
    file: &VerifiedFile,
    module: PluginModRef,
) -> Result<Vec<FunctionInfo>> {
    let table = module.functions();
    let hints: &[FfiFunctionHints] = match module.function_hints() {
        Some(hints) if hints.len() != table.len() => {
            return Err(Error::RootModuleFailed {
                path: file.path().to_owned(),
                details: format!(
                    "its function_hints table has {} entries for {} functions",
                    hints.len(),
                    table.len()
                ),
            })
        }
        Some(hints) => hints.as_slice(),
        // A plugin that predates ABI 1.1: no hints.
        None => &[],
    };
    Ok(table
        .iter()
        .enumerate()
        .map(|(i, d)| FunctionInfo {
            name: d.name.as_str().to_owned(),
            kind: match d.kind {
                FfiFunctionKind::Unary => FunctionKind::Unary,
                FfiFunctionKind::Stream => FunctionKind::Stream,
            },
            description: d.description.as_str().to_owned(),
            signature: d.signature.as_str().to_owned(),
            blocking: hints.get(i).is_some_and(|h| h.blocking),
        })
        .collect())
}

/// The table's handles by name; a name twice is refused.
pub(super) fn index_by_name(
    plugin: &str,
    functions: &[FunctionInfo],
) -> Result<HashMap<String, FunctionHandle, RandomState>> {
    let mut by_name = HashMap::with_capacity_and_hasher(functions.len(), RandomState::default());
    for (index, f) in functions.iter().enumerate() {
        let handle = FunctionHandle {
            index: u32::try_from(index).expect("function tables are far smaller than u32::MAX"),
            kind: f.kind,
        };
        if by_name.insert(f.name.clone(), handle).is_some() {
            return Err(Error::DuplicateFunction {
                plugin: plugin.to_owned(),
                function: f.name.clone(),
            });
        }
    }
    Ok(by_name)
}

/// The handle of the function a plugin marks as its default; an index
/// outside its table is refused (the message says why).
pub(super) fn default_handle(
    plugin: &str,
    functions: &[FunctionInfo],
    marked: Option<usize>,
) -> std::result::Result<Option<FunctionHandle>, String> {
    let Some(index) = marked else {
        return Ok(None);
    };
    match functions.get(index) {
        Some(f) => Ok(Some(FunctionHandle {
            index: u32::try_from(index).expect("function tables are far smaller than u32::MAX"),
            kind: f.kind,
        })),
        None => Err(format!(
            "plugin `{plugin}` marks function number {index} as its default, but it has {} functions",
            functions.len()
        )),
    }
}
