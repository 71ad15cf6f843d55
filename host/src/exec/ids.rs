//! Execution ids: UUIDv7 text, made without a system call or an
//! allocation, and kept inline wherever they go.
//!
//! `uuid::Uuid::now_v7()` asks the operating system for fresh random bytes
//! every time, which costs more than the rest of a short call. Ids only need
//! to be unique and roughly time-ordered, so the random part here is a
//! per-process random seed mixed with a counter: unique within the process
//! by construction, and across processes with overwhelming probability.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrayvec::ArrayString;

use crate::execution::unix_millis;

static SEED: LazyLock<u64> = LazyLock::new(|| {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
});
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// splitmix64: spreads consecutive counters over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Ids up to this long are kept inline (a generated one is 36 bytes).
const INLINE: usize = 40;

/// An execution's id: generated ones and short client-chosen ones inline
/// (copied, never allocated: one is made and handed out on every call),
/// longer client-chosen ones shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Inline(ArrayString<INLINE>),
    Shared(Arc<str>),
}

impl ExecutionId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl From<&str> for ExecutionId {
    fn from(id: &str) -> Self {
        ExecutionId(match ArrayString::from(id) {
            Ok(inline) => Repr::Inline(inline),
            Err(_) => Repr::Shared(Arc::from(id)),
        })
    }
}

impl std::ops::Deref for ExecutionId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ExecutionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for ExecutionId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for ExecutionId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ExecutionId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<ExecutionId> for String {
    fn from(id: ExecutionId) -> String {
        id.as_str().to_owned()
    }
}

/// A new id, timestamped `now` (a clock reading the caller already has).
///
/// The UUIDv7 layout is written by hand rather than through `uuid`'s
/// builder and formatter: one is made on every call, and the general
/// versions cost about as much as the rest of the id's bookkeeping.
pub fn next(now: Instant) -> ExecutionId {
    let millis = unix_millis(now);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    // unix_ts_ms: 48 bits.
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    // ver (7) and rand_a: 12 bits of counter keep ids made in one
    // millisecond ordered.
    let rand_a = u16::try_from(n & 0x0FFF).expect("12 bits");
    bytes[6..8].copy_from_slice(&(0x7000 | rand_a).to_be_bytes());
    // var (0b10) and rand_b: 62 random bits.
    bytes[8..].copy_from_slice(&mix(*SEED ^ n).to_le_bytes());
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    ExecutionId(Repr::Inline(hyphenated(&bytes)))
}

/// `bytes` as lowercase hyphenated UUID text (8-4-4-4-12).
fn hyphenated(bytes: &[u8; 16]) -> ArrayString<INLINE> {
    let mut text = [b'-'; 36];
    crate::hex::encode_into(&bytes[..4], &mut text[..8]);
    crate::hex::encode_into(&bytes[4..6], &mut text[9..13]);
    crate::hex::encode_into(&bytes[6..8], &mut text[14..18]);
    crate::hex::encode_into(&bytes[8..10], &mut text[19..23]);
    crate::hex::encode_into(&bytes[10..], &mut text[24..]);
    let text = std::str::from_utf8(&text).expect("hex digits and hyphens are ASCII");
    ArrayString::from(text).expect("36 bytes fit inline")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_version_7_uuids() {
        let ids: HashSet<_> = (0..10_000)
            .map(|_| super::next(std::time::Instant::now()))
            .collect();
        assert_eq!(ids.len(), 10_000);
        let long = "x".repeat(super::INLINE + 1);
        assert_eq!(super::ExecutionId::from(long.as_str()).as_str(), long);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert!(matches!(id.0, super::Repr::Inline(_)), "{id}");
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(parsed.hyphenated().to_string(), id.as_str(), "lowercase");
        }
    }

    #[test]
    fn an_id_carries_its_millisecond() {
        let now = std::time::Instant::now();
        let (a, b) = (super::next(now), super::next(now));
        let (a, b) = (
            uuid::Uuid::parse_str(&a).unwrap(),
            uuid::Uuid::parse_str(&b).unwrap(),
        );
        let millis = |u: uuid::Uuid| {
            let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        };
        assert_eq!(millis(a), crate::execution::unix_millis(now));
        assert_eq!(millis(a), millis(b));
        assert_ne!(a, b);
    }
}
