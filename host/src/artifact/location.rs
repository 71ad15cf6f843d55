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

/// The hosts http(s) artifacts may come from (`artifacts.allowed_hosts`),
/// parsed once when the store opens.
///
/// A pattern is a host name or address, exact (`plugins.example.com`,
/// `10.0.0.5`, `[::1]`), or `*.example.com` for every name below
/// `example.com` (not `example.com` itself); either may end in `:PORT`,
/// matched against the URL's port or its scheme's default. Names are
/// compared as the URL writes them, after the URL parser's normalisation
/// (lower case, punycode): nothing is resolved, so `localhost` does not
/// allow `127.0.0.1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    patterns: Vec<HostPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    name: HostName,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    Exact(url::Host<String>),
    /// `.example.com` for `*.example.com`: a name must end with it.
    Below(String),
}

impl AllowedHosts {
    /// Parses `artifacts.allowed_hosts`.
    ///
    /// # Errors
    ///
    /// A message naming the first invalid pattern and what is wrong with it.
    pub fn parse(patterns: &[String]) -> std::result::Result<AllowedHosts, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                HostPattern::parse(p).map_err(|why| {
                    format!("artifacts.allowed_hosts: `{p}` is not a host pattern: {why}")
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(AllowedHosts { patterns })
    }

    /// Whether `url`'s host (and port) is allowed.
    pub fn permits(&self, url: &Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        let port = url.port_or_known_default();
        self.patterns.iter().any(|p| {
            let name = match (&p.name, &host) {
                (HostName::Exact(allowed), host) => *allowed == host.to_owned(),
                (HostName::Below(suffix), url::Host::Domain(name)) => {
                    name.ends_with(suffix.as_str())
                }
                (HostName::Below(_), _) => false,
            };
            name && p.port.is_none_or(|allowed| Some(allowed) == port)
        })
    }

    /// `Ok` when `url` may be fetched for `location`.
    ///
    /// # Errors
    ///
    /// [`Error::HostNotAllowed`], naming the host and port.
    pub(super) fn check(&self, location: &str, url: &Url) -> Result<()> {
        if self.permits(url) {
            return Ok(());
        }
        Err(Error::HostNotAllowed {
            location: location.to_owned(),
            host: host_and_port(url),
        })
    }
}

/// `HOST:PORT` of `url`, the port its scheme's default when it names none.
pub(super) fn host_and_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Whether `a` and `b` are on one host and port.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

impl HostPattern {
    fn parse(text: &str) -> std::result::Result<HostPattern, String> {
        if text.is_empty() || text.trim() != text {
            return Err("it is empty or has spaces around it".to_owned());
        }
        if text.contains("://") || text.contains('/') {
            return Err("name a host, optionally with :PORT, not a URL".to_owned());
        }
        let (host, port) = split_port(text)?;
        let name = match host.strip_prefix("*.") {
            Some(below) => {
                if below.contains('*') {
                    return Err(
                        "`*` may only be the whole first label, as in `*.example.com`".into(),
                    );
                }
                match url::Host::parse(below).map_err(|e| e.to_string())? {
                    url::Host::Domain(domain) => HostName::Below(format!(".{domain}")),
                    _ => {
                        return Err("`*.` must be followed by a domain name, not an address".into())
                    }
                }
            }
            None if host.contains('*') => {
                return Err("`*` may only be the whole first label, as in `*.example.com`".into())
            }
            // A bare IPv6 address: the URL parser wants it bracketed.
            None if host.contains(':') && !host.starts_with('[') => {
                HostName::Exact(url::Host::parse(&format!("[{host}]")).map_err(|e| e.to_string())?)
            }
            None => HostName::Exact(url::Host::parse(host).map_err(|e| e.to_string())?),
        };
        Ok(HostPattern { name, port })
    }
}

/// `host[:port]`, `[v6][:port]`, or a bare IPv6 address.
fn split_port(text: &str) -> std::result::Result<(&str, Option<u16>), String> {
    let (host, port) = if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or("an IPv6 address needs its closing `]`")?;
        let rest = &text[end + 1..];
        match rest.strip_prefix(':') {
            Some(port) => (&text[..=end], Some(port)),
            None if rest.is_empty() => (text, None),
            None => return Err(format!("unexpected `{rest}` after the address")),
        }
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').unwrap_or((text, ""));
        (host, Some(port))
    } else {
        (text, None)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("`{p}` is not a port (1 to 65535)")),
            Ok(n) => Some(n),
        },
    };
    if host.is_empty() {
        return Err("it names no host".to_owned());
    }
    Ok((host, port))
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
