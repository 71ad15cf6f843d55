//! Running a piece of work in a child process of this binary, bounded in
//! time: `plugin check` and `plugin inspect` load untrusted libraries there,
//! so one that crashes or hangs while loading takes down a child, not the
//! tool.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child` up to `timeout`; kills it then. `None`: it ran out of
/// time.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        // Polled: these are one-off runs, and std has no timed wait.
        std::thread::sleep(Duration::from_millis(5));
    }
}
