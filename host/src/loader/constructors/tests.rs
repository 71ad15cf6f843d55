//! The constructor scan's tests.

use super::*;
use crate::loader::elf::synth::{Synth, FREE_AT};
use spearlet_test_artifacts::Artifact;

fn entry(kind: Kind, symbol: Option<&str>, target: Target) -> Constructor {
    Constructor {
        listed: format!("{kind:?}"),
        symbol: symbol.map(str::to_owned),
        toolchain: None,
        kind,
        target,
    }
}

fn toolchain(list: &[Constructor]) -> Vec<bool> {
    list.iter().map(Constructor::is_toolchain).collect()
}

#[test]
fn the_toolchains_entries_are_named_whole_and_granted_once() {
    let at = Target::Address(0x10);
    let mut list = vec![
        entry(Kind::Init, Some("_init"), at.clone()),
        entry(
            Kind::InitArray,
            Some("std::sys::args::unix::imp::ARGV_INIT_ARRAY::init_wrapper"),
            at.clone(),
        ),
        entry(Kind::InitArray, Some("frame_dummy"), at.clone()),
        // A second of a kind, a name that merely contains one, a path
        // outside std, the right name in the wrong list.
        entry(Kind::InitArray, Some("frame_dummy"), at.clone()),
        entry(Kind::InitArray, Some("my_frame_dummy_hook"), at.clone()),
        entry(
            Kind::InitArray,
            Some("plugin::ARGV_INIT_ARRAY::init_wrapper"),
            at.clone(),
        ),
        entry(Kind::PreinitArray, Some("frame_dummy"), at.clone()),
        entry(Kind::InitArray, Some("_init"), at.clone()),
    ];
    classify(&mut list);
    assert_eq!(
        toolchain(&list),
        [true, true, true, false, false, false, false, false]
    );
    assert_eq!(list[2].toolchain, Some("the C runtime's frame_dummy"));
}

/// Stripped, entries are counted against the toolchain's: as many as it
/// brings pass, the rest are the plugin's; imported or unfollowed
/// entries never pass, named or not.
#[test]
fn unnamed_entries_are_counted_against_the_toolchains() {
    let at = Target::Address(0x10);
    let mut list = vec![
        entry(Kind::Init, None, at.clone()),
        entry(Kind::InitArray, None, at.clone()),
        entry(Kind::InitArray, None, at.clone()),
        entry(Kind::InitArray, None, at.clone()),
    ];
    classify(&mut list);
    assert_eq!(toolchain(&list), [true, true, true, false]);

    // A named frame_dummy takes its role first; one unnamed entry is
    // left room for.
    let mut list = vec![
        entry(Kind::InitArray, None, at.clone()),
        entry(Kind::InitArray, None, at.clone()),
        entry(Kind::InitArray, Some("frame_dummy"), at.clone()),
    ];
    classify(&mut list);
    assert_eq!(toolchain(&list), [true, false, true]);

    let mut list = vec![
        entry(Kind::InitArray, Some("frame_dummy"), Target::Imported),
        entry(Kind::InitArray, None, Target::Unresolved("?".into())),
        entry(Kind::PreinitArray, None, at),
    ];
    classify(&mut list);
    assert_eq!(toolchain(&list), [false, false, false]);
}

/// An array read at its address, relocated through `DT_RELA`: a
/// relative entry is its addend, a symbolic one against an undefined
/// symbol is imported, by name.
#[test]
fn array_entries_are_relocated_as_the_dynamic_loader_would() {
    let strtab = FREE_AT;
    let names = b"\0evil_import\0";
    let array = 0x800;
    let rela = 0x900;
    let symtab = 0xa00;
    let mut synth = Synth::new(&[
        (elf::DT_INIT, 0x4242),
        (elf::DT_INIT_ARRAY, Synth::address(array)),
        (elf::DT_INIT_ARRAYSZ, 24),
        (elf::DT_RELA, Synth::address(rela)),
        (elf::DT_RELASZ, 3 * 24),
        (elf::DT_RELAENT, 24),
        (elf::DT_SYMTAB, Synth::address(symtab)),
        (elf::DT_SYMENT, 24),
        (elf::DT_STRTAB, Synth::address(strtab)),
        (elf::DT_STRSZ, names.len() as u64),
    ]);
    synth.put(strtab, names);
    // Slot 2 holds its address in the file (no relocation).
    synth.put(array + 16, &0x5151u64.to_le_bytes());
    let mut put_rela = |i: usize, slot: usize, kind: u32, symbol: u32, addend: u64| {
        let at = rela + i * 24;
        synth.put(at, &Synth::address(array + slot * 8).to_le_bytes());
        let info = (u64::from(symbol) << 32) | u64::from(kind);
        synth.put(at + 8, &info.to_le_bytes());
        synth.put(at + 16, &addend.to_le_bytes());
    };
    put_rela(0, 0, reloc::RELATIVE, 0, 0x1234);
    put_rela(1, 1, reloc::SYMBOLIC[0], 1, 0);
    // Elsewhere: not an array slot, ignored.
    put_rela(2, 40, reloc::RELATIVE, 0, 0x9999);
    // Symbol 1: `evil_import`, undefined (section index 0).
    synth.put(symtab + 24, &1u32.to_le_bytes());
    synth.put(symtab + 24 + 4, &[0x12]);

    let image = Image::read(&synth.bytes[..]).unwrap();
    let names = [(0x1234, "fixture::hello".to_owned())];
    let list = read_constructors(&image, &names).unwrap();
    let listed: Vec<&str> = list.iter().map(|c| c.listed.as_str()).collect();
    assert_eq!(
        listed,
        [
            "DT_INIT",
            "DT_INIT_ARRAY[0]",
            "DT_INIT_ARRAY[1]",
            "DT_INIT_ARRAY[2]"
        ]
    );
    assert_eq!(list[0].address(), Some(0x4242));
    assert_eq!(list[1].address(), Some(0x1234));
    assert_eq!(list[1].symbol.as_deref(), Some("fixture::hello"));
    assert_eq!(list[2].address(), None);
    assert_eq!(
        list[2].describe(),
        "evil_import, imported from another library (DT_INIT_ARRAY[1])"
    );
    assert_eq!(list[3].address(), Some(0x5151));
    // `_init` unnamed passes as the toolchain's; `fixture::hello` is
    // named and not the toolchain's, the import never is, and the one
    // unnamed array entry takes a free role.
    assert_eq!(toolchain(&list), [true, false, false, true]);
}

/// A copy of `path` without section headers: the dynamic loader never
/// needs them, so a library may ship without.
fn without_section_headers(path: &Path) -> tempfile::NamedTempFile {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[40..48].fill(0);
    bytes[58..64].fill(0);
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), bytes).unwrap();
    copy
}

#[test]
fn a_sample_plugin_carries_only_the_toolchains_constructors() {
    let list = constructors(Artifact::Echo.path()).unwrap();
    let named: Vec<(&str, Option<&str>)> = list
        .iter()
        .map(|c| (c.listed.as_str(), c.toolchain))
        .collect();
    assert!(
        named.contains(&("DT_INIT", Some("the C runtime's _init"))),
        "{list:#?}"
    );
    assert!(list.iter().all(Constructor::is_toolchain), "{list:#?}");
    assert!(list.iter().all(|c| c.symbol.is_some()), "{list:#?}");
    assert_eq!(
        list.iter().filter(|c| c.kind == Kind::InitArray).count(),
        RUNTIME_CONSTRUCTOR_COUNT
    );

    // Without section headers nothing is named, and nothing is missed.
    let stripped = without_section_headers(Artifact::Echo.path());
    let bare = constructors(stripped.path()).unwrap();
    assert_eq!(bare.len(), list.len());
    assert!(bare.iter().all(|c| c.symbol.is_none() && c.is_toolchain()));
    let addresses = |l: &[Constructor]| l.iter().map(Constructor::address).collect::<Vec<_>>();
    assert_eq!(addresses(&bare), addresses(&list));
}

#[test]
fn a_constructor_of_the_plugins_is_found_with_or_without_section_headers() {
    let list = constructors(Artifact::HostileConstructor.path()).unwrap();
    let foreign: Vec<String> = list
        .iter()
        .filter(|c| !c.is_toolchain())
        .map(Constructor::describe)
        .collect();
    assert_eq!(foreign.len(), 1, "{list:#?}");
    assert!(
        foreign[0].starts_with("fixture_hostile_constructor::misbehave (0x"),
        "{foreign:?}"
    );

    let stripped = without_section_headers(Artifact::HostileConstructor.path());
    let bare = constructors(stripped.path()).unwrap();
    assert_eq!(bare.len(), list.len());
    let foreign: Vec<String> = bare
        .iter()
        .filter(|c| !c.is_toolchain())
        .map(Constructor::describe)
        .collect();
    assert_eq!(foreign.len(), 1, "{bare:#?}");
    assert!(
        foreign[0].starts_with("an unnamed function (0x"),
        "{foreign:?}"
    );
}
