//! Faulty: failures on purpose, to exercise the host's recovery paths.
//!
//! `panic`, `fake_panic` and `flaky` fail the call and leave the process
//! alone (a panic also costs its instance; an error, whatever its code,
//! does not). Others end the process that runs them — `segfault`,
//! `abort`, `exit`, `overflow` — or push its memory up (`hog`): they are
//! for the process tier (`spearlet.isolation=process`), where that
//! process is a worker. Called in-process, the four that end their
//! process end the host.

use spear_plugin_sdk::prelude::*;

/// Failures served so far by this instance.
struct Failures(i64);

impl Instance for Failures {
    fn new(_config: &Config) -> Result<Self, PluginError> {
        Ok(Failures(0))
    }
}

/// Panics. The host must report it and keep serving.
#[function]
fn panic() -> i64 {
    panic!("faulty plugin panicked on purpose")
}

/// Returns an error whose code is `panic`, without panicking: the host
/// must report it as the function's own failure (code `panic`) and keep
/// the instance, for only a panic its barrier caught poisons one.
#[function]
fn fake_panic() -> Result<i64, PluginError> {
    Err(PluginError::new(
        PluginError::PANIC,
        "an error that only calls itself a panic",
    ))
}

/// Fails with a retriable error for the first `fail_times` calls on an
/// instance, then succeeds.
#[function]
fn flaky(failures: &mut Failures, fail_times: i64) -> Result<String, PluginError> {
    if failures.0 < fail_times {
        failures.0 += 1;
        return Err(PluginError::retriable(
            "flaky",
            format!("failure {} of {fail_times}", failures.0),
        ));
    }
    Ok(format!("succeeded after {} failures", failures.0))
}

/// Raises SIGSEGV in its own process, as a wild pointer would, with no
/// `unsafe`: the process ends (a worker's crash is reported as
/// `plugin_crashed`).
///
/// The signal is aimed at this thread's id, so Linux delivers it to this
/// thread when it can, as `kill` returns (aimed at the process, it goes to
/// the main thread, whenever that runs). A Rust program's runtime handles
/// the first SIGSEGV it gets — it looks for a stack overflow, then puts
/// the default action back and returns — so the signal is raised again,
/// with pauses for a handler running elsewhere, until the default action
/// ends the process. A process that survives a second's worth (its SIGSEGV
/// ignored or handled for good) gets `segfault_survived` instead of a hang.
#[function]
fn segfault() -> Result<(), PluginError> {
    use rustix::process::{kill_process, Signal};
    for _ in 0..100 {
        kill_process(rustix::thread::gettid(), Signal::SEGV)
            .map_err(|e| PluginError::new("segfault_failed", format!("kill: {e}")))?;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(PluginError::new(
        "segfault_survived",
        "the process handles or ignores SIGSEGV: it survived a second of them",
    ))
}

/// Aborts its process (`std::process::abort`: SIGABRT, no unwinding).
#[function]
fn abort() {
    std::process::abort()
}

/// Exits its process at once with status `code` (`std::process::exit`), as
/// a library calling `exit` behind its host's back would.
#[function]
fn exit(code: i32) {
    std::process::exit(code)
}

/// Recurses without end, a page of stack per frame, until the thread's
/// stack runs out: the process ends (the Rust runtime reports the overflow
/// and aborts). Never returns.
#[function]
fn overflow() -> u64 {
    descend(0)
}

/// One frame of [`overflow`]. The buffer lives across the recursive call
/// and `black_box` hides everything from the optimiser, so no frame can be
/// dropped, merged or turned into a loop.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = std::hint::black_box([0u8; 4096]);
    if depth == u64::MAX {
        return 0;
    }
    let below = descend(std::hint::black_box(depth + 1));
    below.wrapping_add(u64::from(std::hint::black_box(&frame)[0]))
}

/// Allocates `bytes` bytes, writes every one (so each page is really
/// resident), holds them until the call ends, and returns how many — for
/// a task's memory cap (`spearlet.memory.max`). It allocates as ordinary
/// code does: an allocation the system refuses ends the process (Rust's
/// "memory allocation of N bytes failed", then abort), which is how a
/// worker over its cap is recognised.
#[function]
fn hog(bytes: usize) -> usize {
    let held = vec![0xA5u8; bytes];
    std::hint::black_box(&held).len()
}

/// Writes garbage over the channel a worker process shares with its host
/// — in a worker, standard input is that channel (`docs/isolation.md`):
/// its header page, and the start of both message slots — then waits to be
/// killed. The host must take the garbage for a crash, never trust it.
/// Never call it outside a worker: standard input is then something else.
#[function]
fn scribble() -> Result<(), PluginError> {
    use std::os::unix::fs::FileExt;
    /// The channel's layout: a header page, then two slots of 64 MiB and a
    /// length word each.
    const HEADER: u64 = 4096;
    const SLOT: u64 = (64 << 20) + 8;
    let channel = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/0")
        .map_err(|e| PluginError::new("scribble_failed", format!("open: {e}")))?;
    let junk = [0xFF_u8; HEADER as usize];
    for (at, len) in [(0, junk.len()), (HEADER, 16), (HEADER + SLOT, 16)] {
        channel
            .write_all_at(&junk[..len], at)
            .map_err(|e| PluginError::new("scribble_failed", format!("write: {e}")))?;
    }
    std::thread::sleep(std::time::Duration::from_secs(60));
    Err(PluginError::new(
        "scribble_survived",
        "nobody noticed the garbage for a minute",
    ))
}

/// Tries to truncate the channel a worker process shares with its host
/// (its standard input): a host mapping a truncated file would fault on
/// its next access. Fails with `shrink_refused` when the channel is sealed
/// against that, as it must be; returns `true` if the truncation went
/// through. Never call it outside a worker.
#[function]
fn shrink() -> Result<bool, PluginError> {
    let channel = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/0")
        .map_err(|e| PluginError::new("shrink_failed", format!("open: {e}")))?;
    channel
        .set_len(0)
        .map_err(|e| PluginError::new("shrink_refused", e.to_string()))?;
    Ok(true)
}

/// Logs a line every 10 ms for `ms` milliseconds, never looking at
/// cancellation or its deadline: a call that keeps talking must still be
/// stopped at its deadline.
#[function]
fn chatter(ctx: &Context, ms: i64) -> i64 {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms.max(0) as u64);
    let mut lines = 0;
    while std::time::Instant::now() < end {
        ctx.log(LogLevel::Info, "still here");
        lines += 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    lines
}

export_plugin! {
    name: "faulty",
    instance: Failures,
}
