//! The ELF reader's tests: well-formed libraries, truncated and hostile
//! headers, dependencies and search paths.

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
