//! Where an artifact comes from, and whether it may come from there.

use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{Error, Result};

/// A parsed artifact location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    /// A file on this machine (absolute path or `file://`).
    Local(PathBuf),
    /// An `http://` or `https://` URL.
    Http(Url),
    /// A file held by the SMS file API, by id.
    SmsFile(String),
}

const ACCEPTED: &str =
    "expected an absolute path, file://PATH, http(s)://URL, sms+file://ID or smsfile://ID";

impl Location {
    pub(super) fn parse(location: &str) -> Result<Location> {
        let unsupported = |reason: String| Error::UnsupportedLocation {
            location: location.to_owned(),
            reason,
        };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(unsupported(format!("the location is empty; {ACCEPTED}")));
        }
        for prefix in ["sms+file://", "smsfile://"] {
            if let Some(id) = trimmed.strip_prefix(prefix) {
                let valid = !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && id != "."
                    && id != "..";
                if !valid {
                    return Err(unsupported(format!("`{id}` is not an SMS file id")));
                }
                return Ok(Location::SmsFile(id.to_owned()));
            }
        }
        if trimmed.starts_with('/') {
            return Ok(Location::Local(PathBuf::from(trimmed)));
        }
        let url = Url::parse(trimmed).map_err(|e| unsupported(format!("{e}; {ACCEPTED}")))?;
        match url.scheme() {
            "http" | "https" => Ok(Location::Http(url)),
            "file" => url
                .to_file_path()
                .map(Location::Local)
                .map_err(|()| unsupported("a file:// URL must name an absolute local path".into())),
            other => Err(unsupported(format!(
                "scheme `{other}` is not supported; {ACCEPTED}"
            ))),
        }
    }
}

/// Resolves `path` (following `..` and symlinks) and checks it lies inside
/// one of `roots`.
pub(super) fn confine(location: &str, path: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let denied = |reason: String| Error::PermissionDenied {
        location: location.to_owned(),
        reason,
    };
    if roots.is_empty() {
        return Err(denied(
            "no artifact roots are configured, so local artifacts are refused \
             (set `artifacts.roots` or pass --artifact-root)"
                .to_owned(),
        ));
    }
    let real = path.canonicalize().map_err(|e| Error::io(path, e))?;
    let inside = roots.iter().any(|root| {
        root.canonicalize()
            .map(|root| real.starts_with(root))
            .unwrap_or(false)
    });
    if inside {
        Ok(real)
    } else {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(denied(format!(
            "it resolves to {}, outside the artifact roots ({})",
            real.display(),
            roots.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(
            Location::parse("/a/b.so").unwrap(),
            Location::Local("/a/b.so".into())
        );
        assert_eq!(
            Location::parse("file:///a/b.so").unwrap(),
            Location::Local("/a/b.so".into())
        );
        assert!(matches!(
            Location::parse("https://x.test/p.so").unwrap(),
            Location::Http(_)
        ));
        assert_eq!(
            Location::parse("sms+file://abc-1").unwrap(),
            Location::SmsFile("abc-1".into())
        );
        assert_eq!(
            Location::parse("smsfile://abc-1").unwrap(),
            Location::SmsFile("abc-1".into())
        );
    }

    #[test]
    fn refuses_the_rest_with_reasons() {
        for bad in [
            "",
            "relative/p.so",
            "s3://bucket/p.so",
            "sms+file://../x",
            "smsfile://",
        ] {
            match Location::parse(bad) {
                Err(Error::UnsupportedLocation { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
