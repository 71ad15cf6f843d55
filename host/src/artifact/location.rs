//! Where an artifact comes from, and whether it may come from there.

use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{Error, Result};

pub(super) use crate::config::host_and_port;

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

/// Whether `a` and `b` are on one host and port.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
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
        // Absolute, as the path above is: a relative root reads as if it
        // held a path it does not.
        let roots: Vec<String> = roots
            .iter()
            .map(|r| {
                r.canonicalize()
                    .unwrap_or_else(|_| r.clone())
                    .display()
                    .to_string()
            })
            .collect();
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
    use crate::config::AllowedHosts;

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

    fn allowed(patterns: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn no_patterns_allow_no_host() {
        let none = allowed(&[]);
        for u in ["http://127.0.0.1/p.so", "https://example.com/p.so"] {
            assert!(!none.permits(&url(u)), "{u}");
        }
    }

    #[test]
    fn exact_hosts_match_that_host_only_in_any_case() {
        let list = allowed(&["Plugins.Example.com", "10.0.0.5", "[::1]", "fe80::2"]);
        for ok in [
            "https://plugins.example.com/p.so",
            "http://PLUGINS.example.com:8080/p.so",
            "http://10.0.0.5:9000/p.so",
            "http://[::1]:1/p.so",
            "http://[fe80::2]/p.so",
        ] {
            assert!(list.permits(&url(ok)), "{ok}");
        }
        for refused in [
            "https://example.com/p.so",
            "https://evil.plugins.example.com/p.so",
            "https://plugins.example.com.evil.test/p.so",
            "http://10.0.0.50/p.so",
            "http://127.0.0.1/p.so",
        ] {
            assert!(!list.permits(&url(refused)), "{refused}");
        }
    }

    #[test]
    fn a_wildcard_matches_names_below_its_suffix_only() {
        let list = allowed(&["*.example.com"]);
        for ok in ["https://a.example.com/p.so", "https://a.b.example.com/p.so"] {
            assert!(list.permits(&url(ok)), "{ok}");
        }
        for refused in [
            "https://example.com/p.so",
            "https://badexample.com/p.so",
            "https://example.com.evil.test/p.so",
            "https://a.example.org/p.so",
        ] {
            assert!(!list.permits(&url(refused)), "{refused}");
        }
    }

    #[test]
    fn a_port_matches_the_urls_port_or_its_schemes_default() {
        let list = allowed(&["example.com:443", "*.internal.test:8080", "127.0.0.1:9000"]);
        for ok in [
            "https://example.com/p.so",
            "http://example.com:443/p.so",
            "http://a.internal.test:8080/p.so",
            "http://127.0.0.1:9000/p.so",
        ] {
            assert!(list.permits(&url(ok)), "{ok}");
        }
        for refused in [
            "http://example.com/p.so",
            "https://example.com:8443/p.so",
            "http://a.internal.test/p.so",
            "http://127.0.0.1:9001/p.so",
        ] {
            assert!(!list.permits(&url(refused)), "{refused}");
        }
    }

    #[test]
    fn a_refusal_names_the_host_and_port() {
        let err = allowed(&["example.com"])
            .check("http://evil.test/p.so", &url("http://evil.test/p.so"))
            .unwrap_err();
        match &err {
            Error::HostNotAllowed { host, .. } => assert_eq!(host, "evil.test:80"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("artifacts.allowed_hosts"), "{err}");
    }

    #[test]
    fn invalid_patterns_are_refused_naming_them() {
        for bad in [
            "",
            " example.com",
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "*.10.0.0.1",
            "http://example.com",
            "example.com/plugins",
            "example.com:0",
            "example.com:http",
            "example.com:70000",
            ":8080",
            "[::1",
            "[::1]x",
        ] {
            let err = AllowedHosts::parse(&[bad.to_owned()]).unwrap_err();
            assert!(
                err.contains("artifacts.allowed_hosts") && err.contains(&format!("`{bad}`")),
                "{bad:?}: {err}"
            );
        }
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
