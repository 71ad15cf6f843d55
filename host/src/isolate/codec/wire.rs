//! The encoding's primitives: little-endian integers and length-prefixed
//! bytes written into a buffer, and read back with every length checked
//! against what is left.

use spear_plugin_sdk::Value;

use super::{Decoded, Malformed, MAX_ITEMS};

/// Appends fields to a message.
#[derive(Debug, Default)]
pub struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    /// A writer into `buf`'s storage (emptied first): a message per call
    /// without an allocation per message.
    pub(super) fn reusing(buf: &mut Vec<u8>) -> Writer {
        let mut buf = std::mem::take(buf);
        buf.clear();
        Writer { buf }
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    pub(super) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(super) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub(super) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub(super) fn pairs(&mut self, pairs: &[(String, String)]) {
        self.u32(u32::try_from(pairs.len()).unwrap_or(u32::MAX));
        for (k, v) in pairs {
            self.str(k);
            self.str(v);
        }
    }

    /// `pairs`, then one more.
    pub(super) fn pairs_and(&mut self, pairs: &[(String, String)], (key, value): (&str, &str)) {
        self.u32(u32::try_from(pairs.len() + 1).unwrap_or(u32::MAX));
        for (k, v) in pairs {
            self.str(k);
            self.str(v);
        }
        self.str(key);
        self.str(value);
    }

    pub(super) fn value(&mut self, v: &Value) {
        match v {
            Value::Unit => self.u8(0),
            Value::String(s) => {
                self.u8(1);
                self.str(s);
            }
            Value::I64(n) => {
                self.u8(2);
                self.u64(*n as u64);
            }
            Value::F64(f) => {
                self.u8(3);
                self.u64(f.to_bits());
            }
            Value::Bool(b) => {
                self.u8(4);
                self.u8(u8::from(*b));
            }
            Value::Bytes(b) => {
                self.u8(5);
                self.bytes(b);
            }
            Value::Raw { type_url, bytes } => {
                self.u8(6);
                self.str(type_url);
                self.bytes(bytes);
            }
        }
    }
}

/// Reads fields of a message, each checked against what is left.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(super) fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.rest.len() {
            return Err(Malformed("a field runs past the end of the message"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Decoded<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    pub(super) fn u64(&mut self) -> Decoded<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub(super) fn bytes(&mut self) -> Decoded<&'a [u8]> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| Malformed("a length beyond the address space"))?;
        self.take(n)
    }

    pub(super) fn string(&mut self) -> Decoded<String> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| Malformed("text that is not UTF-8"))
    }

    pub(super) fn bool(&mut self) -> Decoded<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("a boolean that is neither 0 nor 1")),
        }
    }

    /// A count of items that each take at least `min_item` bytes: never
    /// more than the message can hold, so no allocation is sized by a
    /// count the sender made up.
    pub(super) fn count(&mut self, min_item: usize) -> Decoded<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(Malformed("a count larger than the message"));
        }
        if n > MAX_ITEMS {
            return Err(Malformed("more items than any message carries"));
        }
        Ok(n)
    }

    pub(super) fn pairs(&mut self) -> Decoded<Vec<(String, String)>> {
        let n = self.count(16)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            pairs.push((self.string()?, self.string()?));
        }
        Ok(pairs)
    }

    pub(super) fn value(&mut self) -> Decoded<Value> {
        Ok(match self.u8()? {
            0 => Value::Unit,
            1 => Value::String(self.string()?),
            2 => Value::I64(self.u64()? as i64),
            3 => Value::F64(f64::from_bits(self.u64()?)),
            4 => Value::Bool(self.bool()?),
            5 => Value::Bytes(self.bytes()?.to_vec()),
            6 => Value::Raw {
                type_url: self.string()?,
                bytes: self.bytes()?.to_vec(),
            },
            _ => return Err(Malformed("an unknown value type")),
        })
    }

    pub(super) fn end(self) -> Decoded<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Malformed("bytes after the end of the message"))
        }
    }
}
