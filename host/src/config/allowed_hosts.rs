//! `artifacts.allowed_hosts`, parsed: the hosts http(s) artifacts may come
//! from. Parsed when the configuration is validated (so `--check-config`
//! names a bad pattern) and again when the artifact store opens, which
//! checks every download and redirect against it.

use url::Url;

use crate::error::{Error, Result};

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
    pub(crate) fn check(&self, location: &str, url: &Url) -> Result<()> {
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
pub(crate) fn host_and_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
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
