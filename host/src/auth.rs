//! Bearer tokens: who may call.
//!
//! Tokens are kept only as sha256 digests and compared in constant time
//! against every known digest, so neither the comparison nor the set's
//! order says how close a wrong token came.
//!
//! The set can be replaced while the server runs ([`Tokens::reload`], on
//! SIGHUP in `spearlet serve`): a token can be revoked or rotated without a
//! restart, and without dropping a connection — each call is checked
//! against the set current when it arrives.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::error::{Error, Result};

type Digests = Arc<[[u8; 32]]>;

/// The tokens a server accepts (cheap to clone; clones share one set, which
/// [`Tokens::reload`] replaces for all of them at once).
#[derive(Clone)]
pub struct Tokens {
    digests: Arc<RwLock<Digests>>,
    /// Where they were read from, to read again on reload.
    file: Option<Arc<PathBuf>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} known)", self.count())
    }
}

/// The token of an `authorization` header's value: `Bearer TOKEN`.
pub fn bearer(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
}

impl Tokens {
    /// The tokens in `path`, one per line; blank lines and `#` comments are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; [`Error::InvalidRequest`] for a file with no token.
    pub fn from_file(path: &Path) -> Result<Tokens> {
        Ok(Tokens {
            digests: Arc::new(RwLock::new(read(path)?)),
            file: Some(Arc::new(path.to_owned())),
        })
    }

    /// Exactly these tokens (nothing to reload them from).
    pub fn of(tokens: &[&str]) -> Tokens {
        Tokens {
            digests: Arc::new(RwLock::new(digests(tokens.iter().copied()))),
            file: None,
        }
    }

    /// Reads the tokens file again and, if it reads and holds a token,
    /// replaces the set for every clone at once: calls from then on are
    /// checked against the new tokens, calls already accepted run on, and
    /// connections stay open. Otherwise the old tokens stay in force. Either
    /// way the outcome is logged. Blocks (it reads a file).
    ///
    /// # Errors
    ///
    /// As [`Tokens::from_file`]; [`Error::InvalidRequest`] for tokens that
    /// came from no file.
    pub fn reload(&self) -> Result<usize> {
        let Some(file) = &self.file else {
            return Err(Error::InvalidRequest {
                field: "auth.tokens_file",
                reason: "these tokens were not read from a file".to_owned(),
            });
        };
        match read(file) {
            Ok(fresh) => {
                let count = fresh.len();
                *self.digests.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                tracing::info!(file = %file.display(), tokens = count, "auth tokens reloaded");
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(
                    file = %file.display(),
                    error = %e,
                    tokens = self.count(),
                    "auth tokens not reloaded: the tokens in force stay"
                );
                Err(e)
            }
        }
    }

    /// How many tokens are accepted now.
    pub fn count(&self) -> usize {
        self.current().len()
    }

    fn current(&self) -> Digests {
        Arc::clone(&self.digests.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether `token` is one of them, in time independent of which.
    pub fn accepts(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.current()
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(&digest)
            })
            .into()
    }

    /// Checks a request's `authorization: Bearer TOKEN`.
    ///
    /// # Errors
    ///
    /// UNAUTHENTICATED, saying whether the token was missing or wrong.
    #[allow(clippy::result_large_err)]
    pub fn check<T>(&self, request: Request<T>) -> std::result::Result<Request<T>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return Err(Status::unauthenticated(
                "this server needs `authorization: Bearer TOKEN` (the CLI: --token or $SPEARLET_TOKEN)",
            ));
        };
        if self.accepts(bearer(header).unwrap_or("")) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the bearer token is not accepted"))
        }
    }
}

/// The digests of the tokens in `path`.
fn read(path: &Path) -> Result<Digests> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let found = digests(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    );
    if found.is_empty() {
        return Err(Error::InvalidRequest {
            field: "auth.tokens_file",
            reason: format!("{} holds no token", path.display()),
        });
    }
    Ok(found)
}

fn digests<'a>(tokens: impl Iterator<Item = &'a str>) -> Digests {
    tokens
        .map(|t| Sha256::digest(t.as_bytes()).into())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_listed_tokens_only() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "# ops\nalpha\n\n  beta  \n").unwrap();
        let tokens = Tokens::from_file(file.path()).unwrap();
        assert!(tokens.accepts("alpha") && tokens.accepts("beta"));
        assert!(!tokens.accepts("gamma") && !tokens.accepts("") && !tokens.accepts("# ops"));
        let mut request = Request::new(());
        assert_eq!(
            tokens.check(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        request
            .metadata_mut()
            .insert("authorization", "Bearer beta".parse().unwrap());
        assert!(tokens.check(request).is_ok());
    }

    #[test]
    fn a_reload_swaps_the_tokens_for_every_clone_and_a_bad_file_keeps_the_old_ones() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "old-token\n").unwrap();
        let tokens = Tokens::from_file(file.path()).unwrap();
        let serving = tokens.clone();
        assert!(serving.accepts("old-token") && !serving.accepts("new-token"));

        std::fs::write(file.path(), "# rotated\nnew-token\nother-token\n").unwrap();
        assert_eq!(tokens.reload().unwrap(), 2);
        assert!(!serving.accepts("old-token"), "revoked by the reload");
        assert!(serving.accepts("new-token") && serving.accepts("other-token"));

        // A file with no token, or none at all: the tokens in force stay.
        std::fs::write(file.path(), "# nobody\n").unwrap();
        assert!(matches!(
            tokens.reload(),
            Err(Error::InvalidRequest {
                field: "auth.tokens_file",
                ..
            })
        ));
        let gone = file.path().to_owned();
        drop(file);
        assert!(matches!(Tokens::from_file(&gone), Err(Error::Io { .. })));
        assert!(matches!(tokens.reload(), Err(Error::Io { .. })));
        assert!(serving.accepts("new-token") && serving.count() == 2);
    }

    #[test]
    fn fixed_tokens_cannot_be_reloaded_and_bearer_reads_the_header() {
        let tokens = Tokens::of(&["scrape"]);
        assert!(tokens.accepts("scrape") && !tokens.accepts("scrap"));
        assert!(tokens.reload().is_err());
        assert_eq!(bearer("Bearer  abc "), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
