//! W3C trace context (`traceparent`, `tracestate`): read from a request,
//! or started afresh, kept on the execution, and handed to the plugin as
//! the `traceparent` header of its own span, so the plugin's work and log
//! lines join the caller's trace.

use std::fmt;

/// A trace, and the caller's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never zero).
    pub trace_id: TraceId,
    /// The caller's span, when the caller sent one.
    pub parent_span: Option<u64>,
    /// The caller's sampling decision (`01` flag); a new trace is sampled.
    pub sampled: bool,
}

/// A 128-bit trace id, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

impl TraceId {
    /// The id as its 32 hex digits, kept inline.
    pub fn to_hex(self) -> arrayvec::ArrayString<32> {
        let mut text = [0u8; 32];
        crate::hex::encode_into(&self.0.to_be_bytes(), &mut text);
        arrayvec::ArrayString::from_byte_string(&text).expect("hex digits are ASCII")
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl TraceContext {
    /// Reads a `traceparent` value (`00-<trace>-<span>-<flags>`); `None`
    /// for anything malformed, as the W3C spec says to treat it.
    pub fn parse(traceparent: &str) -> Option<TraceContext> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add some.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let parent = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id: TraceId(trace_id),
            parent_span: Some(parent),
            sampled: flags & 1 == 1,
        })
    }

    /// A new trace, for a request that came without one.
    pub fn start() -> TraceContext {
        TraceContext {
            trace_id: TraceId(fastrand::u128(1..)),
            parent_span: None,
            sampled: true,
        }
    }

    /// The `traceparent` of a child span `span` of this trace, kept inline:
    /// every traced call hands one to its plugin.
    pub fn child(&self, span: u64) -> Traceparent {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        crate::hex::encode_into(&self.trace_id.0.to_be_bytes(), &mut text[3..35]);
        crate::hex::encode_into(&span.to_be_bytes(), &mut text[36..52]);
        text[54] = b'0' + u8::from(self.sampled);
        Traceparent::from_byte_string(&text).expect("hex digits and hyphens are ASCII")
    }
}

/// A W3C `traceparent` value (`00-<trace>-<span>-<flags>`, 55 bytes).
pub type Traceparent = arrayvec::ArrayString<55>;

/// A fresh span id (never zero).
pub fn new_span() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_bad_ones_are_ignored() {
        let t =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span, Some(0x00f0_67aa_0ba9_02b7));
        assert!(t.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        let child = t.child(0xabc);
        assert_eq!(
            child.as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01"
        );
        assert_eq!(TraceContext::parse(&child).unwrap().trace_id, t.trace_id);
        let fresh = TraceContext::start();
        assert_eq!(fresh.child(u64::MAX).len(), 55);
    }
}
