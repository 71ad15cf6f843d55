//! A shared-library sanity check before the dynamic loader sees the file.
//!
//! `dlopen` reports a foreign-architecture or truncated library with terse
//! loader messages (or worse, maps part of it); reading the ELF header first
//! turns those cases into a clear format error.

/// Why the bytes are not a loadable shared object for this host.
pub(super) fn check_shared_object(bytes: &[u8]) -> Result<(), String> {
    const HEADER_64: usize = 64;
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
    let len = bytes.len() as u64;
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
        assert_eq!(check_shared_object(&header(ET_DYN, HOST_MACHINE)), Ok(()));
    }

    #[test]
    fn names_what_is_wrong() {
        let foreign = if HOST_MACHINE == 183 { 62 } else { 183 };
        let err = check_shared_object(&header(ET_DYN, foreign)).unwrap_err();
        assert!(err.starts_with("built for "), "{err}");
        assert!(check_shared_object(&header(2, HOST_MACHINE))
            .unwrap_err()
            .contains("executable"));
        assert_eq!(
            check_shared_object(b"hello").unwrap_err(),
            "not an ELF file"
        );
        assert!(check_shared_object(&header(ET_DYN, HOST_MACHINE)[..20])
            .unwrap_err()
            .starts_with("truncated"));
        let mut with_tables = header(ET_DYN, HOST_MACHINE);
        with_tables[40..48].copy_from_slice(&10_000u64.to_le_bytes());
        with_tables[58..60].copy_from_slice(&64u16.to_le_bytes());
        with_tables[60..62].copy_from_slice(&3u16.to_le_bytes());
        assert!(check_shared_object(&with_tables)
            .unwrap_err()
            .contains("headers end at byte 10192"));
    }
}
