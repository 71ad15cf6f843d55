//! Execution ids: UUIDv7 text, made without a system call.
//!
//! `uuid::Uuid::now_v7()` asks the operating system for fresh random bytes
//! every time, which costs more than the rest of a short call. Ids only need
//! to be unique and roughly time-ordered, so the random part here is a
//! per-process random seed mixed with a counter: unique within the process
//! by construction, and across processes with overwhelming probability.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use super::status::unix_millis;

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

/// A new id, timestamped `now` (a clock reading the caller already has).
pub fn next(now: Instant) -> Arc<str> {
    let millis = unix_millis(now);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = mix(*SEED ^ n).to_le_bytes();
    // 12 bits of counter (rand_a) keep ids made in one millisecond ordered.
    let mut rand = [0u8; 10];
    rand[..2].copy_from_slice(&u16::try_from(n & 0x0FFF).expect("12 bits").to_be_bytes());
    rand[2..].copy_from_slice(&random);
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &rand).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Arc::from(&*uuid.hyphenated().encode_lower(&mut buf))
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
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 7, "{id}");
        }
    }
}
