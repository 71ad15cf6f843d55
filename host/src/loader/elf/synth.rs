//! Libraries built byte by byte, for tests of what is read from them.

use super::{ET_DYN, HOST_MACHINE};

/// Where the one loadable segment maps the file: every address is its
/// file offset plus this, so a reader that took one for the other would
/// read somewhere else.
pub const BASE: u64 = 0x1000;
/// The file's length.
pub const LEN: usize = 0x3000;
/// Where the dynamic section is in the file.
const DYNAMIC_AT: usize = 0x200;
/// Where the bytes a test puts in the file may start.
pub const FREE_AT: usize = 0x400;

/// A 64-bit shared object for this machine: one `PT_LOAD` segment
/// mapping the whole file at [`BASE`], and a `PT_DYNAMIC` one holding
/// `entries` (`DT_NULL` added).
#[derive(Debug, Clone)]
pub struct Synth {
    pub bytes: Vec<u8>,
}

impl Synth {
    pub fn new(entries: &[(u64, u64)]) -> Synth {
        let mut s = Synth {
            bytes: vec![0; LEN],
        };
        s.put(0, b"\x7fELF\x02\x01\x01");
        s.put(16, &ET_DYN.to_le_bytes());
        s.put(18, &HOST_MACHINE.to_le_bytes());
        s.put(20, &1u32.to_le_bytes());
        s.put(32, &64u64.to_le_bytes());
        s.put(52, &64u16.to_le_bytes());
        s.put(54, &56u16.to_le_bytes());
        s.put(56, &2u16.to_le_bytes());
        let dynamic_len = (entries.len() as u64 + 1) * 16;
        s.header(0, 1, 0, BASE, LEN as u64);
        s.header(
            1,
            2,
            DYNAMIC_AT as u64,
            BASE + DYNAMIC_AT as u64,
            dynamic_len,
        );
        for (i, (tag, value)) in entries.iter().enumerate() {
            s.put(DYNAMIC_AT + i * 16, &tag.to_le_bytes());
            s.put(DYNAMIC_AT + i * 16 + 8, &value.to_le_bytes());
        }
        assert!(DYNAMIC_AT + dynamic_len as usize <= FREE_AT);
        s
    }

    /// Sets program header `index`.
    pub fn header(&mut self, index: usize, kind: u32, offset: u64, vaddr: u64, len: u64) {
        let at = 64 + index * 56;
        self.put(at, &kind.to_le_bytes());
        self.put(at + 4, &4u32.to_le_bytes());
        self.put(at + 8, &offset.to_le_bytes());
        self.put(at + 16, &vaddr.to_le_bytes());
        self.put(at + 24, &vaddr.to_le_bytes());
        self.put(at + 32, &len.to_le_bytes());
        self.put(at + 40, &len.to_le_bytes());
        self.put(at + 48, &0x1000u64.to_le_bytes());
    }

    /// Writes `bytes` at file offset `at`.
    pub fn put(&mut self, at: usize, bytes: &[u8]) {
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// The address the byte at file offset `at` is mapped to.
    pub fn address(at: usize) -> u64 {
        BASE + at as u64
    }
}
