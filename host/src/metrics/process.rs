//! This process's resident memory, threads and open files, from
//! `/proc/self` (for `/metrics`, and `plugin check`'s churn test).

/// This process, from `/proc/self`.
#[derive(Debug, Default)]
pub(super) struct Process {
    pub(super) resident_bytes: u64,
    pub(super) threads: u64,
    pub(super) open_fds: u64,
}

pub(super) fn now() -> Process {
    let mut p = Process::default();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        p.resident_bytes = field(&status, "VmRSS:") * 1024;
        p.threads = field(&status, "Threads:");
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    p
}

/// Resident memory of this process, in bytes (0 where `/proc` says nothing).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status").map_or(0, |s| field(&s, "VmRSS:") * 1024)
}

/// The number after `key` in `/proc/self/status`.
fn field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
