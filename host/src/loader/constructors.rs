//! The code a library runs inside `dlopen`, before any check can: the
//! entries of its `.init_array`.
//!
//! sha256 pinning decides which library may be loaded at all; this list is
//! how `spearlet plugin check` shows what such a library would run at load
//! time. A Rust cdylib carries two constructors of its own runtime (the C
//! runtime's `frame_dummy` and the standard library's argument capture);
//! anything else is the plugin's, or a dependency's, and is flagged.

use std::fs::File;
use std::path::Path;

use object::read::elf::ElfFile64;
use object::{Endianness, Object as _, ObjectSection as _, ObjectSymbol as _, ReadCache};
use object::{RelocationTarget, SymbolKind};

/// One `.init_array` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constructor {
    /// The function's address in the library.
    pub address: u64,
    /// Its symbol, demangled without the hash, when the library still names it.
    pub symbol: Option<String>,
}

impl Constructor {
    /// Whether this is one of the Rust runtime's own constructors.
    pub fn is_runtime(&self) -> bool {
        self.symbol
            .as_deref()
            .is_some_and(|s| RUNTIME_CONSTRUCTORS.iter().any(|known| s.contains(known)))
    }
}

/// What the constructors of a Rust cdylib's runtime are called.
const RUNTIME_CONSTRUCTORS: &[&str] = &[
    // crtbegin.o: registers exception frames (C runtime).
    "frame_dummy",
    // std: captures argc/argv for `std::env::args`.
    "ARGV_INIT_ARRAY",
];

/// How many constructors a Rust cdylib's runtime brings, at most: what an
/// unnamed (stripped) list is measured against.
pub const RUNTIME_CONSTRUCTOR_COUNT: usize = RUNTIME_CONSTRUCTORS.len();

/// The constructors `path` carries, in the order the dynamic loader runs them.
///
/// # Errors
///
/// A description of why the file's sections cannot be read.
pub fn constructors(path: &Path) -> Result<Vec<Constructor>, String> {
    let bad = |e: object::read::Error| format!("unreadable ELF sections: {e}");
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let cache = ReadCache::new(&file);
    let elf = ElfFile64::<Endianness, _>::parse(&cache).map_err(bad)?;
    let Some(section) = elf.section_by_name(".init_array") else {
        return Ok(Vec::new());
    };
    let start = section.address();
    let data = section.data().map_err(bad)?;
    let little = elf.endian() == Endianness::Little;
    let mut slots: Vec<u64> = data
        .chunks_exact(8)
        .map(|b| {
            let bytes: [u8; 8] = b.try_into().expect("chunks of 8");
            if little {
                u64::from_le_bytes(bytes)
            } else {
                u64::from_be_bytes(bytes)
            }
        })
        .collect();
    // In a shared object the slots are filled in by relocations at load
    // time; the bytes on disk are only the implicit addends, if anything.
    let end = start.saturating_add(data.len() as u64);
    let dynamic_symbols: Vec<_> = elf.dynamic_symbols().collect();
    for (offset, reloc) in elf.dynamic_relocations().into_iter().flatten() {
        if offset < start || offset >= end {
            continue;
        }
        let Ok(slot) = usize::try_from((offset - start) / 8) else {
            continue;
        };
        let addend = if reloc.has_implicit_addend() {
            slots[slot]
        } else {
            reloc.addend().cast_unsigned()
        };
        let base = match reloc.target() {
            RelocationTarget::Symbol(index) => dynamic_symbols
                .iter()
                .find(|s| s.index() == index)
                .map_or(0, object::ObjectSymbol::address),
            _ => 0,
        };
        slots[slot] = base.wrapping_add(addend);
    }
    let names: Vec<(u64, String)> = elf
        .symbols()
        .chain(elf.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.name().ok()?.to_owned())))
        .collect();
    Ok(slots
        .into_iter()
        // 0 and -1 are the terminators of old-style constructor lists.
        .filter(|&a| a != 0 && a != u64::MAX)
        .map(|address| Constructor {
            address,
            symbol: names
                .iter()
                .find(|(a, _)| *a == address)
                .map(|(_, name)| format!("{:#}", rustc_demangle::demangle(name))),
        })
        .collect())
}
