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
pub(super) mod synth;

#[cfg(test)]
mod tests;
