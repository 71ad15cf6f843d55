//! What the ELF file says before the dynamic loader sees it.
//!
//! `dlopen` reports a foreign-architecture or truncated library with terse
//! loader messages (or worse, maps part of it); reading the ELF header first
//! turns those cases into a clear format error. And `dlopen` would load a
//! plugin's own dependencies from wherever its search paths point, none of
//! them verified: the dynamic section is read first, and only the platform's
//! C runtime may be asked for.

use std::fs::File;

use object::elf::{DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_STRSZ, DT_STRTAB, PT_LOAD};
use object::read::elf::{Dyn as _, ElfFile64, ProgramHeader as _};
use object::read::StringTable;
use object::{Endianness, ReadCache};

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
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let e_type = u16_at(16);
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
    let machine = u16_at(18);
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
    let ph_end = table_end(u64_at(32), u16_at(56), u16_at(54));
    let sh_end = table_end(u64_at(40), u16_at(60), u16_at(58));
    let needed = ph_end.max(sh_end);
    if needed > len {
        return Err(format!(
            "truncated: its headers end at byte {needed}, the file has {len} bytes"
        ));
    }
    Ok(())
}

const ET_DYN: u16 = 3;

/// Libraries of the platform's C runtime (and its dynamic loader), by
/// soname stem: the only dependencies a plugin may have. Rust cdylibs need
/// nothing else.
const RUNTIME_LIBRARIES: &[&str] = &[
    "libc.so",
    "libm.so",
    "libdl.so",
    "libpthread.so",
    "librt.so",
    "libgcc_s.so",
    "ld-linux-x86-64.so",
    "ld-linux-aarch64.so",
    "ld-linux-riscv64-lp64d.so",
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
    RUNTIME_LIBRARIES
        .iter()
        .any(|stem| name == *stem || name.strip_prefix(stem).is_some_and(|v| v.starts_with('.')))
}

/// Reads the dynamic section of `file` through its program headers (what
/// the dynamic loader uses; section headers can lie or be stripped).
pub(super) fn dependencies(file: &File) -> Result<Dependencies, String> {
    let bad = |e: object::read::Error| format!("unreadable dynamic section: {e}");
    let cache = ReadCache::new(file);
    let elf = ElfFile64::<Endianness, _>::parse(&cache).map_err(bad)?;
    let endian = elf.endian();
    let data = elf.data();
    let headers = elf.elf_program_headers();
    let mut dynamic = None;
    for header in headers {
        if let Some(entries) = header.dynamic(endian, data).map_err(bad)? {
            dynamic = Some(entries);
        }
    }
    let Some(entries) = dynamic else {
        return Ok(Dependencies::default());
    };
    let value_of = |tag| {
        entries
            .iter()
            .find(|d| d.tag(endian) == tag)
            .map(|d| d.val(endian))
    };
    let (Some(strtab), Some(strsz)) = (value_of(DT_STRTAB), value_of(DT_STRSZ)) else {
        return Err("its dynamic section has no string table".to_owned());
    };
    let offset = headers
        .iter()
        .filter(|h| h.p_type(endian) == PT_LOAD)
        .find_map(|h| {
            let start = h.p_vaddr(endian);
            (strtab >= start && strtab < start.saturating_add(h.p_filesz(endian)))
                .then(|| strtab - start + h.p_offset(endian))
        })
        .ok_or("its dynamic string table lies outside every loaded segment")?;
    let strings = StringTable::new(data, offset, offset.saturating_add(strsz));
    let mut deps = Dependencies::default();
    for entry in entries {
        let tag = entry.tag(endian);
        if tag == DT_NULL {
            break;
        }
        let label = match tag {
            DT_NEEDED => None,
            DT_RPATH => Some("RPATH"),
            DT_RUNPATH => Some("RUNPATH"),
            _ => continue,
        };
        let text = entry.string(endian, strings).map_err(bad)?;
        let text = String::from_utf8_lossy(text).into_owned();
        match label {
            None => deps.needed.push(text),
            Some(label) => deps.search_paths.push((label, text)),
        }
    }
    Ok(deps)
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
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}
