//! Opening a library's root module: `dlopen`, then abi_stable's version
//! and layout checks, each failure mapped to the error that names it.

use std::path::Path;

use spear_plugin_sdk::ffi::abi::{lib_header_from_path, LibraryError};
use spear_plugin_sdk::ffi::{init_root_module, PluginModRef, ROOT_MODULE_SYMBOL};

use super::verified::VerifiedFile;
use crate::error::Error;
use crate::error::Result;

/// dlopen + abi_stable's version and layout checks, with errors mapped.
pub(super) fn open(file: &VerifiedFile) -> Result<(PluginModRef, String)> {
    let path = file.path();
    let loader_path = file.loader_path();
    let header =
        lib_header_from_path(&loader_path).map_err(|e| library_error(path, &loader_path, e))?;
    if header.layout().is_none() {
        // Built with `CheckTypeLayout::No`: abi_stable would take the root
        // module's layout on trust.
        return Err(Error::LayoutUnchecked {
            path: path.to_owned(),
        });
    }
    let module = init_root_module(header).map_err(|e| library_error(path, &loader_path, e))?;
    Ok((module, header.version_strings().version.as_str().to_owned()))
}

fn library_error(path: &Path, loader_path: &Path, err: LibraryError) -> Error {
    let path = path.to_owned();
    match err {
        LibraryError::OpenError { err, .. } => Error::NotSharedLibrary {
            reason: {
                // dlerror names the /proc/self/fd path; the caller's path is already in the message.
                let text = err.to_string();
                let prefix = format!("{}: ", loader_path.display());
                text.strip_prefix(&prefix)
                    .map_or(text.clone(), str::to_owned)
            },
            path,
        },
        LibraryError::GetSymbolError { .. } => Error::NoRootModule {
            path,
            symbol: ROOT_MODULE_SYMBOL,
        },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => Error::IncompatibleSdk {
            path,
            expected: format!("{}.x (>= {expected_version})", expected_version.major),
            actual: actual_version.to_string(),
        },
        LibraryError::ParseVersionError(e) => Error::IncompatibleSdk {
            path,
            expected: spear_plugin_sdk::ffi::ABI_VERSION.to_owned(),
            actual: format!("an unreadable ABI version ({e})"),
        },
        LibraryError::InvalidAbiHeader(found) => Error::IncompatibleSdk {
            path,
            expected: "a plugin built with abi_stable 0.11".to_owned(),
            actual: format!("abi_stable header {found:?}"),
        },
        LibraryError::AbiInstability(details) => {
            let details = details.to_string();
            Error::LayoutMismatch {
                path,
                summary: summarize_layout_report(&details),
                details,
            }
        }
        LibraryError::InvalidCAbi { expected, found } => Error::LayoutMismatch {
            path,
            summary: "the C ABI differs".to_owned(),
            details: format!("expected {expected}, found {found}"),
        },
        LibraryError::RootModule { err, .. } => Error::RootModuleFailed {
            path,
            details: err.to_string(),
        },
        LibraryError::Many(mut errors) if !errors.is_empty() => {
            library_error(&path, loader_path, errors.remove(0))
        }
        other => Error::RootModuleFailed {
            path,
            details: other.to_string(),
        },
    }
}

/// Boils abi_stable's layout report (a page per type compared) down to its
/// `Error:` entries, e.g. `mismatched package (expected: a, found: b)`.
fn summarize_layout_report(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(what) = line.strip_prefix("Error:") else {
            continue;
        };
        let mut entry = what.trim().to_owned();
        let mut rest = lines[i + 1..].iter().filter(|l| !l.is_empty());
        if let (Some(&"Expected:"), Some(expected), Some(&"Found:"), Some(found)) =
            (rest.next(), rest.next(), rest.next(), rest.next())
        {
            entry.push_str(&format!(" (expected: {expected}, found: {found})"));
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        "see the full report (`spearlet plugin inspect --verbose`)".to_owned()
    } else {
        entries.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_report_is_summarised_to_its_errors() {
        let report = "Compared <this>:\n  --- Type Layout ---\n\nError:mismatched package\nExpected:\n    spear-plugin-sdk\nFound:\n    other\n";
        assert_eq!(
            summarize_layout_report(report),
            "mismatched package (expected: spear-plugin-sdk, found: other)"
        );
        assert!(summarize_layout_report("nothing useful").contains("--verbose"));
    }
}
