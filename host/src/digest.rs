//! sha256 digests: how spearlet names and verifies artifacts.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// Wraps a digest computed elsewhere (e.g. incrementally).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256Digest(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, the form used in cache paths and messages.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

pub use crate::error::ParseDigestError;

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    /// Accepts 64 hex digits (either case), optionally prefixed `sha256:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let hex_part = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| ParseDigestError {
            input: s.to_owned(),
        })?;
        Ok(Sha256Digest(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_prefixed_hex() {
        let d = Sha256Digest::of(b"abc");
        let hex = d.to_hex();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex.parse::<Sha256Digest>().unwrap(), d);
        assert_eq!(
            format!("sha256:{}", hex.to_uppercase())
                .parse::<Sha256Digest>()
                .unwrap(),
            d
        );
        assert!("sha256:abc".parse::<Sha256Digest>().is_err());
        assert!("md5:ba7816bf".parse::<Sha256Digest>().is_err());
    }
}
