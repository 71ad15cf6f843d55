//! What the ELF file says before the dynamic loader sees it.
//!
//! `dlopen` reports a foreign-architecture or truncated library with terse
//! loader messages (or worse, maps part of it); reading the ELF header first
//! turns those cases into a clear format error. And `dlopen` would load a
//! plugin's own dependencies from wherever its search paths point, none of
//! them verified: the dynamic section is read first, and only the platform's
//! C runtime may be asked for.
//!
//! The file is read the way the dynamic loader reads it: through the
//! program headers, never the section headers, which the loader ignores
//! and which can therefore be stripped, or lie. Two kinds of position meet
//! here and are never mixed: a segment's bytes are found in the file by its
//! `p_offset` and `p_filesz`, while an address the dynamic section holds
//! (`DT_STRTAB`, `DT_INIT_ARRAY`, a relocation's `r_offset`) is a virtual
//! address, turned into a file offset through the `PT_LOAD` segment that
//! maps it ([`file_offset`]).

use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// Bytes of a 64-bit ELF header.
pub(super) const HEADER_LEN: usize = 64;

/// Why the file whose first bytes are `bytes` (and whose length is
/// `file_len`) is not a loadable shared object for this host.
pub(super) fn check_shared_object(bytes: &[u8], file_len: u64) -> Result<(), String> {
    const HEADER_64: usize = HEADER_LEN;
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".to_owned());
    }
    if bytes.len() < HEADER_64 {
        return Err(format!(
            "truncated: {} bytes is shorter than an ELF header",
            bytes.len()
        ));
    }
    if bytes[4] != 2 {
        return Err("a 32-bit ELF file; this host loads 64-bit libraries".to_owned());
    }
    if bytes[5] != 1 {
        return Err("a big-endian ELF file; this host is little-endian".to_owned());
    }
    let e_type = u16_at(bytes, 16);
    if e_type != ET_DYN {
        return Err(format!(
            "an ELF {} file, not a shared object",
            match e_type {
                1 => "relocatable (.o)",
                2 => "executable",
                4 => "core dump",
                _ => "unknown-type",
            }
        ));
    }
    let machine = u16_at(bytes, 18);
    if machine != HOST_MACHINE {
        return Err(format!(
            "built for {}, this host is {}",
            machine_name(machine),
            machine_name(HOST_MACHINE)
        ));
    }
    let len = file_len;
    let table_end = |offset: u64, count: u16, entry: u16| {
        offset.saturating_add(u64::from(count) * u64::from(entry))
    };
    let ph_end = table_end(u64_at(bytes, 32), u16_at(bytes, 56), u16_at(bytes, 54));
    let sh_end = table_end(u64_at(bytes, 40), u16_at(bytes, 60), u16_at(bytes, 58));
    let needed = ph_end.max(sh_end);
    if needed > len {
        return Err(format!(
            "truncated: its headers end at byte {needed}, the file has {len} bytes"
        ));
    }
    Ok(())
}

const ET_DYN: u16 = 3;

/// Libraries of the platform's C runtime (and its dynamic loader), by their
/// whole soname: the only dependencies a plugin may have. Rust cdylibs need
/// nothing else. Names are compared whole, never by prefix: `DT_NEEDED` is
/// what the dynamic loader opens, and a name that merely starts like one of
/// these (`libc.so.6/../x.so`, with a slash, is a path) is another file.
const RUNTIME_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-riscv64-lp64d.so.1",
];

/// What a library asks the dynamic loader to load with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// `DT_NEEDED`: the libraries it needs, by name.
    pub needed: Vec<String>,
    /// `DT_RPATH` / `DT_RUNPATH`: where it asks for them to be searched.
    pub search_paths: Vec<(&'static str, String)>,
}

impl Dependencies {
    /// Why loading the library would load something unverified, if it would.
    pub fn refusal(&self) -> Option<String> {
        if let Some((tag, value)) = self.search_paths.first() {
            return Some(format!(
                "it sets {tag} `{value}`, so the dynamic loader would search there for \
                 libraries spearlet never verified; build it without one"
            ));
        }
        let foreign: Vec<&str> = self
            .needed
            .iter()
            .map(String::as_str)
            .filter(|name| !is_runtime_library(name))
            .collect();
        (!foreign.is_empty()).then(|| {
            format!(
                "it needs {}, which spearlet cannot verify: a plugin may depend only on the \
                 C runtime ({})",
                foreign.join(", "),
                RUNTIME_LIBRARIES.join(", ")
            )
        })
    }
}

fn is_runtime_library(name: &str) -> bool {
    RUNTIME_LIBRARIES.contains(&name)
}

/// Reads the dynamic section of `file` through its program headers (what
/// the dynamic loader uses; section headers can lie or be stripped).
pub(super) fn dependencies(file: &File) -> Result<Dependencies, String> {
    Image::read(file)?.dependencies()
}

/// `d_tag` values of the dynamic section this reader looks at.
pub(super) const DT_NULL: u64 = 0;
pub(super) const DT_NEEDED: u64 = 1;
pub(super) const DT_PLTRELSZ: u64 = 2;
pub(super) const DT_STRTAB: u64 = 5;
pub(super) const DT_SYMTAB: u64 = 6;
pub(super) const DT_RELA: u64 = 7;
pub(super) const DT_RELASZ: u64 = 8;
pub(super) const DT_RELAENT: u64 = 9;
pub(super) const DT_STRSZ: u64 = 10;
pub(super) const DT_SYMENT: u64 = 11;
pub(super) const DT_INIT: u64 = 12;
pub(super) const DT_RPATH: u64 = 15;
pub(super) const DT_REL: u64 = 17;
pub(super) const DT_RELSZ: u64 = 18;
pub(super) const DT_RELENT: u64 = 19;
pub(super) const DT_PLTREL: u64 = 20;
pub(super) const DT_JMPREL: u64 = 23;
pub(super) const DT_INIT_ARRAY: u64 = 25;
pub(super) const DT_INIT_ARRAYSZ: u64 = 27;
pub(super) const DT_RUNPATH: u64 = 29;
pub(super) const DT_PREINIT_ARRAY: u64 = 32;
pub(super) const DT_PREINIT_ARRAYSZ: u64 = 33;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
/// Bytes of one 64-bit program header.
const PHDR_LEN: u64 = 56;
/// Bytes of one 64-bit dynamic section entry.
const DYN_LEN: u64 = 16;
/// `e_phnum`'s escape to a count kept in a section header: a library whose
/// program headers cannot be counted without its section headers is not
/// one this reader follows.
const PN_XNUM: u16 = 0xffff;
/// The most a dynamic section may take: a real one is a few hundred bytes.
const MAX_DYNAMIC: u64 = 64 << 10;

/// Where an ELF file's bytes come from: the file itself, or bytes in memory.
pub(super) trait Source {
    /// How many bytes there are.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` from `offset`; the caller has checked that the range lies
    /// within [`Source::size`].
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl Source for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// A `PT_LOAD` segment: which bytes of the file it maps, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    /// `p_vaddr`: where its first byte is mapped.
    pub vaddr: u64,
    /// `p_offset`: where its first byte is in the file.
    pub offset: u64,
    /// `p_filesz`: how many of its bytes come from the file.
    pub filesz: u64,
    /// `p_memsz`: how many bytes it maps (the rest zeroes).
    pub memsz: u64,
}

/// Where in the file the `len` bytes at virtual address `vaddr` come from:
/// inside the file-backed part of the segment that maps them, else `None`
/// (unmapped, zero-filled, or straddling a segment's end).
pub(super) fn file_offset(segments: &[Segment], vaddr: u64, len: u64) -> Option<u64> {
    segments.iter().find_map(|s| {
        let into = vaddr.checked_sub(s.vaddr)?;
        (into.checked_add(len)? <= s.filesz).then(|| s.offset + into)
    })
}

/// Refuses loadable segments that share a page of memory. The dynamic
/// loader maps whole pages, each segment's over the ones before, so a page
/// two segments share holds bytes a reader of either segment would not
/// find where that segment says they are.
fn disjoint_pages(segments: &[Segment], page: u64) -> Result<(), String> {
    let mut spans = segments
        .iter()
        .map(|s| {
            let end = s.vaddr.checked_add(s.memsz.max(s.filesz))?;
            Some((s.vaddr & !(page - 1), end.checked_next_multiple_of(page)?))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("a loadable segment's addresses run past the end of memory")?;
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(
            "two of its loadable segments share a page of memory, so what the dynamic loader \
             maps there cannot be read from the file"
                .to_owned(),
        );
    }
    Ok(())
}

/// A library as the dynamic loader sees it: its loadable segments and its
/// dynamic section, read through the program headers alone.
pub(super) struct Image<'a, S: Source + ?Sized> {
    source: &'a S,
    size: u64,
    segments: Vec<Segment>,
    /// `(d_tag, d_val)` pairs, up to (not including) `DT_NULL`; none when
    /// the library has no `PT_DYNAMIC`.
    dynamic: Vec<(u64, u64)>,
}

impl<'a, S: Source + ?Sized> Image<'a, S> {
    /// Reads the program headers, the loadable segments and the dynamic
    /// section.
    ///
    /// # Errors
    ///
    /// Why the library is not one the dynamic loader would read the way
    /// this reader does: truncated, inconsistent, or ambiguous.
    pub(super) fn read(source: &'a S) -> Result<Self, String> {
        let size = source
            .size()
            .map_err(|e| format!("cannot read its length: {e}"))?;
        let mut image = Image {
            source,
            size,
            segments: Vec::new(),
            dynamic: Vec::new(),
        };
        let header = image.bytes(0, HEADER_LEN as u64, "its ELF header")?;
        if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return Err("not a 64-bit little-endian ELF file".to_owned());
        }
        let (phoff, entry_len, count) = (
            u64_at(&header, 32),
            u16_at(&header, 54),
            u16_at(&header, 56),
        );
        if count == PN_XNUM {
            return Err("its program header count is kept in a section header".to_owned());
        }
        if count > 0 && u64::from(entry_len) != PHDR_LEN {
            return Err(format!(
                "its program headers are {entry_len} bytes each, not {PHDR_LEN}"
            ));
        }
        let table = image.bytes(phoff, PHDR_LEN * u64::from(count), "its program headers")?;
        let mut dynamic = Vec::new();
        for header in table.chunks_exact(PHDR_LEN as usize) {
            let (offset, vaddr, filesz) =
                (u64_at(header, 8), u64_at(header, 16), u64_at(header, 32));
            match u32_at(header, 0) {
                PT_LOAD => {
                    if offset.checked_add(filesz).is_none_or(|end| end > size) {
                        return Err(format!(
                            "truncated: a loadable segment of {filesz} bytes at byte {offset} \
                             runs past the file's {size} bytes"
                        ));
                    }
                    image.segments.push(Segment {
                        vaddr,
                        offset,
                        filesz,
                        memsz: u64_at(header, 40),
                    });
                }
                PT_DYNAMIC => dynamic.push((offset, vaddr, filesz)),
                _ => {}
            }
        }
        disjoint_pages(&image.segments, rustix::param::page_size() as u64)?;
        image.dynamic = match dynamic[..] {
            [] => Vec::new(),
            [(offset, vaddr, filesz)] => image.read_dynamic(offset, vaddr, filesz)?,
            _ => return Err("it has more than one PT_DYNAMIC program header".to_owned()),
        };
        Ok(image)
    }

    /// The dynamic section's entries, read from the file where `PT_DYNAMIC`
    /// says they are, once that is checked to be where the dynamic loader
    /// finds them: at the address `p_vaddr`, through the segment mapping it.
    fn read_dynamic(
        &self,
        offset: u64,
        vaddr: u64,
        filesz: u64,
    ) -> Result<Vec<(u64, u64)>, String> {
        if file_offset(&self.segments, vaddr, filesz) != Some(offset) {
            return Err(format!(
                "its PT_DYNAMIC header puts the dynamic section at byte {offset:#x} of the \
                 file, but the dynamic loader reads it at address {vaddr:#x}, which is not \
                 mapped from there"
            ));
        }
        if filesz > MAX_DYNAMIC {
            return Err(format!("its dynamic section is {filesz} bytes long"));
        }
        let bytes = self.bytes(offset, filesz, "its dynamic section")?;
        let mut entries = Vec::new();
        for entry in bytes.chunks_exact(DYN_LEN as usize) {
            let (tag, value) = (u64_at(entry, 0), u64_at(entry, 8));
            if tag == DT_NULL {
                return Ok(entries);
            }
            entries.push((tag, value));
        }
        Err("its dynamic section has no DT_NULL entry to end it".to_owned())
    }

    /// Every value `tag` has in the dynamic section, in order.
    pub(super) fn values(&self, tag: u64) -> impl Iterator<Item = u64> + '_ {
        self.dynamic
            .iter()
            .filter(move |(t, _)| *t == tag)
            .map(|(_, value)| *value)
    }

    /// The value of `tag`, which may appear once at most: the dynamic loader
    /// keeps the last of several, a reader might keep the first, so a
    /// library that names two is refused rather than read either way.
    pub(super) fn single(&self, tag: u64) -> Result<Option<u64>, String> {
        let mut values = self.values(tag);
        let first = values.next();
        if values.next().is_some() {
            return Err(format!(
                "its dynamic section gives tag {tag} more than one value"
            ));
        }
        Ok(first)
    }

    /// The `len` bytes at virtual address `vaddr`, read from the file where
    /// the segment that maps them keeps them.
    pub(super) fn at(&self, vaddr: u64, len: u64, what: &str) -> Result<Vec<u8>, String> {
        let offset = file_offset(&self.segments, vaddr, len).ok_or_else(|| {
            format!(
                "{what} ({len} bytes at address {vaddr:#x}) lies outside the file-backed part \
                 of every loadable segment"
            )
        })?;
        self.bytes(offset, len, what)
    }

    /// The table whose address is the value of `address` and whose length in
    /// bytes is the value of `size` (such as `DT_INIT_ARRAY` and
    /// `DT_INIT_ARRAYSZ`), with its address; `None` when the library has
    /// neither tag.
    pub(super) fn table(
        &self,
        address: u64,
        size: u64,
        what: &str,
    ) -> Result<Option<(u64, Vec<u8>)>, String> {
        match (self.single(address)?, self.single(size)?) {
            (None, None) => Ok(None),
            (Some(vaddr), Some(len)) => Ok(Some((vaddr, self.at(vaddr, len, what)?))),
            _ => Err(format!(
                "its dynamic section gives {what} an address or a size, not both"
            )),
        }
    }

    /// The dynamic string table (`DT_STRTAB`, `DT_STRSZ`), if it has one.
    pub(super) fn strings(&self) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .table(DT_STRTAB, DT_STRSZ, "its dynamic string table")?
            .map(|(_, bytes)| bytes))
    }

    /// What the library needs loaded with it, and where it asks for it to be
    /// searched.
    pub(super) fn dependencies(&self) -> Result<Dependencies, String> {
        let mut deps = Dependencies::default();
        let named: Vec<(u64, u64)> = self
            .dynamic
            .iter()
            .copied()
            .filter(|(tag, _)| matches!(*tag, DT_NEEDED | DT_RPATH | DT_RUNPATH))
            .collect();
        if named.is_empty() {
            return Ok(deps);
        }
        let strings = self
            .strings()?
            .ok_or("its dynamic section names libraries but has no string table")?;
        for (tag, offset) in named {
            let text = string_at(&strings, offset)?;
            match tag {
                DT_NEEDED => deps.needed.push(text),
                DT_RPATH => deps.search_paths.push(("RPATH", text)),
                _ => deps.search_paths.push(("RUNPATH", text)),
            }
        }
        Ok(deps)
    }

    /// `len` bytes of the file from `offset`.
    fn bytes(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, String> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(format!(
                "truncated: {what} ({len} bytes at byte {offset}) runs past the file's {} bytes",
                self.size
            ));
        }
        let mut buf = vec![0; usize::try_from(len).map_err(|_| format!("{what} is too large"))?];
        self.source
            .read_at(offset, &mut buf)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        Ok(buf)
    }
}

/// The NUL-terminated name at `offset` in a string table.
pub(super) fn string_at(table: &[u8], offset: u64) -> Result<String, String> {
    let rest = usize::try_from(offset)
        .ok()
        .and_then(|start| table.get(start..))
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| format!("a name at {offset} lies outside its string table"))?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or("a name in its string table runs past the table's end")?;
    Ok(String::from_utf8_lossy(&rest[..len]).into_owned())
}

pub(super) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = 183;
#[cfg(target_arch = "riscv64")]
const HOST_MACHINE: u16 = 243;
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!("spearlet's ELF check does not know this architecture's e_machine yet");

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".to_owned(),
        40 => "ARM (32-bit)".to_owned(),
        62 => "x86_64".to_owned(),
        183 => "aarch64".to_owned(),
        243 => "riscv64".to_owned(),
        other => format!("machine type {other}"),
    }
}

#[cfg(test)]
pub(super) mod synth {
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
}

#[cfg(test)]
mod tests {
    use super::synth::{Synth, BASE, FREE_AT};
    use super::*;
    use proptest::prelude::*;
    use spearlet_test_artifacts::Artifact;

    proptest! {
        /// Arbitrary bytes never panic the header check or the dynamic
        /// section reader, including bytes that start like an ELF file.
        #[test]
        fn arbitrary_bytes_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..512),
            elf_like in any::<bool>(),
        ) {
            if elf_like && bytes.len() >= 20 {
                bytes[..4].copy_from_slice(b"\x7fELF");
                bytes[4] = 2;
                bytes[5] = 1;
                bytes[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
                bytes[18..20].copy_from_slice(&HOST_MACHINE.to_le_bytes());
            }
            let _ = check_shared_object(&bytes, bytes.len() as u64);
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &bytes).unwrap();
            let _ = dependencies(&file);
        }

        /// Nor does a well-formed library with arbitrary bytes past its
        /// headers and arbitrary dynamic entries.
        #[test]
        fn arbitrary_dynamic_sections_never_panic(
            entries in proptest::collection::vec((0u64..40, any::<u64>()), 0..12),
            noise in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut synth = Synth::new(&entries);
            synth.put(FREE_AT, &noise);
            if let Ok(image) = Image::read(&synth.bytes[..]) {
                let _ = image.dependencies();
            }
        }
    }

    /// A minimal 64-bit little-endian ELF header with no tables.
    fn header(e_type: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn accepts_a_host_shared_object() {
        assert_eq!(
            check_shared_object(&header(ET_DYN, HOST_MACHINE), 64),
            Ok(())
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let foreign = if HOST_MACHINE == 183 { 62 } else { 183 };
        let err = check_shared_object(&header(ET_DYN, foreign), 64).unwrap_err();
        assert!(err.starts_with("built for "), "{err}");
        assert!(check_shared_object(&header(2, HOST_MACHINE), 64)
            .unwrap_err()
            .contains("executable"));
        assert_eq!(
            check_shared_object(b"hello", 5).unwrap_err(),
            "not an ELF file"
        );
        assert!(check_shared_object(&header(ET_DYN, HOST_MACHINE)[..20], 20)
            .unwrap_err()
            .starts_with("truncated"));
        let mut with_tables = header(ET_DYN, HOST_MACHINE);
        with_tables[40..48].copy_from_slice(&10_000u64.to_le_bytes());
        with_tables[58..60].copy_from_slice(&64u16.to_le_bytes());
        with_tables[60..62].copy_from_slice(&3u16.to_le_bytes());
        assert!(check_shared_object(&with_tables, 64)
            .unwrap_err()
            .contains("headers end at byte 10192"));
    }

    #[test]
    fn only_the_c_runtime_may_be_needed() {
        let ok = Dependencies {
            needed: vec![
                "libc.so.6".into(),
                "libgcc_s.so.1".into(),
                "ld-linux-x86-64.so.2".into(),
            ],
            search_paths: vec![],
        };
        assert_eq!(ok.refusal(), None);
        let foreign = Dependencies {
            needed: vec![
                "libc.so.6".into(),
                "libcrypto.so.3".into(),
                "libcx.so".into(),
            ],
            search_paths: vec![],
        };
        let why = foreign.refusal().unwrap();
        assert!(why.contains("libcrypto.so.3, libcx.so"), "{why}");
        let rpath = Dependencies {
            needed: vec![],
            search_paths: vec![("RUNPATH", "$ORIGIN".into())],
        };
        assert!(rpath.refusal().unwrap().contains("RUNPATH `$ORIGIN`"));
    }

    /// `DT_NEEDED` is what the dynamic loader opens: a name is the C
    /// runtime's only when it is one of its sonames whole. Each of these
    /// starts like one (the first is a path, through a directory named
    /// like libc, to another library).
    #[test]
    fn needed_names_are_matched_whole() {
        for name in [
            "libc.so.6/../../tmp/libevil.so",
            "libc.so.6.evil",
            "libc.so",
            "libc.so.7",
            "libm.so.6x",
            "libgcc_s.so.1 ",
            "ld-linux-x86-64.so.2.0",
        ] {
            let deps = Dependencies {
                needed: vec!["libc.so.6".into(), name.into()],
                search_paths: vec![],
            };
            let why = deps.refusal().unwrap_or_else(|| panic!("{name} passed"));
            assert!(why.starts_with(&format!("it needs {name},")), "{why}");
        }
    }

    /// Addresses and file offsets are two spaces; an address reaches the
    /// file only through the file-backed part of the segment mapping it.
    #[test]
    fn addresses_are_translated_through_the_segment_that_maps_them() {
        let segments = [
            Segment {
                vaddr: 0,
                offset: 0,
                filesz: 0x1000,
                memsz: 0x1000,
            },
            Segment {
                vaddr: 0x3000,
                offset: 0x1800,
                filesz: 0x200,
                memsz: 0x800,
            },
        ];
        assert_eq!(file_offset(&segments, 0x10, 8), Some(0x10));
        assert_eq!(file_offset(&segments, 0x3010, 8), Some(0x1810));
        assert_eq!(file_offset(&segments, 0x31f8, 8), Some(0x19f8));
        // Straddles the end of the file-backed part: the rest is zeroes.
        assert_eq!(file_offset(&segments, 0x31fc, 8), None);
        // Zero-filled, between segments, before all of them.
        assert_eq!(file_offset(&segments, 0x3400, 8), None);
        assert_eq!(file_offset(&segments, 0x2000, 1), None);
        // 0x1810 is a file offset (of 0x3010), not an address anything maps.
        assert_eq!(file_offset(&segments, 0x1810, 8), None);
        assert_eq!(file_offset(&segments, u64::MAX - 2, 8), None);
    }

    #[test]
    fn segments_sharing_a_page_are_refused() {
        let segment = |vaddr, memsz| Segment {
            vaddr,
            offset: 0,
            filesz: 0,
            memsz,
        };
        let page = 0x1000;
        assert_eq!(
            disjoint_pages(&[segment(0, 0x800), segment(0x1800, 0x10)], page),
            Ok(())
        );
        assert!(disjoint_pages(&[segment(0x1800, 0x10), segment(0, 0x1900)], page).is_err());
        assert!(disjoint_pages(&[segment(0, 0x800), segment(0xc00, 0x10)], page).is_err());
        assert!(disjoint_pages(&[segment(u64::MAX - 4, 0x10)], page).is_err());
    }

    /// A string table for [`Synth`]: `names`, each after a NUL, and each
    /// one's offset.
    fn string_table(names: &[&str]) -> (Vec<u8>, Vec<u64>) {
        let mut table = vec![0];
        let mut offsets = Vec::new();
        for name in names {
            offsets.push(table.len() as u64);
            table.extend_from_slice(name.as_bytes());
            table.push(0);
        }
        (table, offsets)
    }

    /// The string table is found at the address `DT_STRTAB` holds: the
    /// same number read as a file offset lands on a decoy table that names
    /// only the C runtime.
    #[test]
    fn the_string_table_is_read_at_its_address_not_at_that_file_offset() {
        let (table, at) = string_table(&["libc.so.6", "libevil.so.1", "$ORIGIN"]);
        let strtab = Synth::address(FREE_AT);
        let mut synth = Synth::new(&[
            (DT_NEEDED, at[0]),
            (DT_NEEDED, at[1]),
            (DT_RUNPATH, at[2]),
            (DT_STRTAB, strtab),
            (DT_STRSZ, table.len() as u64),
        ]);
        synth.put(FREE_AT, &table);
        let (decoy, _) = string_table(&["libc.so.6", "libc.so.6", "libc.so.6"]);
        synth.put(usize::try_from(strtab).unwrap(), &decoy);
        let deps = Image::read(&synth.bytes[..])
            .unwrap()
            .dependencies()
            .unwrap();
        assert_eq!(deps.needed, ["libc.so.6", "libevil.so.1"]);
        assert_eq!(deps.search_paths, [("RUNPATH", "$ORIGIN".to_owned())]);
        assert!(deps.refusal().unwrap().contains("RUNPATH `$ORIGIN`"));
    }

    /// The dynamic loader reads the dynamic section at `PT_DYNAMIC`'s
    /// address; a header whose file offset points elsewhere (at a decoy a
    /// reader of the file would believe) is refused.
    #[test]
    fn a_dynamic_section_whose_offset_and_address_disagree_is_refused() {
        let (table, at) = string_table(&["libevil.so.1"]);
        let mut synth = Synth::new(&[
            (DT_NEEDED, at[0]),
            (DT_STRTAB, Synth::address(FREE_AT)),
            (DT_STRSZ, table.len() as u64),
        ]);
        synth.put(FREE_AT, &table);
        assert!(Image::read(&synth.bytes[..]).is_ok());
        let decoy_at = 0x800;
        synth.header(1, 2, decoy_at, Synth::address(0x200), 16);
        let err = Image::read(&synth.bytes[..]).err().unwrap();
        assert!(err.contains("not mapped from there"), "{err}");
    }

    #[test]
    fn ambiguous_and_truncated_dynamic_sections_are_refused() {
        let twice = Synth::new(&[
            (DT_NEEDED, 1),
            (DT_STRTAB, BASE),
            (DT_STRTAB, BASE + 8),
            (DT_STRSZ, 1),
        ]);
        let err = Image::read(&twice.bytes[..]).unwrap().dependencies().err();
        assert!(err.is_some_and(|e| e.contains("more than one value")));

        // The string table runs past the segment's end.
        let mut past = Synth::new(&[(DT_NEEDED, 1), (DT_STRTAB, BASE + 0x2ff0), (DT_STRSZ, 0x20)]);
        past.put(0x2ff0, b"\0libc.so.6\0");
        let err = Image::read(&past.bytes[..]).unwrap().dependencies().err();
        assert!(err.is_some_and(|e| e.contains("outside the file-backed part")));

        let mut unended = Synth::new(&[(DT_NEEDED, 1)]);
        unended.header(1, 2, 0x200, Synth::address(0x200), 16);
        unended.put(0x200, &DT_NEEDED.to_le_bytes());
        unended.put(0x208, &1u64.to_le_bytes());
        let err = Image::read(&unended.bytes[..]).err().unwrap();
        assert!(err.contains("no DT_NULL"), "{err}");

        let mut two = Synth::new(&[]);
        two.put(56, &3u16.to_le_bytes());
        two.header(2, 2, 0x200, Synth::address(0x200), 16);
        let err = Image::read(&two.bytes[..]).err().unwrap();
        assert!(err.contains("more than one PT_DYNAMIC"), "{err}");
    }

    /// A copy of `path` without section headers, as `strip` could leave it
    /// and as the dynamic loader never needs them.
    fn without_section_headers(path: &std::path::Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[40..48].fill(0);
        bytes[58..64].fill(0);
        bytes
    }

    /// A real plugin's dependencies, read from its dynamic section: the same
    /// with its section headers gone.
    #[test]
    fn a_plugin_needs_the_c_runtime_with_or_without_section_headers() {
        let file = File::open(Artifact::Echo.path()).unwrap();
        let deps = dependencies(&file).unwrap();
        assert!(deps.needed.iter().any(|n| n == "libc.so.6"), "{deps:?}");
        assert_eq!(deps.refusal(), None);
        let stripped = without_section_headers(Artifact::Echo.path());
        assert_eq!(Image::read(&stripped[..]).unwrap().dependencies(), Ok(deps));

        let rpath = File::open(Artifact::Rpath.path()).unwrap();
        let deps = dependencies(&rpath).unwrap();
        assert!(deps.refusal().unwrap().contains("$ORIGIN"), "{deps:?}");
    }
}
