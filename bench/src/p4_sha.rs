//! P4: sha256 throughput, of 1 MiB blocks in memory and reading a file (as
//! the loader does), against `openssl speed -evp sha256 -bytes 1048576`,
//! alternating.

use std::hint::black_box;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use spearlet::digest::Sha256Digest;
use spearlet::loader::sha256_file;

use crate::stats::summary;

pub struct P4 {
    pub memory_gib_s: f64,
    pub file_gib_s: f64,
    pub openssl_gib_s: Option<f64>,
    /// Per round: sha2 in memory / openssl.
    pub ratios: Vec<f64>,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn run(quick: bool) -> anyhow::Result<P4> {
    let size = if quick { 32 << 20 } else { 128 << 20 };
    let data: Vec<u8> = (0..size)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(&data)?;
    file.flush()?;
    let (mut memory, mut mapped, mut openssl, mut ratios) = (vec![], vec![], vec![], vec![]);
    for _ in 0..if quick { 3 } else { 5 } {
        // As `openssl speed -bytes 1048576` does: one 1 MiB block, digested
        // again and again (in cache), so that both sides measure hashing,
        // not memory bandwidth.
        let block = &data[..1 << 20];
        let ours = rate(size, || {
            for _ in 0..size >> 20 {
                black_box(Sha256Digest::of(black_box(block)));
            }
        });
        memory.push(ours);
        if let Some(r) = openssl_speed() {
            openssl.push(r);
            ratios.push(ours / r);
        }
        mapped.push(rate(size, || {
            black_box(sha256_file(file.path()).expect("hash file"));
        }));
    }
    Ok(P4 {
        memory_gib_s: summary(&memory).median / GIB,
        file_gib_s: summary(&mapped).median / GIB,
        openssl_gib_s: (!openssl.is_empty()).then(|| summary(&openssl).median / GIB),
        ratios,
    })
}

/// Bytes per second, best of three.
fn rate(size: usize, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            size as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// openssl's bytes per second for 1 MiB blocks, if openssl is installed.
fn openssl_speed() -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "1048576", "-seconds", "1",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with("sha256"))?;
    let thousands: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(thousands * 1000.0)
}
