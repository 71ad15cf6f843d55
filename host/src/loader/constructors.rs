//! The code a library runs inside `dlopen`, before any check can: the
//! functions its dynamic section lists for the dynamic loader to call.
//!
//! sha256 pinning decides which library may be loaded at all; this list is
//! how `spearlet plugin check` shows what such a library would run at load
//! time. It is read as the dynamic loader reads it — `DT_INIT`,
//! `DT_INIT_ARRAY` (with `DT_INIT_ARRAYSZ`) and `DT_PREINIT_ARRAY`, through
//! the program headers — never from section headers, which the loader
//! ignores and a library can strip, and each entry is relocated as the
//! loader would relocate it. Which entries are the toolchain's own is the
//! rule on [`constructors`].

use std::fs::File;
use std::path::Path;

use object::read::elf::ElfFile64;
use object::{Endianness, Object as _, ObjectSymbol as _, ReadCache, SymbolKind};

use super::elf::{self, Image, Source};

/// One function the dynamic loader calls when it loads the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constructor {
    /// Where the dynamic section lists it: `DT_INIT`, `DT_INIT_ARRAY[i]` or
    /// `DT_PREINIT_ARRAY[i]`.
    pub listed: String,
    /// Its symbol, demangled without the hash, when the library still names
    /// it (or, for one imported from another library, the name imported).
    pub symbol: Option<String>,
    /// What it is, when it is the toolchain's own by the rule on
    /// [`constructors`]; `None`: the plugin's, or something that rule cannot
    /// vouch for.
    pub toolchain: Option<&'static str>,
    kind: Kind,
    target: Target,
}

impl Constructor {
    /// Whether this is one of the toolchain's own constructors.
    pub fn is_toolchain(&self) -> bool {
        self.toolchain.is_some()
    }

    /// The function's address in the library, when it is in the library
    /// and the relocation that sets it is one this reader follows.
    pub fn address(&self) -> Option<u64> {
        match self.target {
            Target::Address(address) => Some(address),
            _ => None,
        }
    }

    /// One line naming it, for a report.
    pub fn describe(&self) -> String {
        let listed = &self.listed;
        match (&self.target, &self.symbol) {
            (Target::Address(address), Some(symbol)) => {
                format!("{symbol} (0x{address:x}, {listed})")
            }
            (Target::Address(address), None) => {
                format!("an unnamed function (0x{address:x}, {listed})")
            }
            (Target::Imported, symbol) => format!(
                "{}, imported from another library ({listed})",
                symbol.as_deref().unwrap_or("an unnamed symbol")
            ),
            (Target::Unresolved(why), _) => format!("{listed}, {why}"),
        }
    }
}

/// Which list of the dynamic section an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `DT_INIT`: one function, called before the array.
    Init,
    /// `DT_INIT_ARRAY`.
    InitArray,
    /// `DT_PREINIT_ARRAY`: run for executables only, never written by the
    /// toolchain into a library; listed so that nothing is missed.
    PreinitArray,
}

/// What an entry calls, once relocated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A function in the library, at this address.
    Address(u64),
    /// A function of another library, by the symbol in [`Constructor::symbol`].
    Imported,
    /// Set in a way this reader does not follow; why.
    Unresolved(String),
}

/// A constructor the toolchain puts in every Rust cdylib, with no code of
/// the plugin author's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `DT_INIT` → the C runtime's `_init` (crti.o).
    CInit,
    /// The C runtime's frame registration (crtbegin.o's `frame_dummy`).
    CRuntime,
    /// std's capture of `argc`/`argv` for `std::env::args`.
    StdArgs,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Role::CInit => "the C runtime's _init",
            Role::CRuntime => "the C runtime's frame_dummy",
            Role::StdArgs => "std's argument capture",
        }
    }

    /// The role an entry of `kind` named `name` has, by its exact name.
    fn by_name(kind: Kind, name: &str) -> Option<Role> {
        match kind {
            Kind::Init => (name == "_init").then_some(Role::CInit),
            Kind::InitArray => {
                if C_RUNTIME_CONSTRUCTORS.contains(&name) {
                    return Some(Role::CRuntime);
                }
                let path: Vec<&str> = name.split("::").collect();
                let std_args = path.len() >= 3
                    && path[0] == "std"
                    && path[path.len() - 2] == "ARGV_INIT_ARRAY";
                std_args.then_some(Role::StdArgs)
            }
            Kind::PreinitArray => None,
        }
    }

    /// The roles an unnamed entry of `kind` may fill, in order.
    fn unnamed(kind: Kind) -> &'static [Role] {
        match kind {
            Kind::Init => &[Role::CInit],
            Kind::InitArray => &[Role::CRuntime, Role::StdArgs],
            Kind::PreinitArray => &[],
        }
    }
}

/// The names the C runtime's constructor goes by: GCC's crtbegin.o lists
/// `frame_dummy` (in some builds, straight `register_tm_clones`), LLVM's
/// `__do_init`.
const C_RUNTIME_CONSTRUCTORS: &[&str] = &["frame_dummy", "register_tm_clones", "__do_init"];

/// How many `DT_INIT_ARRAY` entries a Rust cdylib's toolchain brings, at
/// most: the C runtime's frame registration and std's argument capture.
/// What an unnamed (stripped) array is measured against.
pub const RUNTIME_CONSTRUCTOR_COUNT: usize = 2;

/// The most entries an array may have: a real library has a handful.
const MAX_ENTRIES: u64 = 4096;

/// Relocation types, for this machine: the relative one, and those that
/// write a symbol's address (64-bit absolute, GOT entry, PLT slot).
#[cfg(target_arch = "x86_64")]
mod reloc {
    pub const RELATIVE: u32 = 8;
    pub const SYMBOLIC: &[u32] = &[1, 6, 7];
}
#[cfg(target_arch = "aarch64")]
mod reloc {
    pub const RELATIVE: u32 = 1027;
    pub const SYMBOLIC: &[u32] = &[257, 1025, 1026];
}
#[cfg(target_arch = "riscv64")]
mod reloc {
    pub const RELATIVE: u32 = 3;
    pub const SYMBOLIC: &[u32] = &[2, 5];
}

/// The constructors `path` carries, in the order the dynamic loader runs
/// them, each marked when it is the toolchain's own.
///
/// # Which are the toolchain's own
///
/// Every Rust cdylib built for Linux carries three with no code of its
/// author's: `DT_INIT`, the C runtime's `_init` (crti.o); and in
/// `DT_INIT_ARRAY`, the C runtime's frame registration (crtbegin.o's
/// `frame_dummy`) and std's argument capture (`std::…::ARGV_INIT_ARRAY::…`).
/// An entry counts as one of those when
///
/// - the library names its function exactly so (its symbol table, which
///   debug builds keep): `_init` for `DT_INIT`; `frame_dummy`,
///   `register_tm_clones` or `__do_init`, or a path in `std` whose last but
///   one segment is `ARGV_INIT_ARRAY`, for `DT_INIT_ARRAY` — whole names,
///   never a substring, so `my_frame_dummy_hook` is the plugin's;
/// - or the function is unnamed (symbols stripped, as the lean release
///   profile does) and the role it would fill is still free: a stripped
///   library may carry as many unnamed entries as the toolchain brings
///   ([`RUNTIME_CONSTRUCTOR_COUNT`] in the array, one `DT_INIT`), and any
///   beyond that are counted as the plugin's.
///
/// Each role is granted once, named entries first: a second `frame_dummy`
/// is not the toolchain's. Nothing in `DT_PREINIT_ARRAY`, nothing imported
/// from another library and nothing set by a relocation this reader does
/// not follow is ever the toolchain's.
///
/// Why names and a count, not addresses or code: the toolchain's functions
/// sit at another address in every library and their code changes with each
/// C runtime, while their names and their number stay. The limit of the
/// rule is that names and stripping are in the author's hands: a library
/// built to deceive (naming its constructor `frame_dummy`, or leaving out
/// crtbegin.o to take its place in a stripped array) passes. The check
/// shows what an ordinary library runs at load time; the sha256 pin is what
/// decides which library is trusted.
///
/// # Errors
///
/// A description of why the file's dynamic section cannot be read.
pub fn constructors(path: &Path) -> Result<Vec<Constructor>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let image = Image::read(&file)?;
    read_constructors(&image, &symbol_names(&file))
}

/// The constructors `image` lists, relocated, named from `names` (address,
/// demangled name) and classified.
fn read_constructors<S: Source + ?Sized>(
    image: &Image<'_, S>,
    names: &[(u64, String)],
) -> Result<Vec<Constructor>, String> {
    let mut slots = listed(image)?;
    relocate(image, &mut slots)?;
    let mut list: Vec<Constructor> = slots
        .into_iter()
        .map(|slot| {
            let named: Vec<&str> = match slot.target {
                Target::Address(address) => names
                    .iter()
                    .filter(|(a, _)| *a == address)
                    .map(|(_, name)| name.as_str())
                    .collect(),
                _ => Vec::new(),
            };
            // Where one address has several names, the first that is not a
            // toolchain name shows, so that an alias cannot hide it.
            let symbol = named
                .iter()
                .find(|n| Role::by_name(slot.kind, n).is_none())
                .or(named.first())
                .map(|n| (*n).to_owned())
                .or(slot.symbol);
            Constructor {
                listed: slot.listed,
                symbol,
                toolchain: None,
                kind: slot.kind,
                target: slot.target,
            }
        })
        .collect();
    classify(&mut list);
    Ok(list)
}

/// Marks the toolchain's own entries of `list`, by the rule on
/// [`constructors`].
fn classify(list: &mut [Constructor]) {
    let mut claimed: Vec<Role> = Vec::new();
    for c in list.iter_mut() {
        let Some(symbol) = c.symbol.as_deref() else {
            continue;
        };
        if !matches!(c.target, Target::Address(_)) {
            continue;
        }
        if let Some(role) = Role::by_name(c.kind, symbol).filter(|r| !claimed.contains(r)) {
            claimed.push(role);
            c.toolchain = Some(role.describe());
        }
    }
    for c in list.iter_mut() {
        if c.symbol.is_some() || !matches!(c.target, Target::Address(_)) {
            continue;
        }
        if let Some(&role) = Role::unnamed(c.kind).iter().find(|r| !claimed.contains(r)) {
            claimed.push(role);
            c.toolchain = Some(role.describe());
        }
    }
}

/// An entry as the file lists it, before naming.
struct Slot {
    listed: String,
    kind: Kind,
    /// The address of the array slot holding it; `None` for `DT_INIT`,
    /// whose value is the function's address itself.
    at: Option<u64>,
    target: Target,
    /// The symbol a relocation names it by.
    symbol: Option<String>,
    /// Whether a relocation has set it already.
    relocated: bool,
}

/// `DT_PREINIT_ARRAY`, `DT_INIT` and `DT_INIT_ARRAY`, in the order the
/// dynamic loader would run them.
fn listed<S: Source + ?Sized>(image: &Image<'_, S>) -> Result<Vec<Slot>, String> {
    let mut slots = array(
        image,
        "DT_PREINIT_ARRAY",
        Kind::PreinitArray,
        (elf::DT_PREINIT_ARRAY, elf::DT_PREINIT_ARRAYSZ),
    )?;
    if let Some(address) = image.single(elf::DT_INIT)? {
        slots.push(Slot {
            listed: "DT_INIT".to_owned(),
            kind: Kind::Init,
            at: None,
            target: Target::Address(address),
            symbol: None,
            relocated: false,
        });
    }
    slots.extend(array(
        image,
        "DT_INIT_ARRAY",
        Kind::InitArray,
        (elf::DT_INIT_ARRAY, elf::DT_INIT_ARRAYSZ),
    )?);
    Ok(slots)
}

/// The entries of the array the `(address, size)` tags describe, each with
/// the bytes the file holds in its slot: the address itself, or the
/// implicit addend a relocation adds to the load address.
fn array<S: Source + ?Sized>(
    image: &Image<'_, S>,
    name: &str,
    kind: Kind,
    (address, size): (u64, u64),
) -> Result<Vec<Slot>, String> {
    let Some((start, bytes)) = image.table(address, size, name)? else {
        return Ok(Vec::new());
    };
    if bytes.len() % 8 != 0 || bytes.len() as u64 / 8 > MAX_ENTRIES {
        return Err(format!(
            "its {name} is {} bytes long, not a plausible array of 8-byte entries",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .enumerate()
        .map(|(i, entry)| Slot {
            listed: format!("{name}[{i}]"),
            kind,
            at: Some(start + 8 * i as u64),
            target: Target::Address(elf::u64_at(entry, 0)),
            symbol: None,
            relocated: false,
        })
        .collect())
}

/// A relocation table: its address and size tags, its entry-size tag, and
/// whether its entries carry an explicit addend.
struct Table {
    address: u64,
    size: u64,
    entry: Option<u64>,
    explicit: bool,
}

/// Applies to `slots` the relocations that write into them, as the dynamic
/// loader would: a relative one sets the slot to its addend (the load
/// address is added to every address alike, so it is left out); a symbolic
/// one to the symbol's address, or marks it imported when the symbol is
/// another library's. A slot written twice, or by any other relocation
/// (an ifunc's resolver, say), is not followed. `DT_RELR` needs nothing:
/// its relocations are relative, their addends the bytes already read.
fn relocate<S: Source + ?Sized>(image: &Image<'_, S>, slots: &mut [Slot]) -> Result<(), String> {
    if slots.iter().all(|s| s.at.is_none()) {
        return Ok(());
    }
    let plt_explicit = image.single(elf::DT_PLTREL)? != Some(elf::DT_REL);
    let tables = [
        Table {
            address: elf::DT_RELA,
            size: elf::DT_RELASZ,
            entry: Some(elf::DT_RELAENT),
            explicit: true,
        },
        Table {
            address: elf::DT_REL,
            size: elf::DT_RELSZ,
            entry: Some(elf::DT_RELENT),
            explicit: false,
        },
        Table {
            address: elf::DT_JMPREL,
            size: elf::DT_PLTRELSZ,
            entry: None,
            explicit: plt_explicit,
        },
    ];
    for table in tables {
        let Some((_, bytes)) = image.table(table.address, table.size, "a relocation table")? else {
            continue;
        };
        let len: usize = if table.explicit { 24 } else { 16 };
        if let Some(tag) = table.entry {
            if image.single(tag)?.is_some_and(|l| l != len as u64) {
                return Err(format!(
                    "its relocation entries are not the {len} bytes this machine's are"
                ));
            }
        }
        for entry in bytes.chunks_exact(len) {
            let offset = elf::u64_at(entry, 0);
            let Some(slot) = slots
                .iter_mut()
                .find(|s| s.at.is_some_and(|at| offset >= at && offset - at < 8))
            else {
                continue;
            };
            let info = elf::u64_at(entry, 8);
            let (kind, symbol) = ((info & 0xffff_ffff) as u32, (info >> 32) as u32);
            let addend = if table.explicit {
                elf::u64_at(entry, 16)
            } else {
                match slot.target {
                    Target::Address(bytes) => bytes,
                    _ => 0,
                }
            };
            slot.target = if slot.relocated {
                Target::Unresolved(
                    "written by two relocations, which this check does not follow".to_owned(),
                )
            } else if slot.at != Some(offset) {
                Target::Unresolved("written into by a misaligned relocation".to_owned())
            } else if kind == reloc::RELATIVE {
                Target::Address(addend)
            } else if reloc::SYMBOLIC.contains(&kind) {
                let (name, value) = dynamic_symbol(image, symbol)?;
                slot.symbol = Some(name);
                match value {
                    Some(value) => Target::Address(value.wrapping_add(addend)),
                    None => Target::Imported,
                }
            } else {
                Target::Unresolved(format!(
                    "set by relocation type {kind}, which this check does not follow"
                ))
            };
            slot.relocated = true;
        }
    }
    Ok(())
}

/// Dynamic symbol `index`: its name, and its address when the library
/// defines it (`None`: another library's).
fn dynamic_symbol<S: Source + ?Sized>(
    image: &Image<'_, S>,
    index: u32,
) -> Result<(String, Option<u64>), String> {
    const SYM_LEN: u64 = 24;
    let table = image
        .single(elf::DT_SYMTAB)?
        .ok_or("a relocation names a symbol, but it has no symbol table")?;
    if image.single(elf::DT_SYMENT)?.is_some_and(|l| l != SYM_LEN) {
        return Err(format!("its symbols are not {SYM_LEN} bytes each"));
    }
    let at = table
        .checked_add(u64::from(index) * SYM_LEN)
        .ok_or("a relocation names a symbol past the end of memory")?;
    let sym = image.at(at, SYM_LEN, "a dynamic symbol")?;
    let strings = image
        .strings()?
        .ok_or("it has symbols but no string table")?;
    let name = elf::string_at(&strings, u64::from(elf::u32_at(&sym, 0)))?;
    let defined = elf::u16_at(&sym, 6) != 0;
    Ok((demangled(&name), defined.then(|| elf::u64_at(&sym, 8))))
}

/// The functions the library names, by address: its symbol table and its
/// dynamic symbols, found through the section headers. Only names come from
/// there; none when the headers are stripped or unreadable.
fn symbol_names(file: &File) -> Vec<(u64, String)> {
    let cache = ReadCache::new(file);
    let Ok(elf) = ElfFile64::<Endianness, _>::parse(&cache) else {
        return Vec::new();
    };
    elf.symbols()
        .chain(elf.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), demangled(s.name().ok()?))))
        .collect()
}

/// A symbol demangled, without its hash; a C name as it is.
fn demangled(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

#[cfg(test)]
mod tests;
