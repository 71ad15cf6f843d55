//! What a client says about an artifact, and its validation.

use std::collections::BTreeMap;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// An artifact as clients describe it (the wire contract's `ArtifactSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// The client's id for it (informational).
    pub artifact_id: String,
    /// The kind of artifact: `native`, `dylib`, `so` or `binary` (any case);
    /// empty means `native`.
    pub artifact_type: String,
    /// Where to get it: an absolute path, `file://`, `http(s)://`,
    /// `sms+file://ID` or `smsfile://ID`.
    pub location: String,
    /// A version label (SPEAR's clients send one, e.g. `1.0.0`): recorded,
    /// not enforced. `metadata["plugin_version"]` enforces a version.
    pub version: String,
    /// Its sha256, as hex, optionally prefixed `sha256:`.
    pub checksum: String,
    /// Free-form metadata; `plugin_name` and `plugin_version` name the plugin
    /// it must contain.
    pub metadata: BTreeMap<String, String>,
}

/// The artifact types spearlet accepts: native shared libraries.
pub const ACCEPTED_TYPES: &str = "native, dylib, so, binary";

impl ArtifactSpec {
    /// A spec for the artifact at `location`, other fields empty.
    pub fn at(location: impl Into<String>) -> Self {
        ArtifactSpec {
            location: location.into(),
            ..ArtifactSpec::default()
        }
    }

    /// The same spec with this checksum.
    pub fn with_checksum(self, checksum: impl Into<String>) -> Self {
        ArtifactSpec {
            checksum: checksum.into(),
            ..self
        }
    }

    /// Checks the type and parses the checksum.
    pub(super) fn checked_digest(&self) -> Result<Option<Sha256Digest>> {
        let kind = self.artifact_type.trim();
        let accepted = ["", "native", "dylib", "so", "binary"];
        if !accepted.iter().any(|k| kind.eq_ignore_ascii_case(k)) {
            return Err(Error::UnsupportedArtifactType {
                artifact_type: self.artifact_type.clone(),
                accepted: ACCEPTED_TYPES,
            });
        }
        if self.checksum.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(self.checksum.parse()?))
    }

    /// Whether it names a file on this machine (a path or `file://`), which
    /// other machines cannot read.
    pub fn is_local(&self) -> bool {
        self.local_path().is_some()
    }

    /// The file it names on this machine, if it names one.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        match super::location::Location::parse(&self.location) {
            Ok(super::location::Location::Local(path)) => Some(path),
            _ => None,
        }
    }

    /// The plugin name and version this spec requires, if any: only what
    /// the metadata asks for explicitly. The `version` field is a label.
    pub(super) fn expected_identity(&self) -> (Option<&str>, Option<&str>) {
        let explicit = |key: &str| {
            self.metadata
                .get(key)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
        };
        (explicit("plugin_name"), explicit("plugin_version"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_native_types_are_accepted() {
        for ok in ["", "native", "DYLIB", " so ", "Binary"] {
            let spec = ArtifactSpec {
                artifact_type: ok.into(),
                ..ArtifactSpec::at("/x")
            };
            assert!(spec.checked_digest().is_ok(), "{ok:?}");
        }
        let wasm = ArtifactSpec {
            artifact_type: "wasm".into(),
            ..ArtifactSpec::at("/x")
        };
        match wasm.checked_digest() {
            Err(e @ Error::UnsupportedArtifactType { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("native plugins") && msg.contains(ACCEPTED_TYPES),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn identity_comes_from_metadata_only() {
        let mut spec = ArtifactSpec::at("/x");
        assert_eq!(spec.expected_identity(), (None, None));
        spec.version = "1.2.0".into();
        assert_eq!(spec.expected_identity(), (None, None), "a label only");
        spec.metadata.insert("plugin_name".into(), "math".into());
        assert_eq!(spec.expected_identity(), (Some("math"), None));
        spec.metadata
            .insert("plugin_version".into(), "2.0.0".into());
        assert_eq!(spec.expected_identity(), (Some("math"), Some("2.0.0")));
    }
}
