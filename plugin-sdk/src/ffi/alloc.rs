//! Memory per call: a counting global allocator a plugin installs (through
//! `export_plugin!`, with the SDK's default `alloc-stats` feature) and the
//! symbol the host reads it through.
//!
//! The counters are per thread and reset when a call begins, so what the
//! host reads right after a call, on the thread that made it, is that
//! call's own: bytes allocated, and the peak of bytes live above what was
//! live when it began. Each plugin library has its own allocator and
//! counters; the host's allocations are never counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting per thread. Costs a few thread-local
/// additions per allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

/// A call's memory, as the host reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FfiAllocStats {
    /// Bytes allocated during the call (reallocations count their growth).
    pub allocated: u64,
    /// The most bytes live at once during the call, above what was live
    /// when it began.
    pub peak: u64,
}

/// The exported symbol the host looks up: `extern "C" fn() -> FfiAllocStats`.
pub const ALLOC_STATS_SYMBOL: &str = "spear_plugin_alloc_stats";

/// One thread's counts, in one thread-local: in a library loaded with
/// `dlopen` every thread-local access is a call to `__tls_get_addr`, so the
/// three counters are reached with one lookup, not three.
struct Counts {
    allocated: Cell<u64>,
    live: Cell<i64>,
    peak: Cell<i64>,
}

thread_local! {
    // Const-initialised, without destructors: usable from the allocator at
    // any point of a thread's life, and never allocating itself.
    static COUNTS: Counts = const {
        Counts {
            allocated: Cell::new(0),
            live: Cell::new(0),
            peak: Cell::new(0),
        }
    };
}

fn grew(bytes: usize) {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    let _ = COUNTS.try_with(|c| {
        c.allocated
            .set(c.allocated.get().saturating_add(bytes.unsigned_abs()));
        let now = c.live.get().saturating_add(bytes);
        c.live.set(now);
        c.peak.set(c.peak.get().max(now));
    });
}

fn shrank(bytes: usize) {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    let _ = COUNTS.try_with(|c| c.live.set(c.live.get().saturating_sub(bytes)));
}

/// Starts a call's counts on this thread.
pub(crate) fn begin_call() {
    let _ = COUNTS.try_with(|c| {
        c.allocated.set(0);
        c.live.set(0);
        c.peak.set(0);
    });
}

/// This thread's counts since its last call began.
pub fn alloc_stats() -> FfiAllocStats {
    COUNTS
        .try_with(|c| FfiAllocStats {
            allocated: c.allocated.get(),
            peak: u64::try_from(c.peak.get()).unwrap_or(0),
        })
        .unwrap_or_default()
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and returns what `System` returned; the counting around it
// touches only const-initialised thread-locals (no allocation, no
// reentrancy into the allocator).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator (so from
        // `System`) with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_start_with_each_call() {
        let a = CountingAllocator;
        let layout = Layout::from_size_align(1000, 8).unwrap();
        begin_call();
        // SAFETY: a valid, non-zero-sized layout; freed with the same one.
        unsafe {
            let p = a.alloc(layout);
            let q = a.alloc(layout);
            a.dealloc(p, layout);
            a.dealloc(q, layout);
            let r = a.alloc(layout);
            a.dealloc(r, layout);
        }
        assert_eq!(
            alloc_stats(),
            FfiAllocStats {
                allocated: 3000,
                peak: 2000
            }
        );
        begin_call();
        assert_eq!(alloc_stats(), FfiAllocStats::default());
    }
}
