//! Lowercase hex digits written straight into a buffer: execution ids and
//! trace context are made on every call, and `core::fmt`'s `{:x}`
//! machinery costs more than the rest of building them.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as hex into `out`, two digits a byte, most significant
/// nibble first. `out` must be exactly twice as long as `bytes`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0F)];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_formatter() {
        for n in [0u64, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut out = [0u8; 16];
            super::encode_into(&n.to_be_bytes(), &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{n:016x}"));
        }
    }
}
