//! Bearer tokens: who may call.
//!
//! Tokens are kept only as sha256 digests and compared in constant time
//! against every known digest, so neither the comparison nor the set's
//! order says how close a wrong token came.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// The tokens a server accepts (cheap to clone).
#[derive(Clone)]
pub struct Tokens {
    digests: Arc<[[u8; 32]]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} known)", self.digests.len())
    }
}

impl Tokens {
    /// The tokens in `path`, one per line; blank lines and `#` comments are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; [`Error::InvalidRequest`] for a file with no token.
    pub fn from_file(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let tokens = Tokens::from_lines(&text);
        if tokens.digests.is_empty() {
            return Err(Error::InvalidRequest {
                field: "auth.tokens_file",
                reason: format!("{} holds no token", path.display()),
            });
        }
        Ok(tokens)
    }

    fn from_lines(text: &str) -> Tokens {
        Tokens {
            digests: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        }
    }

    /// Whether `token` is one of them, in time independent of which.
    pub fn accepts(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.digests
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
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or("");
        if self.accepts(token.trim()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the bearer token is not accepted"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_listed_tokens_only() {
        let tokens = Tokens::from_lines("# ops\nalpha\n\n  beta  \n");
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
}
