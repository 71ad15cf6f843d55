//! sha256 verification throughput: in memory, through a memory-mapped file,
//! and against `openssl speed -evp sha256` on the same machine in the same run.
//!
//! `cargo bench -p spearlet --bench verify` prints one table; the goal is a
//! ratio to openssl of at least 0.95. Runs alternate (ours, openssl, ours, …)
//! so drift of the machine affects both sides alike.

use std::hint::black_box;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use spearlet::digest::Sha256Digest;
use spearlet::loader::sha256_file;

const SIZE: usize = 64 * 1024 * 1024;
const ROUNDS: usize = 5;

fn main() {
    let data: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&data).expect("write temp file");
    file.flush().expect("flush");

    let mut memory = Vec::new();
    let mut mapped = Vec::new();
    let mut openssl = Vec::new();
    for _ in 0..ROUNDS {
        memory.push(throughput(|| {
            black_box(Sha256Digest::of(black_box(&data)));
        }));
        match openssl_speed() {
            Some(rate) => openssl.push(rate),
            None => eprintln!("openssl speed unavailable; skipping the comparison"),
        }
        mapped.push(throughput(|| {
            black_box(sha256_file(file.path()).expect("hash file"));
        }));
    }

    let gib = |v: f64| v / (1024.0 * 1024.0 * 1024.0);
    println!(
        "sha256 throughput, {ROUNDS} alternating rounds, {} MiB input",
        SIZE >> 20
    );
    println!("{:<28} {:>10} {:>10} {:>10}", "", "median", "min", "max");
    for (name, rates) in [
        ("sha2, in memory (GiB/s)", &memory),
        ("sha2, mmap'd file (GiB/s)", &mapped),
        ("openssl -evp (GiB/s)", &openssl),
    ] {
        if rates.is_empty() {
            continue;
        }
        let (med, min, max) = stats(rates);
        println!(
            "{name:<28} {:>10.3} {:>10.3} {:>10.3}",
            gib(med),
            gib(min),
            gib(max)
        );
    }
    if !openssl.is_empty() {
        let ratio = stats(&memory).0 / stats(&openssl).0;
        let met = if ratio >= 0.95 { "met" } else { "NOT met" };
        println!("ratio sha2/openssl: {ratio:.3} (goal >= 0.95: {met})");
        let mmap_ratio = stats(&mapped).0 / stats(&memory).0;
        println!("ratio mmap file/in memory: {mmap_ratio:.3}");
    }
}

/// Bytes per second of `f` over `SIZE` bytes, best of a few runs.
fn throughput(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            SIZE as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// openssl's bytes per second for 1 MiB blocks.
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

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
