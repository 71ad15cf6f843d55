//! P2's unit costs: what the operations a call is made of cost on this
//! machine, alone, so that the per-call budget in BENCHMARKS.md (how many
//! of each `Host::invoke` does) can be priced here rather than quoted from
//! elsewhere.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::stats::summary;

/// Median ns of each operation, over rounds.
pub struct Units {
    /// `Instant::now()`.
    pub clock_ns: f64,
    /// A relaxed `fetch_add` on an uncontended atomic (a locked
    /// read-modify-write on x86).
    pub atomic_rmw_ns: f64,
    /// A plain load and store of an atomic (what a counter only its own
    /// thread writes costs), as throughput: consecutive ones overlap.
    pub owned_add_ns: f64,
    /// An uncontended `Mutex` lock and unlock.
    pub mutex_pair_ns: f64,
    /// An `Arc` clone and drop.
    pub arc_pair_ns: f64,
    /// Moving a 384-byte value (an outcome's size) into an opaque call and
    /// back.
    pub move_384_ns: f64,
}

/// ns per iteration of `op` over an empty loop's, median over `rounds`
/// rounds of `n`: each round times the empty loop right before `op`'s, so
/// both come from the same moment of a noisy machine. Never below zero.
fn per_op(n: u32, rounds: u32, mut op: impl FnMut()) -> f64 {
    let samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let empty = time(n, || black_box(()));
            (time(n, &mut op) - empty).max(0.0)
        })
        .collect();
    summary(&samples).median
}

/// ns per iteration of `n` runs of `op`.
fn time(n: u32, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

pub fn measure(quick: bool) -> Units {
    let (n, rounds) = if quick {
        (1_000_000, 5)
    } else {
        (5_000_000, 11)
    };
    let counter = AtomicU64::new(0);
    let lock = Mutex::new(0u64);
    let shared = Arc::new(0u64);
    let block = [0xA5u8; 384];
    Units {
        clock_ns: per_op(n, rounds, || {
            black_box(Instant::now());
        }),
        atomic_rmw_ns: per_op(n, rounds, || {
            black_box(&counter).fetch_add(1, Ordering::Relaxed);
        }),
        owned_add_ns: per_op(n, rounds, || {
            let c = black_box(&counter);
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }),
        mutex_pair_ns: per_op(n, rounds, || {
            *black_box(&lock).lock().expect("not poisoned") += 1;
        }),
        arc_pair_ns: per_op(n, rounds, || {
            black_box(Arc::clone(black_box(&shared)));
        }),
        move_384_ns: per_op(n, rounds, || {
            black_box(black_box(block));
        }),
    }
}
