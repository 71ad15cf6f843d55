//! Exponential backoff with full jitter, shared by downloads and retries.

use std::time::Duration;

/// The pause before retry number `retry` (1-based): uniform in
/// `[0, min(cap, base * 2^(retry-1))]`. Full jitter keeps many clients that
/// failed together from retrying together.
pub(crate) fn full_jitter(base: Duration, cap: Duration, retry: u32) -> Duration {
    let ceiling = base
        .saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(cap);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_jittered_and_capped() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(10));
        for retry in 1..=20 {
            let ceiling = (base * 2u32.pow((retry - 1).min(20))).min(cap);
            for _ in 0..50 {
                assert!(full_jitter(base, cap, retry) <= ceiling);
            }
        }
        let samples: Vec<Duration> = (0..50).map(|_| full_jitter(base, cap, 3)).collect();
        assert!(
            samples.iter().any(|s| *s != samples[0]),
            "jitter varies the delay"
        );
    }
}
