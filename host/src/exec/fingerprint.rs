//! What makes a call "the same call again": a hash of its parameters, kept
//! on records whose id the caller chose, so that reusing an id is a retry
//! of one call and never a way to read, or mask, another's execution.

use std::hash::{BuildHasher as _, Hasher as _};

use crate::Value;

/// A hash of a call's parameters, names and values in order. `UNKNOWN` for
/// records that carry none (ids the host made, records brought back from
/// the durable store): those match any parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// No fingerprint was taken.
    pub const UNKNOWN: Fingerprint = Fingerprint(0);

    /// The fingerprint of `params`. Floats are compared by their bits, so
    /// `NaN` matches itself and `-0.0` differs from `0.0`: a retry sends
    /// the same bytes.
    pub fn of(params: &[(String, Value)]) -> Fingerprint {
        let mut h = foldhash::quality::FixedState::with_seed(0x5EED).build_hasher();
        h.write_usize(params.len());
        for (name, value) in params {
            h.write_usize(name.len());
            h.write(name.as_bytes());
            match value {
                Value::Unit => h.write_u8(0),
                Value::String(s) => {
                    h.write_u8(1);
                    h.write_usize(s.len());
                    h.write(s.as_bytes());
                }
                Value::I64(n) => {
                    h.write_u8(2);
                    h.write_i64(*n);
                }
                Value::F64(n) => {
                    h.write_u8(3);
                    h.write_u64(n.to_bits());
                }
                Value::Bool(b) => {
                    h.write_u8(4);
                    h.write_u8(u8::from(*b));
                }
                Value::Bytes(b) => {
                    h.write_u8(5);
                    h.write_usize(b.len());
                    h.write(b);
                }
                Value::Raw { type_url, bytes } => {
                    h.write_u8(6);
                    h.write_usize(type_url.len());
                    h.write(type_url.as_bytes());
                    h.write_usize(bytes.len());
                    h.write(bytes);
                }
            }
        }
        // Never `UNKNOWN`, which would match anything.
        Fingerprint(h.finish() | 1)
    }

    /// As kept in a durable record (zero: unknown).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// As read back from a durable record.
    pub fn from_raw(raw: u64) -> Fingerprint {
        Fingerprint(raw)
    }

    /// Whether a call with `other` may be taken for the one recorded.
    pub fn matches(self, other: Fingerprint) -> bool {
        self == Fingerprint::UNKNOWN || other == Fingerprint::UNKNOWN || self == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn the_same_parameters_match_and_any_difference_does_not() {
        let a = Fingerprint::of(&params(&[
            ("x", Value::I64(1)),
            ("y", Value::String("s".into())),
        ]));
        assert!(a.matches(Fingerprint::of(&params(&[
            ("x", Value::I64(1)),
            ("y", Value::String("s".into()))
        ]))));
        for other in [
            params(&[("x", Value::I64(2)), ("y", Value::String("s".into()))]),
            params(&[("x", Value::I64(1))]),
            params(&[("y", Value::String("s".into())), ("x", Value::I64(1))]),
            params(&[("x", Value::I64(1)), ("y", Value::Bytes(b"s".to_vec()))]),
            params(&[("xy", Value::Unit)]),
        ] {
            assert!(!a.matches(Fingerprint::of(&other)), "{other:?}");
        }
        assert!(a.matches(Fingerprint::UNKNOWN));
        assert_ne!(Fingerprint::of(&[]), Fingerprint::UNKNOWN);
    }
}
